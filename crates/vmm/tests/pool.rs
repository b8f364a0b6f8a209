//! The persistent-memory pool and `pass` restores: digests like fresh VMs, a guest never
//! writes the pool, VMs share pool pages, damaged metadata is detected by fsck and refused
//! by restore with typed errors, and the emulated hugetlbfs medium is set up and undone.

mod common;

use common::*;
use snapvisor_vmm::metrics::MemoryUsage;
use snapvisor_vmm::pool::format::{EXTENT, SLOT0_OFFSET, SLOT_SIZE};
use snapvisor_vmm::pool::{medium, Pool, PoolError};
use snapvisor_vmm::restore::{restore, strategy, RestoreError, SnapshotSource, Strategy};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

fn pass_invoke(hv: &snapvisor_vmm::Hypervisor, pool: &Arc<Pool>, id: &str, request: &str) -> Vec<u8> {
    let source = SnapshotSource::Pool { pool: pool.clone(), id: id.into() };
    let mut vm = restore(hv, &source, strategy(Strategy::Pass).as_ref()).expect("restore");
    vm.vm.invoke(request.as_bytes(), TIMEOUT).expect("invoke").response
}

fn file_hash(path: &Path) -> u64 {
    let bytes = std::fs::read(path).expect("read pool");
    xxhash(&bytes)
}

fn xxhash(bytes: &[u8]) -> u64 {
    // FNV-1a over 8-byte words: enough to see any change.
    bytes.chunks(8).fold(0xcbf2_9ce4_8422_2325u64, |h, w| {
        let mut b = [0u8; 8];
        b[..w.len()].copy_from_slice(w);
        (h ^ u64::from_le_bytes(b)).wrapping_mul(0x100_0000_01b3)
    })
}

#[test]
fn pass_restores_answer_like_fresh_vms() {
    let Some(hv) = hypervisor("pass_restores_answer_like_fresh_vms") else { return };
    let snaps = TempDir::new("pass-snaps");
    let shm = TempDir::new_in(Path::new("/dev/shm"), "pass-pool");
    let pool = shm_pool(&shm, 512 << 20);
    for info in sample_functions() {
        let dir = snaps.path().join(info.name);
        take_snapshot(&hv, info.name, &dir);
        let entry = pool.import(&dir, info.name, &mut |_, _| {}).expect("import");
        assert_eq!(entry.function, info.name);
        let response = pass_invoke(&hv, &pool, info.name, request(info.name));
        assert_eq!(digest(&response), native_digest(info.name, request(info.name)), "{}", info.name);
    }
    let report = pool.fsck(true);
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.snapshots, sample_functions().count());
    // A pool snapshot is not a directory: the filesystem strategies refuse it, and pass
    // refuses a directory.
    let source = SnapshotSource::Pool { pool: pool.clone(), id: "json".into() };
    assert!(matches!(
        restore(&hv, &source, strategy(Strategy::Lazy).as_ref()),
        Err(snapvisor_vmm::Error::Restore(RestoreError::WrongSource { .. }))
    ));
    let dir = SnapshotSource::Dir(snaps.path().join("json"));
    assert!(matches!(
        restore(&hv, &dir, strategy(Strategy::Pass).as_ref()),
        Err(snapvisor_vmm::Error::Restore(RestoreError::WrongSource { .. }))
    ));
}

#[test]
fn a_guest_that_writes_leaves_the_pool_byte_identical() {
    let Some(hv) = hypervisor("a_guest_that_writes_leaves_the_pool_byte_identical") else { return };
    let snaps = TempDir::new("scribble-snaps");
    let shm = TempDir::new_in(Path::new("/dev/shm"), "scribble-pool");
    let pool = shm_pool(&shm, 128 << 20);
    let dir = snaps.path().join("hostile");
    take_snapshot(&hv, "hostile", &dir);
    pool.import(&dir, "hostile", &mut |_, _| {}).expect("import");
    let before = file_hash(&shm.path().join("pool"));
    let original = pass_invoke(&hv, &pool, "hostile", "sum");
    let scribbled = pass_invoke(&hv, &pool, "hostile", "scribble");
    assert_ne!(original, scribbled, "the guest did change its memory");
    assert_eq!(file_hash(&shm.path().join("pool")), before, "a guest write reached the pool");
    // The next restore still sees the snapshot's contents.
    assert_eq!(pass_invoke(&hv, &pool, "hostile", "sum"), original);
}

