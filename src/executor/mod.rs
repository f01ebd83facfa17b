//! Task executors: what actually runs an attempt.
//!
//! Every kind implements [`Executor`]; [`Executors`] maps a task's `uses` to
//! one. Executors never read the run store: everything an attempt needs
//! arrives in its [`AttemptContext`] and input value.
//!
//! Cancellation is by drop: the engine stops an attempt (timeout, run
//! cancelled) by dropping the future returned by [`Executor::execute`], so an
//! executor must release what it holds on drop (`exec` kills its command's
//! whole process group).
//!
//! The kinds a node offers by default ([`Executors::standard`]):
//!
//! | `uses` | type | does |
//! |---|---|---|
//! | `builtin/noop` | [`Noop`] | outputs null |
//! | `builtin/echo` | [`Echo`] | outputs its `with` |
//! | `builtin/sleep` | [`Sleep`] | waits for `duration` |
//! | `builtin/fail` | [`Fail`] | fails the first `times` attempts |
//! | `builtin/sum` | [`Sum`] | adds up `values` |
//! | `builtin/normalize` | [`tensor::Normalize`] | scales features: `(x - mean) / scale` |
//! | `builtin/label` | [`tensor::Label`] | class indices to names |
//! | `exec` | [`Exec`] | runs a subprocess, without a shell |
//! | `http` | [`Http`] | sends one HTTP request, JSON in and out |
//!
//! A task's `with` that does not fit its executor (a missing field, a wrong
//! type, an unknown key) fails the attempt with [`TaskError::bad_input`],
//! naming the field and what it expects.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::value::Value;

pub mod builtin;
pub mod exec;
mod fields;
pub mod http;
pub mod tensor;

pub use builtin::{Echo, Fail, Noop, Sleep, Sum};
pub use exec::Exec;
pub use http::Http;

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
    /// The task's `uses`, for executors that serve a family of names
    /// (`model/NAME@REF`).
    pub uses: Arc<str>,
}

/// Why an attempt failed.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    thiserror::Error,
    bincode::Encode,
    bincode::Decode,
    serde::Serialize,
)]
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

    /// Whether this executor serves `uses`, checked when a workflow is
    /// compiled. Only a family entry (`model/*`) says no: to a model the
    /// registry does not know, so a typo fails at submit, not at run time.
    fn serves(&self, _uses: &str) -> bool {
        true
    }
}

/// The executors a node offers, by `uses` name; a name ending in `/*`
/// (`model/*`) serves every `uses` with that prefix.
#[derive(Debug, Clone, Default)]
pub struct Executors {
    by_name: BTreeMap<String, Arc<dyn Executor>>,
}

impl Executors {
    /// Every kind this module provides, under its `uses` name (see the table
    /// in the module documentation), configured by `config`.
    ///
    /// # Panics
    /// When the HTTP client cannot be built, which happens only if its TLS
    /// backend cannot initialise (as with `reqwest::Client::new`). Use
    /// [`Http::new`] to handle that error instead.
    pub fn standard(config: &ExecutorConfig) -> Executors {
        let http = Http::new(config).expect("the http executor's client cannot be built");
        let mut executors = Executors::empty();
        executors.insert("builtin/noop", Arc::new(Noop));
        executors.insert("builtin/echo", Arc::new(Echo));
        executors.insert("builtin/sleep", Arc::new(Sleep));
        executors.insert("builtin/fail", Arc::new(Fail));
        executors.insert("builtin/sum", Arc::new(Sum));
        executors.insert("builtin/bytes", Arc::new(builtin::Bytes));
        executors.insert("builtin/normalize", Arc::new(tensor::Normalize));
        executors.insert("builtin/label", Arc::new(tensor::Label));
        executors.insert("exec", Arc::new(Exec::new(config)));
        executors.insert("http", Arc::new(http));
        executors
    }

    /// An empty set.
    pub fn empty() -> Self {
        Executors::default()
    }

