//! Snapshots and SnapStart: restored VMs answer exactly like fresh ones with every
//! filesystem strategy, concurrently too; damaged snapshots are refused with typed errors
//! that name the file.

mod common;

use common::*;
use snapvisor_vmm::restore::{record, restore, strategy, SnapshotSource, Strategy, Uffd};
use snapvisor_vmm::snapshot::working_set::{WorkingSet, WorkingSetKind};
use snapvisor_vmm::snapshot::{Snapshot, SnapshotError};
use std::path::{Path, PathBuf};

const FILE_STRATEGIES: [Strategy; 5] =
    [Strategy::Lazy, Strategy::Uffd, Strategy::Reap, Strategy::Faasnap, Strategy::Cached];

fn restore_and_invoke(
    hv: &snapvisor_vmm::Hypervisor,
    dir: &Path,
    s: &dyn snapvisor_vmm::restore::MemoryStrategy,
    req: &str,
) -> String {
    let mut vm = restore(hv, &SnapshotSource::Dir(dir.to_path_buf()), s).expect("restore");
    let inv = vm.vm.invoke(req.as_bytes(), TIMEOUT).expect("invoke");
    digest(&inv.response)
}

#[test]
fn restored_vms_answer_like_fresh_ones_with_every_strategy() {
    let Some(hv) = hypervisor("restored_vms_answer_like_fresh_ones_with_every_strategy") else { return };
    let tmp = TempDir::new("restore");
    for info in sample_functions() {
        let dir = tmp.path().join(info.name);
        let manifest = take_snapshot(&hv, info.name, &dir);
        assert_eq!(manifest.function, info.name);
        assert!(manifest.memory.data_pages > 0 && !manifest.memory.zero_ranges.is_empty());
        let expected = native_digest(info.name, request(info.name));
        // The prefetching strategies need their working sets first.
        for s in [Strategy::Reap, Strategy::Faasnap] {
            assert!(matches!(
                restore(&hv, &SnapshotSource::Dir(dir.clone()), strategy(s).as_ref()),
                Err(snapvisor_vmm::Error::Restore(snapvisor_vmm::restore::RestoreError::NoWorkingSet { .. }))
            ));
        }
        let recorded = record(&hv, &dir, request(info.name).as_bytes(), "B", TIMEOUT).expect("record");
        assert!(recorded.reap_pages > 0 && recorded.faasnap_pages > 0, "{recorded:?}");
        for response in &recorded.responses {
            assert_eq!(digest(response), expected);
        }
        for s in FILE_STRATEGIES {
            assert_eq!(
                restore_and_invoke(&hv, &dir, strategy(s).as_ref(), request(info.name)),
                expected,
                "{} {s}",
                info.name
            );
        }
        // userfaultfd with 2 MiB chunks gives the same answer.
        assert_eq!(
            restore_and_invoke(&hv, &dir, &Uffd::new(2 << 20), request(info.name)),
            expected,
            "{} uffd 2M",
            info.name
        );
    }
}

#[test]
fn the_memory_image_is_sparse_and_matches_its_digest() {
    let Some(hv) = hypervisor("the_memory_image_is_sparse_and_matches_its_digest") else { return };
    let tmp = TempDir::new("sparse");
    let dir = tmp.path().join("json");
    let manifest = take_snapshot(&hv, "json", &dir);
    let snapshot = Snapshot::open(&dir).expect("open");
    snapshot.verify_memory().expect("digest");
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir.join("memory.img")).unwrap();
    assert_eq!(meta.len(), MEM);
    // Zero pages are holes: the file allocates about its data pages, not its size.
    assert!(meta.blocks() * 512 < MEM / 4, "{} bytes allocated", meta.blocks() * 512);
    assert!(manifest.memory.data_pages * 4096 <= meta.blocks() * 512 + (1 << 20));
}

