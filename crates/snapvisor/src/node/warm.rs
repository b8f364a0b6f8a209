//! Warm VMs: a bounded keep-alive set of VMs per function, so that a request can choose a
//! warm invocation instead of a SnapStart (what a FaaS platform's keep-alive policy does).
//! A warm VM is booted and initialised for warm invocations, or it is the VM of a
//! SnapStart asked to be kept (`keep_warm`), trimmed to what it wrote; the next SnapStart
//! of the same snapshot with the same strategy runs on it.
//!
//! Each warm VM lives on its own thread (`warm_vm.rs`). A VM is either idle (in the set, free to take) or busy (taken by one request);
//! taking, returning and expiring happen under one lock, so a VM is never handed to two
//! requests nor expired while taken.

use super::functions::{check_fits, Image, Input, Role};
use super::invoke::{InvokeReport, InvokeSpec};
use super::runner::{ms, RunError, VmSample};
use super::warm_vm::{send, Job, Make, Restore, VmThread};
use super::{Node, NodeError};
use serde::Serialize;
use snapvisor_vmm::restore::Strategy;
use std::collections::BTreeMap;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

/// Where a warm VM came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Booted and initialised for warm invocations.
    Boot,
    /// The VM of a SnapStart asked to be kept.
    SnapStart {
        /// The strategy that restored it.
        strategy: Strategy,
        /// The snapshot (see [`super::invoke::SnapshotRef`]'s `Display`).
        snapshot: String,
    },
}

pub(super) struct Slot {
    function: String,
    mem_size: u64,
    origin: Origin,
    pub(super) busy: bool,
    jobs: Sender<Job>,
    /// Dropped after its current request (its snapshot was deleted).
    pub(super) retired: bool,
    started: SystemTime,
    pub(super) last_used: Instant,
    pub(super) invocations: u64,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) vms: BTreeMap<u64, Slot>,
    next_id: u64,
    pub(super) closed: bool,
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
    /// For the VM of a SnapStart: the strategy that restored it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restored_with: Option<&'static str>,
    /// For the VM of a SnapStart: its snapshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
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

