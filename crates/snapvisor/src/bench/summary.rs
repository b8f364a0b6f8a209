//! `summary.md`: the header, then one section per experiment; the derived sections
//! (where the time goes, the ephemeral workload, cost-effectiveness, the headline and the
//! targets) are in [`super::derived`].

use super::concurrency::Level;
use super::groups::{ratio, Groups};
use super::report::{fmt_ms, median, table, Header, Row};
use super::restore::ShellCost;
use super::Results;
use super::{derived, verdicts};
use std::fmt::Write as _;

/// The whole summary.
pub fn write(header: &Header, results: &Results) -> String {
    let mut md = String::from("# snapvisor bench\n\n");
    for (k, v) in &header.lines {
        let _ = writeln!(md, "- **{k}**: {v}");
    }
    if !results.notes.is_empty() {
        md.push_str("\nNotes of this run:\n\n");
        for n in &results.notes {
            let _ = writeln!(md, "- {n}");
        }
    }
    md.push('\n');
    verdicts::headline(&mut md, results);
    verdicts::targets(&mut md, results);
    e2e(&mut md, &results.rows);
    sensitivity(&mut md, &results.rows);
    concurrency(&mut md, &results.levels);
    derived::ephemeral(&mut md, results);
    derived::breakdown(&mut md, results);
    ablation(&mut md, &results.rows);
    derived::cost(&mut md, results);
    memory_per_vm(&mut md, results);
    super::paging::section(&mut md, &results.rows);
    restore_phases(&mut md, &results.rows, results.shells.as_ref());
    if let Some(load) = &results.load {
        md.push_str(&load.markdown);
        md.push('\n');
    }
    md
}

