//! The summary's derived sections: where the time goes (faults counted and costed on this
//! host), the ephemeral workload, the largest concurrency within bounds and
//! cost-effectiveness. The headline and the targets are in [`super::verdicts`].

use super::concurrency::Level;
use super::groups::{ratio, Groups};
use super::report::{fmt_ms, table, Row};
use super::Results;
use crate::node::report::percentile;
use std::fmt::Write as _;

/// Per-fault costs on this host, calibrated from one function's runs (ms per fault).
#[derive(Clone, Copy, Debug, Default)]
pub struct FaultCosts {
    /// The function they were measured on.
    pub function: &'static str,
    /// A KVM fault on a resident page (`lazy reread`).
    pub kvm: f64,
    /// A userfaultfd fault (`uffd warm`: a round trip that loads 512 KiB), beyond its KVM fault.
    pub uffd: f64,
    /// A userfaultfd fault under `reap` (`reap warm`: a round trip that loads one 4 KiB page
    /// outside the prefetched working set), beyond its KVM fault.
    pub reap_uffd: f64,
    /// A major fault (`lazy cold`), beyond its KVM fault.
    pub major: f64,
}

/// Calibrates [`FaultCosts`] from `read-list`'s end-to-end runs (the invocation time a
/// configuration adds over the paired warm invocation, per fault), else the first function's.
pub fn fault_costs(g: &Groups<'_>) -> Option<FaultCosts> {
    let function = ["read-list", "recognition"].into_iter().find(|f| g.functions.iter().any(|x| x == f))?;
    let per = |config: &str, count: fn(&Row) -> u64, base: &dyn Fn(&Row) -> f64| -> f64 {
        let v: Vec<f64> = g
            .get(function, "B", config)
            .iter()
            .filter(|r| count(r) > 0 && r.paired_warm_ms > 0.0)
            .map(|r| (r.invoke_ms - r.paired_warm_ms - base(r)) / count(r) as f64)
            .collect();
        percentile(&v, 50.0).max(0.0)
    };
    let kvm = per("lazy reread", |r| r.kvm_faults, &|_| 0.0);
    let uffd = per("uffd warm", |r| r.uffd_faults, &|r| r.kvm_faults as f64 * kvm);
    let reap_uffd = per("reap warm", |r| r.uffd_faults, &|r| r.kvm_faults as f64 * kvm);
    let major = per("lazy cold", |r| r.host_major_faults, &|r| r.kvm_faults as f64 * kvm);
    Some(FaultCosts { function, kvm, uffd, reap_uffd, major })
}

