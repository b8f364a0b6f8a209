//! What a pool lives on, how its writes are made durable, and the emulated medium the
//! project sets up (and tears down) on machines without persistent memory.
//!
//! | medium | what it is | private mappings | persist |
//! |---|---|---|---|
//! | device-dax | `/dev/daxX.Y` character device | refused by the kernel | cache-line flush + fence |
//! | fsdax | a file on a filesystem mounted `-o dax` | yes (copy-on-write to DRAM) | flush + fence with `MAP_SYNC`, else `msync` |
//! | emulated hugetlbfs | DRAM file on a hugetlbfs mount (2 MiB pages) | yes (2 MiB copy-on-write) | `msync` |
//! | emulated tmpfs | DRAM file on a tmpfs mount (`huge=always` when allowed) | yes (4 KiB copy-on-write) | `msync` |

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
        }
    }

    /// Whether the medium is DRAM standing in for persistent memory.
    pub fn is_emulated(&self) -> bool {
        matches!(self, Medium::EmulatedHugetlbfs | Medium::EmulatedTmpfs { .. })
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
        })
    }
}

/// Why a path cannot hold a pool.
#[derive(Debug, thiserror::Error)]
pub enum MediumError {
    /// Filesystem calls failed.
    #[error("{}: {what}", .path.display())]
    Io {
        /// Path.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The path is on ordinary storage.
    #[error("{}: not persistent memory (neither device-dax, a DAX filesystem, hugetlbfs nor tmpfs); PASS keeps snapshots in memory, not on a disk filesystem", .0.display())]
    NotPersistentMemory(PathBuf),
    /// Setting up the emulation failed.
    #[error("could not set up the emulated pool: {0}")]
    Emulation(String),
}

fn io_err(path: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> MediumError {
    let path = path.to_path_buf();
    move |source| MediumError::Io { path, what, source }
}

/// Detects the medium of an existing pool path (device or file).
pub fn detect(path: &Path) -> Result<Medium, MediumError> {
    let meta = std::fs::metadata(path).map_err(io_err(path, "stat"))?;
    if meta.file_type().is_char_device() {
        return Ok(Medium::DevDax);
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

/// What the emulation changed on the machine, so that teardown can undo exactly that.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmulationRecord {
    /// The mount point created.
    pub mount: PathBuf,
    /// `hugetlbfs` or `tmpfs`.
    pub fstype: String,
    /// Huge pages added to `/proc/sys/vm/nr_hugepages`.
    pub hugepages_added: u64,
}

/// Which emulated medium to set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmulatedKind {
    /// hugetlbfs if enough huge pages can be reserved, else tmpfs.
    Auto,
    /// hugetlbfs only.
    Hugetlbfs,
    /// tmpfs only.
    Tmpfs,
}

const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";
const RECORD: &str = "emulation.json";

fn read_nr_hugepages() -> io::Result<u64> {
    std::fs::read_to_string(NR_HUGEPAGES)?.trim().parse().map_err(io::Error::other)
}

fn free_hugepages() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find(|l| l.starts_with("HugePages_Free:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Adds `pages` huge pages to the kernel's pool; returns how many were really added.
fn reserve_hugepages(pages: u64) -> io::Result<u64> {
    let before = read_nr_hugepages()?;
    std::fs::write(NR_HUGEPAGES, (before + pages).to_string())?;
    let after = read_nr_hugepages()?;
    Ok(after.saturating_sub(before))
}

fn release_hugepages(pages: u64) -> io::Result<()> {
    if pages == 0 {
        return Ok(());
    }
    let now = read_nr_hugepages()?;
    std::fs::write(NR_HUGEPAGES, now.saturating_sub(pages).to_string())
}

fn mount(fstype: &str, target: &Path, options: &str) -> io::Result<()> {
    let c = |s: &[u8]| CString::new(s).map_err(io::Error::other);
    let (src, fs, tgt, opts) =
        (c(b"snapvisor")?, c(fstype.as_bytes())?, c(target.as_os_str().as_bytes())?, c(options.as_bytes())?);
    // SAFETY: valid C strings; mount(2) copies them.
    let rc = unsafe {
        libc::mount(src.as_ptr(), tgt.as_ptr(), fs.as_ptr(), libc::MS_NOSUID | libc::MS_NODEV, opts.as_ptr().cast())
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn unmount(target: &Path) -> io::Result<()> {
    let tgt = CString::new(target.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: valid C string.
    if unsafe { libc::umount2(tgt.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `root` holds a live emulation (its record exists).
pub fn emulation_record(root: &Path) -> Option<EmulationRecord> {
    let text = std::fs::read(root.join(RECORD)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Sets up an emulated medium under `root`: a mount at `root/mnt` (hugetlbfs with
/// `huge_pages` reserved, or tmpfs with huge pages), recorded in `root/emulation.json`.
/// Returns the mount point and the medium.
pub fn setup_emulation(root: &Path, huge_pages: u64, kind: EmulatedKind) -> Result<(PathBuf, Medium), MediumError> {
    let mnt = root.join("mnt");
    if let Some(record) = emulation_record(root) {
        return Err(MediumError::Emulation(format!(
            "{} already holds an emulated pool mount at {} (run `snapvisor pool destroy` first)",
            root.display(),
            record.mount.display()
        )));
    }
    std::fs::create_dir_all(&mnt).map_err(io_err(&mnt, "create mount point"))?;
    let mut record = EmulationRecord { mount: mnt.clone(), fstype: String::new(), hugepages_added: 0 };
    let mut medium = None;
    if kind != EmulatedKind::Tmpfs {
        let free_before = free_hugepages();
        let needed = huge_pages.saturating_sub(free_before);
        let added = reserve_hugepages(needed).unwrap_or(0);
        if free_hugepages() >= huge_pages && mount("hugetlbfs", &mnt, "pagesize=2M,mode=0700").is_ok() {
            record.fstype = "hugetlbfs".into();
            record.hugepages_added = added;
            medium = Some(Medium::EmulatedHugetlbfs);
        } else {
            let _ = release_hugepages(added);
            if kind == EmulatedKind::Hugetlbfs {
                return Err(MediumError::Emulation(format!(
                    "could not reserve {huge_pages} huge pages of 2 MiB (or mount hugetlbfs at {})",
                    mnt.display()
                )));
            }
        }
    }
    if medium.is_none() {
        let huge = mount("tmpfs", &mnt, "huge=always,mode=0700").is_ok();
        if !huge {
            mount("tmpfs", &mnt, "mode=0700").map_err(io_err(&mnt, "mount tmpfs"))?;
        }
        record.fstype = "tmpfs".into();
        medium = Some(Medium::EmulatedTmpfs { huge });
    }
    let json = serde_json::to_vec_pretty(&record).map_err(|e| MediumError::Emulation(e.to_string()))?;
    let path = root.join(RECORD);
    let tmp = root.join(format!("{RECORD}.tmp"));
    std::fs::write(&tmp, json).and_then(|_| std::fs::rename(&tmp, &path)).map_err(io_err(&path, "write"))?;
    Ok((mnt, medium.expect("a medium was chosen")))
}

/// Undoes [`setup_emulation`]: unmounts (discarding the pool) and releases the huge pages.
pub fn teardown_emulation(root: &Path) -> Result<Option<EmulationRecord>, MediumError> {
    let Some(record) = emulation_record(root) else { return Ok(None) };
    unmount(&record.mount)
        .or_else(|e| if e.raw_os_error() == Some(libc::EINVAL) { Ok(()) } else { Err(e) })
        .map_err(io_err(&record.mount, "unmount"))?;
    release_hugepages(record.hugepages_added).map_err(io_err(Path::new(NR_HUGEPAGES), "write"))?;
    let _ = std::fs::remove_dir(&record.mount);
    std::fs::remove_file(root.join(RECORD)).map_err(io_err(root, "remove emulation record"))?;
    Ok(Some(record))
}
