//! A `pass` VM trimmed after its invocation: the untouched parts of its fresh huge pages
//! are given back, so that what it keeps private is what it wrote (the pages a `lazy` VM's
//! private mapping copied for the same request), and it answers its next request exactly
//! as before. In its own binary: the memory figures are this test's alone.

mod common;

use common::*;
use snapvisor_functions::catalog::MEASURE_INPUT;
use snapvisor_vmm::metrics::{written_pages, MemoryUsage};
use snapvisor_vmm::restore::{restore, strategy, Pass, RestoredVm, SnapshotSource, Strategy};
use std::io::Write;
use std::path::Path;

fn private_bytes(vm: &RestoredVm) -> u64 {
    let m = vm.vm.memory().unwrap().mapping();
    MemoryUsage::scan(m.as_ptr(), m.len()).expect("pagemap").private_bytes
}

#[test]
fn a_trimmed_pass_vm_keeps_what_it_wrote_and_answers_again() {
    let Some(hv) = hypervisor("a_trimmed_pass_vm_keeps_what_it_wrote_and_answers_again") else { return };
    // chameleon: its input B grows the heap over a few 2 MiB chunks, the last one partly.
    let name = "chameleon";
    let info = snapvisor_functions::info(name).expect("built-in function");
    let (_tmp, dir) = recorded_snapshot(&hv, name, "pass-trim");
    let request = info.input(MEASURE_INPUT).expect("input").request;
    let want = native_digest(name, request);

    // What the request writes: the pages a private mapping of the memory file copies.
    let written = {
        let mut lazy = restore(&hv, &SnapshotSource::Dir(dir.clone()), strategy(Strategy::Lazy).as_ref()).unwrap();
        let inv = lazy.invoke(request, TIMEOUT).expect("lazy");
        assert_eq!(digest(&inv.response), want);
        let m = lazy.vm.memory().unwrap().mapping();
        written_pages(m.as_ptr(), m.len()).unwrap().len() as u64 * 4096
    };

    let shm = TempDir::new_in(Path::new("/dev/shm"), "pass-trim-pool");
    let pool = shm_pool(&shm, 512 << 20);
    pool.import(&dir, name, &mut |_, _| {}).expect("import");
    let source = SnapshotSource::Pool { pool: pool.clone(), id: name.into() };
    // Huge pages at the heap's end too (not 64 KiB folios, where the host has them).
    let pass = Pass { fresh_folios: false, ..Pass::default() };
    let mut vm = restore(&hv, &source, &pass).expect("restore");
    assert!(!vm.trim.is_empty(), "pass maps the heap's fresh memory with huge pages");
    let inv = vm.invoke(request, TIMEOUT).expect("invoke");
    assert_eq!(digest(&inv.response), want);
    let at_response = private_bytes(&vm);

    let trimmed = vm.trim().expect("trim");
    let kept = private_bytes(&vm);
    eprintln!("{name}: written {written}, private at the response {at_response}, kept {kept} bytes; {trimmed:?}");
    // A page written with zeros is dropped too, so `kept` may be below `written`.
    assert!(kept <= written + (64 << 10), "kept {kept} bytes for {written} written");
    assert!(kept <= at_response);
    if thp_on_request() {
        assert!(trimmed.chunks_trimmed >= 1 && kept < at_response, "{trimmed:?}: {at_response} → {kept}");
    } else {
        let _ = writeln!(std::io::stderr(), "skipped: the strict part (transparent huge pages are off on this host)");
    }

    // The trimmed VM serves its next request like the host.
    vm.vm.finish(TIMEOUT).expect("ready again");
    let again = vm.invoke(request, TIMEOUT).expect("invoke after the trim");
    assert_eq!(digest(&again.response), want);
    assert!(pool.fsck(true).is_clean());
}
