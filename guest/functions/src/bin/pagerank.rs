//! Guest image of the `pagerank` function.
#![no_std]
#![no_main]

snapvisor_sdk::entry!(main);

fn main() -> ! {
    snapvisor_guest_functions::serve::<snapvisor_functions::pagerank::Pagerank>()
}