/// Experiment 5: where a SnapStart's time goes.
pub fn breakdown(md: &mut String, results: &Results) {
    let g = Groups::of(&results.rows, "e2e");
    let Some(c) = fault_costs(&g) else { return };
    md.push_str("## 5. Where the time goes\n\n");
    let _ = writeln!(
        md,
        "Fault costs measured on this host with `{}` (extra invocation time over the paired warm run, per fault): a KVM fault {:.1} µs, a userfaultfd fault (a round trip loading 512 KiB under uffd, {:.1} µs; one 4 KiB page under reap, {:.1} µs) more, a major fault (a read from disk, with its readahead) {:.1} µs more. Paging = faults × those costs (under uffd and reap the kernel counts each userfaultfd wait as a major fault: those are counted once, as uffd faults); compute = the paired warm invocation; the rest is what remains (copy-on-write, zero-filling, prefetching inside the invocation, noise). Medians, ms.\n",
        c.function,
        c.kvm * 1e3,
        c.uffd * 1e3,
        c.reap_uffd * 1e3,
        c.major * 1e3
    );
    let functions: Vec<&String> =
        g.functions.iter().filter(|f| ["recognition", "json", "read-list", "video"].contains(&f.as_str())).collect();
    let mut body = Vec::new();
    for f in functions {
        for config in g.configs.iter().filter(|c| *c != "warm") {
            let m = |k: fn(&Row) -> f64| g.median_of(f, "B", config, k).unwrap_or(f64::NAN);
            let total = m(|r| r.total_ms);
            let strategy = g.get(f, "B", config).first().map(|r| r.strategy.clone()).unwrap_or_default();
            let uses_uffd = strategy == "uffd" || strategy == "reap";
            let majors = if uses_uffd { 0.0 } else { m(|r| r.host_major_faults as f64) };
            let uffd_cost = if strategy == "reap" { c.reap_uffd } else { c.uffd };
            let paging =
                m(|r| r.kvm_faults as f64) * c.kvm + m(|r| r.uffd_faults as f64) * uffd_cost + majors * c.major;
            let compute = m(|r| r.paired_warm_ms);
            let setup = m(|r| r.restore_ms);
            let rest = total - setup - paging - compute;
            body.push(vec![
                f.clone(),
                config.clone(),
                fmt_ms(m(|r| r.vm_create_ms)),
                fmt_ms(m(|r| r.state_load_ms)),
                fmt_ms(m(|r| r.memory_setup_ms)),
                format!(
                    "{} ({:.0} KVM, {:.0} uffd, {majors:.0} major)",
                    fmt_ms(paging),
                    m(|r| r.kvm_faults as f64),
                    m(|r| r.uffd_faults as f64)
                ),
                fmt_ms(compute),
                fmt_ms(rest),
                fmt_ms(total),
                format!("{:.0} %", 100.0 * paging.min(total) / total),
            ]);
        }
    }
    table(
        md,
        &[
            "function",
            "configuration",
            "VM create",
            "state load",
            "memory setup",
            "paging",
            "compute",
            "rest",
            "total",
            "paging share",
        ],
        body,
    );
    md.push_str(
        "The paper: a snapshot on a PMem filesystem (Vanilla) spent 301 of 517 ms (58 %) in KVM page faults.\n\n",
    );
}

/// Experiment 4: the ephemeral workload (read-list: each page read once).
pub fn ephemeral(md: &mut String, results: &Results) {
    let g = Groups::of(&results.rows, "e2e");
    let f = "read-list";
    if !g.functions.iter().any(|x| x == f) {
        return;
    }
    md.push_str("## 4. Ephemeral workload: SnapStart time and memory footprint (read-list, input B)\n\n");
    md.push_str("Footprint: the host DRAM the run held (page cache of the files read, anonymous memory, huge pages, page tables); the emulated PMem beside it.\n\n");
    let paper =
        [("uffd cold", "240 ms / 83 MB"), ("faasnap warm", "218 ms / 243 MB"), ("lazy reread", "204 ms / 1,024 MB")];
    let body = g.configs.iter().filter(|c| *c != "warm").map(|c| {
        let m = |k: fn(&Row) -> f64| g.median_of(f, "B", c, k).unwrap_or(f64::NAN);
        let ours = format!(
            "{} ms / {:.0} MiB DRAM + {:.0} MiB PMem",
            fmt_ms(m(|r| r.total_ms)),
            m(|r| r.host_dram_mib),
            m(|r| r.host_pmem_mib)
        );
        let name = g.any_input(f, c).first().map(|r| r.paper.clone()).unwrap_or_default();
        let theirs = paper.iter().find(|(k, _)| k == c).map_or("", |(_, v)| v);
        vec![c.clone(), name, ours, theirs.to_string()]
    });
    table(md, &["configuration", "papers' name", "ours: time / footprint", "the paper's case study"], body);
}

/// The latency bound a level must keep: what N warm invocations take on the host's cores,
/// doubled, plus 50 ms.
fn latency_bound(warm_ms: f64, n: usize) -> f64 {
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    2.0 * n.div_ceil(cores) as f64 * warm_ms + 50.0
}

/// The memory budget a level must keep: a quarter of the host's memory, MiB.
fn memory_budget_mib() -> f64 {
    super::memory::MemInfo::read().map_or(0.0, |m| m.get("MemTotal") as f64 / 4.0 / f64::from(1 << 20))
}

