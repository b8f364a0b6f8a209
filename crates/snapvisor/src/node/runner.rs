//! Measured operations shared by the CLI commands and the benchmark: a fresh run and
//! SnapStarts (restore + one invocation) of one or many VMs at once (warm VMs: `warm_vm.rs`).

use serde::Serialize;
use snapvisor_vmm::machine::BootTimes;
use snapvisor_vmm::metrics::{MemoryUsage, ThreadFaults};
use snapvisor_vmm::restore::{
    restore, restore_into, MemoryStrategy, RestoreTimes, RestoredVm, Shell, SnapshotSource, Trimmed,
};
use snapvisor_vmm::vstate::stats::KvmCounters;
use snapvisor_vmm::{Hypervisor, Invocation, MicroVm};
use std::sync::{Barrier, Mutex};
use std::time::Duration;

/// Errors of the runner: the VMM's, or a function that answered with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The VMM failed.
    #[error(transparent)]
    Vmm(#[from] snapvisor_vmm::Error),
    /// The function answered `{"error": ...}` (the guest's text: shown escaped and
    /// shortened, like an abort message).
    #[error("the function reported an error: {}", snapvisor_vmm::escape::Escaped::new(.0))]
    Function(String),
    /// A VM's thread panicked (a bug in snapvisor).
    #[error("the VM's thread panicked")]
    Panicked,
    /// One of several concurrent VMs failed.
    #[error("VM {vm} of {total} failed")]
    Concurrent {
        /// Index of the failed VM.
        vm: usize,
        /// VMs in the run.
        total: usize,
        /// Its error.
        #[source]
        source: Box<RunError>,
    },
}

impl RunError {
    /// The guest timeout this failure comes down to, if that is what it was (a VM that ran
    /// past it, directly or as one of several concurrent VMs).
    pub fn timeout(&self) -> Option<Duration> {
        match self {
            RunError::Vmm(snapvisor_vmm::Error::Vcpu(snapvisor_vmm::vstate::vcpu::VcpuError::Timeout(t))) => Some(*t),
            RunError::Concurrent { source, .. } => source.timeout(),
            _ => None,
        }
    }
}

/// The `digest` of a function's JSON response; `Function` error if it answered an error.
/// Responses that are not JSON objects (user images) have no digest.
pub fn digest_of(response: &[u8]) -> Result<Option<String>, RunError> {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(response) else { return Ok(None) };
    if let Some(error) = value.get("error") {
        return Err(RunError::Function(error.as_str().map_or_else(|| error.to_string(), str::to_string)));
    }
    Ok(value.get("digest").and_then(|d| d.as_str()).map(str::to_string))
}

/// Milliseconds as a float.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A fresh boot and one invocation (`snapvisor run`).
#[derive(Debug, Serialize)]
pub struct FreshRun {
    /// Response bytes as text.
    #[serde(skip)]
    pub response: Vec<u8>,
    /// Digest from the response, if any.
    pub digest: Option<String>,
    /// VM creation (KVM VM, vCPU, memory).
    pub vm_create_ms: f64,
    /// Image load and platform setup.
    pub load_ms: f64,
    /// Guest init, to its first `ready`.
    pub init_ms: f64,
    /// The invocation, resume to response.
    pub invoke_ms: f64,
    /// KVM counters during the invocation.
    pub kvm: KvmCounters,
    /// Console lines the guest wrote.
    pub console: Vec<String>,
}

/// Boots `elf`, runs its init, and invokes it once.
pub fn fresh_run(
    hv: &Hypervisor,
    elf: &[u8],
    mem_size: u64,
    request: &[u8],
    timeout: Duration,
) -> Result<FreshRun, RunError> {
    let (mut vm, BootTimes { create, load }) = MicroVm::boot(hv, elf, mem_size)?;
    let init = vm.wait_ready(timeout)?;
    let inv = vm.invoke(request, timeout)?;
    let digest = digest_of(&inv.response)?;
    Ok(FreshRun {
        digest,
        vm_create_ms: ms(create),
        load_ms: ms(load),
        init_ms: ms(init),
        invoke_ms: ms(inv.duration),
        kvm: inv.kvm,
        console: vm.console().to_vec(),
        response: inv.response,
    })
}

