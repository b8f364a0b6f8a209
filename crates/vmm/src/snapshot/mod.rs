//! Snapshots: a guest stopped at its `ready` hypercall, saved as a directory.
//!
//! ```text
//! SNAPSHOT_DIR/
//!   manifest.json   function, memory size, guest layout, memory digest, zero ranges, state CRC
//!   vmstate.bin     "SNAPVSTA" | format version | body length | postcard(VmState) | CRC-64
//!   memory.img      guest RAM, sparse: all-zero 4 KiB pages are holes (listed as zero ranges)
//!   ws.reap         (optional) recorded working sets of the prefetching strategies,
//!   ws.faasnap      see `working_set`
//! ```
//!
//! [`write`](write::write) builds the directory under a temporary name, fsyncs every file
//! and the directory, and renames it into place, so a crash or kill leaves no directory at
//! the target path (and the temporary one has no manifest until the very end).
//! [`Snapshot::open`] checks everything that is cheap to check (versions, CRC, sizes,
//! consistency between the files) and names the file at fault in its [`SnapshotError`].

mod state_file;
pub mod working_set;
pub mod write;

use crate::vstate::vcpu::VcpuState;
use serde::{Deserialize, Serialize};
use snapvisor_abi::PAGE_SIZE;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

pub use write::{write, SnapshotInput};

/// Version of the snapshot format (manifest and state file). Older or newer snapshots are refused.
pub const FORMAT_VERSION: u32 = 1;
/// Name of the manifest inside a snapshot directory.
pub const MANIFEST: &str = "manifest.json";
/// Name of the vCPU/VM state file.
pub const STATE: &str = "vmstate.bin";
/// Name of the memory image.
pub const MEMORY: &str = "memory.img";

/// Why a snapshot could not be written or opened. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A file is missing.
    #[error("{}: missing", .0.display())]
    Missing(PathBuf),
    /// I/O on a file failed.
    #[error("{}: {what}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The file is not what it should be (bad magic, undecodable body, bad JSON).
    #[error("{}: corrupt: {reason}", .path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Checksum mismatch.
    #[error("{}: checksum mismatch (stored {stored:#018x}, computed {computed:#018x})", .path.display())]
    Checksum {
        /// The file.
        path: PathBuf,
        /// Checksum stored in the file.
        stored: u64,
        /// Checksum of the bytes read.
        computed: u64,
    },
    /// A format version this build does not read.
    #[error("{}: format version {found}, this snapvisor reads version {expected}", .path.display())]
    Version {
        /// The file.
        path: PathBuf,
        /// Version found.
        found: u32,
        /// Version supported.
        expected: u32,
    },
    /// Files of the snapshot disagree with each other (e.g. on the memory size).
    #[error("{}: {what} is {found}, but the manifest says {expected}", .path.display())]
    Mismatch {
        /// The file that disagrees with the manifest.
        path: PathBuf,
        /// The quantity.
        what: &'static str,
        /// Value found in the file.
        found: u64,
        /// Value in the manifest.
        expected: u64,
    },
    /// The memory image's contents do not match the manifest's digest.
    #[error("{}: memory digest {computed} does not match the manifest's {expected}", .path.display())]
    Digest {
        /// The memory file.
        path: PathBuf,
        /// Digest in the manifest.
        expected: String,
        /// Digest computed.
        computed: String,
    },
    /// The target directory exists.
    #[error("{}: already exists (pass --force to replace it)", .0.display())]
    Exists(PathBuf),
    /// The target exists and is not a snapshot: never replaced.
    #[error("{}: exists and is not a snapshot (no manifest.json); refusing to replace it", .0.display())]
    NotASnapshot(PathBuf),
    /// The VM could not be snapshotted.
    #[error("the VM could not be snapshotted")]
    Vm(#[source] Box<crate::Error>),
}

/// The guest layout recorded with a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutRecord {
    /// Mailbox address.
    pub mailbox: u64,
    /// First byte of the image.
    pub image_base: u64,
    /// One past the image.
    pub image_end: u64,
    /// First heap byte.
    pub heap_start: u64,
    /// One past the heap.
    pub heap_end: u64,
    /// Initial stack top.
    pub stack_top: u64,
}

