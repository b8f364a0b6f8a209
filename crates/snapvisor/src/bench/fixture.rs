//! The benchmark's fixtures, made once per run and torn down after it:
//!
//! - for every function, a fresh snapshot `S` (on the data directory's disk) whose
//!   working sets and write set are recorded with input `A`;
//! - `W`, a copy of `S` written by the benchmark and never evicted: the memory file's page
//!   cache as a writer leaves it, `lazy`'s best realistic state;
//! - `P`, a copy of `S` on the emulated persistent-memory medium: Firecracker with its
//!   memory file on a PMem filesystem (the papers' "Vanilla");
//! - the pool on that medium with every `S` imported (write sets included), for `pass`.
//!
//! The emulated medium is set up under the data directory (as root: a tmpfs mount with huge
//! pages) and undone when the fixtures are dropped, also on errors; without root, it is a
//! directory on `/dev/shm` (tmpfs, 4 KiB pages), and the report says so.

use super::pagecache::sparse_copy;
use super::BenchError;
use crate::node::data::{self, DataDir};
use snapvisor_vmm::pool::format::EXTENT;
use snapvisor_vmm::pool::medium::{EmulatedKind, Medium};
use snapvisor_vmm::pool::Pool;
use snapvisor_vmm::restore::Recorded;
use snapvisor_vmm::snapshot::{Snapshot, MANIFEST, MEMORY, STATE};
use snapvisor_vmm::{Hypervisor, MicroVm};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// One function's snapshots.
#[derive(Clone, Debug)]
pub struct FunctionFixture {
    /// The snapshot on disk (`S`), recorded with input A.
    pub disk: PathBuf,
    /// Its copy as written (`W`).
    pub written: PathBuf,
    /// Its copy on the emulated persistent-memory medium (`P`).
    pub pmem: PathBuf,
    /// What the recording kept.
    pub recorded: Recorded,
    /// Guest memory bytes.
    pub mem_size: u64,
}

/// An emulated medium this run set up, undone on drop.
pub struct Emulation {
    root: Option<PathBuf>,
}

impl Emulation {
    /// Sets up an emulated medium of `kind` under `root` (as root), or a directory on
    /// `/dev/shm` (without): returns the directory to put pools and copies in.
    pub fn new(root: PathBuf, kind: EmulatedKind, huge_pages: u64) -> Result<(Self, PathBuf), BenchError> {
        // A killed run may have left one.
        let _ = data::destroy_pool(&root);
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            let dir = Path::new("/dev/shm").join(format!("snapvisor-bench-{}", std::process::id()));
            std::fs::create_dir_all(&dir).map_err(|e| BenchError::Write(dir.clone(), e))?;
            return Ok((Emulation { root: None }, dir));
        }
        std::fs::create_dir_all(&root).map_err(|e| BenchError::Write(root.clone(), e))?;
        let (mnt, _) = snapvisor_vmm::pool::medium::setup_emulation(&root, huge_pages, kind)
            .map_err(|e| BenchError::Pool(e.into()))?;
        Ok((Emulation { root: Some(root) }, mnt))
    }
}

impl Drop for Emulation {
    fn drop(&mut self) {
        if let Some(root) = self.root.take() {
            match data::destroy_pool(&root) {
                // Only the (now empty) directories it made; a non-empty one stays.
                Ok(_) => {
                    let _ = std::fs::remove_dir(root.join("mnt"));
                    let _ = std::fs::remove_dir(&root);
                }
                Err(e) => {
                    eprintln!("warning: could not tear down the benchmark's medium under {}: {e}", root.display())
                }
            }
        }
    }
}

/// Every function's snapshots and the pool.
pub struct Fixtures {
    /// Per function.
    pub functions: BTreeMap<String, FunctionFixture>,
    /// The pool (every snapshot imported under the function's name).
    pub pool: Arc<Pool>,
    /// The directory on the emulated medium.
    pub medium_dir: PathBuf,
    // Dropped last: the pool and the copies live on it.
    _emulation: Emulation,
}

impl Fixtures {
    /// The pool's medium.
    pub fn medium(&self) -> Medium {
        self.pool.medium()
    }

    /// One function's fixture.
    pub fn get(&self, function: &str) -> &FunctionFixture {
        &self.functions[function]
    }
}

