//! Issue 8, class 1: the emulated pool's bookkeeping in the data directory is trusted for
//! nothing, as root. Only a mount this program made there is unmounted; symbolic links
//! are never followed; a damaged or forged record changes nothing; huge pages are never
//! asked for beyond the memory available. (Needs root: prints `skipped: needs root` else.)

mod common;

use common::*;
use snapvisor_vmm::pool::medium::{self, EmulatedKind, EmulationRecord, MediumError};
use std::path::Path;

fn mounted_at(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let path = path.canonicalize().unwrap_or(path.to_path_buf());
    info.lines().any(|l| l.split(' ').nth(4) == Some(&*path.to_string_lossy()))
}

fn nr_hugepages() -> u64 {
    std::fs::read_to_string("/proc/sys/vm/nr_hugepages").unwrap().trim().parse().unwrap()
}

#[test]
fn symbolic_links_in_the_data_directory_are_never_followed() {
    if !is_root("symbolic_links_in_the_data_directory_are_never_followed") {
        return;
    }
    let root = TempDir::new("emu-link");
    let victim = TempDir::new("emu-victim");
    std::os::unix::fs::symlink(victim.path(), root.path().join("mnt")).unwrap();
    let err = medium::setup_emulation(root.path(), 0, EmulatedKind::Tmpfs).unwrap_err();
    assert!(matches!(err, MediumError::Symlink(_)), "{err}");
    assert!(!mounted_at(victim.path()), "mounted over the link's target");
    assert!(!root.path().join(medium::RECORD).exists());
    // The emulation root itself as a link.
    let real = TempDir::new("emu-real");
    let link = root.path().join("pool-link");
    std::os::unix::fs::symlink(real.path(), &link).unwrap();
    let err = medium::setup_emulation(&link, 0, EmulatedKind::Tmpfs).unwrap_err();
    assert!(matches!(err, MediumError::Symlink(_)), "{err}");
    assert!(!mounted_at(&real.path().join("mnt")));
}

#[test]
fn damaged_or_forged_records_change_nothing() {
    if !is_root("damaged_or_forged_records_change_nothing") {
        return;
    }
    let root = TempDir::new("emu-forge");
    let (mnt, _) = medium::setup_emulation(root.path(), 0, EmulatedKind::Tmpfs).expect("setup");
    assert!(mnt.is_absolute() && mounted_at(&mnt));
    let record_path = root.path().join(medium::RECORD);
    let good = std::fs::read(&record_path).unwrap();
    let record: EmulationRecord = serde_json::from_slice(&good).unwrap();
    let forge = |edit: &dyn Fn(&mut EmulationRecord)| {
        let mut forged = record.clone();
        edit(&mut forged);
        forged.crc64 = forged.checksum();
        std::fs::write(&record_path, serde_json::to_vec(&forged).unwrap()).unwrap();
    };
    let pages = nr_hugepages();
    let refused = |what: &str| {
        let err = medium::teardown_emulation(root.path()).expect_err(what);
        assert!(mounted_at(&mnt), "{what}: unmounted anyway ({err})");
        assert!(record_path.exists(), "{what}: record removed ({err})");
        assert_eq!(nr_hugepages(), pages, "{what}: huge pages changed ({err})");
        err
    };

    // Damage: one flipped byte.
    let mut damaged = good.clone();
    let at = damaged.iter().position(|&b| b == b'/').unwrap();
    damaged[at] = b'X';
    std::fs::write(&record_path, &damaged).unwrap();
    assert!(matches!(refused("damaged"), MediumError::Record { .. }));

    // A consistent record that claims a huge number of huge pages to give back.
    forge(&|r| r.hugepages_added = 1_000_000);
    assert!(matches!(refused("huge pages"), MediumError::NotOurs { .. }));

    // A consistent record naming another mount (one the test made).
    let other = TempDir::new("emu-other");
    let other_mount = mount("tmpfs", other.path(), "size=1m");
    forge(&|r| r.mount = other.path().canonicalize().unwrap());
    assert!(matches!(refused("another mount"), MediumError::Record { .. }));
    assert!(mounted_at(other.path()));
    drop(other_mount);

    // A consistent record whose token no marker in the mount carries.
    forge(&|r| r.token = "0".repeat(32));
    assert!(matches!(refused("token"), MediumError::NotOurs { .. }));

    // Something else mounted over ours: not unmounted.
    std::fs::write(&record_path, &good).unwrap();
    let on_top = mount("tmpfs", &mnt, "size=1m");
    let err = medium::teardown_emulation(root.path()).expect_err("a foreign mount on top");
    assert!(matches!(err, MediumError::NotOurs { .. }), "{err}");
    drop(on_top);

    // The genuine record: undone.
    let undone = medium::teardown_emulation(root.path()).expect("teardown").expect("a record");
    assert_eq!(undone.hugepages_added, 0);
    assert!(!mounted_at(&mnt) && !record_path.exists());
}

#[test]
fn huge_pages_beyond_the_available_memory_are_not_asked_for() {
    if !is_root("huge_pages_beyond_the_available_memory_are_not_asked_for") {
        return;
    }
    let root = TempDir::new("emu-nohuge");
    let total_kib = snapvisor_vmm::metrics::proc_field("/proc/meminfo", "MemTotal").unwrap();
    let pages = nr_hugepages();
    // Twice the machine's memory in 2 MiB pages: the kernel would hand out all it has.
    let err = medium::setup_emulation(root.path(), total_kib / 1024, EmulatedKind::Hugetlbfs).unwrap_err();
    assert!(matches!(err, MediumError::HugePages { .. }), "{err}");
    assert_eq!(nr_hugepages(), pages, "nr_hugepages was raised");
    assert!(!mounted_at(&root.path().join("mnt")));
    assert!(!root.path().join(medium::RECORD).exists());
}
