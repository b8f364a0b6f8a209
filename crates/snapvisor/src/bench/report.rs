//! The benchmark's records: one [`Row`] per VM of every run (the CSV files), the facts of
//! the host it ran on, statistics, and helpers to write Markdown tables.

use super::measure::HostView;
use super::pagecache::Residency;
use super::BenchConfig;
use crate::node::report::VmReport;
use crate::node::runner::VmSample;
use serde::Serialize;
use snapvisor_vmm::Hypervisor;
use std::fmt::Write as _;
use std::path::Path;

/// One VM of one run: a row of `results.csv` and of its experiment's CSV.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// `e2e`, `sensitivity`, `concurrency`, `ablation`, `restore`, `warm`.
    pub experiment: &'static str,
    /// Function.
    pub function: String,
    /// Configuration (`lazy written`, `pass`, ... ; `warm` for warm invocations).
    pub config: String,
    /// The papers' name for it.
    pub paper: String,
    /// Restore strategy (`warm` for warm invocations).
    pub strategy: String,
    /// Page cache at the start (`written`, `reread`, `cold`, `memory`).
    pub cache: String,
    /// Input measured.
    pub input: String,
    /// Input the working sets were recorded with.
    pub recorded_with: String,
    /// VMs at once.
    pub concurrency: usize,
    /// Repetition.
    pub rep: usize,
    /// VM index.
    pub vm: usize,
    /// Restore total, ms.
    pub restore_ms: f64,
    /// VM create, ms.
    pub vm_create_ms: f64,
    /// State load, ms.
    pub state_load_ms: f64,
    /// Memory setup, ms.
    pub memory_setup_ms: f64,
    /// Resume to response, ms.
    pub invoke_ms: f64,
    /// Restore + invoke, ms.
    pub total_ms: f64,
    /// The warm invocation run just before (0 where none).
    pub paired_warm_ms: f64,
    /// Host page faults of the vCPU thread.
    pub host_faults: u64,
    /// Of which major.
    pub host_major_faults: u64,
    /// KVM page faults.
    pub kvm_faults: u64,
    /// userfaultfd faults.
    pub uffd_faults: u64,
    /// MiB loaded or pre-faulted before resume.
    pub prepared_mib: f64,
    /// Private guest memory (pagemap), MiB.
    pub private_mib: f64,
    /// Shared guest memory (pagemap), MiB.
    pub shared_mib: f64,
    /// Private guest memory after the VM trimmed its fresh huge pages (pagemap), MiB; the
    /// same as `private_mib` where no trim ran.
    pub kept_private_mib: f64,
    /// Time the trim took, ms (0 where none ran).
    pub trim_ms: f64,
    /// Host DRAM of the whole run (all its VMs), MiB.
    pub host_dram_mib: f64,
    /// Of which anonymous.
    pub host_anon_mib: f64,
    /// Of which page cache.
    pub host_page_cache_mib: f64,
    /// Emulated PMem of the run, MiB.
    pub host_pmem_mib: f64,
    /// The memory file's 4 KiB pages (0 for the pool and warm runs).
    pub file_pages: u64,
    /// Of which in the page cache when the restore started (checked with mincore).
    pub resident_pages: u64,
    /// Share of those in 2 MiB folios, % (kpageflags; 0 where unknown).
    pub resident_2m_pct: f64,
    /// Whether the digest equals the host's computation.
    pub digest_ok: bool,
}

/// What a row is about, apart from the sample's figures.
#[derive(Clone, Debug)]
pub struct Context<'a> {
    /// Experiment.
    pub experiment: &'static str,
    /// Function.
    pub function: &'a str,
    /// Configuration.
    pub config: &'a str,
    /// The papers' name.
    pub paper: &'a str,
    /// Strategy.
    pub strategy: &'a str,
    /// Page cache.
    pub cache: &'a str,
    /// Input measured.
    pub input: &'a str,
    /// Input recorded with.
    pub recorded_with: &'a str,
    /// Repetition.
    pub rep: usize,
}

