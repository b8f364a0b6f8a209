//! Recorded working sets of a snapshot: the pages the prefetching strategies load (REAP,
//! FaaSnap), and the pages an invocation wrote (for `pass`, which keeps written chunks
//! apart; see `pool::format::index`).
//!
//! ```text
//! SNAPSHOT_DIR/ws.reap | ws.faasnap | ws.write
//!   0      8  magic "SNAPWSET"
//!   8      4  format version (2)
//!   12     4  kind (1 = reap, 2 = faasnap, 3 = write: pages only, no page data)
//!   16     8  guest memory size
//!   24     8  memory digest of the snapshot it was recorded from (xxh3 value)
//!   32     8  number of runs n
//!   40     8  number of pages p (sum of the runs' counts)
//!   48     8  data offset d (4 KiB aligned)
//!   56     8  xxh3-64 of the page data
//!   64     8  CRC-64/XZ of bytes 0..64 and the run table
//!   72  16·n  runs: (first page, page count), ascending, disjoint
//!   d   4K·p  the pages' contents, run after run; the file ends there
//! ```
//!
//! [`WorkingSet::open`] checks the metadata (CRC, bounds with checked arithmetic, the kind,
//! the memory size and digest of the snapshot, the file size) before anything depends on
//! it. The page data's xxh3 is checked by whoever reads the data anyway, so that checking
//! costs the restore nothing: REAP's pager thread after resume, FaaSnap's background reader
//! ([`WorkingSet::check_data`]); a mismatch voids the run. The page data is page-aligned so
//! that FaaSnap can map it straight into guest memory. Written with
//! [`write_atomic`](crate::files::write_atomic).

use super::{corrupt, in_range, io_err, PageRange, Snapshot, SnapshotError};
use crate::checksum::{xxh3_file, CRC64};
use crate::files::{open_regular, write_atomic};
use snapvisor_abi::PAGE_SIZE;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"SNAPWSET";
const VERSION: u32 = 2;
/// Bytes of the header.
pub const HEADER: u64 = 72;

/// Which strategy a working set is for (they are recorded differently).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkingSetKind {
    /// REAP: the pages an invocation faulted on, recorded with userfaultfd.
    Reap,
    /// FaaSnap: the loading set, the memory file's pages in the page cache after an
    /// invocation from a cold cache (mincore), zero pages excluded.
    Faasnap,
    /// The write set: the guest pages an invocation wrote (copied on write), found in
    /// pagemap after a `lazy` invocation; pages only, no contents.
    Write,
}

impl WorkingSetKind {
    fn code(self) -> u32 {
        match self {
            WorkingSetKind::Reap => 1,
            WorkingSetKind::Faasnap => 2,
            WorkingSetKind::Write => 3,
        }
    }

    /// Whether the file carries the pages' contents.
    pub fn has_data(self) -> bool {
        self != WorkingSetKind::Write
    }

    /// File name inside the snapshot directory.
    pub fn file_name(self) -> &'static str {
        match self {
            WorkingSetKind::Reap => "ws.reap",
            WorkingSetKind::Faasnap => "ws.faasnap",
            WorkingSetKind::Write => "ws.write",
        }
    }
}

/// The checked metadata of a working-set file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Runs of pages, ascending.
    pub runs: Vec<PageRange>,
    /// Pages in the runs.
    pub pages: u64,
    /// Offset of the page data.
    pub data_offset: u64,
    /// xxh3-64 of the page data.
    pub data_xxh3: u64,
}

impl Header {
    /// Bytes of the whole file this header describes, for a working set of `kind`.
    pub fn file_len(&self, kind: WorkingSetKind) -> u64 {
        self.data_offset + if kind.has_data() { self.pages * PAGE_SIZE } else { 0 }
    }
}

/// What a working set must match: its kind, and the snapshot's memory size and digest.
#[derive(Clone, Copy, Debug)]
pub struct Expected {
    /// Kind.
    pub kind: WorkingSetKind,
    /// Guest memory bytes.
    pub mem_size: u64,
    /// The snapshot's memory digest.
    pub memory_digest: u64,
}

