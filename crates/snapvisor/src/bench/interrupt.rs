//! Stopping a benchmark cleanly on Ctrl-C or SIGTERM.
//!
//! The benchmark sets up an emulated medium (a mount) that its fixtures tear down when
//! they are dropped. A signal's default action would kill the process with the mount
//! left behind, so while a benchmark runs the first SIGINT or SIGTERM only raises a flag:
//! the next progress message returns [`super::BenchError::Interrupted`], the fixtures
//! unwind and undo what the run made. The handler is installed once-only
//! (`SA_RESETHAND`): a second signal kills as usual.

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Async-signal-safe: one atomic store.
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Installs the one-shot handlers for SIGINT and SIGTERM (best effort: without them a
/// signal kills the run, and the next run removes what it left).
pub fn install() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction is valid (empty mask, no flags); the handler only
        // stores to an atomic, which is async-signal-safe; the pointers passed live for
        // the call.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESETHAND;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// A signal arrived since [`install`].
pub fn requested() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}
