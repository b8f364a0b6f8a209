//! Hypercalls: `out` to the VMM's ports (see `snapvisor_abi::port`).
//!
//! The VMM's TSS I/O permission bitmap grants the hypercall ports to CPL3, so `out` to
//! them traps to the VMM; any other port raises #GP.

use crate::MessageWriter;
use snapvisor_abi::port;

/// Writes `value` to `port`: one exit to the VMM.
#[inline(always)]
pub fn out(port: u16, value: u32) {
    // SAFETY: `out` to a snapvisor port is the hypercall mechanism (the I/O bitmap permits it at
    // CPL3). The asm has no `nomem`, so the compiler finishes every earlier memory write
    // (e.g. the response in the mailbox) before it.
    unsafe {
        core::arch::asm!("out dx, eax", in("dx") port, in("eax") value, options(nostack, preserves_flags));
    }
}

/// Tells the VMM the guest is ready for a request; returns when one is in the mailbox.
pub fn ready() {
    out(port::READY, 0);
}

/// Prints formatted text on the VMM's console (truncated to the message area).
pub fn console(args: core::fmt::Arguments<'_>) {
    let len = MessageWriter::format(args);
    out(port::CONSOLE, len);
}

/// Ends the guest with a message; the VMM reports it as the invocation's error.
pub fn abort_with(args: core::fmt::Arguments<'_>) -> ! {
    let len = MessageWriter::format(args);
    loop {
        // The VMM never resumes an aborted guest; the loop only satisfies `-> !`.
        out(port::ABORT, len);
    }
}
