//! Fuzz target `pool_superblock`: see `snapvisor_vmm::fuzzing::pool_superblock`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| snapvisor_vmm::fuzzing::pool_superblock(data));
