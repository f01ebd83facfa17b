//! Metric handles taken once and kept, for what is recorded at request
//! rates.
//!
//! A metric macro (`metrics::counter!` and friends) builds the metric's key
//! (label strings, a hash) and looks it up in the recorder's registry on
//! every call: a few hundred nanoseconds and allocations, several times per
//! pipeline invocation. The handles it returns are cheap to clone and record
//! into the same series, so the engine takes them once per label value and
//! keeps them here.

use std::sync::{Arc, RwLock};

use metrics::Counter;
use rustc_hash::FxHashMap;

use crate::store::RunStatus;

/// Values made once per name and shared after (per `uses`, per workflow).
/// Entries are never evicted: there is one per distinct name the node has
/// run, as many as the series the metrics registry keeps for them anyway.
#[derive(Debug)]
pub struct ByName<T> {
    made: RwLock<FxHashMap<String, Arc<T>>>,
}

impl<T> Default for ByName<T> {
    fn default() -> Self {
        ByName {
            made: RwLock::new(FxHashMap::default()),
        }
    }
}

impl<T> ByName<T> {
    /// The value for `name`, made by `make` the first time.
    pub fn get_or_make(&self, name: &str, make: impl FnOnce() -> T) -> Arc<T> {
        self.find(name).unwrap_or_else(|| self.keep(name, make()))
    }

    /// The value for `name`, made by `make` the first time; `None` from
    /// `make` is not kept.
    pub fn get_or_try_make(&self, name: &str, make: impl FnOnce() -> Option<T>) -> Option<Arc<T>> {
        self.find(name).or_else(|| Some(self.keep(name, make()?)))
    }

    fn find(&self, name: &str) -> Option<Arc<T>> {
        let made = self.made.read().unwrap_or_else(|p| p.into_inner());
        made.get(name).map(Arc::clone)
    }

    /// Keeps `value` unless another caller kept one first; returns the kept one.
    fn keep(&self, name: &str, value: T) -> Arc<T> {
        let mut made = self.made.write().unwrap_or_else(|p| p.into_inner());
        Arc::clone(
            made.entry(name.to_owned())
                .or_insert_with(|| Arc::new(value)),
        )
    }
}

/// The counters a run of one workflow records into:
/// `symphony_attempts_total{status, workflow}` and
/// `symphony_runs_total{status, workflow}`.
#[derive(Debug)]
pub struct WorkflowMeters {
    attempts_succeeded: Counter,
    attempts_failed: Counter,
    runs_succeeded: Counter,
    runs_failed: Counter,
    runs_cancelled: Counter,
}

impl WorkflowMeters {
    /// The counters of workflow `name`.
    pub fn new(name: &str) -> WorkflowMeters {
        let attempts = |status: &'static str| metrics::counter!("symphony_attempts_total", "status" => status, "workflow" => name.to_owned());
        let runs = |status: RunStatus| metrics::counter!("symphony_runs_total", "status" => status.as_str(), "workflow" => name.to_owned());
        WorkflowMeters {
            attempts_succeeded: attempts("succeeded"),
            attempts_failed: attempts("failed"),
            runs_succeeded: runs(RunStatus::Succeeded),
            runs_failed: runs(RunStatus::Failed),
            runs_cancelled: runs(RunStatus::Cancelled),
        }
    }

    /// Counts a finished attempt.
    pub fn attempt(&self, succeeded: bool) {
        if succeeded {
            self.attempts_succeeded.increment(1);
        } else {
            self.attempts_failed.increment(1);
        }
    }

    /// Counts a run that ended with `status` (a final one).
    pub fn run(&self, status: RunStatus) {
        match status {
            RunStatus::Succeeded => self.runs_succeeded.increment(1),
            RunStatus::Failed => self.runs_failed.increment(1),
            RunStatus::Cancelled => self.runs_cancelled.increment(1),
            RunStatus::Running => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_made_once_and_a_refusal_is_not_kept() {
        let cache = ByName::<u32>::default();
        let mut made = 0;
        let first = cache.get_or_make("a", || {
            made += 1;
            1
        });
        let again = cache.get_or_make("a", || {
            made += 1;
            2
        });
        assert_eq!(made, 1);
        assert!(Arc::ptr_eq(&first, &again));
        assert!(cache.get_or_try_make("b", || None).is_none());
        assert_eq!(cache.get_or_try_make("b", || Some(3)).as_deref(), Some(&3));
        assert_eq!(*cache.get_or_make("b", || 4), 3);
    }
}
