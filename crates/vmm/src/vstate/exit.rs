//! Decoding a guest exit: what the vCPU reported (port, argument, the mailbox, the
//! exception frame on the guest's stack) into a [`Step`] of the run loop or a typed
//! [`VcpuError`].
//!
//! This is the whole guest-facing protocol, as a pure function of the exit and of guest
//! memory ([`GuestRead`]), so that it can be fuzzed (`crate::fuzzing`): no guest-supplied
//! length, address or frame can panic the VMM or make it read outside guest memory.

use super::memory::{GuestMemory, OutOfBounds};
use super::vcpu::{GuestEvent, VcpuError};
use crate::boot;
use snapvisor_abi::{exception_name, layout, mailbox, port, ExceptionFrame};

/// Guest memory as the exit decoder reads it.
pub trait GuestRead {
    /// Copies guest memory at `addr` into `buf`.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), OutOfBounds>;
}

impl GuestRead for GuestMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), OutOfBounds> {
        GuestMemory::read(self, addr, buf)
    }
}

/// What KVM reported when the vCPU stopped, reduced to what the protocol looks at.
#[derive(Clone, Debug)]
pub enum Exit {
    /// `out` to `port` with this argument ([`out_arg`] of the bytes written).
    Out {
        /// Port.
        port: u16,
        /// Argument.
        arg: u32,
    },
    /// `in` from `port`.
    In {
        /// Port.
        port: u16,
    },
    /// Triple fault.
    Shutdown,
    /// KVM internal error with its suberror.
    Internal(u32),
    /// KVM could not enter the guest (hardware reason).
    FailEntry(u64),
    /// A guest-physical access outside RAM.
    Mmio(u64),
    /// `KVM_RUN` was interrupted (the run timer's signal).
    Interrupted,
    /// Any other exit.
    Other(String),
}

/// The vCPU state an exception report is checked against (read from KVM only for one).
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuState {
    /// Current privilege level.
    pub cpl: u8,
    /// Instruction pointer (just past the `out`).
    pub rip: u64,
    /// Stack pointer.
    pub rsp: u64,
    /// Page-fault address register.
    pub cr2: u64,
}

/// What the run loop does after an exit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Stop: the guest reached a hypercall the caller waits for.
    Event(GuestEvent),
    /// Keep this console line and run on.
    Console(String),
    /// Run on (after checking the deadline).
    Resume,
}

/// The argument of an `out`: its bytes (1, 2 or 4), little-endian, zero-extended.
pub fn out_arg(data: &[u8]) -> u32 {
    let mut bytes = [0u8; 4];
    let n = data.len().min(4);
    bytes[..n].copy_from_slice(&data[..n]);
    u32::from_le_bytes(bytes)
}

fn check_len(what: &'static str, len: u32, max: u64) -> Result<(), VcpuError> {
    if u64::from(len) > max {
        return Err(VcpuError::BadLength { what, len: u64::from(len), max });
    }
    Ok(())
}

