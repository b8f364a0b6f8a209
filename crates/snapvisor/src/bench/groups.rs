//! The benchmark's rows grouped for the summary: by experiment, function, configuration
//! (and input), with the figures every section asks of a group.

use super::report::{median, stat, Row, Stat};
use crate::node::report::percentile;
use std::collections::BTreeMap;

/// Rows of one experiment, grouped by (function, input, configuration), in order of
/// appearance.
pub struct Groups<'a> {
    map: BTreeMap<(String, String, String), Vec<&'a Row>>,
    /// Functions, in order of appearance.
    pub functions: Vec<String>,
    /// Configurations, in order of appearance (warm first if present).
    pub configs: Vec<String>,
    /// Inputs, in order of appearance.
    pub inputs: Vec<String>,
}

impl<'a> Groups<'a> {
    /// Groups the single-VM rows of `experiment`.
    pub fn of(rows: &'a [Row], experiment: &str) -> Self {
        let mut g = Groups { map: BTreeMap::new(), functions: Vec::new(), configs: Vec::new(), inputs: Vec::new() };
        for r in rows.iter().filter(|r| r.experiment == experiment && r.concurrency == 1) {
            for (list, v) in [(&mut g.functions, &r.function), (&mut g.configs, &r.config), (&mut g.inputs, &r.input)] {
                if !list.contains(v) {
                    list.push(v.clone());
                }
            }
            g.map.entry((r.function.clone(), r.input.clone(), r.config.clone())).or_default().push(r);
        }
        g
    }

    /// The rows of one group (empty if none).
    pub fn get(&self, function: &str, input: &str, config: &str) -> &[&'a Row] {
        self.map.get(&(function.into(), input.into(), config.into())).map_or(&[], Vec::as_slice)
    }

    /// The rows of one group, whatever the input (the experiment has one per function).
    pub fn any_input(&self, function: &str, config: &str) -> Vec<&'a Row> {
        self.inputs.iter().flat_map(|i| self.get(function, i, config).iter().copied()).collect()
    }

    /// Statistics of SnapStart times of a group.
    pub fn total(&self, function: &str, input: &str, config: &str) -> Option<Stat> {
        stat(&self.get(function, input, config).iter().map(|r| r.total_ms).collect::<Vec<_>>())
    }

    /// Median SnapStart overhead: each run's SnapStart minus the warm invocation run just
    /// before it.
    pub fn overhead(&self, function: &str, input: &str, config: &str) -> Option<f64> {
        self.paired(function, input, config, |r| r.total_ms)
    }

    /// Median paging overhead: the time a run spends on guest memory — its memory setup
    /// before resume plus its invocation beyond the warm one run just before it. Creating
    /// the VM and loading the vCPU state are not paging (they are the restore target's).
    pub fn paging(&self, function: &str, input: &str, config: &str) -> Option<f64> {
        self.paired(function, input, config, |r| r.memory_setup_ms + r.invoke_ms)
    }

    /// Median of `f(run) − its paired warm invocation` over a group.
    fn paired(&self, function: &str, input: &str, config: &str, f: impl Fn(&Row) -> f64) -> Option<f64> {
        let diffs: Vec<f64> = self
            .get(function, input, config)
            .iter()
            .filter(|r| r.paired_warm_ms > 0.0)
            .map(|r| f(r) - r.paired_warm_ms)
            .collect();
        (!diffs.is_empty()).then(|| percentile(&diffs, 50.0))
    }

    /// Median of `f` over a group (`None` if empty).
    pub fn median_of(&self, function: &str, input: &str, config: &str, f: impl Fn(&Row) -> f64) -> Option<f64> {
        let rows = self.get(function, input, config);
        (!rows.is_empty()).then(|| median(rows.iter().copied(), f))
    }
}

/// `a / b`, or NaN when `b` is 0.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        f64::NAN
    } else {
        a / b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::Row;

    fn row(config: &str, rep: usize, total_ms: f64, paired: f64) -> Row {
        Row {
            experiment: "e2e",
            function: "f".into(),
            config: config.into(),
            paper: String::new(),
            strategy: config.into(),
            cache: String::new(),
            input: "B".into(),
            recorded_with: "A".into(),
            concurrency: 1,
            rep,
            vm: 0,
            restore_ms: 0.0,
            vm_create_ms: 0.0,
            state_load_ms: 0.0,
            memory_setup_ms: 0.0,
            invoke_ms: total_ms,
            total_ms,
            paired_warm_ms: paired,
            host_faults: 0,
            host_major_faults: 0,
            kvm_faults: 0,
            uffd_faults: 0,
            prepared_mib: 0.0,
            private_mib: 0.0,
            shared_mib: 0.0,
            kept_private_mib: 0.0,
            trim_ms: 0.0,
            host_dram_mib: 0.0,
            host_anon_mib: 0.0,
            host_page_cache_mib: 0.0,
            host_pmem_mib: 0.0,
            file_pages: 0,
            resident_pages: 0,
            resident_2m_pct: 0.0,
            digest_ok: true,
        }
    }

    #[test]
    fn overhead_pairs_each_run_with_its_warm_run() {
        // The machine slows down in round 2: paired differences stay at 1 ms and 20 ms.
        let warm = [10.0, 10.0, 30.0];
        let mut rows = Vec::new();
        for (rep, w) in warm.iter().enumerate() {
            rows.push(row("warm", rep, *w, 0.0));
            rows.push(row("pass", rep, w + 1.0, *w));
            rows.push(row("lazy", rep, w + 20.0, *w));
        }
        let g = Groups::of(&rows, "e2e");
        assert_eq!(g.configs, ["warm", "pass", "lazy"]);
        assert_eq!(g.overhead("f", "B", "pass"), Some(1.0));
        assert_eq!(g.overhead("f", "B", "lazy"), Some(20.0));
        assert_eq!(g.overhead("f", "B", "warm"), None);
        // Here invoke = total and no memory setup: paging equals the whole overhead.
        assert_eq!(g.paging("f", "B", "lazy"), Some(20.0));
        assert_eq!(g.total("f", "B", "lazy").map(|s| s.median), Some(30.0));
    }
}
