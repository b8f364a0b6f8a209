//! Fuzz target `pool_slot`: see `snapvisor_vmm::fuzzing::pool_slot`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| snapvisor_vmm::fuzzing::pool_slot(data));
