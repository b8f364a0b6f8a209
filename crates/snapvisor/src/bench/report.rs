//! Benchmark results: CSV rows, statistics, and the Markdown summary with the paper's
//! tables and the targets checked against the measured ratios.

use super::BenchConfig;
use crate::runner::{ms, VmSample};
use serde::Serialize;
use snapvisor_vmm::metrics::{mib, total_memory};
use snapvisor_vmm::pool::medium::Medium;
use snapvisor_vmm::Hypervisor;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// One VM of one run: a row of `results.csv`.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// [`LATENCY`] (one VM per run, repeated) or [`CONCURRENCY`] (N VMs at once).
    pub experiment: &'static str,
    /// Function.
    pub function: String,
    /// `warm` or a restore strategy.
    pub strategy: String,
    /// Where the snapshot was read from (`dram` for warm rows).
    pub medium: String,
    /// VMs restored at once.
    pub concurrency: usize,
    /// Repetition.
    pub rep: usize,
    /// VM index within the run.
    pub vm: usize,
    /// Restore total.
    pub restore_ms: f64,
    /// KVM VM and vCPU creation.
    pub vm_create_ms: f64,
    /// Snapshot metadata and vCPU state.
    pub state_load_ms: f64,
    /// Guest memory setup by the strategy.
    pub memory_setup_ms: f64,
    /// Resume to response.
    pub invoke_ms: f64,
    /// Restore + invoke.
    pub total_ms: f64,
    /// The warm invocation run just before this SnapStart (0 where there is none).
    pub paired_warm_ms: f64,
    /// Host page faults (minor + major) of the vCPU thread during the invocation.
    pub host_faults: u64,
    /// Of which major.
    pub host_major_faults: u64,
    /// KVM page faults fixed during the invocation.
    pub kvm_faults: u64,
    /// Faults served by userfaultfd.
    pub uffd_faults: u64,
    /// MiB loaded or pre-faulted before resume.
    pub prepared_mib: f64,
    /// Resident guest memory after the response (private + shared).
    pub rss_mib: f64,
    /// Private guest memory after the response.
    pub private_mib: f64,
    /// Shared (file or pool) guest memory after the response.
    pub shared_mib: f64,
    /// Digest of the response.
    pub digest: String,
    /// Whether the digest equals the host's computation.
    pub digest_ok: bool,
}

/// Experiment name of the repeated single-VM runs.
pub const LATENCY: &str = "latency";
/// Experiment name of the N-VMs-at-once runs.
pub const CONCURRENCY: &str = "concurrency";

impl Row {
    /// A row from a sample.
    pub fn new(
        function: &str,
        strategy: &str,
        medium: &str,
        concurrency: usize,
        rep: usize,
        s: &VmSample,
        expected: &Option<String>,
    ) -> Self {
        Row {
            experiment: LATENCY,
            function: function.into(),
            strategy: strategy.into(),
            medium: medium.into(),
            concurrency,
            rep,
            vm: s.vm,
            restore_ms: ms(s.restore.total()),
            vm_create_ms: ms(s.restore.vm_create),
            state_load_ms: ms(s.restore.state_load),
            memory_setup_ms: ms(s.restore.memory_setup),
            invoke_ms: ms(s.invoke),
            total_ms: ms(s.total()),
            paired_warm_ms: 0.0,
            host_faults: s.host_faults.total(),
            host_major_faults: s.host_faults.major,
            kvm_faults: s.kvm.pf_fixed,
            uffd_faults: s.uffd_faults,
            prepared_mib: mib(s.prepared_bytes),
            rss_mib: mib(s.memory.private_bytes + s.memory.shared_bytes),
            private_mib: mib(s.memory.private_bytes),
            shared_mib: mib(s.memory.shared_bytes),
            digest: s.digest.clone().unwrap_or_default(),
            digest_ok: s.digest.is_some() && s.digest == *expected,
        }
    }
}

/// One run of the concurrency experiment: a row of `concurrency.csv`.
#[derive(Clone, Debug, Serialize)]
pub struct ConcurrencyRow {
    /// Function.
    pub function: String,
    /// Strategy.
    pub strategy: String,
    /// Medium.
    pub medium: String,
    /// VMs at once.
    pub concurrency: usize,
    /// Median SnapStart time.
    pub p50_ms: f64,
    /// 99th percentile SnapStart time.
    pub p99_ms: f64,
    /// Host memory of all VMs' guest RAM at once: private pages summed, shared pages once.
    pub total_mib: f64,
    /// Private pages summed.
    pub private_mib: f64,
}

