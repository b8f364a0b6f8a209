//! Exhaustion: a full pool, no huge pages for copy-on-write, a full disk during a snapshot,
//! no file descriptors left, no address space for another VM. Each is a clear typed error,
//! nothing is left half-written, and the VMs already running are unaffected.
//!
//! The descriptor and memory limits are set with `setrlimit` in a child process (this test
//! binary run again for one test, with `SNAPVISOR_EXHAUSTION_CHILD` set), so that the limit
//! never reaches the other tests.

mod common;

use common::*;
use snapvisor_vmm::files::FileError;
use snapvisor_vmm::pool::PoolError;
use snapvisor_vmm::restore::{restore, strategy, RestoreError, RestoredVm, SnapshotSource, Strategy};
use snapvisor_vmm::snapshot::SnapshotError;
use snapvisor_vmm::{Error, MicroVm};
use std::path::Path;

const CHILD: &str = "SNAPVISOR_EXHAUSTION_CHILD";

fn restore_vm(hv: &snapvisor_vmm::Hypervisor, dir: &Path, s: Strategy) -> Result<RestoredVm, Error> {
    restore(hv, &SnapshotSource::Dir(dir.to_path_buf()), strategy(s).as_ref())
}

fn answers(vm: &mut RestoredVm) -> bool {
    vm.invoke(request("json").as_bytes(), TIMEOUT)
        .is_ok_and(|i| digest(&i.response) == native_digest("json", request("json")))
}

#[test]
fn a_full_pool_refuses_an_import_and_running_vms_run_on() {
    let Some(hv) = hypervisor("a_full_pool_refuses_an_import_and_running_vms_run_on") else { return };
    let (_snaps, dir) = snapshot_in(&hv, "json", "full-snaps");
    let shm = TempDir::new_in(Path::new("/dev/shm"), "full-pool");
    let pool = shm_pool(&shm, 16 << 20);
    pool.import(&dir, "a", &mut |_, _| {}).expect("the first import fits");
    let source = SnapshotSource::Pool { pool: pool.clone(), id: "a".into() };
    let mut vm = restore(&hv, &source, strategy(Strategy::Pass).as_ref()).expect("restore");
    let before = pool.info().unwrap();
    match pool.import(&dir, "b", &mut |_, _| {}) {
        Err(PoolError::Full { needed, free, .. }) => assert!(needed > free),
        other => panic!("{:?}", other.map(|e| e.id)),
    }
    let after = pool.info().unwrap();
    assert_eq!((after.generation, after.used_extents), (before.generation, before.used_extents));
    assert!(pool.fsck(true).is_clean());
    assert!(answers(&mut vm), "the running VM was affected");
}

#[test]
fn no_huge_pages_for_copy_on_write_is_a_typed_error() {
    let Some(hv) = hypervisor_as_root("no_huge_pages_for_copy_on_write_is_a_typed_error") else { return };
    let (_snaps, dir) = snapshot_in(&hv, "json", "cow-snaps");
    // A hugetlbfs mount limited to the pool's own 8 pages: a private mapping of the pool
    // cannot reserve its copy-on-write pages there, whatever the rest of the machine has.
    let mnt = TempDir::new("cow-mnt");
    let nr = "/proc/sys/vm/nr_hugepages";
    let read_nr = || std::fs::read_to_string(nr).unwrap().trim().parse::<u64>().unwrap();
    let before = read_nr();
    std::fs::write(nr, (before + 8).to_string()).unwrap();
    let result = std::panic::catch_unwind(|| {
        let _mounted = mount("hugetlbfs", mnt.path(), "pagesize=2M,size=16M");
        let pool = shm_pool(&mnt, 16 << 20);
        pool.import(&dir, "json", &mut |_, _| {}).expect("import");
        let source = SnapshotSource::Pool { pool: pool.clone(), id: "json".into() };
        match restore(&hv, &source, strategy(Strategy::Pass).as_ref()) {
            Err(Error::Restore(RestoreError::Unsupported(message))) => {
                assert!(message.contains("not enough free huge pages"), "{message}")
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
        assert!(pool.fsck(true).is_clean());
    });
    let now = read_nr();
    std::fs::write(nr, now.saturating_sub(8).to_string()).unwrap();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn a_full_disk_during_a_snapshot_leaves_nothing_half_written() {
    let Some(hv) = hypervisor_as_root("a_full_disk_during_a_snapshot_leaves_nothing_half_written") else {
        return;
    };
    let disk = TempDir::new("full-disk");
    let _mounted = mount("tmpfs", disk.path(), "size=2m");
    // The hostile guest's init fills 8 MiB: more than the 2 MiB filesystem holds.
    let (mut vm, _) = MicroVm::boot(&hv, image("hostile"), MEM).expect("boot");
    vm.wait_ready(TIMEOUT).expect("init");
    let target = disk.path().join("hostile");
    match vm.snapshot(&hv, "hostile", image("hostile"), &target, false) {
        Err(Error::Snapshot(SnapshotError::File(FileError::Io { source, .. }))) => {
            assert_eq!(source.raw_os_error(), Some(libc::ENOSPC), "{source}")
        }
        other => panic!("{:?}", other.map(|m| m.function)),
    }
    let left: Vec<_> = std::fs::read_dir(disk.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    // The VM is unaffected: it answers, and snapshots where there is room.
    let tmp = TempDir::new("full-disk-ok");
    vm.snapshot(&hv, "hostile", image("hostile"), &tmp.path().join("hostile"), false).expect("snapshot");
    let inv = vm.invoke(b"sum", TIMEOUT).expect("invoke");
    assert_eq!(inv.response.len(), 16, "the buffer's checksum: {:?}", String::from_utf8_lossy(&inv.response));
    // Working sets that do not fit either: the snapshot keeps none, and no partial file.
    let small = TempDir::new("full-disk-ws");
    let _small = mount("tmpfs", small.path(), "size=32m");
    let dir = small.path().join("json");
    take_snapshot(&hv, "json", &dir);
    fill_leaving(small.path(), 256 << 10);
    let err = snapvisor_vmm::restore::record(&hv, &dir, request("json").as_bytes(), "B", TIMEOUT).expect_err("ENOSPC");
    assert!(format!("{err:?}").contains("StorageFull") || format!("{err:?}").contains("28"), "{err:?}");
    let names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().all(|n| !n.starts_with('.') && !n.starts_with("ws.")), "{names:?}");
    std::fs::remove_file(small.path().join("filler")).unwrap();
    let mut restored = restore_vm(&hv, &dir, Strategy::Lazy).expect("the snapshot is intact");
    assert!(answers(&mut restored));
}

/// Fills the filesystem of `dir` with a file until only about `left` bytes are free.
fn fill_leaving(dir: &std::path::Path, left: u64) {
    // SAFETY: zero is a valid statvfs; statvfs writes into it.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid C string and out-pointer.
    assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut st) }, 0);
    let free = st.f_bavail as u64 * st.f_frsize as u64;
    let filler = vec![1u8; free.saturating_sub(left) as usize];
    std::fs::write(dir.join("filler"), filler).expect("fill the filesystem");
}

