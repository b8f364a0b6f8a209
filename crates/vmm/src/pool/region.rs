//! The pool's persistence layer: the bytes of a pool, and how stores to them become durable.
//!
//! The pool code reads and writes through a [`Region`] and says what must be durable when
//! (`flush` a range, then `fence`), the way persistent-memory code is written for real
//! hardware. [`MappedRegion`] is the real thing: the pool's device or file mapped shared,
//! made durable with cache-line write-back and `sfence` on persistent memory mapped
//! synchronously, with `msync` otherwise. Because the layer is a trait, the crash tests can
//! run the pool on a region that records every store, flush and fence and rebuild the
//! images a power failure could leave (`pool::crash_tests`), the way PMDK's pmreorder does.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes of a pool and the stores, flushes and fences that make them durable.
///
/// Every range passed in lies inside the region (the pool checks before calling);
/// implementations panic rather than touch memory outside it.
pub trait Region: Send + Sync {
    /// Bytes of the region.
    fn len(&self) -> u64;
    /// Whether the region is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The bytes at `[offset, offset + len)`.
    fn bytes(&self, offset: u64, len: u64) -> &[u8];
    /// Stores `bytes` at `offset`: visible at once, durable only after [`Region::flush`]
    /// of the range and a [`Region::fence`].
    fn store(&self, offset: u64, bytes: &[u8]);
    /// Stores the `len` bytes at `offset` that `fill` writes in place (zero-copy where the
    /// region is memory).
    fn store_with(&self, offset: u64, len: u64, fill: &mut dyn FnMut(&mut [u8]) -> io::Result<()>) -> io::Result<()>;
    /// Loads the aligned 8-byte cell at `offset` atomically.
    fn load_u64(&self, offset: u64) -> u64;
    /// Stores the aligned 8-byte cell at `offset` with one atomic store (the commit record:
    /// power-fail atomic on persistent memory).
    fn store_u64(&self, offset: u64, value: u64);
    /// Writes `[offset, offset + len)` back towards the medium (durable after the next fence).
    fn flush(&self, offset: u64, len: u64) -> io::Result<()>;
    /// Orders: everything flushed before it is durable before anything stored after it.
    fn fence(&self) -> io::Result<()>;
}

/// How a [`MappedRegion`] makes stores durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persist {
    /// Persistent memory mapped synchronously (device-dax, fsdax with `MAP_SYNC`): cache-line
    /// write-back (`clwb`, else `clflushopt`, else `clflush`) and `sfence`.
    CacheLines,
    /// A file mapping: `msync(MS_SYNC)` (durable when it returns; the fence has nothing to add).
    Msync,
    /// Process memory (tests, fuzzing): nothing is durable.
    Volatile,
}

/// A region mapped into the VMM: the pool's device or file (shared), or anonymous memory.
pub struct MappedRegion {
    ptr: *mut u8,
    len: usize,
    persist: Persist,
}

// SAFETY: the mapping is owned by the region; the pool serialises metadata updates with its
// mutex (threads) and flock (processes), and extents being filled are exclusively leased.
unsafe impl Send for MappedRegion {}
// SAFETY: see Send.
unsafe impl Sync for MappedRegion {}

impl std::fmt::Debug for MappedRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedRegion").field("len", &self.len).field("persist", &self.persist).finish()
    }
}

impl Drop for MappedRegion {
    fn drop(&mut self) {
        // SAFETY: unmaps the mapping this value created, once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

impl MappedRegion {
    /// Maps `len` bytes of `file` shared. With `try_sync` (a DAX file), first as a
    /// synchronous mapping (`MAP_SYNC`), which makes cache flushes alone durable; `cache_lines`
    /// says the medium is persistent memory whatever the mapping (device-dax).
    pub fn map_file(file: &File, len: usize, try_sync: bool, cache_lines: bool) -> io::Result<Self> {
        const MAP_SHARED_VALIDATE: i32 = 0x03;
        const MAP_SYNC: i32 = 0x8_0000;
        let map = |flags: i32| {
            // SAFETY: a new shared mapping of the file chosen by the kernel; checked below.
            let p = unsafe {
                libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, file.as_raw_fd(), 0)
            };
            (p != libc::MAP_FAILED).then_some(p.cast::<u8>())
        };
        if try_sync {
            if let Some(ptr) = map(MAP_SHARED_VALIDATE | MAP_SYNC) {
                return Ok(MappedRegion { ptr, len, persist: Persist::CacheLines });
            }
        }
        let ptr = map(libc::MAP_SHARED).ok_or_else(io::Error::last_os_error)?;
        Ok(MappedRegion { ptr, len, persist: if cache_lines { Persist::CacheLines } else { Persist::Msync } })
    }

    /// `len` bytes of zero-filled process memory (volatile).
    pub fn anonymous(len: usize) -> io::Result<Self> {
        // SAFETY: a new private anonymous mapping chosen by the kernel; checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len.max(1),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(MappedRegion { ptr: p.cast(), len: len.max(1), persist: Persist::Volatile })
    }

    /// How stores become durable.
    pub fn persist(&self) -> Persist {
        self.persist
    }

    /// Address of `[offset, offset + len)`, which must lie inside the mapping.
    fn at(&self, offset: u64, len: u64) -> *mut u8 {
        assert!(
            offset.checked_add(len).is_some_and(|end| end <= self.len as u64),
            "region access {offset:#x}+{len:#x} outside {:#x} bytes",
            self.len
        );
        // SAFETY: inside the mapping (asserted above).
        unsafe { self.ptr.add(offset as usize) }
    }

    fn cell(&self, offset: u64) -> &AtomicU64 {
        let p = self.at(offset, 8);
        assert!((p as usize).is_multiple_of(8), "unaligned 8-byte cell at {offset:#x}");
        // SAFETY: an aligned 8-byte cell inside the live mapping, only accessed atomically.
        unsafe { &*p.cast::<AtomicU64>() }
    }
}

impl Region for MappedRegion {
    fn len(&self) -> u64 {
        self.len as u64
    }