fn read_message(mem: &dyn GuestRead, len: u32) -> Result<String, OutOfBounds> {
    let mut bytes = vec![0u8; len as usize];
    mem.read(layout::MAILBOX + mailbox::MESSAGE, &mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Decodes one exit. `cpu` reads the vCPU's state; it is called only for an exception
/// report.
pub fn decode(
    exit: Exit,
    mem: &dyn GuestRead,
    cpu: &mut dyn FnMut() -> Result<CpuState, VcpuError>,
) -> Result<Step, VcpuError> {
    let (port, arg) = match exit {
        Exit::Out { port, arg } => (port, arg),
        Exit::In { port } => return Err(VcpuError::BadPort { port, direction: "in" }),
        Exit::Shutdown => return Err(VcpuError::Shutdown),
        Exit::Internal(suberror) => return Err(VcpuError::Internal(suberror)),
        Exit::FailEntry(reason) => return Err(VcpuError::FailEntry(reason)),
        Exit::Mmio(addr) => return Err(VcpuError::Mmio(addr)),
        Exit::Interrupted => return Ok(Step::Resume),
        Exit::Other(what) => return Err(VcpuError::UnexpectedExit(what)),
    };
    match port {
        port::READY => Ok(Step::Event(GuestEvent::Ready)),
        port::RESPOND => {
            check_len("response", arg, mailbox::RESPONSE_MAX)?;
            Ok(Step::Event(GuestEvent::Response(arg)))
        }
        port::CONSOLE => {
            check_len("console", arg, mailbox::MESSAGE_MAX)?;
            Ok(Step::Console(read_message(mem, arg)?))
        }
        port::ABORT => {
            check_len("abort message", arg, mailbox::MESSAGE_MAX)?;
            Err(VcpuError::GuestAbort(read_message(mem, arg)?))
        }
        port::EXCEPTION => Err(exception(mem, cpu()?)),
        port => Err(VcpuError::BadPort { port, direction: "out" }),
    }
}

/// The exception a stub reported, or why the report is refused.
fn exception(mem: &dyn GuestRead, cpu: CpuState) -> VcpuError {
    // The `out` has completed, so rip is just past it. Only the VMM's stubs, at CPL0, report
    // exceptions: guest code that reached a stub's `out` itself is refused unread.
    if cpu.cpl != 0 || !boot::is_exception_stub(cpu.rip.wrapping_sub(2)) {
        return VcpuError::ForgedException(cpu.rip);
    }
    let mut words = [0u64; 7];
    for (i, w) in words.iter_mut().enumerate() {
        let mut b = [0u8; 8];
        let at = cpu.rsp.checked_add(8 * i as u64);
        match at.ok_or(OutOfBounds { addr: cpu.rsp, len: 56, size: 0 }).and_then(|at| mem.read(at, &mut b)) {
            Ok(()) => *w = u64::from_le_bytes(b),
            Err(e) => return e.into(),
        }
    }
    let frame = ExceptionFrame {
        vector: words[0],
        error_code: words[1],
        rip: words[2],
        cs: words[3],
        rflags: words[4],
        rsp: words[5],
        ss: words[6],
    };
    const PAGE_FAULT: u64 = 14;
    const PF_WRITE: u64 = 1 << 1;
    if frame.vector == PAGE_FAULT {
        if let Some(region) = boot::platform_region(cpu.cr2) {
            return VcpuError::PlatformAccess {
                region,
                address: cpu.cr2,
                write: frame.error_code & PF_WRITE != 0,
                rip: frame.rip,
            };
        }
    }
    VcpuError::GuestException {
        vector: frame.vector,
        name: exception_name(frame.vector),
        rip: frame.rip,
        error_code: frame.error_code,
        rsp: frame.rsp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guest memory for the tests: `bytes` at guest address `base`.
    struct Window {
        base: u64,
        bytes: Vec<u8>,
    }

    impl GuestRead for Window {
        fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), OutOfBounds> {
            let oob = || OutOfBounds { addr, len: buf.len() as u64, size: self.base + self.bytes.len() as u64 };
            let start = addr.checked_sub(self.base).ok_or_else(oob)? as usize;
            let end = start.checked_add(buf.len()).filter(|&e| e <= self.bytes.len()).ok_or_else(oob)?;
            buf.copy_from_slice(&self.bytes[start..end]);
            Ok(())
        }
    }

    fn out(port: u16, arg: u32) -> Exit {
        Exit::Out { port, arg }
    }

    fn no_cpu() -> Result<CpuState, VcpuError> {
        panic!("the vCPU state is read only for an exception report")
    }

    #[test]
    fn hypercalls_decode_and_lengths_are_checked() {
        let mailbox = Window { base: layout::MAILBOX, bytes: vec![b'a'; (mailbox::MESSAGE + 16) as usize] };
        let d = |exit| decode(exit, &mailbox, &mut no_cpu);
        assert_eq!(d(out(port::READY, 7)).unwrap(), Step::Event(GuestEvent::Ready));
        assert_eq!(d(out(port::RESPOND, 5)).unwrap(), Step::Event(GuestEvent::Response(5)));
        assert_eq!(d(out(port::CONSOLE, 3)).unwrap(), Step::Console("aaa".into()));
        assert!(matches!(d(out(port::ABORT, 2)), Err(VcpuError::GuestAbort(m)) if m == "aa"));
        assert!(matches!(d(out(port::RESPOND, u32::MAX)), Err(VcpuError::BadLength { .. })));
        // A length inside the message area but past the guest memory the window has.
        assert!(matches!(d(out(port::CONSOLE, 17)), Err(VcpuError::Memory(_))));
        assert!(matches!(d(out(0x99, 0)), Err(VcpuError::BadPort { port: 0x99, .. })));
        assert!(matches!(d(Exit::In { port: port::READY }), Err(VcpuError::BadPort { direction: "in", .. })));
        assert_eq!(d(Exit::Interrupted).unwrap(), Step::Resume);
        assert_eq!(out_arg(&[9]), 9);
        assert_eq!(out_arg(&[1, 2, 3, 4, 5]), 0x0403_0201);
    }

    #[test]
    fn exception_reports_are_checked() {
        let stub_out = layout::EXCEPTION_STUBS + 2 * layout::EXCEPTION_STUB_SIZE + 4 + 2;
        let frame = |vector: u64, error_code: u64| {
            let words = [vector, error_code, 0x40_1000, 0x23, 0x2, 0x1f_f000, 0x1b];
            Window { base: 0x1_f000, bytes: words.iter().flat_map(|w| w.to_le_bytes()).collect() }
        };
        let cpu = |cpl, rip, rsp, cr2| move || Ok(CpuState { cpl, rip, rsp, cr2 });
        let pf = frame(14, 0x7);
        match decode(out(port::EXCEPTION, 0), &pf, &mut cpu(0, stub_out, 0x1_f000, 0x1000)) {
            Err(VcpuError::PlatformAccess { region: "page tables", write: true, .. }) => {}
            other => panic!("{other:?}"),
        }
        match decode(out(port::EXCEPTION, 0), &pf, &mut cpu(0, stub_out, 0x1_f000, 0)) {
            Err(VcpuError::GuestException { vector: 14, rip: 0x40_1000, .. }) => {}
            other => panic!("{other:?}"),
        }
        // From CPL3, or from outside the stubs: forged, and the stack is not read.
        for (cpl, rip) in [(3, stub_out), (0, 0x40_0000)] {
            let result = decode(out(port::EXCEPTION, 0), &pf, &mut cpu(cpl, rip, u64::MAX, 0));
            assert!(matches!(result, Err(VcpuError::ForgedException(_))), "{result:?}");
        }
        // A stack pointer at the top of the address space: a typed error, no overflow.
        let result = decode(out(port::EXCEPTION, 0), &pf, &mut cpu(0, stub_out, u64::MAX - 8, 0));
        assert!(matches!(result, Err(VcpuError::Memory(_))), "{result:?}");
    }
}