/// A run of all-zero guest pages: `[first, first + count)` in 4 KiB pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRange {
    /// First page index.
    pub first: u64,
    /// Number of pages.
    pub count: u64,
}

impl PageRange {
    /// First byte.
    pub fn start(&self) -> u64 {
        self.first * PAGE_SIZE
    }

    /// One past the last byte.
    pub fn end(&self) -> u64 {
        (self.first + self.count) * PAGE_SIZE
    }
}

/// What `manifest.json` says about the memory image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryRecord {
    /// File name inside the snapshot directory.
    pub file: String,
    /// `xxh3:<hex>` of the whole image (zero pages included).
    pub digest: String,
    /// Pages that are not all zero (stored in the file).
    pub data_pages: u64,
    /// All-zero pages, as sorted, non-overlapping ranges (holes in the file).
    pub zero_ranges: Vec<PageRange>,
}

/// What `manifest.json` says about the state file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateRecord {
    /// File name inside the snapshot directory.
    pub file: String,
    /// CRC-64/XZ stored at the end of the state file.
    pub crc64: u64,
    /// Bytes of the state file.
    pub bytes: u64,
}

/// `manifest.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// Guest ABI version the snapshot was taken under.
    pub abi_version: u32,
    /// Function (or image) name.
    pub function: String,
    /// `xxh3:<hex>` of the guest ELF image the VM booted.
    pub image_digest: String,
    /// Guest memory bytes.
    pub mem_size: u64,
    /// Guest layout.
    pub layout: LayoutRecord,
    /// Memory image.
    pub memory: MemoryRecord,
    /// State file.
    pub state: StateRecord,
    /// Creation time, seconds since the Unix epoch.
    pub created_unix: u64,
}

/// The body of `vmstate.bin`.
#[derive(Debug, Serialize, Deserialize)]
pub struct VmState {
    /// Guest ABI version.
    pub abi_version: u32,
    /// Guest memory bytes.
    pub mem_size: u64,
    /// Guest layout.
    pub layout: LayoutRecord,
    /// The vCPU.
    pub vcpu: VcpuState,
}

/// An opened, checked snapshot.
#[derive(Debug)]
pub struct Snapshot {
    dir: PathBuf,
    manifest: Manifest,
    state: VmState,
    state_bytes: Vec<u8>,
    memory: File,
}

fn io_err(path: &Path, what: &'static str) -> impl FnOnce(io::Error) -> SnapshotError {
    let path = path.to_path_buf();
    move |source| {
        if source.kind() == io::ErrorKind::NotFound {
            SnapshotError::Missing(path)
        } else {
            SnapshotError::Io { path, what, source }
        }
    }
}

impl Snapshot {
    /// Opens and checks the snapshot in `dir` (reads the manifest and the state file, and
    /// the memory file's size; not its contents: see [`Snapshot::verify_memory`]).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, SnapshotError> {
        let dir = dir.as_ref().to_path_buf();
        let manifest_path = dir.join(MANIFEST);
        let text = std::fs::read(&manifest_path).map_err(io_err(&manifest_path, "read"))?;
        let manifest: Manifest = serde_json::from_slice(&text)
            .map_err(|e| SnapshotError::Corrupt { path: manifest_path.clone(), reason: e.to_string() })?;
        if manifest.format_version != FORMAT_VERSION {
            return Err(SnapshotError::Version {
                path: manifest_path,
                found: manifest.format_version,
                expected: FORMAT_VERSION,
            });
        }
        if manifest.abi_version != snapvisor_abi::ABI_VERSION {
            return Err(SnapshotError::Corrupt {
                path: manifest_path,
                reason: format!(
                    "guest ABI version {} (this snapvisor speaks {})",
                    manifest.abi_version,
                    snapvisor_abi::ABI_VERSION
                ),
            });
        }
        if manifest.state.file != STATE || manifest.memory.file != MEMORY {
            return Err(SnapshotError::Corrupt {
                path: manifest_path,
                reason: format!("file names must be `{STATE}` and `{MEMORY}`"),
            });
        }
        let state_path = dir.join(&manifest.state.file);
        let bytes = std::fs::read(&state_path).map_err(io_err(&state_path, "read"))?;
        let (state, crc) = state_file::decode(&bytes, &state_path)?;
        if crc != manifest.state.crc64 {
            return Err(SnapshotError::Checksum { path: state_path, stored: manifest.state.crc64, computed: crc });
        }
        if state.mem_size != manifest.mem_size {
            return Err(SnapshotError::Mismatch {
                path: state_path,
                what: "memory size",
                found: state.mem_size,
                expected: manifest.mem_size,
            });
        }
        if state.layout != manifest.layout {
            return Err(SnapshotError::Corrupt {
                path: state_path,
                reason: "guest layout differs from the manifest's".into(),
            });
        }
        check_zero_ranges(&manifest, &manifest_path)?;

