use snapvisor_vmm::restore::*;
use snapvisor_vmm::*;
use std::time::{Duration, Instant};
fn main() {
    let hv = Hypervisor::open().unwrap();
    let name = std::env::args().nth(1).unwrap_or("json".into());
    let req = snapvisor_functions::info(&name).unwrap().default_request;
    let img = snapvisor_guest_images::get(&name).unwrap();
    let (mut vm, _) = MicroVm::boot(&hv, img.elf, 256 << 20).unwrap();
    vm.wait_ready(Duration::from_secs(10)).unwrap();
    let dir = std::path::PathBuf::from(format!("/tmp/snap-{name}"));
    let t = Instant::now();
    let m = vm.snapshot(&hv, &name, img.elf, &dir, true).unwrap();
    println!(
        "snapshot {:?} data pages {} zero ranges {}",
        t.elapsed(),
        m.memory.data_pages,
        m.memory.zero_ranges.len()
    );
    let warm = vm.invoke(req.as_bytes(), Duration::from_secs(10)).unwrap();
    vm.finish(Duration::from_secs(1)).unwrap();
    let warm2 = vm.invoke(req.as_bytes(), Duration::from_secs(10)).unwrap();
    println!("warm first {:?} second {:?}", warm.duration, warm2.duration);
    for s in [Strategy::Lazy, Strategy::Uffd, Strategy::Cached] {
        for _ in 0..2 {
            let st = strategy(s);
            let mut r = restore(&hv, &SnapshotSource::Dir(dir.clone()), st.as_ref()).unwrap();
            let inv = r.vm.invoke(req.as_bytes(), Duration::from_secs(30)).unwrap();
            let mem = r.vm.memory().unwrap();
            let usage = metrics::MemoryUsage::scan(mem.mapping().as_ptr(), mem.mapping().len()).unwrap();
            println!(
                "{s}: restore {:?} invoke {:?} kvm {:?} faults {:?} pager {:?} priv {:.1} shared {:.1} same={}",
                r.times,
                inv.duration,
                inv.kvm,
                inv.faults,
                r.pager_report(),
                metrics::mib(usage.private_bytes),
                metrics::mib(usage.shared_bytes),
                inv.response == warm.response
            );
        }
    }
}
