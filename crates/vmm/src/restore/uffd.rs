//! `uffd`: anonymous guest memory registered with userfaultfd, and a handler thread that
//! serves each missing page from the memory file (Firecracker's Uffd backend; the
//! on-demand loading of Lambda SnapStart).
//!
//! Faults are served in chunks of `chunk` bytes (4 KiB by default, as the baseline does):
//! chunks inside the snapshot's zero ranges get `UFFDIO_ZEROPAGE`, others are read from
//! the file and installed with `UFFDIO_COPY`.

use super::{
    dir_snapshot, mem_err, MemoryStrategy, OpenedSnapshot, PageSource, Pager, PagerReport, RestoreError,
    RestoredMemory, Strategy,
};
use crate::snapshot::{ranges_cover, PageRange};
use crate::uffd::{Resolved, Uffd as UffdFd, REGISTER_MODE_MISSING};
use crate::vstate::memory::{GuestMemory, Mapping};
use snapvisor_abi::{HUGE_PAGE_SIZE, PAGE_SIZE};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use vmm_sys_util::eventfd::EventFd;

/// Default fault-serving granularity: one page, like Firecracker's example handler.
pub const DEFAULT_CHUNK: usize = PAGE_SIZE as usize;

/// The `uffd` strategy.
#[derive(Clone, Copy, Debug)]
pub struct Uffd {
    chunk: usize,
}

impl Uffd {
    /// A `uffd` strategy serving faults in `chunk`-byte pieces (a power of two, 4 KiB..2 MiB).
    pub fn new(chunk: usize) -> Self {
        Uffd { chunk }
    }
}

/// The memory image of a snapshot directory as a page source.
struct FileSource {
    file: File,
    zero_ranges: Vec<PageRange>,
}

impl PageSource for FileSource {
    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn is_zero(&self, offset: u64, len: u64) -> bool {
        ranges_cover(&self.zero_ranges, offset, len)
    }
}

impl MemoryStrategy for Uffd {
    fn strategy(&self) -> Strategy {
        Strategy::Uffd
    }

    fn restore_memory(&self, snapshot: &OpenedSnapshot) -> Result<RestoredMemory, RestoreError> {
        let snapshot = dir_snapshot(Strategy::Uffd, snapshot)?;
        if !self.chunk.is_power_of_two() || self.chunk < PAGE_SIZE as usize || self.chunk > HUGE_PAGE_SIZE as usize {
            return Err(RestoreError::Unsupported(format!(
                "uffd chunk of {} bytes is not a power of two between 4 KiB and 2 MiB",
                self.chunk
            )));
        }
        let size = snapshot.mem_size() as usize;
        let mapping = Mapping::reserve(size).map_err(mem_err("reserving guest address space"))?;
        mapping.map_anonymous(0, size).map_err(mem_err("mapping anonymous guest memory"))?;
        let uffd = UffdFd::new(0).map_err(mem_err("opening a userfaultfd"))?;
        uffd.register(mapping.as_ptr(), size, REGISTER_MODE_MISSING)
            .map_err(mem_err("registering guest memory with userfaultfd"))?;
        let source = FileSource {
            file: snapshot.memory_file().try_clone().map_err(mem_err("duplicating the memory file descriptor"))?,
            zero_ranges: snapshot.manifest().memory.zero_ranges.clone(),
        };
        let pager = UffdPager::start(uffd, mapping.as_ptr() as u64, size, self.chunk, Arc::new(source))
            .map_err(mem_err("starting the userfaultfd handler"))?;
        let memory = GuestMemory::new(mapping).map_err(mem_err("creating the guest memory view"))?;
        Ok(RestoredMemory { memory, pager: Some(Box::new(pager)), prepared_bytes: 0 })
    }
}

#[derive(Default)]
struct Counters {
    faults: AtomicU64,
    bytes_copied: AtomicU64,
    zero_faults: AtomicU64,
}

