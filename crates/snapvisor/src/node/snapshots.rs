//! Taking snapshots and recording the prefetching strategies' working sets.

use super::functions::{Image, Input, Role};
use super::runner::{digest_of, ms};
use super::{Node, NodeError};
use serde::Serialize;
use snapvisor_vmm::snapshot::Snapshot;
use snapvisor_vmm::MicroVm;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What to snapshot, and where.
#[derive(Clone, Debug)]
pub struct SnapshotSpec {
    /// The guest.
    pub image: Image,
    /// Snapshot directory [default: DATA_DIR/snapshots/NAME].
    pub out: Option<PathBuf>,
    /// Guest memory bytes.
    pub mem_size: u64,
    /// Replace an existing snapshot (atomically, once the new one is complete).
    pub force: bool,
    /// Longest the guest's init may take.
    pub timeout: Duration,
}

/// A snapshot taken.
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotReport {
    /// Its directory.
    pub path: PathBuf,
    /// Function (or image) name.
    pub function: String,
    /// Guest init, boot to its first `ready`.
    pub init_ms: f64,
    /// Writing the snapshot.
    pub write_ms: f64,
    /// Guest memory bytes.
    pub mem_size: u64,
    /// Bytes of non-zero pages stored.
    pub data_bytes: u64,
    /// Runs of zero pages (holes in the memory file).
    pub zero_ranges: usize,
}

/// Working sets recorded for a snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct RecordReport {
    /// The snapshot directory.
    pub path: PathBuf,
    /// Function.
    pub function: String,
    /// Which input the recording invocations ran.
    pub input: String,
    /// Pages in REAP's working set.
    pub reap_pages: u64,
    /// Pages in FaaSnap's loading set.
    pub faasnap_pages: u64,
    /// Pages the recording invocation wrote (the write set `pass` uses after an import).
    pub write_pages: u64,
}

impl Node {
    /// Boots the image, runs its init and snapshots it at its first `ready`.
    pub fn snapshot(&self, spec: &SnapshotSpec) -> Result<SnapshotReport, NodeError> {
        let out = spec.out.clone().unwrap_or_else(|| self.data().snapshot(&spec.image.name));
        let hv = self.hypervisor()?;
        let (mut vm, _) = MicroVm::boot(hv, &spec.image.elf, spec.mem_size)?;
        let init = vm.wait_ready(spec.timeout)?;
        let start = Instant::now();
        let manifest = vm.snapshot(hv, &spec.image.name, &spec.image.elf, &out, spec.force)?;
        Ok(SnapshotReport {
            path: out,
            function: spec.image.name.clone(),
            init_ms: ms(init),
            write_ms: ms(start.elapsed()),
            mem_size: manifest.mem_size,
            data_bytes: manifest.memory.data_pages * snapvisor_abi::PAGE_SIZE,
            zero_ranges: manifest.memory.zero_ranges.len(),
        })
    }

    /// Records the working sets of `reap` and `faasnap` for the snapshot in `dir`, invoking
    /// it with `input`; both recording invocations must answer without error.
    pub fn record(&self, dir: &Path, input: &Input, timeout: Duration) -> Result<RecordReport, NodeError> {
        let function = Snapshot::open(dir)?.manifest().function.clone();
        let request = input.resolve(&function, Role::Record)?;
        let recorded =
            snapvisor_vmm::restore::record(self.hypervisor()?, dir, &request.bytes, &request.label, timeout)?;
        for response in &recorded.responses {
            digest_of(response)?;
        }
        Ok(RecordReport {
            path: dir.to_path_buf(),
            function,
            input: request.label,
            reap_pages: recorded.reap_pages,
            faasnap_pages: recorded.faasnap_pages,
            write_pages: recorded.write_pages,
        })
    }
}
