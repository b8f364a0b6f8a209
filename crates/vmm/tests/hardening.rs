//! Issue 8, classes 2–5: files the VMM reads are trusted for nothing. Sizes are bounded
//! before they drive an allocation, a read or a mapping; special files are refused
//! without blocking; every stored checksum is checked (working-set data by the thread that
//! reads it anyway, voiding the run on a mismatch) and manifest fields are cross-checked
//! against the files; a forged pool bitmap cannot hand out another snapshot's extents.

mod common;

use common::*;
use snapvisor_vmm::files::FileError;
use snapvisor_vmm::pool::format::{slot_offset, PoolMeta, COMMIT_OFFSET, EXTENT};
use snapvisor_vmm::pool::{Pool, PoolError};
use snapvisor_vmm::restore::{record, restore, strategy, RestoreError, SnapshotSource, Strategy};
use snapvisor_vmm::snapshot::working_set::{WorkingSet, WorkingSetKind};
use snapvisor_vmm::snapshot::{Manifest, PageRange, Snapshot, SnapshotError};
use snapvisor_vmm::Error;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// A copy of the recorded snapshot `good` to damage.
fn case(good: &Path, name: &str) -> PathBuf {
    let dir = good.parent().unwrap().join(name);
    copy_dir(good, &dir);
    dir
}

fn edit_manifest(dir: &Path, reseal: bool, edit: impl FnOnce(&mut Manifest)) {
    let path = dir.join("manifest.json");
    let mut m: Manifest = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut m);
    if reseal {
        m.seal();
    }
    std::fs::write(&path, m.encode()).unwrap();
}

/// Opens the snapshot in a thread and fails the test if that takes more than 10 s (a FIFO
/// or a device read without end would).
fn open_within_deadline(dir: &Path) -> Result<Snapshot, SnapshotError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let dir = dir.to_path_buf();
    std::thread::spawn(move || tx.send(Snapshot::open(&dir)));
    rx.recv_timeout(Duration::from_secs(10)).expect("opening the snapshot blocked")
}

fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// A recorded json snapshot (both working sets) in a temporary directory.
fn recorded(hv: &snapvisor_vmm::Hypervisor, tag: &str) -> (TempDir, PathBuf) {
    let (tmp, dir) = snapshot_in(hv, "json", tag);
    record(hv, &dir, request("json").as_bytes(), "B", TIMEOUT).expect("record");
    (tmp, dir)
}

fn restore_err(hv: &snapvisor_vmm::Hypervisor, dir: &Path, s: Strategy) -> Error {
    match restore(hv, &SnapshotSource::Dir(dir.to_path_buf()), strategy(s).as_ref()) {
        Ok(_) => panic!("{s}: {} restored", dir.display()),
        Err(e) => e,
    }
}

#[test]
fn sizes_from_files_are_bounded_before_use() {
    let Some(hv) = hypervisor("sizes_from_files_are_bounded_before_use") else { return };
    let (_tmp, good) = recorded(&hv, "sizes");
    // A consistent manifest (re-sealed) claiming 1 TiB of guest memory.
    let dir = case(&good, "tib");
    edit_manifest(&dir, true, |m| {
        let pages = m.mem_size / 4096;
        m.memory.zero_ranges.push(PageRange { first: pages, count: (1 << 40) / 4096 - pages });
        m.mem_size = 1 << 40;
    });
    for s in [Strategy::Lazy, Strategy::Uffd, Strategy::Cached] {
        let err = restore_err(&hv, &dir, s);
        assert!(matches!(err, Error::Restore(RestoreError::Snapshot(SnapshotError::OutOfRange { .. }))), "{s}: {err}");
    }
    // A working set claiming 64 GiB of pages (REAP would allocate that before reading).
    let dir = case(&good, "ws-huge");
    let path = WorkingSet::path(&dir, WorkingSetKind::Reap);
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&(16u64 << 20).to_le_bytes(), 40).unwrap();
    let err = restore_err(&hv, &dir, Strategy::Reap);
    assert!(matches!(err, Error::Restore(RestoreError::Snapshot(SnapshotError::OutOfRange { .. }))), "{err}");
    // A data offset that makes `offset + pages · 4 KiB` overflow.
    file.write_all_at(&1u64.to_le_bytes(), 40).unwrap();
    file.write_all_at(&(u64::MAX - 4095).to_le_bytes(), 48).unwrap();
    let err = restore_err(&hv, &dir, Strategy::Reap);
    assert!(matches!(err, Error::Restore(RestoreError::Snapshot(SnapshotError::OutOfRange { .. }))), "{err}");
    // A state file far larger than the format allows (sparse): refused from its size.
    let dir = case(&good, "state-huge");
    std::fs::OpenOptions::new().write(true).open(dir.join("vmstate.bin")).unwrap().set_len(1 << 40).unwrap();
    let err = open_within_deadline(&dir).unwrap_err();
    assert!(matches!(err, SnapshotError::File(FileError::TooLarge { .. })), "{err}");
}

