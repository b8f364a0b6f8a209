//! Experiment 6, ablation: what each of PASS's techniques buys, `pass` with one taken away
//! at a time, next to `lazy`'s best state and Vanilla (lazy on the PMem medium: a filesystem
//! and no index), every run paired with a warm invocation:
//!
//! | configuration | what changes |
//! |---|---|
//! | `pass` | everything (2 MiB reads, 4 KiB copy-on-write, write set, pre-fault) |
//! | `pass no prefault` | nothing mapped before resume (but the folio chunk's page table) |
//! | `pass no write set` | every pool chunk mapped with 2 MiB pages, split by the first write |
//! | `pass fresh 4k` | fresh memory (the heap's growth) with 4 KiB pages too |
//! | `pass no folios` | huge pages, not 64 KiB folios, just above the recording's heap |
//! | `pass 2m pages` | the pool on hugetlbfs: 2 MiB pages only, a write copies 2 MiB |
//! | `pass 4k pages` | the pool on tmpfs without huge pages: one KVM fault per 4 KiB |
//! | `pass shells` | restored into a VM shell made ahead |
//!
//! The two extra pools live on media set up (and undone) for this experiment.

use super::e2e::{input, rounds, run_paired, Paired};
use super::fixture::{Emulation, Fixtures};
use super::report::Row;
use super::setups::{self, Setup};
use super::{BenchError, Ctx};
use crate::node::warm_vm::WarmVm;
use snapvisor_functions::catalog::{MEASURE_INPUT, RECORD_INPUT};
use snapvisor_vmm::pool::format::EXTENT;
use snapvisor_vmm::pool::medium::{EmulatedKind, Medium};
use snapvisor_vmm::pool::Pool;
use snapvisor_vmm::restore::Pass;
use snapvisor_vmm::snapshot::Snapshot;
use std::sync::Arc;

/// Configurations compared (the progress bar's count; fewer where a medium cannot be had).
pub const SETUPS: usize = 10;

/// A pool on another medium with the ablation's functions imported; `None` (with why)
/// where the medium cannot be had here.
fn extra_pool(
    ctx: &Ctx<'_>,
    fx: &Fixtures,
    kind: EmulatedKind,
    tag: &str,
) -> Result<Result<(Emulation, Arc<Pool>), String>, BenchError> {
    let functions = &ctx.config.ablation_functions;
    let data: u64 =
        functions.iter().map(|f| Snapshot::open(&fx.get(f).disk).map(|s| s.data_chunk_bytes()).unwrap_or(0)).sum();
    // hugetlbfs reserves a VM's copy-on-write room when it maps the pool: twice the data.
    let root = ctx.config.data.root().join(format!("bench-ablation-{tag}"));
    let (emulation, dir) = match Emulation::new(root, kind, 2 * data / EXTENT + 64) {
        Ok(e) => e,
        Err(e) => return Ok(Err(format!("{e}"))),
    };
    let path = dir.join("pool");
    Pool::create(&path, data + (functions.len() as u64 + 2) * 2 * EXTENT)?;
    let pool = Pool::open(&path)?;
    let wanted = match kind {
        EmulatedKind::Hugetlbfs => Medium::EmulatedHugetlbfs,
        _ => Medium::EmulatedTmpfs { huge: false },
    };
    if pool.medium() != wanted {
        return Ok(Err(format!("got {} instead (not root?)", pool.medium())));
    }
    for f in functions {
        pool.import(&fx.get(f).disk, f, &mut |_, _| {})?;
    }
    Ok(Ok((emulation, pool)))
}

/// Experiment 6 over the run's ablation functions; what could not be set up goes to `notes`.
pub fn run(ctx: &Ctx<'_>, fx: &Fixtures, rows: &mut Vec<Row>, notes: &mut Vec<String>) -> Result<(), BenchError> {
    let base = Pass::default();
    let pool = &fx.pool;
    let mut list: Vec<Setup> = vec![
        Setup::pass("pass", pool.clone(), base),
        Setup::pass("pass no prefault", pool.clone(), Pass { prefault: false, ..base }),
        Setup::pass("pass no write set", pool.clone(), Pass { write_set: false, ..base }),
        Setup::pass("pass fresh 4k", pool.clone(), Pass { fresh_small_pages: true, ..base }),
        Setup::pass("pass no folios", pool.clone(), Pass { fresh_folios: false, ..base }),
        Setup { shells: true, ..Setup::pass("pass shells", pool.clone(), base) },
    ];
    list.extend(setups::named(pool, &["lazy written", "vanilla"]));
    let mut media = Vec::new();
    for (kind, tag, name) in
        [(EmulatedKind::Hugetlbfs, "2m", "pass 2m pages"), (EmulatedKind::TmpfsSmallPages, "4k", "pass 4k pages")]
    {
        ctx.message(&format!("ablation: pool for `{name}`"))?;
        match extra_pool(ctx, fx, kind, tag)? {
            Ok((emulation, extra)) => {
                list.push(Setup::pass(name, extra, base));
                media.push(emulation);
            }
            Err(why) => notes.push(format!("ablation: `{name}` not run: {why}")),
        }
    }
    for function in &ctx.config.ablation_functions {
        let request = input(function, MEASURE_INPUT)?;
        let image =
            snapvisor_guest_images::get(function).ok_or_else(|| BenchError::UnknownFunction(function.clone()))?;
        let mut warm = WarmVm::start(ctx.hv, image.elf, fx.get(function).mem_size, request, ctx.config.timeout)
            .map_err(|source| BenchError::Run { function: function.clone(), what: "warm".into(), source })?;
        let warm_ms = warm.invoke(request).map(|s| crate::node::runner::ms(s.total())).unwrap_or(0.0);
        let rounds = rounds(ctx.config.reps, warm_ms);
        ctx.tick_by((SETUPS * ctx.config.reps).saturating_sub(list.len() * rounds));
        let p = Paired {
            experiment: "ablation",
            function,
            input: (MEASURE_INPUT, request),
            recorded_with: RECORD_INPUT,
            setups: &list,
            rounds,
        };
        run_paired(ctx, fx, &mut warm, &p, rows)?;
    }
    drop(list);
    drop(media);
    Ok(())
}
