use kvm_ioctls::VcpuExit;
use snapvisor_vmm::*;
fn main() {
    let hv = Hypervisor::open().unwrap();
    let vm = hv.kvm().create_vm().unwrap();
    // Tiny memory: 2 MiB at 0 mapped, code at 0x1000 (we build our own identity map by reusing boot)
    let mapping = vstate::memory::Mapping::anonymous(16 << 20).unwrap();
    let mem = vstate::memory::GuestMemory::new(mapping).unwrap();
    boot::write_platform(&mem, 0x400000).unwrap();
    let variant: u32 = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(0);
    // code at 0x400000: mov dx,0x11; xor eax,eax; out dx,eax; jmp $
    let code = [0x66, 0xba, 0x11, 0x00, 0x31, 0xc0, 0xef, 0xeb, 0xfe];
    mem.write(0x400000, &code).unwrap();
    if variant == 1 {
        // I/O bitmap at TSS+104 allowing all ports (zeros), 8192 bytes + 0xff terminator... TSS page only 4K; allow ports 0..0x7fff needs 4096 bytes
        mem.write(snapvisor_abi::layout::TSS + 0x66, &104u16.to_le_bytes()).unwrap();
    }
    let region = kvm_bindings::kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: mem.size(),
        userspace_addr: mem.mapping().as_ptr() as u64,
    };
    unsafe { vm.set_user_memory_region(region).unwrap() };
    let mut vcpu = vm.create_vcpu(0).unwrap();
    vcpu.set_cpuid2(hv.cpuid()).unwrap();
    let base = vcpu.get_sregs().unwrap();
    let mut sregs = boot::long_mode_sregs(base, true);
    if variant == 1 {
        sregs.tr.limit = 104 + 4096 - 1;
    }
    vcpu.set_sregs(&sregs).unwrap();
    let mut regs = boot::entry_regs(0x400000);
    if variant == 2 {
        regs.rflags |= 0x200;
    }
    vcpu.set_regs(&regs).unwrap();
    let r = vcpu.get_regs().unwrap();
    println!("rflags after set: {:#x}", r.rflags);
    let s = vcpu.get_sregs().unwrap();
    println!("cs {:?}\nss {:?}\ntr {:?}", s.cs, s.ss, s.tr);
    match vcpu.run() {
        Ok(VcpuExit::IoOut(p, d)) => println!("OUT {p:#x} {d:?}"),
        Ok(e) => println!("exit {e:?}"),
        Err(e) => println!("err {e}"),
    }
    let r = vcpu.get_regs().unwrap();
    println!("rip {:#x} rsp {:#x} rflags {:#x}", r.rip, r.rsp, r.rflags);
    for i in 0..7 {
        print!("{:#x} ", mem.read_u64(r.rsp + 8 * i).unwrap());
    }
    println!();
}
