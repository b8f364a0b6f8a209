//! Fuzz target `ws_write`: see `snapvisor_vmm::fuzzing::ws_write`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| snapvisor_vmm::fuzzing::ws_write(data));