#[test]
fn damaged_working_sets_are_refused() {
    let Some(hv) = hypervisor("damaged_working_sets_are_refused") else { return };
    let tmp = TempDir::new("ws");
    let dir = tmp.path().join("json");
    take_snapshot(&hv, "json", &dir);
    record(&hv, &dir, request("json").as_bytes(), "B", TIMEOUT).expect("record");
    let snapshot = Snapshot::open(&dir).unwrap();
    for kind in [WorkingSetKind::Reap, WorkingSetKind::Faasnap] {
        let ws = WorkingSet::open(&snapshot, kind, true).expect("a good working set");
        assert!(ws.pages() > 0);
        let path = WorkingSet::path(&dir, kind);
        let good = std::fs::read(&path).unwrap();
        // A flipped data byte: the checksum catches it.
        let mut bytes = good.clone();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(WorkingSet::open(&snapshot, kind, true), Err(SnapshotError::Checksum { .. })));
        // Truncated: the size check catches it even without verification.
        std::fs::write(&path, &good[..good.len() - 4096]).unwrap();
        let err = WorkingSet::open(&snapshot, kind, false).unwrap_err();
        assert!(matches!(err, SnapshotError::Mismatch { .. }), "{err}");
        names(&err, kind.file_name());
        // Swapped kinds are refused.
        std::fs::write(&path, &good).unwrap();
    }
    std::fs::copy(WorkingSet::path(&dir, WorkingSetKind::Reap), WorkingSet::path(&dir, WorkingSetKind::Faasnap))
        .unwrap();
    assert!(matches!(WorkingSet::open(&snapshot, WorkingSetKind::Faasnap, false), Err(SnapshotError::Corrupt { .. })));
}

#[test]
fn four_concurrent_restores_all_answer_correctly() {
    let Some(hv) = hypervisor("four_concurrent_restores_all_answer_correctly") else { return };
    let tmp = TempDir::new("concurrent");
    let dir = tmp.path().join("json");
    take_snapshot(&hv, "json", &dir);
    record(&hv, &dir, request("json").as_bytes(), "B", TIMEOUT).expect("record");
    let expected = native_digest("json", request("json"));
    for s in FILE_STRATEGIES {
        let st = strategy(s);
        let digests: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> =
                (0..4).map(|_| scope.spawn(|| restore_and_invoke(&hv, &dir, st.as_ref(), request("json")))).collect();
            handles.into_iter().map(|h| h.join().expect("thread")).collect()
        });
        assert!(digests.iter().all(|d| *d == expected), "{s}: {digests:?}");
    }
}

/// Copies a snapshot directory so that a test can damage the copy.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn open_err(dir: &Path) -> SnapshotError {
    match Snapshot::open(dir) {
        Ok(_) => panic!("damaged snapshot {} accepted", dir.display()),
        Err(e) => e,
    }
}

/// Changes the manifest of the snapshot in `dir` and re-seals it (a consistent manifest
/// that no longer matches the other files).
fn edit_manifest(dir: &Path, edit: impl FnOnce(&mut snapvisor_vmm::snapshot::Manifest)) {
    let path = dir.join("manifest.json");
    let mut manifest: snapvisor_vmm::snapshot::Manifest =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut manifest);
    manifest.seal();
    std::fs::write(&path, manifest.encode()).unwrap();
}

fn names(err: &SnapshotError, file: &str) {
    assert!(err.to_string().contains(file), "error does not name {file}: {err}");
}

