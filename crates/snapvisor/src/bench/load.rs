//! The load experiment: the daemon (`snapvisor serve`, a separate process) on its Unix
//! socket, driven by autocannon — an established load generator nobody here wrote — at fixed
//! client concurrency levels, a bounded number of requests and a bounded time per level;
//! then the leak check: the daemon's resident memory and open files before and after many
//! invocations must come back to their baseline within a stated tolerance.
//!
//! [`run`] takes a [`LoadConfig`] and returns the rows, the leak check and a Markdown
//! section; it writes `load.csv` and `load.md` into the output directory.

use super::autocannon::{self, LoadGen, Summary};
use crate::cli::client::{Client, ClientError};
use crate::node::data::DataDir;
use crate::server::metrics::ProcessFigures;
use hyper::Method;
use serde::Serialize;
use serde_json::json;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Strategies measured by default: warm VMs and every restore strategy.
pub const DEFAULT_STRATEGIES: [&str; 7] = ["warm", "lazy", "uffd", "reap", "faasnap", "cached", "pass"];
/// Growth of the daemon's resident memory the leak check tolerates (allocator caches).
pub const RSS_TOLERANCE_BYTES: u64 = 16 << 20;
/// Growth of its open files the leak check tolerates (none: every VM's files are closed).
pub const FD_TOLERANCE: usize = 0;

/// What to run.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// Data directory (the experiment works in a directory of its own inside it).
    pub data: DataDir,
    /// Output directory.
    pub out: PathBuf,
    /// Function invoked.
    pub function: String,
    /// `warm` and restore strategies.
    pub strategies: Vec<String>,
    /// Client concurrency levels.
    pub concurrency: Vec<u32>,
    /// Requests per strategy and level.
    pub requests: u32,
    /// Longest one strategy and level may run.
    pub max_time: Duration,
    /// Invocations of the leak check (0: skip it).
    pub leak_invocations: u32,
}

/// One strategy at one concurrency level: a row of `load.csv`.
#[derive(Clone, Debug)]
pub struct LoadRow {
    /// Strategy.
    pub strategy: String,
    /// Client connections.
    pub clients: u32,
    /// What autocannon measured (latencies are the client's).
    pub measured: Summary,
}

/// The columns of `load.csv`.
const CSV_HEADER: [&str; 8] = ["strategy", "clients", "ok", "failed", "seconds", "rps", "p50_ms", "p99_ms"];

impl LoadRow {
    fn csv_record(&self) -> [String; 8] {
        let m = &self.measured;
        [
            self.strategy.clone(),
            self.clients.to_string(),
            m.ok.to_string(),
            m.failed.to_string(),
            format!("{:.3}", m.seconds),
            format!("{:.2}", m.rps),
            format!("{:.3}", m.p50_ms),
            format!("{:.3}", m.p99_ms),
        ]
    }
}

/// Resident memory and open files of the daemon around many invocations.
#[derive(Clone, Debug, Serialize)]
pub struct LeakCheck {
    /// Strategy used.
    pub strategy: String,
    /// Invocations between the two readings.
    pub invocations: u64,
    /// Before.
    pub before: Reading,
    /// After.
    pub after: Reading,
    /// Whether both came back within the tolerances.
    pub ok: bool,
}

/// One reading of the daemon process.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Reading {
    /// Resident memory, bytes.
    pub rss_bytes: u64,
    /// Open file descriptors.
    pub fds: usize,
}

/// What the experiment measured.
#[derive(Clone, Debug)]
pub struct LoadResults {
    /// One row per strategy and level.
    pub rows: Vec<LoadRow>,
    /// The leak check, if run.
    pub leak: Option<LeakCheck>,
    /// The Markdown section (also in `load.md`).
    pub markdown: String,
}

