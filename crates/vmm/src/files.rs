//! Files the VMM reads without trusting them, and files it replaces atomically.
//!
//! Reading: every snapshot file, working set, record or user-given file is opened with
//! `O_NONBLOCK | O_CLOEXEC` (and `O_NOFOLLOW` where the name is the VMM's own, inside a
//! snapshot or data directory), must be a regular file (a FIFO, a device, a socket or a
//! directory is refused before anything is read), and is read only up to a bound its format
//! allows: no open or read can block forever or run without end.
//!
//! Writing: [`write_atomic`] builds a file under a temporary name next to its target,
//! fsyncs it, renames it into place and fsyncs the directory, so a crash leaves the old file
//! or the new one. Snapshot directories use the same pieces ([`Partial`],
//! [`remove_stale_partials`], [`rename2`], [`sync_dir`]) for a whole directory. Writers of
//! one target in one process take turns ([`Partial::claim`]): they share its temporary name.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, PoisonError};

/// Why a file could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file does not exist.
    #[error("{}: missing", .0.display())]
    Missing(PathBuf),
    /// The name is a symbolic link where the VMM only accepts the file itself.
    #[error("{}: is a symbolic link; refusing to follow it", .0.display())]
    Symlink(PathBuf),
    /// Not a regular file (a FIFO, a device, a socket or a directory).
    #[error("{}: is a {kind}, not a regular file", .path.display())]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// Larger than its format allows.
    #[error("{}: {len} bytes, more than the {max} bytes allowed", .path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size (or a lower bound of it).
        len: u64,
        /// The bound.
        max: u64,
    },
    /// A system call failed.
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
}

/// An I/O error on `path` (a missing file becomes [`FileError::Missing`]).
pub fn io_err(path: &Path, what: &'static str) -> impl FnOnce(io::Error) -> FileError {
    let path = path.to_path_buf();
    move |source| match source.raw_os_error() {
        Some(libc::ENOENT) => FileError::Missing(path),
        _ => FileError::Io { path, what, source },
    }
}

fn kind(file_type: std::fs::FileType) -> &'static str {
    if file_type.is_fifo() {
        "named pipe (FIFO)"
    } else if file_type.is_char_device() {
        "character device"
    } else if file_type.is_block_device() {
        "block device"
    } else if file_type.is_socket() {
        "socket"
    } else if file_type.is_dir() {
        "directory"
    } else {
        "special file"
    }
}

fn open(path: &Path, follow: bool) -> Result<(File, u64), FileError> {
    let flags = libc::O_NONBLOCK | libc::O_CLOEXEC | if follow { 0 } else { libc::O_NOFOLLOW };
    let file = OpenOptions::new().read(true).custom_flags(flags).open(path).map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) && !follow {
            FileError::Symlink(path.to_path_buf())
        } else {
            io_err(path, "open")(e)
        }
    })?;
    let meta = file.metadata().map_err(io_err(path, "stat"))?;
    if !meta.file_type().is_file() {
        return Err(FileError::NotRegular { path: path.to_path_buf(), kind: kind(meta.file_type()) });
    }
    Ok((file, meta.len()))
}

/// Opens a file the VMM names itself (inside a snapshot or data directory): not through
/// a symbolic link, regular files only. Returns the file and its size.
pub fn open_regular(path: &Path) -> Result<(File, u64), FileError> {
    open(path, false)
}

/// Opens a file a user named (symbolic links followed): regular files only. Returns the
/// file and its size.
pub fn open_user_file(path: &Path) -> Result<(File, u64), FileError> {
    open(path, true)
}

fn read_bounded(mut file: File, len: u64, max: u64, path: &Path) -> Result<Vec<u8>, FileError> {
    if len > max {
        return Err(FileError::TooLarge { path: path.to_path_buf(), len, max });
    }
    let mut bytes = Vec::with_capacity(len as usize);
    // One byte more than allowed tells a file that grew since `fstat` from one that did not.
    file.by_ref().take(max + 1).read_to_end(&mut bytes).map_err(io_err(path, "read"))?;
    if bytes.len() as u64 > max {
        return Err(FileError::TooLarge { path: path.to_path_buf(), len: bytes.len() as u64, max });
    }
    Ok(bytes)
}

/// Reads a file the VMM names itself ([`open_regular`]) of at most `max` bytes.
pub fn read_regular(path: &Path, max: u64) -> Result<Vec<u8>, FileError> {
    let (file, len) = open_regular(path)?;
    read_bounded(file, len, max, path)
}

