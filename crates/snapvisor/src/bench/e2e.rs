//! Experiment 1, end to end: every function × every configuration ([`super::setups`]),
//! input B measured against working sets recorded with input A. Each SnapStart runs right
//! after a warm invocation of the same input on a warm VM, the pair a moment apart, so that
//! the slow periods of a shared host cancel out of their difference (the overhead; see [`super::groups::Groups::paging`]
//! for the part of it that is paging).
//! The loop is shared with the input-sensitivity experiment and with pass's extra pairs
//! ([`super::paging`]), which run on the same warm VM right after.

use super::fixture::Fixtures;
use super::measure::{snapstart_n, Vms};
use super::report::{Context, Row};
use super::setups::{self, Setup};
use super::{BenchError, Ctx};
use crate::node::runner::digest_of;
use crate::node::warm_vm::WarmVm;
use snapvisor_functions::catalog::{MEASURE_INPUT, RECORD_INPUT};

/// A function's native digest for `request` (what every answer must equal).
pub fn expected_digest(function: &str, request: &[u8]) -> Result<String, BenchError> {
    let response = snapvisor_functions::run_native(function, request)
        .ok_or_else(|| BenchError::UnknownFunction(function.into()))?;
    let digest = digest_of(&response).map_err(|source| BenchError::Run {
        function: function.into(),
        what: "host computation".into(),
        source,
    })?;
    digest.ok_or_else(|| BenchError::UnknownFunction(function.into()))
}

/// Rounds for a function whose warm invocation takes `warm_ms` (slow ones get fewer, so
/// that the whole benchmark keeps to its time).
pub fn rounds(reps: usize, warm_ms: f64) -> usize {
    if warm_ms > 400.0 {
        reps.div_ceil(2).max(1)
    } else {
        reps
    }
}

/// The configuration run `k`-th in round `rep` of `n`: each round starts one further on,
/// and every other round runs backwards, so that a configuration follows a different one
/// in each round. (A configuration that churns memory — `cached warm` reads a GiB into new
/// memory, the cold ones evict the page cache — slows the next runs on this host, the warm
/// invocation paired with them too; in a one-way rotation the same configuration always
/// came right after it.)
pub fn order(rep: usize, k: usize, n: usize) -> usize {
    if rep.is_multiple_of(2) {
        (rep + k) % n
    } else {
        (rep + n * k - k) % n
    }
}

/// The measured part of a paired experiment for one function and input.
pub struct Paired<'a> {
    /// Experiment name.
    pub experiment: &'static str,
    /// Function.
    pub function: &'a str,
    /// Input label measured and its request.
    pub input: (&'a str, &'a [u8]),
    /// Input the working sets were recorded with.
    pub recorded_with: &'a str,
    /// The configurations.
    pub setups: &'a [Setup],
    /// Rounds.
    pub rounds: usize,
}

/// Runs `p`: one untimed warm-up of each configuration, then `p.rounds` rounds of every
/// configuration (in [`order`]), each right after a warm invocation on `warm`.
pub fn run_paired(
    ctx: &Ctx<'_>,
    fx: &Fixtures,
    warm: &mut WarmVm,
    p: &Paired<'_>,
    rows: &mut Vec<Row>,
) -> Result<(), BenchError> {
    let (label, request) = p.input;
    let expected = expected_digest(p.function, request)?;
    let f = fx.get(p.function);
    let err = |what: &str| {
        let what = what.to_string();
        move |source| BenchError::Run { function: p.function.into(), what, source }
    };
    for setup in p.setups {
        snapstart_n(ctx.hv, p.function, f, setup, request, Vms::one_trimmed(ctx.config.timeout))?;
    }
    let n = p.setups.len();
    for rep in 0..p.rounds {
        ctx.message(&format!("{}: {} input {label}, round {}/{}", p.experiment, p.function, rep + 1, p.rounds))?;
        for k in 0..n {
            let setup = &p.setups[order(rep, k, n)];
            let warm_sample = warm.invoke(request).map_err(err("warm"))?;
            let warm_ctx = Context {
                experiment: p.experiment,
                function: p.function,
                config: "warm",
                paper: "warm",
                strategy: "warm",
                cache: "memory",
                input: label,
                recorded_with: "",
                rep,
            };
            rows.push(Row::new(&warm_ctx, 1, &warm_sample, &Default::default(), &Default::default(), &expected));
            let m = snapstart_n(ctx.hv, p.function, f, setup, request, Vms::one_trimmed(ctx.config.timeout))?;
            let run_ctx = Context {
                config: &setup.name,
                paper: setup.paper,
                strategy: setup.strategy.name(),
                cache: setup.cache.name(),
                recorded_with: p.recorded_with,
                ..warm_ctx
            };
            for s in &m.samples {
                let row = Row::new(&run_ctx, 1, s, &m.host, &m.residency, &expected);
                rows.push(Row { paired_warm_ms: ms(warm_sample.total()), ..row });
            }
            ctx.tick();
        }
    }
    Ok(())
}

