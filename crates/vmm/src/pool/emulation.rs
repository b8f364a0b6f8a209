//! The emulated persistent-memory medium that `pool init` sets up as root on machines
//! without PMem, and that `pool destroy` undoes — trusting nothing in the data directory.
//!
//! Set-up (`setup_emulation(ROOT, pages, kind)`, ROOT = `DATA_DIR/pool`):
//! 1. ROOT and ROOT/mnt are opened without following symbolic links, and everything after
//!    goes through those descriptors (`/proc/self/fd/N`), so swapping a link in meanwhile
//!    changes nothing; something already mounted at ROOT/mnt is refused.
//! 2. tmpfs with `huge=always` (the default), hugetlbfs with the huge pages reserved (never
//!    more than the memory available) where the kernel has no huge tmpfs or it is asked
//!    for, or plain tmpfs, is mounted there with source `snapvisor`.
//! 3. A marker `.snapvisor-emulation.<token>.<pages added>` is created inside the new mount,
//!    which only root can write (mode 0700): it is what proves the mount is ours and how
//!    many huge pages we added.
//! 4. ROOT/emulation.json records the absolute mount point, fstype, device, token and page
//!    count, sealed with a CRC-64, written atomically.
//!
//! Teardown checks all of it before changing anything: the record's CRC, that it names
//! ROOT/mnt, that `/proc/self/mountinfo` has a mount there with that fstype, source
//! `snapvisor` and device, and that the marker inside it carries the record's token and
//! page count. Only then it unmounts, and it gives back at most the pages the marker
//! records and at most the pages that exist. A damaged or forged record is a typed error
//! and changes nothing.

use super::medium::{io_err, Medium, MediumError};
use crate::checksum::crc64;
use crate::files::{read_regular, write_atomic};
use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Name of the record inside the emulation root.
pub const RECORD: &str = "emulation.json";
const MOUNT_DIR: &str = "mnt";
const MARKER: &str = ".snapvisor-emulation.";
const SOURCE: &str = "snapvisor";
const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";
const HUGE_PAGE: u64 = 2 << 20;

/// What the emulation changed on the machine, so that teardown can undo exactly that.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmulationRecord {
    /// The mount point created (absolute).
    pub mount: PathBuf,
    /// `hugetlbfs` or `tmpfs`.
    pub fstype: String,
    /// Huge pages added to `/proc/sys/vm/nr_hugepages` (by teardown: the pages given back).
    pub hugepages_added: u64,
    /// Device number of the mount.
    pub device: u64,
    /// Random token, also in the marker inside the mount.
    pub token: String,
    /// CRC-64 of the fields above ([`EmulationRecord::checksum`]).
    pub crc64: u64,
}

impl EmulationRecord {
    /// CRC-64 of the postcard encoding of the other fields.
    pub fn checksum(&self) -> u64 {
        let fields = (self.mount.as_os_str().as_bytes(), &self.fstype, self.hugepages_added, self.device, &self.token);
        crc64(&postcard::to_stdvec(&fields).expect("postcard encodes plain fields"))
    }

    fn marker(&self) -> String {
        format!("{MARKER}{}.{}", self.token, self.hugepages_added)
    }
}

/// Which emulated medium to set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmulatedKind {
    /// tmpfs with huge pages (2 MiB pages for reads, 4 KiB copy-on-write: what `pass`
    /// is built for); where the kernel has no huge tmpfs, hugetlbfs, else plain tmpfs.
    Auto,
    /// hugetlbfs only (2 MiB pages, 2 MiB copy-on-write).
    Hugetlbfs,
    /// tmpfs, with huge pages where the kernel allows.
    Tmpfs,
    /// tmpfs with 4 KiB pages only (the ablation's "4 KiB pages").
    TmpfsSmallPages,
}

/// A directory opened without following links; paths through it go via `/proc/self/fd`.
struct Dir {
    file: File,
    path: PathBuf,
}

