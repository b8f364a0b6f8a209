//! Experiment 3, concurrency: N VMs of one snapshot restored at the same moment (N = 1, 2,
//! 4, 8, 16, 32 by default), each invoked once with input B, per configuration; p50 and p99
//! SnapStart time, throughput (N over the time until the last VM answered), and the host's
//! memory with every VM alive. A level the host cannot hold (e.g. `cached` with 32 guests of
//! 1 GiB) is recorded as not fitting, with the figures that rule it out, and not run. A level
//! where a VM runs past the guest timeout is recorded as not finishing, and the
//! configuration's higher levels as not run (they would only take longer).

use super::e2e::{expected_digest, input};
use super::fixture::Fixtures;
use super::measure::{snapstart_n, HostView, Vms};
use super::memory::MemInfo;
use super::report::{Context, Row};
use super::setups;
use super::{BenchError, Ctx};
use crate::node::report::percentile;
use serde::Serialize;
use snapvisor_functions::catalog::{MEASURE_INPUT, RECORD_INPUT};

/// The configurations compared, in the order they run. `cached warm` goes last: at N VMs
/// it reads N GiB into new memory, and that churn slows whatever runs next on this host
/// (see docs/benchmarking.md, "Pairing and noise"); last, only the next function's first
/// configuration follows it, after its untimed warm-up.
pub const SETUPS: [&str; 7] =
    ["vanilla", "lazy written", "uffd warm", "reap warm", "faasnap warm", "pass", "cached warm"];

/// One configuration at one level: a row of `concurrency.csv`.
#[derive(Clone, Debug, Serialize)]
pub struct Level {
    /// Function.
    pub function: String,
    /// Configuration.
    pub config: String,
    /// The papers' name.
    pub paper: String,
    /// VMs at once.
    pub concurrency: usize,
    /// Whether it ran (else `note` says why not).
    pub fits: bool,
    /// Median SnapStart, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// SnapStarts per second (N over the time until the last VM answered).
    pub throughput_per_s: f64,
    /// Host DRAM with every VM alive, MiB.
    pub host_dram_mib: f64,
    /// Emulated PMem, MiB.
    pub host_pmem_mib: f64,
    /// Why it did not run.
    pub note: String,
}

/// Memory a run of `n` VMs needs, bytes, from what one VM of the same configuration took
/// (the warm-up, measured from the host's view): the page cache once (shared), the rest —
/// anonymous memory, huge pages, page tables — once per VM, with a quarter more for the
/// spread between runs.
/// A configuration whose run at some N took longer than this is not run at higher N (the
/// next level would take about twice as long): it keeps the whole benchmark to its time
/// on 2 cores, where 32 VMs of a slow baseline take minutes (read-list: faasnap at 16
/// took 29 s, reap at 8 took 23 s), and says so in the level's note.
const RUN_BUDGET: std::time::Duration = std::time::Duration::from_secs(20);

fn needs(one: &HostView, n: usize) -> u64 {
    let mib = |m: f64| (m.max(0.0) * f64::from(1 << 20)) as u64;
    let per_vm = mib(one.dram_mib - one.page_cache_mib).max(1 << 20);
    mib(one.page_cache_mib) + per_vm * n as u64 * 5 / 4
}

