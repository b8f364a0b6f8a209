//! The one vCPU of a snapvisor VM: setting it up for the entry point, running it until
//! the guest's next hypercall, stopping a guest that overruns its time, and saving and
//! restoring its state.
//!
//! Every exit is decoded (`vstate::exit`, a pure function) into a [`GuestEvent`] or a
//! typed [`VcpuError`]: a guest's abort, exception, bad hypercall argument, unknown port
//! or triple fault never panics the VMM and never reads outside guest memory.

pub use super::console::Console;

use crate::boot;
use crate::escape::Escaped;
use crate::vstate::exit::{self, CpuState, Exit, Step};
use crate::vstate::kvm::Hypervisor;
use crate::vstate::memory::{GuestMemory, OutOfBounds};
use crate::vstate::stats::{KvmCounters, VcpuStats};
use kvm_bindings::{
    kvm_debugregs, kvm_mp_state, kvm_msr_entry, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave, Msrs,
};
use kvm_ioctls::{VcpuExit, VcpuFd};
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// What the guest asked for when the vCPU stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestEvent {
    /// Ready for a request.
    Ready,
    /// A response of this many bytes is in the mailbox (already checked against its area).
    Response(u32),
}

/// Why a guest run ended in error.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// A KVM vCPU ioctl failed.
    #[error("KVM {what} failed")]
    Kvm {
        /// Which call.
        what: &'static str,
        /// The error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The guest did not reach its next hypercall in time.
    #[error("the guest did not answer within {0:?} (stopped)")]
    Timeout(Duration),
    /// The guest aborted (panic or explicit abort) with a message (raw guest text; shown
    /// escaped and shortened).
    #[error("the guest aborted: {}", Escaped::new(.0))]
    GuestAbort(String),
    /// A CPU exception in the guest.
    #[error("guest exception {name} (vector {vector}) at rip {rip:#x}, error code {error_code:#x}, rsp {rsp:#x}")]
    GuestException {
        /// Vector.
        vector: u64,
        /// Its name.
        name: &'static str,
        /// Faulting instruction.
        rip: u64,
        /// Error code (0 where the CPU pushes none).
        error_code: u64,
        /// Stack pointer at the fault.
        rsp: u64,
    },
    /// A page fault on the VMM's own structures in the guest (page tables, descriptor
    /// tables, stubs, exception stack: supervisor-only; boot info: read-only).
    #[error("the guest {} the VMM's {region} at {address:#x} (rip {rip:#x}), which it may not", if *.write { "wrote" } else { "read" })]
    PlatformAccess {
        /// Which structure.
        region: &'static str,
        /// The address accessed.
        address: u64,
        /// Whether it was a write.
        write: bool,
        /// The instruction.
        rip: u64,
    },
    /// A hypercall length above its mailbox area.
    #[error("the guest passed a {what} length of {len} bytes, above the mailbox limit of {max}")]
    BadLength {
        /// Which hypercall.
        what: &'static str,
        /// Length given.
        len: u64,
        /// Limit.
        max: u64,
    },
    /// An I/O port that is not a snapvisor hypercall.
    #[error("the guest used I/O port {port:#x} ({direction}), which is not a snapvisor hypercall")]
    BadPort {
        /// Port.
        port: u16,
        /// "in" or "out".
        direction: &'static str,
    },
    /// Guest code (not the VMM's stubs) wrote to the exception port.
    #[error("the guest wrote to the exception port from its own code at rip {0:#x}")]
    ForgedException(u64),
    /// The guest touched guest-physical memory outside its RAM.
    #[error("the guest accessed guest-physical address {0:#x}, outside its memory")]
    Mmio(u64),
    /// Triple fault.
    #[error("the guest triple-faulted (its exception handling itself faulted)")]
    Shutdown,
    /// KVM could not run or emulate the guest.
    #[error("KVM internal error, suberror {0} (on KVM-PVM this includes guest code that CPL0 emulation cannot run)")]
    Internal(u32),
    /// KVM refused to enter the guest.
    #[error("KVM failed to enter the guest (hardware reason {0:#x})")]
    FailEntry(u64),
    /// Any other exit.
    #[error("unexpected KVM exit: {0}")]
    UnexpectedExit(String),
    /// A guest-supplied address outside guest memory.
    #[error(transparent)]
    Memory(#[from] OutOfBounds),
    /// Arming the run timer failed.
    #[error("could not arm the vCPU timer")]
    Timer(#[source] std::io::Error),
}

fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VcpuError {
    move |source| VcpuError::Kvm { what, source }
}

/// Everything needed to resume a vCPU, saved at the guest's `ready` hypercall.
#[derive(Debug, Serialize, Deserialize)]
pub struct VcpuState {
    /// General-purpose registers.
    pub regs: kvm_regs,
    /// Segment, control and descriptor-table registers.
    pub sregs: kvm_sregs,
    /// x87/SSE/AVX state.
    pub xsave: kvm_xsave,
    /// Extended control registers (XCR0).
    pub xcrs: kvm_xcrs,
    /// Debug registers.
    pub debugregs: kvm_debugregs,
    /// Pending exceptions, interrupts and NMIs.
    pub vcpu_events: kvm_vcpu_events,
    /// Multiprocessing state.
    pub mp_state: kvm_mp_state,
    /// `(index, value)` of the MSRs in [`SAVED_MSRS`] that KVM supports here.
    pub msrs: Vec<(u32, u64)>,
}

/// MSRs saved with a vCPU: the ones a guest's instructions (or its exception path) can see
/// or change. EFER, FS/GS bases and the descriptor tables travel in `sregs`.
pub const SAVED_MSRS: &[(u32, &str)] = &[
    (0x10, "IA32_TSC"),
    (0x174, "IA32_SYSENTER_CS"),
    (0x175, "IA32_SYSENTER_ESP"),
    (0x176, "IA32_SYSENTER_EIP"),
    (0x277, "IA32_PAT"),
    (0xc000_0081, "STAR"),
    (0xc000_0082, "LSTAR"),
    (0xc000_0083, "CSTAR"),
    (0xc000_0084, "SFMASK"),
    (0xc000_0102, "KERNEL_GS_BASE"),
    (0xc000_0103, "TSC_AUX"),
];

/// A vCPU and its counters.
pub struct Vcpu {
    fd: VcpuFd,
    stats: Option<VcpuStats>,
}

impl Vcpu {
    /// Wraps a created vCPU and gives it the hypervisor's CPUID.
    pub fn new(hv: &Hypervisor, fd: VcpuFd) -> Result<Self, VcpuError> {
        fd.set_cpuid2(hv.cpuid()).map_err(kvm("KVM_SET_CPUID2"))?;
        let stats = VcpuStats::open(&fd).ok();
        Ok(Vcpu { fd, stats })
    }

    /// Sets up registers for the image's entry point (fresh boot).
    pub fn setup_boot(&self, hv: &Hypervisor, entry: u64) -> Result<(), VcpuError> {
        let base = self.fd.get_sregs().map_err(kvm("KVM_GET_SREGS"))?;
        let xsave = hv.xcr0() > 1;
        self.fd.set_sregs(&boot::long_mode_sregs(base, xsave)).map_err(kvm("KVM_SET_SREGS"))?;
        if xsave {
            let mut xcrs = kvm_xcrs { nr_xcrs: 1, ..Default::default() };
            xcrs.xcrs[0].xcr = 0;
            xcrs.xcrs[0].value = hv.xcr0();
            self.fd.set_xcrs(&xcrs).map_err(kvm("KVM_SET_XCRS"))?;
        }
        self.fd.set_fpu(&boot::entry_fpu()).map_err(kvm("KVM_SET_FPU"))?;
        self.fd.set_regs(&boot::entry_regs(entry)).map_err(kvm("KVM_SET_REGS"))?;
        Ok(())
    }

    /// KVM counters of this vCPU so far (zero where the kernel has no stats fd).
    pub fn counters(&self) -> KvmCounters {
        self.stats.as_ref().map(VcpuStats::read).unwrap_or_default()
    }

    /// Runs the guest until its next `ready` or `respond`, serving console writes on the
    /// way (kept in `console`). Stops the guest after `timeout`.
    pub fn run(
        &mut self,
        mem: &GuestMemory,
        timeout: Duration,
        console: &mut Console,
    ) -> Result<GuestEvent, VcpuError> {
        let start = Instant::now();
        let _timer = RunTimer::arm(timeout).map_err(VcpuError::Timer)?;
        loop {
            let exit = match self.fd.run() {
                Ok(VcpuExit::IoOut(port, data)) => Exit::Out { port, arg: exit::out_arg(data) },
                Ok(VcpuExit::IoIn(port, _)) => Exit::In { port },
                Ok(VcpuExit::Shutdown) => Exit::Shutdown,
                Ok(VcpuExit::InternalError) => {
                    // SAFETY: exit_reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the valid union member.
                    Exit::Internal(unsafe { self.fd.get_kvm_run().__bindgen_anon_1.internal.suberror })
                }
                Ok(VcpuExit::FailEntry(reason, _)) => Exit::FailEntry(reason),
                Ok(VcpuExit::MmioRead(addr, _) | VcpuExit::MmioWrite(addr, _)) => Exit::Mmio(addr),
                Ok(VcpuExit::Intr) => Exit::Interrupted,
                Ok(other) => Exit::Other(format!("{other:?}")),
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Exit::Interrupted,
                Err(e) => return Err(VcpuError::Kvm { what: "KVM_RUN", source: e }),
            };
            let fd = &self.fd;
            let mut cpu = || cpu_state(fd);
            match exit::decode(exit, mem, &mut cpu)? {
                Step::Event(event) => return Ok(event),
                Step::Console(line) => console.push(line),
                Step::Resume => {}
            }
            // A guest that only prints never blocks in KVM_RUN long enough for the timer's
            // signal to land there: check the deadline on every exit too.
            if start.elapsed() >= timeout {
                return Err(VcpuError::Timeout(timeout));
            }
        }
    }

    /// Completes the pending I/O exit (runs once with `immediate_exit`), as the KVM API
    /// requires before the vCPU state is read.
    pub fn complete_io(&mut self) -> Result<(), VcpuError> {
        self.fd.set_kvm_immediate_exit(1);
        let outcome = self.fd.run();
        let result = match outcome {
            Err(e) if e.errno() == libc::EINTR => Ok(()),
            Ok(VcpuExit::Intr) => Ok(()),
            Ok(other) => Err(VcpuError::UnexpectedExit(format!("{other:?} while completing I/O"))),
            Err(e) => Err(VcpuError::Kvm { what: "KVM_RUN (immediate exit)", source: e }),
        };
        self.fd.set_kvm_immediate_exit(0);
        result
    }

    /// Saves the vCPU state. Call [`Vcpu::complete_io`] first.
    pub fn save_state(&self, hv: &Hypervisor) -> Result<VcpuState, VcpuError> {
        let indices: Vec<u32> = SAVED_MSRS.iter().map(|(i, _)| *i).filter(|i| hv.has_msr(*i)).collect();
        let entries: Vec<kvm_msr_entry> =
            indices.iter().map(|&index| kvm_msr_entry { index, ..Default::default() }).collect();
        let mut msrs = Msrs::from_entries(&entries).map_err(|_| VcpuError::UnexpectedExit("too many MSRs".into()))?;
        let read = self.fd.get_msrs(&mut msrs).map_err(kvm("KVM_GET_MSRS"))?;
        Ok(VcpuState {
            regs: self.fd.get_regs().map_err(kvm("KVM_GET_REGS"))?,
            sregs: self.fd.get_sregs().map_err(kvm("KVM_GET_SREGS"))?,
            xsave: self.fd.get_xsave().map_err(kvm("KVM_GET_XSAVE"))?,
            xcrs: self.fd.get_xcrs().map_err(kvm("KVM_GET_XCRS"))?,
            debugregs: self.fd.get_debug_regs().map_err(kvm("KVM_GET_DEBUGREGS"))?,
            vcpu_events: self.fd.get_vcpu_events().map_err(kvm("KVM_GET_VCPU_EVENTS"))?,
            mp_state: self.fd.get_mp_state().map_err(kvm("KVM_GET_MP_STATE"))?,
            msrs: msrs.as_slice()[..read].iter().map(|e| (e.index, e.data)).collect(),
        })
    }

    /// Loads a saved state into this (fresh) vCPU.
    pub fn restore_state(&self, state: &VcpuState) -> Result<(), VcpuError> {
        let entries: Vec<kvm_msr_entry> =
            state.msrs.iter().map(|&(index, data)| kvm_msr_entry { index, data, ..Default::default() }).collect();
        let msrs = Msrs::from_entries(&entries).map_err(|_| VcpuError::UnexpectedExit("too many MSRs".into()))?;
        let written = self.fd.set_msrs(&msrs).map_err(kvm("KVM_SET_MSRS"))?;
        if written != entries.len() {
            let index = entries[written].index;
            return Err(VcpuError::UnexpectedExit(format!("KVM refused to restore MSR {index:#x}")));
        }
        self.fd.set_sregs(&state.sregs).map_err(kvm("KVM_SET_SREGS"))?;
        // SAFETY: a complete, fixed-size kvm_xsave (KVM_CAP_XSAVE2 is not enabled, so KVM
        // reads exactly this struct); its bytes come from a state file, and KVM checks
        // them (it refuses features the vCPU does not have).
        unsafe { self.fd.set_xsave(&state.xsave) }.map_err(kvm("KVM_SET_XSAVE"))?;
        self.fd.set_xcrs(&state.xcrs).map_err(kvm("KVM_SET_XCRS"))?;
        self.fd.set_debug_regs(&state.debugregs).map_err(kvm("KVM_SET_DEBUGREGS"))?;
        self.fd.set_mp_state(state.mp_state).map_err(kvm("KVM_SET_MP_STATE"))?;
        self.fd.set_regs(&state.regs).map_err(kvm("KVM_SET_REGS"))?;
        self.fd.set_vcpu_events(&state.vcpu_events).map_err(kvm("KVM_SET_VCPU_EVENTS"))?;
        Ok(())
    }
}

/// What an exception report is checked against: CPL, rip, rsp and CR2 from KVM.
fn cpu_state(fd: &VcpuFd) -> Result<CpuState, VcpuError> {
    let regs = fd.get_regs().map_err(kvm("KVM_GET_REGS"))?;
    let sregs = fd.get_sregs().map_err(kvm("KVM_GET_SREGS"))?;
    Ok(CpuState { cpl: (sregs.cs.selector & 3) as u8, rip: regs.rip, rsp: regs.rsp, cr2: sregs.cr2 })
}

/// A POSIX timer that sends the kick signal to the calling (vCPU) thread when a run
/// overruns, and again every [`RunTimer::REPEAT`] until disarmed, so a signal that lands
/// just before `KVM_RUN` cannot be lost.
struct RunTimer {
    id: libc::timer_t,
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Nothing to do: delivery alone makes KVM_RUN return EINTR.
}

fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

/// Installs [`kick_handler`] for the kick signal, with `SA_RESTART` so that other system
/// calls a late signal interrupts are restarted (KVM_RUN returns EINTR regardless).
fn register_kick_handler() -> Result<(), i32> {
    // SAFETY: zero is a valid sigaction; the fields that matter are set below.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = kick_handler as *const () as usize;
    action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
    // SAFETY: a valid sigaction with an async-signal-safe (empty) handler.
    if unsafe { libc::sigaction(kick_signal(), &action, std::ptr::null_mut()) } != 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EINVAL));
    }
    Ok(())
}