impl Dir {
    fn open(path: &Path) -> Result<Self, MediumError> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) | Some(libc::ENOTDIR) => MediumError::Symlink(path.into()),
                _ => io_err(path, "open directory")(e),
            })?;
        Ok(Dir { file, path: path.into() })
    }

    /// A path that names this very directory, whatever happens to its name meanwhile.
    fn fd_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }

    fn child(&self, name: &str) -> Result<Dir, MediumError> {
        Dir::open(&self.fd_path().join(name)).map_err(|e| match e {
            MediumError::Symlink(_) => MediumError::Symlink(self.path.join(name)),
            other => other,
        })
    }

    fn device(&self) -> Result<u64, MediumError> {
        Ok(self.file.metadata().map_err(io_err(&self.path, "stat"))?.dev())
    }

    /// The directory's absolute path as the kernel sees it.
    fn absolute(&self) -> Result<PathBuf, MediumError> {
        std::fs::read_link(self.fd_path()).map_err(io_err(&self.path, "resolve"))
    }
}

fn meminfo(field: &str) -> u64 {
    crate::metrics::proc_field("/proc/meminfo", field).unwrap_or(0)
}

fn read_nr_hugepages() -> io::Result<u64> {
    std::fs::read_to_string(NR_HUGEPAGES)?.trim().parse().map_err(io::Error::other)
}

/// Adds up to `pages` huge pages to the kernel's pool; returns how many were added.
fn reserve_hugepages(pages: u64) -> io::Result<u64> {
    let before = read_nr_hugepages()?;
    let target = before.checked_add(pages).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    std::fs::write(NR_HUGEPAGES, target.to_string())?;
    Ok(read_nr_hugepages()?.saturating_sub(before))
}

/// Gives back `pages` huge pages, never more than exist.
fn release_hugepages(pages: u64) -> io::Result<u64> {
    if pages == 0 {
        return Ok(0);
    }
    let now = read_nr_hugepages()?;
    let released = pages.min(now);
    std::fs::write(NR_HUGEPAGES, (now - released).to_string())?;
    Ok(released)
}

fn mount(fstype: &'static str, target: &Dir, options: &str) -> Result<(), MediumError> {
    let c = |s: &[u8]| CString::new(s).expect("no NUL in mount arguments");
    let (src, fs, tgt, opts) =
        (c(SOURCE.as_bytes()), c(fstype.as_bytes()), c(target.fd_path().as_os_str().as_bytes()), c(options.as_bytes()));
    // SAFETY: valid C strings; mount(2) copies them. The target is the directory's
    // descriptor, so no link swapped in after it was opened can redirect the mount.
    let rc = unsafe {
        libc::mount(src.as_ptr(), tgt.as_ptr(), fs.as_ptr(), libc::MS_NOSUID | libc::MS_NODEV, opts.as_ptr().cast())
    };
    if rc != 0 {
        return Err(MediumError::Mount { path: target.path.clone(), fstype, source: io::Error::last_os_error() });
    }
    Ok(())
}

