//! Fuzz target `pool_index`: see `snapvisor_vmm::fuzzing::pool_index`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| snapvisor_vmm::fuzzing::pool_index(data));
