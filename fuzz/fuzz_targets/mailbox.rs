//! Fuzz target `mailbox`: see `snapvisor_vmm::fuzzing::mailbox_exit`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| snapvisor_vmm::fuzzing::mailbox_exit(data));
