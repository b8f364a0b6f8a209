//! What a `pass` VM costs in memory, from the host's view: a guest that writes one byte in
//! each of 100 chunks of its snapshot's data keeps about 100 pages of 4 KiB, not 100 copies
//! of 2 MiB; the write set recorded with the snapshot travels into the pool's index. One
//! test in its own binary, so that the process's memory figures are this test's alone.

mod common;

use common::*;
use snapvisor_vmm::pool::medium;
use snapvisor_vmm::restore::{record, restore, strategy, SnapshotSource, Strategy};
use std::path::Path;

/// Anonymous memory and page tables of this process (bytes), from /proc/self/status.
fn host_view() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib = |key: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("{key} in status"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    (kib("RssAnon:") + kib("VmPTE:")) << 10
}

#[test]
fn a_vm_writing_one_byte_in_each_of_100_chunks_keeps_about_100_small_pages() {
    let Some(hv) = hypervisor("a_vm_writing_one_byte_in_each_of_100_chunks_keeps_about_100_small_pages") else {
        return;
    };
    let tmp = TempDir::new("pass-memory");
    let dir = tmp.path().join("sparse");
    // 512 MiB of guest memory: about 120 chunks of data to write into.
    let (mut vm, _) = snapvisor_vmm::MicroVm::boot(&hv, image("sparse"), 512 << 20).expect("boot");
    vm.wait_ready(TIMEOUT).expect("init");
    vm.snapshot(&hv, "sparse", image("sparse"), &dir, false).expect("snapshot");
    drop(vm);
    let recorded = record(&hv, &dir, b"100", "A", TIMEOUT).expect("record");
    assert!(recorded.write_pages >= 100, "{recorded:?}");
    let expected = {
        let mut lazy = restore(&hv, &SnapshotSource::Dir(dir.clone()), strategy(Strategy::Lazy).as_ref()).unwrap();
        lazy.invoke(b"100", TIMEOUT).expect("lazy").response
    };

    // The pool on tmpfs (copy-on-write in 4 KiB pages); with root, the default emulated medium.
    let shm = TempDir::new_in(Path::new("/dev/shm"), "pass-memory-pool");
    let root = TempDir::new("pass-memory-emulation");
    let mut media = vec![shm.path().join("pool")];
    if is_root("the same on the emulated huge-page tmpfs") {
        let (mnt, m) = medium::setup_emulation(root.path(), 0, medium::EmulatedKind::Tmpfs).expect("emulation");
        assert!(matches!(m, medium::Medium::EmulatedTmpfs { .. }), "{m}");
        media.push(mnt.join("pool"));
    }
    let result = std::panic::catch_unwind(|| {
        for path in &media {
            snapvisor_vmm::pool::Pool::create(path, 512 << 20).expect("create pool");
            let pool = snapvisor_vmm::pool::Pool::open(path).expect("open pool");
            pool.import(&dir, "sparse", &mut |_, _| {}).expect("import");
            let opened = pool.open_snapshot("sparse").expect("open");
            assert!(!opened.index().written.is_empty(), "the write set reached the index");
            assert_eq!(opened.index().recorded_with.as_deref(), Some("A"));
            drop(opened);

            let source = SnapshotSource::Pool { pool: pool.clone(), id: "sparse".into() };
            let before = host_view();
            let mut vm = restore(&hv, &source, strategy(Strategy::Pass).as_ref()).expect("restore");
            let inv = vm.invoke(b"100", TIMEOUT).expect("invoke");
            let private = {
                let m = vm.vm.memory().unwrap().mapping();
                snapvisor_vmm::metrics::written_pages(m.as_ptr(), m.len()).unwrap().len() as u64 * 4096
            };
            let spent = host_view().saturating_sub(before);
            drop(vm);
            assert_eq!(inv.response, expected, "{}", pool.medium());
            let bound = 100 * 4096 + (1 << 20);
            assert!(private <= bound, "{}: {private} private bytes (pagemap), bound {bound}", pool.medium());
            assert!(spent <= bound, "{}: the host spent {spent} bytes, bound {bound}", pool.medium());
        }
    });
    if media.len() > 1 {
        medium::teardown_emulation(root.path()).expect("teardown");
    }
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