pub(super) fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
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
                restored_with: match &s.origin {
                    Origin::Boot => None,
                    Origin::SnapStart { strategy, .. } => Some(strategy.name()),
                },
                snapshot: match &s.origin {
                    Origin::Boot => None,
                    Origin::SnapStart { snapshot, .. } => Some(snapshot.clone()),
                },
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
        self.release(id);
        drop(jobs);
        Ok((id, boot_ms))
    }

    /// Makes VM `id`, just started and taken by its starter, idle.
    fn release(&self, id: u64) {
        if let Some(slot) = lock(&self.state).vms.get_mut(&id) {
            slot.busy = false;
            slot.last_used = Instant::now();
        }
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

    /// Stops the idle VMs kept from SnapStarts of `snapshot` (the snapshot is gone or
    /// replaced); busy ones end after their request.
    pub fn retire(&self, snapshot: &str) {
        let mut state = lock(&self.state);
        let of = |slot: &Slot| matches!(&slot.origin, Origin::SnapStart { snapshot: s, .. } if s == snapshot);
        state.vms.retain(|_, slot| slot.busy || !of(slot));
        for slot in state.vms.values_mut().filter(|slot| of(slot)) {
            slot.retired = true;
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
        let taken = self.take(|s| s.origin == Origin::Boot && s.function == image.name && s.mem_size == mem_size);
        let (jobs, boot_ms) = match taken {
            Some(((jobs, _), _, _)) => (jobs, None),
            None => {
                let (_, jobs, boot_ms) = self.boot(node, image, mem_size, timeout)?;
                (jobs, Some(boot_ms))
            }
        };
        let sample = send(&jobs, request.bytes.into_owned(), timeout)?;
        let mut report = InvokeReport::new(image.name.clone(), request.label, "warm", "dram".into(), vec![sample])?;
        report.boot_ms = boot_ms;
        Ok(report)
    }

    /// A SnapStart whose VM is kept (`keep_warm`). An idle VM kept from an earlier
    /// SnapStart of the same snapshot with the same strategy serves it, as a warm
    /// invocation (reported as `warm`). Otherwise a VM is restored for it on its own thread
    /// (into a shell from the node's stock when there is one), serves it, is trimmed and
    /// joins the set; with the set full (`--warm-max`) the SnapStart runs as any other and
    /// its VM ends with it (`kept_warm: false`).
    pub fn snapstart(&self, node: &Arc<Node>, spec: &InvokeSpec) -> Result<InvokeReport, NodeError> {
        if spec.concurrency != 1 {
            return Err(NodeError::Invalid("a SnapStart kept warm restores one VM (concurrency 1)".into()));
        }
        let origin = Origin::SnapStart { strategy: spec.strategy, snapshot: spec.snapshot.to_string() };
        // A kept VM knows its function and memory size: the snapshot is not opened again.
        if let Some((jobs, function, mem_size)) = self.take(|s| s.origin == origin) {
            let answer = spec.input.resolve(&function, Role::Measure).and_then(|request| {
                check_fits(&function, &request, mem_size)?;
                Ok(request)
            });
            let request = match answer {
                Ok(request) => request,
                Err(e) => {
                    self.release(jobs.1);
                    return Err(e);
                }
            };
            let sample = send(&jobs.0, request.bytes.into_owned(), spec.timeout)?;
            let mut report = InvokeReport::new(function, request.label, "warm", "dram".into(), vec![sample])?;
            report.kept_warm = Some(true);
            return Ok(report);
        }
        let p = node.prepare(spec)?;
        {
            let state = lock(&self.state);
            if state.closed {
                return Err(NodeError::Busy("the node is shutting down".into()));
            }
            if state.vms.len() >= self.max {
                drop(state);
                let mut report = node.invoke_prepared(spec, p)?;
                report.kept_warm = Some(false);
                return Ok(report);
            }
        }
        let shell = node.take_shells(p.mem_size, 1).pop();
        let make =
            Make::SnapStart(Box::new(Restore { shell, source: p.source, strategy: p.strategy, request: p.request }));
        let started = self.spawn(node, (p.function.clone(), p.mem_size, origin), make, spec.timeout);
        node.refill_shells(p.mem_size);
        let (id, jobs, _, sample) = started?;
        self.release(id);
        drop(jobs);
        let sample = sample.ok_or(NodeError::Inconsistent)?;
        let mut report = InvokeReport::new(p.function, p.label, spec.strategy.name(), p.medium, vec![sample])?;
        report.recorded_with = p.recorded_with;
        report.kept_warm = Some(true);
        Ok(report)
    }

    /// Takes an idle VM that `fits` (marks it busy): its job queue and id, its function
    /// and memory size.
    fn take(&self, fits: impl Fn(&Slot) -> bool) -> Option<((Sender<Job>, u64), String, u64)> {
        let mut state = lock(&self.state);
        let (&id, slot) = state.vms.iter_mut().find(|(_, s)| !s.busy && !s.retired && fits(s))?;
        slot.busy = true;
        Some(((slot.jobs.clone(), id), slot.function.clone(), slot.mem_size))
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
        let make = Make::Boot { elf: image.elf.clone().into_owned(), warmup };
        let (id, jobs, boot_ms, _) = self.spawn(node, (image.name.clone(), mem_size, Origin::Boot), make, timeout)?;
        Ok((id, jobs, boot_ms))
    }

    /// Makes a VM on its own thread and registers it as busy (taken by the caller): its
    /// id, job queue, the time making it took, and the SnapStart's sample if it was one.
    fn spawn(
        &self,
        node: &Arc<Node>,
        (function, mem_size, origin): (String, u64, Origin),
        make: Make,
        timeout: Duration,
    ) -> Result<(u64, Sender<Job>, f64, Option<VmSample>), NodeError> {
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
                function,
                mem_size,
                origin,
                busy: true,
                jobs: jobs.clone(),
                retired: false,
                started: SystemTime::now(),
                last_used: Instant::now(),
                invocations: 0,
            };
            state.vms.insert(id, slot);
            id
        };
        let (made, made_result) = mpsc::sync_channel(1);
        let vm = VmThread {
            state: self.state.clone(),
            id,
            idle_timeout: self.idle_timeout,
            node: node.clone(),
            mem_size,
            timeout,
        };
        let spawned =
            std::thread::Builder::new().name(format!("warm-vm-{id}")).spawn(move || vm.run(make, inbox, made));
        if let Err(e) = spawned {
            lock(&self.state).vms.remove(&id);
            return Err(NodeError::Busy(format!("cannot start a thread for a warm VM: {e}")));
        }
        let (made_ms, sample) = made_result.recv().map_err(|_| RunError::Panicked)??;
        Ok((id, jobs, made_ms, sample))
    }
}
