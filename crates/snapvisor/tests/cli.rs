//! The command line, run as a separate process: answers verified against the host's
//! computation, non-zero exits with clear messages for every failure, snapshots that
//! survive being killed half-way, and pool imports that survive a crash at any point.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::*;

/// The hostile guest's ELF, written into the test's own directory `dir` (tests run in
/// parallel: a path shared by two of them was rewritten by one while the other read it).
fn hostile_image(dir: &Path) -> PathBuf {
    let path = dir.join("hostile.elf");
    std::fs::write(&path, snapvisor_guest_images::get("hostile").unwrap().elf).unwrap();
    path
}

#[test]
fn run_prints_verified_answers_and_timings() {
    if !kvm("run_prints_verified_answers_and_timings") {
        return;
    }
    let tmp = Tmp::new(&std::env::temp_dir(), "run");
    // All twelve functions, each with its eight inputs and their sizes.
    let list = json(&ok(snapvisor(&tmp.0, &["functions", "--json"])));
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 12, "{list:?}");
    for f in list {
        let names: Vec<&str> = f["inputs"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["A", "B", "1", "2", "3", "4", "5", "6"], "{f}");
        assert!(f["inputs"].as_array().unwrap().iter().all(|i| i["bytes"].as_u64().is_some()), "{f}");
    }
    let text = ok(snapvisor(&tmp.0, &["functions"]));
    assert!(text.contains("recognition") && text.contains("read-list") && text.contains("MB"), "{text}");
    // Input names pick the built-in inputs; B by default.
    for (f, input) in [("json", "A"), ("pyaes", "3"), ("image", "A")] {
        let report = json(&ok(snapvisor(&tmp.0, &["run", "--function", f, "--input", input, "--json"])));
        assert_eq!(report["digest"], native_digest_of(f, input), "{f} {input}");
        assert_eq!(report["input"], input);
        assert_eq!(report["response"]["digest"], report["digest"]);
        for key in ["vm_create_ms", "load_ms", "init_ms", "invoke_ms"] {
            assert!(report[key].as_f64().is_some_and(|v| v > 0.0), "{key} in {report}");
        }
    }
    let text = ok(snapvisor(&tmp.0, &["run", "--function", "json"]));
    assert!(text.contains("VM create") && text.contains("(B)") && text.contains(&native_digest("json")), "{text}");
    // A request from a file: input 1 of json is the same document as input A.
    let file = tmp.0.join("doc.json");
    std::fs::write(&file, snapvisor_functions::input("json", "A").unwrap()).unwrap();
    let report =
        json(&ok(snapvisor(&tmp.0, &["run", "--function", "json", "--input-file", file.to_str().unwrap(), "--json"])));
    assert_eq!(report["digest"], native_digest_of("json", "A"));
}

#[test]
fn failures_exit_non_zero_with_a_clear_message() {
    if !kvm("failures_exit_non_zero_with_a_clear_message") {
        return;
    }
    let tmp = Tmp::new(&std::env::temp_dir(), "fail");
    let image = hostile_image(&tmp.0);
    let img = image.to_str().unwrap();
    for (input, expect) in [
        ("panic", "hostile guest panics on purpose"),
        ("null", "#PF page fault"),
        ("respond-too-long", "response length"),
        ("unknown-port", "#GP"),
    ] {
        let err = fails(snapvisor(&tmp.0, &["run", "--image", img, "--input", input]));
        assert!(err.contains(expect), "{input}: {err}");
    }
    let err = fails(snapvisor(&tmp.0, &["run", "--image", img, "--input", "loop", "--timeout-ms", "300"]));
    assert!(err.contains("did not answer within 300ms"), "{err}");
    let err = fails(snapvisor(&tmp.0, &["run", "--image", "/bin/ls"]));
    assert!(err.contains("invalid guest image"), "{err}");
    let err = fails(snapvisor(&tmp.0, &["run", "--function", "nope"]));
    assert!(err.contains("no function `nope`"), "{err}");
    let err = fails(snapvisor(&tmp.0, &["run", "--function", "json", "--mem-mib", "3"]));
    assert!(err.contains("memory size"), "{err}");
    // A malformed request, an input name that does not exist, an oversized request.
    let err = fails(snapvisor(&tmp.0, &["run", "--function", "json", "--input-text", "{\"unterminated\":"]));
    assert!(err.contains("function reported an error"), "{err}");
    let err = fails(snapvisor(&tmp.0, &["run", "--function", "json", "--input", "7"]));
    assert!(err.contains("json has no input `7`"), "{err}");
    let big = tmp.0.join("big");
    std::fs::write(&big, vec![b' '; (12 << 20) + 1]).unwrap();
    let err = fails(snapvisor(&tmp.0, &["run", "--function", "json", "--input-file", big.to_str().unwrap()]));
    assert!(err.contains("does not fit the mailbox"), "{err}");
    let err = fails(snapvisor(&tmp.0, &["run", "--function", "mmap", "--mem-mib", "256"]));
    assert!(err.contains("needs 1024 MiB"), "{err}");
    // A second benchmark on a data directory whose benchmark runs stops before it touches
    // anything (fixtures, pool and medium are the first run's).
    let held = snapvisor::node::data::try_lock(&tmp.0.join("bench.lock")).unwrap().expect("free");
    let err = fails(snapvisor(&tmp.0, &["bench", "--quick", "--out", tmp.0.join("out").to_str().unwrap()]));
    assert!(err.contains("another `snapvisor bench` is running"), "{err}");
    assert!(!tmp.0.join("out").exists() && !tmp.0.join("bench-pool").exists());
    drop(held);
    let _ = std::fs::remove_file(image);
}

