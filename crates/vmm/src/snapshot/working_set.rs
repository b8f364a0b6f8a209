//! Recorded working sets of a snapshot, for the prefetching strategies (REAP, FaaSnap).
//!
//! ```text
//! SNAPSHOT_DIR/ws.reap | ws.faasnap
//!   0      8  magic "SNAPWSET"
//!   8      4  format version
//!   12     4  kind (1 = reap, 2 = faasnap)
//!   16     8  guest memory size
//!   24     8  number of runs n
//!   32     8  data offset d (4 KiB aligned)
//!   40     8  CRC-64/XZ of the runs and the page data
//!   48  16·n  runs: (first page, page count), ascending, disjoint
//!   d     …   the pages' contents, run after run (4 KiB each)
//! ```
//!
//! The page data is page-aligned so that FaaSnap can map it straight into guest memory.
//! Written like a snapshot: temporary file, fsync, rename, fsync of the directory.

use super::{PageRange, Snapshot, SnapshotError};
use snapvisor_abi::PAGE_SIZE;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"SNAPWSET";
const VERSION: u32 = 1;
const HEADER: u64 = 48;
const CRC: crc::Crc<u64> = crc::Crc::<u64>::new(&crc::CRC_64_XZ);

/// Which strategy a working set is for (they are recorded differently).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkingSetKind {
    /// REAP: the pages an invocation faulted on, recorded with userfaultfd.
    Reap,
    /// FaaSnap: the loading set, the memory file's pages in the page cache after an
    /// invocation from a cold cache (mincore), zero pages excluded.
    Faasnap,
}

impl WorkingSetKind {
    fn code(self) -> u32 {
        match self {
            WorkingSetKind::Reap => 1,
            WorkingSetKind::Faasnap => 2,
        }
    }

    /// File name inside the snapshot directory.
    pub fn file_name(self) -> &'static str {
        match self {
            WorkingSetKind::Reap => "ws.reap",
            WorkingSetKind::Faasnap => "ws.faasnap",
        }
    }
}

/// A working set: which guest pages, and where their contents are in the file.
#[derive(Debug)]
pub struct WorkingSet {
    kind: WorkingSetKind,
    path: PathBuf,
    file: File,
    runs: Vec<PageRange>,
    data_offset: u64,
}

fn io(path: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> SnapshotError {
    let path = path.to_path_buf();
    move |source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            SnapshotError::Missing(path)
        } else {
            SnapshotError::Io { path, what, source }
        }
    }
}

impl WorkingSet {
    /// Path of the `kind` working set of the snapshot in `dir`.
    pub fn path(dir: &Path, kind: WorkingSetKind) -> PathBuf {
        dir.join(kind.file_name())
    }

