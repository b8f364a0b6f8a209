//! Thin, documented wrappers over the userfaultfd(2) ioctls snapvisor uses.
//!
//! The `userfaultfd` crate's sys crate runs bindgen (libclang) at build time, which a fresh
//! machine does not have; like Cloud Hypervisor, snapvisor declares the few structures of
//! `<linux/userfaultfd.h>` itself and checks their sizes and ioctl numbers at compile time
//! and in tests.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

const UFFD_API: u64 = 0xaa;
/// Register for faults on missing pages.
pub const REGISTER_MODE_MISSING: u64 = 1;
/// Register for minor faults (page in the page cache, not in the page table).
pub const REGISTER_MODE_MINOR: u64 = 4;
const UFFD_EVENT_PAGEFAULT: u8 = 0x12;
/// Fault flag: the access was a write.
pub const PAGEFAULT_FLAG_WRITE: u64 = 1;
/// Fault flag: a minor fault.
pub const PAGEFAULT_FLAG_MINOR: u64 = 4;

#[repr(C)]
#[derive(Default)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioZeropage {
    range: UffdioRange,
    mode: u64,
    zeropage: i64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioContinue {
    range: UffdioRange,
    mode: u64,
    mapped: i64,
}

/// `struct uffd_msg` for a page-fault event (the only event snapvisor asks for).
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct UffdMsg {
    event: u8,
    reserved1: u8,
    reserved2: u16,
    reserved3: u32,
    flags: u64,
    address: u64,
    ptid: u32,
    pad: u32,
}

const _: () = {
    assert!(std::mem::size_of::<UffdioApi>() == 24);
    assert!(std::mem::size_of::<UffdioRegister>() == 32);
    assert!(std::mem::size_of::<UffdioCopy>() == 40);
    assert!(std::mem::size_of::<UffdioZeropage>() == 32);
    assert!(std::mem::size_of::<UffdioContinue>() == 32);
    assert!(std::mem::size_of::<UffdMsg>() == 32);
};

mod ioctls {
    #![allow(missing_docs)]
    use vmm_sys_util::{ioctl_ior_nr, ioctl_iowr_nr};
    const UFFDIO: u32 = 0xaa;
    ioctl_iowr_nr!(UFFDIO_API, UFFDIO, 0x3f, super::UffdioApi);
    ioctl_iowr_nr!(UFFDIO_REGISTER, UFFDIO, 0x00, super::UffdioRegister);
    ioctl_ior_nr!(UFFDIO_WAKE, UFFDIO, 0x02, super::UffdioRange);
    ioctl_iowr_nr!(UFFDIO_COPY, UFFDIO, 0x03, super::UffdioCopy);
    ioctl_iowr_nr!(UFFDIO_ZEROPAGE, UFFDIO, 0x04, super::UffdioZeropage);
    ioctl_iowr_nr!(UFFDIO_CONTINUE, UFFDIO, 0x07, super::UffdioContinue);
}

/// A page fault reported by the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageFault {
    /// Faulting address (not page aligned).
    pub address: u64,
    /// `PAGEFAULT_FLAG_*` bits.
    pub flags: u64,
}

/// Outcome of resolving a fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolved {
    /// The range was filled.
    Filled,
    /// Some page of the range was already there (another fault or thread got there first).
    AlreadyPresent,
}

/// A userfaultfd descriptor (non-blocking, close-on-exec).
#[derive(Debug)]
pub struct Uffd {
    fd: OwnedFd,
}

impl AsFd for Uffd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Uffd {
    /// Opens a userfaultfd and negotiates the API with the given feature bits.
    pub fn new(features: u64) -> io::Result<Self> {
        // SAFETY: the userfaultfd syscall takes only flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor we own.
        let uffd = Uffd { fd: unsafe { OwnedFd::from_raw_fd(fd as i32) } };
        let mut api = UffdioApi { api: UFFD_API, features, ioctls: 0 };
        uffd.ioctl(ioctls::UFFDIO_API(), &mut api)?;
        Ok(uffd)
    }

