//! `functions`, `run`, `snapshot` and `record`.

use super::args::{RecordArgs, RunArgs, SnapshotArgs};
use super::render::{escape, response_text, Fields};
use super::{mib_bytes, remote_name, timeout, AnyError, Reply, Target};
use crate::node::snapshots::SnapshotSpec;
use hyper::Method;
use serde_json::json;
use snapvisor_vmm::metrics::mib;

pub(super) fn functions(json: bool, target: &Target) -> Result<(), AnyError> {
    let reply = match target {
        Target::Here(node) => Reply::of(&node.functions()?)?,
        Target::Daemon(client) => Reply::parse(client.call(Method::GET, "/functions", None)?)?,
    };
    if json {
        return reply.print_json();
    }
    for f in reply.value.as_array().map_or(&[][..], Vec::as_slice) {
        let name = escape(f.text("name"));
        println!("{name:<12} {}", escape(f.text("description")));
        if !f.text("default_request").is_empty() {
            println!("{:<12} default request: {}", "", escape(f.text("default_request")));
        }
    }
    Ok(())
}

pub(super) fn run(args: RunArgs, target: &Target) -> Result<(), AnyError> {
    let reply = match target {
        Target::Here(node) => {
            let image = args.image.load(node)?;
            let report = node.run(&image, &args.input.input(), mib_bytes(args.mem_mib)?, timeout(args.timeout_ms))?;
            Reply::of(&report)?
        }
        Target::Daemon(client) => {
            let body = json!({
                "function": args.image.remote()?,
                "input": args.input.text()?,
                "mem_mib": args.mem_mib,
                "timeout_ms": args.timeout_ms,
            });
            Reply::parse(client.call(Method::POST, "/runs", Some(&body))?)?
        }
    };
    if args.json {
        return reply.print_json();
    }
    let r = &reply.value;
    for line in r.items("console") {
        println!("[guest] {}", escape(line.as_str().unwrap_or_default().trim_end()));
    }
    println!("{}", response_text(&r["response"]));
    println!(
        "{}: VM create {:.2} ms, load {:.2} ms, init {:.2} ms, invoke {:.2} ms ({} KVM page faults)",
        escape(r.text("function")),
        r.num("vm_create_ms"),
        r.num("load_ms"),
        r.num("init_ms"),
        r.num("invoke_ms"),
        r["kvm"].int("pf_fixed")
    );
    Ok(())
}

pub(super) fn snapshot(args: SnapshotArgs, target: &Target) -> Result<(), AnyError> {
    let reply = match target {
        Target::Here(node) => {
            let spec = SnapshotSpec {
                image: args.image.load(node)?,
                out: args.out,
                mem_size: mib_bytes(args.mem_mib)?,
                force: args.force,
                timeout: timeout(args.timeout_ms),
            };
            Reply::of(&node.snapshot(&spec)?)?
        }
        Target::Daemon(client) => {
            let body = json!({
                "function": args.image.remote()?,
                "name": args.out.as_deref().map(remote_name).transpose()?,
                "mem_mib": args.mem_mib,
                "force": args.force,
                "timeout_ms": args.timeout_ms,
            });
            Reply::parse(client.call(Method::POST, "/snapshots", Some(&body))?)?
        }
    };
    let r = &reply.value;
    println!(
        "{}: snapshot of {} after init ({:.1} ms): {} MiB memory, {:.1} MiB data, {} zero ranges, written in {:.1} ms",
        escape(r.text("path")),
        escape(r.text("function")),
        r.num("init_ms"),
        r.int("mem_size") >> 20,
        mib(r.int("data_bytes")),
        r.int("zero_ranges"),
        r.num("write_ms")
    );
    Ok(())
}

pub(super) fn record(args: RecordArgs, target: &Target) -> Result<(), AnyError> {
    let reply = match target {
        Target::Here(node) => {
            Reply::of(&node.record(&args.snapshot, &args.input.input(), timeout(args.timeout_ms))?)?
        }
        Target::Daemon(client) => {
            let body = json!({ "input": args.input.text()?, "timeout_ms": args.timeout_ms });
            let path = format!("/snapshots/{}/record", remote_name(&args.snapshot)?);
            Reply::parse(client.call(Method::POST, &path, Some(&body))?)?
        }
    };
    let r = &reply.value;
    println!(
        "{}: recorded the working sets of {}: reap {} pages ({:.1} MiB), faasnap {} pages ({:.1} MiB)",
        escape(r.text("path")),
        escape(r.text("function")),
        r.int("reap_pages"),
        mib(r.int("reap_pages") * 4096),
        r.int("faasnap_pages"),
        mib(r.int("faasnap_pages") * 4096)
    );
    Ok(())
}
