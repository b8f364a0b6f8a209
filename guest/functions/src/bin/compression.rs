//! Guest image of the `compression` function.
#![no_std]
#![no_main]

use snapvisor_functions::{compression::Compression, handle, Function};

snapvisor_runtime::entry!(main);

fn main() -> ! {
    snapvisor_runtime::serve(Compression::init, handle::<Compression>)
}
