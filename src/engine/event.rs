//! Journal events: the only way a run's state changes.
//!
//! Encoded with bincode for the journal. Variants are only ever added, never
//! renamed or reordered, so journals written by older builds stay readable.

use bincode::{Decode, Encode};

use crate::executor::TaskError;
use crate::value::Value;

/// Identifies one attempt chain: a task, or one item of a `for_each` task.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Encode, Decode, serde::Serialize,
)]
pub struct TaskKey {
    /// Index of the task in the compiled workflow.
    pub task: u32,
    /// Item index for `for_each` tasks.
    pub item: Option<u32>,
}

impl TaskKey {
    /// The key of a task without `for_each`.
    pub fn task(task: usize) -> Self {
        TaskKey {
            task: task as u32,
            item: None,
        }
    }
}

/// The source files a run was submitted with, so it can be recompiled on
/// resume even if the files changed or vanished.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, serde::Serialize)]
pub struct SubmittedSource {
    /// Path of the main file, as given.
    pub main: String,
    /// Every file read (main and imports): path and text.
    pub files: Vec<(String, String)>,
}

/// One entry of a run's journal. Serialized to JSON (for event streams)
/// with a `type` field naming the variant in snake case.
#[derive(Debug, Clone, PartialEq, Encode, Decode, serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JournalEvent {
    /// The run was accepted. Always the first event.
    RunSubmitted {
        /// Run id.
        run_id: String,
        /// Workflow name.
        workflow: String,
        /// The workflow's source files.
        source: SubmittedSource,
        /// Inputs with defaults filled in.
        inputs: Value,
        /// Submission time, ms since the Unix epoch.
        submitted_ms: u64,
    },
    /// A `for_each` task evaluated its list.
    TaskExpanded {
        /// Task index.
        task: u32,
        /// Number of items.
        items: u32,
    },
    /// An attempt was placed on a node. Durable before the attempt starts.
    TaskScheduled {
        /// Which task or item.
        key: TaskKey,
        /// Attempt number, from 1.
        attempt: u32,
        /// Node the attempt runs on.
        node: String,
        /// Fencing token carried by the attempt.
        fence: u64,
    },
    /// An attempt succeeded; its output is the task's (or item's) output.
    TaskSucceeded {
        /// Which task or item.
        key: TaskKey,
        /// The attempt that succeeded.
        attempt: u32,
        /// Output value.
        output: Value,
    },
    /// An attempt failed (attempt 0: the task failed before any attempt,
    /// e.g. its `when` could not be evaluated).
    TaskFailed {
        /// Which task or item.
        key: TaskKey,
        /// The attempt that failed.
        attempt: u32,
        /// What went wrong.
        error: TaskError,
        /// Whether another attempt will follow.
        will_retry: bool,
    },
    /// The task will not run: `when` was false or an upstream it needs did
    /// not succeed.
    TaskSkipped {
        /// Task index.
        task: u32,
        /// Why, for humans.
        reason: String,
    },
    /// Every task finished and the outputs were computed.
    RunSucceeded {
        /// Run outputs.
        outputs: Value,
    },
    /// The run failed.
    RunFailed {
        /// Why.
        reason: String,
    },
    /// The run was cancelled.
    RunCancelled {
        /// Why (who asked).
        reason: String,
    },
}

impl JournalEvent {
    /// Short name for logs and event streams.
    pub fn kind(&self) -> &'static str {
        match self {
            JournalEvent::RunSubmitted { .. } => "run_submitted",
            JournalEvent::TaskExpanded { .. } => "task_expanded",
            JournalEvent::TaskScheduled { .. } => "task_scheduled",
            JournalEvent::TaskSucceeded { .. } => "task_succeeded",
            JournalEvent::TaskFailed { .. } => "task_failed",
            JournalEvent::TaskSkipped { .. } => "task_skipped",
            JournalEvent::RunSucceeded { .. } => "run_succeeded",
            JournalEvent::RunFailed { .. } => "run_failed",
            JournalEvent::RunCancelled { .. } => "run_cancelled",
        }
    }

    /// Encodes for the journal.
    pub fn encode(&self) -> Vec<u8> {
        bincode::encode_to_vec(self, crate::codec::config()).expect("journal event encodes")
    }

    /// Decodes a journal record.
    ///
    /// # Errors
    /// When the bytes are not a journal event.
    pub fn decode(bytes: &[u8]) -> Result<Self, bincode::error::DecodeError> {
        bincode::decode_from_slice(bytes, crate::codec::config()).map(|(e, _)| e)
    }
}

impl SubmittedSource {
    /// The files a workflow was compiled from, to journal with the run.
    pub fn from_sources(sources: &crate::wdl::Sources) -> Self {
        SubmittedSource {
            main: sources.main().to_owned(),
            files: sources
                .files()
                .map(|(p, t)| (p.to_owned(), t.to_owned()))
                .collect(),
        }
    }

    /// Back to [`crate::wdl::Sources`], to compile again on resume.
    pub fn to_sources(&self) -> crate::wdl::Sources {
        crate::wdl::Sources::from_files(&self.main, self.files.iter().cloned())
    }
}