/// Reads a file a user named (a guest image, an input file) of at most `max` bytes:
/// symbolic links are followed, but a FIFO, a device or a directory is refused before
/// anything is read, and the read stops at `max` bytes.
pub fn read_user_file(path: &Path, max: u64) -> Result<Vec<u8>, FileError> {
    let (file, len) = open_user_file(path)?;
    read_bounded(file, len, max, path)
}

/// `parent/.NAME.partial-PID`: where this process builds `target` before publishing it.
pub fn partial_path(target: &Path) -> Result<PathBuf, FileError> {
    let name = target.file_name().ok_or_else(|| FileError::Io {
        path: target.to_path_buf(),
        what: "name a temporary file",
        source: io::Error::from(io::ErrorKind::InvalidInput),
    })?;
    Ok(parent_of(target).join(format!(".{}.partial-{}", name.to_string_lossy(), std::process::id())))
}

/// The temporary names threads of this process are building under now.
static BUILDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
/// Signalled whenever a name leaves [`BUILDING`].
static BUILT: Condvar = Condvar::new();

/// The right to build `target` under its temporary name ([`partial_path`]), held until
/// dropped: another thread of this process writing the same target (two requests to the
/// daemon for one name) waits for it instead of removing or renaming a half-built file.
/// Other processes have other names (the process id is in it).
#[derive(Debug)]
pub struct Partial {
    path: PathBuf,
    key: PathBuf,
}

impl Partial {
    /// Waits until no other thread of this process builds `target`, then claims its
    /// temporary name.
    pub fn claim(target: &Path) -> Result<Partial, FileError> {
        let path = partial_path(target)?;
        // One key however the directory is spelled (where it exists already).
        let key = std::fs::canonicalize(parent_of(&path))
            .map(|dir| dir.join(path.file_name().unwrap_or_default()))
            .unwrap_or_else(|_| path.clone());
        let mut building = BUILDING.lock().unwrap_or_else(PoisonError::into_inner);
        while building.contains(&key) {
            building = BUILT.wait(building).unwrap_or_else(PoisonError::into_inner);
        }
        building.push(key.clone());
        Ok(Partial { path, key })
    }

    /// The temporary name (`parent/.NAME.partial-PID`).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        let mut building = BUILDING.lock().unwrap_or_else(PoisonError::into_inner);
        building.retain(|k| k != &self.key);
        BUILT.notify_all();
    }
}

/// Whether `path` names a writer's temporary (`.NAME.partial-PID`, see [`partial_path`]).
pub fn is_partial(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else { return false };
    name.starts_with('.')
        && name
            .rsplit_once(".partial-")
            .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

/// The directory holding `path` (`.` for a bare name).
pub fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Removes temporary files and directories (`.NAME.partial-PID`) that writers of `name`
/// left in `parent` when they died.
pub fn remove_stale_partials(parent: &Path, name: &str) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    let prefix = format!(".{name}.partial-");
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name.to_str().and_then(|f| f.strip_prefix(&prefix)) else { continue };
        // Only a bare process id: `.a.partial-1.partial-7` belongs to `a.partial-1`.
        let Ok(pid) = pid.parse::<u32>() else { continue };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let path = entry.path();
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            let _ = if is_dir { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        }
    }
}

/// `renameat2(from, to, flags)` (`RENAME_NOREPLACE`, `RENAME_EXCHANGE` or 0).
pub fn rename2(from: &Path, to: &Path, flags: libc::c_uint) -> io::Result<()> {
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other);
    let (from, to) = (c(from)?, c(to)?);
    // SAFETY: valid C strings; renameat2 does not keep them.
    if unsafe { libc::renameat2(libc::AT_FDCWD, from.as_ptr(), libc::AT_FDCWD, to.as_ptr(), flags) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// fsyncs a directory, making the renames and creations in it durable.
pub fn sync_dir(dir: &Path) -> Result<(), FileError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir, "fsync directory"))
}

