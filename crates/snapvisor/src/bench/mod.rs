//! `snapvisor bench`: the PASS paper's evaluation, reproduced on this host.
//!
//! The fixtures ([`fixture`]: snapshots recorded with input A, their copies, the pool) are
//! made once; then the experiments run in an order where each leaves the fixtures as the
//! next expects them — end to end ([`e2e`], each function followed by pass's own paging
//! pairs, [`paging`]), concurrency ([`concurrency`]), ablation
//! ([`ablation`]), restore phases ([`restore`]), input sensitivity ([`sensitivity`], which
//! records again with input 2) and the daemon under load ([`load`]). Ephemeral workload,
//! where the time goes and cost-effectiveness are derived from the end-to-end and
//! concurrency runs ([`derived`]), the headline and the targets too ([`verdicts`]). The configurations and their page-cache states are
//! in [`setups`]; every run's host memory is measured by [`measure`].
//!
//! Output: `results.csv` (every VM of every run), one CSV per experiment (`paging.csv`
//! among them), `concurrency-levels.csv`, `shells.csv`, `load.csv`, `load.md`,
//! `summary.md` and `concurrency.svg`. Every response's digest is checked against
//! the host's own computation of the same request.

pub mod ablation;
pub mod autocannon;
pub mod concurrency;
mod config;
pub mod derived;
pub mod e2e;
pub mod fixture;
pub mod groups;
mod interrupt;
pub mod load;
pub mod measure;
pub mod memory;
pub mod pagecache;
pub mod paging;
mod plot;
pub mod report;
pub mod restore;
pub mod sensitivity;
pub mod setups;
pub mod summary;
pub mod verdicts;

pub use config::{BenchConfig, BenchError, Experiment, LoadPlan};

use concurrency::Level;
use indicatif::{ProgressBar, ProgressStyle};
use load::{LoadConfig, LoadResults};
use report::{write_csv, Header, Row};
use restore::ShellCost;
use snapvisor_vmm::Hypervisor;
use std::io::IsTerminal as _;
use std::path::Path;
use std::time::Duration;

/// What every experiment gets: the hypervisor, the configuration, the progress bar.
pub struct Ctx<'a> {
    /// The hypervisor.
    pub hv: &'a Hypervisor,
    /// What to run.
    pub config: &'a BenchConfig,
    progress: ProgressBar,
    /// stderr is not a terminal (CI, a log file): the bar is hidden, so each message is
    /// also a plain line with the elapsed time, the progress and the estimate left.
    plain: bool,
}

impl Ctx<'_> {
    /// Says what runs now; stops the run if a signal asked for it (see [`interrupt`]).
    pub fn message(&self, m: &str) -> Result<(), BenchError> {
        if interrupt::requested() {
            return Err(BenchError::Interrupted);
        }
        self.progress.set_message(m.to_string());
        if self.plain {
            let (pos, len) = (self.progress.position(), self.progress.length().unwrap_or(0));
            let elapsed = self.progress.elapsed().as_secs();
            let eta = self.progress.eta().as_secs();
            eprintln!("[{:02}:{:02}, ETA {:02}:{:02}] {pos}/{len} {m}", elapsed / 60, elapsed % 60, eta / 60, eta % 60);
        }
        Ok(())
    }

    /// One measured run done.
    pub fn tick(&self) {
        self.progress.inc(1);
    }

    /// `n` measured runs done (or skipped).
    pub fn tick_by(&self, n: usize) {
        self.progress.inc(n as u64);
    }
}

/// Everything the experiments measured.
#[derive(Default)]
pub struct Results {
    /// Every VM of every run.
    pub rows: Vec<Row>,
    /// The concurrency experiment's levels.
    pub levels: Vec<Level>,
    /// What idle VM shells cost.
    pub shells: Option<ShellCost>,
    /// The load experiment.
    pub load: Option<LoadResults>,
    /// What the run had to leave out or noticed, said in the summary.
    pub notes: Vec<String>,
}

