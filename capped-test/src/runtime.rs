//! Async limiters: a tokio runtime sized by the caps, and [`TaskLimiter`], which bounds how
//! many tasks run at once.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use capped_model::Percentiles;
use capped_model::caps;

/// A tokio runtime sized by the caps: `async-threads` workers (current-thread in
/// deterministic mode or when the cap is 1), with I/O and time enabled.
///
/// ```
/// let runtime = capped_test::runtime();
/// assert_eq!(runtime.block_on(async { 1 + 1 }), 2);
/// ```
pub fn runtime() -> tokio::runtime::Runtime {
    let caps = caps();
    let threads = caps.async_threads().max(1) as usize;
    let mut builder = if caps.deterministic() || threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads).thread_name("capped-tokio");
        builder
    };
    builder.enable_all().build().unwrap_or_else(|e| {
        panic!("capped-test: cannot build the tokio runtime ({threads} threads): {e}")
    })
}

/// Bounds the number of tasks running at once, and counts them.
///
/// Tasks wait (asynchronously, without holding a worker) for a permit before they start;
/// [`TaskLimiter::stats`] tells how many are active, waiting, spawned and completed, the
/// peak, and percentiles of the time they waited.
///
/// ```
/// use capped_test::TaskLimiter;
///
/// let runtime = capped_test::runtime();
/// let limiter = TaskLimiter::new(2);
/// runtime.block_on(async {
///     let handles: Vec<_> = (0..8).map(|i| limiter.spawn(async move { i * 2 })).collect();
///     for handle in handles {
///         handle.await.unwrap();
///     }
/// });
/// let stats = limiter.stats();
/// assert_eq!(stats.completed, 8);
/// assert!(stats.peak_active <= 2);
/// ```
#[derive(Clone)]
pub struct TaskLimiter {
    inner: Arc<LimiterInner>,
}

struct LimiterInner {
    permits: Semaphore,
    limit: usize,
    spawned: AtomicU64,
    completed: AtomicU64,
    active: AtomicU64,
    waiting: AtomicU64,
    peak_active: AtomicU64,
    waits: Mutex<Vec<Duration>>,
}

/// A snapshot of a [`TaskLimiter`]'s counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimiterStats {
    /// The bound.
    pub limit: usize,
    /// Tasks submitted.
    pub spawned: u64,
    /// Tasks finished.
    pub completed: u64,
    /// Tasks running now.
    pub active: u64,
    /// Tasks waiting for a permit now.
    pub waiting: u64,
    /// The most tasks ever running at once.
    pub peak_active: u64,
    /// How long tasks waited for a permit.
    pub wait: Percentiles,
}

impl TaskLimiter {
    /// A limiter allowing `limit` tasks at once (at least 1).
    pub fn new(limit: usize) -> TaskLimiter {
        let limit = limit.max(1);
        TaskLimiter {
            inner: Arc::new(LimiterInner {
                permits: Semaphore::new(limit),
                limit,
                spawned: AtomicU64::new(0),
                completed: AtomicU64::new(0),
                active: AtomicU64::new(0),
                waiting: AtomicU64::new(0),
                peak_active: AtomicU64::new(0),
                waits: Mutex::new(Vec::new()),
            }),
        }
    }

    /// A limiter bounded by the caps' `async-threads`.
    pub fn from_caps() -> TaskLimiter {
        TaskLimiter::new(caps().async_threads() as usize)
    }

    /// Runs `future` once a permit is free; the permit is held until it completes.
    pub async fn run<F: Future>(&self, future: F) -> F::Output {
        let inner = &self.inner;
        inner.spawned.fetch_add(1, Ordering::Relaxed);
        // Counted as waiting until the permit comes or the future is dropped while it
        // waits (a `select!`, a timeout, an aborted task): a guard, so a cancelled wait
        // never stays counted.
        struct Waiting<'a>(&'a LimiterInner);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.waiting.fetch_sub(1, Ordering::Relaxed);
            }
        }
        inner.waiting.fetch_add(1, Ordering::Relaxed);
        let waiting = Waiting(inner);
        let asked = Instant::now();
        let permit = inner
            .permits
            .acquire()
            .await
            .expect("the limiter's semaphore is never closed");
        drop(waiting);
        inner
            .waits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(asked.elapsed());
        let active = inner.active.fetch_add(1, Ordering::Relaxed) + 1;
        inner.peak_active.fetch_max(active, Ordering::Relaxed);
        struct Done<'a>(&'a LimiterInner);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.active.fetch_sub(1, Ordering::Relaxed);
                self.0.completed.fetch_add(1, Ordering::Relaxed);
            }
        }
        let _done = Done(inner);
        let output = future.await;
        drop(permit);
        output
    }

    /// Spawns `future` on the current tokio runtime, to run once a permit is free.
    pub fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let limiter = self.clone();
        tokio::spawn(async move { limiter.run(future).await })
    }

    /// The counters now.
    pub fn stats(&self) -> LimiterStats {
        let inner = &self.inner;
        LimiterStats {
            limit: inner.limit,
            spawned: inner.spawned.load(Ordering::Relaxed),
            completed: inner.completed.load(Ordering::Relaxed),
            active: inner.active.load(Ordering::Relaxed),
            waiting: inner.waiting.load(Ordering::Relaxed),
            peak_active: inner.peak_active.load(Ordering::Relaxed),
            wait: Percentiles::of(&inner.waits.lock().unwrap_or_else(|p| p.into_inner())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_concurrency_and_counts() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .unwrap();
        let limiter = TaskLimiter::new(3);
        runtime.block_on(async {
            let handles: Vec<_> = (0..20)
                .map(|_| {
                    limiter.spawn(async { tokio::time::sleep(Duration::from_millis(5)).await })
                })
                .collect();
            tokio::time::sleep(Duration::from_millis(1)).await;
            let mid = limiter.stats();
            assert!(mid.active <= 3, "{mid:?}");
            for handle in handles {
                handle.await.unwrap();
            }
        });
        let stats = limiter.stats();
        assert_eq!(
            (stats.spawned, stats.completed, stats.active, stats.waiting),
            (20, 20, 0, 0)
        );
        assert_eq!(stats.peak_active, 3);
        assert_eq!(stats.wait.count, 20);
        assert!(stats.wait.max >= Duration::from_millis(5), "{stats:?}");
    }

    /// Polls `fut` once; whether it is still pending.
    async fn poll_once<F: Future + Unpin>(fut: &mut F) -> bool {
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(std::pin::Pin::new(&mut *fut).poll(cx).is_pending())
        })
        .await
    }

    #[test]
    fn a_wait_cancelled_is_no_longer_counted() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let limiter = TaskLimiter::new(1);
        runtime.block_on(async {
            let mut holder = Box::pin(limiter.run(std::future::pending::<()>()));
            assert!(poll_once(&mut holder).await, "the holder runs forever");
            let mut waiter = Box::pin(limiter.run(async {}));
            assert!(poll_once(&mut waiter).await, "no permit is free");
            assert_eq!((limiter.stats().active, limiter.stats().waiting), (1, 1));
            drop(waiter);
            assert_eq!(
                limiter.stats().waiting,
                0,
                "the cancelled wait still counted"
            );
            drop(holder);
            assert_eq!(limiter.stats().active, 0);
        });
    }
}
