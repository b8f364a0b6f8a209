//! Where an input's heap ends beyond the recording's, a `pass` VM maps 64 KiB folios
//! (`restore/pass.rs`): chameleon recorded with input A and invoked with B ends its heap in
//! a chunk A never reached, and keeps no more private memory at its response than it wrote
//! plus 1 MiB (with a huge page there it kept 1.7 MiB more). Needs root: the test turns the
//! host's 64 KiB folios on for its run and puts the setting back. One test in its own
//! binary, so that no other test of this suite runs while the setting is changed (other
//! processes on the host see it meanwhile; it changes only memory advised for huge pages).

mod common;

use common::*;
use snapvisor_functions::catalog::MEASURE_INPUT;
use snapvisor_vmm::restore::{restore, strategy, Pass, RestoredVm, SnapshotSource, Strategy};
use snapvisor_vmm::vstate::folios::{self, Folios};
use std::io::Write;
use std::path::Path;

const SETTING: &str = "/sys/kernel/mm/transparent_hugepage/hugepages-64kB/enabled";

fn private_bytes(vm: &RestoredVm) -> u64 {
    let m = vm.vm.memory().unwrap().mapping();
    snapvisor_vmm::metrics::written_pages(m.as_ptr(), m.len()).unwrap().len() as u64 * 4096
}

#[test]
fn a_heap_ending_beyond_the_recording_keeps_what_it_wrote_plus_little() {
    let test = "a_heap_ending_beyond_the_recording_keeps_what_it_wrote_plus_little";
    let Some(hv) = hypervisor_as_root(test) else { return };
    let setting = TempDir::new("pass-folios-setting");
    let record = setting.path().join("record");
    let before = std::fs::read_to_string(SETTING).unwrap_or_default();
    // As a run killed while it held the setting leaves it: its record, and `madvise`.
    let killed_run = before.contains("[never]");
    if killed_run {
        std::fs::write(&record, "never\n").unwrap();
        std::fs::write(SETTING, "madvise").unwrap();
    }
    let folios = match folios::enable(&record) {
        Folios::Unavailable(why) => {
            // Where the setting exists and was off, only larger sizes being allowed excuse it.
            let larger = [128, 256, 512, 1024].iter().any(|kib| {
                let path = format!("/sys/kernel/mm/transparent_hugepage/hugepages-{kib}kB/enabled");
                std::fs::read_to_string(path).is_ok_and(|v| !v.contains("[never]"))
            });
            assert!(!killed_run || larger, "64 KiB folios could not be turned on: {why}");
            let _ = writeln!(std::io::stderr(), "skipped: no 64 KiB folios here: {why} ({test})");
            return;
        }
        on => on,
    };
    if killed_run {
        // The killed run's change was undone, then made again by this one, recorded.
        assert!(matches!(folios, Folios::Enabled(_)), "{folios}");
        assert!(folios.to_string().contains("was `never`"), "{folios}");
        assert_eq!(std::fs::read_to_string(&record).unwrap(), "never\n");
    }
    assert!(folios::available());
    let name = "chameleon";
    let info = snapvisor_functions::info(name).expect("built-in function");
    let (_tmp, dir) = recorded_snapshot(&hv, name, "pass-folios");
    let request = info.input(MEASURE_INPUT).unwrap().request;

    // What input B writes: the pages a private mapping of the snapshot copies.
    let mut lazy = restore(&hv, &SnapshotSource::Dir(dir.clone()), strategy(Strategy::Lazy).as_ref()).unwrap();
    let expected = lazy.invoke(request, TIMEOUT).expect("lazy").response;
    let written = private_bytes(&lazy);
    drop(lazy);

    let shm = TempDir::new_in(Path::new("/dev/shm"), "pass-folios-pool");
    let pool = shm_pool(&shm, 512 << 20);
    pool.import(&dir, name, &mut |_, _| {}).expect("import");
    let source = SnapshotSource::Pool { pool, id: name.into() };
    let mut private = Vec::new();
    for pass in [Pass::default(), Pass { fresh_folios: false, ..Pass::default() }] {
        let mut vm = restore(&hv, &source, &pass).expect("restore");
        assert_eq!(vm.invoke(request, TIMEOUT).expect("invoke").response, expected);
        private.push(private_bytes(&vm));
        // The trim keeps the folio chunks as they are, and the VM answers again.
        vm.trim().expect("trim");
        vm.vm.finish(TIMEOUT).expect("ready again");
        assert_eq!(vm.invoke(request, TIMEOUT).expect("again").response, expected);
    }
    let _ = writeln!(
        std::io::stderr(),
        "{name}: written {written} bytes; pass private at the response: {} with folios, {} with a huge page",
        private[0],
        private[1]
    );
    // The setting is put back, its record gone.
    drop(folios);
    assert_eq!(std::fs::read_to_string(SETTING).unwrap_or_default(), before);
    assert!(!record.exists());

    let bound = written + (1 << 20);
    assert!(private[0] <= bound, "{} private bytes with folios, bound {bound}", private[0]);
    // The test would pass without folios if the huge page did too: it does not.
    if thp_on_request() {
        assert!(private[1] > bound, "{} private bytes with a huge page, bound {bound}", private[1]);
    } else {
        let _ = writeln!(std::io::stderr(), "skipped: the huge-page comparison (transparent huge pages are off here)");
    }
}
