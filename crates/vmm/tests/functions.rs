//! The built-in functions in real microVMs: every function answers every one of its
//! inputs from a fresh VM exactly like the host's own run of the same code; every
//! function, restored with every strategy (its working sets recorded with one input and
//! measured with another, as in the paper), answers like the host too; requests up to the
//! mailbox's limit arrive whole, and one past it is refused before anything is written.

mod common;

use common::*;
use snapvisor_functions::catalog::{INPUT_NAMES, MEASURE_INPUT, RECORD_INPUT};
use snapvisor_functions::{native, Info, Native, RequestKind, CATALOG};
use snapvisor_vmm::pool::Pool;
use snapvisor_vmm::restore::{record, restore, strategy, SnapshotSource, Strategy};
use snapvisor_vmm::{Error, Hypervisor, MicroVm, Phase};
use std::path::Path;

/// Guest memory for all of a function's inputs.
fn mem_for(info: &Info) -> u64 {
    info.inputs.iter().map(|i| i.mem_mib).max().unwrap_or(256) << 20
}

/// The inputs of a function with distinct requests (`A` and `B` repeat numbered inputs).
fn distinct_inputs(info: &Info) -> Vec<&'static snapvisor_functions::InputInfo> {
    let mut seen: Vec<&[u8]> = Vec::new();
    info.inputs
        .iter()
        .filter(|i| {
            let new = !seen.contains(&i.request);
            seen.push(i.request);
            new
        })
        .collect()
}

/// A request the function must refuse with an error response.
fn malformed(info: &Info) -> Option<&'static [u8]> {
    match (info.name, info.request) {
        (_, RequestKind::Empty) => None,
        ("compression", _) => Some(b""),
        _ => Some(b"{not json"),
    }
}

fn expected(native: &mut Native, request: &[u8]) -> String {
    digest(&native.invoke(request))
}

#[test]
fn every_function_answers_every_input_from_a_fresh_vm_like_the_host() {
    let Some(hv) = hypervisor("every_function_answers_every_input_from_a_fresh_vm_like_the_host") else { return };
    for info in CATALOG {
        let mut host = native(info.name).expect("native runner");
        let (mut vm, _) = MicroVm::boot(&hv, image(info.name), mem_for(info)).expect("boot");
        vm.wait_ready(TIMEOUT).expect("init");
        for input in distinct_inputs(info) {
            let inv = vm.invoke(input.request, TIMEOUT).unwrap_or_else(|e| panic!("{} {}: {e}", info.name, input.name));
            assert_eq!(digest(&inv.response), expected(&mut host, input.request), "{} input {}", info.name, input.name);
            vm.finish(TIMEOUT).expect("ready again");
        }
        if let Some(bad) = malformed(info) {
            let inv = vm.invoke(bad, TIMEOUT).expect("a malformed request is answered");
            let v: serde_json::Value = serde_json::from_slice(&inv.response).expect("JSON");
            assert!(v["error"].is_string(), "{}: {v}", info.name);
            vm.finish(TIMEOUT).expect("the guest survives a malformed request");
        }
    }
}

/// Boots `name` in `mem` bytes, runs its init and snapshots it into `dir`.
fn snapshot(hv: &Hypervisor, name: &str, mem: u64, dir: &Path) {
    let (mut vm, _) = MicroVm::boot(hv, image(name), mem).expect("boot");
    vm.wait_ready(TIMEOUT).expect("init");
    vm.snapshot(hv, name, image(name), dir, false).expect("snapshot");
}

