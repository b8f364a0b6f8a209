//! oha, the HTTP load generator the load experiment drives the daemon with: found in the
//! project's tool directory, or installed there from crates.io with `cargo install --locked`
//! (nothing is assumed pre-installed); one bounded run, parsed from its JSON summary.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The oha release installed (pinned, so results stay comparable).
pub const VERSION: &str = "1.16.0";

/// Why oha could not be had or run.
#[derive(Debug, thiserror::Error)]
pub enum OhaError {
    /// `cargo install` failed.
    #[error("`cargo install oha --version {VERSION} --locked --root {}` failed ({status})", .root.display())]
    Install {
        /// Tool root.
        root: PathBuf,
        /// Its exit status.
        status: std::process::ExitStatus,
    },
    /// oha could not be started or waited for.
    #[error("{}: cannot run", .0.display())]
    Spawn(PathBuf, #[source] std::io::Error),
    /// oha ran past its time bound and was killed.
    #[error("oha did not finish within {0:?}")]
    Timeout(Duration),
    /// oha failed.
    #[error("oha failed ({status}): {stderr}")]
    Failed {
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed.
        stderr: String,
    },
    /// Its output is not the JSON summary expected.
    #[error("oha's JSON summary could not be read")]
    Output(#[source] serde_json::Error),
}

/// oha, ready to run.
#[derive(Clone, Debug)]
pub struct Oha {
    /// The binary.
    pub path: PathBuf,
    /// Seconds `cargo install` took, if this run installed it.
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

/// oha from `root/bin`, installed there first when missing (which takes minutes: it says so).
pub fn ensure(root: &Path) -> Result<Oha, OhaError> {
    let path = root.join("bin").join("oha");
    if path.is_file() {
        return Ok(Oha { path, install_secs: None });
    }
    eprintln!(
        "oha (HTTP load generator) not found in {}: installing oha {VERSION} from crates.io with cargo (several minutes)",
        root.display()
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let start = Instant::now();
    let status = Command::new(cargo)
        .args(["install", "oha", "--version", VERSION, "--locked", "--root"])
        .arg(root)
        .stdout(Stdio::null())
        .status()
        .map_err(|e| OhaError::Spawn(PathBuf::from("cargo"), e))?;
    if !status.success() {
        return Err(OhaError::Install { root: root.to_path_buf(), status });
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!("installed oha in {secs:.0} s");
    Ok(Oha { path, install_secs: Some(secs) })
}

/// What one oha run measured.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Requests answered 2xx.
    pub ok: u64,
    /// Requests answered otherwise, or failed.
    pub failed: u64,
    /// Wall time of the run, s.
    pub seconds: f64,
    /// Requests per second.
    pub rps: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    summary: ReportSummary,
    latency_percentiles: BTreeMap<String, Option<f64>>,
    status_code_distribution: BTreeMap<String, u64>,
    error_distribution: BTreeMap<String, u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReportSummary {
    total: f64,
    requests_per_sec: f64,
}

impl Oha {
    /// POSTs `body` to `http://localhost{path}` over `socket`, `requests` times from
    /// `clients` connections; killed after `limit`.
    pub fn post(
        &self,
        socket: &Path,
        path: &str,
        body: &str,
        requests: u32,
        clients: u32,
        limit: Duration,
    ) -> Result<Summary, OhaError> {
        let spawn = |e| OhaError::Spawn(self.path.clone(), e);
        let mut child = Command::new(&self.path)
            .args(["--no-tui", "--output-format", "json", "-m", "POST", "-T", "application/json", "-d", body])
            .args(["-n", &requests.to_string(), "-c", &clients.to_string(), "--unix-socket"])
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
                return Err(OhaError::Timeout(limit));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().map_err(spawn)?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr).chars().take(2000).collect();
            return Err(OhaError::Failed { status: out.status, stderr });
        }
        parse(&out.stdout)
    }
}

fn parse(json: &[u8]) -> Result<Summary, OhaError> {
    let report: Report = serde_json::from_slice(json).map_err(OhaError::Output)?;
    let ms = |key: &str| report.latency_percentiles.get(key).copied().flatten().unwrap_or(0.0) * 1e3;
    let ok = report.status_code_distribution.iter().filter(|(code, _)| code.starts_with('2')).map(|(_, n)| n).sum();
    let other: u64 =
        report.status_code_distribution.iter().filter(|(code, _)| !code.starts_with('2')).map(|(_, n)| n).sum();
    Ok(Summary {
        ok,
        failed: other + report.error_distribution.values().sum::<u64>(),
        seconds: report.summary.total,
        rps: report.summary.requests_per_sec,
        p50_ms: ms("p50"),
        p99_ms: ms("p99"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_summary_is_read() {
        let json = br#"{"summary":{"successRate":1.0,"total":2.0,"slowest":0.1,"fastest":0.01,"average":0.02,
            "requestsPerSec":100.0,"totalData":10,"sizePerRequest":1,"sizePerSec":5.0},
            "latencyPercentiles":{"p10":0.01,"p50":0.02,"p99":0.09,"p99.99":null},
            "statusCodeDistribution":{"200":198,"429":2},"errorDistribution":{"connection closed":1}}"#;
        let s = parse(json).unwrap();
        assert_eq!((s.ok, s.failed), (198, 3));
        assert!((s.p50_ms - 20.0).abs() < 1e-9 && (s.p99_ms - 90.0).abs() < 1e-9 && s.rps == 100.0);
    }
}
