//! Guest image of the `json` function.
#![no_std]
#![no_main]

use snapvisor_functions::{handle, json::Json, Function};

snapvisor_runtime::entry!(main);

fn main() -> ! {
    snapvisor_runtime::serve(Json::init, handle::<Json>)
}
