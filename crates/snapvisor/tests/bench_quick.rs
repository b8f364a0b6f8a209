//! `snapvisor bench --quick`: every experiment runs and every section, CSV file and column
//! the documentation promises is there. (Speed targets are the benchmark's business; this
//! checks its output's shape and that every guest answered correctly.)

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use support::*;

/// The columns of results.csv and of the per-experiment CSVs, as docs/benchmarking.md lists them.
const ROW_COLUMNS: &[&str] = &[
    "experiment",
    "function",
    "config",
    "paper",
    "strategy",
    "cache",
    "input",
    "recorded_with",
    "concurrency",
    "rep",
    "vm",
    "restore_ms",
    "vm_create_ms",
    "state_load_ms",
    "memory_setup_ms",
    "invoke_ms",
    "total_ms",
    "paired_warm_ms",
    "host_faults",
    "host_major_faults",
    "kvm_faults",
    "uffd_faults",
    "prepared_mib",
    "private_mib",
    "shared_mib",
    "kept_private_mib",
    "trim_ms",
    "host_dram_mib",
    "host_anon_mib",
    "host_page_cache_mib",
    "host_pmem_mib",
    "file_pages",
    "resident_pages",
    "resident_2m_pct",
    "digest_ok",
];

/// Every configuration of the end-to-end experiment.
const E2E_CONFIGS: &[&str] = &[
    "warm",
    "lazy written",
    "lazy reread",
    "lazy cold",
    "vanilla",
    "uffd warm",
    "uffd cold",
    "reap warm",
    "reap cold",
    "faasnap warm",
    "faasnap cold",
    "cached warm",
    "pass",
];

const SECTIONS: &[&str] = &[
    "## 8. Headline",
    "## Targets",
    "## 1. End to end",
    "## 2. Input sensitivity",
    "## 3. Concurrency",
    "## 4. Ephemeral workload",
    "## 5. Where the time goes",
    "## 6. Ablation",
    "## 7. Cost-effectiveness",
    "## Memory of a pass VM",
    "## Paging overhead of pass",
    "## Restore phases",
    "## The daemon under load",
];

