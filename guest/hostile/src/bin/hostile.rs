//! A guest that misbehaves on request, for the VMM's fault-handling tests.
//!
//! Init fills an 8 MiB buffer with a pattern (so its snapshot has data to protect). The
//! request names the behaviour: `echo`, `hello`, `loop`, `panic`, `null`, `ud`,
//! `stack-overflow`, `respond-too-long`, `console-too-long`, `abort-too-long`,
//! `unknown-port`, `in-port`, `fake-exception`, `forge-exception` (grant itself the
//! exception port and run a stub's `out` at CPL3 with a wild stack pointer), `spam` (print
//! 4 MiB to the console, then answer), `scribble` (overwrite the buffer, answer its digest),
//! `sum` (answer a checksum of the buffer), `say:TEXT` (print TEXT to the console and answer
//! it, raw), `die:TEXT` (abort with TEXT as the message).
//!
//! Reaching for the VMM's structures in the low 2 MiB (each must fault): `write-page-table`,
//! `read-page-table`, `write-gdt`, `write-tss`, `read-idt`, `write-stub`,
//! `read-exception-stack`, `write-boot-info`; `read-boot-info` is allowed (answers the
//! boot magic). Output floods and forgeries: `console-flood` (20,000 empty and 20,000
//! one-byte console writes, then answer), `abort-escapes` (abort with terminal escapes and
//! a forged `error:` line in the message).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::vec::Vec;
use snapvisor_abi::{layout, mailbox, port};
use snapvisor_sdk::hypercall::out;

snapvisor_sdk::entry!(main);

const BUFFER: usize = 8 << 20;

fn main() -> ! {
    snapvisor_sdk::serve(init, |buffer: &mut Vec<u8>, request: &[u8]| handle(buffer, request))
}

fn init() -> Vec<u8> {
    (0..BUFFER).map(|i| (i % 251) as u8 | 1).collect()
}

fn checksum(buffer: &[u8]) -> u64 {
    buffer.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let frame = [depth; 64];
    core::hint::black_box(&frame);
    recurse(depth + 1) + frame[0]
}

/// Writes to `addr`; answers only if the write did not fault.
fn poke(addr: u64) -> Vec<u8> {
    // SAFETY: deliberately writes one of the VMM's structures, to check that it faults.
    unsafe { core::ptr::write_volatile(addr as *mut u64, 0) };
    format!("wrote {addr:#x}").into_bytes()
}

/// Reads `addr`; answers what it read if the read did not fault.
fn peek(addr: u64) -> Vec<u8> {
    // SAFETY: deliberately reads one of the VMM's structures, to check whether it faults.
    let v = unsafe { core::ptr::read_volatile(addr as *const u64) };
    format!("{v:#x}").into_bytes()
}

fn handle(buffer: &mut [u8], request: &[u8]) -> Vec<u8> {
    if let Some(text) = request.strip_prefix(b"say:") {
        let text = core::str::from_utf8(text).unwrap_or("(not UTF-8)");
        snapvisor_sdk::println!("{text}");
        return text.as_bytes().to_vec();
    }
    if let Some(text) = request.strip_prefix(b"die:") {
        snapvisor_sdk::hypercall::abort_with(format_args!("{}", core::str::from_utf8(text).unwrap_or("?")));
    }
    match request {
        b"echo" => request.to_vec(),
        b"hello" => {
            snapvisor_sdk::println!("hello from the guest");
            request.to_vec()
        }
        b"loop" => loop {
            core::hint::spin_loop();
        },
        b"panic" => panic!("hostile guest panics on purpose"),
        b"null" => {
            // SAFETY: deliberately reads the unmapped null page to raise #PF.
            let v = unsafe { core::ptr::read_volatile(core::ptr::null::<u64>()) };
            format!("{v}").into_bytes()
        }
        b"ud" => {
            // SAFETY: deliberately executes an undefined instruction to raise #UD.
            unsafe { core::arch::asm!("ud2") };
            Vec::new()
        }
        b"stack-overflow" => format!("{}", recurse(0)).into_bytes(),
        b"respond-too-long" => {
            out(port::RESPOND, mailbox::RESPONSE_MAX as u32 + 1);
            Vec::new()
        }
        b"console-too-long" => {
            out(port::CONSOLE, mailbox::MESSAGE_MAX as u32 + 1);
            Vec::new()
        }
        b"abort-too-long" => {
            out(port::ABORT, u32::MAX);
            Vec::new()
        }
        b"unknown-port" => {
            out(0x99, 0);
            Vec::new()
        }
        b"in-port" => {
            let v: u8;
            // SAFETY: deliberately reads from an I/O port the VMM does not serve.
            unsafe { core::arch::asm!("in al, dx", in("dx") 0x14u16, out("al") v) };
            format!("{v}").into_bytes()
        }
        b"fake-exception" => {
            out(port::EXCEPTION, 0);
            Vec::new()
        }
        b"forge-exception" => {
            // Clear the I/O bitmap bits of ports 0x20..0x28 in the TSS (all memory is the
            // guest's), then jump to the `out` of vector 0's stub with rsp at the very top.
            let bitmap = (layout::TSS + 0x68 + 4) as *mut u8;
            // SAFETY: deliberately rewrites the guest's own TSS (guest memory) to misbehave.
            unsafe { core::ptr::write_volatile(bitmap, 0) };
            let stub_out = layout::EXCEPTION_STUBS + 4;
            // SAFETY: deliberately jumps into the VMM's stub at CPL3; it never returns.
            unsafe { core::arch::asm!("mov rsp, -8", "jmp {0}", in(reg) stub_out, options(noreturn)) }
        }
        b"spam" => {
            let line = [b'x'; 65536];
            let text = core::str::from_utf8(&line).unwrap_or_default();
            for _ in 0..64 {
                snapvisor_sdk::println!("{text}");
            }
            request.to_vec()
        }
        b"scribble" => {
            for (i, b) in buffer.iter_mut().enumerate() {
                *b = (i % 13) as u8;
            }
            format!("{:016x}", checksum(buffer)).into_bytes()
        }
        b"sum" => format!("{:016x}", checksum(buffer)).into_bytes(),
        b"write-page-table" => poke(layout::PML4),
        b"read-page-table" => peek(layout::PDPT),
        b"write-gdt" => poke(layout::GDT),
        b"write-tss" => poke(layout::TSS + 0x68),
        b"read-idt" => peek(layout::IDT),
        b"write-stub" => poke(layout::EXCEPTION_STUBS),
        b"read-exception-stack" => peek(layout::EXCEPTION_STACK_TOP - 8),
        b"write-boot-info" => poke(layout::BOOT_INFO),
        b"read-boot-info" => peek(layout::BOOT_INFO),
        b"console-flood" => {
            let message = (layout::MAILBOX + mailbox::MESSAGE) as *mut u8;
            // SAFETY: the message area is guest memory reserved for console text.
            unsafe { core::ptr::write_volatile(message, b'.') };
            for len in [0, 1] {
                for _ in 0..20_000 {
                    out(port::CONSOLE, len);
                }
            }
            request.to_vec()
        }
        b"abort-escapes" => {
            snapvisor_sdk::hypercall::abort_with(format_args!("\x1b]52;c;aGk=\x07\r\nerror: forged line\x1b[8m"))
        }
        other => format!("unknown request {:?}", core::str::from_utf8(other)).into_bytes(),
    }
}
