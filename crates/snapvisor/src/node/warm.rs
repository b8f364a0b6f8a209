//! Warm VMs: a bounded keep-alive set of booted, initialised VMs per function, so that a
//! request can choose a warm invocation instead of a SnapStart (what a FaaS platform's
//! keep-alive policy does).
//!
//! Each warm VM lives on its own thread, which creates it, runs every invocation on it
//! (KVM wants a vCPU driven from one thread, and the fault counters are per thread) and
//! drops it when it has been idle for the idle timeout, when it failed, or when it is
//! stopped. A VM is either idle (in the set, free to take) or busy (taken by one request);
//! taking, returning and expiring happen under one lock, so a VM is never handed to two
//! requests nor expired while taken.

use super::functions::{check_fits, Image, Input, Role};
use super::invoke::InvokeReport;
use super::runner::{ms, RunError, VmSample, WarmVm};
use super::{Node, NodeError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

/// One invocation handed to a warm VM's thread.
struct Job {
    request: Vec<u8>,
    timeout: Duration,
    reply: SyncSender<Result<VmSample, RunError>>,
}

struct Slot {
    function: String,
    mem_size: u64,
    busy: bool,
    jobs: Sender<Job>,
    started: SystemTime,
    last_used: Instant,
    invocations: u64,
}

#[derive(Default)]
struct State {
    vms: BTreeMap<u64, Slot>,
    next_id: u64,
    closed: bool,
}

/// A warm VM, for listings.
#[derive(Clone, Debug, Serialize)]
pub struct WarmVmInfo {
    /// Its id.
    pub id: u64,
    /// Function it runs.
    pub function: String,
    /// Guest memory bytes.
    pub mem_size: u64,
    /// Serving a request now.
    pub busy: bool,
    /// Invocations served (the warm-up one not counted).
    pub invocations: u64,
    /// Boot time, seconds since the Unix epoch.
    pub started_unix: u64,
    /// Time since its last invocation ended, ms.
    pub idle_ms: f64,
}

/// The keep-alive set.
pub struct WarmSet {
    state: Arc<Mutex<State>>,
    max: usize,
    idle_timeout: Duration,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // The state stays consistent under every early return; a panicked holder is a bug
    // elsewhere, not a reason to stop serving.
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl WarmSet {
    /// A set of at most `max` VMs, each dropped after `idle_timeout` without a request.
    pub fn new(max: usize, idle_timeout: Duration) -> Self {
        WarmSet { state: Arc::default(), max, idle_timeout }
    }

    /// The VMs, by id.
    pub fn list(&self) -> Vec<WarmVmInfo> {
        lock(&self.state)
            .vms
            .iter()
            .map(|(&id, s)| WarmVmInfo {
                id,
                function: s.function.clone(),
                mem_size: s.mem_size,
                busy: s.busy,
                invocations: s.invocations,
                started_unix: s.started.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
                idle_ms: if s.busy { 0.0 } else { ms(s.last_used.elapsed()) },
            })
            .collect()
    }

    /// Boots a warm VM of `image` (init, then one warm-up invocation with the function's
    /// default request) and leaves it idle. Returns its id and the boot time.
    pub fn start(
        &self,
        node: &Arc<Node>,
        image: &Image,
        mem_size: u64,
        timeout: Duration,
    ) -> Result<(u64, f64), NodeError> {
        let (id, jobs, boot_ms) = self.boot(node, image, mem_size, timeout)?;
        let mut state = lock(&self.state);
        if let Some(slot) = state.vms.get_mut(&id) {
            slot.busy = false;
            slot.last_used = Instant::now();
        }
        drop(jobs);
        Ok((id, boot_ms))
    }

    /// Stops idle VM `id`.
    pub fn stop(&self, id: u64) -> Result<(), NodeError> {
        let mut state = lock(&self.state);
        match state.vms.get(&id) {
            None => Err(NodeError::Missing { what: "warm VM", name: id.to_string() }),
            Some(slot) if slot.busy => Err(NodeError::Conflict(format!("warm VM {id} is serving a request"))),
            Some(_) => {
                state.vms.remove(&id);
                Ok(())
            }
        }
    }

    /// Stops every idle VM and lets busy ones end after their request; starts no more.
    pub fn close(&self) {
        let mut state = lock(&self.state);
        state.closed = true;
        state.vms.retain(|_, slot| slot.busy);
    }

    /// One warm invocation of `image` with `input`: on an idle VM of that function and
    /// memory size, or on one booted for it (reported as `boot_ms`) while the set has room.
    pub fn invoke(
        &self,
        node: &Arc<Node>,
        image: &Image,
        input: &Input,
        mem_size: u64,
        timeout: Duration,
    ) -> Result<InvokeReport, NodeError> {
        let request = input.resolve(&image.name, Role::Measure)?;
        check_fits(&image.name, &request, mem_size)?;
        let taken = {
            let mut state = lock(&self.state);
            let found =
                state.vms.iter_mut().find(|(_, s)| !s.busy && s.function == image.name && s.mem_size == mem_size);
            found.map(|(_, slot)| {
                slot.busy = true;
                slot.jobs.clone()
            })
        };
        let (jobs, boot_ms) = match taken {
            Some(jobs) => (jobs, None),
            None => {
                let (_, jobs, boot_ms) = self.boot(node, image, mem_size, timeout)?;
                (jobs, Some(boot_ms))
            }
        };
        let (reply, answer) = mpsc::sync_channel(1);
        jobs.send(Job { request: request.bytes.into_owned(), timeout, reply }).map_err(|_| RunError::Panicked)?;
        let sample = answer.recv().map_err(|_| RunError::Panicked)??;
        let mut report = InvokeReport::new(image.name.clone(), request.label, "warm", "dram".into(), vec![sample])?;
        report.boot_ms = boot_ms;
        Ok(report)
    }

    /// Boots a VM on its own thread and registers it as busy (taken by the caller).
    fn boot(
        &self,
        node: &Arc<Node>,
        image: &Image,
        mem_size: u64,
        timeout: Duration,
    ) -> Result<(u64, Sender<Job>, f64), NodeError> {
        let warmup = Input::Default.resolve(&image.name, Role::Measure)?.bytes.into_owned();
        let (jobs, inbox) = mpsc::channel();
        let id = {
            let mut state = lock(&self.state);
            if state.closed {
                return Err(NodeError::Busy("the node is shutting down".into()));
            }
            if state.vms.len() >= self.max {
                return Err(NodeError::Busy(format!(
                    "all {} warm VMs are in use or kept for other functions",
                    self.max
                )));
            }
            let id = state.next_id;
            state.next_id += 1;
            let slot = Slot {
                function: image.name.clone(),
                mem_size,
                busy: true,
                jobs: jobs.clone(),
                started: SystemTime::now(),
                last_used: Instant::now(),
                invocations: 0,
            };
            state.vms.insert(id, slot);
            id
        };
        let (booted, boot_result) = mpsc::sync_channel(1);
        let vm = VmThread {
            state: self.state.clone(),
            id,
            idle_timeout: self.idle_timeout,
            node: node.clone(),
            elf: image.elf.clone().into_owned(),
            mem_size,
            warmup,
            timeout,
        };
        let spawned = std::thread::Builder::new().name(format!("warm-vm-{id}")).spawn(move || vm.run(inbox, booted));
        if let Err(e) = spawned {
            lock(&self.state).vms.remove(&id);
            return Err(NodeError::Busy(format!("cannot start a thread for a warm VM: {e}")));
        }
        let boot_ms = boot_result.recv().map_err(|_| RunError::Panicked)??;
        Ok((id, jobs, boot_ms))
    }
}

/// A warm VM's thread: what it boots, and its place in the set.
struct VmThread {
    state: Arc<Mutex<State>>,
    id: u64,
    idle_timeout: Duration,
    node: Arc<Node>,
    elf: Vec<u8>,
    mem_size: u64,
    warmup: Vec<u8>,
    timeout: Duration,
}

/// Takes a VM's slot out of the set when its thread ends, however it ends (a panic in
/// the VMM included), so a dead VM never counts against `--warm-max`.
struct Vacate<'a>(&'a Mutex<State>, u64);

impl Drop for Vacate<'_> {
    fn drop(&mut self) {
        lock(self.0).vms.remove(&self.1);
    }
}