impl RunTimer {
    const REPEAT: Duration = Duration::from_millis(5);

    /// Longest timeout a timer is armed with (longer ones are clamped).
    const MAX: Duration = Duration::from_secs(365 * 24 * 3600);

    fn arm(timeout: Duration) -> std::io::Result<Self> {
        static HANDLER: OnceLock<Result<(), i32>> = OnceLock::new();
        HANDLER.get_or_init(register_kick_handler).map_err(std::io::Error::from_raw_os_error)?;
        let timeout = timeout.min(Self::MAX);
        // SAFETY: zero is a valid bit pattern for sigevent; the fields that matter are set below.
        let mut event: libc::sigevent = unsafe { std::mem::zeroed() };
        event.sigev_notify = libc::SIGEV_THREAD_ID;
        event.sigev_signo = kick_signal();
        // SAFETY: gettid has no preconditions.
        event.sigev_notify_thread_id = unsafe { libc::gettid() };
        let mut id: libc::timer_t = std::ptr::null_mut();
        // SAFETY: valid pointers to a sigevent and a timer id out-parameter.
        if unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &mut event, &mut id) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let timer = RunTimer { id };
        let spec = libc::itimerspec {
            it_interval: timespec(Self::REPEAT),
            it_value: timespec(timeout.max(Duration::from_micros(1))),
        };
        // SAFETY: `id` is the timer created above; `spec` is a valid itimerspec.
        if unsafe { libc::timer_settime(timer.id, 0, &spec, std::ptr::null_mut()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(timer)
    }
}

fn timespec(d: Duration) -> libc::timespec {
    libc::timespec { tv_sec: d.as_secs() as libc::time_t, tv_nsec: libc::c_long::from(d.subsec_nanos() as i32) }
}

impl Drop for RunTimer {
    fn drop(&mut self) {
        // SAFETY: deletes the timer this value created, once.
        unsafe { libc::timer_delete(self.id) };
    }
}
