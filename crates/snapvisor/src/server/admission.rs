//! Bounded concurrency: VM slots, a short bounded queue, and the work itself on blocking
//! threads.
//!
//! Every request that runs node work takes slots first: one per VM it runs (a SnapStart of
//! N VMs takes N), out of `--max-vms`. A request that finds none free waits in a queue of
//! at most `--queue` requests for at most `--queue-wait-ms`; a full queue or a wait too long
//! answers 429 with Retry-After. The work then runs on tokio's blocking pool, never on the
//! async executor, holding its slots until it ends — even when the client has gone — so the
//! number of VMs at once never exceeds the limit. While the daemon drains, new work is
//! refused (503).

use super::error::ApiError;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The limits and their state.
pub struct Admission {
    slots: Arc<Semaphore>,
    max: u32,
    queue: usize,
    wait: Duration,
    waiting: AtomicUsize,
    draining: AtomicBool,
}

/// A request counted as waiting in the queue until dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Admission {
    /// `max` VM slots; at most `queue` requests wait, each at most `wait`.
    pub fn new(max: u32, queue: usize, wait: Duration) -> Self {
        Admission {
            slots: Arc::new(Semaphore::new(max as usize)),
            max,
            queue,
            wait,
            waiting: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
        }
    }

    /// The most VMs at once.
    pub fn max(&self) -> u32 {
        self.max
    }

    /// Requests waiting for slots.
    pub fn queue_depth(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// VM slots in use.
    pub fn running(&self) -> usize {
        self.max as usize - self.slots.available_permits()
    }

    /// Refuses new work from now on.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether the daemon is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Takes `vms` slots, waiting in the queue if needed.
    async fn acquire(&self, vms: u32) -> Result<OwnedSemaphorePermit, ApiError> {
        if self.is_draining() {
            return Err(ApiError::draining());
        }
        if vms == 0 || vms > self.max {
            return Err(ApiError::bad_request(format!(
                "a request may run 1 to {} VMs at once (the daemon's --max-vms), not {vms}",
                self.max
            )));
        }
        if let Ok(permit) = self.slots.clone().try_acquire_many_owned(vms) {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.queue {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::overloaded(
                format!("all {} VM slots are busy and {} requests are queued; try again later", self.max, self.queue),
                1,
            ));
        }
        let _waiting = Waiting(&self.waiting);
        match tokio::time::timeout(self.wait, self.slots.clone().acquire_many_owned(vms)).await {
            Ok(Ok(permit)) if !self.is_draining() => Ok(permit),
            Ok(_) => Err(ApiError::draining()),
            Err(_) => Err(ApiError::overloaded(
                format!("no VM slot became free within {} ms; try again later", self.wait.as_millis()),
                1,
            )),
        }
    }

    /// Runs `work` on a blocking thread once `vms` slots are free; the slots are held
    /// until `work` returns.
    pub async fn run<T, E>(&self, vms: u32, work: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, ApiError>
    where
        T: Send + 'static,
        E: Into<ApiError> + Send + 'static,
    {
        let permit = self.acquire(vms).await?;
        let task = tokio::task::spawn_blocking(move || {
            let result = work();
            drop(permit);
            result
        });
        match task.await {
            Ok(result) => result.map_err(Into::into),
            Err(e) => Err(ApiError::internal(format!("the request's worker failed: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    #[test]
    fn beyond_the_slots_and_the_queue_requests_are_refused_with_429() {
        runtime().block_on(async {
            let admission = Arc::new(Admission::new(1, 1, Duration::from_secs(5)));
            let (release, hold) = std::sync::mpsc::channel::<()>();
            let busy = {
                let a = admission.clone();
                tokio::spawn(async move { a.run(1, move || hold.recv().map_err(|_| ApiError::internal("x"))).await })
            };
            while admission.running() == 0 {
                tokio::task::yield_now().await;
            }
            let queued = {
                let a = admission.clone();
                tokio::spawn(async move { a.run(1, || Ok::<_, ApiError>(7)).await })
            };
            while admission.queue_depth() == 0 {
                tokio::task::yield_now().await;
            }
            let refused = admission.run(1, || Ok::<_, ApiError>(0)).await.unwrap_err();
            assert_eq!(refused.status(), axum::http::StatusCode::TOO_MANY_REQUESTS);
            let too_big = admission.run(2, || Ok::<_, ApiError>(0)).await.unwrap_err();
            assert_eq!(too_big.status(), axum::http::StatusCode::BAD_REQUEST);
            release.send(()).unwrap();
            busy.await.unwrap().unwrap();
            assert_eq!(queued.await.unwrap().unwrap(), 7);
            assert_eq!((admission.running(), admission.queue_depth()), (0, 0));
            admission.drain();
            let refused = admission.run(1, || Ok::<_, ApiError>(0)).await.unwrap_err();
            assert_eq!(refused.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
        });
    }

    #[test]
    fn a_queued_request_that_waits_too_long_gets_429() {
        runtime().block_on(async {
            let admission = Admission::new(1, 4, Duration::from_millis(50));
            let _held = admission.acquire(1).await.unwrap();
            let refused = admission.run(1, || Ok::<_, ApiError>(0)).await.unwrap_err();
            assert_eq!(refused.status(), axum::http::StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(admission.queue_depth(), 0);
        });
    }
}