impl ConcurrencyRow {
    /// Summarises the VMs of one run.
    pub fn new(function: &str, strategy: &str, medium: &str, concurrency: usize, samples: &[VmSample]) -> Self {
        let totals: Vec<f64> = samples.iter().map(|s| ms(s.total())).collect();
        let usages: Vec<_> = samples.iter().map(|s| &s.memory).collect();
        ConcurrencyRow {
            function: function.into(),
            strategy: strategy.into(),
            medium: medium.into(),
            concurrency,
            p50_ms: percentile(&totals, 50.0),
            p99_ms: percentile(&totals, 99.0),
            total_mib: mib(total_memory(&usages)),
            private_mib: mib(samples.iter().map(|s| s.memory.private_bytes).sum()),
        }
    }
}

/// Nearest-rank percentile (`p` in 0..=100) of unsorted values; 0 for none.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

/// What the benchmark ran on.
#[derive(Clone, Debug)]
pub struct Header {
    /// Lines of `key: value`.
    pub lines: Vec<(String, String)>,
}

impl Header {
    /// Reads the host facts.
    pub fn collect(hv: &Hypervisor, config: &BenchConfig, pool: Option<Medium>) -> Self {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
        let date = std::process::Command::new("date")
            .arg("-u")
            .arg("+%Y-%m-%d %H:%M UTC")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let mut lines = vec![
            ("host".to_string(), format!("{}, {} CPUs, Linux {kernel}", hv.kind(), std::thread::available_parallelism().map_or(0, |n| n.get()))),
            ("cpu".to_string(), snapvisor_vmm::vstate::kvm::cpu_model()),
            ("date".to_string(), date),
            ("snapshots".to_string(), format!("{} ({})", storage_of(config.data.root()), config.data.root().display())),
            ("pool".to_string(), pool.map_or_else(|| "not used".to_string(), |m| m.to_string())),
            ("guest".to_string(), format!("{} MiB RAM, 1 vCPU", config.mem_size >> 20)),
            ("method".to_string(), format!("one untimed warm-up per configuration, then {} rounds in which every configuration runs once, right after a warm invocation it is paired with; medians with (min–max)", config.reps)),
        ];
        lines.push((
            "media".to_string(),
            "disk-warm = whole memory file read into the page cache before each restore; disk-cold = evicted (posix_fadvise DONTNEED) before each restore".to_string(),
        ));
        Header { lines }
    }
}

/// "fstype on device" for the filesystem holding `path`.
pub fn storage_of(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && path.starts_with(f[1])).then(|| (f[1].len(), format!("{} on {}", f[2], f[0])))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "unknown storage".into(), |(_, s)| s)
}

struct Stat {
    median: f64,
    min: f64,
    max: f64,
}

fn stat(values: &[f64]) -> Option<Stat> {
    if values.is_empty() {
        return None;
    }
    Some(Stat {
        median: percentile(values, 50.0),
        min: values.iter().copied().fold(f64::INFINITY, f64::min),
        max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    })
}

fn fmt_ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn median_of(rows: &[&Row], f: impl Fn(&Row) -> f64) -> f64 {
    percentile(&rows.iter().map(|r| f(r)).collect::<Vec<_>>(), 50.0)
}

/// Writes `results.csv`, `concurrency.csv` and `summary.md`; returns the summary.
pub fn write_all(out: &Path, header: &Header, rows: &[Row], conc: &[ConcurrencyRow]) -> std::io::Result<String> {
    write_csv(&out.join("results.csv"), rows)?;
    write_csv(&out.join("concurrency.csv"), conc)?;
    let summary = summary(header, rows, conc);
    std::fs::write(out.join("summary.md"), &summary)?;
    Ok(summary)
}

fn write_csv<T: Serialize>(path: &Path, rows: &[T]) -> std::io::Result<()> {
    let mut out = csv::Writer::from_path(path)?;
    for row in rows {
        out.serialize(row)?;
    }
    out.flush()
}

/// A Markdown table header: "function" and one column per (strategy, medium).
fn table_header<'a>(md: &mut String, columns: impl Iterator<Item = &'a (String, String)> + Clone) {
    md.push_str("| function |");
    for (s, m) in columns.clone() {
        let _ = write!(md, " {s} {m} |");
    }
    md.push_str("\n|---|");
    for _ in columns {
        md.push_str("---|");
    }
    md.push('\n');
}

