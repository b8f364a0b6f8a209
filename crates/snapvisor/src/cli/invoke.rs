//! `invoke`: SnapStart N VMs from a snapshot and print what each did.

use super::args::InvokeArgs;
use super::render::{escape, guest_text, print_json, RESPONSE_SHOWN};
use super::{timeout, AnyError};
use crate::node::invoke::{InvokeSpec, SnapshotRef};
use crate::node::Node;
use snapvisor_vmm::restore::Strategy;

pub(super) fn invoke(args: InvokeArgs, node: &Node) -> Result<(), AnyError> {
    let strategy: Strategy = args.strategy.parse()?;
    let snapshot = if strategy.uses_pool() {
        // An id, or a snapshot directory whose name is the id it was imported under.
        let id = if args.snapshot.is_dir() || args.snapshot.components().count() > 1 {
            args.snapshot.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
        } else {
            args.snapshot.to_string_lossy().into_owned()
        };
        SnapshotRef::Pool { pool: args.pool.clone(), id }
    } else {
        SnapshotRef::Dir(args.snapshot.clone())
    };
    let spec = InvokeSpec {
        snapshot,
        strategy,
        input: args.input.input(),
        concurrency: args.concurrency as usize,
        cold: args.cold,
        uffd_chunk: (args.uffd_chunk_kib << 10) as usize,
        timeout: timeout(args.timeout_ms),
    };
    let report = node.invoke(&spec)?;
    if args.json {
        return Ok(print_json(&report)?);
    }
    if report.concurrency == 1 {
        println!("{}", guest_text(&report.response, RESPONSE_SHOWN));
    }
    println!("{} via {} ({}), {} VM(s):", escape(&report.function), report.strategy, report.medium, report.concurrency);
    println!("  vm  restore (create+state+memory) ms   invoke ms  total ms  host faults  KVM faults  uffd faults  private MiB  shared MiB");
    for r in &report.vms {
        println!(
            "  {:>2}  {:>8.2} ({:.2}+{:.2}+{:.2})  {:>9.2}  {:>8.2}  {:>11}  {:>10}  {:>11}  {:>11.1}  {:>10.1}",
            r.vm,
            r.restore_ms,
            r.vm_create_ms,
            r.state_load_ms,
            r.memory_setup_ms,
            r.invoke_ms,
            r.total_ms,
            r.host_faults,
            r.kvm_faults,
            r.uffd_faults,
            r.private_mib,
            r.shared_mib
        );
    }
    println!(
        "  p50 {:.2} ms, p99 {:.2} ms, total guest memory {:.1} MiB (shared pages counted once)",
        report.p50_ms, report.p99_ms, report.total_mib
    );
    Ok(())
}
