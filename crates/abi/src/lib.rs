//! The contract between the snapvisor VMM and its kernel-less guests.
//!
//! This crate is `no_std` and has no dependencies: the host (`snapvisor-vmm`) and every
//! guest (through `guest/sdk`) compile the same constants, so the two sides cannot drift.
//! `docs/guest-abi.md` is the prose version of this file; change both together.
//!
//! The guest runs in 64-bit mode at CPL3 with an identity map (guest virtual ==
//! guest physical). It talks to the VMM through a shared [mailbox](layout::MAILBOX)
//! and a handful of `out` instructions ([`port`]).
#![no_std]

/// Version of this ABI. The VMM refuses snapshots taken under another version.
///
/// Version 2 enlarged the mailbox to 14 MiB (a 12 MiB request area, a 1.5 MiB response
/// area) and moved the image base to 16 MiB.
pub const ABI_VERSION: u32 = 2;

/// Bytes in a small page.
pub const PAGE_SIZE: u64 = 0x1000;
/// Bytes in a large page; guest page tables map all memory above [`layout::LOW_END`] with these.
pub const HUGE_PAGE_SIZE: u64 = 0x20_0000;

/// Guest physical memory layout. Every address is also the guest virtual address.
///
/// ```text
/// 0x0000_0000  null guard page (not present)
/// 0x0000_1000  PML4, PDPT, PT for the first 2 MiB, page directories
/// 0x0001_4000  GDT (with the TSS descriptor)
/// 0x0001_5000  TSS
/// 0x0001_6000  IDT (vectors 0..32)
/// 0x0001_7000  exception stubs (code, written by the VMM)
/// 0x0001_8000  BootInfo
/// 0x0001_c000  exception (CPL0) stack, 16 KiB, top at 0x2_0000
/// 0x000f_f000  stack guard page (not present)
/// 0x0010_0000  stack, 1 MiB, top at 0x20_0000
/// 0x0020_0000  mailbox, 14 MiB (header, message, response; the request area from 0x40_0000)
/// 0x0100_0000  guest image (ELF PT_LOAD segments)
/// image end, rounded up to 2 MiB .. memory end: heap
/// ```
pub mod layout {
    use super::{HUGE_PAGE_SIZE, PAGE_SIZE};

    /// Page 0 is never mapped, so null dereferences fault.
    pub const NULL_GUARD: u64 = 0;
    /// Level-4 page table.
    pub const PML4: u64 = 0x1000;
    /// The one page-directory-pointer table (512 GiB of reach).
    pub const PDPT: u64 = 0x2000;
    /// 4 KiB page table for the first 2 MiB (so that the guard pages can exist).
    pub const PT_LOW: u64 = 0x3000;
    /// First page directory; directory `i` maps GiB `i` and lives at `PD_BASE + i * 4 KiB`.
    pub const PD_BASE: u64 = 0x4000;
    /// Number of page directories reserved, which bounds guest memory.
    pub const PD_COUNT: u64 = 16;
    /// Largest guest memory the layout can map (16 GiB).
    pub const MAX_MEM_SIZE: u64 = PD_COUNT << 30;
    /// Global descriptor table.
    pub const GDT: u64 = PD_BASE + PD_COUNT * PAGE_SIZE;
    /// Task-state segment (holds the CPL0 stack pointer used when an exception arrives).
    pub const TSS: u64 = GDT + PAGE_SIZE;
    /// Interrupt descriptor table.
    pub const IDT: u64 = TSS + PAGE_SIZE;
    /// Exception vectors with an IDT entry; others are left not present.
    pub const IDT_VECTORS: u64 = 32;
    /// Exception stubs, [`EXCEPTION_STUB_SIZE`] bytes per vector.
    pub const EXCEPTION_STUBS: u64 = IDT + PAGE_SIZE;
    /// Bytes between two exception stubs.
    pub const EXCEPTION_STUB_SIZE: u64 = 8;
    /// The [`BootInfo`](super::BootInfo) handed to the entry point.
    pub const BOOT_INFO: u64 = EXCEPTION_STUBS + PAGE_SIZE;
    /// Top of the stack the CPU switches to when an exception arrives.
    pub const EXCEPTION_STACK_TOP: u64 = 0x2_0000;
    /// Not-present page below the stack: an overflow faults instead of corrupting memory.
    pub const STACK_GUARD: u64 = STACK_BASE - PAGE_SIZE;
    /// Lowest stack address.
    pub const STACK_BASE: u64 = 0x10_0000;
    /// The entry point starts with `rsp = STACK_TOP - 8`.
    pub const STACK_TOP: u64 = 0x20_0000;
    /// End of the 4 KiB-mapped low area; everything above is mapped with 2 MiB pages.
    pub const LOW_END: u64 = HUGE_PAGE_SIZE;
    /// Shared mailbox between VMM and guest.
    pub const MAILBOX: u64 = 0x20_0000;
    /// Size of the mailbox (7 large pages).
    pub const MAILBOX_SIZE: u64 = 7 * HUGE_PAGE_SIZE;
    /// Lowest address a guest image segment may use (16 MiB).
    pub const IMAGE_BASE: u64 = 0x100_0000;
    /// Smallest guest memory the layout supports (room for an image and a heap).
    pub const MIN_MEM_SIZE: u64 = 32 << 20;