/// Replaces `path` atomically with a file that `write` fills: a temporary file next to it,
/// fsync, rename over `path` (a symbolic link there is replaced, not followed), fsync of
/// the directory. On any error the temporary file is removed and `path` is unchanged;
/// temporary files that dead writers left next to it are removed first. Two threads
/// writing one `path` take turns; the last one's file stays.
pub fn write_atomic(path: &Path, write: impl FnOnce(&mut File) -> io::Result<()>) -> Result<(), FileError> {
    let partial = Partial::claim(path)?;
    let tmp = partial.path();
    if let Some(name) = path.file_name() {
        remove_stale_partials(&parent_of(path), &name.to_string_lossy());
    }
    let create =
        || OpenOptions::new().write(true).create_new(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(tmp);
    let mut file = match create() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // Left by an earlier writer of this process that failed (none is writing now).
            std::fs::remove_file(tmp).map_err(io_err(tmp, "remove a stale temporary file"))?;
            create()
        }
        other => other,
    }
    .map_err(io_err(tmp, "create"))?;
    let result = write(&mut file)
        .map_err(io_err(tmp, "write"))
        .and_then(|()| file.sync_all().map_err(io_err(tmp, "fsync")))
        .and_then(|()| std::fs::rename(tmp, path).map_err(io_err(path, "rename into place")));
    if result.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    result?;
    sync_dir(&parent_of(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("snapvisor-files-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn special_files_are_refused_before_reading() {
        let dir = temp("special");
        let fifo = dir.join("fifo");
        let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // A FIFO with no writer would block a plain open or read forever.
        for result in [read_regular(&fifo, 100), read_user_file(&fifo, 100)] {
            assert!(matches!(result, Err(FileError::NotRegular { kind: "named pipe (FIFO)", .. })), "{result:?}");
        }
        assert!(matches!(read_user_file(Path::new("/dev/zero"), 100), Err(FileError::NotRegular { .. })));
        assert!(matches!(read_user_file(&dir, 100), Err(FileError::NotRegular { kind: "directory", .. })));
        assert!(matches!(read_user_file(&dir.join("nope"), 100), Err(FileError::Missing(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reads_are_bounded_and_links_are_not_followed_where_refused() {
        let dir = temp("bounded");
        let file = dir.join("f");
        std::fs::write(&file, b"0123456789").unwrap();
        assert_eq!(read_regular(&file, 10).unwrap(), b"0123456789");
        assert!(matches!(read_regular(&file, 9), Err(FileError::TooLarge { len: 10, max: 9, .. })));
        // A huge sparse file is refused from its size, without reading it.
        let sparse = dir.join("sparse");
        File::create(&sparse).unwrap().set_len(1 << 40).unwrap();
        assert!(matches!(read_user_file(&sparse, 1 << 20), Err(FileError::TooLarge { .. })));
        let link = dir.join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(matches!(read_regular(&link, 100), Err(FileError::Symlink(_))));
        assert_eq!(read_user_file(&link, 100).unwrap(), b"0123456789");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn atomic_writes_replace_or_leave_the_old_file() {
        let dir = temp("atomic");
        let path = dir.join("record");
        write_atomic(&path, |f| io::Write::write_all(f, b"one")).unwrap();
        let failed = write_atomic(&path, |f| {
            io::Write::write_all(f, b"half")?;
            Err(io::Error::other("disk full"))
        });
        assert!(matches!(failed, Err(FileError::Io { what: "write", .. })), "{failed:?}");
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        // A symbolic link at the target is replaced, its target untouched.
        let victim = dir.join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        write_atomic(&path, |f| io::Write::write_all(f, b"two")).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(names.len(), 2, "temporary files left: {names:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn threads_writing_one_file_take_turns() {
        let dir = temp("turns");
        let path = dir.join("record");
        // Each writer fills the file slowly with its own byte; interleaved writers sharing
        // the temporary name would publish a mix, or fail to rename a file another removed.
        std::thread::scope(|s| {
            for byte in [b'a', b'b', b'c', b'd'] {
                let path = &path;
                s.spawn(move || {
                    for _ in 0..20 {
                        write_atomic(path, |f| {
                            for _ in 0..16 {
                                io::Write::write_all(f, &[byte; 256])?;
                                std::thread::yield_now();
                            }
                            Ok(())
                        })
                        .unwrap();
                    }
                });
            }
        });
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 4096);
        assert!(bytes.iter().all(|&b| b == bytes[0]), "writers interleaved");
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(names.len(), 1, "temporary files left: {names:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_dead_writers_partials_of_this_name_are_removed() {
        let parent = temp("partials");
        let me = std::process::id();
        assert!(is_partial(&parent.join(".a.partial-42")) && is_partial(&partial_path(&parent.join("b")).unwrap()));
        assert!(!is_partial(&parent.join("a.partial-42")) && !is_partial(&parent.join(".a.partial-x")));
        let dead = parent.join(".a.partial-4294967295");
        let dead_file = parent.join(".a.partial-4294967294");
        let live = parent.join(format!(".a.partial-{me}"));
        let other_name = parent.join(format!(".a.partial-1.partial-{me}"));
        for d in [&dead, &live, &other_name] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(&dead_file, b"x").unwrap();
        remove_stale_partials(&parent, "a");
        assert!(!dead.exists() && !dead_file.exists());
        assert!(live.exists(), "a running writer's directory was removed");
        assert!(other_name.exists(), "snapshot `a.partial-1`'s writer was taken for one of `a`");
        std::fs::remove_dir_all(&parent).unwrap();
    }
}
