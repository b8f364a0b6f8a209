//! Guest image of the `mmap` function.
#![no_std]
#![no_main]

snapvisor_sdk::entry!(main);

fn main() -> ! {
    snapvisor_guest_functions::serve::<snapvisor_functions::mmap::Mmap>()
}
