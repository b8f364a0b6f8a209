//! Fuzz target `ws_reap`: see `snapvisor_vmm::fuzzing::ws_reap`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| snapvisor_vmm::fuzzing::ws_reap(data));