impl VmThread {
    fn run(self, inbox: Receiver<Job>, booted: SyncSender<Result<f64, NodeError>>) {
        let _vacate = Vacate(&self.state, self.id);
        let start = Instant::now();
        let vm = self
            .node
            .hypervisor()
            .and_then(|hv| Ok(WarmVm::start(hv, &self.elf, self.mem_size, &self.warmup, self.timeout)?));
        let mut vm = match vm {
            Ok(vm) => vm,
            Err(e) => {
                lock(&self.state).vms.remove(&self.id);
                let _ = booted.send(Err(e));
                return;
            }
        };
        let _ = booted.send(Ok(ms(start.elapsed())));
        loop {
            match inbox.recv_timeout(self.idle_timeout) {
                Ok(job) => {
                    vm.set_timeout(job.timeout);
                    let result = vm.invoke(&job.request);
                    let keep = self.finished(result.is_ok());
                    let _ = job.reply.send(result);
                    if !keep {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    let mut state = lock(&self.state);
                    if state.vms.get(&self.id).is_none_or(|slot| !slot.busy) {
                        state.vms.remove(&self.id);
                        return;
                    }
                    // Taken just now: its job is on the way.
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Returns the VM to the set after an invocation; whether the thread keeps it (a
    /// failed VM, a stopped one, or a closing set's is dropped).
    fn finished(&self, ok: bool) -> bool {
        let mut state = lock(&self.state);
        let closed = state.closed;
        match state.vms.get_mut(&self.id) {
            Some(slot) if ok && !closed => {
                slot.busy = false;
                slot.invocations += 1;
                slot.last_used = Instant::now();
                true
            }
            _ => {
                state.vms.remove(&self.id);
                false
            }
        }
    }
}
