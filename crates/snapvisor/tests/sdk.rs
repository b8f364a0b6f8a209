//! The guest SDK from outside this repository: the template function (`guest/template`)
//! is copied to a temporary directory, built there with cargo against the in-repo SDK
//! (path dependencies), and run through the CLI as a user's own image: `run --image`,
//! `snapshot --image`, `record`, and `invoke` with every strategy (`pass` through
//! `pool init` + `pool import` in a temporary data directory, as root, then `pool destroy`).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use support::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

/// Copies the template to `dir`, points it at this repository's SDK, and builds it; the
/// path of the guest image.
fn build_template(dir: &Path) -> PathBuf {
    let template = repo().join("guest/template");
    let guest = repo().join("guest");
    std::fs::create_dir_all(dir.join("src")).expect("mkdir");
    for file in ["build.rs", "src/main.rs"] {
        std::fs::copy(template.join(file), dir.join(file)).expect("copy the template");
    }
    let manifest = std::fs::read_to_string(template.join("Cargo.toml")).expect("template manifest");
    let manifest = manifest
        .replace(r#"path = "../sdk""#, &format!("path = {:?}", guest.join("sdk")))
        .replace(r#"path = "../sdk-build""#, &format!("path = {:?}", guest.join("sdk-build")));
    assert!(manifest.contains(guest.join("sdk-build").to_str().unwrap()), "the template's SDK paths changed");
    std::fs::write(dir.join("Cargo.toml"), manifest).expect("write manifest");
    // The guest workspace's lock pins the same dependency versions the repository builds with.
    std::fs::copy(guest.join("Cargo.lock"), dir.join("Cargo.lock")).expect("copy Cargo.lock");

    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sdk-template");
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo.current_dir(dir).args(["build", "--release"]).arg("--target-dir").arg(&target);
    // This test's own cargo settings (flags, target directory, profile) are not the template's.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        let network = ["CARGO_HOME", "CARGO_NET_", "CARGO_HTTP_", "CARGO_REGISTR"].iter().any(|k| key.starts_with(k));
        if (key.starts_with("CARGO_") && !network) || key.starts_with("RUSTC_") || key.contains("RUSTFLAGS") {
            cargo.env_remove(key);
        }
    }
    let out = cargo.output().expect("run cargo");
    assert!(out.status.success(), "building the template failed:\n{}", String::from_utf8_lossy(&out.stderr));
    target.join("release/my-function")
}

/// The template's answer: the first line `invoke` and `run` print for one VM.
fn answer(stdout: &str) -> serde_json::Value {
    let line = stdout.lines().find(|l| l.starts_with('{')).unwrap_or_else(|| panic!("no response in {stdout}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

const TEXT: &str = "a snapshot of the function memory\nrestored at start";

fn check(response: &serde_json::Value, what: &str) {
    // Every VM starts from the snapshot's state: its first invocation is number 1.
    let want = serde_json::json!({"lines": 2, "words": 9, "known": 7, "bytes": TEXT.len(), "invocation": 1});
    assert_eq!(*response, want, "{what}");
}

#[test]
fn an_out_of_tree_function_runs_snapshots_and_restores_with_every_strategy() {
    let test = "an_out_of_tree_function_runs_snapshots_and_restores_with_every_strategy";
    let work = Tmp::new(&std::env::temp_dir(), "sdk-template");
    let elf = build_template(&work.0.join("my-function"));
    if !kvm(test) {
        return;
    }
    let data = work.0.join("data");
    std::fs::create_dir_all(&data).expect("data directory");
    let image = elf.to_str().expect("UTF-8 path");

    let run = ok(snapvisor(&data, &["run", "--image", image, "--input", TEXT]));
    check(&answer(&run), "run");
    assert!(run.contains("[guest] init: 10 words"), "the guest's console line is shown: {run}");
    let failed = snapvisor(&data, &["run", "--image", image, "--input", ""]);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success() && stderr.contains("empty request: send some text"), "{stderr}");

    let snap = data.join("my-function");
    let s = snap.to_str().expect("UTF-8 path");
    ok(snapvisor(&data, &["snapshot", "--image", image, "--out", s]));
    // Working sets recorded with one input, measured with another.
    ok(snapvisor(&data, &["record", "--snapshot", s, "--input", "recording with other words"]));
    for strategy in ["lazy", "uffd", "reap", "faasnap", "cached"] {
        let out = ok(snapvisor(&data, &["invoke", "--snapshot", s, "--strategy", strategy, "--input", TEXT]));
        check(&answer(&out), strategy);
    }

    if !root(test) {
        return;
    }
    ok(snapvisor(&data, &["pool", "init", "--size-mib", "64", "--cow-mib", "64"]));
    let result = std::panic::catch_unwind(|| {
        ok(snapvisor(&data, &["pool", "import", s]));
        let out = ok(snapvisor(&data, &["invoke", "--strategy", "pass", "--snapshot", "my-function", "--input", TEXT]));
        check(&answer(&out), "pass");
    });
    let destroyed = ok(snapvisor(&data, &["pool", "destroy"]));
    assert!(destroyed.contains("unmounted"), "{destroyed}");
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