    /// Start of the heap for an image whose segments end at `image_end`.
    pub const fn heap_start(image_end: u64) -> u64 {
        (image_end + HUGE_PAGE_SIZE - 1) & !(HUGE_PAGE_SIZE - 1)
    }
}

/// Offsets inside the mailbox (relative to [`layout::MAILBOX`]).
///
/// The small areas come first, in the mailbox's first large page; the request area fills
/// the other six, so a request lands on whole 2 MiB pages and the guest reads it in place.
pub mod mailbox {
    /// [`MailboxHeader`](super::MailboxHeader) at the start of the mailbox.
    pub const HEADER: u64 = 0;
    /// Console text or abort message written by the guest before `out CONSOLE` / `out ABORT`.
    pub const MESSAGE: u64 = 0x1000;
    /// Capacity of the message area (508 KiB).
    pub const MESSAGE_MAX: u64 = 0x8_0000 - MESSAGE;
    /// Response bytes written by the guest before `out RESPOND`.
    pub const RESPONSE: u64 = 0x8_0000;
    /// Capacity of the response area (1.5 MiB).
    pub const RESPONSE_MAX: u64 = 0x18_0000;
    /// Request bytes written by the VMM before it resumes a ready guest.
    pub const REQUEST: u64 = 0x20_0000;
    /// Capacity of the request area (12 MiB): the largest request the VMM delivers. A
    /// larger one is refused before anything is written, never truncated.
    pub const REQUEST_MAX: u64 = 0xc0_0000;
}

/// I/O ports of the hypercalls. The 32-bit value written with `out dx, eax` is the argument.
///
/// Ports are 4 apart because a 32-bit `out` to port `p` uses ports `p..p+4`, all of which
/// the TSS I/O permission bitmap must grant.
pub mod port {
    /// Console write: argument = length of the text in the message area.
    pub const CONSOLE: u16 = 0x10;
    /// Ready for a request (init done, or previous response delivered). Argument ignored.
    /// When the VMM resumes the guest, a request of `MailboxHeader::request_len` bytes waits.
    pub const READY: u16 = 0x14;
    /// Response written: argument = its length in the response area.
    pub const RESPOND: u16 = 0x18;
    /// Unrecoverable guest error: argument = length of the message in the message area.
    pub const ABORT: u16 = 0x1c;
    /// Used only by the VMM's exception stubs (at CPL0); the exception frame is on the stack.
    pub const EXCEPTION: u16 = 0x20;
}

/// Magic value of [`BootInfo::magic`] ("SNAPVISR").
pub const BOOT_MAGIC: u64 = 0x5253_4956_5041_4E53;

/// What the VMM hands to the guest entry point (pointer in `rdi`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BootInfo {
    /// [`BOOT_MAGIC`].
    pub magic: u64,
    /// [`ABI_VERSION`].
    pub abi_version: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// Bytes of guest memory.
    pub mem_size: u64,
    /// First heap byte (2 MiB aligned).
    pub heap_start: u64,
    /// One past the last heap byte.
    pub heap_end: u64,
    /// Guest address of the mailbox.
    pub mailbox: u64,
}

/// The first bytes of the mailbox.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MailboxHeader {
    /// Length of the pending request, written by the VMM (never above `mailbox::REQUEST_MAX`).
    pub request_len: u32,
    /// Invocation counter, written by the VMM (1 for the first request after a boot or restore).
    pub sequence: u32,
}

/// Exception frame as the VMM finds it at `rsp` when a stub reports an exception.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExceptionFrame {
    /// Vector number pushed by the stub.
    pub vector: u64,
    /// Error code pushed by the CPU (or 0 pushed by the stub).
    pub error_code: u64,
    /// Faulting instruction.
    pub rip: u64,
    /// Code segment at the fault.
    pub cs: u64,
    /// Flags at the fault.
    pub rflags: u64,
    /// Stack pointer at the fault.
    pub rsp: u64,
    /// Stack segment at the fault.
    pub ss: u64,
}

