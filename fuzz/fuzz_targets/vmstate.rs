//! Fuzz target `vmstate`: see `snapvisor_vmm::fuzzing::vmstate`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| snapvisor_vmm::fuzzing::vmstate(data));
