//! One warm VM: booted and initialised, or restored by a SnapStart and kept (what a FaaS
//! platform does with the VM of a SnapStart); and, for the daemon's keep-alive set
//! (`warm.rs`), the thread that makes it, runs its invocations and drops it.
//!
//! Each warm VM of the set lives on its own thread, which creates it, runs every
//! invocation on it (KVM wants a vCPU driven from one thread, and the fault counters are
//! per thread) and drops it when it has been idle for the idle timeout, when it failed, or
//! when it is stopped.

use super::runner::{digest_of, ms, trim_and_measure, RunError, VmSample};
use super::warm::{lock, State};
use super::{Node, NodeError};
use snapvisor_vmm::restore::{restore, restore_into, MemoryStrategy, RestoredVm, Shell, SnapshotSource};
use snapvisor_vmm::{Hypervisor, MicroVm};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A VM between invocations, its guest ready for the next request.
pub struct WarmVm {
    held: Held,
    timeout: Duration,
}

enum Held {
    Booted(MicroVm),
    /// Restored: its pager and the leases its memory needs live as long as it.
    Restored(RestoredVm),
}

impl WarmVm {
    /// Boots, runs init, and serves one request (so the next ones are warm).
    pub fn start(
        hv: &Hypervisor,
        elf: &[u8],
        mem_size: u64,
        request: &[u8],
        timeout: Duration,
    ) -> Result<Self, RunError> {
        let (mut vm, _) = MicroVm::boot(hv, elf, mem_size)?;
        vm.wait_ready(timeout)?;
        let first = vm.invoke(request, timeout)?;
        digest_of(&first.response)?;
        vm.finish(timeout)?;
        Ok(WarmVm { held: Held::Booted(vm), timeout })
    }

    /// Restores a VM from `source` with `strategy` (into `shell` when one is given) and
    /// serves `request` with it: a SnapStart, measured like any. Then keeps the VM: the
    /// guest is made ready again and the VM trims its fresh huge pages
    /// ([`RestoredVm::trim`], `pass`), so that while it waits it holds what it wrote; the
    /// sample's `kept` says what the trim gave back and the private bytes kept.
    pub fn snapstart(
        hv: &Hypervisor,
        shell: Option<Shell>,
        source: &SnapshotSource,
        strategy: &dyn MemoryStrategy,
        request: &[u8],
        timeout: Duration,
    ) -> Result<(Self, VmSample), RunError> {
        let in_shell = shell.is_some();
        let mut restored = match shell {
            Some(shell) => restore_into(shell, source, strategy)?,
            None => restore(hv, source, strategy)?,
        };
        let inv = restored.invoke(request, timeout)?;
        let mut sample = VmSample::measure(0, &restored.vm, inv)?;
        sample.add_restore(&restored, in_shell);
        restored.vm.finish(timeout)?;
        sample.kept = Some(trim_and_measure(&mut restored)?);
        Ok((WarmVm { held: Held::Restored(restored), timeout }, sample))
    }

    /// Sets the longest time later invocations may take.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// One warm invocation (the VM is ready again afterwards). A restored VM's invocation
    /// fails if its pager failed meanwhile.
    pub fn invoke(&mut self, request: &[u8]) -> Result<VmSample, RunError> {
        let timeout = self.timeout;
        let (inv, vm) = match &mut self.held {
            Held::Booted(vm) => (vm.invoke(request, timeout)?, vm),
            Held::Restored(restored) => (restored.invoke(request, timeout)?, &mut restored.vm),
        };
        let sample = VmSample::measure(0, vm, inv)?;
        vm.finish(timeout)?;
        Ok(sample)
    }
}

/// One invocation handed to a warm VM's thread.
pub(super) struct Job {
    pub(super) request: Vec<u8>,
    pub(super) timeout: Duration,
    pub(super) reply: SyncSender<Result<VmSample, RunError>>,
}

/// Sends one invocation to a warm VM's thread and waits for its sample.
pub(super) fn send(jobs: &Sender<Job>, request: Vec<u8>, timeout: Duration) -> Result<VmSample, NodeError> {
    let (reply, answer) = mpsc::sync_channel(1);
    jobs.send(Job { request, timeout, reply }).map_err(|_| RunError::Panicked)?;
    Ok(answer.recv().map_err(|_| RunError::Panicked)??)
}

/// How a warm VM's thread makes its VM.
pub(super) enum Make {
    /// Boot and init, then one warm-up invocation.
    Boot { elf: Vec<u8>, warmup: Vec<u8> },
    /// Restore, serve the SnapStart's request, trim.
    SnapStart(Box<Restore>),
}

/// What a kept SnapStart restores, how, and its request.
pub(super) struct Restore {
    pub(super) shell: Option<Shell>,
    pub(super) source: SnapshotSource,
    pub(super) strategy: Box<dyn MemoryStrategy>,
    pub(super) request: Vec<u8>,
}

/// A warm VM's thread: its place in the set.
pub(super) struct VmThread {
    pub(super) state: Arc<Mutex<State>>,
    pub(super) id: u64,
    pub(super) idle_timeout: Duration,
    pub(super) node: Arc<Node>,
    pub(super) mem_size: u64,
    pub(super) timeout: Duration,
}

/// What a warm VM's thread reports once its VM is made: the time it took, and the
/// SnapStart's sample if it was one.
pub(super) type Made = Result<(f64, Option<VmSample>), NodeError>;

/// Takes a VM's slot out of the set when its thread ends, however it ends (a panic in
/// the VMM included), so a dead VM never counts against `--warm-max`.
struct Vacate<'a>(&'a Mutex<State>, u64);

impl Drop for Vacate<'_> {
    fn drop(&mut self) {
        lock(self.0).vms.remove(&self.1);
    }
}

impl VmThread {
    fn make(&self, make: Make) -> Result<(WarmVm, Option<VmSample>), NodeError> {
        let hv = self.node.hypervisor()?;
        Ok(match make {
            Make::Boot { elf, warmup } => (WarmVm::start(hv, &elf, self.mem_size, &warmup, self.timeout)?, None),
            Make::SnapStart(r) => {
                let Restore { shell, source, strategy, request } = *r;
                let (vm, sample) = WarmVm::snapstart(hv, shell, &source, strategy.as_ref(), &request, self.timeout)?;
                (vm, Some(sample))
            }
        })
    }

    pub(super) fn run(self, make: Make, inbox: Receiver<Job>, made: SyncSender<Made>) {
        let _vacate = Vacate(&self.state, self.id);
        let start = Instant::now();
        let mut vm = match self.make(make) {
            Ok((vm, sample)) => {
                let _ = made.send(Ok((ms(start.elapsed()), sample)));
                vm
            }
            Err(e) => {
                lock(&self.state).vms.remove(&self.id);
                let _ = made.send(Err(e));
                return;
            }
        };
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
            Some(slot) if ok && !closed && !slot.retired => {
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