#[test]
fn concurrent_pass_vms_share_pool_pages() {
    let Some(hv) = hypervisor("concurrent_pass_vms_share_pool_pages") else { return };
    let snaps = TempDir::new("share-snaps");
    let shm = TempDir::new_in(Path::new("/dev/shm"), "share-pool");
    let pool = shm_pool(&shm, 128 << 20);
    let dir = snaps.path().join("hostile");
    take_snapshot(&hv, "hostile", &dir);
    pool.import(&dir, "hostile", &mut |_, _| {}).expect("import");
    let source = SnapshotSource::Pool { pool: pool.clone(), id: "hostile".into() };
    let pass = strategy(Strategy::Pass);
    let mut vms: Vec<_> = (0..2).map(|_| restore(&hv, &source, pass.as_ref()).expect("restore")).collect();
    let mut usages = Vec::new();
    for vm in &mut vms {
        // `sum` reads the 8 MiB buffer init filled.
        let response = vm.vm.invoke(b"sum", TIMEOUT).expect("invoke").response;
        assert_eq!(response.len(), 16);
        let mem = vm.vm.memory().unwrap();
        usages.push(MemoryUsage::scan(mem.mapping().as_ptr(), mem.mapping().len()).expect("pagemap"));
    }
    for u in &usages {
        assert!(u.shared_bytes >= 8 << 20, "pool pages are mapped, not copied: {u:?}");
        assert!(u.private_bytes < u.shared_bytes, "only written pages are private: {u:?}");
    }
    if !usages[0].shared_frames.is_empty() {
        let common = usages[0].shared_frames.intersection(&usages[1].shared_frames).count() as u64 * 4096;
        assert!(common >= 8 << 20, "the two VMs map the same pool pages ({common} bytes in common)");
        let total = snapvisor_vmm::metrics::total_memory(&usages.iter().collect::<Vec<_>>());
        assert!(
            total < usages[0].private_bytes + usages[0].shared_bytes + usages[1].private_bytes + usages[1].shared_bytes
        );
    }
}

/// Flips one byte of the pool file.
fn flip(pool_file: &Path, at: u64) {
    let f = std::fs::OpenOptions::new().read(true).write(true).open(pool_file).unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x10;
    f.write_all_at(&b, at).unwrap();
}

#[test]
fn damaged_pools_are_detected_by_fsck_and_refused_by_restore() {
    let Some(hv) = hypervisor("damaged_pools_are_detected_by_fsck_and_refused_by_restore") else { return };
    let snaps = TempDir::new("damage-snaps");
    let dir = snaps.path().join("json");
    take_snapshot(&hv, "json", &dir);
    let fresh = |tag: &str| -> (TempDir, Arc<Pool>, snapvisor_vmm::pool::format::SnapshotEntry) {
        let shm = TempDir::new_in(Path::new("/dev/shm"), tag);
        let pool = shm_pool(&shm, 64 << 20);
        let entry = pool.import(&dir, "json", &mut |_, _| {}).expect("import");
        assert!(pool.fsck(false).is_clean());
        (shm, pool, entry)
    };

    // Superblock.
    let (shm, pool, _) = fresh("damage-sb");
    drop(pool);
    flip(&shm.path().join("pool"), 40);
    assert!(matches!(Pool::open(&shm.path().join("pool")), Err(PoolError::Superblock { .. })));

    // Snapshot table (the committed metadata slot).
    let (shm, pool, _) = fresh("damage-table");
    let generation = pool.info().unwrap().generation;
    let slot = SLOT0_OFFSET + (generation % 2) * SLOT_SIZE;
    flip(&shm.path().join("pool"), slot + 40);
    let report = pool.fsck(false);
    assert!(!report.is_clean() && report.problems[0].contains("corrupt"), "{report:?}");
    let source = SnapshotSource::Pool { pool: pool.clone(), id: "json".into() };
    assert!(matches!(
        restore(&hv, &source, strategy(Strategy::Pass).as_ref()),
        Err(snapvisor_vmm::Error::Restore(RestoreError::Pool(PoolError::Metadata { .. })))
    ));
    drop(pool);
    assert!(matches!(Pool::open(&shm.path().join("pool")), Err(PoolError::Metadata { .. })));

    // Index.
    let (shm, pool, entry) = fresh("damage-index");
    flip(&shm.path().join("pool"), entry.index.offset + entry.index.len / 2);
    let report = pool.fsck(false);
    assert!(report.problems.iter().any(|p| p.contains("index of snapshot `json`")), "{report:?}");
    let source = SnapshotSource::Pool { pool: pool.clone(), id: "json".into() };
    assert!(matches!(
        restore(&hv, &source, strategy(Strategy::Pass).as_ref()),
        Err(snapvisor_vmm::Error::Restore(RestoreError::Pool(PoolError::Index { .. })))
    ));

    // vCPU state.
    let (shm, pool, entry) = fresh("damage-state");
    flip(&shm.path().join("pool"), entry.state.offset + 100);
    assert!(!pool.fsck(false).is_clean());
    assert!(matches!(pool.open_snapshot("json"), Err(PoolError::State { .. })));

    // Snapshot memory: only the deep check reads it.
    let (shm, pool, _) = fresh("damage-data");
    let data = pool.open_snapshot("json").unwrap().index().runs.iter().find_map(|r| r.pool).expect("a data run");
    flip(&shm.path().join("pool"), data + 4096);
    assert!(pool.fsck(false).is_clean());
    let deep = pool.fsck(true);
    assert!(deep.problems.iter().any(|p| p.contains("memory digest")), "{deep:?}");
}