/// Why the experiment failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The load generator could not be installed or run.
    #[error(transparent)]
    LoadGen(#[from] autocannon::LoadGenError),
    /// A request to set things up failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The daemon did not start, or exited badly.
    #[error("the daemon: {0}")]
    Daemon(String),
    /// Files could not be written.
    #[error("{}: cannot write", .0.display())]
    Io(PathBuf, #[source] std::io::Error),
    /// The node failed while preparing the pool.
    #[error(transparent)]
    Node(#[from] crate::node::NodeError),
    /// CSV output failed.
    #[error("cannot write load.csv")]
    Csv(#[from] csv::Error),
}

/// The daemon process, stopped (SIGTERM) when dropped.
struct Daemon {
    child: Child,
    socket: PathBuf,
}

impl Daemon {
    fn start(data: &Path, pool: Option<&Path>, max_vms: u32) -> Result<Self, LoadError> {
        let socket = data.join("snapvisor.sock");
        let exe = std::env::current_exe().map_err(|e| LoadError::Daemon(e.to_string()))?;
        let mut cmd = Command::new(exe);
        cmd.arg("--data-dir").arg(data).args(["serve", "--max-vms", &max_vms.to_string(), "--queue", "256"]);
        cmd.args(["--warm-max", "8", "--warm-idle-secs", "3600"]);
        if let Some(pool) = pool {
            cmd.arg("--pool").arg(pool);
        }
        let child =
            cmd.env("RUST_LOG", "warn").stdin(Stdio::null()).spawn().map_err(|e| LoadError::Daemon(e.to_string()))?;
        let daemon = Daemon { child, socket };
        let client = Client::new(&daemon.socket).map_err(|e| LoadError::Daemon(e.to_string()))?;
        let start = Instant::now();
        while client.call(Method::GET, "/healthz", None).is_err() {
            if start.elapsed() > Duration::from_secs(20) {
                return Err(LoadError::Daemon("did not answer /healthz within 20 s".into()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(daemon)
    }

    fn reading(&self) -> Reading {
        let p = ProcessFigures::of(&self.child.id().to_string());
        Reading { rss_bytes: p.resident_bytes, fds: p.open_fds }
    }

    /// SIGTERM, then its exit status must be 0.
    fn stop(mut self) -> Result<(), LoadError> {
        // SAFETY: kill(2) on the child this value started and has not reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let status = self.child.wait().map_err(|e| LoadError::Daemon(e.to_string()))?;
        if !status.success() {
            return Err(LoadError::Daemon(format!("exited with {status} after SIGTERM")));
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Removes the experiment's directories when dropped.
struct Scratch(Vec<PathBuf>);

impl Drop for Scratch {
    fn drop(&mut self) {
        for dir in &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Runs the experiment.
pub fn run(config: &LoadConfig) -> Result<LoadResults, LoadError> {
    let tool = autocannon::ensure(&autocannon::tools_dir())?;
    let work = config.data.root().join(format!("load-{}", std::process::id()));
    let pool_dir = Path::new("/dev/shm").join(format!("snapvisor-load-{}", std::process::id()));
    let _scratch = Scratch(vec![work.clone(), pool_dir.clone()]);
    let uses_pool = config.strategies.iter().any(|s| s == "pass");
    let pool = pool_dir.join("pool");
    if uses_pool {
        std::fs::create_dir_all(&pool_dir).map_err(|e| LoadError::Io(pool_dir.clone(), e))?;
        crate::node::Node::new(DataDir::new(&work)).pool_init(
            Some(&pool),
            512 << 20,
            0,
            snapvisor_vmm::pool::medium::EmulatedKind::Auto,
        )?;
    }
    let max_vms = config.concurrency.iter().copied().max().unwrap_or(1);
    let daemon = Daemon::start(&work, uses_pool.then_some(pool.as_path()), max_vms)?;
    let client = Client::new(&daemon.socket).map_err(|e| LoadError::Daemon(e.to_string()))?;
    let f = &config.function;
    client.call(Method::POST, "/snapshots", Some(&json!({ "function": f })))?;
    client.call(Method::POST, &format!("/snapshots/{f}/record"), Some(&json!({})))?;
    if uses_pool {
        client.call(Method::POST, &format!("/snapshots/{f}/import"), Some(&json!({})))?;
    }
    let mut rows = Vec::new();
    for strategy in &config.strategies {
        let body = json!({ "function": f, "strategy": strategy }).to_string();
        for &clients in &config.concurrency {
            // Untimed warm-up: warm VMs booted, files in the page cache.
            tool.post(&daemon.socket, "/invocations", &body, 2 * clients, clients, config.max_time)?;
            let s = tool.post(&daemon.socket, "/invocations", &body, config.requests, clients, config.max_time)?;
            eprintln!("{strategy} x{clients}: {:.1} req/s, p50 {:.2} ms, p99 {:.2} ms", s.rps, s.p50_ms, s.p99_ms);
            rows.push(LoadRow { strategy: strategy.clone(), clients, measured: s });
        }
    }
    let leak = match config.strategies.iter().find(|s| *s != "warm") {
        Some(strategy) if config.leak_invocations > 0 => Some(leak_check(&tool, &daemon, f, strategy, config)?),
        _ => None,
    };
    daemon.stop()?;
    let markdown = markdown(config, &tool, &rows, leak.as_ref(), max_vms);
    std::fs::create_dir_all(&config.out).map_err(|e| LoadError::Io(config.out.clone(), e))?;
    let mut csv = csv::Writer::from_path(config.out.join("load.csv"))?;
    csv.write_record(CSV_HEADER)?;
    for r in &rows {
        csv.write_record(r.csv_record())?;
    }
    csv.flush().map_err(|e| LoadError::Io(config.out.join("load.csv"), e))?;
    std::fs::write(config.out.join("load.md"), &markdown).map_err(|e| LoadError::Io(config.out.join("load.md"), e))?;
    Ok(LoadResults { rows, leak, markdown })
}

fn leak_check(
    tool: &LoadGen,
    daemon: &Daemon,
    function: &str,
    strategy: &str,
    config: &LoadConfig,
) -> Result<LeakCheck, LoadError> {
    let body = json!({ "function": function, "strategy": strategy }).to_string();
    let clients = 2;
    // Settle allocator arenas and caches first, so the baseline is a steady state.
    tool.post(&daemon.socket, "/invocations", &body, 200, clients, config.max_time)?;
    std::thread::sleep(Duration::from_millis(500));
    let before = daemon.reading();
    let limit = config.max_time.max(Duration::from_millis(u64::from(config.leak_invocations) * 100));
    let s = tool.post(&daemon.socket, "/invocations", &body, config.leak_invocations, clients, limit)?;
    std::thread::sleep(Duration::from_millis(500));
    let after = daemon.reading();
    let ok = s.failed == 0
        && after.rss_bytes <= before.rss_bytes + RSS_TOLERANCE_BYTES
        && after.fds <= before.fds + FD_TOLERANCE;
    Ok(LeakCheck { strategy: strategy.into(), invocations: s.ok + s.failed, before, after, ok })
}

fn markdown(config: &LoadConfig, tool: &LoadGen, rows: &[LoadRow], leak: Option<&LeakCheck>, max_vms: u32) -> String {
    let mut md = String::from("## The daemon under load\n\n");
    let installed = tool.install_secs.map_or_else(
        || format!("found at `{}`", tool.path.display()),
        |s| format!("installed into `{}` by this run with npm in {s:.0} s", tool.path.display()),
    );
    let _ = writeln!(
        md,
        "- load generator: autocannon {} ({installed}), over the daemon's Unix socket",
        autocannon::VERSION
    );
    let _ = writeln!(
        md,
        "- `POST /invocations` of `{}`; daemon `--max-vms {max_vms}`; {} requests per row after an untimed warm-up, each row bounded to {} s",
        config.function,
        config.requests,
        config.max_time.as_secs()
    );
    md.push_str(
        "- latencies are the client's (HTTP round trip, restore and invocation); measured on a noisy shared host\n\n",
    );
    md.push_str("| strategy | clients | ok | failed | req/s | p50 ms | p99 ms |\n|---|---|---|---|---|---|---|\n");
    for r in rows {
        let m = &r.measured;
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {:.1} | {:.2} | {:.2} |",
            r.strategy, r.clients, m.ok, m.failed, m.rps, m.p50_ms, m.p99_ms
        );
    }
    if let Some(l) = leak {
        let mib = |b: u64| b as f64 / f64::from(1u32 << 20);
        let _ = writeln!(
            md,
            "\nLeak check, {} `{}` invocations: daemon RSS {:.1} → {:.1} MiB (tolerance +{} MiB), open files {} → {} (tolerance +{}): **{}**",
            l.invocations,
            l.strategy,
            mib(l.before.rss_bytes),
            mib(l.after.rss_bytes),
            RSS_TOLERANCE_BYTES >> 20,
            l.before.fds,
            l.after.fds,
            FD_TOLERANCE,
            if l.ok { "back to baseline" } else { "NOT back to baseline" }
        );
    }
    md
}