/// Vectors for which the CPU pushes an error code.
pub const fn exception_has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

/// Short name of an exception vector.
pub const fn exception_name(vector: u64) -> &'static str {
    match vector {
        0 => "#DE divide error",
        1 => "#DB debug",
        2 => "NMI",
        3 => "#BP breakpoint",
        4 => "#OF overflow",
        5 => "#BR bound range",
        6 => "#UD invalid opcode",
        7 => "#NM device not available",
        8 => "#DF double fault",
        10 => "#TS invalid TSS",
        11 => "#NP segment not present",
        12 => "#SS stack fault",
        13 => "#GP general protection",
        14 => "#PF page fault",
        16 => "#MF x87 floating point",
        17 => "#AC alignment check",
        18 => "#MC machine check",
        19 => "#XM SIMD floating point",
        20 => "#VE virtualization",
        21 => "#CP control protection",
        _ => "reserved vector",
    }
}

// The layout is checked at compile time: a change that makes regions overlap or areas
// overflow does not build, on the host or in any guest.
const _: () = {
    use layout::*;
    let regions: [(u64, u64); 13] = [
        (PML4, PAGE_SIZE),
        (PDPT, PAGE_SIZE),
        (PT_LOW, PAGE_SIZE),
        (PD_BASE, PD_COUNT * PAGE_SIZE),
        (GDT, PAGE_SIZE),
        (TSS, PAGE_SIZE),
        (IDT, PAGE_SIZE),
        (EXCEPTION_STUBS, PAGE_SIZE),
        (BOOT_INFO, PAGE_SIZE),
        (EXCEPTION_STACK_TOP - 0x4000, 0x4000),
        (STACK_GUARD, PAGE_SIZE),
        (STACK_BASE, STACK_TOP - STACK_BASE),
        (MAILBOX, MAILBOX_SIZE),
    ];
    // Sorted, disjoint, above the null guard.
    let mut i = 0;
    while i < regions.len() {
        assert!(regions[i].0 >= PAGE_SIZE, "a region overlaps the null guard");
        if i + 1 < regions.len() {
            assert!(regions[i].0 + regions[i].1 <= regions[i + 1].0, "layout regions overlap");
        }
        i += 1;
    }
    assert!(IDT_VECTORS * EXCEPTION_STUB_SIZE <= PAGE_SIZE);
    assert!(MAILBOX + MAILBOX_SIZE == IMAGE_BASE);
    assert!(
        STACK_TOP <= LOW_END && MAILBOX.is_multiple_of(HUGE_PAGE_SIZE) && IMAGE_BASE.is_multiple_of(HUGE_PAGE_SIZE)
    );
    // The mailbox's areas: header, message, response, request, in order, back to back.
    assert!(core::mem::size_of::<MailboxHeader>() as u64 <= mailbox::MESSAGE);
    assert!(mailbox::MESSAGE + mailbox::MESSAGE_MAX == mailbox::RESPONSE);
    assert!(mailbox::RESPONSE + mailbox::RESPONSE_MAX == mailbox::REQUEST);
    assert!(mailbox::REQUEST + mailbox::REQUEST_MAX == layout::MAILBOX_SIZE);
    // The request area is whole large pages; the limits the docs promise.
    assert!((MAILBOX + mailbox::REQUEST).is_multiple_of(HUGE_PAGE_SIZE));
    assert!(mailbox::REQUEST_MAX >= 8 << 20 && mailbox::REQUEST_MAX <= 16 << 20);
    assert!(mailbox::RESPONSE_MAX >= 1 << 20);
    // Lengths travel in 32-bit hypercall arguments and header fields.
    assert!(mailbox::REQUEST_MAX <= u32::MAX as u64);
    assert!(mailbox::RESPONSE_MAX <= u32::MAX as u64);
    // The smallest guest still has room above the image base for an image and a heap.
    assert!(MIN_MEM_SIZE >= IMAGE_BASE + 2 * HUGE_PAGE_SIZE);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_start_rounds_up_to_a_huge_page() {
        assert_eq!(layout::heap_start(0x100_0001), 0x120_0000);
        assert_eq!(layout::heap_start(0x120_0000), 0x120_0000);
        assert_eq!(layout::heap_start(0x11f_ffff), 0x120_0000);
    }

    #[test]
    fn error_codes_follow_the_sdm() {
        let with: [u8; 8] = [8, 10, 11, 12, 13, 14, 17, 21];
        for v in 0..32u8 {
            assert_eq!(exception_has_error_code(v), with.contains(&v) || v == 29 || v == 30, "vector {v}");
        }
    }
}
