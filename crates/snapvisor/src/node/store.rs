//! Named files in the data directory: the names the node accepts, atomic writes and
//! removals, and the sweep of what dead processes left half-done.
//!
//! Everything the node stores under a name (a registered image, a snapshot) appears or
//! disappears in one `rename`: a writer fills a hidden `.NAME.upload-PID` (snapshots:
//! `.NAME.partial-PID`, written by the VMM) and renames it into place; a removal renames
//! the target to `.NAME.deleting-PID` before deleting it. A process killed half-way
//! leaves only hidden entries with its process id, which [`sweep`] removes once that
//! process is gone.

use super::NodeError;
use snapvisor_vmm::files::FileError;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Longest name of a function, snapshot or pool id accepted from a request.
pub const MAX_NAME: usize = 64;

/// Suffixes of the temporary entries writers and removers leave while they work.
const TEMPORARY: [&str; 3] = [".partial", ".upload", ".deleting"];

/// Checks a name given by a user: 1..=64 characters of `A-Z a-z 0-9 . _ -`, not starting
/// with a dot (so it is one path component, never hidden, never `.` or `..`).
pub fn check_name(what: &str, name: &str) -> Result<(), NodeError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(NodeError::Invalid(format!(
            "{what} name {name:?} is not 1 to {MAX_NAME} characters of A-Z, a-z, 0-9, '.', '_', '-' (not starting with '.')"
        )))
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> NodeError + '_ {
    move |source| NodeError::File { path: path.to_path_buf(), source }
}

/// Writes `bytes` to `dir/name` atomically (the VMM's one atomic write: a hidden
/// temporary file, fsync, rename over any old file, fsync of the directory). A crash
/// leaves the old file or the new one.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), NodeError> {
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    snapvisor_vmm::files::write_atomic(&dir.join(name), |file| file.write_all(bytes)).map_err(|e| match e {
        // A failed write is the node's trouble (a full disk), not a bad request.
        FileError::Io { path, source, .. } => NodeError::File { path, source },
        other => NodeError::UserFile(other),
    })
}

/// Removes `dir/name` (a file or a directory) atomically: renamed to a hidden name first,
/// so it is gone from its name at once even if the deletion of its contents is cut short.
pub fn remove_atomic(dir: &Path, name: &str) -> Result<(), NodeError> {
    let target = dir.join(name);
    let doomed = dir.join(format!(".{name}.deleting-{}", std::process::id()));
    std::fs::rename(&target, &doomed).map_err(io_error(&target))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error(dir))?;
    let removed = if doomed.is_dir() { std::fs::remove_dir_all(&doomed) } else { std::fs::remove_file(&doomed) };
    removed.map_err(io_error(&doomed))
}

/// The process id of a temporary entry (`.NAME.partial-PID`, `.NAME.upload-PID`,
/// `.NAME.deleting-PID`), or `None` for any other name.
fn temporary_owner(file_name: &str) -> Option<u32> {
    let rest = file_name.strip_prefix('.')?;
    let (stem, pid) = rest.rsplit_once('-')?;
    let pid = pid.parse::<u32>().ok()?;
    TEMPORARY.iter().any(|suffix| stem.ends_with(suffix) && stem.len() > suffix.len()).then_some(pid)
}

/// Removes the temporary entries in `dir` whose process is no longer running; returns
/// what it removed. A missing directory has nothing to sweep.
pub fn sweep(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(temporary_owner) else { continue };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let path = entry.path();
        let gone = match entry.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
            _ => std::fs::remove_file(&path),
        };
        if gone.is_ok() {
            removed.push(path);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_single_visible_path_components() {
        for good in ["json", "my-fn_2.v1", &"a".repeat(MAX_NAME)] {
            assert!(check_name("function", good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", ".hidden", "a/b", "../x", "a b", "é", "a\n", &"a".repeat(MAX_NAME + 1)] {
            assert!(check_name("function", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_dead_processes_temporaries_are_swept() {
        let dir = std::env::temp_dir().join(format!("snapvisor-sweep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let me = std::process::id();
        let dead = [".a.partial-4294967295", ".b.upload-4294967294", ".c.deleting-4294967293"];
        let kept = [format!(".a.upload-{me}"), "json".into(), ".partial-1".into(), ".x.other-4294967295".into()];
        for name in dead {
            std::fs::create_dir(dir.join(name)).unwrap();
        }
        for name in &kept {
            std::fs::write(dir.join(name), b"x").unwrap();
        }
        let removed = sweep(&dir);
        assert_eq!(removed.len(), dead.len(), "{removed:?}");
        for name in &kept {
            assert!(dir.join(name).exists(), "{name} was swept");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn atomic_writes_replace_and_removals_leave_nothing() {
        let dir = std::env::temp_dir().join(format!("snapvisor-atomic-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        write_atomic(&dir, "f", b"one").unwrap();
        write_atomic(&dir, "f", b"two").unwrap();
        assert_eq!(std::fs::read(dir.join("f")).unwrap(), b"two");
        remove_atomic(&dir, "f").unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        assert!(matches!(remove_atomic(&dir, "f"), Err(NodeError::File { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
