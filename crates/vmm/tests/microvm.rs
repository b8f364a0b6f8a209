//! Fresh microVMs: every kind of misbehaving guest or bad input ends in a clear, typed
//! error. (Every built-in function answering like the host: `tests/functions.rs`.)

mod common;

use common::*;
use snapvisor_vmm::loader::ImageError;
use snapvisor_vmm::vstate::vcpu::VcpuError;
use snapvisor_vmm::{Error, MicroVm, Phase};
use std::time::{Duration, Instant};

#[test]
fn a_bad_request_is_a_function_error_not_a_crash() {
    let Some(hv) = hypervisor("a_bad_request_is_a_function_error_not_a_crash") else { return };
    let (mut vm, _) = MicroVm::boot(&hv, image("json"), MEM).expect("boot");
    vm.wait_ready(TIMEOUT).expect("init");
    let inv = vm.invoke(b"{not json", TIMEOUT).expect("invoke");
    let v: serde_json::Value = serde_json::from_slice(&inv.response).expect("JSON");
    assert!(v["error"].as_str().expect("error").contains("not a JSON document"), "{v}");
    vm.finish(TIMEOUT).expect("the guest survives");
    let inv = vm.invoke(request("json").as_bytes(), TIMEOUT).expect("invoke");
    assert_eq!(digest(&inv.response), native_digest("json", request("json")));
}

fn hostile(hv: &snapvisor_vmm::Hypervisor, request: &str, timeout: Duration) -> Result<Vec<u8>, Error> {
    let (mut vm, _) = MicroVm::boot(hv, image("hostile"), MEM).expect("boot");
    vm.wait_ready(TIMEOUT).expect("init");
    let result = vm.invoke(request.as_bytes(), timeout).map(|i| i.response);
    if result.is_err() {
        assert_eq!(vm.phase(), Phase::Failed);
        assert!(matches!(vm.invoke(b"echo", timeout), Err(Error::WrongPhase { .. })));
    }
    result
}

#[test]
fn hostile_guests_end_in_typed_errors() {
    let Some(hv) = hypervisor("hostile_guests_end_in_typed_errors") else { return };
    assert_eq!(hostile(&hv, "echo", TIMEOUT).expect("echo"), b"echo");

    match hostile(&hv, "panic", TIMEOUT) {
        Err(Error::Vcpu(VcpuError::GuestAbort(msg))) => {
            assert!(msg.contains("hostile guest panics on purpose"), "{msg}")
        }
        other => panic!("panic: {other:?}"),
    }
    match hostile(&hv, "null", TIMEOUT) {
        Err(Error::Vcpu(VcpuError::GuestException { vector: 14, rip, .. })) => {
            assert!(rip >= 0x40_0000, "rip {rip:#x}")
        }
        other => panic!("null: {other:?}"),
    }
    match hostile(&hv, "ud", TIMEOUT) {
        Err(Error::Vcpu(VcpuError::GuestException { vector: 6, .. })) => {}
        other => panic!("ud: {other:?}"),
    }
    match hostile(&hv, "stack-overflow", TIMEOUT) {
        // The guard page below the stack turns an overflow into a page fault.
        Err(Error::Vcpu(VcpuError::GuestException { vector: 14, rsp, .. })) => {
            assert!(rsp < snapvisor_abi::layout::STACK_BASE + 0x1000, "rsp {rsp:#x}")
        }
        other => panic!("stack-overflow: {other:?}"),
    }
    for (request, what) in
        [("respond-too-long", "response"), ("console-too-long", "console"), ("abort-too-long", "abort message")]
    {
        match hostile(&hv, request, TIMEOUT) {
            Err(Error::Vcpu(VcpuError::BadLength { what: w, .. })) => assert_eq!(w, what),
            other => panic!("{request}: {other:?}"),
        }
    }
    // Ports outside the I/O bitmap fault; `in` on a granted port is refused by the VMM.
    for request in ["unknown-port", "fake-exception"] {
        match hostile(&hv, request, TIMEOUT) {
            Err(Error::Vcpu(VcpuError::GuestException { vector: 13, .. })) => {}
            other => panic!("{request}: {other:?}"),
        }
    }
    // Guest code that tries to grant itself the exception port (to reach a stub's `out`
    // with a wild stack pointer) cannot write the TSS: the write faults.
    match hostile(&hv, "forge-exception", TIMEOUT) {
        Err(Error::Vcpu(VcpuError::PlatformAccess { region: "TSS", write: true, .. })) => {}
        other => panic!("forge-exception: {other:?}"),
    }
    match hostile(&hv, "in-port", TIMEOUT) {
        Err(Error::Vcpu(VcpuError::BadPort { direction: "in", .. })) => {}
        other => panic!("in-port: {other:?}"),
    }
}

