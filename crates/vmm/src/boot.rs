//! The x86-64 platform a guest boots into, built by the VMM (there is no guest kernel):
//! identity page tables, GDT, TSS (with the I/O permission bitmap that grants the
//! hypercall ports), IDT with exception stubs, the boot info, and the initial vCPU
//! registers (64-bit mode, CPL3, SSE/AVX on).
//!
//! The guest runs at CPL3 and must not reach CPL0 inside its VM nor forge what the VMM
//! trusts (the exception report), so the first 2 MiB are mapped by purpose
//! ([`low_page_bits`]): page tables, GDT, TSS, IDT and stubs supervisor-only and read-only
//! (their accessed and dirty bits are pre-set, so the CPU never writes them), the exception
//! stack supervisor-only, the boot info user read-only, the stack user read-write, and the
//! rest not present. A guest access to them is a page fault the VMM reports as
//! [`VcpuError::PlatformAccess`](crate::vstate::vcpu::VcpuError::PlatformAccess).
//!
//! Everything here follows `docs/guest-abi.md`; the addresses come from `snapvisor_abi::layout`.

use crate::vstate::memory::{GuestMemory, OutOfBounds};
use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use snapvisor_abi::{
    exception_has_error_code, layout, port, BootInfo, ABI_VERSION, BOOT_MAGIC, HUGE_PAGE_SIZE, PAGE_SIZE,
};

// Page-table entry bits.
const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const USER: u64 = 1 << 2;
const ACCESSED: u64 = 1 << 5;
const DIRTY: u64 = 1 << 6;
const HUGE: u64 = 1 << 7;
/// Table entries: present, writable, user, accessed (so the CPU never has to set A); the
/// leaf entries decide what CPL3 may do.
const TABLE: u64 = PRESENT | WRITABLE | USER | ACCESSED;
/// Leaf entries start accessed and dirty, so no access needs an A/D update in the tables.
const LEAF: u64 = TABLE | DIRTY;
/// The VMM's read-only structures: supervisor-only, not writable.
const SUPERVISOR_RO: u64 = PRESENT | ACCESSED | DIRTY;
/// The exception stack: supervisor-only, writable.
const SUPERVISOR_RW: u64 = PRESENT | WRITABLE | ACCESSED | DIRTY;
/// The boot info: readable, not writable, by the guest.
const USER_RO: u64 = PRESENT | USER | ACCESSED | DIRTY;
/// Bytes of the exception (CPL0) stack below `layout::EXCEPTION_STACK_TOP`.
const EXCEPTION_STACK_SIZE: u64 = 16 << 10;

/// Ports a CPL3 guest may use with 32-bit `out` (the I/O permission bitmap clears these and
/// the three above each).
const GUEST_PORTS: [u16; 4] = [port::CONSOLE, port::READY, port::RESPOND, port::ABORT];
const _: () = assert!(port::CONSOLE < 256 && port::READY < 256 && port::RESPOND < 256 && port::ABORT < 256);

/// GDT selectors.
pub const KERNEL_CS: u16 = 0x08;
/// User data segment, RPL 3.
pub const USER_DS: u16 = 0x18 | 3;
/// User 64-bit code segment, RPL 3.
pub const USER_CS: u16 = 0x20 | 3;
/// Task-state segment.
pub const TSS_SELECTOR: u16 = 0x28;

const GDT_ENTRIES: [u64; 5] = [
    0,                     // null
    0x00af_9b00_0000_ffff, // 0x08 kernel code, 64-bit, DPL0
    0x00cf_9300_0000_ffff, // 0x10 kernel data, DPL0
    0x00cf_f300_0000_ffff, // 0x18 user data, DPL3
    0x00af_fb00_0000_ffff, // 0x20 user code, 64-bit, DPL3
];
/// Bytes of the TSS before its I/O permission bitmap.
const TSS_HEADER: u64 = 0x68;
/// The I/O permission bitmap covers ports 0..256 (32 bytes), then a 0xff terminator.
const IO_BITMAP_BYTES: u64 = 32;
const TSS_LIMIT: u64 = TSS_HEADER + IO_BITMAP_BYTES;
const TSS_TYPE_BUSY: u8 = 0xb;

