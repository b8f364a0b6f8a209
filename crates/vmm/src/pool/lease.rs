//! Extent leases: kernel byte-range locks (open-file-description locks, `F_OFD_SETLK`)
//! on the pool that keep running VMs and imports out of each other's way.
//!
//! A restored VM maps its snapshot's extents privately: until it writes a page, it sees
//! the pool's bytes. So while it runs, nobody may overwrite those extents, even if the
//! snapshot is removed from the table meanwhile. Each restore takes *read* locks on its
//! snapshot's extents for the VM's lifetime; an import takes *write* locks on the free
//! extents it is about to fill and skips any extent it cannot lock. The kernel drops the
//! locks when their descriptor closes, so a crashed VMM never leaves one behind.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use super::format::EXTENT;

/// Byte-range locks held through one open file description of the pool.
#[derive(Debug)]
pub struct Lease {
    file: File,
}

impl Lease {
    /// A new open file description of the pool (locks of different descriptions conflict,
    /// even within one process), opened through the pool's own descriptor
    /// (`/proc/self/fd/N`): whatever its path names now (another file, a FIFO), the locks
    /// are on the file that is mapped.
    pub(crate) fn open(pool: &File, write: bool) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(write)
            .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(format!("/proc/self/fd/{}", pool.as_raw_fd()))?;
        Ok(Lease { file })
    }

    /// Locks extents `first..first + count`: shared (`write == false`) or exclusive. With
    /// `wait`, blocks until granted; without, returns `Ok(false)` if another holder conflicts.
    pub(crate) fn lock(&self, first: u64, count: u64, write: bool, wait: bool) -> io::Result<bool> {
        // SAFETY: zero is a valid `flock`; the fields that matter are set below.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = if write { libc::F_WRLCK } else { libc::F_RDLCK } as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        fl.l_start = (first * EXTENT) as libc::off_t;
        fl.l_len = (count * EXTENT) as libc::off_t;
        let cmd = if wait { libc::F_OFD_SETLKW } else { libc::F_OFD_SETLK };
        loop {
            // SAFETY: fcntl with an OFD lock command and a valid `flock`; `l_pid` is 0 as required.
            if unsafe { libc::fcntl(self.file.as_raw_fd(), cmd, &fl) } == 0 {
                return Ok(true);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) | Some(libc::EACCES) if !wait => return Ok(false),
                _ => return Err(e),
            }
        }
    }

    /// Takes shared locks on `extents` (ascending), one lock per contiguous run.
    pub(crate) fn share(&self, extents: &[u64]) -> io::Result<()> {
        let mut i = 0;
        while i < extents.len() {
            let mut j = i + 1;
            while j < extents.len() && extents[j] == extents[j - 1] + 1 {
                j += 1;
            }
            self.lock(extents[i], (j - i) as u64, false, true)?;
            i = j;
        }
        Ok(())
    }
}
