//! Fuzz target `pool_image`: see `snapvisor_vmm::fuzzing::pool_image`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| snapvisor_vmm::fuzzing::pool_image(data));