/// Runs this test again in a child process with `CHILD=scenario`; the child's stdout must
/// end with `scenario: ok`.
fn in_child(test: &str, scenario: &str) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, scenario)
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && stdout.contains(&format!("{scenario}: ok")), "child failed:\n{stdout}\n{stderr}");
}

fn set_limit(resource: libc::__rlimit_resource_t, value: u64) {
    let limit = libc::rlimit { rlim_cur: value, rlim_max: value };
    // SAFETY: a valid rlimit for this process.
    assert_eq!(unsafe { libc::setrlimit(resource, &limit) }, 0);
}

/// In the child: restores VMs with `s` until one fails, checks the failure is typed and
/// names `errno`, and that every VM restored before it still answers.
fn restore_until_exhausted(s: Strategy, limit: impl FnOnce(), errno: i32, scenario: &str) {
    let hv = snapvisor_vmm::Hypervisor::open().expect("kvm");
    let tmp = TempDir::new(scenario);
    let dir = tmp.path().join("json");
    take_snapshot(&hv, "json", &dir);
    limit();
    let mut vms = Vec::new();
    let err = loop {
        match restore_vm(&hv, &dir, s) {
            Ok(vm) => vms.push(vm),
            Err(e) => break e,
        }
        assert!(vms.len() < 1000, "the limit never bit");
    };
    let mut chain = format!("{err}");
    let mut cause = std::error::Error::source(&err);
    let mut os = None;
    while let Some(c) = cause {
        chain.push_str(&format!(": {c}"));
        os = os.or(c.downcast_ref::<std::io::Error>().and_then(|e| e.raw_os_error()));
        cause = c.source();
    }
    assert!(!vms.is_empty(), "no VM fitted: {chain}");
    assert_eq!(os, Some(errno), "{chain}");
    for vm in &mut vms {
        assert!(answers(vm), "a running VM was affected");
    }
    println!("{} VMs, then: {chain}", vms.len());
    println!("{scenario}: ok");
}

#[test]
fn running_out_of_file_descriptors_is_a_typed_error() {
    let test = "running_out_of_file_descriptors_is_a_typed_error";
    if std::env::var(CHILD).as_deref() == Ok("fd-limit") {
        return restore_until_exhausted(
            Strategy::Uffd,
            || set_limit(libc::RLIMIT_NOFILE, 64),
            libc::EMFILE,
            "fd-limit",
        );
    }
    if hypervisor(test).is_some() {
        in_child(test, "fd-limit");
    }
}

#[test]
fn running_out_of_memory_for_vms_is_a_typed_error() {
    let test = "running_out_of_memory_for_vms_is_a_typed_error";
    if std::env::var(CHILD).as_deref() == Ok("memory-limit") {
        // Room for the process as it is and for a few more VMs' address space.
        let limit = || {
            let vm_kib = snapvisor_vmm::metrics::proc_field("/proc/self/status", "VmSize").unwrap();
            set_limit(libc::RLIMIT_AS, vm_kib * 1024 + 4 * MEM + (256 << 20));
        };
        return restore_until_exhausted(Strategy::Lazy, limit, libc::ENOMEM, "memory-limit");
    }
    if hypervisor(test).is_some() {
        in_child(test, "memory-limit");
    }
}