/// What one VM of a SnapStart (or a warm invocation) measured.
#[derive(Debug)]
pub struct VmSample {
    /// Index among concurrent VMs.
    pub vm: usize,
    /// Digest of the response.
    pub digest: Option<String>,
    /// Response bytes.
    pub response: Vec<u8>,
    /// Restore time split (zero for warm invocations).
    pub restore: RestoreTimes,
    /// Resume to response.
    pub invoke: Duration,
    /// Host page faults of the vCPU thread during the invocation.
    pub host_faults: ThreadFaults,
    /// KVM counters during the invocation.
    pub kvm: KvmCounters,
    /// Faults served by the strategy's pager.
    pub uffd_faults: u64,
    /// Bytes loaded or mapped before resume.
    pub prepared_bytes: u64,
    /// Guest memory resident after the response.
    pub memory: MemoryUsage,
    /// After a trim ([`SnapStartRun::trim`], a VM kept warm): what it gave back, and the
    /// private bytes kept.
    pub kept: Option<(Trimmed, u64)>,
    /// Whether the VM was restored into a shell made ahead.
    pub in_shell: bool,
}

impl VmSample {
    /// A sample of VM number `vm` from its invocation: checks the response and scans the
    /// VM's memory (restore figures are filled in by the caller).
    pub(crate) fn measure(vm: usize, machine: &MicroVm, inv: Invocation) -> Result<Self, RunError> {
        let digest = digest_of(&inv.response)?;
        let mem = machine.memory()?;
        let memory = MemoryUsage::scan(mem.mapping().as_ptr(), mem.mapping().len()).unwrap_or_default();
        Ok(VmSample {
            vm,
            digest,
            response: inv.response,
            restore: RestoreTimes::default(),
            invoke: inv.duration,
            host_faults: inv.faults,
            kvm: inv.kvm,
            uffd_faults: 0,
            prepared_bytes: 0,
            memory,
            kept: None,
            in_shell: false,
        })
    }

    /// Adds what the restore of `restored` did: its phase times, the faults its pager
    /// served, the bytes it prepared, and whether it went into a shell.
    pub(crate) fn add_restore(&mut self, restored: &RestoredVm, in_shell: bool) {
        self.restore = restored.times;
        self.uffd_faults = restored.pager_report().faults;
        self.prepared_bytes = restored.prepared_bytes;
        self.in_shell = in_shell;
    }

    /// Restore plus invocation.
    pub fn total(&self) -> Duration {
        self.restore.total() + self.invoke
    }
}

/// Trims `restored` between invocations ([`RestoredVm::trim`]) and scans its memory
/// again: what the trim gave back, and the private bytes the VM keeps.
pub(crate) fn trim_and_measure(restored: &mut RestoredVm) -> Result<(Trimmed, u64), RunError> {
    let trimmed = restored.trim()?;
    let mem = restored.vm.memory()?;
    let kept = MemoryUsage::scan(mem.mapping().as_ptr(), mem.mapping().len()).unwrap_or_default();
    Ok((trimmed, kept.private_bytes))
}

/// How a SnapStart of several VMs runs.
#[derive(Clone, Copy)]
pub struct SnapStartRun<'a> {
    /// VMs restored at the same moment.
    pub concurrency: usize,
    /// Longest one invocation may take.
    pub timeout: Duration,
    /// Restore into VM shells of this memory size, made before the clock starts (a node
    /// keeps them ready); `None`: create each VM as part of its restore.
    pub shells: Option<u64>,
    /// Shells made earlier (the daemon's stock): each VM takes one while there are any,
    /// the others are created as part of their restore.
    pub ready: Option<&'a Mutex<Vec<Shell>>>,
    /// Called once while every VM is alive, after all have answered (to read the host's
    /// memory then).
    pub while_alive: Option<&'a (dyn Fn() + Sync)>,
    /// After every VM has answered and the host's memory has been read, each VM gives back
    /// the untouched parts of its fresh huge pages
    /// ([`RestoredVm::trim`](snapvisor_vmm::restore::RestoredVm::trim), `pass` only) and
    /// measures its private memory again, as a VM kept for its next request would.
    pub trim: bool,
}

