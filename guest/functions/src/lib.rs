//! The glue between the SDK and a built-in function: each binary in `src/bin` is
//! `serve::<TheFunction>()`.
#![no_std]

use snapvisor_functions::{handle, Env, Function};

/// Runs `F` as this guest's function: `init` with the heap the VMM gave, then requests.
pub fn serve<F: Function>() -> ! {
    let env = Env { heap_bytes: snapvisor_sdk::heap_size() };
    snapvisor_sdk::serve(|| F::init(&env), handle::<F>)
}