        let memory_path = dir.join(&manifest.memory.file);
        let memory = File::open(&memory_path).map_err(io_err(&memory_path, "open"))?;
        let len = memory.metadata().map_err(io_err(&memory_path, "stat"))?.len();
        if len != manifest.mem_size {
            return Err(SnapshotError::Mismatch {
                path: memory_path,
                what: "file size",
                found: len,
                expected: manifest.mem_size,
            });
        }
        Ok(Snapshot { dir, manifest, state, state_bytes: bytes, memory })
    }

    /// The snapshot directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The saved VM state.
    pub fn state(&self) -> &VmState {
        &self.state
    }

    /// The bytes of the state file, as checked by [`Snapshot::open`].
    pub fn state_bytes(&self) -> &[u8] {
        &self.state_bytes
    }

    /// The memory image (open for reading).
    pub fn memory_file(&self) -> &File {
        &self.memory
    }

    /// Path of the memory image.
    pub fn memory_path(&self) -> PathBuf {
        self.dir.join(&self.manifest.memory.file)
    }

    /// Guest memory bytes.
    pub fn mem_size(&self) -> u64 {
        self.manifest.mem_size
    }

    /// Whether `[offset, offset + len)` of guest memory is all zero according to the manifest.
    pub fn is_zero(&self, offset: u64, len: u64) -> bool {
        ranges_cover(&self.manifest.memory.zero_ranges, offset, len)
    }

    /// Indices of the 2 MiB chunks of guest memory that are not entirely zero (what a pool
    /// import stores).
    pub fn data_chunks(&self) -> Vec<u64> {
        let chunk = snapvisor_abi::HUGE_PAGE_SIZE;
        (0..self.mem_size() / chunk).filter(|c| !self.is_zero(c * chunk, chunk)).collect()
    }

    /// Bytes of [`Snapshot::data_chunks`].
    pub fn data_chunk_bytes(&self) -> u64 {
        self.data_chunks().len() as u64 * snapvisor_abi::HUGE_PAGE_SIZE
    }

    /// Reads the whole memory image and checks it against the manifest's digest.
    pub fn verify_memory(&self) -> Result<(), SnapshotError> {
        let path = self.memory_path();
        let computed = digest_reader(&self.memory, self.mem_size()).map_err(io_err(&path, "read"))?;
        if computed != self.manifest.memory.digest {
            return Err(SnapshotError::Digest { path, expected: self.manifest.memory.digest.clone(), computed });
        }
        Ok(())
    }

    /// The snapshot's data files: memory, state, and the working sets that exist.
    fn data_files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.memory_path(), self.dir.join(&self.manifest.state.file)];
        for kind in [working_set::WorkingSetKind::Reap, working_set::WorkingSetKind::Faasnap] {
            let path = working_set::WorkingSet::path(&self.dir, kind);
            if path.exists() {
                files.push(path);
            }
        }
        files
    }

    /// Reads the snapshot's files through the page cache, so that all of them are cached
    /// ("page cache warm", a well-defined starting state for a restore).
    pub fn warm_page_cache(&self) -> Result<(), SnapshotError> {
        use std::io::Read;
        let mut buf = vec![0u8; 4 << 20];
        for path in self.data_files() {
            let mut file = File::open(&path).map_err(io_err(&path, "open"))?;
            while file.read(&mut buf).map_err(io_err(&path, "read"))? > 0 {}
        }
        Ok(())
    }

    /// Drops the snapshot's files from the page cache ("SnapStart from disk").
    pub fn evict_page_cache(&self) -> Result<(), SnapshotError> {
        for path in self.data_files() {
            let file = File::open(&path).map_err(io_err(&path, "open"))?;
            evict(&file).map_err(io_err(&path, "posix_fadvise(DONTNEED)"))?;
        }
        Ok(())
    }
}