fn unmount(target: &Dir) -> io::Result<()> {
    let tgt = CString::new(target.fd_path().as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: valid C string naming the mount's root through its descriptor.
    if unsafe { libc::umount2(tgt.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One line of `/proc/self/mountinfo`: (mount point, device, fstype, source).
fn mountinfo() -> Vec<(PathBuf, u64, String, String)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mut l = left.split(' ');
            let (_, _, dev, _, point) = (l.next()?, l.next()?, l.next()?, l.next()?, l.next()?);
            let (major, minor) = dev.split_once(':')?;
            let device = libc::makedev(major.parse().ok()?, minor.parse().ok()?);
            let mut r = right.split(' ');
            let (fstype, source) = (r.next()?, r.next()?);
            Some((PathBuf::from(unescape(point)), device, fstype.to_string(), unescape(source)))
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok());
        match (b[i], octal) {
            (b'\\', Some(v)) => {
                out.push(v);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `/proc/self/mountinfo` has, at `point`, a mount made by this program: source
/// `snapvisor`, this fstype and device (the topmost mount there counts).
fn check_ours(point: &Path, fstype: &str, device: u64) -> Result<(), MediumError> {
    let not_ours = |problem| MediumError::NotOurs { mount: point.into(), problem };
    let info = mountinfo();
    let (_, dev, fs, source) = info.iter().rev().find(|m| m.0 == point).ok_or_else(|| not_ours("not mounted"))?;
    if fs != fstype {
        return Err(not_ours("another filesystem type"));
    }
    if source != SOURCE {
        return Err(not_ours("another mount source"));
    }
    if *dev != device {
        return Err(not_ours("another device"));
    }
    Ok(())
}

/// Reads and checks the record in `root` (opened without following links): `None` if
/// there is none.
fn read_record(root: &Dir) -> Result<Option<EmulationRecord>, MediumError> {
    let path = root.path.join(RECORD);
    let bytes = match read_regular(&root.fd_path().join(RECORD), 64 << 10) {
        Ok(bytes) => bytes,
        Err(crate::files::FileError::Missing(_)) => return Ok(None),
        Err(e) => return Err(MediumError::Record { path, problem: e.to_string() }),
    };
    let bad = |problem: &str| MediumError::Record { path: path.clone(), problem: problem.into() };
    let record: EmulationRecord = serde_json::from_slice(&bytes).map_err(|e| bad(&e.to_string()))?;
    if record.checksum() != record.crc64 {
        return Err(bad("checksum mismatch"));
    }
    if !matches!(record.fstype.as_str(), "hugetlbfs" | "tmpfs") || record.token.len() != 32 {
        return Err(bad("unknown filesystem type or token"));
    }
    if !record.token.bytes().all(|b| b.is_ascii_hexdigit()) || !record.mount.is_absolute() {
        return Err(bad("malformed token or relative mount point"));
    }
    Ok(Some(record))
}

/// The record of a live emulation in `root`, if there is a valid one.
pub fn emulation_record(root: &Path) -> Option<EmulationRecord> {
    Dir::open(root).ok().and_then(|dir| read_record(&dir).ok().flatten())
}

/// Sets up an emulated medium under `root` (see the module documentation): a mount at
/// `root/mnt` (hugetlbfs with `huge_pages` reserved, or tmpfs with huge pages), recorded
/// in `root/emulation.json`. Returns the absolute mount point and the medium.
pub fn setup_emulation(root: &Path, huge_pages: u64, kind: EmulatedKind) -> Result<(PathBuf, Medium), MediumError> {
    let root_dir = Dir::open(root)?;
    if let Some(record) = read_record(&root_dir)? {
        return Err(MediumError::Exists { root: root.into(), mount: record.mount });
    }
    match std::fs::create_dir(root_dir.fd_path().join(MOUNT_DIR)) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            return Err(io_err(&root.join(MOUNT_DIR), "create mount point")(e))
        }
        _ => {}
    }
    let mnt = root_dir.child(MOUNT_DIR)?;
    let point = mnt.absolute()?;
    if mnt.device()? != root_dir.device()? || mountinfo().iter().any(|m| m.0 == point) {
        return Err(MediumError::InUse(point));
    }
    let (fstype, medium, added) = mount_medium(&mnt, huge_pages, kind)?;
    let recorded = (|| {
        let mounted = root_dir.child(MOUNT_DIR)?;
        let device = mounted.device()?;
        check_ours(&point, fstype, device)?;
        let token: String = super::random_uuid().iter().map(|b| format!("{b:02x}")).collect();
        let mut record = EmulationRecord {
            mount: point.clone(),
            fstype: fstype.into(),
            hugepages_added: added,
            device,
            token,
            crc64: 0,
        };
        record.crc64 = record.checksum();
        let marker = mounted.fd_path().join(record.marker());
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&marker)
            .map_err(io_err(&point.join(record.marker()), "create marker"))?;
        let json = serde_json::to_vec_pretty(&record).expect("a record is plain data");
        write_atomic(&root_dir.fd_path().join(RECORD), |f| io::Write::write_all(f, &json))?;
        Ok::<_, MediumError>(mounted)
    })();
    match recorded {
        Ok(_) => Ok((point, medium)),
        Err(e) => {
            // Undo the mount this call made (the descriptor names it) and the pages.
            if let Ok(mounted) = root_dir.child(MOUNT_DIR) {
                let _ = unmount(&mounted);
            }
            let _ = release_hugepages(added);
            Err(e)
        }
    }
}

/// Mounts hugetlbfs (with the pages reserved) or tmpfs on `mnt`; returns the fstype, the
/// medium and the huge pages added.
fn mount_medium(mnt: &Dir, huge_pages: u64, kind: EmulatedKind) -> Result<(&'static str, Medium, u64), MediumError> {
    let tmpfs_huge = || mount("tmpfs", mnt, "huge=always,mode=0700").is_ok();
    match kind {
        EmulatedKind::TmpfsSmallPages => {}
        EmulatedKind::Tmpfs | EmulatedKind::Auto if tmpfs_huge() => {
            return Ok(("tmpfs", Medium::EmulatedTmpfs { huge: true }, 0))
        }
        EmulatedKind::Tmpfs => {}
        EmulatedKind::Hugetlbfs | EmulatedKind::Auto => {
            let free = meminfo("HugePages_Free");
            let needed = huge_pages.saturating_sub(free);
            let available_mib = meminfo("MemAvailable") / 1024;
            // Never ask the kernel for more than the memory available: it would take it all.
            let fits = needed.checked_mul(HUGE_PAGE >> 20).is_some_and(|mib| mib <= available_mib);
            let added = if fits { reserve_hugepages(needed).unwrap_or(0) } else { 0 };
            if fits
                && meminfo("HugePages_Free") >= huge_pages
                && mount("hugetlbfs", mnt, "pagesize=2M,mode=0700").is_ok()
            {
                return Ok(("hugetlbfs", Medium::EmulatedHugetlbfs, added));
            }
            let _ = release_hugepages(added);
            if kind == EmulatedKind::Hugetlbfs {
                return Err(MediumError::HugePages { needed: huge_pages, free, available_mib });
            }
        }
    }
    mount("tmpfs", mnt, "mode=0700")?;
    Ok(("tmpfs", Medium::EmulatedTmpfs { huge: false }, 0))
}

/// Undoes [`setup_emulation`] after checking that the record and the mount are ours (see
/// the module documentation): unmounts (discarding the pool) and gives back the huge pages.
/// Returns the record, with the pages really given back, or `None` if there was none.
pub fn teardown_emulation(root: &Path) -> Result<Option<EmulationRecord>, MediumError> {
    let root_dir = Dir::open(root)?;
    let Some(mut record) = read_record(&root_dir)? else { return Ok(None) };
    let record_path = root.join(RECORD);
    let expected = root_dir.absolute()?.join(MOUNT_DIR);
    if record.mount != expected {
        return Err(MediumError::Record {
            path: record_path,
            problem: format!("names {} instead of {}", record.mount.display(), expected.display()),
        });
    }
    let mounted = mountinfo().iter().any(|m| m.0 == record.mount);
    let mut released = 0;
    if mounted {
        check_ours(&record.mount, &record.fstype, record.device)?;
        let mnt = root_dir.child(MOUNT_DIR)?;
        if mnt.device()? != record.device {
            return Err(MediumError::NotOurs { mount: record.mount, problem: "another device" });
        }
        let marker = mnt.fd_path().join(record.marker());
        let is_marker = std::fs::symlink_metadata(&marker).is_ok_and(|m| m.file_type().is_file() && m.uid() == 0);
        if !is_marker {
            return Err(MediumError::NotOurs {
                mount: record.mount,
                problem: "no marker with the record's token and page count",
            });
        }
        unmount(&mnt).map_err(io_err(&record.mount, "unmount"))?;
        drop(mnt);
        released = release_hugepages(record.hugepages_added).map_err(io_err(Path::new(NR_HUGEPAGES), "write"))?;
    }
    // After a reboot the mount (and the pages) are gone already: only the record is left.
    let _ = std::fs::remove_dir(root_dir.fd_path().join(MOUNT_DIR));
    std::fs::remove_file(root_dir.fd_path().join(RECORD)).map_err(io_err(&record_path, "remove"))?;
    record.hugepages_added = released;
    Ok(Some(record))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_fields_are_unescaped() {
        assert_eq!(unescape("/a\\040b\\134c"), "/a b\\c");
        assert_eq!(unescape("/plain\\"), "/plain\\");
        assert!(mountinfo().iter().any(|m| m.0 == Path::new("/proc") && m.2 == "proc"));
    }
}