/// MiB with the precision they deserve.
fn mib(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

fn cell(s: Option<super::report::Stat>) -> String {
    s.map_or_else(|| "–".into(), |s| format!("{} ({}–{})", fmt_ms(s.median), fmt_ms(s.min), fmt_ms(s.max)))
}

/// Experiment 1: SnapStart times and their ratio to `pass`.
fn e2e(md: &mut String, rows: &[Row]) {
    let g = Groups::of(rows, "e2e");
    if g.functions.is_empty() {
        return;
    }
    md.push_str("## 1. End to end: SnapStart (restore + invocation), input B, working sets recorded with A\n\n");
    md.push_str("Median (min–max) ms over the rounds; the second line of the header is the papers' name.\n\n");
    let header: Vec<String> = std::iter::once("function".to_string()).chain(g.configs.iter().cloned()).collect();
    let papers: Vec<String> = std::iter::once("(papers)".to_string())
        .chain(g.configs.iter().map(|c| {
            g.functions.iter().find_map(|f| g.any_input(f, c).first().map(|r| r.paper.clone())).unwrap_or_default()
        }))
        .collect();
    let h: Vec<&str> = header.iter().map(String::as_str).collect();
    let body = std::iter::once(papers).chain(
        g.functions
            .iter()
            .map(|f| std::iter::once(f.clone()).chain(g.configs.iter().map(|c| cell(g.total(f, "B", c)))).collect()),
    );
    table(md, &h, body);
    md.push_str("Normalised to `pass` (median SnapStart / pass's), and overhead (SnapStart − the paired warm invocation, median ms):\n\n");
    let norm = g.functions.iter().map(|f| {
        let pass = g.total(f, "B", "pass").map_or(f64::NAN, |s| s.median);
        std::iter::once(f.clone())
            .chain(g.configs.iter().map(|c| {
                let t = g.total(f, "B", c).map_or(f64::NAN, |s| s.median);
                let o = g.overhead(f, "B", c).map_or_else(|| "–".into(), fmt_ms);
                format!("{:.2}× / {o}", ratio(t, pass))
            }))
            .collect()
    });
    table(md, &h, norm);
    cache_states(md, &g);
}

/// The page cache each configuration started from, as checked with mincore before every run.
fn cache_states(md: &mut String, g: &Groups<'_>) {
    md.push_str("Page cache of the memory file when each restore started (mincore; 2 MiB folios from kpageflags), over all functions' runs, and the KVM faults it led to (median per function):\n\n");
    let body = g.configs.iter().filter(|c| *c != "warm").map(|c| {
        let rows: Vec<&Row> = g.functions.iter().flat_map(|f| g.any_input(f, c)).collect();
        let files: Vec<&Row> = rows.iter().copied().filter(|r| r.file_pages > 0).collect();
        let pct = |r: &Row| 100.0 * r.resident_pages as f64 / r.file_pages as f64;
        let resident = super::report::stat(&files.iter().map(|r| pct(r)).collect::<Vec<_>>());
        let huge = super::report::stat(&files.iter().map(|r| r.resident_2m_pct).collect::<Vec<_>>());
        let faults: Vec<String> = g
            .functions
            .iter()
            .map(|f| format!("{:.0}", g.median_of(f, "B", c, |r| r.kvm_faults as f64).unwrap_or(f64::NAN)))
            .collect();
        let cache = rows.first().map_or(String::new(), |r| r.cache.clone());
        let range =
            |s: Option<super::report::Stat>| s.map_or_else(|| "–".into(), |s| format!("{:.0}–{:.0} %", s.min, s.max));
        vec![c.clone(), cache, range(resident), range(huge), faults.join(" / ")]
    });
    let faults = format!("KVM faults ({})", g.functions.join(" / "));
    table(md, &["configuration", "page cache", "resident", "of which in 2 MiB folios", &faults], body);
}

/// Experiment 2: recorded with input 2, measured with the others.
fn sensitivity(md: &mut String, rows: &[Row]) {
    let g = Groups::of(rows, "sensitivity");
    if g.functions.is_empty() {
        return;
    }
    md.push_str("## 2. Input sensitivity: working sets recorded with input 2, measured with 1, 3–6\n\n");
    md.push_str("Per input: overhead (SnapStart − paired warm) in ms for each configuration; the warm invocation's time for scale.\n\n");
    let configs: Vec<&String> = g.configs.iter().filter(|c| *c != "warm").collect();
    let header: Vec<String> = ["function", "input", "warm ms"]
        .iter()
        .map(|s| s.to_string())
        .chain(configs.iter().map(|c| format!("{c} overhead")))
        .collect();
    let h: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut body = Vec::new();
    for f in &g.functions {
        for i in &g.inputs {
            let Some(warm) = g.total(f, i, "warm") else { continue };
            let mut row = vec![f.clone(), i.clone(), fmt_ms(warm.median)];
            row.extend(configs.iter().map(|c| g.overhead(f, i, c).map_or_else(|| "–".into(), fmt_ms)));
            body.push(row);
        }
    }
    table(md, &h, body);
}

/// Experiment 3: N VMs of one snapshot at once.
fn concurrency(md: &mut String, levels: &[Level]) {
    if levels.is_empty() {
        return;
    }
    md.push_str("## 3. Concurrency: N VMs of one snapshot restored at once, input B\n\n");
    md.push_str("Host memory: DRAM the run took with every VM alive (anonymous, page cache of the files read, huge pages, page tables); PMem: the snapshot's pages on the emulated medium.\n\n");
    let body = levels.iter().map(|l| {
        if !l.fits {
            return vec![
                l.function.clone(),
                l.config.clone(),
                l.concurrency.to_string(),
                l.note.clone(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ];
        }
        vec![
            l.function.clone(),
            l.config.clone(),
            l.concurrency.to_string(),
            fmt_ms(l.p50_ms),
            fmt_ms(l.p99_ms),
            format!("{:.1}", l.throughput_per_s),
            mib(l.host_dram_mib),
            mib(l.host_pmem_mib),
        ]
    });
    table(md, &["function", "configuration", "N", "p50 ms", "p99 ms", "SnapStarts/s", "DRAM MiB", "PMem MiB"], body);
    derived::max_concurrency(md, levels);
    md.push_str("![concurrency](concurrency.svg)\n\n");
}

/// Experiment 6: PASS's techniques, one at a time.
fn ablation(md: &mut String, rows: &[Row]) {
    let g = Groups::of(rows, "ablation");
    if g.functions.is_empty() {
        return;
    }
    md.push_str("## 6. Ablation: what each PASS technique buys (input B)\n\n");
    md.push_str("Median SnapStart ms / overhead (SnapStart − paired warm) ms / KVM faults / private MiB per VM / restore ms.\n\n");
    let configs: Vec<&String> = g.configs.iter().filter(|c| *c != "warm").collect();
    let header: Vec<String> =
        std::iter::once("function".to_string()).chain(configs.iter().map(|c| c.to_string())).collect();
    let h: Vec<&str> = header.iter().map(String::as_str).collect();
    let body = g.functions.iter().map(|f| {
        std::iter::once(f.clone())
            .chain(configs.iter().map(|c| {
                let m = |k: fn(&Row) -> f64| g.median_of(f, "B", c, k).unwrap_or(f64::NAN);
                format!(
                    "{} / {} / {:.0} / {:.1} / {}",
                    fmt_ms(m(|r| r.total_ms)),
                    g.overhead(f, "B", c).map_or_else(|| "–".into(), fmt_ms),
                    m(|r| r.kvm_faults as f64),
                    m(|r| r.private_mib),
                    fmt_ms(m(|r| r.restore_ms))
                )
            }))
            .collect()
    });
    table(md, &h, body);
}

/// Issue 10: a pass VM's private memory next to what it writes.
fn memory_per_vm(md: &mut String, results: &Results) {
    let g = Groups::of(&results.rows, "e2e");
    if g.functions.is_empty() || !g.configs.iter().any(|c| c == "pass") {
        return;
    }
    md.push_str("## Memory of a pass VM: what it keeps private, next to what it writes\n\n");
    md.push_str("Written: the pages input B's invocation copies under `lazy written` (a private mapping copies exactly the 4 KiB pages written). Pass's private pages (pagemap) at the response, and kept: after the VM gave back the untouched parts of its fresh huge pages (`RestoredVm::trim`, run after the response, as before keeping a VM for the next request; its time is not in the SnapStart). Host anon: the host's anonymous memory for the run, read at the response (before the trim). Target: private ≤ written + 1 MiB.\n\n");
    let body = g.functions.iter().map(|f| {
        let written = g.median_of(f, "B", "lazy written", |r| r.private_mib).unwrap_or(f64::NAN);
        let private = g.median_of(f, "B", "pass", |r| r.private_mib).unwrap_or(f64::NAN);
        let kept = g.median_of(f, "B", "pass", |r| r.kept_private_mib).unwrap_or(f64::NAN);
        let anon = g.median_of(f, "B", "pass", |r| r.host_anon_mib).unwrap_or(f64::NAN);
        let trim_ms = g.median_of(f, "B", "pass", |r| r.trim_ms).unwrap_or(f64::NAN);
        let met = |yes: bool| if yes { "met" } else { "NOT met" }.to_string();
        vec![
            f.clone(),
            format!("{written:.2}"),
            format!("{private:.2}"),
            format!("{kept:.2}"),
            format!("{anon:.2}"),
            format!("{trim_ms:.2}"),
            met(private <= written + 1.0 && anon <= written + 1.0),
            met(kept <= written + 1.0),
        ]
    });
    table(
        md,
        &[
            "function",
            "written MiB",
            "pass private MiB at the response",
            "kept MiB after the trim",
            "host anon MiB at the response",
            "trim ms",
            "≤ written + 1 MiB at the response",
            "≤ written + 1 MiB kept",
        ],
        body,
    );
}

/// Issue 10: restore phases, from scratch and into VM shells.
fn restore_phases(md: &mut String, rows: &[Row], shells: Option<&ShellCost>) {
    let restore: Vec<&Row> = rows.iter().filter(|r| r.experiment == "restore").collect();
    if restore.is_empty() {
        return;
    }
    md.push_str("## Restore phases: from scratch, and into a VM shell made ahead\n\n");
    md.push_str("Median ms: VM create + state load + memory setup = restore (until the guest can run). Target (pass): ≤ 0.5 ms into a shell; the others are shown for comparison (reap and cached load memory before resume by design).\n\n");
    let mut configs: Vec<(String, String)> = Vec::new();
    for r in &restore {
        let key = (r.config.clone(), r.paper.clone());
        if !configs.contains(&key) {
            configs.push(key);
        }
    }
    let body = configs.iter().map(|(c, mode)| {
        let g: Vec<&Row> = restore.iter().copied().filter(|r| &r.config == c && &r.paper == mode).collect();
        let m = |f: fn(&Row) -> f64| median(g.iter().copied(), f);
        let total = m(|r| r.restore_ms);
        let verdict = match (mode.as_str(), c.as_str()) {
            ("shell", "pass") if total <= 0.5 => "met",
            ("shell", "pass") => "NOT met",
            _ => "",
        };
        vec![
            c.clone(),
            mode.clone(),
            fmt_ms(m(|r| r.vm_create_ms)),
            fmt_ms(m(|r| r.state_load_ms)),
            fmt_ms(m(|r| r.memory_setup_ms)),
            fmt_ms(total),
            verdict.into(),
        ]
    });
    let function = restore.first().map_or("", |r| r.function.as_str());
    let _ = writeln!(md, "Function `{function}`, input B:\n");
    table(md, &["configuration", "VM", "VM create", "state load", "memory setup", "restore", "≤ 0.5 ms"], body);
    if let Some(s) = shells {
        let _ = writeln!(
            md,
            "An idle shell ({} of them, {} MiB guests): {:.0} KiB of host memory (anonymous, unreclaimable slab, vmalloc, page tables, kernel stacks) and {:.0} descriptors each, {:.2} ms to make.\n",
            s.shells, s.mem_mib, s.kib_each, s.fds_each, s.create_ms
        );
    }
}
