//! `bench`: the benchmark's arguments into its configuration; the summary on stdout.

use super::args::BenchArgs;
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
