//! Durable state: run journals and run summaries.
//!
//! The engine sees only the [`RunStore`] trait. Two implementations:
//! [`SledStore`] (the only code that names sled) and [`MemoryStore`] for
//! tests. Journal records are opaque bytes here; the engine owns their
//! encoding, so this module knows nothing about runs beyond their summaries.

mod memory;
mod sled;

use std::fmt;

use bincode::{Decode, Encode};

pub use self::memory::MemoryStore;
pub use self::sled::SledStore;

/// Coarse state of a run, as listed by `symphony runs`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Accepted, not finished.
    Running,
    /// Every task succeeded or was skipped.
    Succeeded,
    /// A task failed, an expression failed, or the deadline passed.
    Failed,
    /// Cancelled by a user.
    Cancelled,
}

impl RunStatus {
    /// Whether the run is over.
    pub fn is_final(self) -> bool {
        !matches!(self, RunStatus::Running)
    }

    /// Lower-case word for humans and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    /// The status whose [`RunStatus::as_str`] is `word`.
    pub fn parse(word: &str) -> Option<RunStatus> {
        [
            RunStatus::Running,
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::Cancelled,
        ]
        .into_iter()
        .find(|status| status.as_str() == word)
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a listing shows about a run.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, serde::Serialize, serde::Deserialize)]
pub struct RunSummary {
    /// Run id.
    pub id: String,
    /// Workflow name.
    pub workflow: String,
    /// Current status.
    pub status: RunStatus,
    /// Submission time, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// Last status change, milliseconds since the Unix epoch.
    pub updated_ms: u64,
}

/// Events of one run to append, already encoded, with their sequence numbers
/// `first_seq..first_seq + events.len()`.
#[derive(Debug, Clone)]
pub struct AppendBatch {
    /// The run.
    pub run: String,
    /// Sequence number of the first event (0 for `RunSubmitted`).
    pub first_seq: u64,
    /// The writer's ownership epoch (`replicated` runs: 1 when created, +1
    /// at each takeover; the log refuses a stale one). 0 for `local` runs.
    pub epoch: u64,
    /// Encoded events.
    pub events: Vec<Vec<u8>>,
    /// New summary to record with these events, if it changed.
    pub summary: Option<RunSummary>,
}

/// Called once a batch is durable (or failed to be).
pub type Durable = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// A store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The storage engine reported an error.
    #[error("storage error: {0}")]
    Io(String),
    /// Stored bytes could not be decoded.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The writer has stopped (store closed).
    #[error("the store is closed")]
    Closed,
    /// Another node owns the run now: this node must give it up.
    #[error("fenced: {0}")]
    Fenced(String),
}

/// Journals and summaries of runs.
pub trait RunStore: Send + Sync + fmt::Debug + 'static {
    /// Appends a batch. `done` is called exactly once, after the batch is
    /// durable; batches are made durable in the order they were appended, so
    /// the completion of one implies every earlier one is durable too.
    fn append(&self, batch: AppendBatch, done: Durable);

    /// Every event of a run, in order.
    ///
    /// # Errors
    /// When the storage engine fails.
    fn journal(&self, run: &str) -> Result<Vec<Vec<u8>>, StoreError>;

    /// The summary of one run.
    ///
    /// # Errors
    /// When the storage engine fails or the record is corrupt.
    fn summary(&self, run: &str) -> Result<Option<RunSummary>, StoreError>;

    /// Summaries of every run, oldest first.
    ///
    /// # Errors
    /// When the storage engine fails or a record is corrupt.
    fn summaries(&self) -> Result<Vec<RunSummary>, StoreError>;
}

pub(crate) fn encode_summary(s: &RunSummary) -> Vec<u8> {
    bincode::encode_to_vec(s, crate::codec::config()).expect("summary encodes")
}

pub(crate) fn decode_summary(bytes: &[u8]) -> Result<RunSummary, StoreError> {
    bincode::decode_from_slice(bytes, crate::codec::config())
        .map(|(s, _)| s)
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}
