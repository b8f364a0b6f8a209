//! Issue 8 through the binary: the emulated pool's record holds absolute paths, so
//! `pool destroy` undoes it from any working directory. (Needs root: it mounts.)

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let is_root = unsafe { libc::geteuid() } == 0;
    if !is_root {
        let _ = writeln!(std::io::stderr(), "skipped: needs root ({test})");
    }
    is_root
}

struct Tmp(PathBuf);

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tmp(tag: &str) -> Tmp {
    let dir = std::env::temp_dir().join(format!("snapvisor-cli-hard-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Tmp(dir)
}

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
    if !root("the_default_pool_is_destroyed_from_any_directory") {
        return;
    }
    let (work, elsewhere) = (tmp("work"), tmp("elsewhere"));
    // Set up with a data directory relative to one working directory...
    let init = ok(snapvisor(&work.0, &["--data-dir", "data", "pool", "init", "--size-mib", "8", "--medium", "tmpfs"]));
    assert!(init.contains("emulated persistent memory"), "{init}");
    let mnt = work.0.join("data/pool/mnt").canonicalize().unwrap();
    let mounted = || std::fs::read_to_string("/proc/self/mountinfo").unwrap().contains(&*mnt.to_string_lossy());
    assert!(mounted());
    // ...and undone from another one.
    let data = work.0.join("data");
    let destroyed = ok(snapvisor(&elsewhere.0, &["--data-dir", data.to_str().unwrap(), "pool", "destroy"]));
    assert!(destroyed.contains("unmounted"), "{destroyed}");
    assert!(!mounted(), "still mounted after destroy");
    assert!(!data.join("pool/emulation.json").exists());
}
