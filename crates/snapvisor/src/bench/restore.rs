//! Restore phases (issue 10's target: a restore ≤ 0.5 ms from request to the guest
//! running): every configuration restored from scratch and into a VM shell made ahead,
//! VM create / state load / memory setup apart; and what shells cost while they wait.

use super::e2e::{expected_digest, input};
use super::fixture::Fixtures;
use super::measure::{snapstart_n, Vms};
use super::memory::MemInfo;
use super::report::{Context, Row};
use super::setups::{self, Setup};
use super::{BenchError, Ctx};
use serde::Serialize;
use snapvisor_functions::catalog::{MEASURE_INPUT, RECORD_INPUT};
use snapvisor_vmm::restore::Shell;
use std::time::Instant;

/// Restores per configuration and `--reps`: a restore is cheap next to the end-to-end
/// runs, and its sub-millisecond phases need more samples than one noisy host gives in two.
const RUNS_PER_REP: usize = 3;

/// What idle VM shells cost.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ShellCost {
    /// Shells measured.
    pub shells: usize,
    /// Guest memory size they hold.
    pub mem_mib: u64,
    /// Host memory per idle shell (delta of what the host holds that no file explains:
    /// [`MemInfo::held`]), KiB.
    pub kib_each: f64,
    /// Open descriptors per shell.
    pub fds_each: f64,
    /// Time to make one, ms.
    pub create_ms: f64,
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

/// Makes `n` shells of `mem_size` and measures them.
pub fn shell_cost(ctx: &Ctx<'_>, n: usize, mem_size: u64) -> Result<ShellCost, BenchError> {
    let before = MemInfo::read().map_err(|e| BenchError::Write("/proc/meminfo".into(), e))?;
    let fds = open_fds();
    let start = Instant::now();
    let shells: Vec<Shell> = (0..n).map(|_| Shell::create(ctx.hv, mem_size)).collect::<Result<_, _>>()?;
    let create_ms = crate::node::runner::ms(start.elapsed()) / n as f64;
    let after = MemInfo::read().map_err(|e| BenchError::Write("/proc/meminfo".into(), e))?;
    let cost = ShellCost {
        shells: n,
        mem_mib: mem_size >> 20,
        kib_each: after.held().saturating_sub(before.held()) as f64 / 1024.0 / n as f64,
        fds_each: open_fds().saturating_sub(fds) as f64 / n as f64,
        create_ms,
    };
    drop(shells);
    Ok(cost)
}

/// Every end-to-end configuration of `function`, from scratch and into shells.
pub fn run(ctx: &Ctx<'_>, fx: &Fixtures, function: &str, rows: &mut Vec<Row>) -> Result<ShellCost, BenchError> {
    let f = fx.get(function);
    let request = input(function, MEASURE_INPUT)?;
    let expected = expected_digest(function, request)?;
    let plain = setups::all(&fx.pool);
    let shelled: Vec<Setup> = plain.iter().map(|s| Setup { shells: true, ..s.clone() }).collect();
    for setup in plain.iter().chain(&shelled) {
        let mode = if setup.shells { "shell" } else { "fresh" };
        ctx.message(&format!("restore phases: {function}: {} ({mode})", setup.name))?;
        snapstart_n(ctx.hv, function, f, setup, request, Vms::new(1, ctx.config.timeout))?; // warm-up
        for rep in 0..ctx.config.reps * RUNS_PER_REP {
            let m = snapstart_n(ctx.hv, function, f, setup, request, Vms::new(1, ctx.config.timeout))?;
            let run_ctx = Context {
                experiment: "restore",
                function,
                config: &setup.name,
                paper: if setup.shells { "shell" } else { "fresh" },
                strategy: setup.strategy.name(),
                cache: setup.cache.name(),
                input: MEASURE_INPUT,
                recorded_with: RECORD_INPUT,
                rep,
            };
            rows.extend(m.samples.iter().map(|s| Row::new(&run_ctx, 1, s, &m.host, &m.residency, &expected)));
        }
        ctx.tick();
    }
    shell_cost(ctx, 32, f.mem_size)
}
