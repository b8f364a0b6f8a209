//! `bench`: the benchmark's arguments into its configuration (the full run's and
//! `--quick`'s defaults live here); the summary on stdout.

use super::args::{BenchArgs, LoadArgs};
use super::{mib_bytes, timeout, AnyError};
use crate::bench::{self, BenchConfig, Experiment, LoadPlan};
use crate::node::Node;

/// Functions FaaSnap's six-input runs leave out (one request shape each there): the
/// sensitivity experiment skips them unless named.
const NOT_IN_SIX_INPUT_RUNS: [&str; 3] = ["hello", "read-list", "mmap"];

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn or(given: Vec<String>, default: Vec<String>) -> Vec<String> {
    if given.is_empty() {
        default
    } else {
        given
    }
}

pub(super) fn bench(args: BenchArgs, node: &Node) -> Result<(), AnyError> {
    let all: Vec<String> = snapvisor_functions::CATALOG.iter().map(|i| i.name.to_string()).collect();
    let quick = args.quick;
    // The full run takes 20–25 minutes on 2 cores (more when the host is busy); --quick about 2–3
    // (a test runs it).
    let (functions, conc_functions, ablation_functions, levels, reps, sens_reps, mem_mib) = if quick {
        (names(&["json", "read-list"]), names(&["read-list"]), names(&["json"]), vec![1, 2], 1, 1, 256)
    } else {
        (
            all,
            names(&["recognition", "video", "read-list"]),
            names(&["recognition", "json", "read-list"]),
            vec![1, 2, 4, 8, 16, 32],
            2,
            1,
            crate::node::DEFAULT_MEM_MIB,
        )
    };
    let functions = or(args.functions, functions);
    let given_levels: Vec<usize> = args.concurrency.into_iter().flatten().collect();
    let load = if quick {
        LoadPlan { function: "json".into(), clients: vec![1, 2], requests: 10, leak_invocations: 100 }
    } else {
        LoadPlan { function: "json".into(), clients: vec![1, 2, 4], requests: 40, leak_invocations: 500 }
    };
    let config = BenchConfig {
        sensitivity_functions: or(
            args.sensitivity_functions,
            functions.iter().filter(|f| !NOT_IN_SIX_INPUT_RUNS.contains(&f.as_str())).cloned().collect(),
        ),
        functions,
        concurrency_functions: or(args.concurrency_functions, conc_functions),
        ablation_functions: or(args.ablation_functions, ablation_functions),
        restore_function: "json".into(),
        concurrency: if given_levels.is_empty() { levels } else { given_levels },
        reps: args.reps.map_or(reps, |r| r as usize),
        sensitivity_reps: args.sensitivity_reps.map_or(sens_reps, |r| r as usize),
        load,
        experiments: if args.experiments.is_empty() { Experiment::ALL.to_vec() } else { args.experiments },
        out: args.out.clone(),
        data: node.data().clone(),
        mem_size: mib_bytes(args.mem_mib.unwrap_or(mem_mib))?,
        pool_medium: args.pool_medium.into(),
        timeout: timeout(args.timeout_ms),
        quick,
    };
    let summary = bench::run(node.hypervisor()?, &config)?;
    println!("{summary}");
    let out = args.out.canonicalize().unwrap_or(args.out);
    println!("results: {}", out.display());
    Ok(())
}

/// `bench-load`: the daemon under autocannon's load; the Markdown section on stdout.
pub(super) fn load(args: LoadArgs, node: &Node) -> Result<(), AnyError> {
    let strategies = if args.strategies.is_empty() {
        crate::bench::load::DEFAULT_STRATEGIES.iter().map(|s| s.to_string()).collect()
    } else {
        args.strategies
    };
    let config = crate::bench::load::LoadConfig {
        data: node.data().clone(),
        out: args.out,
        function: args.function,
        strategies,
        concurrency: args.concurrency,
        requests: args.requests,
        max_time: std::time::Duration::from_secs(args.max_secs),
        leak_invocations: args.leak_invocations,
    };
    let results = crate::bench::load::run(&config)?;
    println!("{}", results.markdown);
    Ok(())
}