/// A userfaultfd handler thread; stopped and joined on drop.
pub(crate) struct UffdPager {
    stop: EventFd,
    thread: Option<JoinHandle<io::Result<()>>>,
    counters: Arc<Counters>,
}

impl UffdPager {
    pub(crate) fn start(
        uffd: UffdFd,
        base: u64,
        size: usize,
        chunk: usize,
        source: Arc<dyn PageSource>,
    ) -> io::Result<Self> {
        let stop = EventFd::new(libc::EFD_NONBLOCK)?;
        let stop_thread = stop.try_clone()?;
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let thread = std::thread::Builder::new()
            .name("uffd-pager".into())
            .spawn(move || serve(&uffd, base, size, chunk, source.as_ref(), &stop_thread, &c))?;
        Ok(UffdPager { stop, thread: Some(thread), counters })
    }
}

impl Pager for UffdPager {
    fn report(&self) -> PagerReport {
        PagerReport {
            faults: self.counters.faults.load(Ordering::Relaxed),
            bytes_copied: self.counters.bytes_copied.load(Ordering::Relaxed),
            zero_faults: self.counters.zero_faults.load(Ordering::Relaxed),
        }
    }
}

impl Drop for UffdPager {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(thread) = self.thread.take() {
            match thread.join() {
                Ok(Err(e)) => tracing::error!("userfaultfd handler failed: {e}"),
                Err(_) => tracing::error!("userfaultfd handler panicked"),
                Ok(Ok(())) => {}
            }
        }
    }
}

/// A page-aligned buffer (UFFDIO_COPY needs a page-aligned source).
struct AlignedBuf {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl AlignedBuf {
    fn new(len: usize) -> Self {
        let layout = std::alloc::Layout::from_size_align(len, PAGE_SIZE as usize).expect("valid layout");
        // SAFETY: the layout has a non-zero size (chunk >= 4 KiB).
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        AlignedBuf { ptr, layout }
    }

    fn slice(&mut self, len: usize) -> &mut [u8] {
        // SAFETY: `ptr` owns `layout.size()` bytes and `len` never exceeds it.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, len.min(self.layout.size())) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) };
    }
}

fn serve(
    uffd: &UffdFd,
    base: u64,
    size: usize,
    chunk: usize,
    source: &dyn PageSource,
    stop: &EventFd,
    counters: &Counters,
) -> io::Result<()> {
    let mut buf = AlignedBuf::new(chunk);
    let page = PAGE_SIZE as usize;
    loop {
        let mut fds = [
            libc::pollfd { fd: uffd.as_fd().as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: stop.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: two valid pollfd structs.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        if fds[1].revents != 0 {
            return Ok(());
        }
        while let Some(fault) = uffd.read_fault()? {
            counters.faults.fetch_add(1, Ordering::Relaxed);
            let offset = (fault.address - base) as usize & !(chunk - 1);
            let len = chunk.min(size - offset);
            let dst = base + offset as u64;
            let zero = source.is_zero(offset as u64, len as u64);
            if zero {
                counters.zero_faults.fetch_add(1, Ordering::Relaxed);
            } else {
                source.read(offset as u64, buf.slice(len))?;
            }
            let data = buf.slice(len);
            let fill = |at: usize, n: usize| {
                let r = if zero {
                    uffd.zeropage(dst + at as u64, n)
                } else {
                    uffd.copy(dst + at as u64, data[at..].as_ptr(), n)
                };
                if !zero && matches!(r, Ok(Resolved::Filled)) {
                    counters.bytes_copied.fetch_add(n as u64, Ordering::Relaxed);
                }
                r
            };
            if fill(0, len)? == Resolved::AlreadyPresent {
                // Part of the chunk was already mapped: fill the rest page by page.
                if len > page {
                    for at in (0..len).step_by(page) {
                        fill(at, page)?;
                    }
                }
                uffd.wake(fault.address & !(PAGE_SIZE - 1), page)?;
            }
        }
    }
}
