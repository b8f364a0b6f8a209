//! `invoke`: SnapStart N VMs from a snapshot and print what each did.

use super::args::InvokeArgs;
use super::render::{escape, response_text, Fields};
use super::{no_remote_pool, remote_name, timeout, AnyError, Reply, Target};
use crate::node::invoke::{InvokeSpec, SnapshotRef};
use hyper::Method;
use snapvisor_vmm::restore::Strategy;

pub(super) fn invoke(args: InvokeArgs, target: &Target) -> Result<(), AnyError> {
    let strategy: Strategy = args.strategy.parse()?;
    let reply = match target {
        Target::Here(node) => {
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
            Reply::of(&node.invoke(&spec)?)?
        }
        Target::Daemon(client) => {
            no_remote_pool(&args.pool)?;
            let mut body = serde_json::json!({
                "snapshot": remote_name(&args.snapshot)?,
                "strategy": strategy.name(),
                "concurrency": args.concurrency,
                "cold": args.cold,
                "uffd_chunk_kib": args.uffd_chunk_kib,
                "timeout_ms": args.timeout_ms,
            });
            args.input.add_to(&mut body)?;
            Reply::parse(client.call(Method::POST, "/invocations", Some(&body))?)?
        }
    };
    if args.json {
        return reply.print_json();
    }
    let report = &reply.value;
    if report.int("concurrency") == 1 {
        println!("{}", response_text(&report["response"]));
    }
    let recorded = match report.text("recorded_with") {
        "" => String::new(),
        with => format!(" (working sets recorded with {})", escape(with)),
    };
    println!(
        "{} input {}{recorded} via {} ({}), {} VM(s):",
        escape(report.text("function")),
        escape(report.text("input")),
        escape(report.text("strategy")),
        escape(report.text("medium")),
        report.int("concurrency")
    );
    println!("  vm  restore (create+state+memory) ms   invoke ms  total ms  host faults  KVM faults  uffd faults  private MiB  shared MiB");
    for r in report.items("vms") {
        println!(
            "  {:>2}  {:>8.2} ({:.2}+{:.2}+{:.2})  {:>9.2}  {:>8.2}  {:>11}  {:>10}  {:>11}  {:>11.1}  {:>10.1}",
            r.int("vm"),
            r.num("restore_ms"),
            r.num("vm_create_ms"),
            r.num("state_load_ms"),
            r.num("memory_setup_ms"),
            r.num("invoke_ms"),
            r.num("total_ms"),
            r.int("host_faults"),
            r.int("kvm_faults"),
            r.int("uffd_faults"),
            r.num("private_mib"),
            r.num("shared_mib")
        );
    }
    println!(
        "  p50 {:.2} ms, p99 {:.2} ms, total guest memory {:.1} MiB (shared pages counted once)",
        report.num("p50_ms"),
        report.num("p99_ms"),
        report.num("total_mib")
    );
    Ok(())
}
