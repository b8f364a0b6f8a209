//! Snapshots: a guest stopped at its `ready` hypercall, saved as a directory.
//!
//! ```text
//! SNAPSHOT_DIR/
//!   manifest.json   function, memory size, layout, digests, zero ranges, state size and
//!                   CRC; sealed with its own CRC-64 (see `manifest`)
//!   vmstate.bin     "SNAPVSTA" | format version | body length | postcard(VmState) | CRC-64
//!   memory.img      guest RAM, sparse: all-zero 4 KiB pages are holes (listed as zero ranges)
//!   ws.reap         (optional) recorded working sets of the prefetching strategies and
//!   ws.faasnap      the write set `pass` uses, see `working_set`;
//!   ws.write
//!   recorded.json   (optional) which input recorded them, see `recording`
//! ```
//!
//! [`write`](write::write) builds the directory under a temporary name, fsyncs every file
//! and the directory, and renames it into place, so a crash or kill leaves no directory at
//! the target path (and the temporary one has no manifest until the very end).
//! [`Snapshot::open`] trusts nothing it reads: every file is opened without following a
//! symbolic link, must be a regular file, and is read only up to its format's bound; the
//! manifest's and the state's CRCs are checked, every size is bounded, and the files are
//! cross-checked (state size and CRC, memory file size, memory size in the state). Errors
//! name the file at fault. The memory image's contents are checked against the manifest's
//! digest by [`Snapshot::verify_memory`] and by a pool import, not on every restore (see
//! `docs/security.md`).

mod error;
mod manifest;
pub mod recording;
mod state_file;
pub mod working_set;
pub mod write;

use crate::checksum::{digest_string, xxh3_file};
use crate::files::{open_regular, read_regular};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

pub use error::SnapshotError;
pub(crate) use error::{corrupt, in_range, io_err};
pub use manifest::{
    check_mem_size, ranges_cover, LayoutRecord, Manifest, MemoryRecord, PageRange, StateRecord, MANIFEST_MAX, NAME_MAX,
};
pub use state_file::{decode as decode_state_file, VmState, STATE_MAX};
pub use write::{write, SnapshotInput};

/// Version of the snapshot format (manifest, state file). Other versions are refused.
pub const FORMAT_VERSION: u32 = 2;
/// Name of the manifest inside a snapshot directory.
pub const MANIFEST: &str = "manifest.json";
/// Name of the vCPU/VM state file.
pub const STATE: &str = "vmstate.bin";
/// Name of the memory image.
pub const MEMORY: &str = "memory.img";

/// An opened, checked snapshot.
#[derive(Debug)]
pub struct Snapshot {
    dir: PathBuf,
    manifest: Manifest,
    state: VmState,
    state_bytes: Vec<u8>,
    memory: File,
}

/// Whether `dir` holds a snapshot this program wrote, damaged or not: its `manifest.json` is
/// a regular file (not a link) within the format's bound with every field of a snapvisor
/// manifest. What `--force` may replace and a deletion may remove: a directory that merely
/// has a file of that common name (a web app's, an extension's) is not a snapshot.
pub fn is_snapshot(dir: &Path) -> bool {
    read_regular(&dir.join(MANIFEST), MANIFEST_MAX)
        .is_ok_and(|bytes| serde_json::from_slice::<Manifest>(&bytes).is_ok())
}

impl Snapshot {
    /// Opens and checks the snapshot in `dir` (reads the manifest and the state file, and
    /// the memory file's size; not its contents: see [`Snapshot::verify_memory`]).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, SnapshotError> {
        let dir = dir.as_ref().to_path_buf();
        // A writer renames its temporary into place once complete; before that (or if it
        // was killed just before) it is not a snapshot, whatever it holds.
        if crate::files::is_partial(&dir) {
            return Err(SnapshotError::Unpublished(dir));
        }
        let manifest_path = dir.join(MANIFEST);
        let manifest = Manifest::decode(&read_regular(&manifest_path, MANIFEST_MAX)?, &manifest_path)?;

        let state_path = dir.join(STATE);
        let bytes = read_regular(&state_path, STATE_MAX)?;
        if bytes.len() as u64 != manifest.state.bytes {
            return Err(SnapshotError::Mismatch {
                path: state_path,
                what: "file size",
                found: bytes.len() as u64,
                expected: manifest.state.bytes,
            });
        }
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
            return Err(corrupt(&state_path, "guest layout differs from the manifest's"));
        }

        let memory_path = dir.join(MEMORY);
        let (memory, len) = open_regular(&memory_path)?;
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
        self.dir.join(MEMORY)
    }

    /// Guest memory bytes (within the layout's bounds: checked on open).
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
        let computed = digest_string(xxh3_file(&self.memory, 0, self.mem_size()).map_err(io_err(&path, "read"))?);
        if computed != self.manifest.memory.digest {
            return Err(SnapshotError::Digest { path, expected: self.manifest.memory.digest.clone(), computed });
        }
        Ok(())
    }

    /// The snapshot's data files that exist (memory, state, working sets), opened safely.
    fn data_files(&self) -> Result<Vec<(PathBuf, File, u64)>, SnapshotError> {
        let mut files = Vec::new();
        let names = [
            MEMORY,
            STATE,
            working_set::WorkingSetKind::Reap.file_name(),
            working_set::WorkingSetKind::Faasnap.file_name(),
        ];
        for (i, name) in names.into_iter().enumerate() {
            let path = self.dir.join(name);
            match open_regular(&path) {
                Ok((file, len)) => files.push((path, file, len)),
                // The working sets are optional.
                Err(crate::files::FileError::Missing(_)) if i >= 2 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(files)
    }

    /// Reads the snapshot's files through the page cache, so that all of them are cached
    /// ("page cache warm", a well-defined starting state for a restore).
    pub fn warm_page_cache(&self) -> Result<(), SnapshotError> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; 4 << 20];
        for (path, file, len) in self.data_files()? {
            let mut at = 0;
            while at < len {
                let n = file.read_at(&mut buf, at).map_err(io_err(&path, "read"))?;
                if n == 0 {
                    break;
                }
                at += n as u64;
            }
        }
        Ok(())
    }

    /// Drops the snapshot's files from the page cache ("SnapStart from disk").
    pub fn evict_page_cache(&self) -> Result<(), SnapshotError> {
        for (path, file, _) in self.data_files()? {
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
