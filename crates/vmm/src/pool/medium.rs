//! What a pool lives on and how its writes are made durable. The emulated medium the
//! project sets up (and tears down) as root lives in `emulation.rs` (re-exported here).
//!
//! | medium | what it is | private mappings | persist |
//! |---|---|---|---|
//! | device-dax | `/dev/daxX.Y` character device | refused by the kernel | cache-line flush + fence |
//! | fsdax | a file on a filesystem mounted `-o dax` | yes (copy-on-write to DRAM) | flush + fence with `MAP_SYNC`, else `msync` |
//! | emulated hugetlbfs | DRAM file on a hugetlbfs mount (2 MiB pages) | yes (2 MiB copy-on-write) | `msync` |
//! | emulated tmpfs | DRAM file on a tmpfs mount (`huge=always` when allowed) | yes (4 KiB copy-on-write) | `msync` |

pub use super::emulation::{
    emulation_record, setup_emulation, teardown_emulation, EmulatedKind, EmulationRecord, RECORD,
};

use crate::files::FileError;
use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;
const TMPFS_MAGIC: i64 = 0x0102_1994;
const STATX_ATTR_DAX: u64 = 0x0020_0000;

/// The storage a pool lives on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Medium {
    /// A device-dax character device (real persistent memory, no filesystem).
    DevDax,
    /// A file on a DAX filesystem (real persistent memory).
    FsDax,
    /// Emulated: a DRAM-backed file on hugetlbfs.
    EmulatedHugetlbfs,
    /// Emulated: a DRAM-backed file on tmpfs; `huge` when the mount uses huge pages.
    EmulatedTmpfs {
        /// Whether the tmpfs mount allocates 2 MiB pages.
        huge: bool,
    },
    /// Process memory: a pool built by tests or fuzzing, never on a device or file.
    Memory,
}

impl Medium {
    /// Short name for tables and CSV (`pool-hugetlbfs`, ...).
    pub fn short(&self) -> &'static str {
        match self {
            Medium::DevDax => "pmem-devdax",
            Medium::FsDax => "pmem-fsdax",
            Medium::EmulatedHugetlbfs => "pool-hugetlbfs",
            Medium::EmulatedTmpfs { huge: true } => "pool-tmpfs-huge",
            Medium::EmulatedTmpfs { huge: false } => "pool-tmpfs",
            Medium::Memory => "pool-memory",
        }
    }

    /// Whether the medium is DRAM standing in for persistent memory.
    pub fn is_emulated(&self) -> bool {
        matches!(self, Medium::EmulatedHugetlbfs | Medium::EmulatedTmpfs { .. } | Medium::Memory)
    }

    /// Whether the kernel allows private (copy-on-write) mappings of it.
    pub fn allows_private_mappings(&self) -> bool {
        !matches!(self, Medium::DevDax)
    }

    /// Whether the kernel maps it with 2 MiB pages.
    pub fn huge_pages(&self) -> bool {
        !matches!(self, Medium::EmulatedTmpfs { huge: false })
    }

    /// Whether durability needs CPU cache-line flushes (real persistent memory).
    pub fn needs_cache_flush(&self) -> bool {
        matches!(self, Medium::DevDax | Medium::FsDax)
    }
}

impl fmt::Display for Medium {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Medium::DevDax => "persistent memory (device-dax)",
            Medium::FsDax => "persistent memory (file on a DAX filesystem)",
            Medium::EmulatedHugetlbfs => "emulated persistent memory: DRAM file on hugetlbfs (2 MiB pages)",
            Medium::EmulatedTmpfs { huge: true } => {
                "emulated persistent memory: DRAM file on tmpfs (huge=always, 2 MiB pages)"
            }
            Medium::EmulatedTmpfs { huge: false } => "emulated persistent memory: DRAM file on tmpfs (4 KiB pages)",
            Medium::Memory => "process memory (tests and fuzzing)",
        })
    }
}