#[test]
fn a_guest_that_never_answers_is_stopped_at_the_timeout() {
    let Some(hv) = hypervisor("a_guest_that_never_answers_is_stopped_at_the_timeout") else { return };
    let start = Instant::now();
    match hostile(&hv, "loop", Duration::from_millis(300)) {
        Err(Error::Vcpu(VcpuError::Timeout(t))) => assert_eq!(t, Duration::from_millis(300)),
        other => panic!("loop: {other:?}"),
    }
    // A hang guard (100 × the timeout), not a speed check.
    assert!(start.elapsed() < Duration::from_secs(30), "the timeout did not stop the guest");
}

#[test]
fn console_writes_reach_the_vmm() {
    let Some(hv) = hypervisor("console_writes_reach_the_vmm") else { return };
    let (mut vm, _) = MicroVm::boot(&hv, image("hostile"), MEM).expect("boot");
    vm.wait_ready(TIMEOUT).expect("init");
    assert_eq!(vm.invoke(b"hello", TIMEOUT).expect("invoke").response, b"hello");
    assert_eq!(vm.console(), ["hello from the guest"]);
}

#[test]
fn console_output_is_capped() {
    let Some(hv) = hypervisor("console_output_is_capped") else { return };
    let (mut vm, _) = MicroVm::boot(&hv, image("hostile"), MEM).expect("boot");
    vm.wait_ready(TIMEOUT).expect("init");
    assert_eq!(vm.invoke(b"spam", TIMEOUT).expect("invoke").response, b"spam");
    let kept: usize = vm.console().iter().map(String::len).sum();
    assert!(kept <= snapvisor_vmm::vstate::vcpu::Console::LIMIT, "{kept} bytes kept");
    assert!(kept > 0);
}

#[test]
fn requests_and_operations_are_checked() {
    let Some(hv) = hypervisor("requests_and_operations_are_checked") else { return };
    let (mut vm, _) = MicroVm::boot(&hv, image("hostile"), MEM).expect("boot");
    assert!(matches!(
        vm.invoke(b"echo", TIMEOUT),
        Err(Error::WrongPhase { expected: Phase::Ready, actual: Phase::Booted })
    ));
    vm.wait_ready(TIMEOUT).expect("init");
    let huge = vec![b'x'; snapvisor_abi::mailbox::REQUEST_MAX as usize + 1];
    assert!(matches!(vm.invoke(&huge, TIMEOUT), Err(Error::RequestTooLarge { .. })));
    assert!(matches!(vm.finish(TIMEOUT), Err(Error::WrongPhase { .. })));
    for bad in [0, 15 << 20, (256 << 20) + 4096, 64 << 30] {
        assert!(matches!(MicroVm::boot(&hv, image("hostile"), bad), Err(Error::MemSize { .. })), "{bad}");
    }
}

#[test]
fn images_outside_the_contract_are_refused() {
    let Some(hv) = hypervisor("images_outside_the_contract_are_refused") else { return };
    let refuse = |elf: &[u8]| match MicroVm::boot(&hv, elf, MEM) {
        Err(Error::Image(e)) => e,
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("image accepted"),
    };
    assert!(matches!(
        refuse(b"not an elf at all, just text padding it out to sixty-four bytes......"),
        ImageError::NotElf(_)
    ));
    let good = image("hostile");
    assert!(matches!(refuse(&good[..40]), ImageError::NotElf(_)));
    // A dynamically linked position-independent executable of the host.
    if let Ok(ls) = std::fs::read("/bin/ls") {
        assert!(matches!(refuse(&ls), ImageError::NotExecutable(3) | ImageError::Dynamic));
    }
    // Move the first PT_LOAD segment below the image area.
    let mut low = good.to_vec();
    let phoff = u64::from_le_bytes(low[32..40].try_into().unwrap()) as usize;
    let phnum = u16::from_le_bytes(low[56..58].try_into().unwrap()) as usize;
    let load = (0..phnum).map(|i| phoff + i * 56).find(|&at| low[at..at + 4] == [1, 0, 0, 0]).expect("a PT_LOAD");
    for field in [16, 24] {
        low[load + field..load + field + 8].copy_from_slice(&0x1000u64.to_le_bytes());
    }
    assert!(matches!(refuse(&low), ImageError::SegmentOutside { .. }));
    // Segments that do not fit a small guest.
    match MicroVm::boot(&hv, image("recognition"), snapvisor_abi::layout::MIN_MEM_SIZE) {
        Ok(_) | Err(Error::Image(ImageError::SegmentOutside { .. })) => {}
        Err(other) => panic!("unexpected error {other}"),
    }
    // A 32-bit ELF.
    let mut class32 = good.to_vec();
    class32[4] = 1;
    assert!(matches!(refuse(&class32), ImageError::WrongMachine));
}
