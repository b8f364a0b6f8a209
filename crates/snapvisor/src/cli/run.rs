//! `functions`, `run`, `snapshot` and `record`.

use super::args::{RecordArgs, RunArgs, SnapshotArgs};
use super::render::{escape, guest_text, print_json, RESPONSE_SHOWN};
use super::{mib_bytes, timeout, AnyError};
use crate::node::functions::{catalog, Image};
use crate::node::snapshots::SnapshotSpec;
use crate::node::Node;
use serde::Serialize;
use snapvisor_vmm::metrics::mib;

pub(super) fn functions(json: bool) -> Result<(), AnyError> {
    let list = catalog();
    if json {
        return Ok(print_json(&list)?);
    }
    for f in &list {
        println!("{:<12} {}", f.name, f.description);
        println!("{:<12} request: {}", "", f.request);
        for i in &f.inputs {
            let memory = if i.mem_mib > 256 { format!(", needs {} MiB", i.mem_mib) } else { String::new() };
            println!("{:<14}{:>2} {:>9}{memory}  {}", "", i.name, size(i.bytes), i.description);
        }
    }
    println!(
        "\nA records working sets and B is measured (two-input runs); of 1..6, 2 records and the others are measured."
    );
    Ok(())
}

/// Bytes in B, KB or MB (decimal, like file managers).
fn size(bytes: usize) -> String {
    match bytes {
        0..1_000 => format!("{bytes} B"),
        1_000..1_000_000 => format!("{:.0} KB", bytes as f64 / 1e3),
        _ => format!("{:.2} MB", bytes as f64 / 1e6),
    }
}

pub(super) fn run(args: RunArgs, node: &Node) -> Result<(), AnyError> {
    let image = Image::load(&args.image.image_ref())?;
    let report = node.run(&image, &args.input.input(), mib_bytes(args.mem_mib)?, timeout(args.timeout_ms))?;
    if args.json {
        #[derive(Serialize)]
        struct Out<'a> {
            response: serde_json::Value,
            #[serde(flatten)]
            report: &'a crate::node::invoke::RunReport,
        }
        let text = String::from_utf8_lossy(&report.run.response);
        let response = serde_json::from_str(&text).unwrap_or_else(|_| serde_json::Value::String(text.into_owned()));
        print_json(&Out { response, report: &report })?;
    } else {
        let run = &report.run;
        for line in &run.console {
            println!("[guest] {}", escape(line.trim_end()));
        }
        println!("{}", guest_text(&run.response, RESPONSE_SHOWN));
        println!(
            "{} ({}): VM create {:.2} ms, load {:.2} ms, init {:.2} ms, invoke {:.2} ms ({} KVM page faults)",
            image.name,
            escape(&report.input),
            run.vm_create_ms,
            run.load_ms,
            run.init_ms,
            run.invoke_ms,
            run.kvm.pf_fixed
        );
    }
    Ok(())
}

pub(super) fn snapshot(args: SnapshotArgs, node: &Node) -> Result<(), AnyError> {
    let spec = SnapshotSpec {
        image: Image::load(&args.image.image_ref())?,
        out: args.out,
        mem_size: mib_bytes(args.mem_mib)?,
        force: args.force,
        timeout: timeout(args.timeout_ms),
    };
    let r = node.snapshot(&spec)?;
    println!(
        "{}: snapshot of {} after init ({:.1} ms): {} MiB memory, {:.1} MiB data, {} zero ranges, written in {:.1} ms",
        r.path.display(),
        r.function,
        r.init_ms,
        r.mem_size >> 20,
        mib(r.data_bytes),
        r.zero_ranges,
        r.write_ms
    );
    Ok(())
}

pub(super) fn record(args: RecordArgs, node: &Node) -> Result<(), AnyError> {
    let r = node.record(&args.snapshot, &args.input.input(), timeout(args.timeout_ms))?;
    println!(
        "{}: recorded the working sets of {} with input {}: reap {} pages ({:.1} MiB), faasnap {} pages ({:.1} MiB)",
        r.path.display(),
        escape(&r.function),
        escape(&r.input),
        r.reap_pages,
        mib(r.reap_pages * 4096),
        r.faasnap_pages,
        mib(r.faasnap_pages * 4096)
    );
    Ok(())
}
