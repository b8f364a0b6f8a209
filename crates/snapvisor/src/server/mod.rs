//! The node daemon (`snapvisor serve`): the second face over the node API, an HTTP/1.1
//! JSON API (axum on tokio) on a Unix socket and optionally on TCP with a bearer token.
//!
//! - [`routes`]: the resources; [`error`]: the one error model; [`admission`]: bounded
//!   VM slots, the bounded queue and the blocking threads that run node work; [`accept`]:
//!   bounded connections with a request-head timeout, and the graceful stop;
//!   [`metrics`]: `/metrics`; [`listen`]: the socket and the daemon lock; [`auth`]: TCP's
//!   bearer token. `openapi.yaml` describes the API (served at `/openapi.yaml`).
//!
//! Life cycle: take the data directory's lock, sweep what killed processes left there,
//! bind, serve. On SIGTERM or SIGINT: refuse new work (503), stop accepting connections,
//! let in-flight requests finish (at most the guest timeout plus a margin), stop the warm
//! VMs, remove the socket, exit 0. After `kill -9` nothing needs undoing: the lock and the
//! pool leases are released by the kernel, temporary files are swept at the next start,
//! and the daemon mounts nothing and reserves no huge pages of its own.

mod accept;
mod admission;
mod auth;
mod error;
mod listen;
pub mod metrics;
mod routes;

pub use auth::{Token, TokenError};
pub use listen::ListenError;
pub use routes::OPENAPI;

use crate::node::warm::WarmSet;
use crate::node::Node;
use admission::Admission;
use metrics::Metrics;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How the daemon runs.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The Unix socket.
    pub socket: PathBuf,
    /// TCP address to listen on as well (needs `token`).
    pub tcp: Option<SocketAddr>,
    /// The bearer token TCP requests must carry.
    pub token: Option<Token>,
    /// VMs at once over all requests.
    pub max_vms: u32,
    /// Requests that may wait for VM slots.
    pub queue: usize,
    /// Longest wait in the queue.
    pub queue_wait: Duration,
    /// Longest guest run (the default of every request, and their cap).
    pub timeout: Duration,
    /// Largest image upload, bytes.
    pub upload_bytes: usize,
    /// Warm VMs kept at most.
    pub warm_max: usize,
    /// Idle time after which a warm VM is stopped.
    pub warm_idle: Duration,
    /// The pool for `pass` and imports [default: the data directory's].
    pub pool: Option<PathBuf>,
}

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// It could not listen.
    #[error(transparent)]
    Listen(#[from] ListenError),
    /// TCP without a usable token.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The TCP address could not be bound.
    #[error("{addr}: cannot listen")]
    Tcp {
        /// The address.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The runtime or a server failed.
    #[error("the server failed")]
    Io(#[from] std::io::Error),
}

/// Request limits the handlers apply.
pub(crate) struct Limits {
    timeout: Duration,
    upload_bytes: usize,
    pool: Option<PathBuf>,
}

/// What every handler shares.
pub(crate) struct AppState {
    node: Arc<Node>,
    warm: WarmSet,
    warm_max: usize,
    admission: Admission,
    metrics: Metrics,
    limits: Limits,
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn serve(node: Node, config: ServeConfig) -> Result<(), ServeError> {
    if config.tcp.is_some() && config.token.is_none() {
        return Err(TokenError::Missing.into());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(config.max_vms as usize + 4)
        .thread_name("snapvisor-serve")
        .enable_all()
        .build()?;
    let drain = config.timeout + Duration::from_secs(5);
    let result = runtime.block_on(run(node, config, drain));
    runtime.shutdown_timeout(drain);
    result
}

async fn run(node: Node, config: ServeConfig, drain: Duration) -> Result<(), ServeError> {
    let _lock = listen::lock(&node.data().lock_file())?;
    for path in node.sweep() {
        tracing::info!(path = %path.display(), "removed what a killed process left half-done");
    }
    let unix = tokio::net::UnixListener::from_std(listen::unix(&config.socket)?)?;
    let tcp = match config.tcp {
        Some(addr) => {
            Some(tokio::net::TcpListener::bind(addr).await.map_err(|source| ServeError::Tcp { addr, source })?)
        }
        None => None,
    };
    let state = Arc::new(AppState {
        node: Arc::new(node),
        warm: WarmSet::new(config.warm_max, config.warm_idle),
        warm_max: config.warm_max,
        admission: Admission::new(config.max_vms, config.queue, config.queue_wait),
        metrics: Metrics::new(),
        limits: Limits { timeout: config.timeout, upload_bytes: config.upload_bytes, pool: config.pool.clone() },
    });
    let app = routes::router(state.clone());
    let (stop, stopped) = watch::channel(false);
    let signals = tokio::spawn(wait_for_signal(state.clone(), stop));
    tracing::info!(socket = %config.socket.display(), tcp = ?config.tcp, max_vms = config.max_vms, "listening");
    let served = async {
        match (tcp, &config.token) {
            (Some(tcp), Some(token)) => {
                let guarded = app.clone().layer(axum::middleware::from_fn_with_state(token.clone(), auth::require));
                tokio::join!(accept::serve(unix, app, stopped.clone()), accept::serve(tcp, guarded, stopped.clone()));
            }
            _ => accept::serve(unix, app, stopped.clone()).await,
        }
    };
    // The drain is bounded: once stopping, in-flight requests get `drain` to finish.
    let mut stopping = stopped.clone();
    let bounded = async {
        let _ = stopping.wait_for(|stop| *stop).await;
        tokio::time::sleep(drain).await;
    };
    tokio::select! {
        () = served => {}
        () = bounded => {
            tracing::warn!(drain_ms = drain.as_millis() as u64, "in-flight requests did not finish in time; stopping anyway");
        }
    }
    signals.abort();
    state.warm.close();
    let _ = std::fs::remove_file(&config.socket);
    // In-flight work ended with its connections; what a vanished client left running is
    // waited for by the runtime's shutdown (at most `drain`).
    tracing::info!(drain_ms = drain.as_millis() as u64, running_vms = state.admission.running(), "stopped");
    Ok(())
}

/// Waits for SIGTERM or SIGINT, then refuses new work and tells the servers to stop.
async fn wait_for_signal(state: Arc<AppState>, stop: watch::Sender<bool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install the SIGTERM/SIGINT handlers; stop the daemon with SIGKILL");
        // Keep `stop` alive: dropping it would read as a stop.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining"),
        _ = int.recv() => tracing::info!("SIGINT: draining"),
    }
    state.admission.drain();
    let _ = stop.send(true);
}