/// Measured runs the plan holds (the progress bar's length; slow functions get fewer
/// rounds, which ticks the difference off as they start).
fn planned_ticks(config: &BenchConfig) -> u64 {
    let e2e_setups = 12;
    let mut n = 0;
    if config.runs(Experiment::E2e) {
        n += config.functions.len() * config.reps * (e2e_setups + paging::PAIRS_PER_REP);
    }
    if config.runs(Experiment::Concurrency) {
        let vms: usize = config.concurrency.iter().sum();
        n += config.concurrency_functions.len() * concurrency::SETUPS.len() * vms;
    }
    if config.runs(Experiment::Ablation) {
        n += config.ablation_functions.len() * config.reps * ablation::SETUPS;
    }
    if config.runs(Experiment::Restore) {
        n += 2 * e2e_setups;
    }
    if config.runs(Experiment::Sensitivity) {
        n += config.sensitivity_functions.len()
            * sensitivity::MEASURED.len()
            * config.sensitivity_reps
            * sensitivity::SETUPS.len();
    }
    if config.runs(Experiment::Load) {
        n += load::DEFAULT_STRATEGIES.len() * config.load.clients.len();
    }
    n as u64
}

/// Runs the benchmark and writes its results; returns the Markdown summary.
pub fn run(hv: &Hypervisor, config: &BenchConfig) -> Result<String, BenchError> {
    let functions = config.all_functions();
    for f in functions.iter().chain(std::iter::once(&config.load.function)) {
        if snapvisor_functions::info(f).is_none() || snapvisor_guest_images::get(f).is_none() {
            return Err(BenchError::UnknownFunction(f.clone()));
        }
    }
    // Fixtures, pool and medium under the data directory are one run's alone.
    let lock_path = config.data.bench_lock_file();
    let _lock = crate::node::data::try_lock(&lock_path)
        .map_err(|e| BenchError::Write(lock_path.clone(), e))?
        .ok_or_else(|| BenchError::Busy(lock_path.clone()))?;
    std::fs::create_dir_all(&config.out).map_err(|e| BenchError::Write(config.out.clone(), e))?;
    let progress = ProgressBar::new(planned_ticks(config)).with_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}, ETA {eta}] {bar:30} {pos}/{len} {msg}")
            .expect("valid template"),
    );
    progress.enable_steady_tick(Duration::from_millis(500));
    interrupt::install();
    let plain = !std::io::stderr().is_terminal();
    let ctx = Ctx { hv, config, progress, plain };
    let mut results = Results::default();

    // `pass` maps where a heap may end with 64 KiB folios where the host has them (as root,
    // turned on for this run and put back after, also after a killed run; vstate/folios.rs).
    let folios = snapvisor_vmm::vstate::folios::enable(&config.data.bench_folios_record());
    let fixtures =
        fixture::build(hv, &config.data, &functions, config.mem_size, config.pool_medium, config.timeout, &|m| {
            ctx.message(m)
        })?;
    let medium = format!("{} ({})", fixtures.medium(), fixtures.medium_dir.display());
    let check = |e: Experiment| config.runs(e) && !functions.is_empty();
    if check(Experiment::E2e) {
        e2e::run(&ctx, &fixtures, &mut results.rows)?;
    }
    if check(Experiment::Concurrency) {
        concurrency::run(&ctx, &fixtures, &mut results.rows, &mut results.levels)?;
    }
    if check(Experiment::Ablation) {
        ablation::run(&ctx, &fixtures, &mut results.rows, &mut results.notes)?;
    }
    if check(Experiment::Restore) {
        results.shells = Some(restore::run(&ctx, &fixtures, &config.restore_function, &mut results.rows)?);
    }
    if check(Experiment::Sensitivity) {
        let mut skipped = Vec::new();
        sensitivity::run(&ctx, &fixtures, &mut results.rows, &mut skipped)?;
        if !skipped.is_empty() {
            results.notes.push(format!(
                "sensitivity: inputs larger than the guests' {} MiB not run: {}",
                config.mem_size >> 20,
                skipped.join(", ")
            ));
        }
    }
    drop(fixtures);
    if config.runs(Experiment::Load) {
        ctx.message(&format!("load: the daemon serving {} under autocannon", config.load.function))?;
        let load = load::run(&LoadConfig {
            data: config.data.clone(),
            out: config.out.clone(),
            function: config.load.function.clone(),
            strategies: load::DEFAULT_STRATEGIES.iter().map(|s| s.to_string()).collect(),
            concurrency: config.load.clients.clone(),
            requests: config.load.requests,
            max_time: Duration::from_secs(120),
            leak_invocations: config.load.leak_invocations,
        })?;
        ctx.tick_by(load.rows.len());
        results.load = Some(load);
    }
    ctx.progress.finish_and_clear();

    let mut header = Header::collect(hv, config, &medium);
    header.lines.push(("64 KiB folios".into(), folios.to_string()));
    header.lines.push(("noise".into(), noise(&results.rows)));
    write_all(&config.out, &results)?;
    let summary = summary::write(&header, &results);
    let path = config.out.join("summary.md");
    std::fs::write(&path, &summary).map_err(|e| BenchError::Write(path, e))?;
    let mismatches = results.rows.iter().filter(|r| !r.digest_ok).count();
    if mismatches > 0 {
        return Err(BenchError::DigestMismatch(mismatches));
    }
    Ok(summary)
}