#[test]
fn pool_bookkeeping_is_consistent() {
    let Some(hv) = hypervisor("pool_bookkeeping_is_consistent") else { return };
    let snaps = TempDir::new("book-snaps");
    let dir = snaps.path().join("json");
    take_snapshot(&hv, "json", &dir);
    // Learn how many extents the snapshot takes, then make a pool with room for one copy.
    let probe_dir = TempDir::new_in(Path::new("/dev/shm"), "book-probe");
    let extents =
        shm_pool(&probe_dir, 256 << 20).import(&dir, "probe", &mut |_, _| {}).expect("import").extents.len() as u64;
    let shm = TempDir::new_in(Path::new("/dev/shm"), "book-pool");
    let pool = shm_pool(&shm, (extents + 1) * EXTENT);
    let a = pool.import(&dir, "a", &mut |_, _| {}).expect("import a");
    assert!(matches!(pool.import(&dir, "a", &mut |_, _| {}), Err(PoolError::Exists { .. })));
    // The pool is too small for two copies.
    let used = pool.info().unwrap().used_extents;
    let full = pool.import(&dir, "b", &mut |_, _| {});
    assert!(matches!(full, Err(PoolError::Full { .. })), "{:?}", full.map(|e| e.id));
    assert_eq!(pool.info().unwrap().used_extents, used, "a failed import allocates nothing");
    assert!(matches!(pool.open_snapshot("b"), Err(PoolError::NotFound { .. })));
    // Remove frees the extents, and they are reused.
    pool.remove("a").expect("rm");
    assert_eq!(pool.info().unwrap().used_extents, 1);
    let b = pool.import(&dir, "b", &mut |_, _| {}).expect("import b");
    assert_eq!(a.extents, b.extents);
    assert!(pool.fsck(true).is_clean());
    assert_eq!(digest(&pass_invoke(&hv, &pool, "b", request("json"))), native_digest("json", request("json")));
    // Reopening reads the same committed state.
    let info = pool.info().unwrap();
    drop(pool);
    let reopened = Pool::open(&shm.path().join("pool")).unwrap();
    assert_eq!(reopened.info().unwrap().snapshots, info.snapshots);
}

