//! The snapvisor guest SDK: everything a serverless function needs to run as a
//! kernel-less snapvisor microVM guest — the entry point, the heap, the request loop,
//! errors, logging and panics.
//!
//! A function is a `#![no_std]`, `#![no_main]` binary with two plain functions: an `init`
//! that builds its state once (before the snapshot is taken, so a SnapStart finds it
//! ready), and a handler that turns one request into one response:
//!
//! ```text
//! #![no_std]
//! #![no_main]
//! extern crate alloc;
//! use alloc::vec::Vec;
//!
//! snapvisor_sdk::function!(init, handle);
//!
//! struct State { greeting: Vec<u8> }
//!
//! fn init() -> State {
//!     State { greeting: b"hello, ".to_vec() }
//! }
//!
//! fn handle(state: &mut State, request: &[u8]) -> Result<Vec<u8>, &'static str> {
//!     if request.is_empty() {
//!         return Err("say who to greet");
//!     }
//!     snapvisor_sdk::println!("greeting {} bytes", request.len());
//!     Ok([state.greeting.as_slice(), request].concat())
//! }
//! ```
//!
//! - **Requests** are the bytes the caller sent (up to `abi::mailbox::REQUEST_MAX`, 12 MiB),
//!   read in place from the mailbox.
//! - **Responses** are bytes (up to `abi::mailbox::RESPONSE_MAX`); see [`IntoResponse`]. A
//!   handler's `Err(e)` becomes the response `{"error": "<e>"}`, which the VMM reports as a
//!   function error; the guest keeps serving.
//! - **Panics** end the VM: the message reaches the VMM as the invocation's error.
//! - **Logging**: [`println!`] writes a line to the VMM's console (`snapvisor run` shows it).
//! - **Heap**: `alloc` works (`Vec`, `String`, `Box`, …) over all memory above the image; it
//!   grows in 64 KiB steps as it is used. [`boot_info`] tells how much there is. What `init`
//!   allocates stays where the snapshot has it; requests allocate from an arena above it
//!   that is zero in the snapshot, so a restored VM's writes land in fresh pages and the
//!   snapshot's pages stay shared (freeing an init object while serving does not reuse
//!   its memory).
//!
//! Building: the binary needs the link setup `snapvisor-sdk-build` gives it from a build
//! script, and `panic = "abort"`; `docs/writing-functions.md` and `guest/template` show a
//! complete project. The contract with the VMM is `docs/guest-abi.md`.
#![no_std]

extern crate alloc;

pub use snapvisor_abi as abi;

mod heap;
pub mod hypercall;
mod mem;
mod phased;
mod response;

pub use response::{error_response, IntoResponse};

use abi::{layout, mailbox, BootInfo, MailboxHeader};
use core::fmt::Write;

#[global_allocator]
static HEAP: phased::PhasedHeap = phased::PhasedHeap::empty();

/// The boot info, kept by [`start`].
static BOOT: spinning_top::Spinlock<BootInfo> = spinning_top::Spinlock::new(BootInfo {
    magic: 0,
    abi_version: 0,
    reserved: 0,
    mem_size: 0,
    heap_start: 0,
    heap_end: 0,
    mailbox: 0,
});

/// Defines the guest's entry point for a function: `init` once, then `handler` for every
/// request (see [`serve`]).
///
/// `init` is a `fn() -> S`; `handler` is a `fn(&mut S, &[u8]) -> R` where `R` is any
/// [`IntoResponse`] (`Vec<u8>`, `String`, `Result<_, impl Display>`, …).
#[macro_export]
macro_rules! function {
    ($init:path, $handler:path) => {
        $crate::entry!(__snapvisor_function_main);

        fn __snapvisor_function_main() -> ! {
            $crate::serve($init, $handler)
        }
    };
}

/// Defines the guest's entry point `_start`, which sets up the SDK and calls `$main`
/// (a `fn() -> !`). Use it instead of [`function!`] for a guest that runs its own loop.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        /// Entry point: the VMM jumps here at CPL3 with `rdi` = boot info.
        ///
        /// # Safety
        /// Only the VMM calls this, once, with a valid boot-info pointer.
        #[no_mangle]
        #[link_section = ".text._start"]
        pub unsafe extern "C" fn _start(boot: *const $crate::abi::BootInfo) -> ! {
            // SAFETY: the VMM passes a pointer to the boot info it wrote (guest ABI).
            unsafe { $crate::start(boot) };
            $main()
        }
    };
}