// Control-register bits.
const CR0_PE: u64 = 1 << 0;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const CR4_OSXSAVE: u64 = 1 << 18;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const RFLAGS_RESERVED: u64 = 1 << 1;

/// Writes page tables, descriptor tables, exception stubs and boot info into fresh guest
/// memory for an image whose segments end at `image_end`. Returns the boot info.
pub fn write_platform(mem: &GuestMemory, image_end: u64) -> Result<BootInfo, OutOfBounds> {
    let size = mem.size();
    write_page_tables(mem, size)?;
    write_descriptor_tables(mem)?;
    write_exception_stubs(mem)?;
    let info = BootInfo {
        magic: BOOT_MAGIC,
        abi_version: ABI_VERSION,
        reserved: 0,
        mem_size: size,
        heap_start: layout::heap_start(image_end),
        heap_end: size,
        mailbox: layout::MAILBOX,
    };
    let fields = [
        info.magic,
        u64::from(info.abi_version) | (u64::from(info.reserved) << 32),
        info.mem_size,
        info.heap_start,
        info.heap_end,
        info.mailbox,
    ];
    for (i, v) in fields.iter().enumerate() {
        mem.write_u64(layout::BOOT_INFO + 8 * i as u64, *v)?;
    }
    Ok(info)
}

fn write_page_tables(mem: &GuestMemory, size: u64) -> Result<(), OutOfBounds> {
    mem.write_u64(layout::PML4, layout::PDPT | TABLE)?;
    let gibs = size.div_ceil(1 << 30);
    for gib in 0..gibs {
        let pd = layout::PD_BASE + gib * PAGE_SIZE;
        mem.write_u64(layout::PDPT + 8 * gib, pd | TABLE)?;
        for entry in 0..512u64 {
            let addr = (gib << 30) + entry * HUGE_PAGE_SIZE;
            if addr >= size {
                break;
            }
            let value = if addr == 0 { layout::PT_LOW | TABLE } else { addr | LEAF | HUGE };
            mem.write_u64(pd + 8 * entry, value)?;
        }
    }
    // The first 2 MiB in 4 KiB pages, each mapped by what it holds.
    let mut table = [0u8; PAGE_SIZE as usize];
    for (i, entry) in table.chunks_exact_mut(8).enumerate() {
        let addr = i as u64 * PAGE_SIZE;
        let bits = low_page_bits(addr);
        if bits != 0 {
            entry.copy_from_slice(&(addr | bits).to_le_bytes());
        }
    }
    mem.write(layout::PT_LOW, &table)
}

/// The VMM's structures in the first 2 MiB: (first byte, end, name).
const PLATFORM: [(u64, u64, &str); 7] = [
    (layout::PML4, layout::GDT, "page tables"),
    (layout::GDT, layout::GDT + PAGE_SIZE, "GDT"),
    (layout::TSS, layout::TSS + PAGE_SIZE, "TSS"),
    (layout::IDT, layout::IDT + PAGE_SIZE, "IDT"),
    (layout::EXCEPTION_STUBS, layout::EXCEPTION_STUBS + PAGE_SIZE, "exception stubs"),
    (layout::BOOT_INFO, layout::BOOT_INFO + PAGE_SIZE, "boot info"),
    (layout::EXCEPTION_STACK_TOP - EXCEPTION_STACK_SIZE, layout::EXCEPTION_STACK_TOP, "exception stack"),
];
const _: () = assert!(layout::BOOT_INFO + PAGE_SIZE <= layout::EXCEPTION_STACK_TOP - EXCEPTION_STACK_SIZE);
const _: () = assert!(layout::EXCEPTION_STACK_TOP <= layout::STACK_GUARD);

