use snapvisor_vmm::*;
use std::time::Duration;
fn main() {
    let hv = Hypervisor::open().unwrap();
    println!("{:?} {}", hv, hv.kind());
    let name = std::env::args().nth(1).unwrap_or("json".into());
    let req = std::env::args().nth(2).unwrap_or_else(|| {
        snapvisor_functions::info(&name).map(|i| i.default_request.to_string()).unwrap_or("echo".into())
    });
    let img = snapvisor_guest_images::get(&name).unwrap();
    let (mut vm, t) = MicroVm::boot(&hv, img.elf, 256 << 20).unwrap();
    println!("boot {:?}", t);
    let init = vm.wait_ready(Duration::from_secs(10));
    println!("init {:?}", init);
    for _ in 0..3 {
        let inv = vm.invoke(req.as_bytes(), Duration::from_secs(10));
        match inv {
            Ok(inv) => {
                println!(
                    "invoke {:?} kvm {:?} faults {:?} {}",
                    inv.duration,
                    inv.kvm,
                    inv.faults,
                    String::from_utf8_lossy(&inv.response[..inv.response.len().min(150)])
                );
                vm.finish(Duration::from_secs(5)).unwrap();
            }
            Err(e) => {
                println!("error: {e}");
                let mut s: &dyn std::error::Error = &e;
                while let Some(x) = s.source() {
                    println!("  caused by: {x}");
                    s = x;
                }
                break;
            }
        }
    }
    println!("console {:?}", vm.console());
}