/// Checks the boot info, keeps a copy for [`boot_info`], and gives the heap it describes
/// to the allocator. Called by the entry point that [`entry!`] defines.
///
/// # Safety
/// `boot` must point at the VMM's boot info; call once, before any allocation.
pub unsafe fn start(boot: *const BootInfo) {
    // SAFETY: the caller guarantees `boot` is the VMM-written boot info.
    let info = unsafe { core::ptr::read_volatile(boot) };
    if info.magic != abi::BOOT_MAGIC || info.abi_version != abi::ABI_VERSION {
        hypercall::abort_with(format_args!(
            "boot info: magic {:#x}, ABI version {} (this SDK speaks version {})",
            info.magic,
            info.abi_version,
            abi::ABI_VERSION
        ));
    }
    if info.heap_end <= info.heap_start {
        hypercall::abort_with(format_args!("empty heap {:#x}..{:#x}", info.heap_start, info.heap_end));
    }
    *BOOT.lock() = info;
    // SAFETY: the heap range is guest RAM that nothing else uses (guest ABI); called once.
    unsafe { HEAP.start(info.heap_start as *mut u8, info.heap_end as *mut u8) };
}

/// What the VMM told the guest at boot: memory size, heap range, mailbox address.
pub fn boot_info() -> BootInfo {
    *BOOT.lock()
}

/// Bytes of heap the guest has in all (used or not).
pub fn heap_size() -> u64 {
    let info = boot_info();
    info.heap_end - info.heap_start
}

/// Runs `init` once, then serves requests forever: `ready` → request → `handler` → respond.
///
/// The VMM snapshots a guest at its first `ready`, so everything `init` builds is in the
/// snapshot; from then on requests allocate from an arena that was zero in the snapshot
/// (see the `phased` module). The request slice points into the mailbox and is valid until
/// the handler returns.
pub fn serve<S, R: IntoResponse>(init: impl FnOnce() -> S, mut handler: impl FnMut(&mut S, &[u8]) -> R) -> ! {
    let mut state = init();
    HEAP.start_serving();
    loop {
        hypercall::ready();
        let response = handler(&mut state, request()).into_response();
        respond(&response);
    }
}

/// The request the VMM placed in the mailbox before resuming a ready guest. Only valid
/// until the guest is ready again (the VMM then overwrites it), hence private to `serve`.
fn request<'a>() -> &'a [u8] {
    let header = (layout::MAILBOX + mailbox::HEADER) as *const MailboxHeader;
    // SAFETY: the mailbox header is guest RAM at a fixed address (guest ABI).
    let header = unsafe { core::ptr::read_volatile(header) };
    let len = (header.request_len as usize).min(mailbox::REQUEST_MAX as usize);
    // SAFETY: the request area is guest RAM reserved for the VMM's request (guest ABI); the VMM
    // does not change it until the guest is ready again.
    unsafe { core::slice::from_raw_parts((layout::MAILBOX + mailbox::REQUEST) as *const u8, len) }
}

/// Copies `response` into the mailbox and hands it to the VMM. A response larger than the
/// response area ends the VM with a message saying so.
pub fn respond(response: &[u8]) {
    if response.len() as u64 > mailbox::RESPONSE_MAX {
        hypercall::abort_with(format_args!(
            "response of {} bytes does not fit the mailbox's {} bytes",
            response.len(),
            mailbox::RESPONSE_MAX
        ));
    }
    let area = (layout::MAILBOX + mailbox::RESPONSE) as *mut u8;
    // SAFETY: the response area is guest RAM of RESPONSE_MAX bytes (guest ABI); length checked.
    unsafe { core::ptr::copy_nonoverlapping(response.as_ptr(), area, response.len()) };
    hypercall::out(abi::port::RESPOND, response.len() as u32);
}

/// Writes a formatted line to the VMM's console (truncated to the message area, 508 KiB).
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::hypercall::console(format_args!($($arg)*))
    };
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    hypercall::abort_with(format_args!("{info}"))
}

/// Writes into the mailbox's message area, truncating at its end.
pub(crate) struct MessageWriter {
    len: usize,
}

impl MessageWriter {
    pub(crate) fn format(args: core::fmt::Arguments<'_>) -> u32 {
        let mut writer = MessageWriter { len: 0 };
        let _ = writer.write_fmt(args);
        writer.len as u32
    }
}

impl Write for MessageWriter {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = mailbox::MESSAGE_MAX as usize - self.len;
        let take = s.len().min(room);
        let area = (layout::MAILBOX + mailbox::MESSAGE) as *mut u8;
        // SAFETY: the message area is guest RAM of MESSAGE_MAX bytes; `len + take` stays inside.
        unsafe { core::ptr::copy_nonoverlapping(s.as_ptr(), area.add(self.len), take) };
        self.len += take;
        Ok(())
    }
}