    fn ioctl<T>(&self, request: libc::c_ulong, arg: &mut T) -> io::Result<()> {
        // SAFETY: `request` is one of the userfaultfd ioctls above, declared with the size of
        // `T`, and `arg` is a valid, exclusively borrowed `T` for the call.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), request as _, arg as *mut T) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Registers `[addr, addr+len)` with `mode` (`REGISTER_MODE_*`).
    pub fn register(&self, addr: *mut u8, len: usize, mode: u64) -> io::Result<()> {
        let mut reg = UffdioRegister { range: UffdioRange { start: addr as u64, len: len as u64 }, mode, ioctls: 0 };
        self.ioctl(ioctls::UFFDIO_REGISTER(), &mut reg)
    }

    /// Copies `len` bytes from `src` to the registered `dst` and wakes the faulting threads.
    pub fn copy(&self, dst: u64, src: *const u8, len: usize) -> io::Result<Resolved> {
        self.fill(len, |done, rest| {
            let mut copy = UffdioCopy { dst: dst + done, src: src as u64 + done, len: rest, mode: 0, copy: 0 };
            let result = self.ioctl(ioctls::UFFDIO_COPY(), &mut copy);
            (result, copy.copy)
        })
    }

    /// Maps zero pages at the registered `[dst, dst+len)` and wakes the faulting threads.
    pub fn zeropage(&self, dst: u64, len: usize) -> io::Result<Resolved> {
        self.fill(len, |done, rest| {
            let mut zero = UffdioZeropage { range: UffdioRange { start: dst + done, len: rest }, mode: 0, zeropage: 0 };
            let result = self.ioctl(ioctls::UFFDIO_ZEROPAGE(), &mut zero);
            (result, zero.zeropage)
        })
    }

    /// Runs a filling ioctl over `len` bytes: `op(done, rest)` issues it for the bytes not
    /// yet filled and returns its result and the kernel's count of bytes it did fill. On
    /// `EAGAIN` the kernel filled part (and woke it); the rest is retried.
    fn fill(&self, len: usize, mut op: impl FnMut(u64, u64) -> (io::Result<()>, i64)) -> io::Result<Resolved> {
        let mut done = 0u64;
        loop {
            let (result, filled) = op(done, len as u64 - done);
            match result {
                Ok(()) => return Ok(Resolved::Filled),
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => return Ok(Resolved::AlreadyPresent),
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                    done += u64::try_from(filled).unwrap_or(0);
                    if done >= len as u64 {
                        return Ok(Resolved::Filled);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Resolves a minor fault: maps the page already in the page cache at `[dst, dst+len)`.
    pub fn continue_range(&self, dst: u64, len: usize) -> io::Result<Resolved> {
        loop {
            let mut cont = UffdioContinue { range: UffdioRange { start: dst, len: len as u64 }, mode: 0, mapped: 0 };
            match self.ioctl(ioctls::UFFDIO_CONTINUE(), &mut cont) {
                Ok(()) => return Ok(Resolved::Filled),
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => return Ok(Resolved::AlreadyPresent),
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Wakes threads waiting on `[start, start+len)` (after another thread resolved it).
    pub fn wake(&self, start: u64, len: usize) -> io::Result<()> {
        let mut range = UffdioRange { start, len: len as u64 };
        self.ioctl(ioctls::UFFDIO_WAKE(), &mut range)
    }

    /// Reads the next page-fault event, or `None` if none is pending.
    pub fn read_fault(&self) -> io::Result<Option<PageFault>> {
        let mut msg = UffdMsg::default();
        loop {
            // SAFETY: reads at most one uffd_msg into a struct of exactly that size.
            let n = unsafe {
                libc::read(self.fd.as_raw_fd(), (&mut msg as *mut UffdMsg).cast(), std::mem::size_of::<UffdMsg>())
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.raw_os_error() {
                    Some(libc::EAGAIN) => Ok(None),
                    Some(libc::EINTR) => continue,
                    _ => Err(e),
                };
            }
            if n as usize != std::mem::size_of::<UffdMsg>() {
                return Err(io::Error::other("short read from userfaultfd"));
            }
            if msg.event != UFFD_EVENT_PAGEFAULT {
                continue; // Not asked for; ignore.
            }
            return Ok(Some(PageFault { address: msg.address, flags: msg.flags }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ioctls::*;

    #[test]
    fn ioctl_numbers_match_the_kernel_header() {
        assert_eq!(UFFDIO_API(), 0xc018_aa3f);
        assert_eq!(UFFDIO_REGISTER(), 0xc020_aa00);
        assert_eq!(UFFDIO_WAKE(), 0x8010_aa02);
        assert_eq!(UFFDIO_COPY(), 0xc028_aa03);
        assert_eq!(UFFDIO_ZEROPAGE(), 0xc020_aa04);
        assert_eq!(UFFDIO_CONTINUE(), 0xc020_aa07);
    }
}