/// Why a path cannot hold a pool, or the emulated medium cannot be set up or undone.
#[derive(Debug, thiserror::Error)]
pub enum MediumError {
    /// A filesystem call failed, or a file could not be read as required.
    #[error(transparent)]
    File(#[from] FileError),
    /// The path is on ordinary storage.
    #[error("{}: not persistent memory (neither device-dax, a DAX filesystem, hugetlbfs nor tmpfs); PASS keeps snapshots in memory, not on a disk filesystem", .0.display())]
    NotPersistentMemory(PathBuf),
    /// A symbolic link where the emulation only accepts a directory.
    #[error("{}: is a symbolic link or not a directory; the emulated pool never follows links there", .0.display())]
    Symlink(PathBuf),
    /// The data directory already holds an emulated pool.
    #[error("{}: already holds an emulated pool mount at {} (run `snapvisor pool destroy` first)", .root.display(), .mount.display())]
    Exists {
        /// The emulation root.
        root: PathBuf,
        /// Its mount point.
        mount: PathBuf,
    },
    /// Something is mounted at the mount point already.
    #[error("{}: something is already mounted there", .0.display())]
    InUse(PathBuf),
    /// Not enough memory for the huge pages asked for.
    #[error("could not reserve {needed} huge pages of 2 MiB: {free} free, and {available_mib} MiB of memory available for more")]
    HugePages {
        /// Pages needed.
        needed: u64,
        /// Pages free in the kernel's pool.
        free: u64,
        /// Memory available for more, MiB.
        available_mib: u64,
    },
    /// The emulation record is damaged or does not describe this data directory.
    #[error("{}: the emulation record is damaged or forged ({problem}); nothing was changed", .path.display())]
    Record {
        /// The record.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The mount the record names is not one this program made.
    #[error("{}: not a mount snapvisor made here ({problem}); nothing was unmounted", .mount.display())]
    NotOurs {
        /// The mount point.
        mount: PathBuf,
        /// What does not match.
        problem: &'static str,
    },
    /// Mounting failed.
    #[error("{}: mount {fstype}", .path.display())]
    Mount {
        /// Mount point.
        path: PathBuf,
        /// Filesystem type.
        fstype: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

pub(super) fn io_err(path: &Path, what: &'static str) -> impl FnOnce(io::Error) -> MediumError {
    let to_file_error = crate::files::io_err(path, what);
    move |source| MediumError::File(to_file_error(source))
}

/// Detects the medium of an existing pool path (device or file).
pub fn detect(path: &Path) -> Result<Medium, MediumError> {
    let meta = std::fs::metadata(path).map_err(io_err(path, "stat"))?;
    if meta.file_type().is_char_device() {
        // Only a device-dax device: not /dev/zero, a tty or any other character device.
        use std::os::unix::fs::MetadataExt;
        let (major, minor) = (libc::major(meta.rdev()), libc::minor(meta.rdev()));
        let subsystem = std::fs::read_link(format!("/sys/dev/char/{major}:{minor}/subsystem"));
        if subsystem.is_ok_and(|s| s.file_name().is_some_and(|n| n == "dax")) {
            return Ok(Medium::DevDax);
        }
        return Err(MediumError::NotPersistentMemory(path.to_path_buf()));
    }
    let dir = if meta.is_dir() { path } else { path.parent().unwrap_or(Path::new("/")) };
    let cpath = CString::new(dir.as_os_str().as_bytes()).map_err(|_| MediumError::NotPersistentMemory(path.into()))?;
    // SAFETY: zero is a valid statfs; statfs writes into it.
    let mut sfs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out-pointer.
    if unsafe { libc::statfs(cpath.as_ptr(), &mut sfs) } != 0 {
        return Err(io_err(dir, "statfs")(io::Error::last_os_error()));
    }
    match sfs.f_type as i64 {
        HUGETLBFS_MAGIC => return Ok(Medium::EmulatedHugetlbfs),
        TMPFS_MAGIC => return Ok(Medium::EmulatedTmpfs { huge: tmpfs_is_huge(dir) }),
        _ => {}
    }
    if is_dax_file(path)? {
        return Ok(Medium::FsDax);
    }
    Err(MediumError::NotPersistentMemory(path.to_path_buf()))
}

fn is_dax_file(path: &Path) -> Result<bool, MediumError> {
    let cpath = CString::new(path.as_os_str().as_bytes()).map_err(|_| MediumError::NotPersistentMemory(path.into()))?;
    // SAFETY: zero is a valid statx; statx writes into it.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out-pointer.
    let rc = unsafe { libc::statx(libc::AT_FDCWD, cpath.as_ptr(), 0, libc::STATX_BASIC_STATS, &mut stx) };
    if rc != 0 {
        return Err(io_err(path, "statx")(io::Error::last_os_error()));
    }
    Ok(stx.stx_attributes_mask & STATX_ATTR_DAX != 0 && stx.stx_attributes & STATX_ATTR_DAX != 0)
}

/// Whether the tmpfs mount holding `dir` allocates huge pages.
fn tmpfs_is_huge(dir: &Path) -> bool {
    let Ok(dir) = dir.canonicalize() else { return false };
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, point, fstype, opts) = (f.next()?, f.next()?, f.next()?, f.next()?);
            (fstype == "tmpfs" && dir.starts_with(point)).then(|| (point.len(), opts.to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .is_some_and(|(_, opts)| opts.split(',').any(|o| o == "huge=always" || o == "huge=within_size"))
}

/// The size of a device-dax device, from `/sys/dev/char/MAJ:MIN/size`.
pub fn device_size(meta: &std::fs::Metadata, path: &Path) -> Result<u64, MediumError> {
    use std::os::unix::fs::MetadataExt;
    let sys = PathBuf::from(format!("/sys/dev/char/{}:{}/size", libc::major(meta.rdev()), libc::minor(meta.rdev())));
    let text = crate::files::read_regular(&sys, 4096)?;
    std::str::from_utf8(&text)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| MediumError::NotPersistentMemory(path.to_path_buf()))
}
