//! `snapvisor bench`: every function × every strategy, warm invocation vs SnapStart,
//! side by side on the same snapshots, plus the concurrency experiment.
//!
//! For each function: a fresh snapshot; warm invocations on a running VM; SnapStarts
//! with each filesystem strategy from a warm and from an evicted page cache; SnapStarts
//! with `pass` from the pool (the snapshot imported once). Each configuration gets one
//! untimed warm-up run, then `reps` rounds in which every configuration runs once
//! (interleaved, so drift on a shared machine spreads evenly). Every response's digest is checked
//! against the host's own computation of the same request. Results: `results.csv` (one
//! row per VM), `concurrency.csv`, `summary.md` and `concurrency.svg` in the output directory.

pub mod load;
pub mod memory;
pub mod oha;
pub mod pagecache;
mod plot;
pub mod report;

use crate::data::{self, DataDir};
use crate::runner::{snapstart, RunError, VmSample, WarmVm};
use indicatif::{ProgressBar, ProgressStyle};
use report::{ConcurrencyRow, Header, Row};
use snapvisor_functions::catalog::{MEASURE_INPUT, RECORD_INPUT};
use snapvisor_vmm::pool::format::EXTENT;
use snapvisor_vmm::pool::medium::EmulatedKind;
use snapvisor_vmm::pool::Pool;
use snapvisor_vmm::restore::{strategy as make_strategy, SnapshotSource, Strategy};
use snapvisor_vmm::Hypervisor;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Functions (built-in names).
    pub functions: Vec<String>,
    /// Strategies.
    pub strategies: Vec<Strategy>,
    /// Measured repetitions per configuration.
    pub reps: usize,
    /// Output directory.
    pub out: PathBuf,
    /// Data directory (snapshots, the benchmark's pool).
    pub data: DataDir,
    /// Guest memory bytes.
    pub mem_size: u64,
    /// Concurrency levels of the concurrency experiment (empty: skip it).
    pub concurrency: Vec<usize>,
    /// Functions the concurrency experiment runs.
    pub concurrency_functions: Vec<String>,
    /// Whether to also restore from an evicted page cache.
    pub cold: bool,
    /// Emulated pool medium.
    pub pool_medium: EmulatedKind,
    /// Per-run guest timeout.
    pub timeout: Duration,
}

