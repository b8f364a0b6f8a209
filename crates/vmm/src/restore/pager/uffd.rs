//! The userfaultfd handler thread of `uffd` and `reap`: serves each missing page from a
//! [`PageSource`], and between faults runs the [`Verifier`] of data installed before resume.

use super::{AlignedBuf, PageSource, Pager, PagerReport, SettleOnDrop, Verdict};
use crate::restore::{mem_err, RestoreError};
use crate::snapshot::working_set::DataCheck;
use crate::uffd::{Resolved, Uffd as UffdFd, REGISTER_MODE_MISSING};
use crate::vstate::memory::Mapping;
use snapvisor_abi::PAGE_SIZE;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use vmm_sys_util::eventfd::EventFd;

/// A userfaultfd with the whole of `mapping` registered for missing-page faults.
pub(crate) fn registered_uffd(mapping: &Mapping) -> Result<UffdFd, RestoreError> {
    let uffd = UffdFd::new(0).map_err(mem_err("opening a userfaultfd"))?;
    uffd.register(mapping.as_ptr(), mapping.len(), REGISTER_MODE_MISSING)
        .map_err(mem_err("registering guest memory with userfaultfd"))?;
    Ok(uffd)
}

/// Hashes data already installed in guest memory, a piece at a time, and checks it.
pub(crate) struct Verifier {
    data: AlignedBuf,
    len: usize,
    done: usize,
    hasher: xxhash_rust::xxh3::Xxh3,
    check: DataCheck,
}

impl Verifier {
    /// Bytes hashed per step, so that a fault never waits long behind the check.
    const STEP: usize = 1 << 20;

    /// Checks the first `len` bytes of `data` against `check`.
    pub(crate) fn new(data: AlignedBuf, len: usize, check: DataCheck) -> Self {
        Verifier { data, len, done: 0, hasher: xxhash_rust::xxh3::Xxh3::new(), check }
    }

    /// Hashes the next piece; `Some` with the outcome once everything is hashed.
    fn step(&mut self) -> Option<Result<(), String>> {
        let n = Self::STEP.min(self.len - self.done);
        let piece = &self.data.slice(self.len)[self.done..self.done + n];
        self.hasher.update(piece);
        self.done += n;
        (self.done == self.len).then(|| self.check.check(self.hasher.digest()).map_err(|e| e.to_string()))
    }
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
/// Any fault the thread could not serve, any error that ends the thread (which closes the
/// descriptor, after which the kernel fills faults with zero pages), and a failed
/// verification are recorded in its [`Verdict`], which voids the run: the guest never
/// hangs in the kernel for good, and its answer is never trusted after a failure.
pub(crate) struct UffdPager {
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
    verdict: Verdict,
}

impl UffdPager {
    /// Starts the handler for guest memory at `base` (`size` bytes), serving `chunk`-byte
    /// pieces from `source`; `verify`, if given, runs between faults.
    pub(crate) fn start(
        uffd: UffdFd,
        base: u64,
        size: usize,
        chunk: usize,
        source: Arc<dyn PageSource>,
        record: bool,
        verify: Option<Verifier>,
    ) -> io::Result<Self> {
        let stop = EventFd::new(libc::EFD_NONBLOCK)?;
        let stop_thread = stop.try_clone()?;
        let verdict = Verdict::default();
        let counters = Arc::new(Counters { recorded: record.then(Mutex::default), ..Counters::default() });
        let handler = Handler { uffd, base, size, chunk, source, counters: counters.clone(), verdict: verdict.clone() };
        let mut verify = verify;
        if verify.is_none() {
            verdict.settle();
        }
        let settle = SettleOnDrop(verdict.clone());
        let thread = std::thread::Builder::new().name("uffd-pager".into()).spawn(move || {
            let _settle = settle;
            if let Err(e) = handler.serve(&stop_thread, &mut verify) {
                tracing::error!("userfaultfd handler failed: {e}");
                handler.verdict.fail(e.to_string());
            }
            if verify.is_some() {
                handler.verdict.fail("the handler stopped before the working set was verified");
            }
        })?;
        Ok(UffdPager { stop, thread: Some(thread), counters, verdict })
    }
}

impl Pager for UffdPager {
    fn failure(&self) -> Option<String> {
        self.verdict.wait()
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

/// What the handler thread works with.
struct Handler {
    uffd: UffdFd,
    base: u64,
    size: usize,
    chunk: usize,
    source: Arc<dyn PageSource>,
    counters: Arc<Counters>,
    verdict: Verdict,
}

impl Handler {
    /// The handler loop, until `stop` is signalled. A fault it cannot serve (the file cannot
    /// be read, the copy fails) is recorded in the verdict and resolved with zero pages
    /// instead, so that the vCPU is not stuck in the kernel for good: the run is then
    /// reported as failed, whatever the guest computed from those pages. While `verify` is
    /// pending, the loop polls without blocking and hashes a piece whenever no fault waits.
    fn serve(&self, stop: &EventFd, verify: &mut Option<Verifier>) -> io::Result<()> {
        let mut buf = AlignedBuf::new(self.chunk).ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        loop {
            let mut fds = [
                libc::pollfd { fd: self.uffd.as_fd().as_raw_fd(), events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: stop.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            ];
            let timeout = if verify.is_some() { 0 } else { -1 };
            // SAFETY: two valid pollfd structs.
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) };
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
            if rc == 0 {
                if let Some(outcome) = verify.as_mut().and_then(Verifier::step) {
                    if let Err(reason) = outcome {
                        self.verdict.fail(reason);
                    }
                    *verify = None;
                    self.verdict.settle();
                }
                continue;
            }
            while let Some(fault) = self.uffd.read_fault()? {
                self.serve_fault(fault.address, &mut buf)?;
            }
        }
    }

    /// Serves one fault: the chunk around guest address `address`.
    fn serve_fault(&self, address: u64, buf: &mut AlignedBuf) -> io::Result<()> {
        self.counters.faults.fetch_add(1, Ordering::Relaxed);
        let offset = (address - self.base) as usize & !(self.chunk - 1);
        let len = self.chunk.min(self.size - offset);
        if let Some(recorded) = &self.counters.recorded {
            let first = offset as u64 / PAGE_SIZE;
            recorded.lock().unwrap_or_else(|p| p.into_inner()).extend(first..first + len as u64 / PAGE_SIZE);
        }
        if let Err(e) = self.fill_chunk(offset, len, buf) {
            tracing::error!("userfaultfd handler could not serve {address:#x}: {e}");
            self.verdict.fail(e.to_string());
            // Zero pages keep the vCPU moving; the run is reported as failed.
            let dst = self.base + offset as u64;
            let _ = fill_pages(&self.uffd, dst, len, |d, n| self.uffd.zeropage(d, n));
            self.uffd.wake(address & !(PAGE_SIZE - 1), PAGE_SIZE as usize)?;
        }
        Ok(())
    }

    /// Fills the chunk at guest `offset`: zero pages, or the source's bytes.
    fn fill_chunk(&self, offset: usize, len: usize, buf: &mut AlignedBuf) -> io::Result<()> {
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