#[test]
fn every_function_restores_with_every_strategy_like_the_host() {
    let Some(hv) = hypervisor("every_function_restores_with_every_strategy_like_the_host") else { return };
    let snaps = TempDir::new("functions-snaps");
    let shm = TempDir::new_in(Path::new("/dev/shm"), "functions-pool");
    let pool_path = shm.path().join("pool");
    Pool::create(&pool_path, 2 << 30).expect("create pool");
    let pool = Pool::open(&pool_path).expect("open pool");
    // The paper's two-input runs: record the working sets with A, measure with B.
    let (recorded_with, measured_with) = (RECORD_INPUT, MEASURE_INPUT);
    for info in CATALOG {
        let dir = snaps.path().join(info.name);
        snapshot(&hv, info.name, mem_for(info), &dir);
        let record_request = info.input(recorded_with).expect("input").request;
        let request = info.input(measured_with).expect("input").request;
        let mut host = native(info.name).expect("native runner");
        let recorded_digest = expected(&mut host, record_request);
        let want = expected(&mut host, request);
        let recorded = record(&hv, &dir, record_request, "A", TIMEOUT).expect("record");
        for response in &recorded.responses {
            assert_eq!(digest(response), recorded_digest, "{} while recording", info.name);
        }
        pool.import(&dir, info.name, &mut |_, _| {}).expect("import");
        for s in Strategy::ALL {
            let source = if s.uses_pool() {
                SnapshotSource::Pool { pool: pool.clone(), id: info.name.into() }
            } else {
                SnapshotSource::Dir(dir.clone())
            };
            let mut vm =
                restore(&hv, &source, strategy(s).as_ref()).unwrap_or_else(|e| panic!("{} {s}: {e}", info.name));
            let inv = vm.vm.invoke(request, TIMEOUT).unwrap_or_else(|e| panic!("{} {s}: {e}", info.name));
            assert_eq!(digest(&inv.response), want, "{} restored with {s}", info.name);
        }
        // The pool keeps only what the next functions need.
        pool.remove(info.name).expect("remove from the pool");
        std::fs::remove_dir_all(&dir).expect("remove the snapshot");
    }
    assert!(pool.fsck(true).is_clean());
}

#[test]
fn requests_up_to_the_limit_arrive_whole_and_larger_ones_are_refused() {
    let Some(hv) = hypervisor("requests_up_to_the_limit_arrive_whole_and_larger_ones_are_refused") else { return };
    let max = snapvisor_abi::mailbox::REQUEST_MAX as usize;
    // A JSON document of exactly the limit: an array of numbers.
    let mut document = String::from("[");
    while document.len() + 8 < max {
        document.push_str("1234567,");
    }
    document.push_str(&"9".repeat(max - document.len() - 1));
    document.push(']');
    assert_eq!(document.len(), max);
    let (mut vm, _) = MicroVm::boot(&hv, image("json"), MEM).expect("boot");
    vm.wait_ready(TIMEOUT).expect("init");
    let inv = vm.invoke(document.as_bytes(), TIMEOUT).expect("a request of the maximum size");
    let v: serde_json::Value = serde_json::from_slice(&inv.response).expect("JSON");
    assert_eq!(v["input_bytes"], max, "{v}");
    assert_eq!(digest(&inv.response), native_digest("json", document.as_bytes()));
    vm.finish(TIMEOUT).expect("ready again");
    // One byte more: refused before anything is written; the VM stays ready and usable.
    let mut longer = document.into_bytes();
    longer.push(b' ');
    match vm.invoke(&longer, TIMEOUT) {
        Err(Error::RequestTooLarge { len, max: limit }) => assert_eq!((len, limit), (max + 1, max as u64)),
        other => panic!("an oversized request: {:?}", other.map(|i| i.response.len())),
    }
    assert_eq!(vm.phase(), Phase::Ready);
    let small = snapvisor_functions::input("json", "A").expect("input");
    let inv = vm.invoke(small, TIMEOUT).expect("the VM still answers");
    assert_eq!(digest(&inv.response), native_digest("json", small));
}

#[test]
fn the_embedded_images_are_the_catalog() {
    let functions: Vec<&str> = snapvisor_guest_images::all().iter().filter(|i| i.function).map(|i| i.name).collect();
    let catalog: Vec<&str> = CATALOG.iter().map(|i| i.name).collect();
    assert_eq!(functions, catalog);
    for info in CATALOG {
        let names: Vec<&str> = info.inputs.iter().map(|i| i.name).collect();
        assert_eq!(names, INPUT_NAMES, "{}", info.name);
    }
}
