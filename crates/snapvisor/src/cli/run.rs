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
        println!("{:<12} request: {}", "", escape(f.text("request")));
        for i in f.items("inputs") {
            let mem = i.int("mem_mib");
            let needs = if mem > 256 { format!(", needs {mem} MiB") } else { String::new() };
            let size = size(i.int("bytes"));
            println!("{:<14}{:>2} {size:>9}{needs}  {}", "", escape(i.text("name")), escape(i.text("description")));
        }
    }
    println!(
        "\nA records working sets and B is measured (two-input runs); of 1..6, 2 records and the others are measured."
    );
    Ok(())
}

/// Bytes in B, KB or MB (decimal, like file managers).
fn size(bytes: u64) -> String {
    match bytes {
        0..1_000 => format!("{bytes} B"),
        1_000..1_000_000 => format!("{:.0} KB", bytes as f64 / 1e3),
        _ => format!("{:.2} MB", bytes as f64 / 1e6),
    }
}

pub(super) fn run(args: RunArgs, target: &Target) -> Result<(), AnyError> {
    let reply = match target {
        Target::Here(node) => {
            let image = args.image.load(node)?;
            let report = node.run(&image, &args.input.input(), mib_bytes(args.mem_mib)?, timeout(args.timeout_ms))?;
            Reply::of(&report)?
        }
        Target::Daemon(client) => {
            let mut body = json!({
                "function": args.image.remote()?,
                "mem_mib": args.mem_mib,
                "timeout_ms": args.timeout_ms,
            });
            args.input.add_to(&mut body)?;
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
        "{} ({}): VM create {:.2} ms, load {:.2} ms, init {:.2} ms, invoke {:.2} ms ({} KVM page faults)",
        escape(r.text("function")),
        escape(r.text("input")),
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
            let mut body = json!({ "timeout_ms": args.timeout_ms });
            args.input.add_to(&mut body)?;
            let path = format!("/snapshots/{}/record", remote_name(&args.snapshot)?);
            Reply::parse(client.call(Method::POST, &path, Some(&body))?)?
        }
    };
    let r = &reply.value;
    println!(
        "{}: recorded the working sets of {} with input {}: reap {} pages ({:.1} MiB), faasnap {} pages ({:.1} MiB), written {} pages ({:.1} MiB)",
        escape(r.text("path")),
        escape(r.text("function")),
        escape(r.text("input")),
        r.int("reap_pages"),
        mib(r.int("reap_pages") * 4096),
        r.int("faasnap_pages"),
        mib(r.int("faasnap_pages") * 4096),
        r.int("write_pages"),
        mib(r.int("write_pages") * 4096)
    );
    Ok(())
}