impl SnapStartRun<'_> {
    /// `concurrency` VMs, created as part of their restore, nothing to call.
    pub fn plain(concurrency: usize, timeout: Duration) -> Self {
        SnapStartRun { concurrency, timeout, shells: None, ready: None, while_alive: None, trim: false }
    }
}

/// `run.concurrency` VMs restore `source` with `strategy` at the same moment, and each
/// serves `request` once. All VMs stay alive until every one has answered and measured its
/// memory (so shared pages are shared at measurement time); then they are torn down.
pub fn snapstart(
    hv: &Hypervisor,
    source: &SnapshotSource,
    strategy: &dyn MemoryStrategy,
    request: &[u8],
    run: &SnapStartRun<'_>,
) -> Result<Vec<VmSample>, RunError> {
    let concurrency = run.concurrency.max(1);
    let start = Barrier::new(concurrency);
    let answered = Barrier::new(concurrency);
    let done = Barrier::new(concurrency);
    let one = |vm: usize| -> Result<VmSample, RunError> {
        let ready = run.ready.and_then(|r| r.lock().unwrap_or_else(|p| p.into_inner()).pop()).map(Ok);
        let shell = ready.or_else(|| run.shells.map(|mem_size| Shell::create(hv, mem_size)));
        let in_shell = shell.is_some();
        start.wait();
        // A panic must not skip the barriers below, or the other VMs would wait forever.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<_, RunError> {
            let mut restored = match shell {
                Some(shell) => restore_into(shell?, source, strategy)?,
                None => restore(hv, source, strategy)?,
            };
            let inv = restored.invoke(request, run.timeout)?;
            let sample = VmSample::measure(vm, &restored.vm, inv)?;
            Ok((restored, sample))
        }))
        .unwrap_or(Err(RunError::Panicked));
        // Every VM waits here, failed or not, so none is torn down before all are measured.
        answered.wait();
        if vm == 0 {
            if let Some(while_alive) = run.while_alive {
                while_alive();
            }
        }
        done.wait();
        let (mut restored, mut sample) = result?;
        sample.add_restore(&restored, in_shell);
        if run.trim && !restored.trim.is_empty() {
            sample.kept = Some(trim_and_measure(&mut restored)?);
        }
        Ok(sample)
    };
    let results: Vec<Result<VmSample, RunError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..concurrency).map(|vm| s.spawn(move || one(vm))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or(Err(RunError::Panicked))).collect()
    });
    let total = results.len();
    results
        .into_iter()
        .enumerate()
        .map(|(vm, r)| {
            r.map_err(|e| if total > 1 { RunError::Concurrent { vm, total, source: Box::new(e) } } else { e })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guests_error_text_is_shown_escaped_and_shortened() {
        // A guest may answer up to the response area's 1.5 MiB, terminal escapes included.
        let text = format!("\u{1b}[2Jforged\nline{}", "x".repeat(1 << 20));
        let response = serde_json::json!({ "error": text }).to_string();
        let err = digest_of(response.as_bytes()).unwrap_err();
        let shown = err.to_string();
        assert!(matches!(err, RunError::Function(_)));
        assert!(shown.len() < 4096, "{} bytes shown", shown.len());
        assert!(!shown.contains('\u{1b}') && !shown.contains('\n'), "{shown:.80}");
        assert!(shown.contains("more bytes"), "the cut is not said");
        assert_eq!(digest_of(br#"{"digest":"d"}"#).unwrap().as_deref(), Some("d"));
    }
}
