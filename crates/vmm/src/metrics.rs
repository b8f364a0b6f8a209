//! Host-side measurements of a VM: page faults of the vCPU thread, which pages of a guest's
//! memory are resident and whether they are private to it or shared, and the host's memory
//! figures ([`proc_field`]).
//!
//! Residency comes from `/proc/self/pagemap`: bit 63 = present, bit 61 = file page or
//! shared anonymous page (page cache, pool pages), bit 56 = mapped exactly once. A present
//! page that is neither is the kernel's zero page (read-only touches of anonymous memory,
//! `UFFDIO_ZEROPAGE`), which costs no memory and is not counted. As root the frame numbers
//! are visible too, which lets concurrent VMs' shared pages be counted once.

use serde::Serialize;
use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;

/// The number of a `Field:   value` line of a `/proc` file such as `/proc/meminfo` or
/// `/proc/self/status` (in the file's unit, kB for sizes).
pub fn proc_field(file: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let line = text.lines().find(|l| l.strip_prefix(field).is_some_and(|rest| rest.starts_with(':')))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Page faults of the calling thread (`getrusage(RUSAGE_THREAD)`), which include the
/// faults KVM takes on the guest's behalf while the thread is in `KVM_RUN`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ThreadFaults {
    /// Faults served without I/O.
    pub minor: u64,
    /// Faults that waited for I/O.
    pub major: u64,
}

impl ThreadFaults {
    /// Counters of the calling thread now.
    pub fn now() -> Self {
        // SAFETY: zero is a valid rusage; getrusage writes into the struct we own.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: RUSAGE_THREAD with a valid out-pointer.
        unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
        ThreadFaults { minor: usage.ru_minflt as u64, major: usage.ru_majflt as u64 }
    }

    /// `self - earlier`.
    pub fn since(self, earlier: ThreadFaults) -> ThreadFaults {
        ThreadFaults {
            minor: self.minor.saturating_sub(earlier.minor),
            major: self.major.saturating_sub(earlier.major),
        }
    }

    /// Minor + major.
    pub fn total(self) -> u64 {
        self.minor + self.major
    }
}

/// Resident memory of one guest, from pagemap.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MemoryUsage {
    /// Bytes of private anonymous pages (only this VM uses them; zero-page mappings excluded).
    pub private_bytes: u64,
    /// Bytes of file-backed or shared pages (page cache, pool): shareable between VMs.
    pub shared_bytes: u64,
    /// Frame numbers of the shared pages (empty without the privilege to see them).
    #[serde(skip)]
    pub shared_frames: HashSet<u64>,
}

const PRESENT: u64 = 1 << 63;
const FILE_OR_SHARED: u64 = 1 << 61;
const EXCLUSIVE: u64 = 1 << 56;
const PFN_MASK: u64 = (1 << 55) - 1;

/// Calls `visit(page, entry)` with the pagemap entry of every 4 KiB page of
/// `[addr, addr+len)` in this process (`page` counts from `addr`).
fn for_each_page(addr: *const u8, len: usize, mut visit: impl FnMut(u64, u64)) -> std::io::Result<()> {
    let pagemap = File::open("/proc/self/pagemap")?;
    let page = 4096usize;
    let first = addr as usize / page;
    let pages = len.div_ceil(page);
    let mut buf = vec![0u8; 8 * 8192];
    let mut done = 0;
    while done < pages {
        let n = (pages - done).min(8192);
        let bytes = &mut buf[..8 * n];
        pagemap.read_exact_at(bytes, ((first + done) * 8) as u64)?;
        for (i, entry) in bytes.chunks_exact(8).enumerate() {
            visit((done + i) as u64, u64::from_le_bytes(entry.try_into().expect("8 bytes")));
        }
        done += n;
    }
    Ok(())
}

/// Whether a pagemap entry is a private page of its own: present, anonymous (not a file or
/// shared page) and mapped once — in a private file mapping, a page that was written.
fn is_private(entry: u64) -> bool {
    entry & PRESENT != 0 && entry & FILE_OR_SHARED == 0 && entry & EXCLUSIVE != 0
}

impl MemoryUsage {
    /// Scans the pagemap entries of `[addr, addr+len)` in this process.
    pub fn scan(addr: *const u8, len: usize) -> std::io::Result<Self> {
        let mut usage = MemoryUsage::default();
        for_each_page(addr, len, |_, e| {
            if e & PRESENT == 0 {
                return;
            }
            if e & FILE_OR_SHARED != 0 {
                usage.shared_bytes += 4096;
                let pfn = e & PFN_MASK;
                if pfn != 0 {
                    usage.shared_frames.insert(pfn);
                }
            } else if e & EXCLUSIVE != 0 {
                usage.private_bytes += 4096;
            }
        })?;
        Ok(usage)
    }
}

/// The pages of `[addr, addr+len)` (4 KiB indices from `addr`) that are private copies: in
/// guest memory mapped privately from a file, exactly the pages written since the mapping
/// was made — by the guest or by the VMM (a request it delivered).
pub fn written_pages(addr: *const u8, len: usize) -> std::io::Result<Vec<u64>> {
    let mut pages = Vec::new();
    for_each_page(addr, len, |p, e| {
        if is_private(e) {
            pages.push(p);
        }
    })?;
    Ok(pages)
}

/// Total host memory of several VMs: private pages summed, shared pages counted once (by
/// frame number when visible, else the largest VM's shared bytes as a lower bound).
pub fn total_memory(usages: &[&MemoryUsage]) -> u64 {
    let private: u64 = usages.iter().map(|u| u.private_bytes).sum();
    let frames_visible = usages.iter().all(|u| u.shared_bytes == 0 || !u.shared_frames.is_empty());
    let shared = if frames_visible {
        let all: HashSet<u64> = usages.iter().flat_map(|u| u.shared_frames.iter().copied()).collect();
        all.len() as u64 * 4096
    } else {
        usages.iter().map(|u| u.shared_bytes).max().unwrap_or(0)
    };
    private + shared
}

/// MiB as a float, for reports.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// One mapping of /proc/self/smaps: its address range and its `Key: value` lines (for tests
/// that check how the kernel backed a mapping).
#[cfg(test)]
pub(crate) struct SmapsEntry {
    pub range: std::ops::Range<usize>,
    pub fields: Vec<(String, String)>,
}

#[cfg(test)]
impl SmapsEntry {
    /// The value of `key`, if the mapping has one.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The value of a `NN kB` field, in bytes.
    pub fn bytes(&self, key: &str) -> u64 {
        self.field(key).and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok()).unwrap_or(0) << 10
    }
}

/// This process's mappings, from /proc/self/smaps.
#[cfg(test)]
pub(crate) fn smaps() -> Vec<SmapsEntry> {
    let text = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
    let mut entries: Vec<SmapsEntry> = Vec::new();
    for line in text.lines() {
        let range = line
            .split_whitespace()
            .next()
            .and_then(|r| r.split_once('-'))
            .and_then(|(a, b)| Some(usize::from_str_radix(a, 16).ok()?..usize::from_str_radix(b, 16).ok()?));
        match (range, entries.last_mut()) {
            (Some(range), _) => entries.push(SmapsEntry { range, fields: Vec::new() }),
            (None, Some(entry)) => {
                if let Some((k, v)) = line.split_once(':') {
                    entry.fields.push((k.to_string(), v.trim().to_string()));
                }
            }
            (None, None) => {}
        }
    }
    entries
}