/// Encodes the header and run table.
fn encode_header(expected: Expected, runs: &[PageRange], data_xxh3: u64) -> (Vec<u8>, u64) {
    let pages: u64 = runs.iter().map(|r| r.count).sum();
    let data_offset = (HEADER + 16 * runs.len() as u64).div_ceil(PAGE_SIZE) * PAGE_SIZE;
    let mut out = Vec::with_capacity(data_offset as usize);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&expected.kind.code().to_le_bytes());
    for v in [expected.mem_size, expected.memory_digest, runs.len() as u64, pages, data_offset, data_xxh3] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    let mut table = Vec::with_capacity(16 * runs.len());
    for r in runs {
        table.extend_from_slice(&r.first.to_le_bytes());
        table.extend_from_slice(&r.count.to_le_bytes());
    }
    let mut crc = CRC64.digest();
    crc.update(&out);
    crc.update(&table);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&table);
    (out, data_offset)
}

/// Decodes and checks the fixed header (`head`, [`HEADER`] bytes) against `expected` and a
/// file of `file_len` bytes; returns (runs n, pages p, data offset d, data xxh3, stored CRC).
fn decode_fixed(head: &[u8], expected: Expected, file_len: u64, path: &Path) -> Result<[u64; 5], SnapshotError> {
    if head.len() < HEADER as usize {
        return Err(corrupt(path, "shorter than its header"));
    }
    let u32_at = |at: usize| u32::from_le_bytes(head[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(head[at..at + 8].try_into().expect("8 bytes"));
    if &head[..8] != MAGIC {
        return Err(corrupt(path, "bad magic (not a snapvisor working set)"));
    }
    if u32_at(8) != VERSION {
        return Err(SnapshotError::Version { path: path.into(), found: u32_at(8), expected: VERSION });
    }
    if u32_at(12) != expected.kind.code() {
        return Err(corrupt(path, "recorded for another strategy"));
    }
    for (what, found, wanted) in
        [("memory size", u64_at(16), expected.mem_size), ("memory digest", u64_at(24), expected.memory_digest)]
    {
        if found != wanted {
            return Err(SnapshotError::Mismatch { path: path.into(), what, found, expected: wanted });
        }
    }
    let total_pages = expected.mem_size / PAGE_SIZE;
    // n runs need 16·n table bytes before the data; p pages are at most all of memory.
    let n = in_range(path, "run count", u64_at(32), 0, total_pages)?;
    let pages = in_range(path, "page count", u64_at(40), n, total_pages)?;
    let data_offset = in_range(path, "data offset", u64_at(48), HEADER + 16 * n, file_len)?;
    if !data_offset.is_multiple_of(PAGE_SIZE) {
        return Err(corrupt(path, "data offset is not 4 KiB aligned"));
    }
    let data_pages = if expected.kind.has_data() { pages } else { 0 };
    let expected_len = data_pages.checked_mul(PAGE_SIZE).and_then(|b| b.checked_add(data_offset));
    if expected_len != Some(file_len) {
        return Err(SnapshotError::Mismatch {
            path: path.into(),
            what: "file size",
            found: file_len,
            expected: expected_len.unwrap_or(u64::MAX),
        });
    }
    Ok([n, pages, data_offset, u64_at(56), u64_at(64)])
}

/// Decodes and checks a working set's metadata from `bytes` (the file's first bytes, at
/// least up to its data offset) for a file of `file_len` bytes.
pub fn decode_header(bytes: &[u8], expected: Expected, file_len: u64, path: &Path) -> Result<Header, SnapshotError> {
    let [n, pages, data_offset, data_xxh3, stored] = decode_fixed(bytes, expected, file_len, path)?;
    let table_end = (HEADER + 16 * n) as usize;
    let table = bytes.get(HEADER as usize..table_end).ok_or_else(|| corrupt(path, "truncated run table"))?;
    let mut crc = CRC64.digest();
    crc.update(&bytes[..HEADER as usize - 8]);
    crc.update(table);
    let computed = crc.finalize();
    if computed != stored {
        return Err(SnapshotError::Checksum { path: path.into(), stored, computed });
    }
    let total_pages = expected.mem_size / PAGE_SIZE;
    let mut runs = Vec::with_capacity(n as usize);
    let (mut next, mut sum) = (0, 0u64);
    for entry in table.chunks_exact(16) {
        let first = u64::from_le_bytes(entry[..8].try_into().expect("8 bytes"));
        let count = u64::from_le_bytes(entry[8..].try_into().expect("8 bytes"));
        if count == 0 || first < next || first.checked_add(count).is_none_or(|end| end > total_pages) {
            return Err(corrupt(path, "runs are empty, unsorted, overlapping or outside memory"));
        }
        next = first + count;
        sum += count;
        runs.push(PageRange { first, count });
    }
    if sum != pages {
        return Err(corrupt(path, format!("the runs hold {sum} pages, the header says {pages}")));
    }
    Ok(Header { runs, pages, data_offset, data_xxh3 })
}

/// A working set: which guest pages, and where their contents are in the file.
#[derive(Debug)]
pub struct WorkingSet {
    kind: WorkingSetKind,
    path: PathBuf,
    file: File,
    header: Header,
}

impl WorkingSet {
    /// Path of the `kind` working set of the snapshot in `dir`.
    pub fn path(dir: &Path, kind: WorkingSetKind) -> PathBuf {
        dir.join(kind.file_name())
    }

    fn expected(snapshot: &Snapshot, kind: WorkingSetKind) -> Expected {
        Expected { kind, mem_size: snapshot.mem_size(), memory_digest: snapshot.manifest().memory_digest() }
    }

    /// Writes the working set `runs` (sorted, disjoint, inside memory) of `snapshot`, with
    /// the pages' contents copied from its memory file, atomically.
    pub fn write(snapshot: &Snapshot, kind: WorkingSetKind, runs: &[PageRange]) -> Result<(), SnapshotError> {
        let path = Self::path(snapshot.dir(), kind);
        let memory_path = snapshot.memory_path();
        let mut read_error = None;
        write_atomic(&path, |file| {
            let (_, data_offset) = encode_header(Self::expected(snapshot, kind), runs, 0);
            let mut hasher = xxhash_rust::xxh3::Xxh3::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut at = data_offset;
            for r in runs.iter().filter(|_| kind.has_data()) {
                let mut done = 0;
                while done < r.count * PAGE_SIZE {
                    let n = (buf.len() as u64).min(r.count * PAGE_SIZE - done) as usize;
                    if let Err(e) = snapshot.memory_file().read_exact_at(&mut buf[..n], r.start() + done) {
                        let message = e.to_string();
                        read_error = Some(e);
                        return Err(std::io::Error::other(message));
                    }
                    hasher.update(&buf[..n]);
                    file.write_all_at(&buf[..n], at)?;
                    done += n as u64;
                    at += n as u64;
                }
            }
            let (head, _) = encode_header(Self::expected(snapshot, kind), runs, hasher.digest());
            file.write_all_at(&head, 0)?;
            file.set_len(at)
        })
        .map_err(|e| match read_error {
            Some(source) => io_err(&memory_path, "read")(source),
            None => e.into(),
        })
    }

    /// Opens the `kind` working set of `snapshot` and checks its metadata; with `verify`,
    /// also its page data (else see [`WorkingSet::check_data`]).
    pub fn open(snapshot: &Snapshot, kind: WorkingSetKind, verify: bool) -> Result<Self, SnapshotError> {
        let path = Self::path(snapshot.dir(), kind);
        let (file, len) = open_regular(&path)?;
        let expected = Self::expected(snapshot, kind);
        let mut head = [0u8; HEADER as usize];
        file.read_exact_at(&mut head, 0).map_err(|_| corrupt(&path, "shorter than its header"))?;
        let [n, ..] = decode_fixed(&head, expected, len, &path)?;
        // The table is bounded: n ≤ pages of memory, and the file holds it (d ≥ 72 + 16·n).
        let mut bytes = vec![0u8; (HEADER + 16 * n) as usize];
        file.read_exact_at(&mut bytes, 0).map_err(io_err(&path, "read"))?;
        let header = decode_header(&bytes, expected, len, &path)?;
        let set = WorkingSet { kind, path, file, header };
        if verify && kind.has_data() {
            let computed = xxh3_file(&set.file, set.header.data_offset, set.header.pages * PAGE_SIZE)
                .map_err(io_err(&set.path, "read"))?;
            set.check_data(computed)?;
        }
        Ok(set)
    }

    /// Checks the xxh3-64 of the page data (as read by the caller) against the header.
    pub fn check_data(&self, computed: u64) -> Result<(), SnapshotError> {
        check_data(&self.path, self.header.data_xxh3, computed)
    }

    /// A check of the page data that can move to another thread (see [`DataCheck`]).
    pub fn data_check(&self) -> DataCheck {
        DataCheck { path: self.path.clone(), expected: self.header.data_xxh3 }
    }

    /// The strategy it was recorded for.
    pub fn kind(&self) -> WorkingSetKind {
        self.kind
    }

    /// The runs of pages, ascending.
    pub fn runs(&self) -> &[PageRange] {
        &self.header.runs
    }

    /// Pages in the set.
    pub fn pages(&self) -> u64 {
        self.header.pages
    }

    /// The file (page data starts at [`WorkingSet::data_offset`]).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Offset of the first page's data in the file.
    pub fn data_offset(&self) -> u64 {
        self.header.data_offset
    }

    /// Path of the file.
    pub fn file_path(&self) -> &Path {
        &self.path
    }
}

/// What the page data of a working set must hash to, for the thread that reads it.
#[derive(Clone, Debug)]
pub struct DataCheck {
    path: PathBuf,
    expected: u64,
}

impl DataCheck {
    /// Checks the xxh3-64 of the page data as read.
    pub fn check(&self, computed: u64) -> Result<(), SnapshotError> {
        check_data(&self.path, self.expected, computed)
    }
}

fn check_data(path: &Path, stored: u64, computed: u64) -> Result<(), SnapshotError> {
    if stored != computed {
        return Err(SnapshotError::Checksum { path: path.into(), stored, computed });
    }
    Ok(())
}

/// Sorted, disjoint page runs from a set of page indices.
pub fn runs_of(mut pages: Vec<u64>) -> Vec<PageRange> {
    pages.sort_unstable();
    pages.dedup();
    let mut runs: Vec<PageRange> = Vec::new();
    for p in pages {
        match runs.last_mut() {
            Some(r) if r.first + r.count == p => r.count += 1,
            _ => runs.push(PageRange { first: p, count: 1 }),
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPECTED: Expected = Expected { kind: WorkingSetKind::Reap, mem_size: 16 << 20, memory_digest: 7 };

    #[test]
    fn runs_merge_neighbours() {
        assert_eq!(
            runs_of(vec![7, 1, 2, 3, 9, 8, 2]),
            vec![PageRange { first: 1, count: 3 }, PageRange { first: 7, count: 3 }]
        );
        assert!(runs_of(Vec::new()).is_empty());
    }

    #[test]
    fn headers_round_trip_and_every_header_byte_is_checked() {
        let runs = [PageRange { first: 1, count: 3 }, PageRange { first: 9, count: 2 }];
        let (bytes, d) = encode_header(EXPECTED, &runs, 42);
        let path = Path::new("ws.reap");
        let len = d + 5 * PAGE_SIZE;
        let header = decode_header(&bytes, EXPECTED, len, path).unwrap();
        assert_eq!((header.runs.as_slice(), header.pages, header.data_offset, header.data_xxh3), (&runs[..], 5, d, 42));
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x01;
            assert!(decode_header(&bad, EXPECTED, len, path).is_err(), "flip at {at} accepted");
        }
        let other = Expected { memory_digest: 8, ..EXPECTED };
        assert!(matches!(decode_header(&bytes, other, len, path), Err(SnapshotError::Mismatch { .. })));
        assert!(matches!(decode_header(&bytes, EXPECTED, len + 1, path), Err(SnapshotError::Mismatch { .. })));
    }

    #[test]
    fn huge_counts_and_offsets_are_refused_before_use() {
        let path = Path::new("ws.reap");
        let (bytes, _) = encode_header(EXPECTED, &[PageRange { first: 0, count: 1 }], 0);
        // pages · 4 KiB + data offset overflows u64: refused, not wrapped.
        for (at, value) in [(32usize, u64::MAX), (40, u64::MAX / 4096 + 1), (48, u64::MAX - 4095)] {
            let mut bad = bytes.clone();
            bad[at..at + 8].copy_from_slice(&value.to_le_bytes());
            let err = decode_header(&bad, EXPECTED, u64::MAX, path).unwrap_err();
            assert!(matches!(err, SnapshotError::OutOfRange { .. } | SnapshotError::Mismatch { .. }), "{err}");
        }
    }
}