fn ms(d: std::time::Duration) -> f64 {
    crate::node::runner::ms(d)
}

/// Experiment 1 over every function of the run.
pub fn run(ctx: &Ctx<'_>, fx: &Fixtures, rows: &mut Vec<Row>) -> Result<(), BenchError> {
    let setups = setups::all(&fx.pool);
    for function in &ctx.config.functions {
        let request = input(function, MEASURE_INPUT)?;
        let image =
            snapvisor_guest_images::get(function).ok_or_else(|| BenchError::UnknownFunction(function.clone()))?;
        ctx.message(&format!("e2e: {function}: warm VM"))?;
        let mut warm = WarmVm::start(ctx.hv, image.elf, fx.get(function).mem_size, request, ctx.config.timeout)
            .map_err(|source| BenchError::Run { function: function.clone(), what: "warm".into(), source })?;
        let warm_ms = ms(warm
            .invoke(request)
            .map_err(|source| BenchError::Run { function: function.clone(), what: "warm".into(), source })?
            .total());
        let rounds = rounds(ctx.config.reps, warm_ms);
        ctx.tick_by((ctx.config.reps - rounds) * setups.len());
        let p = Paired {
            experiment: "e2e",
            function,
            input: (MEASURE_INPUT, request),
            recorded_with: RECORD_INPUT,
            setups: &setups,
            rounds,
        };
        run_paired(ctx, fx, &mut warm, &p, rows)?;
        if let Some(pass) = setups.iter().find(|s| s.name == "pass") {
            super::paging::run(ctx, fx, &mut warm, function, request, pass, rows)?;
        }
    }
    Ok(())
}

/// `function`'s input `name`.
pub fn input(function: &str, name: &str) -> Result<&'static [u8], BenchError> {
    snapvisor_functions::input(function, name).ok_or_else(|| BenchError::UnknownFunction(function.into()))
}

#[cfg(test)]
mod tests {
    use super::order;

    #[test]
    fn every_round_runs_each_configuration_once_after_a_different_one() {
        let n = 12;
        let rounds: Vec<Vec<usize>> = (0..4).map(|rep| (0..n).map(|k| order(rep, k, n)).collect()).collect();
        for r in &rounds {
            let mut sorted = r.clone();
            sorted.sort();
            assert_eq!(sorted, (0..n).collect::<Vec<_>>(), "{r:?}");
        }
        // The configuration before the last one (pass, after cached warm in the forward
        // rounds) differs between the first two rounds.
        let before =
            |r: &[usize], c: usize| r.iter().position(|&x| x == c).and_then(|i| i.checked_sub(1)).map(|i| r[i]);
        assert_eq!(before(&rounds[0], n - 1), Some(n - 2));
        assert_ne!(before(&rounds[1], n - 1), Some(n - 2));
        assert_eq!(order(1, 0, n), 1);
        assert_eq!(order(1, 1, n), 0);
        assert_eq!(order(1, 2, n), n - 1);
        assert_eq!(order(0, 0, 1), 0);
        assert_eq!(order(1, 0, 1), 0);
    }
}
