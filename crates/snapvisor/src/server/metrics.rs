//! `/metrics`: the daemon's figures in the Prometheus text format (prometheus-client).
//!
//! Per strategy (`fresh`, `warm`, or a restore strategy) and phase (`vm_create`,
//! `state_load`, `memory_setup`, `restore`, `invoke`, `total`; fresh runs: `vm_create`,
//! `load`, `init`, `invoke`), a latency histogram of every VM; per strategy, the page faults
//! (host, KVM, userfaultfd) and a histogram of each VM's private and shared guest memory;
//! error answers by kind; and, read when scraped, the queue depth, the VMs running, the
//! warm VMs and the daemon's own resident memory and open files.

use crate::node::invoke::{InvokeReport, RunReport};
use crate::node::report::VmReport;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    strategy: String,
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StrategyLabels {
    strategy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MemoryLabels {
    strategy: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FaultLabels {
    strategy: String,
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    kind: String,
}

/// Live figures read at each scrape.
pub struct Live {
    /// Requests waiting for VM slots.
    pub queue_depth: usize,
    /// VM slots in use.
    pub vms_running: usize,
    /// Warm VMs kept.
    pub warm_vms: usize,
    /// VM shells ready for SnapStarts.
    pub ready_shells: usize,
}

/// The daemon's metrics.
pub struct Metrics {
    registry: Registry,
    latency: Family<PhaseLabels, Histogram>,
    vms: Family<StrategyLabels, Counter>,
    faults: Family<FaultLabels, Counter>,
    memory: Family<MemoryLabels, Histogram>,
    errors: Family<ErrorLabels, Counter>,
    queue_depth: Gauge,
    vms_running: Gauge,
    warm_vms: Gauge,
    ready_shells: Gauge,
    resident: Gauge,
    open_files: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("snapvisor");
        // 0.25 ms .. ~65 s, doubling.
        let latency = Family::<PhaseLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_25, 2.0, 19))
        });
        // 64 KiB .. 32 GiB, doubling.
        let memory = Family::<MemoryLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(65_536.0, 2.0, 20))
        });
        let m = Metrics {
            latency,
            vms: Family::default(),
            faults: Family::default(),
            memory,
            errors: Family::default(),
            queue_depth: Gauge::default(),
            vms_running: Gauge::default(),
            warm_vms: Gauge::default(),
            ready_shells: Gauge::default(),
            resident: Gauge::default(),
            open_files: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "invocation_seconds",
            "Latency of each VM's invocation, by strategy and phase",
            m.latency.clone(),
        );
        registry.register("vm_invocations", "VMs that answered, by strategy", m.vms.clone());
        registry.register(
            "page_faults",
            "Page faults during invocations, by strategy and source (host, kvm, uffd)",
            m.faults.clone(),
        );
        registry.register(
            "guest_memory_bytes",
            "Guest memory of each VM after its answer, by strategy and kind (private, shared)",
            m.memory.clone(),
        );
        registry.register("errors", "Error answers, by kind", m.errors.clone());
        registry.register("queue_depth", "Requests waiting for VM slots", m.queue_depth.clone());
        registry.register("vms_running", "VM slots in use", m.vms_running.clone());
        registry.register("warm_vms", "Warm VMs kept alive", m.warm_vms.clone());
        registry.register("ready_shells", "VM shells made ahead for SnapStarts", m.ready_shells.clone());
        registry.register("resident_memory_bytes", "Resident memory of the daemon process", m.resident.clone());
        registry.register("open_fds", "Open file descriptors of the daemon process", m.open_files.clone());
        Metrics { registry, ..m }
    }

    fn observe(&self, strategy: &str, phase: &str, ms: f64) {
        let labels = PhaseLabels { strategy: strategy.into(), phase: phase.into() };
        self.latency.get_or_create(&labels).observe(ms / 1e3);
    }

    fn fault(&self, strategy: &str, source: &str, n: u64) {
        self.faults.get_or_create(&FaultLabels { strategy: strategy.into(), source: source.into() }).inc_by(n);
    }

    fn vm(&self, strategy: &str) {
        self.vms.get_or_create(&StrategyLabels { strategy: strategy.into() }).inc();
    }

    fn row(&self, s: &str, r: &VmReport) {
        let mut phases = vec![("invoke", r.invoke_ms), ("total", r.total_ms)];
        if s != "warm" {
            phases.extend([
                ("vm_create", r.vm_create_ms),
                ("state_load", r.state_load_ms),
                ("memory_setup", r.memory_setup_ms),
                ("restore", r.restore_ms),
            ]);
        }
        for (phase, ms) in phases {
            self.observe(s, phase, ms);
        }
        self.vm(s);
        self.fault(s, "host", r.host_faults);
        self.fault(s, "kvm", r.kvm_faults);
        self.fault(s, "uffd", r.uffd_faults);
        for (kind, mib) in [("private", r.private_mib), ("shared", r.shared_mib)] {
            let labels = MemoryLabels { strategy: s.into(), kind: kind.into() };
            self.memory.get_or_create(&labels).observe(mib * f64::from(1u32 << 20));
        }
    }

    /// Records a SnapStart's or a warm invocation's VMs.
    pub fn invocation(&self, report: &InvokeReport) {
        for row in &report.vms {
            self.row(report.strategy, row);
        }
    }

    /// Records a fresh run.
    pub fn run(&self, report: &RunReport) {
        let r = &report.run;
        for (phase, ms) in
            [("vm_create", r.vm_create_ms), ("load", r.load_ms), ("init", r.init_ms), ("invoke", r.invoke_ms)]
        {
            self.observe("fresh", phase, ms);
        }
        self.vm("fresh");
        self.fault("fresh", "kvm", r.kvm.pf_fixed);
    }

    /// Counts an error answer.
    pub fn error(&self, kind: &str) {
        self.errors.get_or_create(&ErrorLabels { kind: kind.into() }).inc();
    }

    /// The text exposition, with the live figures as of now.
    pub fn render(&self, live: &Live) -> String {
        let gauge = |g: &Gauge, v: usize| g.set(i64::try_from(v).unwrap_or(i64::MAX));
        gauge(&self.queue_depth, live.queue_depth);
        gauge(&self.vms_running, live.vms_running);
        gauge(&self.warm_vms, live.warm_vms);
        gauge(&self.ready_shells, live.ready_shells);
        let process = ProcessFigures::now();
        gauge(&self.resident, process.resident_bytes as usize);
        gauge(&self.open_files, process.open_fds);
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// Resident memory and open files of a process, from /proc.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessFigures {
    /// Resident set size, bytes.
    pub resident_bytes: u64,
    /// Open file descriptors.
    pub open_fds: usize,
}

