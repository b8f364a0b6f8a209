//! Issue 8, classes 6–8 (VMM side): a guest cannot reach the VMM's structures in its own
//! VM (page tables, descriptor tables, stubs, exception stack: supervisor-only; boot info:
//! read-only), every such attempt is a typed fault error, exceptions are still reported,
//! and guest output is bounded by writes as well as bytes and escaped where it is shown.

mod common;

use common::*;
use snapvisor_vmm::vstate::vcpu::{Console, VcpuError};
use snapvisor_vmm::{Error, MicroVm};

fn invoke_hostile(hv: &snapvisor_vmm::Hypervisor, request: &str) -> (Result<Vec<u8>, Error>, MicroVm) {
    let (mut vm, _) = MicroVm::boot(hv, image("hostile"), MEM).expect("boot");
    vm.wait_ready(TIMEOUT).expect("init");
    let result = vm.invoke(request.as_bytes(), TIMEOUT).map(|i| i.response);
    (result, vm)
}

#[test]
fn the_vmms_structures_in_the_guest_are_out_of_its_reach() {
    let Some(hv) = hypervisor("the_vmms_structures_in_the_guest_are_out_of_its_reach") else { return };
    for (request, region, write) in [
        ("write-page-table", "page tables", true),
        ("read-page-table", "page tables", false),
        ("write-gdt", "GDT", true),
        ("write-tss", "TSS", true),
        ("read-idt", "IDT", false),
        ("write-stub", "exception stubs", true),
        ("read-exception-stack", "exception stack", false),
        ("write-boot-info", "boot info", true),
    ] {
        match invoke_hostile(&hv, request).0 {
            Err(Error::Vcpu(e @ VcpuError::PlatformAccess { .. })) => {
                let VcpuError::PlatformAccess { region: r, write: w, .. } = e else { unreachable!() };
                assert_eq!((r, w), (region, write), "{request}");
                assert!(e.to_string().contains(region), "{e}");
            }
            other => panic!("{request}: {other:?}"),
        }
    }
    // The boot info stays readable: the guest runtime reads it at start.
    let (read, _) = invoke_hostile(&hv, "read-boot-info");
    let magic = format!("{:#x}", snapvisor_abi::BOOT_MAGIC);
    assert_eq!(String::from_utf8(read.expect("read-boot-info")).unwrap(), magic);
}

#[test]
fn a_snapshot_keeps_the_protection() {
    let Some(hv) = hypervisor("a_snapshot_keeps_the_protection") else { return };
    let tmp = TempDir::new("protect");
    let dir = tmp.path().join("hostile");
    take_snapshot(&hv, "hostile", &dir);
    let source = snapvisor_vmm::restore::SnapshotSource::Dir(dir);
    let strategy = snapvisor_vmm::restore::strategy(snapvisor_vmm::restore::Strategy::Lazy);
    let mut vm = snapvisor_vmm::restore::restore(&hv, &source, strategy.as_ref()).expect("restore");
    match vm.invoke(b"write-page-table", TIMEOUT) {
        Err(Error::Vcpu(VcpuError::PlatformAccess { region: "page tables", .. })) => {}
        other => panic!("{:?}", other.map(|i| i.response)),
    }
}

#[test]
fn console_floods_are_bounded_by_writes() {
    let Some(hv) = hypervisor("console_floods_are_bounded_by_writes") else { return };
    let (result, vm) = invoke_hostile(&hv, "console-flood");
    assert_eq!(result.expect("console-flood"), b"console-flood");
    assert_eq!(vm.console().len(), Console::WRITES_LIMIT, "40,000 writes, empty and 1-byte, kept up to the limit");
}

#[test]
fn abort_messages_are_escaped_where_they_are_shown() {
    let Some(hv) = hypervisor("abort_messages_are_escaped_where_they_are_shown") else { return };
    match invoke_hostile(&hv, "abort-escapes").0 {
        Err(e @ Error::Vcpu(VcpuError::GuestAbort(_))) => {
            let Error::Vcpu(VcpuError::GuestAbort(raw)) = &e else { unreachable!() };
            assert!(raw.contains('\x1b'), "the raw message is kept for programs: {raw:?}");
            let shown = e.to_string();
            assert!(!shown.chars().any(|c| c.is_control()), "{shown:?}");
            assert!(shown.contains("\\x1b]52;c;") && shown.contains("\\r\\nerror: forged line"), "{shown}");
        }
        other => panic!("{other:?}"),
    }
}
