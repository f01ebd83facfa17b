//! What an attempt runs with: the node's executor pool and the executor a
//! task's `uses` resolves to, each with the metric handles it records into,
//! taken once (see [`super::meters`]): the pool's gauges when the engine
//! starts, an executor's duration histogram the first time its `uses` runs.

use std::sync::Arc;

use metrics::{Gauge, Histogram};
use tokio::sync::{AcquireError, Semaphore, SemaphorePermit};

use super::meters::ByName;
use crate::executor::{Executor, Executors};

/// The node's executor pool: how many attempts execute at once, with the
/// gauges `symphony_attempts_queued` (waiting for a slot) and
/// `symphony_attempts_running` (holding one).
#[derive(Debug)]
pub struct Pool {
    slots: Semaphore,
    size: usize,
    queued: Gauge,
    running: Gauge,
}

/// A slot of the pool, given back (and uncounted) on drop.
#[derive(Debug)]
pub struct Slot<'a> {
    _permit: SemaphorePermit<'a>,
    _running: Counted<'a>,
}

/// Counts one in a gauge for as long as it lives: a waiter also when the
/// waiting future is dropped (an attempt killed while queued), a slot also
/// when its attempt is killed mid-execution.
#[derive(Debug)]
struct Counted<'a>(&'a Gauge);

impl<'a> Counted<'a> {
    fn new(gauge: &'a Gauge) -> Counted<'a> {
        gauge.increment(1.0);
        Counted(gauge)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

impl Pool {
    /// A pool of `size` slots (at least one).
    pub fn new(size: usize) -> Pool {
        let size = size.max(1);
        Pool {
            slots: Semaphore::new(size),
            size,
            queued: metrics::gauge!("symphony_attempts_queued"),
            running: metrics::gauge!("symphony_attempts_running"),
        }
    }

    /// Waits for a slot.
    ///
    /// # Errors
    /// When the pool is closed.
    pub async fn acquire(&self) -> Result<Slot<'_>, AcquireError> {
        let permit = {
            let _queued = Counted::new(&self.queued);
            self.slots.acquire().await?
        };
        Ok(Slot {
            _permit: permit,
            _running: Counted::new(&self.running),
        })
    }

    /// Slots held now.
    pub fn busy(&self) -> usize {
        self.size - self.slots.available_permits().min(self.size)
    }
}

/// The executor a `uses` resolves to, with its metric label and the
/// histogram of its attempts' durations
/// (`symphony_attempt_duration_seconds{executor}`).
#[derive(Debug)]
pub struct TaskExecutor {
    /// The executor.
    pub executor: Arc<dyn Executor>,
    /// The task's `uses`, as written.
    pub uses: Arc<str>,
    /// How long its attempts took.
    pub duration: Histogram,
}

/// The node's executors, resolved per `uses` once and kept. Executors are
/// fixed when the engine starts, so an entry never goes stale.
#[derive(Debug)]
pub struct Resolver {
    executors: Executors,
    resolved: ByName<TaskExecutor>,
}

impl Resolver {
    /// Resolves against `executors`.
    pub fn new(executors: Executors) -> Resolver {
        Resolver {
            executors,
            resolved: ByName::default(),
        }
    }

    /// The executor `uses` names, `None` when no executor serves it.
    pub fn resolve(&self, uses: &str) -> Option<Arc<TaskExecutor>> {
        self.resolved.get_or_try_make(uses, || {
            Some(TaskExecutor {
                executor: Arc::clone(self.executors.resolve(uses)?),
                uses: Arc::from(uses),
                duration: metrics::histogram!(
                    "symphony_attempt_duration_seconds",
                    "executor" => uses.to_owned()
                ),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::{AttemptContext, TaskError};
    use crate::value::Value;

    #[derive(Debug)]
    struct Echo;

    #[async_trait::async_trait]
    impl Executor for Echo {
        async fn execute(&self, _: &AttemptContext, input: Value) -> Result<Value, TaskError> {
            Ok(input)
        }
    }

    #[tokio::test]
    async fn slots_are_given_back_on_drop_and_counted_while_held() {
        let pool = Pool::new(2);
        let a = pool.acquire().await.expect("open");
        assert_eq!(pool.busy(), 1);
        let b = pool.acquire().await.expect("open");
        assert_eq!(pool.busy(), 2);
        // A third waits until one is given back.
        let third = pool.acquire();
        tokio::pin!(third);
        assert!(futures::poll!(third.as_mut()).is_pending());
        drop(a);
        let c = third.await.expect("open");
        assert_eq!(pool.busy(), 2);
        drop((b, c));
        assert_eq!(pool.busy(), 0);
    }

    #[test]
    fn a_uses_resolves_once_to_the_same_entry_and_unknown_ones_to_none() {
        let mut executors = Executors::default();
        executors.insert("test/echo", Arc::new(Echo));
        let resolver = Resolver::new(executors);
        let first = resolver.resolve("test/echo").expect("known");
        let again = resolver.resolve("test/echo").expect("known");
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(&*first.uses, "test/echo");
        assert!(resolver.resolve("test/nope").is_none());
    }
}
