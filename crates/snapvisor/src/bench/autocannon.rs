//! autocannon, the HTTP load generator the load experiment drives the daemon with (an
//! established tool from the npm registry, speaking Unix sockets): found in the project's
//! tool directory, or installed there with npm when missing (nothing is assumed installed but
//! the machine's Node.js; it takes seconds), then one bounded run, read from its JSON report.
//! (oha, the issue's example, builds from source with cargo in 7–15 minutes on this host,
//! which does not fit the benchmark's time.)

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The autocannon release installed (pinned, so results stay comparable).
pub const VERSION: &str = "8.0.0";

/// Why autocannon could not be had or run.
#[derive(Debug, thiserror::Error)]
pub enum LoadGenError {
    /// `npm install` failed (or npm is missing).
    #[error("`npm install autocannon@{VERSION} --prefix {}` failed: {reason}", .root.display())]
    Install {
        /// Tool directory.
        root: PathBuf,
        /// What happened.
        reason: String,
    },
    /// autocannon could not be started or waited for.
    #[error("{}: cannot run", .0.display())]
    Spawn(PathBuf, #[source] std::io::Error),
    /// It ran past its time bound and was killed.
    #[error("autocannon did not finish within {0:?}")]
    Timeout(Duration),
    /// It failed.
    #[error("autocannon failed ({status}): {stderr}")]
    Failed {
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed.
        stderr: String,
    },
    /// Its output is not the JSON report expected.
    #[error("autocannon's JSON report could not be read")]
    Output(#[source] serde_json::Error),
}

/// autocannon, ready to run.
#[derive(Clone, Debug)]
pub struct LoadGen {
    /// The program.
    pub path: PathBuf,
    /// Seconds the install took, if this run installed it.
    pub install_secs: Option<f64>,
}

/// The project's tool directory: `target/tools` next to the running binary's build
/// directory (`SNAPVISOR_TOOLS` overrides it).
pub fn tools_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SNAPVISOR_TOOLS") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let target = exe.ancestors().find(|p| p.file_name().is_some_and(|n| n == "target"));
    target.map_or_else(|| PathBuf::from("target"), Path::to_path_buf).join("tools")
}

/// autocannon from `root`, installed there first when missing.
pub fn ensure(root: &Path) -> Result<LoadGen, LoadGenError> {
    let path = root.join("node_modules").join(".bin").join("autocannon");
    if path.is_file() {
        return Ok(LoadGen { path, install_secs: None });
    }
    eprintln!("autocannon (HTTP load generator) not found in {}: installing {VERSION} with npm", root.display());
    let install = |reason: String| LoadGenError::Install { root: root.to_path_buf(), reason };
    std::fs::create_dir_all(root).map_err(|e| install(e.to_string()))?;
    let start = Instant::now();
    let out = Command::new("npm")
        .args(["install", &format!("autocannon@{VERSION}"), "--no-audit", "--no-fund", "--silent", "--prefix"])
        .arg(root)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| install(format!("npm: {e}")))?;
    if !out.status.success() || !path.is_file() {
        return Err(install(String::from_utf8_lossy(&out.stderr).chars().take(1000).collect()));
    }
    Ok(LoadGen { path, install_secs: Some(start.elapsed().as_secs_f64()) })
}

/// What one run measured.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Requests answered 2xx.
    pub ok: u64,
    /// Requests answered otherwise, timed out, or failed.
    pub failed: u64,
    /// Wall time of the run, s, as autocannon reports it (in whole ticks of 1 s when it
    /// runs a fixed number of requests).
    pub seconds: f64,
    /// Requests per second: `clients` connections each sending its next request as soon as
    /// the last one is answered, so `clients` / mean latency (Little's law). Computed from
    /// the latency because autocannon's duration, in whole seconds, would cap a run of
    /// 40 requests at 40 per second.
    pub rps: f64,
    /// Median latency, ms (autocannon resolves whole milliseconds).
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
}

#[derive(Deserialize)]
struct Report {
    latency: Latency,
    duration: f64,
    errors: u64,
    timeouts: u64,
    non2xx: u64,
    #[serde(rename = "2xx")]
    ok: u64,
}

#[derive(Deserialize)]
struct Latency {
    average: f64,
    p50: f64,
    p99: f64,
}

impl LoadGen {
    /// POSTs `body` (JSON) to `http://localhost{path}` over `socket`, `requests` times from
    /// `clients` connections; killed after `limit`.
    pub fn post(
        &self,
        socket: &Path,
        path: &str,
        body: &str,
        requests: u32,
        clients: u32,
        limit: Duration,
    ) -> Result<Summary, LoadGenError> {
        let spawn = |e| LoadGenError::Spawn(self.path.clone(), e);
        let mut child = Command::new(&self.path)
            .args(["-j", "-n", "-m", "POST", "-H", "Content-Type=application/json", "-b", body])
            .args(["-a", &requests.to_string(), "-c", &clients.to_string(), "-t", "120", "-S"])
            .arg(socket)
            .arg(format!("http://localhost{path}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn)?;
        let start = Instant::now();
        while child.try_wait().map_err(spawn)?.is_none() {
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                return Err(LoadGenError::Timeout(limit));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().map_err(spawn)?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr).chars().take(2000).collect();
            return Err(LoadGenError::Failed { status: out.status, stderr });
        }
        parse(&out.stdout, clients)
    }
}

fn parse(json: &[u8], clients: u32) -> Result<Summary, LoadGenError> {
    let r: Report = serde_json::from_slice(json).map_err(LoadGenError::Output)?;
    let total = r.ok + r.non2xx;
    Ok(Summary {
        ok: r.ok,
        failed: r.non2xx + r.errors + r.timeouts,
        seconds: r.duration,
        rps: if total > 0 && r.latency.average > 0.0 { f64::from(clients) * 1e3 / r.latency.average } else { 0.0 },
        p50_ms: r.latency.p50,
        p99_ms: r.latency.p99,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_report_is_read() {
        let json = br#"{"latency":{"average":5.8,"p50":4,"p99":49,"max":49},"requests":{"total":200},
            "duration":2.0,"errors":1,"timeouts":0,"non2xx":2,"2xx":198}"#;
        let s = parse(json, 2).unwrap();
        assert_eq!((s.ok, s.failed), (198, 3));
        assert!(s.p50_ms == 4.0 && s.p99_ms == 49.0 && s.seconds == 2.0);
        assert!((s.rps - 2e3 / 5.8).abs() < 1e-9, "two connections at 5.8 ms each: {}", s.rps);
    }
}
