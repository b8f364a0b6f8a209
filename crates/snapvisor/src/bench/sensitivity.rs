//! Experiment 2, input sensitivity (FaaSnap's six-input runs): every function's working
//! sets and write set recorded again with input 2, the pool's copy imported again with
//! them, then inputs 1, 3, 4, 5 and 6 measured with `reap`, `faasnap` and `pass`, each run
//! paired with a warm invocation of the same input. Runs after the experiments that use the
//! input-A recordings.

use super::e2e::{input, run_paired, Paired};
use super::fixture::{record, Fixtures};
use super::report::Row;
use super::setups;
use super::{BenchError, Ctx};
use crate::node::warm_vm::WarmVm;
use snapvisor_functions::catalog::SIX_RECORD_INPUT;

/// The inputs measured.
pub const MEASURED: [&str; 5] = ["1", "3", "4", "5", "6"];
/// The configurations compared.
pub const SETUPS: [&str; 3] = ["reap warm", "faasnap warm", "pass"];

/// Experiment 2 over the run's functions; inputs that need more memory than the guests
/// have are skipped (and named in `skipped`).
pub fn run(ctx: &Ctx<'_>, fx: &Fixtures, rows: &mut Vec<Row>, skipped: &mut Vec<String>) -> Result<(), BenchError> {
    let setups = setups::named(&fx.pool, &SETUPS);
    for function in &ctx.config.sensitivity_functions {
        let f = fx.get(function);
        ctx.message(&format!("sensitivity: {function}: record with input {SIX_RECORD_INPUT}, import again"))?;
        record(ctx.hv, function, &f.disk, SIX_RECORD_INPUT, ctx.config.timeout)?;
        fx.pool.remove(function)?;
        fx.pool.import(&f.disk, function, &mut |_, _| {})?;
        let image =
            snapvisor_guest_images::get(function).ok_or_else(|| BenchError::UnknownFunction(function.clone()))?;
        let first = input(function, SIX_RECORD_INPUT)?;
        let mut warm = WarmVm::start(ctx.hv, image.elf, f.mem_size, first, ctx.config.timeout)
            .map_err(|source| BenchError::Run { function: function.clone(), what: "warm".into(), source })?;
        let info = snapvisor_functions::info(function).ok_or_else(|| BenchError::UnknownFunction(function.clone()))?;
        for name in MEASURED {
            let needs = info.input(name).map_or(0, |i| i.mem_mib << 20);
            if needs > f.mem_size {
                skipped.push(format!("{function} input {name} (needs {} MiB)", needs >> 20));
                ctx.tick_by(setups.len() * ctx.config.sensitivity_reps);
                continue;
            }
            let p = Paired {
                experiment: "sensitivity",
                function,
                input: (name, input(function, name)?),
                recorded_with: SIX_RECORD_INPUT,
                setups: &setups,
                rounds: ctx.config.sensitivity_reps,
            };
            run_paired(ctx, fx, &mut warm, &p, rows)?;
        }
    }
    Ok(())
}