#[test]
fn damaged_snapshots_are_refused_with_typed_errors() {
    let Some(hv) = hypervisor("damaged_snapshots_are_refused_with_typed_errors") else { return };
    let tmp = TempDir::new("damaged");
    let good = tmp.path().join("good");
    take_snapshot(&hv, "json", &good);
    let case = |name: &str| -> PathBuf {
        let dir = tmp.path().join(name);
        copy_dir(&good, &dir);
        dir
    };

    // A flipped byte anywhere in the state file.
    for at in [100usize, 2000] {
        let dir = case(&format!("flip-{at}"));
        let path = dir.join("vmstate.bin");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[at] ^= 0x40;
        std::fs::write(&path, bytes).unwrap();
        let err = open_err(&dir);
        assert!(matches!(err, SnapshotError::Checksum { .. }), "{err}");
        names(&err, "vmstate.bin");
        // And restore refuses it too.
        assert!(restore(&hv, &SnapshotSource::Dir(dir), strategy(Strategy::Lazy).as_ref()).is_err());
    }

    // A truncated memory file.
    let dir = case("truncated");
    let file = std::fs::OpenOptions::new().write(true).open(dir.join("memory.img")).unwrap();
    file.set_len(MEM / 2).unwrap();
    let err = open_err(&dir);
    assert!(matches!(err, SnapshotError::Mismatch { what: "file size", .. }), "{err}");
    names(&err, "memory.img");

    // Wrong format versions, in the manifest and in the state file.
    let dir = case("version-manifest");
    edit_manifest(&dir, |m| m.format_version = 99);
    let err = open_err(&dir);
    assert!(matches!(err, SnapshotError::Version { found: 99, .. }), "{err}");
    names(&err, "manifest.json");

    let dir = case("version-state");
    let path = dir.join("vmstate.bin");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8] = 99;
    std::fs::write(&path, bytes).unwrap();
    let err = open_err(&dir);
    assert!(matches!(err, SnapshotError::Version { found: 99, .. }), "{err}");
    names(&err, "vmstate.bin");

    // The manifest and the state disagree on the memory size (the manifest re-sealed, so
    // that the cross-check, not the manifest's checksum, is what refuses it).
    let dir = case("size");
    edit_manifest(&dir, |m| {
        let pages = m.mem_size / 4096;
        m.memory.zero_ranges.push(snapvisor_vmm::snapshot::PageRange { first: pages, count: pages });
        m.mem_size *= 2;
    });
    let err = open_err(&dir);
    assert!(matches!(err, SnapshotError::Mismatch { what: "memory size", .. }), "{err}");
    names(&err, "vmstate.bin");

    // Missing files.
    for file in ["manifest.json", "vmstate.bin", "memory.img"] {
        let dir = case(&format!("missing-{file}"));
        std::fs::remove_file(dir.join(file)).unwrap();
        let err = open_err(&dir);
        assert!(matches!(err, SnapshotError::Missing(_)), "{err}");
        names(&err, file);
    }

    // A memory image whose contents changed is caught by verification.
    let dir = case("memory-bits");
    let path = dir.join("memory.img");
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    use std::os::unix::fs::FileExt;
    file.write_all_at(b"\xff", 0x40_0000).unwrap();
    let err = Snapshot::open(&dir).unwrap().verify_memory().unwrap_err();
    assert!(matches!(err, SnapshotError::Digest { .. }), "{err}");
    names(&err, "memory.img");
}

#[test]
fn a_failed_fault_handler_is_reported_not_papered_over() {
    let Some(hv) = hypervisor("a_failed_fault_handler_is_reported_not_papered_over") else { return };
    let tmp = TempDir::new("pager-fail");
    let dir = tmp.path().join("json");
    take_snapshot(&hv, "json", &dir);
    let mut vm = restore(&hv, &SnapshotSource::Dir(dir.clone()), strategy(Strategy::Uffd).as_ref()).expect("restore");
    // The memory file loses its contents after the restore: the handler's reads fail.
    std::fs::OpenOptions::new().write(true).open(dir.join("memory.img")).unwrap().set_len(0).unwrap();
    match vm.invoke(request("json").as_bytes(), std::time::Duration::from_millis(500)) {
        Err(snapvisor_vmm::Error::Restore(snapvisor_vmm::restore::RestoreError::PagerFailed { failure, .. })) => {
            assert!(!failure.is_empty())
        }
        other => panic!("{:?}", other.map(|i| i.response)),
    }
}