/// Experiment 3 over the run's concurrency functions.
pub fn run(ctx: &Ctx<'_>, fx: &Fixtures, rows: &mut Vec<Row>, levels: &mut Vec<Level>) -> Result<(), BenchError> {
    let setups = setups::named(&fx.pool, &SETUPS);
    for function in &ctx.config.concurrency_functions {
        let f = fx.get(function);
        let request = input(function, MEASURE_INPUT)?;
        let expected = expected_digest(function, request)?;
        for setup in &setups {
            ctx.message(&format!("concurrency: {function}: {} warm-up", setup.name))?;
            let one = snapstart_n(ctx.hv, function, f, setup, request, Vms::new(1, ctx.config.timeout))?.host;
            // The lowest level where a VM ran past the guest timeout, and the first level
            // whose run took longer than the budget (with its slowest VM, ms).
            let mut timed_out: Option<usize> = None;
            let mut over_budget: Option<(usize, f64)> = None;
            for &n in &ctx.config.concurrency {
                let available = MemInfo::read().map(|m| m.available()).unwrap_or(0);
                let need = needs(&one, n);
                let margin = 2u64 << 30;
                let level = Level {
                    function: function.clone(),
                    config: setup.name.clone(),
                    paper: setup.paper.into(),
                    concurrency: n,
                    fits: false,
                    p50_ms: 0.0,
                    p99_ms: 0.0,
                    throughput_per_s: 0.0,
                    host_dram_mib: 0.0,
                    host_pmem_mib: 0.0,
                    note: String::new(),
                };
                if let Some(m) = timed_out {
                    levels.push(Level {
                        note: format!("not run: a VM ran past the guest timeout already at N = {m}"),
                        ..level
                    });
                    ctx.tick_by(n);
                    continue;
                }
                if let Some((m, slowest)) = over_budget {
                    levels.push(Level {
                        note: format!(
                            "not run: the run of N = {m} took {:.0} s already, over the {} s a run may take here (a level doubles it)",
                            slowest / 1e3,
                            RUN_BUDGET.as_secs()
                        ),
                        ..level
                    });
                    ctx.tick_by(n);
                    continue;
                }
                if need + margin > available {
                    levels.push(Level {
                        note: format!(
                            "does not fit: needs about {:.1} GiB ({:.0} MiB per VM as measured with one, {:.0} MiB of page cache shared), the host has {:.1} GiB available",
                            need as f64 / f64::from(1 << 30),
                            one.dram_mib - one.page_cache_mib,
                            one.page_cache_mib,
                            available as f64 / f64::from(1 << 30)
                        ),
                        ..level
                    });
                    ctx.tick_by(n);
                    continue;
                }
                ctx.message(&format!("concurrency: {function}: {} × {n}", setup.name))?;
                let m = match snapstart_n(ctx.hv, function, f, setup, request, Vms::new(n, ctx.config.timeout)) {
                    Ok(m) => m,
                    Err(BenchError::Run { source, .. }) if source.timeout().is_some() => {
                        let limit = source.timeout().unwrap_or_default();
                        levels.push(Level {
                            note: format!(
                                "did not finish: a VM ran past the {:.0} s guest timeout ({n} VMs on {} cores)",
                                limit.as_secs_f64(),
                                std::thread::available_parallelism().map_or(1, |c| c.get())
                            ),
                            ..level
                        });
                        timed_out = Some(n);
                        ctx.tick_by(n);
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let run_ctx = Context {
                    experiment: "concurrency",
                    function,
                    config: &setup.name,
                    paper: setup.paper,
                    strategy: setup.strategy.name(),
                    cache: setup.cache.name(),
                    input: MEASURE_INPUT,
                    recorded_with: RECORD_INPUT,
                    rep: 0,
                };
                let new: Vec<Row> =
                    m.samples.iter().map(|s| Row::new(&run_ctx, n, s, &m.host, &m.residency, &expected)).collect();
                let totals: Vec<f64> = new.iter().map(|r| r.total_ms).collect();
                let slowest = totals.iter().copied().fold(0.0, f64::max);
                if slowest > crate::node::runner::ms(RUN_BUDGET) {
                    over_budget = Some((n, slowest));
                }
                levels.push(Level {
                    fits: true,
                    p50_ms: percentile(&totals, 50.0),
                    p99_ms: percentile(&totals, 99.0),
                    throughput_per_s: if slowest > 0.0 { n as f64 * 1e3 / slowest } else { 0.0 },
                    host_dram_mib: m.host.dram_mib,
                    host_pmem_mib: m.host.pmem_mib,
                    ..level
                });
                rows.extend(new);
                ctx.tick_by(n);
            }
        }
    }
    Ok(())
}
