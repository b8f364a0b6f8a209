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
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use vmm_sys_util::eventfd::EventFd;

/// Default fault-serving granularity: one page, like Firecracker's example handler.
pub const DEFAULT_CHUNK: usize = PAGE_SIZE as usize;

/// The `uffd` strategy.
#[derive(Clone, Copy, Debug)]
pub struct Uffd {
    chunk: usize,
    record: bool,
}

impl Uffd {
    /// A `uffd` strategy serving faults in `chunk`-byte pieces (a power of two, 4 KiB..2 MiB).
    pub fn new(chunk: usize) -> Self {
        Uffd { chunk, record: false }
    }

    /// A 4 KiB `uffd` strategy whose pager also records the pages it serves (REAP's record
    /// phase; see [`Pager::recorded_pages`]).
    pub fn recording() -> Self {
        Uffd { chunk: DEFAULT_CHUNK, record: true }
    }
}

/// The memory image of a snapshot directory as a page source.
pub(crate) struct FileSource {
    file: File,
    zero_ranges: Vec<PageRange>,
}

impl FileSource {
    /// The memory file and zero ranges of `snapshot`.
    pub(crate) fn new(snapshot: &crate::snapshot::Snapshot) -> Result<Self, RestoreError> {
        Ok(FileSource {
            file: snapshot.memory_file().try_clone().map_err(mem_err("duplicating the memory file descriptor"))?,
            zero_ranges: snapshot.manifest().memory.zero_ranges.clone(),
        })
    }
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
        let uffd = registered_uffd(&mapping)?;
        let source = FileSource::new(snapshot)?;
        let pager = UffdPager::start(uffd, mapping.as_ptr() as u64, size, self.chunk, Arc::new(source), self.record)
            .map_err(mem_err("starting the userfaultfd handler"))?;
        let memory = GuestMemory::new(mapping).map_err(mem_err("creating the guest memory view"))?;
        Ok(RestoredMemory { memory, pager: Some(Box::new(pager)), prepared_bytes: 0, keep_alive: None })
    }
}

/// A userfaultfd with the whole of `mapping` registered for missing-page faults.
pub(crate) fn registered_uffd(mapping: &Mapping) -> Result<UffdFd, RestoreError> {
    let uffd = UffdFd::new(0).map_err(mem_err("opening a userfaultfd"))?;
    uffd.register(mapping.as_ptr(), mapping.len(), REGISTER_MODE_MISSING)
        .map_err(mem_err("registering guest memory with userfaultfd"))?;
    Ok(uffd)
}

#[derive(Default)]
struct Counters {
    faults: AtomicU64,
    bytes_copied: AtomicU64,
    zero_faults: AtomicU64,
    /// Guest page indices served, when recording.
    recorded: Option<Mutex<Vec<u64>>>,
}

/// A userfaultfd handler thread; stopped and joined on drop.
///
/// Any fault the thread could not serve, and any error that ends the thread (which closes
/// the descriptor, after which the kernel fills faults with zero pages), is recorded as a
/// failure that voids the run (`RestoredVm::invoke`): the guest never hangs in the kernel
/// for good, and its answer is never trusted after a failure.
pub(crate) struct UffdPager {
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
    failure: Arc<Mutex<Option<String>>>,
}

impl UffdPager {
    pub(crate) fn start(
        uffd: UffdFd,
        base: u64,
        size: usize,
        chunk: usize,
        source: Arc<dyn PageSource>,
        record: bool,
    ) -> io::Result<Self> {
        let stop = EventFd::new(libc::EFD_NONBLOCK)?;
        let stop_thread = stop.try_clone()?;
        let handler = Handler {
            uffd: Arc::new(uffd),
            base,
            size,
            chunk,
            source,
            counters: Arc::new(Counters { recorded: record.then(Mutex::default), ..Counters::default() }),
            failure: Arc::new(Mutex::new(None)),
        };
        let (counters, failure) = (handler.counters.clone(), handler.failure.clone());
        let thread = std::thread::Builder::new().name("uffd-pager".into()).spawn(move || {
            if let Err(e) = handler.serve(&stop_thread) {
                tracing::error!("userfaultfd handler failed: {e}");
                handler.failure.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(|| e.to_string());
            }
        })?;
        Ok(UffdPager { stop, thread: Some(thread), counters, failure })
    }
}

