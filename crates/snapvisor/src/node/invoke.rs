//! Invocations: a fresh VM (boot, init, one request), and SnapStarts — N VMs restored
//! from one snapshot with one strategy, each serving one request — with their reports.

use super::functions::{check_fits, Image, Input, Role};
use super::report::{summarise, VmReport};
use super::runner::{self, FreshRun, VmSample};
use super::{Node, NodeError};
use serde::Serialize;
use snapvisor_vmm::restore::{self, MemoryStrategy, Shell, SnapshotSource, Strategy};
use snapvisor_vmm::snapshot::Snapshot;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where a SnapStart's snapshot is.
#[derive(Clone, Debug)]
pub enum SnapshotRef {
    /// A snapshot directory (lazy, uffd, reap, faasnap, cached).
    Dir(PathBuf),
    /// A snapshot in a pool, by id (pass).
    Pool {
        /// The pool [default: the data directory's].
        pool: Option<PathBuf>,
        /// Snapshot id.
        id: String,
    },
}

impl std::fmt::Display for SnapshotRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotRef::Dir(dir) => write!(f, "{}", dir.display()),
            SnapshotRef::Pool { pool: None, id } => write!(f, "pool snapshot {id}"),
            SnapshotRef::Pool { pool: Some(pool), id } => write!(f, "pool snapshot {id} in {}", pool.display()),
        }
    }
}

/// A SnapStart request.
#[derive(Clone, Debug)]
pub struct InvokeSpec {
    /// The snapshot.
    pub snapshot: SnapshotRef,
    /// How guest memory comes back.
    pub strategy: Strategy,
    /// The request.
    pub input: Input,
    /// VMs restored and invoked at once.
    pub concurrency: usize,
    /// Evict the snapshot's files from the page cache first.
    pub cold: bool,
    /// Bytes per userfaultfd fault for `uffd` (4 KiB..2 MiB, a power of two).
    pub uffd_chunk: usize,
    /// Longest one invocation may take.
    pub timeout: Duration,
}

/// A guest's response: in JSON, the value itself when it is JSON (the built-in functions
/// answer JSON), else its text (invalid UTF-8 replaced); the encoder escapes it.
#[derive(Clone, Debug, Default)]
pub struct GuestResponse(pub Vec<u8>);

impl Serialize for GuestResponse {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match serde_json::from_slice::<serde_json::Value>(&self.0) {
            Ok(value) => value.serialize(serializer),
            Err(_) => serializer.serialize_str(&String::from_utf8_lossy(&self.0)),
        }
    }
}

/// A fresh run of a function (`snapvisor run`, the daemon's `POST /runs`).
#[derive(Debug, Serialize)]
pub struct RunReport {
    /// Function (or image) name.
    pub function: String,
    /// Which input ran.
    pub input: String,
    /// The guest's response.
    pub response: GuestResponse,
    /// Timings and counters.
    #[serde(flatten)]
    pub run: FreshRun,
}

/// What a SnapStart of N VMs (or a warm invocation) did.
#[derive(Debug, Serialize)]
pub struct InvokeReport {
    /// Function the snapshot was taken of.
    pub function: String,
    /// Which input ran.
    pub input: String,
    /// Which input the working sets the strategy used were recorded with (reap, faasnap).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recorded_with: Option<String>,
    /// Strategy.
    pub strategy: &'static str,
    /// Where the snapshot was read from (`disk-warm`, `disk-cold`, or the pool's medium).
    pub medium: String,
    /// VMs at once.
    pub concurrency: usize,
    /// Median SnapStart (restore + invocation).
    pub p50_ms: f64,
    /// 99th percentile SnapStart.
    pub p99_ms: f64,
    /// Host memory of all VMs' guest RAM: private pages summed, shared pages once.
    pub total_mib: f64,
    /// Booting and initialising the warm VM this request had to start (warm invocations
    /// without an idle VM only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_ms: Option<f64>,
    /// With `keep_warm`: whether the VM stays for the next request (false when the warm
    /// set was full).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept_warm: Option<bool>,
    /// The first VM's response (all VMs answered the same).
    pub response: GuestResponse,
    /// One row per VM.
    pub vms: Vec<VmReport>,
}

impl InvokeReport {
    /// The report of `samples` (at least one), all of which must have answered alike.
    pub fn new(
        function: String,
        input: String,
        strategy: &'static str,
        medium: String,
        samples: Vec<VmSample>,
    ) -> Result<Self, NodeError> {
        let expected = samples.first().ok_or(NodeError::Inconsistent)?.digest.clone();
        if samples.iter().any(|s| s.digest != expected) {
            return Err(NodeError::Inconsistent);
        }
        let n = samples.len();
        let vms: Vec<VmReport> = samples.iter().map(VmReport::of).collect();
        let (p50_ms, p99_ms, total_mib) = summarise(&samples);
        Ok(InvokeReport {
            function,
            input,
            recorded_with: None,
            strategy,
            medium,
            concurrency: n,
            p50_ms,
            p99_ms,
            total_mib,
            boot_ms: None,
            kept_warm: None,
            response: GuestResponse(samples.into_iter().next().map(|s| s.response).unwrap_or_default()),
            vms,
        })
    }
}

