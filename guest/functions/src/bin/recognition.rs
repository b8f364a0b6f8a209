//! Guest image of the `recognition` function.
#![no_std]
#![no_main]

use snapvisor_functions::{handle, recognition::Recognition, Function};

snapvisor_runtime::entry!(main);

fn main() -> ! {
    snapvisor_runtime::serve(Recognition::init, handle::<Recognition>)
}