impl Pager for UffdPager {
    fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn recorded_pages(&self) -> Option<Vec<u64>> {
        self.counters.recorded.as_ref().map(|r| r.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

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
            if thread.join().is_err() {
                tracing::error!("userfaultfd handler panicked");
            }
        }
    }
}

/// A page-aligned buffer (UFFDIO_COPY needs a page-aligned source).
pub(crate) struct AlignedBuf {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl AlignedBuf {
    pub(crate) fn new(len: usize) -> Self {
        let len = len.max(PAGE_SIZE as usize);
        let layout = std::alloc::Layout::from_size_align(len, PAGE_SIZE as usize).expect("valid layout");
        // SAFETY: the layout has a non-zero size (chunk >= 4 KiB).
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        AlignedBuf { ptr, layout }
    }

    pub(crate) fn slice(&mut self, len: usize) -> &mut [u8] {
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

/// What the handler thread works with.
struct Handler {
    uffd: Arc<UffdFd>,
    base: u64,
    size: usize,
    chunk: usize,
    source: Arc<dyn PageSource>,
    counters: Arc<Counters>,
    failure: Arc<Mutex<Option<String>>>,
}

impl Handler {
    /// The handler loop, until `stop` is signalled. A fault it cannot serve (the file cannot
    /// be read, the copy fails) is recorded in `failure` and resolved with zero pages
    /// instead, so that the vCPU is not stuck in the kernel for good: the run is then
    /// reported as failed, whatever the guest computed from those pages.
    fn serve(&self, stop: &EventFd) -> io::Result<()> {
        let mut buf = AlignedBuf::new(self.chunk);
        loop {
            let mut fds = [
                libc::pollfd { fd: self.uffd.as_fd().as_raw_fd(), events: libc::POLLIN, revents: 0 },
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
            while let Some(fault) = self.uffd.read_fault()? {
                self.counters.faults.fetch_add(1, Ordering::Relaxed);
                let offset = (fault.address - self.base) as usize & !(self.chunk - 1);
                if let Some(recorded) = &self.counters.recorded {
                    let first = offset as u64 / PAGE_SIZE;
                    let pages = (self.chunk.min(self.size - offset) as u64) / PAGE_SIZE;
                    recorded.lock().unwrap_or_else(|p| p.into_inner()).extend(first..first + pages);
                }
                let len = self.chunk.min(self.size - offset);
                if let Err(e) = self.serve_fault(offset, len, &mut buf) {
                    tracing::error!("userfaultfd handler could not serve {:#x}: {e}", fault.address);
                    self.failure.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(|| e.to_string());
                    // Zero pages keep the vCPU moving; the run is reported as failed.
                    let dst = self.base + offset as u64;
                    let _ = fill_pages(&self.uffd, dst, len, |d, n| self.uffd.zeropage(d, n));
                    self.uffd.wake(fault.address & !(PAGE_SIZE - 1), PAGE_SIZE as usize)?;
                }
            }
        }
    }

    /// Serves one fault: the chunk at guest `offset`.
    fn serve_fault(&self, offset: usize, len: usize, buf: &mut AlignedBuf) -> io::Result<()> {
        let dst = self.base + offset as u64;
        if self.source.is_zero(offset as u64, len as u64) {
            self.counters.zero_faults.fetch_add(1, Ordering::Relaxed);
            return fill_pages(&self.uffd, dst, len, |d, n| self.uffd.zeropage(d, n));
        }
        let data = buf.slice(len);
        self.source.read(offset as u64, data)?;
        fill_pages(&self.uffd, dst, len, |d, n| {
            let r = self.uffd.copy(d, data[(d - dst) as usize..].as_ptr(), n);
            if matches!(r, Ok(Resolved::Filled)) {
                self.counters.bytes_copied.fetch_add(n as u64, Ordering::Relaxed);
            }
            r
        })
    }
}

/// Fills `[dst, dst+len)` with `op`; if part of it was already mapped (another fault got
/// there first), fills the rest page by page and wakes the range.
fn fill_pages(
    uffd: &UffdFd,
    dst: u64,
    len: usize,
    mut op: impl FnMut(u64, usize) -> io::Result<Resolved>,
) -> io::Result<()> {
    if op(dst, len)? == Resolved::AlreadyPresent {
        let page = PAGE_SIZE as usize;
        if len > page {
            for at in (0..len).step_by(page) {
                op(dst + at as u64, page)?;
            }
        }
        uffd.wake(dst, len)?;
    }
    Ok(())
}