    /// Writes the working set `runs` of `snapshot`, with the pages' contents copied from its
    /// memory file, atomically.
    pub fn write(snapshot: &Snapshot, kind: WorkingSetKind, runs: &[PageRange]) -> Result<(), SnapshotError> {
        let path = Self::path(snapshot.dir(), kind);
        let tmp = snapshot.dir().join(format!(".{}.partial-{}", kind.file_name(), std::process::id()));
        let result = (|| {
            let pages: u64 = runs.iter().map(|r| r.count).sum();
            let data_offset = (HEADER + 16 * runs.len() as u64).div_ceil(PAGE_SIZE) * PAGE_SIZE;
            let mut table = Vec::with_capacity(16 * runs.len());
            for r in runs {
                table.extend_from_slice(&r.first.to_le_bytes());
                table.extend_from_slice(&r.count.to_le_bytes());
            }
            let mut file =
                OpenOptions::new().write(true).create(true).truncate(true).open(&tmp).map_err(io(&tmp, "create"))?;
            let mut crc = CRC.digest();
            crc.update(&table);
            let mut buf = vec![0u8; 1 << 20];
            let mut at = data_offset;
            for r in runs {
                let mut done = 0;
                while done < r.count * PAGE_SIZE {
                    let n = (buf.len() as u64).min(r.count * PAGE_SIZE - done) as usize;
                    snapshot
                        .memory_file()
                        .read_exact_at(&mut buf[..n], r.start() + done)
                        .map_err(io(&snapshot.memory_path(), "read"))?;
                    crc.update(&buf[..n]);
                    file.write_all_at(&buf[..n], at).map_err(io(&tmp, "write"))?;
                    done += n as u64;
                    at += n as u64;
                }
            }
            let mut header = Vec::with_capacity(HEADER as usize);
            header.extend_from_slice(MAGIC);
            header.extend_from_slice(&VERSION.to_le_bytes());
            header.extend_from_slice(&kind.code().to_le_bytes());
            header.extend_from_slice(&snapshot.mem_size().to_le_bytes());
            header.extend_from_slice(&(runs.len() as u64).to_le_bytes());
            header.extend_from_slice(&data_offset.to_le_bytes());
            header.extend_from_slice(&crc.finalize().to_le_bytes());
            file.write_all_at(&header, 0).map_err(io(&tmp, "write"))?;
            file.write_all_at(&table, HEADER).map_err(io(&tmp, "write"))?;
            file.set_len(data_offset + pages * PAGE_SIZE).map_err(io(&tmp, "set length"))?;
            file.flush().map_err(io(&tmp, "write"))?;
            file.sync_all().map_err(io(&tmp, "fsync"))?;
            std::fs::rename(&tmp, &path).map_err(io(&path, "rename into place"))?;
            File::open(snapshot.dir()).and_then(|d| d.sync_all()).map_err(io(snapshot.dir(), "fsync directory"))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Opens and checks the `kind` working set of `snapshot` (runs inside memory, sorted,
    /// disjoint, file long enough; the CRC of runs and data with `verify`).
    pub fn open(snapshot: &Snapshot, kind: WorkingSetKind, verify: bool) -> Result<Self, SnapshotError> {
        let path = Self::path(snapshot.dir(), kind);
        let file = File::open(&path).map_err(io(&path, "open"))?;
        let corrupt = |reason: &str| SnapshotError::Corrupt { path: path.clone(), reason: reason.into() };
        let mut header = [0u8; HEADER as usize];
        file.read_exact_at(&mut header, 0).map_err(|_| corrupt("shorter than its header"))?;
        let u64_at = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().expect("8 bytes"));
        if &header[..8] != MAGIC {
            return Err(corrupt("bad magic (not a snapvisor working set)"));
        }
        let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(SnapshotError::Version { path, found: version, expected: VERSION });
        }
        if u32::from_le_bytes(header[12..16].try_into().expect("4 bytes")) != kind.code() {
            return Err(corrupt("recorded for another strategy"));
        }
        if u64_at(16) != snapshot.mem_size() {
            return Err(SnapshotError::Mismatch {
                path,
                what: "memory size",
                found: u64_at(16),
                expected: snapshot.mem_size(),
            });
        }
        let (n, data_offset, stored) = (u64_at(24), u64_at(32), u64_at(40));
        let pages_total = snapshot.mem_size() / PAGE_SIZE;
        if n > pages_total || data_offset < HEADER + 16 * n || data_offset % PAGE_SIZE != 0 {
            return Err(corrupt("run table out of range"));
        }
        let mut table = vec![0u8; 16 * n as usize];
        file.read_exact_at(&mut table, HEADER).map_err(|_| corrupt("truncated run table"))?;
        let mut runs = Vec::with_capacity(n as usize);
        let mut next = 0;
        for entry in table.chunks_exact(16) {
            let first = u64::from_le_bytes(entry[..8].try_into().expect("8 bytes"));
            let count = u64::from_le_bytes(entry[8..].try_into().expect("8 bytes"));
            if count == 0 || first < next || first.checked_add(count).is_none_or(|end| end > pages_total) {
                return Err(corrupt("runs are empty, unsorted, overlapping or outside memory"));
            }
            next = first + count;
            runs.push(PageRange { first, count });
        }
        let pages: u64 = runs.iter().map(|r| r.count).sum();
        let len = file.metadata().map_err(io(&path, "stat"))?.len();
        if len != data_offset + pages * PAGE_SIZE {
            return Err(SnapshotError::Mismatch {
                path,
                what: "file size",
                found: len,
                expected: data_offset + pages * PAGE_SIZE,
            });
        }
        let set = WorkingSet { kind, path, file, runs, data_offset };
        if verify {
            let mut crc = CRC.digest();
            crc.update(&table);
            let mut buf = vec![0u8; 1 << 20];
            let mut at = data_offset;
            while at < len {
                let n = (buf.len() as u64).min(len - at) as usize;
                set.file.read_exact_at(&mut buf[..n], at).map_err(io(&set.path, "read"))?;
                crc.update(&buf[..n]);
                at += n as u64;
            }
            let computed = crc.finalize();
            if computed != stored {
                return Err(SnapshotError::Checksum { path: set.path, stored, computed });
            }
        }
        Ok(set)
    }

    /// The strategy it was recorded for.
    pub fn kind(&self) -> WorkingSetKind {
        self.kind
    }

    /// The runs of pages, ascending.
    pub fn runs(&self) -> &[PageRange] {
        &self.runs
    }

    /// Pages in the set.
    pub fn pages(&self) -> u64 {
        self.runs.iter().map(|r| r.count).sum()
    }

    /// The file (page data starts at [`WorkingSet::data_offset`]).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Offset of the first page's data in the file.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// Path of the file.
    pub fn file_path(&self) -> &Path {
        &self.path
    }
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

    #[test]
    fn runs_merge_neighbours() {
        assert_eq!(
            runs_of(vec![7, 1, 2, 3, 9, 8, 2]),
            vec![PageRange { first: 1, count: 3 }, PageRange { first: 7, count: 3 }]
        );
        assert!(runs_of(Vec::new()).is_empty());
    }
}
