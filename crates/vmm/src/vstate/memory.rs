//! Guest memory: the host mapping behind a VM's one memory slot, and checked access to it.
//!
//! [`Mapping`] owns a 2 MiB-aligned range of the VMM's address space (unmapped on drop).
//! Restore strategies build it from pieces (anonymous memory, private file mappings, pool
//! extents) with [`Mapping::map_file`] and [`Mapping::map_anonymous`]. [`GuestMemory`] is
//! the VMM's bounds-checked view of it (vm-memory), used for everything the host reads or
//! writes in the guest: no guest-supplied length or offset can reach outside it.

use snapvisor_abi::HUGE_PAGE_SIZE;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

/// A 2 MiB-aligned range of host virtual memory that holds one guest's RAM.
#[derive(Debug)]
pub struct Mapping {
    addr: NonNull<u8>,
    len: usize,
}

// SAFETY: a Mapping is an address range the struct owns exclusively; moving or sharing the
// owner between threads is fine (accesses go through GuestMemory's checked, volatile ops).
unsafe impl Send for Mapping {}
// SAFETY: see Send; &Mapping only hands out the address and length.
unsafe impl Sync for Mapping {}

/// `madvise` advice used by the strategies.
#[derive(Clone, Copy, Debug)]
pub enum Advice {
    /// Back with transparent huge pages where possible.
    HugePage,
    /// Do not use transparent huge pages.
    NoHugePage,
    /// Map pages now, read-only where the mapping is private (no copy).
    PopulateRead,
    /// Map pages now, writable (copies private file pages, allocates anonymous ones).
    PopulateWrite,
    /// Drop the pages: private ones are freed, the range reads as the file (or zero) again.
    DontNeed,
}