#[test]
fn snapshots_restore_in_another_process_with_every_strategy() {
    if !kvm("snapshots_restore_in_another_process_with_every_strategy") {
        return;
    }
    let tmp = Tmp::new(&std::env::temp_dir(), "invoke");
    let snap = tmp.0.join("snap-json");
    let s = snap.to_str().unwrap();
    ok(snapvisor(&tmp.0, &["snapshot", "--function", "json", "--out", s]));
    let expected = native_digest("json");
    for strategy in ["lazy", "uffd", "cached"] {
        for extra in [&[][..], &["--cold"][..]] {
            let mut args = vec!["invoke", "--snapshot", s, "--strategy", strategy, "--json"];
            args.extend_from_slice(extra);
            let report = json(&ok(snapvisor(&tmp.0, &args)));
            let vm = &report["vms"][0];
            assert_eq!(vm["digest"], expected, "{strategy} {extra:?}");
            for key in
                ["restore_ms", "invoke_ms", "total_ms", "host_faults", "uffd_faults", "private_mib", "shared_mib"]
            {
                assert!(vm.get(key).is_some(), "{key} missing in {vm}");
            }
        }
    }
    let report = json(&ok(snapvisor(
        &tmp.0,
        &["invoke", "--snapshot", s, "--strategy", "uffd", "--concurrency", "4", "--json"],
    )));
    let vms = report["vms"].as_array().unwrap();
    assert_eq!(vms.len(), 4);
    assert!(vms.iter().all(|vm| vm["digest"] == expected && vm["uffd_faults"].as_u64().unwrap() > 0));
    assert!(report["p50_ms"].as_f64().unwrap() > 0.0 && report["total_mib"].as_f64().unwrap() > 0.0);

    let err = fails(snapvisor(&tmp.0, &["invoke", "--snapshot", s, "--strategy", "reap"]));
    assert!(err.contains("no working set recorded for `reap`"), "{err}");
    let out = ok(snapvisor(&tmp.0, &["record", "--snapshot", s]));
    assert!(out.contains("recorded the working sets of json with input A"), "{out}");
    for strategy in ["reap", "faasnap"] {
        let report =
            json(&ok(snapvisor(&tmp.0, &["invoke", "--snapshot", s, "--strategy", strategy, "--cold", "--json"])));
        assert_eq!(report["vms"][0]["digest"], expected, "{strategy}");
        assert_eq!((report["input"].as_str(), report["recorded_with"].as_str()), (Some("B"), Some("A")), "{report}");
    }
    let text = ok(snapvisor(&tmp.0, &["invoke", "--snapshot", s, "--strategy", "reap"]));
    assert!(text.contains("json input B (working sets recorded with A) via reap"), "{text}");
    let err = fails(snapvisor(&tmp.0, &["invoke", "--snapshot", s, "--strategy", "mmap"]));
    assert!(err.contains("unknown restore strategy `mmap`"), "{err}");
    let err = fails(snapvisor(&tmp.0, &["invoke", "--snapshot", s, "--strategy", "uffd", "--uffd-chunk-kib", "3"]));
    assert!(err.contains("power of two"), "{err}");

    // A damaged snapshot: the error names the file.
    let state = snap.join("vmstate.bin");
    let mut bytes = std::fs::read(&state).unwrap();
    bytes[200] ^= 1;
    std::fs::write(&state, bytes).unwrap();
    let err = fails(snapvisor(&tmp.0, &["invoke", "--snapshot", s, "--strategy", "lazy"]));
    assert!(err.contains("vmstate.bin") && err.contains("checksum"), "{err}");
}