#[test]
fn special_files_are_refused_without_blocking() {
    let Some(hv) = hypervisor("special_files_are_refused_without_blocking") else { return };
    let (_tmp, good) = recorded(&hv, "special");
    for file in ["manifest.json", "vmstate.bin", "memory.img", "ws.reap", "ws.faasnap"] {
        // A FIFO: a plain open would block until a writer comes, a read until it writes.
        let dir = case(&good, &format!("fifo-{file}"));
        std::fs::remove_file(dir.join(file)).unwrap();
        mkfifo(&dir.join(file));
        let err = match file {
            "ws.reap" => restore_err(&hv, &dir, Strategy::Reap),
            "ws.faasnap" => restore_err(&hv, &dir, Strategy::Faasnap),
            _ => Error::Snapshot(open_within_deadline(&dir).unwrap_err()),
        };
        assert!(err.to_string().contains("named pipe (FIFO), not a regular file"), "{file}: {err}");
        // A link to /dev/zero: never followed.
        let dir = case(&good, &format!("zero-{file}"));
        std::fs::remove_file(dir.join(file)).unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.join(file)).unwrap();
        if !file.starts_with("ws.") {
            let err = open_within_deadline(&dir).unwrap_err();
            assert!(matches!(err, SnapshotError::File(FileError::Symlink(_))), "{file}: {err}");
        }
    }
    // The snapshot's page-cache helpers refuse them too.
    let dir = case(&good, "fifo-warm");
    std::fs::remove_file(dir.join("ws.faasnap")).unwrap();
    mkfifo(&dir.join("ws.faasnap"));
    let snapshot = open_within_deadline(&dir).expect("the snapshot itself is fine");
    assert!(snapshot.warm_page_cache().is_err() && snapshot.evict_page_cache().is_err());
    // A huge sparse manifest.
    let dir = case(&good, "sparse-manifest");
    std::fs::OpenOptions::new().write(true).open(dir.join("manifest.json")).unwrap().set_len(1 << 40).unwrap();
    assert!(matches!(open_within_deadline(&dir), Err(SnapshotError::File(FileError::TooLarge { .. }))));
}

