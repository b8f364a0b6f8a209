//! Fuzz target `elf`: see `snapvisor_vmm::fuzzing::elf`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| snapvisor_vmm::fuzzing::elf(data));
