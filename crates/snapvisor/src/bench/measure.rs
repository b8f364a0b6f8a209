//! One measured SnapStart of N VMs: the page cache put into the configuration's state and
//! checked, the VMs restored at once, and — while every VM is alive — what the host spends
//! on them, from its own view.
//!
//! Host view: `/proc/meminfo` deltas (anonymous memory, huge pages in use or reserved, page
//! tables), plus the page cache of the files the configuration reads (`mincore`) — counted
//! whenever it is resident, not only if this run read it, so that a warm page cache is never
//! free. Pages on the emulated persistent-memory medium (the pool, `P` copies) are PMem on
//! the paper's machine: reported apart, not as DRAM.

use super::fixture::FunctionFixture;
use super::memory::{HostMemory, MemInfo};
use super::pagecache::{self, Residency};
use super::setups::Setup;
use super::BenchError;
use crate::node::runner::{snapstart, SnapStartRun, VmSample};
use serde::Serialize;
use snapvisor_vmm::Hypervisor;
use std::sync::Mutex;
use std::time::Duration;

/// What the host spent on the VMs of one run, MiB.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct HostView {
    /// DRAM: anonymous + page cache of the files read + huge pages + page tables.
    pub dram_mib: f64,
    /// Of which anonymous memory (the VMs' private pages, copies, buffers).
    pub anon_mib: f64,
    /// Of which page cache of the configuration's files (on disk).
    pub page_cache_mib: f64,
    /// Of which huge pages in use or reserved.
    pub hugetlb_mib: f64,
    /// Persistent memory (emulated): the snapshot's pages on the medium.
    pub pmem_mib: f64,
}

/// One run.
pub struct Measurement {
    /// One sample per VM.
    pub samples: Vec<VmSample>,
    /// The host's view while all were alive.
    pub host: HostView,
    /// The memory file's residency when the restore started.
    pub residency: Residency,
}

/// How many VMs a run restores at once, and what each may take.
#[derive(Clone, Copy, Debug)]
pub struct Vms {
    /// VMs restored at once.
    pub n: usize,
    /// Guest timeout per invocation.
    pub timeout: Duration,
    /// Whether each VM trims its fresh huge pages after its response, once the host's
    /// memory was read (see [`SnapStartRun::trim`]).
    pub trim: bool,
}

impl Vms {
    /// `n` VMs, untrimmed.
    pub fn new(n: usize, timeout: Duration) -> Self {
        Vms { n, timeout, trim: false }
    }

    /// One VM that trims after its response.
    pub fn one_trimmed(timeout: Duration) -> Self {
        Vms { n: 1, timeout, trim: true }
    }
}

/// Restores `vms.n` VMs of `function` with `setup` at once and invokes each with `request`.
pub fn snapstart_n(
    hv: &Hypervisor,
    function: &str,
    fx: &FunctionFixture,
    setup: &Setup,
    request: &[u8],
    vms: Vms,
) -> Result<Measurement, BenchError> {
    let Vms { n, timeout, trim } = vms;
    let residency = setup.prepare(fx)?;
    let source = setup.source(function, fx);
    let files = setup.files(fx);
    let before = MemInfo::read().map_err(|e| BenchError::Write("/proc/meminfo".into(), e))?;
    let alive: Mutex<Option<(MemInfo, u64)>> = Mutex::new(None);
    let read = || {
        let cached: u64 = files.iter().filter_map(|f| pagecache::residency(f).ok()).map(|r| r.resident * 4096).sum();
        if let Ok(now) = MemInfo::read() {
            *alive.lock().unwrap_or_else(|p| p.into_inner()) = Some((now, cached));
        }
    };
    let mem_size = fx.mem_size;
    let run = SnapStartRun {
        concurrency: n,
        timeout,
        shells: setup.shells.then_some(mem_size),
        ready: None,
        while_alive: Some(&read),
        trim,
    };
    let samples = snapstart(hv, &source, setup.memory.as_ref(), request, &run).map_err(|source| BenchError::Run {
        function: function.into(),
        what: setup.name.clone(),
        source,
    })?;
    let (after, cached) = alive.into_inner().unwrap_or_else(|p| p.into_inner()).unwrap_or_default();
    let delta = HostMemory::delta(&before, &after);
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    let (page_cache_mib, file_pmem_mib) = if setup.on_medium() { (0.0, mib(cached)) } else { (mib(cached), 0.0) };
    let pool_mib = match &setup.place {
        super::setups::Place::Pool(pool) => pool
            .info()
            .ok()
            .and_then(|i| i.snapshots.into_iter().find(|s| s.id == function))
            .map_or(0.0, |s| mib(s.extents.len() as u64 * snapvisor_vmm::pool::format::EXTENT)),
        _ => 0.0,
    };
    let host = HostView {
        dram_mib: delta.anon_mib + delta.hugetlb_mib + delta.page_tables_mib + page_cache_mib,
        anon_mib: delta.anon_mib,
        page_cache_mib,
        hugetlb_mib: delta.hugetlb_mib,
        pmem_mib: file_pmem_mib + pool_mib,
    };
    Ok(Measurement { samples, host, residency })
}