#[test]
fn an_existing_snapshot_is_not_overwritten_without_force() {
    let Some(hv) = hypervisor("an_existing_snapshot_is_not_overwritten_without_force") else { return };
    let tmp = TempDir::new("exists");
    let dir = tmp.path().join("json");
    take_snapshot(&hv, "json", &dir);
    let (mut vm, _) = snapvisor_vmm::MicroVm::boot(&hv, image("json"), MEM).unwrap();
    vm.wait_ready(TIMEOUT).unwrap();
    match vm.snapshot(&hv, "json", image("json"), &dir, false) {
        Err(snapvisor_vmm::Error::Snapshot(SnapshotError::Exists(p))) => assert_eq!(p, dir),
        other => panic!("{:?}", other.map(|m| m.function)),
    }
    vm.snapshot(&hv, "json", image("json"), &dir, true).expect("force replaces");
    Snapshot::open(&dir).expect("the replacement is complete");
    // A directory that is not a snapshot is never replaced, even with force.
    let other = tmp.path().join("precious");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("data.txt"), b"keep me").unwrap();
    match vm.snapshot(&hv, "json", image("json"), &other, true) {
        Err(snapvisor_vmm::Error::Snapshot(SnapshotError::NotASnapshot(p))) => assert_eq!(p, other),
        other => panic!("{:?}", other.map(|m| m.function)),
    }
    // Nor one that merely has a file of the manifest's common name (a web app's).
    std::fs::write(other.join("manifest.json"), br#"{"name": "webapp", "version": "1.0"}"#).unwrap();
    match vm.snapshot(&hv, "json", image("json"), &other, true) {
        Err(snapvisor_vmm::Error::Snapshot(SnapshotError::NotASnapshot(p))) => assert_eq!(p, other),
        other => panic!("{:?}", other.map(|m| m.function)),
    }
    assert_eq!(std::fs::read(other.join("data.txt")).unwrap(), b"keep me");
    std::fs::remove_dir_all(&other).unwrap();
    // No temporary directories are left behind.
    let leftovers: Vec<_> =
        std::fs::read_dir(tmp.path()).unwrap().flatten().filter(|e| e.file_name() != "json").collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn restores_into_vm_shells_made_ahead_answer_like_fresh_ones() {
    use snapvisor_vmm::restore::{restore_into, RestoreError, Shell};
    let Some(hv) = hypervisor("restores_into_vm_shells_made_ahead_answer_like_fresh_ones") else { return };
    let tmp = TempDir::new("shells");
    let dir = tmp.path().join("json");
    take_snapshot(&hv, "json", &dir);
    record(&hv, &dir, request("json").as_bytes(), "B", TIMEOUT).expect("record");
    let shm = TempDir::new_in(Path::new("/dev/shm"), "shells-pool");
    let pool = shm_pool(&shm, 256 << 20);
    pool.import(&dir, "json", &mut |_, _| {}).expect("import");
    let expected = native_digest("json", request("json"));
    let sources = FILE_STRATEGIES
        .iter()
        .map(|&s| (s, SnapshotSource::Dir(dir.clone())))
        .chain([(Strategy::Pass, SnapshotSource::Pool { pool: pool.clone(), id: "json".into() })]);
    for (s, source) in sources {
        let shell = Shell::create(&hv, MEM).expect("shell");
        assert_eq!(shell.mem_size(), MEM);
        let mut vm = restore_into(shell, &source, strategy(s).as_ref()).expect("restore into a shell");
        assert!(vm.times.vm_create < std::time::Duration::from_millis(1), "{s}: no VM to create: {:?}", vm.times);
        let inv = vm.invoke(request("json").as_bytes(), TIMEOUT).expect("invoke");
        assert_eq!(digest(&inv.response), expected, "{s}");
    }
    // A shell of another size is refused, and the snapshot is left as it was.
    let shell = Shell::create(&hv, MEM * 2).expect("shell");
    let source = SnapshotSource::Dir(dir.clone());
    match restore_into(shell, &source, strategy(Strategy::Lazy).as_ref()) {
        Err(snapvisor_vmm::Error::Restore(RestoreError::ShellSize { shell, snapshot })) => {
            assert_eq!((shell, snapshot), (MEM * 2, MEM))
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a shell of another size was accepted"),
    }
    assert_eq!(restore_and_invoke(&hv, &dir, strategy(Strategy::Lazy).as_ref(), request("json")), expected);
}