/// Why the benchmark failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A run failed.
    #[error("{function} / {what}")]
    Run {
        /// Function.
        function: String,
        /// Configuration.
        what: String,
        /// The failure.
        #[source]
        source: RunError,
    },
    /// The VMM failed outside a run.
    #[error(transparent)]
    Vmm(#[from] snapvisor_vmm::Error),
    /// The pool failed.
    #[error(transparent)]
    Pool(#[from] snapvisor_vmm::pool::PoolError),
    /// A function is not built in.
    #[error("no built-in function `{0}` (see `snapvisor functions`)")]
    UnknownFunction(String),
    /// Writing results failed.
    #[error("{}: could not write results", .0.display())]
    Write(PathBuf, #[source] std::io::Error),
    /// A guest answered differently from the host's computation.
    #[error("{0} responses did not match the host's computation (see digest_ok in results.csv)")]
    DigestMismatch(usize),
}

/// The medium label of filesystem SnapStarts.
pub fn disk_medium(cold: bool) -> &'static str {
    if cold {
        "disk-cold"
    } else {
        "disk-warm"
    }
}

/// One SnapStart configuration of the latency experiment.
struct Config {
    strategy: Strategy,
    source: SnapshotSource,
    medium: &'static str,
    cold: bool,
}

/// Removes the benchmark's pool emulation when dropped (also on errors).
struct PoolGuard(Option<PathBuf>);

impl Drop for PoolGuard {
    fn drop(&mut self) {
        if let Some(root) = self.0.take() {
            if let Err(e) = data::destroy_pool(&root) {
                eprintln!("warning: could not tear down the benchmark pool under {}: {e}", root.display());
            }
        }
    }
}

/// Runs the benchmark and writes its results; returns the Markdown summary.
pub fn run(hv: &Hypervisor, config: &BenchConfig) -> Result<String, BenchError> {
    for f in config.functions.iter().chain(&config.concurrency_functions) {
        if snapvisor_functions::info(f).is_none() || snapvisor_guest_images::get(f).is_none() {
            return Err(BenchError::UnknownFunction(f.clone()));
        }
    }
    std::fs::create_dir_all(&config.out).map_err(|e| BenchError::Write(config.out.clone(), e))?;
    let file_strategies: Vec<Strategy> = config.strategies.iter().copied().filter(|s| !s.uses_pool()).collect();
    let with_pass = config.strategies.contains(&Strategy::Pass);
    let media: Vec<bool> = if config.cold { vec![false, true] } else { vec![false] };

    let conc_runs: usize = config.concurrency.iter().sum::<usize>().max(1) * config.strategies.len();
    let per_function = config.reps * (1 + file_strategies.len() * media.len() + usize::from(with_pass));
    let total = (config.functions.len() * per_function + config.concurrency_functions.len() * conc_runs) as u64;
    let progress = ProgressBar::new(total).with_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .expect("valid template"),
    );

    // Snapshots, and the pool with every snapshot imported once.
    let mut functions: Vec<String> = config.functions.clone();
    for f in &config.concurrency_functions {
        if !functions.contains(f) {
            functions.push(f.clone());
        }
    }
    let mut pool_guard = PoolGuard(None);
    let mut pool: Option<Arc<Pool>> = None;
    for function in &functions {
        progress.set_message(format!("snapshot {function} (and record working sets)"));
        take_snapshot(hv, config, function)?;
    }
    if with_pass {
        let root = config.data.bench_pool_root();
        let _ = data::destroy_pool(&root); // a run that was killed may have left one
                                           // Pool room: each snapshot's non-zero 2 MiB chunks plus one extent for its state
                                           // and index. Copy-on-write room (hugetlbfs reserves it when a VM maps the pool):
                                           // the largest snapshot once per VM that can run at the same time.
        let mut data = Vec::new();
        for f in &functions {
            let snap =
                snapvisor_vmm::snapshot::Snapshot::open(config.data.snapshot(f)).map_err(snapvisor_vmm::Error::from)?;
            data.push(snap.data_chunk_bytes());
        }
        let size = data.iter().map(|d| d + EXTENT).sum::<u64>() + EXTENT;
        let most = config.concurrency.iter().copied().max().unwrap_or(1).max(1) as u64;
        let cow = data.iter().copied().max().unwrap_or(0) * most;
        progress.set_message("pool init".to_string());
        let p = data::init_pool(None, &root, size, cow, config.pool_medium)?;
        pool_guard.0 = Some(root);
        for function in &functions {
            progress.set_message(format!("pool import {function}"));
            p.import(&config.data.snapshot(function), function, &mut |_, _| {})?;
        }
        pool = Some(p);
    }
    let pool_medium = pool.as_ref().map(|p| p.medium());

    let mut rows: Vec<Row> = Vec::new();
    let mut conc_rows: Vec<ConcurrencyRow> = Vec::new();
    for function in &config.functions {
        let request = measured_input(function);
        progress.set_message(format!("{function}: host computation"));
        let expected =
            crate::runner::digest_of(&snapvisor_functions::run_native(function, request).expect("built in")).map_err(
                |source| BenchError::Run { function: function.clone(), what: "host computation".into(), source },
            )?;
        let err = |what: String| move |source| BenchError::Run { function: function.clone(), what, source };

        // The configurations, measured interleaved (one run of each per round) so that
        // drift on a shared machine does not favour whichever ran first.
        let image = snapvisor_guest_images::get(function).expect("checked above");
        let snapshot = snapvisor_vmm::snapshot::Snapshot::open(config.data.snapshot(function))
            .map_err(snapvisor_vmm::Error::from)?;
        let mut configs: Vec<Config> = Vec::new();
        for &s in &file_strategies {
            for &cold in &media {
                configs.push(Config {
                    strategy: s,
                    source: SnapshotSource::Dir(config.data.snapshot(function)),
                    medium: disk_medium(cold),
                    cold,
                });
            }
        }
        if let Some(pool) = &pool {
            configs.push(Config {
                strategy: Strategy::Pass,
                source: SnapshotSource::Pool { pool: pool.clone(), id: function.clone() },
                medium: pool.medium().short(),
                cold: false,
            });
        }
        let strategies: Vec<_> = configs.iter().map(|c| make_strategy(c.strategy)).collect();
        let snapstart_once =
            |c: &Config, strat: &dyn snapvisor_vmm::restore::MemoryStrategy| -> Result<VmSample, BenchError> {
                if c.strategy.uses_pool() {
                    // The pool is memory: no page cache to prepare.
                } else if c.cold {
                    snapshot.evict_page_cache().map_err(snapvisor_vmm::Error::from)?;
                } else {
                    snapshot.warm_page_cache().map_err(snapvisor_vmm::Error::from)?;
                }
                let mut samples = snapstart(hv, &c.source, strat, request, 1, config.timeout)
                    .map_err(err(format!("{} {}", c.strategy, c.medium)))?;
                Ok(samples.remove(0))
            };
        // Warm-up: the warm VM serves its first request; every restore configuration runs once.
        progress.set_message(format!("{function}: warm-up"));
        let mut warm =
            WarmVm::start(hv, image.elf, config.mem_size, request, config.timeout).map_err(err("warm".into()))?;
        for (c, strat) in configs.iter().zip(&strategies) {
            snapstart_once(c, strat.as_ref())?;
        }
        // Each SnapStart is paired with a warm invocation run just before it; each round
        // starts at a different configuration.
        let n = configs.len().max(1);
        for rep in 0..config.reps {
            progress.set_message(format!("{function}: round {}/{}", rep + 1, config.reps));
            for k in 0..n {
                let warm_sample = warm.invoke(request).map_err(err("warm".into()))?;
                let warm_row = Row::new(function, "warm", "dram", 1, rep * n + k, &warm_sample, &expected);
                let Some((c, strat)) = configs.get((rep + k) % n).zip(strategies.get((rep + k) % n)) else {
                    rows.push(warm_row);
                    continue;
                };
                let sample = snapstart_once(c, strat.as_ref())?;
                let row = Row {
                    paired_warm_ms: warm_row.total_ms,
                    ..Row::new(function, c.strategy.name(), c.medium, 1, rep, &sample, &expected)
                };
                rows.push(warm_row);
                rows.push(row);
                progress.inc(1);
            }
            progress.inc(1);
        }
        drop(warm);
    }

    // Concurrency: N VMs of one snapshot at once (page cache warm for the file strategies).
    for function in &config.concurrency_functions {
        let request = measured_input(function);
        let expected =
            crate::runner::digest_of(&snapvisor_functions::run_native(function, request).expect("built in")).map_err(
                |source| BenchError::Run { function: function.clone(), what: "host computation".into(), source },
            )?;
        for &s in &config.strategies {
            let (source, medium) = match (&pool, s.uses_pool()) {
                (Some(pool), true) => {
                    (SnapshotSource::Pool { pool: pool.clone(), id: function.clone() }, pool.medium().short())
                }
                (None, true) => continue,
                (_, false) => (SnapshotSource::Dir(config.data.snapshot(function)), disk_medium(false)),
            };
            let strat = make_strategy(s);
            // Untimed warm-up, so that every strategy starts from the same page-cache state.
            snapstart(hv, &source, strat.as_ref(), request, 1, config.timeout).map_err(|source| BenchError::Run {
                function: function.clone(),
                what: format!("{s} warm-up"),
                source,
            })?;
            for &n in &config.concurrency {
                progress.set_message(format!("{function}: {s} × {n}"));
                if !s.uses_pool() {
                    snapvisor_vmm::snapshot::Snapshot::open(config.data.snapshot(function))
                        .and_then(|snap| snap.warm_page_cache())
                        .map_err(snapvisor_vmm::Error::from)?;
                }
                let samples: Vec<VmSample> =
                    snapstart(hv, &source, strat.as_ref(), request, n, config.timeout).map_err(|source| {
                        BenchError::Run { function: function.clone(), what: format!("{s} concurrency {n}"), source }
                    })?;
                for sample in &samples {
                    rows.push(Row {
                        experiment: report::CONCURRENCY,
                        ..Row::new(function, s.name(), medium, n, 0, sample, &expected)
                    });
                }
                conc_rows.push(ConcurrencyRow::new(function, s.name(), medium, n, &samples));
                progress.inc(n as u64);
            }
        }
    }
    progress.finish_and_clear();

    let header = Header::collect(hv, config, pool_medium);
    let summary = report::write_all(&config.out, &header, &rows, &conc_rows)
        .map_err(|e| BenchError::Write(config.out.clone(), e))?;
    plot::concurrency_svg(&config.out.join("concurrency.svg"), &conc_rows)
        .map_err(|e| BenchError::Write(config.out.join("concurrency.svg"), e))?;
    drop(pool);
    drop(pool_guard);
    let mismatches = rows.iter().filter(|r| !r.digest_ok).count();
    if mismatches > 0 {
        return Err(BenchError::DigestMismatch(mismatches));
    }
    Ok(summary)
}