impl Node {
    /// Boots `image` in a fresh VM, runs its init and invokes it once with `input`.
    pub fn run(&self, image: &Image, input: &Input, mem_size: u64, timeout: Duration) -> Result<RunReport, NodeError> {
        let request = input.resolve(&image.name, Role::Measure)?;
        check_fits(&image.name, &request, mem_size)?;
        let mut run = runner::fresh_run(self.hypervisor()?, &image.elf, mem_size, &request.bytes, timeout)?;
        let response = GuestResponse(std::mem::take(&mut run.response));
        Ok(RunReport { function: image.name.clone(), input: request.label, response, run })
    }

    /// Restores `spec.concurrency` VMs at once and invokes each with the request.
    pub fn invoke(&self, spec: &InvokeSpec) -> Result<InvokeReport, NodeError> {
        self.invoke_prepared(spec, self.prepare(spec)?)
    }

    /// [`Node::invoke`] of a SnapStart already resolved by [`Node::prepare`].
    pub(crate) fn invoke_prepared(&self, spec: &InvokeSpec, p: Prepared) -> Result<InvokeReport, NodeError> {
        let n = spec.concurrency.max(1);
        let hv = self.shared_hypervisor()?;
        let ready = self.shells.as_ref().map(|_| Mutex::new(self.take_shells(p.mem_size, n)));
        let run = runner::SnapStartRun { ready: ready.as_ref(), ..runner::SnapStartRun::plain(n, spec.timeout) };
        let samples = runner::snapstart(hv, &p.source, p.strategy.as_ref(), &p.request, &run);
        self.refill_shells(p.mem_size);
        let samples = samples?;
        let mut report = InvokeReport::new(p.function, p.label, spec.strategy.name(), p.medium, samples)?;
        report.recorded_with = p.recorded_with;
        Ok(report)
    }

    /// Up to `n` VM shells of `mem_size` from the stock (none without one).
    pub(crate) fn take_shells(&self, mem_size: u64, n: usize) -> Vec<Shell> {
        self.shells.as_ref().map_or_else(Vec::new, |stock| stock.take(mem_size, n))
    }

    /// Has the stock make shells of `mem_size` in the background until it is full again
    /// (after a SnapStart, so that making them does not compete with its restore).
    pub(crate) fn refill_shells(&self, mem_size: u64) {
        if let (Some(stock), Some(hv)) = (&self.shells, self.hv.get()) {
            stock.refill(Arc::clone(hv), mem_size);
        }
    }

    /// Resolves a SnapStart's snapshot, strategy and request, and checks they fit.
    pub(crate) fn prepare(&self, spec: &InvokeSpec) -> Result<Prepared, NodeError> {
        let (source, function, medium, mem_size) = match &spec.snapshot {
            SnapshotRef::Pool { pool, id } => {
                if !spec.strategy.uses_pool() {
                    return Err(NodeError::Invalid(format!(
                        "strategy `{}` restores from a snapshot directory, not from the pool",
                        spec.strategy
                    )));
                }
                if spec.cold {
                    return Err(NodeError::Invalid(
                        "--cold evicts snapshot files from the page cache; a pool has none (pass reads the pool's memory directly)".into(),
                    ));
                }
                let pool = self.open_pool(pool.as_deref())?;
                let opened = pool.open_snapshot(id)?;
                let (function, mem_size) = (opened.function().to_string(), opened.index().mem_size);
                let medium = pool.medium().short().to_string();
                (SnapshotSource::Pool { pool, id: id.clone() }, function, medium, mem_size)
            }
            SnapshotRef::Dir(dir) => {
                if spec.strategy.uses_pool() {
                    return Err(NodeError::Invalid(format!(
                        "strategy `{}` restores from the pool: import the snapshot and give its id",
                        spec.strategy
                    )));
                }
                let snapshot = Snapshot::open(dir)?;
                if spec.cold {
                    snapshot.evict_page_cache()?;
                }
                let medium = if spec.cold { "disk-cold" } else { "disk-warm" }.to_string();
                (SnapshotSource::Dir(dir.clone()), snapshot.manifest().function.clone(), medium, snapshot.mem_size())
            }
        };
        let strategy: Box<dyn MemoryStrategy> = match spec.strategy {
            Strategy::Uffd => Box::new(restore::Uffd::new(spec.uffd_chunk)),
            other => restore::strategy(other),
        };
        let request = spec.input.resolve(&function, Role::Measure)?;
        check_fits(&function, &request, mem_size)?;
        let recorded_with = match (&spec.snapshot, spec.strategy) {
            (SnapshotRef::Dir(dir), Strategy::Reap | Strategy::Faasnap) => {
                snapvisor_vmm::snapshot::recording::Recording::read(dir).map(|r| r.input)
            }
            _ => None,
        };
        Ok(Prepared {
            source,
            medium,
            mem_size,
            strategy,
            request: request.bytes.into_owned(),
            label: request.label,
            recorded_with,
            function,
        })
    }
}

/// A SnapStart resolved from its spec: what to restore, how, and the request.
pub(crate) struct Prepared {
    /// The snapshot.
    pub source: SnapshotSource,
    /// Function the snapshot was taken of.
    pub function: String,
    /// Where the snapshot is read from (for the report).
    pub medium: String,
    /// Its guest memory size.
    pub mem_size: u64,
    /// The strategy, configured.
    pub strategy: Box<dyn MemoryStrategy>,
    /// The request bytes.
    pub request: Vec<u8>,
    /// Which input they are.
    pub label: String,
    /// Which input the working sets were recorded with (reap, faasnap).
    pub recorded_with: Option<String>,
}
