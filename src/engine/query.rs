//! Read side of the engine: what a run looks like now, and its history.
//!
//! A run is found live (asked from its actor), among recently finished runs
//! (kept in memory, bounded), or in the store (rebuilt from its journal).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use super::event::JournalEvent;
use super::run::{RunMsg, replay};
use super::state::{Progress, RunState, TaskReport};
use super::{Engine, RunOutcome, Shared, SupervisorMsg};
use crate::store::{RunStatus, StoreError};
use crate::value::Value;

/// How many finished runs the engine remembers in memory.
const RECENT: usize = 1024;

/// What is known about a run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RunInfo {
    /// The run.
    pub run_id: String,
    /// Workflow name.
    pub workflow: String,
    /// Current status.
    pub status: RunStatus,
    /// Run outputs (null until it succeeded).
    pub outputs: Value,
    /// Why it failed or was cancelled.
    pub error: Option<String>,
    /// Per-task reports, in workflow order.
    pub tasks: Vec<TaskReport>,
    /// Counts (zeros once over).
    pub progress: Progress,
    /// Submission time, ms since the Unix epoch.
    pub created_ms: u64,
}

impl RunInfo {
    pub(crate) fn of(state: &RunState, created_ms: u64) -> RunInfo {
        RunInfo {
            run_id: state.run_id().to_owned(),
            workflow: state.workflow().name.clone(),
            status: state.status(),
            outputs: state.outputs().clone(),
            error: state.error().map(str::to_owned),
            tasks: state.task_reports(),
            progress: state.progress(),
            created_ms,
        }
    }

    fn from_outcome(outcome: &RunOutcome, created_ms: u64) -> RunInfo {
        RunInfo {
            run_id: outcome.run_id.clone(),
            workflow: outcome.workflow.clone(),
            status: outcome.status,
            outputs: outcome.outputs.clone(),
            error: outcome.error.clone(),
            tasks: outcome.tasks.clone(),
            progress: Progress::default(),
            created_ms,
        }
    }
}

/// The latest finished runs, newest last.
#[derive(Debug, Default)]
pub(crate) struct Recent(Mutex<VecDeque<(Arc<RunOutcome>, u64)>>);

impl Recent {
    fn find(&self, run_id: &str) -> Option<RunInfo> {
        let recent = self.0.lock().unwrap_or_else(|p| p.into_inner());
        recent
            .iter()
            .rev()
            .find(|(o, _)| o.run_id == run_id)
            .map(|(o, created)| RunInfo::from_outcome(o, *created))
    }
}

impl Shared {
    /// Keeps a finished run's outcome among the recent ones.
    pub(crate) fn remember(&self, outcome: &Arc<RunOutcome>, created_ms: u64) {
        let mut recent = self.recent.0.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back((Arc::clone(outcome), created_ms));
    }
}

impl Engine {
    /// What is known about a run: live, recently finished, or stored.
    ///
    /// # Errors
    /// When the store cannot be read or the journal is corrupt.
    pub async fn run_info(&self, run_id: &str) -> Result<Option<RunInfo>, StoreError> {
        let live = ractor::call!(self.supervisor, |reply| SupervisorMsg::Snapshot {
            run_id: run_id.to_owned(),
            reply
        });
        if let Ok(Some(info)) = live {
            return Ok(Some(info));
        }
        if let Some(info) = self.shared.recent.find(run_id) {
            return Ok(Some(info));
        }
        let Some(store) = self.shared.store_of(run_id)? else {
            return Ok(None);
        };
        let (state, _, created) = replay(&self.shared, store.as_ref(), run_id)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(Some(RunInfo::of(&state, created)))
    }

    /// The journaled events of a run with their sequence numbers (empty for
    /// `durability: none` runs, which keep no journal).
    ///
    /// # Errors
    /// When the store cannot be read or a record is corrupt.
    pub fn history(&self, run_id: &str) -> Result<Vec<(u64, JournalEvent)>, StoreError> {
        let Some(store) = self.shared.store_of(run_id)? else {
            return Ok(Vec::new());
        };
        store
            .journal(run_id)?
            .iter()
            .enumerate()
            .map(|(i, bytes)| {
                JournalEvent::decode(bytes)
                    .map(|e| (i as u64, e))
                    .map_err(|e| StoreError::Corrupt(e.to_string()))
            })
            .collect()
    }
}

/// Asks a live run for its snapshot without blocking the supervisor.
pub(crate) fn snapshot(
    actor: ractor::ActorRef<RunMsg>,
    reply: ractor::RpcReplyPort<Option<RunInfo>>,
) {
    tokio::spawn(async move {
        let info = ractor::call!(actor, RunMsg::Snapshot).ok();
        let _ = reply.send(info);
    });
}
