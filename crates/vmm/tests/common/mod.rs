//! Shared helpers of the VMM's integration tests (which boot real KVM microVMs).
#![allow(dead_code)]

use snapvisor_vmm::Hypervisor;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// Generous timeout for guests under test.
pub const TIMEOUT: Duration = Duration::from_secs(60);
/// Guest memory of the tests.
pub const MEM: u64 = 256 << 20;

/// The hypervisor, or `None` after printing a visible skip line (written to the real
/// stderr, which libtest does not capture).
pub fn hypervisor(test: &str) -> Option<Hypervisor> {
    if !Hypervisor::available() {
        let _ = writeln!(std::io::stderr(), "skipped: no /dev/kvm ({test})");
        return None;
    }
    Some(Hypervisor::open().expect("/dev/kvm exists but cannot be used"))
}

/// Whether the process may mount filesystems and reserve huge pages; prints a skip line if not.
pub fn is_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        let _ = writeln!(std::io::stderr(), "skipped: needs root ({test})");
    }
    root
}

/// The hypervisor if the process is also root, or `None` after printing a skip line.
pub fn hypervisor_as_root(test: &str) -> Option<Hypervisor> {
    let hv = hypervisor(test)?;
    is_root(test).then_some(hv)
}

/// Mounts `fstype` with `options` at `target` (source `snapvisor-test`); unmounted when the
/// returned guard drops, also when the test fails.
pub fn mount(fstype: &str, target: &std::path::Path, options: &str) -> Mounted {
    use std::os::unix::ffi::OsStrExt;
    let c = |s: &[u8]| std::ffi::CString::new(s).unwrap();
    let (src, fs, tgt, opts) =
        (c(b"snapvisor-test"), c(fstype.as_bytes()), c(target.as_os_str().as_bytes()), c(options.as_bytes()));
    // SAFETY: valid C strings; mount(2) copies them.
    let rc = unsafe { libc::mount(src.as_ptr(), tgt.as_ptr(), fs.as_ptr(), 0, opts.as_ptr().cast()) };
    assert_eq!(rc, 0, "mount {fstype} at {}: {}", target.display(), std::io::Error::last_os_error());
    Mounted(tgt)
}

/// A mount made by [`mount`]; unmounted (detached) on drop.
pub struct Mounted(std::ffi::CString);

impl Drop for Mounted {
    fn drop(&mut self) {
        // SAFETY: valid C string.
        unsafe { libc::umount2(self.0.as_ptr(), libc::MNT_DETACH) };
    }
}

/// A pool of `size` bytes in `tmp` (on tmpfs when `tmp` is under `/dev/shm`).
pub fn shm_pool(tmp: &TempDir, size: u64) -> std::sync::Arc<snapvisor_vmm::pool::Pool> {
    let path = tmp.path().join("pool");
    snapvisor_vmm::pool::Pool::create(&path, size).expect("create pool");
    snapvisor_vmm::pool::Pool::open(&path).expect("open pool")
}

/// ELF of an embedded guest image.
pub fn image(name: &str) -> &'static [u8] {
    snapvisor_guest_images::get(name).unwrap_or_else(|| panic!("no image {name}")).elf
}

/// Functions the snapshot and pool tests run: one whose request is parameters and one whose
/// request is a file, both with a text request. Every function and every strategy is
/// covered by `tests/functions.rs`.
pub fn sample_functions() -> impl Iterator<Item = &'static snapvisor_functions::Info> {
    ["json", "pyaes"].into_iter().map(|name| snapvisor_functions::info(name).expect("built-in function"))
}

/// Input `B` of a built-in function (what a run measures by default), as text: the sample
/// functions' inputs are text.
pub fn request(name: &str) -> &'static str {
    let bytes = snapvisor_functions::input(name, "B").expect("built-in function");
    std::str::from_utf8(bytes).expect("a text input")
}

/// `digest` field of a JSON response.
pub fn digest(response: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(response).expect("JSON response");
    assert!(v.get("error").is_none(), "function error: {v}");
    v["digest"].as_str().expect("digest").to_string()
}

/// The host's own digest for a function and request.
pub fn native_digest(name: &str, request: impl AsRef<[u8]>) -> String {
    digest(&snapvisor_functions::run_native(name, request.as_ref()).expect("built-in function"))
}

/// A fresh temporary directory (removed on drop).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        Self::new_in(&std::env::temp_dir(), tag)
    }

    pub fn new_in(parent: &std::path::Path, tag: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = parent.join(format!("snapvisor-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A snapshot of `name` in a new temporary directory (tagged `tag`): the directory and the
/// snapshot's path in it.
pub fn snapshot_in(hv: &Hypervisor, name: &str, tag: &str) -> (TempDir, PathBuf) {
    let tmp = TempDir::new(tag);
    let dir = tmp.path().join(name);
    take_snapshot(hv, name, &dir);
    (tmp, dir)
}

/// Boots `name`, runs its init and snapshots it into `dir`.
pub fn take_snapshot(hv: &Hypervisor, name: &str, dir: &std::path::Path) -> snapvisor_vmm::snapshot::Manifest {
    take_snapshot_of(hv, name, dir, MEM)
}

/// Boots `name` with `mem` bytes of guest memory, runs its init and snapshots it into `dir`.
pub fn take_snapshot_of(
    hv: &Hypervisor,
    name: &str,
    dir: &std::path::Path,
    mem: u64,
) -> snapvisor_vmm::snapshot::Manifest {
    let (mut vm, _) = snapvisor_vmm::MicroVm::boot(hv, image(name), mem).expect("boot");
    vm.wait_ready(TIMEOUT).expect("init");
    vm.snapshot(hv, name, image(name), dir, false).expect("snapshot")
}

/// A snapshot of built-in function `name` with the memory its largest input needs, in a new
/// temporary directory (tagged `tag`), its working and write sets recorded with input A.
pub fn recorded_snapshot(hv: &Hypervisor, name: &str, tag: &str) -> (TempDir, PathBuf) {
    use snapvisor_functions::catalog::RECORD_INPUT;
    let info = snapvisor_functions::info(name).expect("built-in function");
    let mem = info.inputs.iter().map(|i| i.mem_mib).max().unwrap_or(256) << 20;
    let tmp = TempDir::new(tag);
    let dir = tmp.path().join(name);
    take_snapshot_of(hv, name, &dir, mem);
    let recorded_with = info.input(RECORD_INPUT).expect("input").request;
    snapvisor_vmm::restore::record(hv, &dir, recorded_with, RECORD_INPUT, TIMEOUT).expect("record");
    (tmp, dir)
}

/// Whether the host gives anonymous memory transparent huge pages on request.
pub fn thp_on_request() -> bool {
    snapvisor_vmm::vstate::folios::huge_pages_advised()
}