/// Which of the VMM's structures in the guest holds `addr`, if any.
pub fn platform_region(addr: u64) -> Option<&'static str> {
    PLATFORM.iter().find(|(start, end, _)| (*start..*end).contains(&addr)).map(|(_, _, name)| *name)
}

/// The leaf bits of the 4 KiB page at `addr` in the first 2 MiB (0: not present).
pub fn low_page_bits(addr: u64) -> u64 {
    match platform_region(addr) {
        Some("boot info") => USER_RO,
        Some("exception stack") => SUPERVISOR_RW,
        Some(_) => SUPERVISOR_RO,
        None if (layout::STACK_BASE..layout::STACK_TOP).contains(&addr) => LEAF,
        None => 0,
    }
}

fn write_descriptor_tables(mem: &GuestMemory) -> Result<(), OutOfBounds> {
    for (i, entry) in GDT_ENTRIES.iter().enumerate() {
        mem.write_u64(layout::GDT + 8 * i as u64, *entry)?;
    }
    // 16-byte TSS descriptor.
    let base = layout::TSS;
    let low = (TSS_LIMIT & 0xffff)
        | ((base & 0xff_ffff) << 16)
        | (u64::from(0x80 | TSS_TYPE_BUSY) << 40)
        | (((TSS_LIMIT >> 16) & 0xf) << 48)
        | (((base >> 24) & 0xff) << 56);
    mem.write_u64(layout::GDT + u64::from(TSS_SELECTOR), low)?;
    mem.write_u64(layout::GDT + u64::from(TSS_SELECTOR) + 8, base >> 32)?;
    // TSS: RSP0 at offset 4, then the I/O permission bitmap, which grants CPL3 exactly the
    // guest's hypercall ports. (IOPL stays 0: KVM-PVM does not honour a guest IOPL, and the
    // bitmap works the same on hardware KVM.) The exception port is for CPL0 only.
    mem.write_u64(layout::TSS + 4, layout::EXCEPTION_STACK_TOP)?;
    mem.write(layout::TSS + 0x66, &(TSS_HEADER as u16).to_le_bytes())?;
    let mut bitmap = [0xffu8; IO_BITMAP_BYTES as usize + 1];
    for port in GUEST_PORTS.iter().flat_map(|&p| p..p + 4) {
        bitmap[usize::from(port / 8)] &= !(1 << (port % 8));
    }
    mem.write(layout::TSS + TSS_HEADER, &bitmap)?;
    // IDT: 64-bit interrupt gates (DPL0, so `int n` from CPL3 raises #GP) to the stubs.
    for vector in 0..layout::IDT_VECTORS {
        let handler = layout::EXCEPTION_STUBS + vector * layout::EXCEPTION_STUB_SIZE;
        let low =
            (handler & 0xffff) | (u64::from(KERNEL_CS) << 16) | (0x8eu64 << 40) | (((handler >> 16) & 0xffff) << 48);
        mem.write_u64(layout::IDT + 16 * vector, low)?;
        mem.write_u64(layout::IDT + 16 * vector + 8, handler >> 32)?;
    }
    Ok(())
}

/// One stub per vector, run at CPL0 (emulated on KVM-PVM, so a handful of instructions):
/// `push 0` (when the CPU pushes no error code), `push vector`, `out EXCEPTION, al`, `jmp $`.
/// The VMM then reads the [`ExceptionFrame`](snapvisor_abi::ExceptionFrame) at `rsp`.
fn write_exception_stubs(mem: &GuestMemory) -> Result<(), OutOfBounds> {
    const _: () = assert!(port::EXCEPTION <= 0xff, "the stubs use `out imm8, al`");
    for vector in 0..layout::IDT_VECTORS as u8 {
        let mut code = Vec::with_capacity(layout::EXCEPTION_STUB_SIZE as usize);
        if !exception_has_error_code(vector) {
            code.extend_from_slice(&[0x6a, 0x00]); // push 0
        }
        code.extend_from_slice(&[0x6a, vector]); // push imm8
        code.extend_from_slice(&[0xe6, port::EXCEPTION as u8]); // out imm8, al
        code.extend_from_slice(&[0xeb, 0xfe]); // jmp $
        debug_assert!(code.len() as u64 <= layout::EXCEPTION_STUB_SIZE);
        mem.write(layout::EXCEPTION_STUBS + u64::from(vector) * layout::EXCEPTION_STUB_SIZE, &code)?;
    }
    Ok(())
}