/// Snapshots `function` with `mem_size` of memory into `dir` (replacing what is there).
pub fn take_snapshot(
    hv: &Hypervisor,
    function: &str,
    mem_size: u64,
    dir: &Path,
    timeout: Duration,
) -> Result<(), BenchError> {
    let wrap = |e: snapvisor_vmm::Error| BenchError::run(function, "snapshot", e);
    let image = snapvisor_guest_images::get(function).ok_or_else(|| BenchError::UnknownFunction(function.into()))?;
    let (mut vm, _) = MicroVm::boot(hv, image.elf, mem_size).map_err(wrap)?;
    vm.wait_ready(timeout).map_err(wrap)?;
    vm.snapshot(hv, function, image.elf, dir, true).map_err(wrap)?;
    Ok(())
}

/// Records the working sets of the snapshot in `dir` with `function`'s input `input`.
pub fn record(
    hv: &Hypervisor,
    function: &str,
    dir: &Path,
    input: &str,
    timeout: Duration,
) -> Result<Recorded, BenchError> {
    let request =
        snapvisor_functions::input(function, input).ok_or_else(|| BenchError::UnknownFunction(function.into()))?;
    let recorded = snapvisor_vmm::restore::record(hv, dir, request, input, timeout)
        .map_err(|e| BenchError::run(function, &format!("record with {input}"), e))?;
    for response in &recorded.responses {
        crate::node::runner::digest_of(response).map_err(|source| BenchError::Run {
            function: function.into(),
            what: "record".into(),
            source,
        })?;
    }
    Ok(recorded)
}

/// Copies the snapshot in `from` to `to`: manifest and state as they are, the memory file
/// written page by page (holes kept), so `to`'s page cache is as a writer leaves it.
fn copy_snapshot(from: &Path, to: &Path) -> Result<(), BenchError> {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).map_err(|e| BenchError::Write(to.into(), e))?;
    for name in [MANIFEST, STATE] {
        std::fs::copy(from.join(name), to.join(name)).map_err(|e| BenchError::Write(to.join(name), e))?;
    }
    sparse_copy(&from.join(MEMORY), &to.join(MEMORY)).map_err(|e| BenchError::Write(to.join(MEMORY), e))
}

/// Builds every fixture: snapshots, recordings with `record_input`, copies, the pool.
pub fn build(
    hv: &Hypervisor,
    data: &DataDir,
    functions: &[String],
    mem_size: u64,
    kind: EmulatedKind,
    timeout: Duration,
    progress: &dyn Fn(&str) -> Result<(), BenchError>,
) -> Result<Fixtures, BenchError> {
    let root = data.root().join("bench");
    let mut out = BTreeMap::new();
    for f in functions {
        progress(&format!("snapshot {f}, record with input A"))?;
        let disk = root.join("disk").join(f);
        take_snapshot(hv, f, mem_size, &disk, timeout)?;
        let recorded = record(hv, f, &disk, snapvisor_functions::catalog::RECORD_INPUT, timeout)?;
        let written = root.join("written").join(f);
        copy_snapshot(&disk, &written)?;
        out.insert(f.clone(), FunctionFixture { disk, written, pmem: PathBuf::new(), recorded, mem_size });
    }
    // The medium: room for every snapshot's data twice (the pool and the Vanilla copies).
    let data_bytes: u64 =
        out.values().map(|f| Snapshot::open(&f.disk).map(|s| s.data_chunk_bytes()).unwrap_or(0)).sum();
    progress("persistent-memory medium and pool")?;
    let (emulation, medium_dir) = Emulation::new(data.bench_pool_root(), kind, (data_bytes / EXTENT) * 2 + 64)?;
    let pool_path = medium_dir.join(data::POOL_FILE);
    let pool_size = data_bytes + (functions.len() as u64 + 2) * 2 * EXTENT;
    Pool::create(&pool_path, pool_size)?;
    let pool = Pool::open(&pool_path)?;
    for (f, fixture) in out.iter_mut() {
        progress(&format!("pool import {f}, Vanilla copy"))?;
        pool.import(&fixture.disk, f, &mut |_, _| {})?;
        fixture.pmem = medium_dir.join("vanilla").join(f);
        copy_snapshot(&fixture.disk, &fixture.pmem)?;
    }
    Ok(Fixtures { functions: out, pool, medium_dir, _emulation: emulation })
}