/// Checks and decodes the bytes of a state file (as stored in a pool).
pub fn decode_state(bytes: &[u8], path: &Path) -> Result<VmState, SnapshotError> {
    state_file::decode(bytes, path).map(|(state, _)| state)
}

/// Evicts a file's clean pages from the page cache.
pub fn evict(file: &File) -> io::Result<()> {
    // SAFETY: posix_fadvise on an open descriptor; offset 0 / len 0 = the whole file.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

fn check_zero_ranges(manifest: &Manifest, path: &Path) -> Result<(), SnapshotError> {
    let pages = manifest.mem_size / PAGE_SIZE;
    let mut next = 0;
    let mut zero = 0;
    for r in &manifest.memory.zero_ranges {
        let end = r.first.checked_add(r.count);
        if r.count == 0 || r.first < next || end.is_none_or(|end| end > pages) {
            return Err(SnapshotError::Corrupt {
                path: path.to_path_buf(),
                reason: format!("zero range {r:?} is empty, unsorted or outside memory"),
            });
        }
        next = r.first + r.count;
        zero += r.count;
    }
    if zero.checked_add(manifest.memory.data_pages) != Some(pages) {
        return Err(SnapshotError::Corrupt {
            path: path.to_path_buf(),
            reason: format!(
                "{} zero + {} data pages is not the memory's {pages} pages",
                zero, manifest.memory.data_pages
            ),
        });
    }
    Ok(())
}

/// Whether the sorted `ranges` cover `[offset, offset + len)` entirely.
pub fn ranges_cover(ranges: &[PageRange], offset: u64, len: u64) -> bool {
    let end = offset + len;
    let i = ranges.partition_point(|r| r.end() <= offset);
    ranges.get(i).is_some_and(|r| r.start() <= offset && r.end() >= end)
}

/// `xxh3:<hex>` of `bytes`.
pub fn digest_bytes(bytes: &[u8]) -> String {
    digest_string(xxhash_rust::xxh3::xxh3_64(bytes))
}

/// `xxh3:<hex>` of the first `len` bytes of `file`.
pub fn digest_reader(file: &File, len: u64) -> io::Result<String> {
    use std::os::unix::fs::FileExt;
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 4 << 20];
    let mut offset = 0;
    while offset < len {
        let n = buf.len().min((len - offset) as usize);
        file.read_exact_at(&mut buf[..n], offset)?;
        hasher.update(&buf[..n]);
        offset += n as u64;
    }
    Ok(digest_string(hasher.digest()))
}

/// The text form of a memory digest (`xxh3:<hex>`), as manifests and pool entries store it.
pub fn digest_string(xxh3: u64) -> String {
    format!("xxh3:{xxh3:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_works_at_edges() {
        let ranges = [PageRange { first: 2, count: 3 }, PageRange { first: 10, count: 1 }];
        assert!(ranges_cover(&ranges, 2 * PAGE_SIZE, 3 * PAGE_SIZE));
        assert!(ranges_cover(&ranges, 4 * PAGE_SIZE, PAGE_SIZE));
        assert!(!ranges_cover(&ranges, 4 * PAGE_SIZE, 2 * PAGE_SIZE));
        assert!(!ranges_cover(&ranges, PAGE_SIZE, PAGE_SIZE));
        assert!(ranges_cover(&ranges, 10 * PAGE_SIZE, PAGE_SIZE));
        assert!(!ranges_cover(&ranges, 11 * PAGE_SIZE, PAGE_SIZE));
    }
}