/// Whether `rip` lies inside the VMM's exception stubs.
pub fn is_exception_stub(rip: u64) -> bool {
    (layout::EXCEPTION_STUBS..layout::EXCEPTION_STUBS + layout::IDT_VECTORS * layout::EXCEPTION_STUB_SIZE)
        .contains(&rip)
}

fn segment(selector: u16, code: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_: if code { 0xb } else { 0x3 },
        present: 1,
        dpl: (selector & 3) as u8,
        db: u8::from(!code),
        s: 1,
        l: u8::from(code),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Special registers for 64-bit mode at CPL3 over the tables [`write_platform`] wrote.
/// `base` supplies the fields KVM filled in (e.g. the APIC base).
pub fn long_mode_sregs(base: kvm_sregs, xsave: bool) -> kvm_sregs {
    let mut sregs = base;
    sregs.cs = segment(USER_CS, true);
    let data = segment(USER_DS, false);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = kvm_segment {
        base: layout::TSS,
        limit: TSS_LIMIT as u32,
        selector: TSS_SELECTOR,
        type_: TSS_TYPE_BUSY,
        present: 1,
        ..Default::default()
    };
    sregs.gdt.base = layout::GDT;
    sregs.gdt.limit = (u64::from(TSS_SELECTOR) + 16 - 1) as u16;
    sregs.idt.base = layout::IDT;
    sregs.idt.limit = (layout::IDT_VECTORS * 16 - 1) as u16;
    sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
    sregs.cr3 = layout::PML4;
    sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT | if xsave { CR4_OSXSAVE } else { 0 };
    sregs.efer = EFER_LME | EFER_LMA;
    sregs
}

/// General registers at the entry point.
pub fn entry_regs(entry: u64) -> kvm_regs {
    kvm_regs {
        rip: entry,
        // As if `call _start` had pushed a return address: rsp + 8 is 16-byte aligned.
        rsp: layout::STACK_TOP - 8,
        rdi: layout::BOOT_INFO,
        rflags: RFLAGS_RESERVED,
        ..Default::default()
    }
}

/// x87 and SSE control state at the entry point.
pub fn entry_fpu() -> kvm_fpu {
    kvm_fpu { fcw: 0x37f, mxcsr: 0x1f80, ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_low_area_grants_the_guest_only_its_stack_and_a_read_of_the_boot_info() {
        let user = |addr| low_page_bits(addr) & USER != 0;
        let writable = |addr| low_page_bits(addr) & WRITABLE != 0;
        for addr in (0..layout::LOW_END).step_by(PAGE_SIZE as usize) {
            let in_stack = (layout::STACK_BASE..layout::STACK_TOP).contains(&addr);
            assert_eq!(user(addr) && writable(addr), in_stack, "{addr:#x}");
            if user(addr) && !in_stack {
                assert_eq!(platform_region(addr), Some("boot info"), "{addr:#x}");
            }
        }
        for table in [layout::PML4, layout::PDPT, layout::PT_LOW, layout::PD_BASE, layout::GDT, layout::IDT] {
            assert_eq!(low_page_bits(table), SUPERVISOR_RO, "{table:#x}");
        }
        assert_eq!(low_page_bits(layout::EXCEPTION_STACK_TOP - 8), SUPERVISOR_RW);
        assert_eq!(low_page_bits(layout::NULL_GUARD) | low_page_bits(layout::STACK_GUARD), 0);
    }
}