/// The request every measured run sends: input B.
fn measured_input(function: &str) -> &'static [u8] {
    snapvisor_functions::input(function, MEASURE_INPUT).expect("every function has input B")
}

fn take_snapshot(hv: &Hypervisor, config: &BenchConfig, function: &str) -> Result<(), BenchError> {
    let dir = config.data.snapshot(function);
    let image = snapvisor_guest_images::get(function).ok_or_else(|| BenchError::UnknownFunction(function.into()))?;
    let wrap = |source: snapvisor_vmm::Error| BenchError::Run {
        function: function.into(),
        what: "snapshot".into(),
        source: source.into(),
    };
    let (mut vm, _) = snapvisor_vmm::MicroVm::boot(hv, image.elf, config.mem_size).map_err(wrap)?;
    vm.wait_ready(config.timeout).map_err(wrap)?;
    vm.snapshot(hv, function, image.elf, &dir, true).map_err(wrap)?;
    drop(vm);
    // The prefetching strategies record their working sets once, with input A (measured with B).
    if config.strategies.iter().any(|s| matches!(s, Strategy::Reap | Strategy::Faasnap)) {
        let request = snapvisor_functions::input(function, RECORD_INPUT).expect("every function has input A");
        let recorded = snapvisor_vmm::restore::record(hv, &dir, request, RECORD_INPUT, config.timeout).map_err(wrap)?;
        for response in &recorded.responses {
            crate::runner::digest_of(response).map_err(|source| BenchError::Run {
                function: function.into(),
                what: "record".into(),
                source,
            })?;
        }
    }
    Ok(())
}
