//! The runtime every snapvisor guest links: entry point, heap, hypercalls, panic handling
//! and the [`serve`] loop.
//!
//! A guest is a static, kernel-less program. The VMM starts it in 64-bit mode at CPL3
//! with `rdi` pointing at the [`BootInfo`](abi::BootInfo) and `rsp` at the top of the
//! stack (see `docs/guest-abi.md`). A function crate is a few lines:
//!
//! ```ignore
//! #![no_std]
//! #![no_main]
//! snapvisor_runtime::entry!(main);
//! fn main() -> ! {
//!     snapvisor_runtime::serve(|| MyState::new(), |state, request| state.handle(request))
//! }
//! ```
#![no_std]

extern crate alloc;

pub use snapvisor_abi as abi;

mod heap;
pub mod hypercall;
mod mem;

use abi::{layout, mailbox, BootInfo, MailboxHeader};
use alloc::vec::Vec;
use core::fmt::Write;

#[global_allocator]
static HEAP: talc::sync::TalcLock<spinning_top::RawSpinlock, heap::GrowingHeap, talc::DefaultBinning> =
    talc::sync::TalcLock::new(heap::GrowingHeap::empty());

/// Defines the guest's entry point `_start`, which sets up the runtime and calls `$main`.
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

/// Checks the boot info and gives the heap it describes to the allocator.
///
/// # Safety
/// `boot` must point at the VMM's boot info; call once, before any allocation.
pub unsafe fn start(boot: *const BootInfo) {
    // SAFETY: the caller guarantees `boot` is the VMM-written boot info.
    let info = unsafe { core::ptr::read_volatile(boot) };
    if info.magic != abi::BOOT_MAGIC || info.abi_version != abi::ABI_VERSION {
        hypercall::abort_with(format_args!(
            "boot info: magic {:#x}, ABI version {} (this runtime speaks version {})",
            info.magic,
            info.abi_version,
            abi::ABI_VERSION
        ));
    }
    if info.heap_end <= info.heap_start {
        hypercall::abort_with(format_args!("empty heap {:#x}..{:#x}", info.heap_start, info.heap_end));
    }
    // SAFETY: the heap range is guest RAM that nothing else uses (guest ABI).
    HEAP.lock().source = unsafe { heap::GrowingHeap::new(info.heap_start as *mut u8, info.heap_end as *mut u8) };
}

/// Runs `init` once, then serves requests forever: `ready` → request → `handler` → respond.
///
/// The VMM snapshots a guest at its first `ready`, so everything `init` builds is in the
/// snapshot. The request slice points into the mailbox and is valid until the handler returns.
pub fn serve<S>(init: impl FnOnce() -> S, mut handler: impl FnMut(&mut S, &[u8]) -> Vec<u8>) -> ! {
    let mut state = init();
    loop {
        hypercall::ready();
        let response = handler(&mut state, request());
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

/// Copies `response` into the mailbox and hands it to the VMM.
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

/// Writes formatted text to the VMM's console.
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