    fn bytes(&self, offset: u64, len: u64) -> &[u8] {
        // SAFETY: inside the live mapping (checked by `at`); writers are serialised by the pool.
        unsafe { std::slice::from_raw_parts(self.at(offset, len), len as usize) }
    }

    fn store(&self, offset: u64, bytes: &[u8]) {
        let dst = self.at(offset, bytes.len() as u64);
        // SAFETY: inside the live mapping; metadata writers hold the pool's update lock and
        // data writers an exclusive lease on their extents.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len()) };
    }

    fn store_with(&self, offset: u64, len: u64, fill: &mut dyn FnMut(&mut [u8]) -> io::Result<()>) -> io::Result<()> {
        let dst = self.at(offset, len);
        // SAFETY: inside the live mapping, and exclusively the caller's (see `store`).
        fill(unsafe { std::slice::from_raw_parts_mut(dst, len as usize) })
    }

    fn load_u64(&self, offset: u64) -> u64 {
        u64::from_le(self.cell(offset).load(Ordering::Acquire))
    }

    fn store_u64(&self, offset: u64, value: u64) {
        self.cell(offset).store(value.to_le(), Ordering::Release);
    }

    fn flush(&self, offset: u64, len: u64) -> io::Result<()> {
        let start = self.at(offset, len);
        match self.persist {
            // SAFETY: the range is inside the live mapping.
            Persist::CacheLines => unsafe { write_back_lines(start, len as usize) },
            Persist::Msync => {
                let page = 4096u64;
                let first = offset & !(page - 1);
                let end = (offset + len).div_ceil(page).saturating_mul(page).min(self.len as u64);
                // SAFETY: a page-aligned range inside the live mapping.
                let rc =
                    unsafe { libc::msync(self.ptr.add(first as usize).cast(), (end - first) as usize, libc::MS_SYNC) };
                if rc != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Persist::Volatile => {}
        }
        Ok(())
    }

    fn fence(&self) -> io::Result<()> {
        if self.persist == Persist::CacheLines {
            // SAFETY: sfence only orders stores; SSE is part of the x86-64 baseline.
            unsafe { std::arch::x86_64::_mm_sfence() };
        }
        Ok(())
    }
}

/// Writes back the cache lines of `[ptr, ptr+len)` (`clwb`, else `clflushopt`, else
/// `clflush`); a fence must follow.
///
/// # Safety
/// The range must be mapped.
unsafe fn write_back_lines(ptr: *const u8, len: usize) {
    use std::arch::x86_64::{__cpuid_count, _mm_clflush};
    // CPUID.(EAX=7,ECX=0):EBX bit 24 = CLWB, bit 23 = CLFLUSHOPT.
    let ebx = __cpuid_count(7, 0).ebx;
    let (clwb, clflushopt) = (ebx & (1 << 24) != 0, ebx & (1 << 23) != 0);
    let start = ptr as usize & !63;
    let end = ptr as usize + len;
    for line in (start..end).step_by(64) {
        let p = line as *const u8;
        // SAFETY: `p` is inside the mapped range (caller's contract); these instructions
        // only write the line back, they do not change memory contents.
        unsafe {
            if clwb {
                std::arch::asm!("clwb [{0}]", in(reg) p, options(nostack, preserves_flags));
            } else if clflushopt {
                std::arch::asm!("clflushopt [{0}]", in(reg) p, options(nostack, preserves_flags));
            } else {
                _mm_clflush(p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_line_write_back_runs_on_ordinary_memory() {
        let buf = vec![1u8; 4096];
        // SAFETY: the buffer is mapped; writing back does not change it.
        unsafe { write_back_lines(buf.as_ptr(), buf.len()) };
        assert!(buf.iter().all(|&b| b == 1));
    }

    #[test]
    fn accesses_outside_the_region_panic_instead_of_touching_memory() {
        let region = MappedRegion::anonymous(8192).unwrap();
        region.store(8190, b"ab");
        region.store_u64(4096, 7);
        assert_eq!((region.bytes(8190, 2), region.load_u64(4096)), (&b"ab"[..], 7));
        assert!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| region.bytes(8190, 3).len())).is_err());
        assert!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| region.bytes(u64::MAX, 2).len())).is_err());
    }
}