fn csv(dir: &Path, name: &str) -> csv::Reader<std::fs::File> {
    csv::Reader::from_path(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn header(dir: &Path, name: &str) -> Vec<String> {
    csv(dir, name).headers().unwrap().iter().map(String::from).collect()
}

/// The rows of a CSV file, checked to have `columns` as header and at least one row.
fn rows(dir: &Path, name: &str, columns: &[&str]) -> Vec<csv::StringRecord> {
    assert_eq!(header(dir, name), columns, "{name}: columns");
    let rows: Vec<csv::StringRecord> = csv(dir, name).records().map(|r| r.unwrap()).collect();
    assert!(!rows.is_empty(), "{name}: no rows");
    rows
}

#[test]
fn quick_bench_writes_every_section_csv_and_column() {
    if !kvm("quick_bench_writes_every_section_csv_and_column") {
        return;
    }
    let scratch = Tmp::new(&std::env::temp_dir(), "bench-quick");
    let out_dir = scratch.0.join("out");
    let out = snapvisor(&scratch.0.join("data"), &["bench", "--quick", "--out", out_dir.to_str().unwrap()]);
    let stdout = ok(out);

    let summary = std::fs::read_to_string(out_dir.join("summary.md")).unwrap();
    assert!(stdout.contains("## Targets"), "the summary is printed too");
    for (i, heading) in SECTIONS.iter().enumerate() {
        let at = summary.find(heading).unwrap_or_else(|| panic!("summary.md has no `{heading}`:\n{summary}"));
        if let Some(next) = SECTIONS.get(i + 1) {
            assert!(summary.find(next).unwrap() > at, "`{heading}` comes before `{next}`");
        }
    }
    for label in
        ["- **host**:", "- **persistent memory**:", "- **inputs**:", "- **noise**:", "![concurrency](concurrency.svg)"]
    {
        assert!(summary.contains(label), "summary.md has no `{label}`");
    }
    let targets = &summary[summary.find("## Targets").unwrap()..summary.find("## 1.").unwrap()];
    assert!(targets.lines().filter(|l| l.ends_with("→ met") || l.contains("→ NOT met")).count() >= 6, "{targets}");

    // Every measured run answered with the native digest.
    let all = rows(&out_dir, "results.csv", ROW_COLUMNS);
    let digest = ROW_COLUMNS.iter().position(|c| *c == "digest_ok").unwrap();
    assert!(all.iter().all(|r| &r[digest] == "true"), "a guest answered wrongly");

    // Per experiment: its CSV, every configuration of e2e for every quick function.
    let mut seen = BTreeSet::new();
    let e2e = rows(&out_dir, "e2e.csv", ROW_COLUMNS);
    for r in &e2e {
        seen.insert((r[1].to_string(), r[2].to_string()));
    }
    // A pass VM's trim after the response keeps no more than it had at the response.
    let col = |name: &str| ROW_COLUMNS.iter().position(|c| *c == name).unwrap();
    let (private, kept) = (col("private_mib"), col("kept_private_mib"));
    for r in e2e.iter().filter(|r| &r[1] == "json" && &r[2] == "pass") {
        let (p, k): (f64, f64) = (r[private].parse().unwrap(), r[kept].parse().unwrap());
        assert!(k > 0.0 && k <= p, "json pass: kept {k} MiB of {p} MiB private");
    }
    for function in ["json", "read-list"] {
        for config in E2E_CONFIGS {
            assert!(seen.contains(&(function.to_string(), config.to_string())), "e2e: no {function} / {config}");
        }
    }
    // Pass's own pairs for the paging target: pass only, each paired with a warm invocation,
    // 4 per function in the quick run; the target line says how many it rests on.
    let paging = rows(&out_dir, "paging.csv", ROW_COLUMNS);
    let (config, paired) = (col("config"), col("paired_warm_ms"));
    for function in ["json", "read-list"] {
        let pass: Vec<_> = paging.iter().filter(|r| &r[1] == function && &r[config] == "pass").collect();
        assert_eq!(pass.len(), 4, "paging: {function}");
        assert!(pass.iter().all(|r| r[paired].parse::<f64>().unwrap() > 0.0), "paging: {function} unpaired");
    }
    assert!(paging.iter().all(|r| &r[config] == "pass" || &r[config] == "warm"), "paging: only pass and warm");
    assert!(targets.contains("(median of 4 pairs)"), "{targets}");
    for name in ["sensitivity.csv", "concurrency.csv", "ablation.csv", "restore.csv"] {
        rows(&out_dir, name, ROW_COLUMNS);
    }
    let levels = rows(
        &out_dir,
        "concurrency-levels.csv",
        &[
            "function",
            "config",
            "paper",
            "concurrency",
            "fits",
            "p50_ms",
            "p99_ms",
            "throughput_per_s",
            "host_dram_mib",
            "host_pmem_mib",
            "note",
        ],
    );
    let n: BTreeSet<&str> = levels.iter().map(|r| r.get(3).unwrap()).collect();
    assert_eq!(n, BTreeSet::from(["1", "2"]), "quick concurrency levels");
    rows(&out_dir, "shells.csv", &["shells", "mem_mib", "kib_each", "fds_each", "create_ms"]);
    let load =
        rows(&out_dir, "load.csv", &["strategy", "clients", "ok", "failed", "seconds", "rps", "p50_ms", "p99_ms"]);
    let strategies: BTreeSet<&str> = load.iter().map(|r| r.get(0).unwrap()).collect();
    assert_eq!(strategies.len(), 7, "warm and six strategies under load: {strategies:?}");
    let svg = std::fs::read_to_string(out_dir.join("concurrency.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("read-list"), "concurrency.svg");
    // The run undid what it set up.
    let data = scratch.0.join("data");
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!mounts.contains(data.to_str().unwrap()), "the benchmark's medium is still mounted");
}