#[test]
fn the_emulated_hugetlbfs_pool_is_set_up_used_and_undone() {
    let Some(hv) = hypervisor("the_emulated_hugetlbfs_pool_is_set_up_used_and_undone") else { return };
    if !is_root("the_emulated_hugetlbfs_pool_is_set_up_used_and_undone") {
        return;
    }
    let snaps = TempDir::new("huge-snaps");
    let dir = snaps.path().join("json");
    take_snapshot(&hv, "json", &dir);
    let root = TempDir::new("huge-root");
    let nr = || std::fs::read_to_string("/proc/sys/vm/nr_hugepages").unwrap().trim().parse::<u64>().unwrap();
    let before = nr();
    let (mnt, m) = medium::setup_emulation(root.path(), 64, medium::EmulatedKind::Hugetlbfs).expect("emulation");
    if m != medium::Medium::EmulatedHugetlbfs {
        let _ = medium::teardown_emulation(root.path());
        panic!("huge pages could not be reserved on this machine: got {m}");
    }
    let result = std::panic::catch_unwind(|| {
        let path = mnt.join("pool");
        Pool::create(&path, 32 << 20).expect("create");
        let pool = Pool::open(&path).expect("open");
        assert_eq!(pool.medium(), medium::Medium::EmulatedHugetlbfs);
        pool.import(&dir, "json", &mut |_, _| {}).expect("import");
        let response = pass_invoke(&hv, &pool, "json", request("json"));
        assert_eq!(digest(&response), native_digest("json", request("json")));
    });
    let record = medium::teardown_emulation(root.path()).expect("teardown").expect("a record");
    assert_eq!(record.fstype, "hugetlbfs");
    assert_eq!(nr(), before, "huge pages released");
    assert!(!std::fs::read_to_string("/proc/self/mounts").unwrap().contains(&mnt.display().to_string()), "unmounted");
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn extents_a_running_vm_maps_are_not_reused_after_rm() {
    let Some(hv) = hypervisor("extents_a_running_vm_maps_are_not_reused_after_rm") else { return };
    let snaps = TempDir::new("lease-snaps");
    take_snapshot(&hv, "hostile", &snaps.path().join("hostile"));
    take_snapshot(&hv, "json", &snaps.path().join("json"));
    let shm = TempDir::new_in(Path::new("/dev/shm"), "lease-pool");
    let pool = shm_pool(&shm, 128 << 20);
    let a = pool.import(&snaps.path().join("hostile"), "a", &mut |_, _| {}).expect("import a");
    let expected = pass_invoke(&hv, &pool, "a", "sum");
    // A VM restored from `a` is ready; `a` is removed and another snapshot imported.
    let source = SnapshotSource::Pool { pool: pool.clone(), id: "a".into() };
    let mut vm = restore(&hv, &source, strategy(Strategy::Pass).as_ref()).expect("restore");
    pool.remove("a").expect("rm");
    // The leases are on the mapped file, not on whatever its path names now (here a FIFO,
    // which an open by path would block on forever).
    let path = pool.path().to_path_buf();
    let moved = path.with_extension("moved");
    std::fs::rename(&path, &moved).unwrap();
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let b = pool.import(&snaps.path().join("json"), "b", &mut |_, _| {}).expect("import b");
    std::fs::remove_file(&path).unwrap();
    std::fs::rename(&moved, &path).unwrap();
    assert!(b.extents.iter().all(|e| !a.extents.contains(e)), "b reused extents the running VM maps");
    // The VM still reads `a`'s memory.
    assert_eq!(vm.invoke(b"sum", TIMEOUT).expect("invoke").response, expected);
    drop(vm);
    // Once the VM is gone, the extents are free for reuse.
    let c = pool.import(&snaps.path().join("hostile"), "c", &mut |_, _| {}).expect("import c");
    assert!(
        c.extents.iter().any(|e| a.extents.contains(e)),
        "a's extents were not reused: {:?} vs {:?}",
        c.extents,
        a.extents
    );
    assert!(pool.fsck(true).is_clean());
    // A removed snapshot cannot be restored.
    let source = SnapshotSource::Pool { pool: pool.clone(), id: "a".into() };
    assert!(matches!(
        restore(&hv, &source, strategy(Strategy::Pass).as_ref()),
        Err(snapvisor_vmm::Error::Restore(RestoreError::Pool(PoolError::NotFound { .. })))
    ));
}

#[test]
fn concurrent_imports_from_threads_do_not_collide() {
    let Some(hv) = hypervisor("concurrent_imports_from_threads_do_not_collide") else { return };
    let snaps = TempDir::new("threads-snaps");
    let dir = snaps.path().join("json");
    take_snapshot(&hv, "json", &dir);
    let shm = TempDir::new_in(Path::new("/dev/shm"), "threads-pool");
    let pool = shm_pool(&shm, 256 << 20);
    let entries: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let (pool, dir) = (pool.clone(), dir.clone());
                s.spawn(move || pool.import(&dir, &format!("t{i}"), &mut |_, _| {}).expect("import"))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut all: Vec<u64> = entries.iter().flat_map(|e| e.extents.clone()).collect();
    let n = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), n, "two imports got the same extents");
    assert_eq!(pool.info().unwrap().snapshots.len(), 4);
    assert!(pool.fsck(true).is_clean());
    for i in 0..4 {
        assert_eq!(
            digest(&pass_invoke(&hv, &pool, &format!("t{i}"), request("json"))),
            native_digest("json", request("json"))
        );
    }
}