impl ProcessFigures {
    /// This process's figures.
    pub fn now() -> Self {
        Self::of("self")
    }

    /// The figures of process `pid` (`"self"` for this one); zeros where /proc has none.
    pub fn of(pid: &str) -> Self {
        let page = snapvisor_abi::PAGE_SIZE;
        let resident_bytes = std::fs::read_to_string(format!("/proc/{pid}/statm"))
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
            .map_or(0, |pages| pages * page);
        let open_fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
        ProcessFigures { resident_bytes, open_fds }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_has_every_family_and_the_process_figures() {
        let metrics = Metrics::new();
        metrics.error("guest");
        let text = metrics.render(&Live { queue_depth: 3, vms_running: 1, warm_vms: 0, ready_shells: 2 });
        for needle in [
            "snapvisor_errors_total{kind=\"guest\"} 1",
            "snapvisor_queue_depth 3",
            "snapvisor_vms_running 1",
            "# TYPE snapvisor_invocation_seconds histogram",
            "snapvisor_resident_memory_bytes ",
            "snapvisor_open_fds ",
        ] {
            assert!(text.contains(needle), "{needle} missing in\n{text}");
        }
        let me = ProcessFigures::now();
        assert!(me.resident_bytes > 0 && me.open_fds > 0, "{me:?}");
    }
}
