//! Fuzz target `ws_faasnap`: see `snapvisor_vmm::fuzzing::ws_faasnap`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| snapvisor_vmm::fuzzing::ws_faasnap(data));
