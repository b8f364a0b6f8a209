//! Helpers shared by the CLI tests: the binary in a data directory, outcome checks,
//! temporary directories, and the visible skip lines.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn kvm(test: &str) -> bool {
    let present = Path::new("/dev/kvm").exists();
    if !present {
        let _ = writeln!(std::io::stderr(), "skipped: no /dev/kvm ({test})");
    }
    present
}

pub fn root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let is_root = unsafe { libc::geteuid() } == 0;
    if !is_root {
        let _ = writeln!(std::io::stderr(), "skipped: needs root ({test})");
    }
    is_root
}

pub struct Tmp(pub PathBuf);

impl Tmp {
    pub fn new(parent: &Path, tag: &str) -> Self {
        let dir = parent.join(format!("snapvisor-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Tmp(dir)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn snapvisor(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_snapvisor"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .output()
        .expect("run snapvisor")
}

pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn fails(out: Output) -> String {
    assert!(!out.status.success(), "succeeded unexpectedly: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8(out.stderr).unwrap()
}

pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}
