//! Pass's paging overhead on pairs of its own (issue 10's paging target): after a
//! function's end-to-end rounds, more (warm invocation, `pass` SnapStart) pairs on the same
//! warm VM, so that the target's verdict rests on a median of several pairs rather than
//! on the two rounds every configuration gets. Its summary section says where the
//! overhead goes: the memory setup before resume, and the invocation beyond the warm one
//! (KVM faults on first touch, host faults where the request and fresh pages land).
//!
//! Rows: experiment `paging`, configuration `pass`, each with its paired warm invocation.

use super::e2e::{run_paired, Paired};
use super::fixture::Fixtures;
use super::groups::Groups;
use super::report::{fmt_ms, stat, table, Row, Stat};
use super::setups::Setup;
use super::{BenchError, Ctx};
use crate::node::warm_vm::WarmVm;
use snapvisor_functions::catalog::{MEASURE_INPUT, RECORD_INPUT};
use std::fmt::Write as _;

/// Pairs per `--reps` (8 with the default 2 rounds, 4 in the quick run).
pub const PAIRS_PER_REP: usize = 4;

/// The experiment's name in the rows.
pub const EXPERIMENT: &str = "paging";

/// Runs the extra pairs of `function` with `pass` (the end-to-end warm VM `warm`).
pub fn run(
    ctx: &Ctx<'_>,
    fx: &Fixtures,
    warm: &mut WarmVm,
    function: &str,
    request: &[u8],
    pass: &Setup,
    rows: &mut Vec<Row>,
) -> Result<(), BenchError> {
    let p = Paired {
        experiment: EXPERIMENT,
        function,
        input: (MEASURE_INPUT, request),
        recorded_with: RECORD_INPUT,
        setups: std::slice::from_ref(pass),
        rounds: ctx.config.reps * PAIRS_PER_REP,
    };
    run_paired(ctx, fx, warm, &p, rows)
}

/// Pass's paging overhead for `function`: from this experiment's pairs where it ran, else
/// from the end-to-end rounds. Returns (median ms, pairs).
pub fn pass_overhead(rows: &[Row], function: &str) -> Option<(f64, usize)> {
    for experiment in [EXPERIMENT, "e2e"] {
        let g = Groups::of(rows, experiment);
        if let Some(ms) = g.paging(function, MEASURE_INPUT, "pass") {
            return Some((ms, g.get(function, MEASURE_INPUT, "pass").len()));
        }
    }
    None
}

/// The summary section: per function, pass's paging overhead and its parts, next to the
/// target (≤ 0.1 × lazy's with the page cache warm, from the end-to-end rounds).
pub fn section(md: &mut String, rows: &[Row]) {
    let g = Groups::of(rows, EXPERIMENT);
    if g.functions.is_empty() {
        return;
    }
    let e2e = Groups::of(rows, "e2e");
    md.push_str("## Paging overhead of pass, on pairs of its own\n\n");
    let _ = writeln!(
        md,
        "After each function's end-to-end rounds, {} more (warm invocation, pass SnapStart) pairs on the same warm VM. \
         Paging overhead = memory setup + invocation − the paired warm invocation (creating the VM and loading the vCPU \
         are the restore target's). The invocation's extra time is its KVM faults on first touch of each host mapping \
         and the host faults of the pages it writes for the first time (the request the VMM copies in among them; \
         every strategy pays those). Target: ≤ 0.1 × lazy's paging overhead with the page cache warm (`lazy reread`, \
         end-to-end rounds).\n",
        g.get(&g.functions[0], MEASURE_INPUT, "pass").len()
    );
    let body = g.functions.iter().map(|f| {
        let runs = g.get(f, MEASURE_INPUT, "pass");
        let diffs: Vec<f64> = runs.iter().map(|r| r.memory_setup_ms + r.invoke_ms - r.paired_warm_ms).collect();
        let extra: Vec<f64> = runs.iter().map(|r| r.invoke_ms - r.paired_warm_ms).collect();
        let med = |v: Vec<f64>| stat(&v).map_or(f64::NAN, |s| s.median);
        // The median as the target line takes it (`Groups::paging`), with the spread.
        let overhead = g.paging(f, MEASURE_INPUT, "pass").zip(stat(&diffs)).map(|(median, s)| Stat { median, ..s });
        let lazy = e2e.paging(f, MEASURE_INPUT, "lazy reread");
        let verdict = match (overhead, lazy) {
            (Some(o), Some(l)) if o.median <= 0.1 * l => "met",
            (Some(_), Some(_)) => "NOT met",
            _ => "–",
        };
        vec![
            f.clone(),
            runs.len().to_string(),
            fmt_ms(med(runs.iter().map(|r| r.memory_setup_ms).collect())),
            fmt_ms(med(extra)),
            overhead.map_or("–".into(), |s| format!("{} ({}–{})", fmt_ms(s.median), fmt_ms(s.min), fmt_ms(s.max))),
            format!("{:.0}", med(runs.iter().map(|r| r.kvm_faults as f64).collect())),
            format!("{:.0}", med(runs.iter().map(|r| r.host_faults as f64).collect())),
            lazy.map_or("–".into(), fmt_ms),
            lazy.map_or("–".into(), |l| fmt_ms(0.1 * l)),
            verdict.into(),
        ]
    });
    table(
        md,
        &[
            "function",
            "pairs",
            "memory setup ms",
            "invocation − warm ms",
            "paging overhead ms",
            "KVM faults",
            "host faults",
            "lazy reread's ms",
            "allowed ms",
            "≤ 0.1 × lazy",
        ],
        body,
    );
}
