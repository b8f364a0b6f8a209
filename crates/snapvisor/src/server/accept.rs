//! Serving connections (hyper), bounded: at most [`MAX_CONNECTIONS`] open per listener
//! (beyond them, new connections wait in the kernel's backlog), each of which must send
//! its request head within [`HEADER_TIMEOUT`]; on stop, the listener closes at once and
//! open connections finish their requests (hyper's graceful shutdown).

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{watch, Semaphore};

/// Connections served at once per listener.
pub const MAX_CONNECTIONS: usize = 512;
/// Longest a connection may take to send a request's head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// A listener of the daemon: Unix or TCP.
pub trait Accept: Send + 'static {
    /// A connection.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// The next connection.
    fn accept(&self) -> impl std::future::Future<Output = std::io::Result<Self::Io>> + Send;
}

impl Accept for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept(&self) -> std::io::Result<Self::Io> {
        Ok(tokio::net::UnixListener::accept(self).await?.0)
    }
}

impl Accept for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept(&self) -> std::io::Result<Self::Io> {
        Ok(tokio::net::TcpListener::accept(self).await?.0)
    }
}

/// Serves `app` on `listener` until `stop` turns true, then waits for open connections
/// to finish (the caller bounds that wait).
pub async fn serve(listener: impl Accept, app: Router, mut stop: watch::Receiver<bool>) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let slot = tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let io = tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break,
            io = listener.accept() => io,
        };
        let io = match io {
            Ok(io) => io,
            Err(e) => {
                // Out of descriptors, or the peer gave up: wait a little, go on.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .serve_connection(TokioIo::new(io), TowerToHyperService::new(app.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
