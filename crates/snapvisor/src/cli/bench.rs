//! `bench`: the benchmark's arguments into its configuration; the summary on stdout.

use super::args::{BenchArgs, LoadArgs};
use super::{mib_bytes, timeout, AnyError};
use crate::bench::{self, BenchConfig};
use crate::node::Node;
use snapvisor_vmm::restore::Strategy;

pub(super) fn bench(args: BenchArgs, node: &Node) -> Result<(), AnyError> {
    let functions = if args.functions.is_empty() {
        snapvisor_functions::CATALOG.iter().map(|i| i.name.to_string()).collect()
    } else {
        args.functions
    };
    let strategies = if args.strategies.is_empty() {
        Strategy::ALL.to_vec()
    } else {
        args.strategies.iter().map(|s| s.parse()).collect::<Result<Vec<Strategy>, _>>()?
    };
    let concurrency: Vec<usize> = args.concurrency.into_iter().flatten().collect();
    let config = BenchConfig {
        functions,
        strategies,
        reps: args.reps as usize,
        out: args.out.clone(),
        data: node.data().clone(),
        mem_size: mib_bytes(args.mem_mib)?,
        concurrency_functions: if concurrency.is_empty() { Vec::new() } else { args.concurrency_functions },
        concurrency,
        cold: !args.no_cold,
        pool_medium: args.pool_medium.into(),
        timeout: timeout(args.timeout_ms),
    };
    let summary = bench::run(node.hypervisor()?, &config)?;
    println!("{summary}");
    let out = args.out.canonicalize().unwrap_or(args.out);
    println!("results: {}", out.display());
    Ok(())
}

/// `bench-load`: the daemon under oha's load; the Markdown section on stdout.
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
