//! Where the daemon listens: its Unix socket (mode 0600, never taken from a live daemon),
//! and the lock that makes it the only daemon of its data directory.
//!
//! Start-up order: lock `DATA_DIR/snapvisor.lock` (`flock`, released by the kernel when the
//! process dies, even by `kill -9`); then the socket path: a live daemon answering there is
//! an error, a socket nobody answers on is stale and removed, anything else is refused.
//! The new socket is bound in a private directory, set to 0600, and renamed into place, so
//! it is never reachable with looser permissions.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Why the daemon cannot listen.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// Another daemon holds the data directory.
    #[error("{}: another snapvisor daemon is running on this data directory", .0.display())]
    Locked(PathBuf),
    /// A daemon answers on the socket path.
    #[error("{}: a daemon is already listening on this socket", .0.display())]
    Live(PathBuf),
    /// Something that is not a socket is at the socket path.
    #[error("{}: exists and is not a socket; refusing to replace it", .0.display())]
    NotASocket(PathBuf),
    /// A system call failed.
    #[error("{}: {what}", .path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> ListenError {
    let path = path.to_path_buf();
    move |source| ListenError::Io { path, what, source }
}

/// The lock a daemon holds on its data directory for as long as it runs.
pub type DaemonLock = crate::node::data::FileLock;

/// Takes the data directory's daemon lock (fails at once if another process holds it).
pub fn lock(path: &Path) -> Result<DaemonLock, ListenError> {
    crate::node::data::try_lock(path).map_err(io(path, "lock"))?.ok_or_else(|| ListenError::Locked(path.to_path_buf()))
}

/// Removes a stale socket at `path`: only a socket, and only if nobody answers on it.
fn clear_stale(path: &Path) -> Result<(), ListenError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(path, "stat")(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(ListenError::NotASocket(path.to_path_buf()));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(ListenError::Live(path.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            tracing::info!(socket = %path.display(), "removing a stale socket nobody answers on");
            std::fs::remove_file(path).map_err(io(path, "remove stale socket"))
        }
        Err(e) => Err(io(path, "connect to the existing socket")(e)),
    }
}

/// Binds the daemon's Unix socket at `path` with mode 0600.
pub fn unix(path: &Path) -> Result<UnixListener, ListenError> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(io(&parent, "create directory"))?;
    clear_stale(path)?;
    let private = parent.join(format!(".snapvisor-sock.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::create_dir(&private).map_err(io(&private, "create directory"))?;
    let bound = (|| {
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).map_err(io(&private, "chmod"))?;
        let tmp = private.join("sock");
        let listener = UnixListener::bind(&tmp).map_err(io(&tmp, "bind"))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(io(&tmp, "chmod"))?;
        std::fs::rename(&tmp, path).map_err(io(path, "rename the socket into place"))?;
        Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&private);
    let listener = bound?;
    listener.set_nonblocking(true).map_err(io(path, "set non-blocking"))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_socket_is_kept_a_stale_one_replaced_and_a_file_refused() {
        let dir = std::env::temp_dir().join(format!("snapvisor-listen-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("s.sock");
        let live = unix(&sock).unwrap();
        let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(unix(&sock), Err(ListenError::Live(_))));
        drop(live);
        let again = unix(&sock).expect("a stale socket is replaced");
        drop(again);
        let file = dir.join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(unix(&file), Err(ListenError::NotASocket(_))));
        let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(leftovers.len(), 2, "{leftovers:?}");
        let lock_path = dir.join("lock");
        let held = lock(&lock_path).unwrap();
        assert!(matches!(lock(&lock_path), Err(ListenError::Locked(_))));
        drop(held);
        lock(&lock_path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
