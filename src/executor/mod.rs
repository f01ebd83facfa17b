//! Task executors: what actually runs an attempt.
//!
//! Every kind implements [`Executor`]; [`Executors`] maps a task's `uses` to
//! one. Executors never read the run store: everything an attempt needs
//! arrives in its [`AttemptContext`] and input value.
//!
//! Cancellation is by drop: the engine stops an attempt (timeout, run
//! cancelled) by dropping the future returned by [`Executor::execute`], so an
//! executor must release what it holds on drop (a subprocess is spawned with
//! `kill_on_drop`).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::value::Value;

/// What an attempt knows about itself.
#[derive(Debug, Clone)]
pub struct AttemptContext {
    /// The run.
    pub run_id: String,
    /// The task id.
    pub task_id: String,
    /// Index of the `for_each` item, if any.
    pub item: Option<usize>,
    /// Attempt number, from 1; also the fencing token.
    pub attempt: u32,
    /// `RUN_ID/TASK_ID[/ITEM_INDEX]`, the same for every attempt.
    pub idempotency_key: String,
}

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, bincode::Encode, bincode::Decode)]
#[error("{class}: {message}")]
pub struct TaskError {
    /// Error class (`exit`, `http`, `timeout`, `panic`, `node_lost`, …);
    /// retry policies name classes in `non_retryable`.
    pub class: String,
    /// Human message.
    pub message: String,
    /// Whether the executor considers a retry useful. Combined with the
    /// task's policy: an error is retried only if both agree.
    pub retryable: bool,
}

impl TaskError {
    /// A retryable error of `class`.
    pub fn retryable(class: impl Into<String>, message: impl Into<String>) -> Self {
        TaskError {
            class: class.into(),
            message: message.into(),
            retryable: true,
        }
    }

    /// An error of `class` that no retry can fix.
    pub fn fatal(class: impl Into<String>, message: impl Into<String>) -> Self {
        TaskError {
            class: class.into(),
            message: message.into(),
            retryable: false,
        }
    }

    /// The task's `with` is wrong for this executor (never retried).
    pub fn bad_input(message: impl Into<String>) -> Self {
        TaskError::fatal("input", message)
    }
}

/// A kind of task.
#[async_trait]
pub trait Executor: Send + Sync + std::fmt::Debug + 'static {
    /// Runs one attempt with its rendered `with` value.
    ///
    /// # Errors
    /// A [`TaskError`] whose class drives the retry policy.
    async fn execute(&self, ctx: &AttemptContext, input: Value) -> Result<Value, TaskError>;
}

/// The executors a node offers, by `uses` name.
#[derive(Debug, Clone, Default)]
pub struct Executors {
    by_name: BTreeMap<String, Arc<dyn Executor>>,
}

impl Executors {
    /// An empty set.
    pub fn empty() -> Self {
        Executors::default()
    }

    /// Adds (or replaces) an executor under `name`.
    pub fn insert(&mut self, name: impl Into<String>, executor: Arc<dyn Executor>) {
        self.by_name.insert(name.into(), executor);
    }

    /// The executor a task's `uses` names.
    pub fn resolve(&self, uses: &str) -> Option<&Arc<dyn Executor>> {
        self.by_name.get(uses)
    }

    /// Whether `uses` names a known executor.
    pub fn knows(&self, uses: &str) -> bool {
        self.by_name.contains_key(uses)
    }

    /// Every name, sorted (for "did you mean" hints and docs).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }
}
