//! Fuzz target `manifest`: see `snapvisor_vmm::fuzzing::manifest`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| snapvisor_vmm::fuzzing::manifest(data));
