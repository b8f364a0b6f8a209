//! Issue 8 through the binary: the emulated pool's record holds absolute paths, so
//! `pool destroy` undoes it from any working directory. (Needs root: it mounts.)

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};

fn snapvisor(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_snapvisor")).current_dir(cwd).args(args).output().expect("run snapvisor")
}

fn ok(out: Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "failed: {}\n{text}", String::from_utf8_lossy(&out.stderr));
    text
}

#[test]
fn the_default_pool_is_destroyed_from_any_directory() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        let _ = writeln!(std::io::stderr(), "skipped: needs root (the_default_pool_is_destroyed_from_any_directory)");
        return;
    }
    let base = std::env::temp_dir().join(format!("snapvisor-cli-cwd-{}", std::process::id()));
    let (work, elsewhere) = (base.join("work"), base.join("elsewhere"));
    for dir in [&work, &elsewhere] {
        std::fs::create_dir_all(dir).unwrap();
    }
    // Set up with a data directory relative to one working directory...
    let init = ok(snapvisor(&work, &["--data-dir", "data", "pool", "init", "--size-mib", "8", "--medium", "tmpfs"]));
    assert!(init.contains("emulated persistent memory"), "{init}");
    let mnt = work.join("data/pool/mnt").canonicalize().unwrap();
    let mounted = || std::fs::read_to_string("/proc/self/mountinfo").unwrap().contains(&*mnt.to_string_lossy());
    assert!(mounted());
    // ...and undone from another one.
    let data = work.join("data");
    let destroyed = ok(snapvisor(&elsewhere, &["--data-dir", data.to_str().unwrap(), "pool", "destroy"]));
    assert!(destroyed.contains("unmounted"), "{destroyed}");
    assert!(!mounted(), "still mounted after destroy");
    assert!(!data.join("pool/emulation.json").exists());
    std::fs::remove_dir_all(&base).unwrap();
}