/// The experiments' CSV files, and the figure.
fn write_all(out: &Path, results: &Results) -> Result<(), BenchError> {
    let csv = |name: &str, rows: &[Row]| {
        let path = out.join(name);
        write_csv(&path, rows).map_err(|e| BenchError::Write(path, e))
    };
    csv("results.csv", &results.rows)?;
    for experiment in ["e2e", paging::EXPERIMENT, "sensitivity", "concurrency", "ablation", "restore"] {
        let rows: Vec<Row> = results.rows.iter().filter(|r| r.experiment == experiment).cloned().collect();
        if !rows.is_empty() {
            csv(&format!("{experiment}.csv"), &rows)?;
        }
    }
    if !results.levels.is_empty() {
        let path = out.join("concurrency-levels.csv");
        write_csv(&path, &results.levels).map_err(|e| BenchError::Write(path, e))?;
        let path = out.join("concurrency.svg");
        plot::concurrency_svg(&path, &results.levels).map_err(|e| BenchError::Write(path, e))?;
    }
    if let Some(shells) = &results.shells {
        let path = out.join("shells.csv");
        write_csv(&path, std::slice::from_ref(shells)).map_err(|e| BenchError::Write(path, e))?;
    }
    Ok(())
}

/// The spread of the warm invocations (the same request on the same VM): how noisy the
/// host was during the run.
fn noise(rows: &[Row]) -> String {
    let mut spreads: Vec<(String, f64)> = Vec::new();
    let mut functions: Vec<&str> = rows.iter().filter(|r| r.config == "warm").map(|r| r.function.as_str()).collect();
    functions.dedup();
    functions.sort_unstable();
    functions.dedup();
    for f in functions {
        let v: Vec<f64> = rows
            .iter()
            .filter(|r| r.config == "warm" && r.function == f && r.experiment == "e2e")
            .map(|r| r.total_ms)
            .collect();
        if let Some(s) = report::stat(&v) {
            if s.median > 0.0 {
                spreads.push((f.to_string(), (s.max - s.min) / s.median));
            }
        }
    }
    if spreads.is_empty() {
        return "no warm invocations to judge by".into();
    }
    let worst = spreads.iter().cloned().fold((String::new(), 0.0), |a, b| if b.1 > a.1 { b } else { a });
    let mut all: Vec<f64> = spreads.iter().map(|s| s.1).collect();
    all.sort_by(f64::total_cmp);
    let median = all[all.len() / 2];
    let verdict = if median > 0.25 { "NOISY: compare paired differences, not absolute times" } else { "quiet enough" };
    format!(
        "warm invocations (same request, same VM) spread (max − min) / median: median {:.0} % over functions, worst {:.0} % ({}) — {verdict}",
        100.0 * median,
        100.0 * worst.1,
        worst.0
    )
}