impl Row {
    /// A row for `sample` of a run of `n` VMs.
    pub fn new(ctx: &Context<'_>, n: usize, s: &VmSample, host: &HostView, cache: &Residency, expected: &str) -> Self {
        let v = VmReport::of(s);
        Row {
            experiment: ctx.experiment,
            function: ctx.function.into(),
            config: ctx.config.into(),
            paper: ctx.paper.into(),
            strategy: ctx.strategy.into(),
            cache: ctx.cache.into(),
            input: ctx.input.into(),
            recorded_with: ctx.recorded_with.into(),
            concurrency: n,
            rep: ctx.rep,
            vm: v.vm,
            restore_ms: v.restore_ms,
            vm_create_ms: v.vm_create_ms,
            state_load_ms: v.state_load_ms,
            memory_setup_ms: v.memory_setup_ms,
            invoke_ms: v.invoke_ms,
            total_ms: v.total_ms,
            paired_warm_ms: 0.0,
            host_faults: v.host_faults,
            host_major_faults: v.host_major_faults,
            kvm_faults: v.kvm_faults,
            uffd_faults: v.uffd_faults,
            prepared_mib: v.prepared_mib,
            private_mib: v.private_mib,
            shared_mib: v.shared_mib,
            kept_private_mib: s.kept.map_or(v.private_mib, |(_, kept)| snapvisor_vmm::metrics::mib(kept)),
            trim_ms: s.kept.map_or(0.0, |(t, _)| crate::node::runner::ms(t.duration)),
            host_dram_mib: host.dram_mib,
            host_anon_mib: host.anon_mib,
            host_page_cache_mib: host.page_cache_mib,
            host_pmem_mib: host.pmem_mib,
            file_pages: cache.pages,
            resident_pages: cache.resident,
            resident_2m_pct: 100.0 * cache.share_2m(),
            digest_ok: !expected.is_empty() && v.digest == expected,
        }
    }
}

/// Median, minimum and maximum.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stat {
    /// Median.
    pub median: f64,
    /// Minimum.
    pub min: f64,
    /// Maximum.
    pub max: f64,
}

/// The statistics of `values` (`None` for none).
pub fn stat(values: &[f64]) -> Option<Stat> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    // The conventional median: of an even count, the mean of the middle two (nearest-rank
    // would report the faster of two rounds).
    let median = if v.len().is_multiple_of(2) { (v[mid - 1] + v[mid]) / 2.0 } else { v[mid] };
    Some(Stat {
        median,
        min: values.iter().copied().fold(f64::INFINITY, f64::min),
        max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    })
}

/// The median of `f` over `rows` (0 for none).
pub fn median<'a>(rows: impl IntoIterator<Item = &'a Row>, f: impl Fn(&Row) -> f64) -> f64 {
    stat(&rows.into_iter().map(f).collect::<Vec<_>>()).map_or(0.0, |s| s.median)
}

/// Milliseconds with the precision they deserve.
pub fn fmt_ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A Markdown table: header cells, then rows of cells.
pub fn table(md: &mut String, header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) {
    let _ = writeln!(md, "| {} |", header.join(" | "));
    let _ = writeln!(md, "|{}", "---|".repeat(header.len()));
    for row in rows {
        let _ = writeln!(md, "| {} |", row.join(" | "));
    }
    md.push('\n');
}

/// Writes `rows` as CSV (a header from the type's fields) to `path`.
pub fn write_csv<T: Serialize>(path: &Path, rows: &[T]) -> std::io::Result<()> {
    let mut out = csv::Writer::from_path(path)?;
    for row in rows {
        out.serialize(row).map_err(std::io::Error::other)?;
    }
    out.flush()
}

/// What the benchmark ran on.
#[derive(Clone, Debug)]
pub struct Header {
    /// Lines of `key: value`.
    pub lines: Vec<(String, String)>,
}

impl Header {
    /// Reads the host facts.
    pub fn collect(hv: &Hypervisor, config: &BenchConfig, medium: &str) -> Self {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        let mem = super::memory::MemInfo::read().map(|m| m.get("MemTotal") >> 30).unwrap_or(0);
        let lines = vec![
            ("host".into(), format!("{}, {cpus} CPUs, {mem} GiB, Linux {kernel}", hv.kind())),
            ("cpu".into(), snapvisor_vmm::vstate::kvm::cpu_model()),
            ("date".into(), utc_now()),
            ("snapshots".into(), format!("{} ({})", storage_of(config.data.root()), config.data.root().display())),
            ("persistent memory".into(), format!("{medium} — DRAM standing in for PMem: no PMem hardware here")),
            ("guests".into(), format!("{} MiB of memory, 1 vCPU", config.mem_size >> 20)),
            (
                "inputs".into(),
                "working sets and write sets recorded with input A, measured with input B (sensitivity: recorded with 2, measured with 1, 3–6)".into(),
            ),
            ("method".into(), format!("one untimed warm-up per configuration; {} rounds in which each configuration runs right after a warm invocation it is paired with (each round starting one further on, every other one backwards); medians with (min–max)", config.reps)),
        ];
        Header { lines }
    }
}

fn utc_now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
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