#[test]
fn a_snapshot_killed_half_way_leaves_nothing_restore_accepts() {
    if !kvm("a_snapshot_killed_half_way_leaves_nothing_restore_accepts") {
        return;
    }
    let tmp = Tmp::new(&std::env::temp_dir(), "kill-snap");
    let snap = tmp.0.join("snap");
    let s = snap.to_str().unwrap();
    // How long a whole snapshot takes here; kills then land at fractions of it. read-list
    // has the largest snapshot (its list fills three quarters of the guest's memory).
    let start = std::time::Instant::now();
    ok(snapvisor(&tmp.0, &["snapshot", "--function", "read-list", "--mem-mib", "256", "--out", s]));
    let full = start.elapsed();
    let mut killed_while_writing = 0;
    let fractions = [0.05, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95];
    for (attempt, fraction) in fractions.iter().cycle().enumerate().take(40) {
        if attempt >= fractions.len() && killed_while_writing > 0 {
            break;
        }
        let _ = std::fs::remove_dir_all(&snap);
        let mut child = Command::new(env!("CARGO_BIN_EXE_snapvisor"))
            .args([
                "--data-dir",
                tmp.0.to_str().unwrap(),
                "snapshot",
                "--function",
                "read-list",
                "--mem-mib",
                "256",
                "--out",
                s,
            ])
            .spawn()
            .unwrap();
        std::thread::sleep(full.mul_f64(*fraction));
        let _ = child.kill();
        let status = child.wait().unwrap();
        if status.success() || snap.exists() {
            // Finished before the kill (or killed after the snapshot was renamed into
            // place, while the VM was torn down): a complete snapshot.
            ok(snapvisor(&tmp.0, &["invoke", "--snapshot", s, "--strategy", "lazy"]));
            continue;
        }
        // Killed while writing: the target does not exist, and any temporary directory is refused.
        for entry in std::fs::read_dir(&tmp.0).unwrap().flatten() {
            let path = entry.path();
            if entry.file_name().to_string_lossy().contains(".partial-") {
                killed_while_writing += 1;
                let err =
                    fails(snapvisor(&tmp.0, &["invoke", "--snapshot", path.to_str().unwrap(), "--strategy", "lazy"]));
                assert!(err.contains("still being written"), "{err}");
            }
        }
    }
    assert!(killed_while_writing > 0, "no kill landed while the snapshot was being written");
    // The next snapshot succeeds and clears what killed writers left.
    ok(snapvisor(&tmp.0, &["snapshot", "--function", "json", "--out", s, "--force"]));
    let leftovers: Vec<_> = std::fs::read_dir(&tmp.0)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// `snapvisor pool import SNAP --id ID --pool POOL`, not yet started.
fn import_command(data: &Path, snap: &Path, id: &str, pool: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_snapvisor"));
    cmd.arg("--data-dir").arg(data).args(["pool", "import"]).arg(snap).args(["--id", id, "--pool", pool]);
    cmd
}

fn pool_ids(data: &Path, pool: &str) -> Vec<String> {
    let info = json(&ok(snapvisor(data, &["pool", "ls", "--pool", pool, "--json"])));
    info["snapshots"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect()
}

#[test]
fn a_pool_import_killed_at_any_point_leaves_the_old_or_the_new_state() {
    if !kvm("a_pool_import_killed_at_any_point_leaves_the_old_or_the_new_state") {
        return;
    }
    let tmp = Tmp::new(&std::env::temp_dir(), "kill-import");
    let shm = Tmp::new(Path::new("/dev/shm"), "kill-import-pool");
    let snap = tmp.0.join("json");
    ok(snapvisor(&tmp.0, &["snapshot", "--function", "json", "--out", snap.to_str().unwrap()]));
    let pool_path = shm.0.join("pool");
    let pool = pool_path.to_str().unwrap();
    ok(snapvisor(&tmp.0, &["pool", "init", "--pool", pool, "--size-mib", "128"]));
    ok(snapvisor(&tmp.0, &["pool", "import", snap.to_str().unwrap(), "--id", "base", "--pool", pool]));

    // Deterministic crash points: after the data, after the new slot, after the commit.
    for (point, committed) in [("import:data", false), ("import:slot", false), ("import:commit", true)] {
        let id = point.replace(':', "-");
        let out = import_command(&tmp.0, &snap, &id, pool).env("SNAPVISOR_CRASH_AT", point).output().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{point}: the import was not killed");
        let fsck = ok(snapvisor(&tmp.0, &["pool", "fsck", "--pool", pool, "--deep"]));
        assert!(fsck.contains(": clean"), "{point}: {fsck}");
        let ids = pool_ids(&tmp.0, pool);
        assert!(ids.contains(&"base".to_string()), "{point}: lost the old state: {ids:?}");
        assert_eq!(ids.contains(&id), committed, "{point}: {ids:?}");
    }
    // Kills at arbitrary moments.
    for (i, delay_us) in [200u64, 1_000, 3_000, 8_000, 15_000].into_iter().enumerate() {
        let id = format!("random-{i}");
        let mut child = import_command(&tmp.0, &snap, &id, pool).spawn().unwrap();
        std::thread::sleep(Duration::from_micros(delay_us));
        let _ = child.kill();
        let finished = child.wait().unwrap().success();
        let fsck = ok(snapvisor(&tmp.0, &["pool", "fsck", "--pool", pool, "--deep"]));
        assert!(fsck.contains(": clean"), "{fsck}");
        let ids = pool_ids(&tmp.0, pool);
        if finished {
            assert!(ids.contains(&id));
        }
        if ids.contains(&id) {
            let report = json(&ok(snapvisor(
                &tmp.0,
                &["invoke", "--strategy", "pass", "--snapshot", &id, "--pool", pool, "--json"],
            )));
            assert_eq!(report["vms"][0]["digest"], native_digest("json"));
        }
    }
}

#[test]
fn the_default_pool_is_set_up_used_and_destroyed_from_the_cli() {
    if !kvm("the_default_pool_is_set_up_used_and_destroyed_from_the_cli")
        || !root("the_default_pool_is_set_up_used_and_destroyed_from_the_cli")
    {
        return;
    }
    let tmp = Tmp::new(&std::env::temp_dir(), "default-pool");
    let snap = tmp.0.join("snapshots").join("json");
    ok(snapvisor(&tmp.0, &["snapshot", "--function", "json"]));
    assert!(snap.join("manifest.json").exists());
    let init = ok(snapvisor(&tmp.0, &["pool", "init", "--size-mib", "64", "--cow-mib", "64"]));
    assert!(init.contains("emulated persistent memory"), "{init}");
    let result = std::panic::catch_unwind(|| {
        ok(snapvisor(&tmp.0, &["pool", "import", snap.to_str().unwrap()]));
        let report = json(&ok(snapvisor(
            &tmp.0,
            &["invoke", "--strategy", "pass", "--snapshot", "json", "--concurrency", "2", "--json"],
        )));
        assert!(report["vms"].as_array().unwrap().iter().all(|vm| vm["digest"] == native_digest("json")));
        assert!(report["medium"].as_str().unwrap().starts_with("pool-"), "{report}");
        let err = fails(snapvisor(&tmp.0, &["invoke", "--strategy", "pass", "--snapshot", "nope"]));
        assert!(err.contains("no snapshot `nope`"), "{err}");
        ok(snapvisor(&tmp.0, &["pool", "rm", "json"]));
        assert!(pool_ids(&tmp.0, tmp.0.join("pool/mnt/snapvisor.pool").to_str().unwrap()).is_empty());
        assert!(ok(snapvisor(&tmp.0, &["pool", "fsck"])).contains(": clean"));
    });
    let destroyed = ok(snapvisor(&tmp.0, &["pool", "destroy"]));
    assert!(destroyed.contains("unmounted"), "{destroyed}");
    assert!(!tmp.0.join("pool/mnt/snapvisor.pool").exists());
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn guest_text_reaches_the_terminal_escaped() {
    if !kvm("guest_text_reaches_the_terminal_escaped") {
        return;
    }
    let tmp = Tmp::new(&std::env::temp_dir(), "escape");
    let image = hostile_image(&tmp.0);
    let img = image.to_str().unwrap();
    // OSC 52 (clipboard write), a title change, a forged error line, a bidi override.
    let text = "\u{1b}]52;c;aGk=\u{7}\u{1b}]0;pwned\u{7}\r\nerror: forged\u{202e}";
    let escaped = r"\x1b]52;c;aGk=\x07\x1b]0;pwned\x07\r\nerror: forged\u{202e}";
    let clean = |out: &str| {
        assert!(!out.contains('\u{1b}') && !out.contains('\u{7}') && !out.contains('\r'), "{out:?}");
        assert!(!out.lines().any(|l| l.starts_with("error: forged")), "{out}");
        assert!(out.contains(escaped), "{out}");
    };
    // The console line and the response, and the console line in the log (-v).
    let out = ok(snapvisor(&tmp.0, &["run", "--image", img, "--input", &format!("say:{text}")]));
    assert!(out.contains(&format!("[guest] {escaped}")), "{out}");
    clean(&out);
    let out = snapvisor(&tmp.0, &["-v", "run", "--image", img, "--input", &format!("say:{text}")]);
    clean(&String::from_utf8(out.stderr).unwrap());
    // The abort message, in the error.
    clean(&fails(snapvisor(&tmp.0, &["run", "--image", img, "--input", &format!("die:{text}")])));
    // In JSON the encoder escapes it, and the text survives exactly.
    let report = json(&ok(snapvisor(&tmp.0, &["run", "--image", img, "--input", &format!("say:{text}"), "--json"])));
    assert_eq!(report["response"], text);
    let _ = std::fs::remove_file(image);
}