/// The Markdown summary.
pub fn summary(header: &Header, rows: &[Row], conc: &[ConcurrencyRow]) -> String {
    let mut md = String::from("# snapvisor bench\n\n");
    for (k, v) in &header.lines {
        let _ = writeln!(md, "- **{k}**: {v}");
    }
    // (function, strategy, medium) of the single-VM rows, in first-seen order.
    let mut configs: Vec<(String, String)> = Vec::new();
    let mut functions: Vec<String> = Vec::new();
    let mut groups: BTreeMap<(String, String, String), Vec<&Row>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.experiment == LATENCY) {
        let key = (r.strategy.clone(), r.medium.clone());
        if !configs.contains(&key) {
            configs.push(key);
        }
        if !functions.contains(&r.function) {
            functions.push(r.function.clone());
        }
        groups.entry((r.function.clone(), r.strategy.clone(), r.medium.clone())).or_default().push(r);
    }

    let _ = writeln!(md, "\n## SnapStart time (restore + invocation), ms: median (min–max)\n");
    table_header(&mut md, configs.iter());
    for f in &functions {
        let _ = write!(md, "| {f} |");
        for (s, m) in &configs {
            let cell = groups
                .get(&(f.clone(), s.clone(), m.clone()))
                .and_then(|g| stat(&g.iter().map(|r| r.total_ms).collect::<Vec<_>>()));
            match cell {
                Some(st) => {
                    let _ = write!(md, " {} ({}–{}) |", fmt_ms(st.median), fmt_ms(st.min), fmt_ms(st.max));
                }
                None => md.push_str(" – |"),
            }
        }
        md.push('\n');
    }

    let _ = writeln!(md, "\n## Where the time goes (medians)\n");
    let _ = writeln!(md, "| function | strategy | medium | VM create | state load | memory setup | invoke | total | host faults (major) | KVM faults | uffd faults | pre-loaded MiB | private MiB | shared MiB |");
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for f in &functions {
        for (s, m) in &configs {
            let Some(g) = groups.get(&(f.clone(), s.clone(), m.clone())) else { continue };
            let _ = writeln!(
                md,
                "| {f} | {s} | {m} | {} | {} | {} | {} | {} | {:.0} ({:.0}) | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} |",
                fmt_ms(median_of(g, |r| r.vm_create_ms)),
                fmt_ms(median_of(g, |r| r.state_load_ms)),
                fmt_ms(median_of(g, |r| r.memory_setup_ms)),
                fmt_ms(median_of(g, |r| r.invoke_ms)),
                fmt_ms(median_of(g, |r| r.total_ms)),
                median_of(g, |r| r.host_faults as f64),
                median_of(g, |r| r.host_major_faults as f64),
                median_of(g, |r| r.kvm_faults as f64),
                median_of(g, |r| r.uffd_faults as f64),
                median_of(g, |r| r.prepared_mib),
                median_of(g, |r| r.private_mib),
                median_of(g, |r| r.shared_mib),
            );
        }
    }

    // Paging overhead and the targets. A configuration's overhead is the median of its
    // SnapStarts minus the warm invocation run just before each: the two ran a moment
    // apart, so the slow periods of a shared machine cancel out.
    let median_total = |f: &str, s: &str, m: Option<&str>| {
        groups
            .iter()
            .filter(|((gf, gs, gm), _)| gf == f && gs == s && m.is_none_or(|m| gm == m))
            .map(|(_, g)| median_of(g, |r| r.total_ms))
            .next()
    };
    let overhead = |f: &str, s: &str, m: &str| -> Option<f64> {
        let runs = groups.get(&(f.to_string(), s.to_string(), m.to_string()))?;
        let diffs: Vec<f64> =
            runs.iter().filter(|r| r.paired_warm_ms > 0.0).map(|r| r.total_ms - r.paired_warm_ms).collect();
        (!diffs.is_empty()).then(|| percentile(&diffs, 50.0))
    };
    let _ = writeln!(md, "\n## Paging overhead: SnapStart − the warm invocation run just before it, ms (medians)\n");
    let strategies: Vec<&(String, String)> = configs.iter().filter(|(s, _)| s != "warm").collect();
    table_header(&mut md, strategies.iter().copied());
    for f in &functions {
        let _ = write!(md, "| {f} |");
        for (s, m) in &strategies {
            match overhead(f, s, m) {
                Some(o) => {
                    let _ = write!(md, " {} |", fmt_ms(o));
                }
                None => md.push_str(" – |"),
            }
        }
        md.push('\n');
    }

    let _ = writeln!(md, "\n## Targets (from this run)\n");
    let pass_medium = configs.iter().find(|(s, _)| s == "pass").map(|(_, m)| m.clone());
    match &pass_medium {
        None => md.push_str("- pass was not run.\n"),
        Some(pm) => {
            // pass ≤ 1.2 × warm + 1.5 ms  ⇔  pass − warm ≤ 0.2 × warm + 1.5 ms.
            for f in &functions {
                if let (Some(w), Some(p), Some(o)) =
                    (median_total(f, "warm", None), median_total(f, "pass", Some(pm)), overhead(f, "pass", pm))
                {
                    let allowed = 0.2 * w + 1.5;
                    let _ = writeln!(
                        md,
                        "- {f}: pass SnapStart {} ms, warm {} ms: overhead {} ms ≤ 0.2 × warm + 1.5 ms = {} ms → {}",
                        fmt_ms(p),
                        fmt_ms(w),
                        fmt_ms(o),
                        fmt_ms(allowed),
                        if o <= allowed { "met" } else { "NOT met" }
                    );
                }
            }
            for f in &functions {
                if let (Some(po), Some(lo)) = (overhead(f, "pass", pm), overhead(f, "lazy", "disk-warm")) {
                    let ratio = if lo > 0.0 { po / lo } else { f64::NAN };
                    let verdict = match (f.as_str(), ratio <= 0.1) {
                        ("recognition", true) => " → target ≤ 0.1 met",
                        ("recognition", false) => " → target ≤ 0.1 NOT met",
                        _ => "",
                    };
                    let _ = writeln!(
                        md,
                        "- {f}: paging overhead pass {} ms / lazy (page cache warm) {} ms = {ratio:.3}{verdict}",
                        fmt_ms(po),
                        fmt_ms(lo),
                    );
                }
            }
        }
    }
    let max_n = conc.iter().map(|c| c.concurrency).max();
    if let Some(n) = max_n {
        for f in conc.iter().map(|c| c.function.clone()).collect::<std::collections::BTreeSet<_>>() {
            let find = |s: &str| conc.iter().find(|c| c.function == f && c.strategy == s && c.concurrency == n);
            if let (Some(p), Some(c)) = (find("pass"), find("cached")) {
                let ratio = p.total_mib / c.total_mib;
                let _ = writeln!(
                    md,
                    "- {f} at concurrency {n}: total guest memory pass {:.0} MiB / cached {:.0} MiB = {:.3} → target ≤ 0.3 {}",
                    p.total_mib,
                    c.total_mib,
                    ratio,
                    if ratio <= 0.3 { "met" } else { "NOT met" }
                );
            }
        }
    }

    if !conc.is_empty() {
        let _ = writeln!(md, "\n## Concurrency: N VMs of one snapshot restored at once\n");
        let _ = writeln!(md, "| function | strategy | medium | N | p50 ms | p99 ms | total guest memory MiB (shared counted once) | private MiB |");
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
        for c in conc {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {:.0} | {:.0} |",
                c.function,
                c.strategy,
                c.medium,
                c.concurrency,
                fmt_ms(c.p50_ms),
                fmt_ms(c.p99_ms),
                c.total_mib,
                c.private_mib
            );
        }
        md.push_str("\n![concurrency](concurrency.svg)\n");
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(function: &str, strategy: &str, medium: &str, rep: usize, total_ms: f64) -> Row {
        Row {
            experiment: LATENCY,
            function: function.into(),
            strategy: strategy.into(),
            medium: medium.into(),
            concurrency: 1,
            rep,
            vm: 0,
            restore_ms: 0.0,
            vm_create_ms: 0.0,
            state_load_ms: 0.0,
            memory_setup_ms: 0.0,
            invoke_ms: total_ms,
            total_ms,
            paired_warm_ms: 0.0,
            host_faults: 0,
            host_major_faults: 0,
            kvm_faults: 0,
            uffd_faults: 0,
            prepared_mib: 0.0,
            rss_mib: 0.0,
            private_mib: 0.0,
            shared_mib: 0.0,
            digest: String::new(),
            digest_ok: true,
        }
    }

    #[test]
    fn overhead_pairs_each_run_with_the_warm_run_of_its_round() {
        // The machine slows down in round 2: paired differences stay at 1 ms and 20 ms.
        let warm = [10.0, 10.0, 30.0];
        let mut rows = Vec::new();
        for (rep, w) in warm.iter().enumerate() {
            rows.push(row("f", "warm", "dram", rep, *w));
            rows.push(Row { paired_warm_ms: *w, ..row("f", "pass", "pool", rep, w + 1.0) });
            rows.push(Row { paired_warm_ms: *w, ..row("f", "lazy", "disk-warm", rep, w + 20.0) });
        }
        let md = summary(&Header { lines: vec![] }, &rows, &[]);
        assert!(md.contains("| f | 1.00 | 20.0 |"), "{md}");
        assert!(md.contains("paging overhead pass 1.00 ms / lazy (page cache warm) 20.0 ms = 0.050"), "{md}");
        assert!(md.contains("overhead 1.00 ms ≤ 0.2 × warm + 1.5 ms = 3.50 ms → met"), "{md}");
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let v = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(percentile(&v, 50.0), 3.0);
        assert_eq!(percentile(&v, 99.0), 5.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }
}