#[test]
fn every_stored_checksum_is_checked_and_fields_cross_checked() {
    let Some(hv) = hypervisor("every_stored_checksum_is_checked_and_fields_cross_checked") else { return };
    let (_tmp, good) = recorded(&hv, "damage");
    // Any manifest field changed: the manifest's own checksum.
    type Change = (&'static str, fn(&mut Manifest));
    let changes: [Change; 4] = [
        ("state-bytes", |m| m.state.bytes += 1),
        ("digest", |m| m.memory.digest = snapvisor_vmm::checksum::digest_string(1)),
        ("zero-shift", |m| m.memory.zero_ranges[0].first += 1),
        ("function", |m| m.function = "compression".into()),
    ];
    for (name, change) in changes {
        let dir = case(&good, name);
        edit_manifest(&dir, false, change);
        let err = open_within_deadline(&dir).unwrap_err();
        assert!(matches!(err, SnapshotError::Checksum { .. }), "{name}: {err}");
        assert!(err.to_string().contains("manifest.json"), "{err}");
    }
    // Re-sealed, the fields are still cross-checked against the files.
    let dir = case(&good, "state-bytes-sealed");
    edit_manifest(&dir, true, |m| m.state.bytes += 1);
    assert!(matches!(open_within_deadline(&dir), Err(SnapshotError::Mismatch { what: "file size", .. })));
    // A working set recorded from another snapshot of the same size.
    let other = case(&good, "other-digest");
    edit_manifest(&other, true, |m| m.memory.digest = snapvisor_vmm::checksum::digest_string(1));
    for s in [Strategy::Reap, Strategy::Faasnap] {
        let err = restore_err(&hv, &other, s);
        assert!(err.to_string().contains("memory digest is"), "{s}: {err}");
    }
}

#[test]
fn damaged_working_set_data_voids_the_run() {
    let Some(hv) = hypervisor("damaged_working_set_data_voids_the_run") else { return };
    let (_tmp, good) = recorded(&hv, "ws-data");
    for (kind, s) in [(WorkingSetKind::Reap, Strategy::Reap), (WorkingSetKind::Faasnap, Strategy::Faasnap)] {
        let dir = case(&good, kind.file_name());
        let path = WorkingSet::path(&dir, kind);
        let snapshot = Snapshot::open(&dir).unwrap();
        let at = WorkingSet::open(&snapshot, kind, false).unwrap().data_offset() + 100;
        let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
        let mut b = [0u8];
        file.read_exact_at(&mut b, at).unwrap();
        file.write_all_at(&[b[0] ^ 0x5a], at).unwrap();
        drop(file);
        snapvisor_vmm::snapshot::evict(&std::fs::File::open(&path).unwrap()).unwrap();
        // The restore itself does not pay for the check; the run it would give is void.
        let mut vm = restore(&hv, &SnapshotSource::Dir(dir.clone()), strategy(s).as_ref()).expect("restore");
        match vm.invoke(request("json").as_bytes(), TIMEOUT) {
            Err(Error::Restore(RestoreError::PagerFailed { failure, .. })) => {
                assert!(failure.contains("checksum mismatch") && failure.contains(kind.file_name()), "{s}: {failure}")
            }
            other => panic!("{s}: {:?}", other.map(|i| i.response)),
        }
    }
    // The good set still runs.
    let mut vm = restore(&hv, &SnapshotSource::Dir(good), strategy(Strategy::Reap).as_ref()).expect("restore");
    let inv = vm.invoke(request("json").as_bytes(), TIMEOUT).expect("a good working set runs");
    assert_eq!(digest(&inv.response), native_digest("json", request("json")));
}

#[test]
fn a_forged_pool_bitmap_cannot_hand_out_another_snapshots_extents() {
    let Some(hv) = hypervisor("a_forged_pool_bitmap_cannot_hand_out_another_snapshots_extents") else { return };
    let (_snaps, dir) = snapshot_in(&hv, "json", "bitmap-snaps");
    let shm = TempDir::new_in(Path::new("/dev/shm"), "bitmap-pool");
    let path = shm.path().join("pool");
    let pool = shm_pool(&shm, 64 << 20);
    let a = pool.import(&dir, "a", &mut |_, _| {}).expect("import");
    let generation = pool.info().unwrap().generation;
    // Rewrite the committed slot with a's extents marked free, checksum and all.
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    let mut slot = vec![0u8; (EXTENT / 2) as usize];
    file.read_exact_at(&mut slot, slot_offset(generation % 2)).unwrap();
    let mut meta = PoolMeta::decode_slot(&slot, generation).unwrap();
    for &e in &a.extents {
        meta.set(e, false);
    }
    file.write_all_at(&meta.encode_slot(generation).unwrap(), slot_offset(generation % 2)).unwrap();
    let mut commit = [0u8; 8];
    file.read_exact_at(&mut commit, COMMIT_OFFSET).unwrap();
    assert_eq!(u64::from_le_bytes(commit), generation);
    // An import (into the pool opened before) refuses to allocate from it...
    match pool.import(&dir, "b", &mut |_, _| {}) {
        Err(PoolError::Metadata { .. }) => {}
        other => panic!("{:?}", other.map(|e| e.extents)),
    }
    // ...and opening the pool refuses it, naming the extent.
    match Pool::open(&path) {
        Err(e @ PoolError::Metadata { .. }) => {
            let source = std::error::Error::source(&e).unwrap().to_string();
            assert!(source.contains("owned by a snapshot but marked free"), "{source}");
        }
        other => panic!("{other:?}"),
    }
    // The snapshot's memory is untouched: restore the slot and check it deeply.
    file.write_all_at(&slot, slot_offset(generation % 2)).unwrap();
    let pool = Pool::open(&path).expect("the genuine slot opens");
    assert!(pool.fsck(true).is_clean());
}