/// The largest N each configuration sustains within the latency bound and memory budget.
pub fn max_concurrency_of(levels: &[Level], warm: &dyn Fn(&str) -> f64) -> Vec<(String, String, usize)> {
    let budget = memory_budget_mib();
    let mut out: Vec<(String, String, usize)> = Vec::new();
    for l in levels {
        let ok = l.fits && l.p99_ms <= latency_bound(warm(&l.function), l.concurrency) && l.host_dram_mib <= budget;
        match out.iter_mut().find(|(f, c, _)| f == &l.function && c == &l.config) {
            Some(e) if ok && e.2 + 1 > 0 && l.concurrency > e.2 => e.2 = l.concurrency,
            Some(_) => {}
            None => out.push((l.function.clone(), l.config.clone(), if ok { l.concurrency } else { 0 })),
        }
    }
    out
}

/// The max-concurrency table (inside the concurrency section).
pub fn max_concurrency(md: &mut String, levels: &[Level]) {
    let warm = |f: &str| {
        levels
            .iter()
            .filter(|l| l.function == f && l.concurrency == 1 && l.fits)
            .map(|l| l.p50_ms)
            .fold(f64::INFINITY, f64::min)
    };
    let _ = writeln!(
        md,
        "Largest N within bounds — latency: p99 ≤ 2 × ⌈N / cores⌉ × t₁ + 50 ms, where t₁ is the fastest configuration's SnapStart at N = 1; memory: host DRAM ≤ a quarter of the host's ({:.0} MiB):\n",
        memory_budget_mib()
    );
    let body = max_concurrency_of(levels, &warm).into_iter().map(|(f, c, n)| vec![f, c, n.to_string()]);
    table(md, &["function", "configuration", "largest N"], body);
}

/// Experiment 7: SnapStarts per second per GiB of memory, at the largest N every compared
/// configuration ran at.
pub fn cost(md: &mut String, results: &Results) {
    let levels = &results.levels;
    let functions: Vec<String> = levels.iter().map(|l| l.function.clone()).fold(Vec::new(), |mut v, f| {
        if !v.contains(&f) {
            v.push(f);
        }
        v
    });
    if functions.is_empty() {
        return;
    }
    md.push_str("## 7. Cost-effectiveness: SnapStarts per second per GiB of memory\n\n");
    md.push_str("Throughput at the largest N all four ran at, over the memory the host held with every VM alive: DRAM + emulated PMem (both counted, as a GiB each: this host has no cheaper medium), and DRAM alone beside it.\n\n");
    const COMPARED: [&str; 4] = ["pass", "vanilla", "faasnap warm", "lazy written"];
    let mut body = Vec::new();
    for f in &functions {
        let at = |c: &str, n: usize| {
            levels.iter().find(|l| &l.function == f && l.config == c && l.concurrency == n && l.fits)
        };
        let Some(n) = levels
            .iter()
            .filter(|l| &l.function == f && l.fits && COMPARED.iter().all(|c| at(c, l.concurrency).is_some()))
            .map(|l| l.concurrency)
            .max()
        else {
            continue;
        };
        let eff = |c: &str, pmem: bool| {
            at(c, n).map_or(f64::NAN, |l| {
                let mib = l.host_dram_mib + if pmem { l.host_pmem_mib } else { 0.0 };
                l.throughput_per_s / (mib.max(1.0) / 1024.0)
            })
        };
        let mut row = vec![f.clone(), n.to_string()];
        row.extend(COMPARED.iter().map(|c| format!("{:.1} ({:.0})", eff(c, true), eff(c, false))));
        for base in ["lazy written", "vanilla", "faasnap warm"] {
            row.push(format!("{:.2}×", ratio(eff("pass", true), eff(base, true))));
        }
        body.push(row);
    }
    table(
        md,
        &[
            "function",
            "N",
            "pass",
            "vanilla",
            "faasnap warm",
            "lazy written",
            "pass / lazy written",
            "pass / vanilla (paper 2.2× vs Firecracker)",
            "pass / faasnap (paper 1.6×)",
        ],
        body,
    );
    md.push_str("Cells: SnapStarts/s per GiB of DRAM + PMem (per GiB of DRAM alone, where 1 MiB stands for less). Ratios use DRAM + PMem.\n\n");
}