    /// Adds (or replaces) an executor under `name`.
    pub fn insert(&mut self, name: impl Into<String>, executor: Arc<dyn Executor>) {
        self.by_name.insert(name.into(), executor);
    }

    /// The executor a task's `uses` names: by exact name, else by the
    /// `PREFIX/*` entry whose prefix it starts with.
    pub fn resolve(&self, uses: &str) -> Option<&Arc<dyn Executor>> {
        if let Some(executor) = self.by_name.get(uses) {
            return Some(executor);
        }
        let (family, rest) = uses.split_once('/')?;
        if rest.is_empty() {
            return None;
        }
        self.by_name.get(&format!("{family}/*"))
    }

    /// Whether `uses` names a known executor.
    pub fn knows(&self, uses: &str) -> bool {
        self.resolve(uses).is_some_and(|e| e.serves(uses))
    }

    /// Every name, sorted (for "did you mean" hints and docs).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }
}

/// How a node's executors behave; the defaults suit a development machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorConfig {
    /// The commands `exec` may run. `None` (the default) allows any
    /// command; `Some(list)` allows a command only when its argv\[0\], as
    /// written or its file name, is in the list: with `["python3"]`, both
    /// `python3` (found on `PATH`) and `/opt/venv/bin/python3` may run,
    /// while an entry with a path, such as `/usr/bin/env`, allows only that
    /// exact argv\[0\]. An empty list allows nothing. A refused command fails
    /// with class `forbidden`, not retried.
    pub exec_allow: Option<Vec<String>>,
    /// The most bytes kept of an `exec` command's stdout or an `http`
    /// response body; beyond it the attempt fails with class
    /// `output_too_large`. Default: 16 MiB.
    pub max_output_bytes: usize,
    /// Time limit of one `http` request, from connecting to the last byte of
    /// the response. Default: 30 s.
    pub http_timeout: Duration,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            exec_allow: None,
            max_output_bytes: 16 * 1024 * 1024,
            http_timeout: Duration::from_secs(30),
        }
    }
}

/// Output bytes (stdout, a response body) as a value: JSON when they parse
/// as JSON, else text, else bytes; nothing at all is null.
pub(crate) fn output_value(bytes: Vec<u8>) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    if let Ok(value) = serde_json::from_slice::<Value>(&bytes) {
        return value;
    }
    match String::from_utf8(bytes) {
        Ok(text) => Value::String(text),
        Err(e) => Value::Bytes(e.into_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_offers_every_kind() {
        let executors = Executors::standard(&ExecutorConfig::default());
        let names: Vec<_> = executors.names().collect();
        assert_eq!(
            names,
            [
                "builtin/bytes",
                "builtin/echo",
                "builtin/fail",
                "builtin/label",
                "builtin/noop",
                "builtin/normalize",
                "builtin/sleep",
                "builtin/sum",
                "exec",
                "http"
            ]
        );
    }

    #[test]
    fn a_family_entry_serves_every_name_under_its_prefix() {
        let mut executors = Executors::empty();
        executors.insert("model/*", Arc::new(Noop));
        executors.insert("builtin/noop", Arc::new(Noop));
        assert!(executors.knows("model/iris@production"));
        assert!(executors.knows("builtin/noop"));
        assert!(!executors.knows("model/"));
        assert!(!executors.knows("model"));
        assert!(!executors.knows("builtin/nope"));
    }

    #[test]
    fn output_is_json_then_text_then_bytes() {
        assert_eq!(
            output_value(b"[1, \"a\"]".to_vec()),
            Value::List(vec![1.into(), "a".into()])
        );
        assert_eq!(output_value(b"not json".to_vec()), Value::from("not json"));
        assert_eq!(output_value(vec![0xc3]), Value::Bytes(vec![0xc3]));
        assert_eq!(output_value(Vec::new()), Value::Null);
    }
}