impl Mapping {
    /// Reserves `len` bytes (a multiple of 2 MiB) of address space, 2 MiB-aligned, not
    /// accessible; pieces are then mapped into it.
    pub fn reserve(len: usize) -> io::Result<Self> {
        if len == 0 || !(len as u64).is_multiple_of(HUGE_PAGE_SIZE) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "mapping size must be a positive multiple of 2 MiB",
            ));
        }
        let align = HUGE_PAGE_SIZE as usize;
        let total = len + align;
        // SAFETY: a fresh PROT_NONE anonymous mapping chosen by the kernel; checked below.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let start = raw as usize;
        let aligned = (start + align - 1) & !(align - 1);
        // Trim the unaligned head and the tail so exactly [aligned, aligned+len) remains.
        // SAFETY: both ranges lie inside the mapping just created and nothing else uses them.
        unsafe {
            if aligned > start {
                libc::munmap(raw, aligned - start);
            }
            let end = aligned + len;
            if start + total > end {
                libc::munmap(end as *mut libc::c_void, start + total - end);
            }
        }
        Ok(Mapping { addr: NonNull::new(aligned as *mut u8).expect("mmap returned null"), len })
    }

    /// Anonymous, private, zero-filled memory with transparent huge pages advised: the
    /// guest memory of a fresh boot.
    pub fn anonymous(len: usize) -> io::Result<Self> {
        let mapping = Self::reserve(len)?;
        mapping.map_anonymous(0, len)?;
        mapping.advise(0, len, Advice::HugePage)?;
        Ok(mapping)
    }

    /// Host address of guest physical address 0.
    pub fn as_ptr(&self) -> *mut u8 {
        self.addr.as_ptr()
    }

    /// Bytes mapped.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never: mappings are at least 2 MiB).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn check(&self, offset: usize, len: usize) -> io::Result<*mut libc::c_void> {
        if offset.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("range {offset:#x}+{len:#x} outside mapping of {:#x}", self.len),
            ));
        }
        // SAFETY: offset <= len, so the result is inside (or one past) the mapping.
        Ok(unsafe { self.addr.as_ptr().add(offset) }.cast())
    }

    /// Replaces `[offset, offset+len)` with fresh anonymous private memory.
    pub fn map_anonymous(&self, offset: usize, len: usize) -> io::Result<()> {
        let at = self.check(offset, len)?;
        // SAFETY: MAP_FIXED inside a range this Mapping owns; nothing else refers to it.
        let raw = unsafe {
            libc::mmap(
                at,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Replaces `[offset, offset+len)` with a mapping of `fd` at `file_offset`: private
    /// (copy-on-write, the file is never written) or shared.
    pub fn map_file(
        &self,
        offset: usize,
        len: usize,
        fd: BorrowedFd<'_>,
        file_offset: u64,
        shared: bool,
    ) -> io::Result<()> {
        let at = self.check(offset, len)?;
        let kind = if shared { libc::MAP_SHARED } else { libc::MAP_PRIVATE };
        let file_offset =
            libc::off_t::try_from(file_offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: MAP_FIXED inside a range this Mapping owns; the fd is valid for the call.
        let raw = unsafe {
            libc::mmap(at, len, libc::PROT_READ | libc::PROT_WRITE, kind | libc::MAP_FIXED, fd.as_raw_fd(), file_offset)
        };
        if raw == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Applies `advice` to `[offset, offset+len)`.
    pub fn advise(&self, offset: usize, len: usize, advice: Advice) -> io::Result<()> {
        let at = self.check(offset, len)?;
        let advice = match advice {
            Advice::HugePage => libc::MADV_HUGEPAGE,
            Advice::NoHugePage => libc::MADV_NOHUGEPAGE,
            Advice::PopulateRead => libc::MADV_POPULATE_READ,
            Advice::PopulateWrite => libc::MADV_POPULATE_WRITE,
            Advice::DontNeed => libc::MADV_DONTNEED,
        };
        // SAFETY: madvise on a range this Mapping owns. No Rust reference points into guest
        // memory (it is accessed volatile), so even `DontNeed`, which changes the contents,
        // breaks no aliasing rule; callers use it only while no vCPU runs.
        if unsafe { libc::madvise(at, len, advice) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Which 4 KiB pages of `[offset, offset+len)` are resident (`mincore`), one bool each.
    pub fn resident_pages(&self, offset: usize, len: usize) -> io::Result<Vec<bool>> {
        let at = self.check(offset, len)?;
        let mut pages = vec![0u8; len.div_ceil(4096)];
        // SAFETY: mincore on a range this Mapping owns, one status byte per 4 KiB page into
        // a buffer of exactly that many bytes.
        if unsafe { libc::mincore(at, len, pages.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(pages.iter().map(|p| p & 1 != 0).collect())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the range was mapped by this Mapping and is unmapped exactly once.
        unsafe { libc::munmap(self.addr.as_ptr().cast(), self.len) };
    }
}

/// An access outside guest memory.
#[derive(Debug, thiserror::Error)]
#[error("guest memory access of {len} bytes at {addr:#x} is outside the guest's {size:#x} bytes")]
pub struct OutOfBounds {
    /// Guest physical address.
    pub addr: u64,
    /// Bytes.
    pub len: u64,
    /// Guest memory size.
    pub size: u64,
}

/// A guest's RAM as the VMM sees it: one region at guest physical 0.
pub struct GuestMemory {
    mem: GuestMemoryMmap,
    // Declared after `mem`, so it is dropped (unmapped) after the view on it.
    mapping: Mapping,
}

impl std::fmt::Debug for GuestMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestMemory").field("mapping", &self.mapping).finish()
    }
}

impl GuestMemory {
    /// Wraps `mapping` (fully mapped, readable and writable) as guest RAM.
    pub fn new(mapping: Mapping) -> io::Result<Self> {
        // SAFETY: `mapping` is a live mapping of `len` bytes, owned by the returned value and
        // unmapped only after the vm-memory view on it is dropped.
        let region = unsafe {
            MmapRegion::build_raw(
                mapping.as_ptr(),
                mapping.len(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE,
            )
        }
        .map_err(|e| io::Error::other(e.to_string()))?;
        let region =
            GuestRegionMmap::new(region, GuestAddress(0)).ok_or_else(|| io::Error::other("guest region overflows"))?;
        let mem = GuestMemoryMmap::from_regions(vec![region]).map_err(|e| io::Error::other(e.to_string()))?;
        Ok(GuestMemory { mem, mapping })
    }

    /// Bytes of guest RAM.
    pub fn size(&self) -> u64 {
        self.mapping.len() as u64
    }

    /// The vm-memory view (for linux-loader).
    pub fn vm_memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// The host mapping.
    pub fn mapping(&self) -> &Mapping {
        &self.mapping
    }

    fn oob(&self, addr: u64, len: usize) -> OutOfBounds {
        OutOfBounds { addr, len: len as u64, size: self.size() }
    }

    /// Copies `buf` into guest memory at `addr`.
    pub fn write(&self, addr: u64, buf: &[u8]) -> Result<(), OutOfBounds> {
        self.mem.write_slice(buf, GuestAddress(addr)).map_err(|_| self.oob(addr, buf.len()))
    }

    /// Copies guest memory at `addr` into `buf`.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), OutOfBounds> {
        self.mem.read_slice(buf, GuestAddress(addr)).map_err(|_| self.oob(addr, buf.len()))
    }

    /// Reads `len` bytes at `addr` into a new vector.
    pub fn read_vec(&self, addr: u64, len: usize) -> Result<Vec<u8>, OutOfBounds> {
        let mut buf = vec![0; len];
        self.read(addr, &mut buf)?;
        Ok(buf)
    }

    /// Writes a little-endian u64.
    pub fn write_u64(&self, addr: u64, value: u64) -> Result<(), OutOfBounds> {
        self.write(addr, &value.to_le_bytes())
    }

    /// Reads a little-endian u64.
    pub fn read_u64(&self, addr: u64) -> Result<u64, OutOfBounds> {
        let mut b = [0; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Writes a little-endian u32.
    pub fn write_u32(&self, addr: u64, value: u32) -> Result<(), OutOfBounds> {
        self.write(addr, &value.to_le_bytes())
    }

    /// The whole guest RAM as a byte slice, for bulk scans (snapshot writing).
    ///
    /// # Safety
    /// No vCPU may run and no other thread may write guest memory while the slice lives.
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is live for `&self`; the caller guarantees no concurrent writes.
        unsafe { std::slice::from_raw_parts(self.mapping.as_ptr(), self.mapping.len()) }
    }
}
