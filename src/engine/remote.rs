//! Attempts on other nodes: what the engine asks of the cluster layer, and
//! what it offers it.
//!
//! The engine decides *what* runs (the state machine); a [`Placement`]
//! decides *where*. Run and attempt actors stay on their own node: an attempt
//! placed elsewhere travels as an [`Assignment`] to that node's agent, which
//! runs it as a local attempt actor there and sends the result back to the
//! run's owner, where [`Engine::deliver`] hands it to the run actor.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use bincode::{Decode, Encode};
use ractor::{Actor, ActorCell, ActorRef};

use super::Engine;
use super::attempt::{AttemptArgs, AttemptMsg, Report, TaskAttempt};
use super::event::TaskKey;
use super::run::RunMsg;
use crate::executor::{AttemptContext, TaskError};
use crate::value::Value;

/// An attempt sent to another node.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct Assignment {
    /// The run.
    pub run_id: String,
    /// The node that owns the run (where the result goes).
    pub owner: String,
    /// Which task or item.
    pub key: TaskKey,
    /// Task id.
    pub task_id: String,
    /// The executor (`uses`).
    pub uses: String,
    /// Attempt number, also the fencing token.
    pub attempt: u32,
    /// `RUN_ID/TASK_ID[/ITEM]`.
    pub idempotency_key: String,
    /// The rendered `with`.
    pub input: Value,
}

/// Where an attempt should run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placed {
    /// On this node.
    Local,
    /// On the named peer.
    Remote(String),
    /// No live node carries the required labels (yet).
    Nowhere,
}

/// Placement and transport of attempts, implemented by the cluster layer.
pub trait Placement: Send + Sync + fmt::Debug + 'static {
    /// Chooses a node among those carrying `labels`.
    fn place(&self, labels: &BTreeMap<String, String>) -> Placed;
    /// Sends an assignment to `node`'s agent.
    ///
    /// # Errors
    /// When the node is unknown or unreachable.
    fn assign(&self, node: &str, assignment: Assignment) -> Result<(), String>;
    /// Asks `node` to stop an attempt.
    fn stop(&self, node: &str, run_id: &str, key: TaskKey, attempt: u32);
    /// An attempt placed on `node` ended (result, loss or stop).
    fn released(&self, node: &str);
}

/// Sends a finished remote attempt's result home.
pub type ReportFn = Box<dyn FnOnce(Result<Value, TaskError>) + Send>;

impl Engine {
    /// Connects the engine to a cluster: from now on attempts may be placed
    /// on other nodes. Can be called once; later calls are ignored.
    pub fn attach(&self, placement: Arc<dyn Placement>) {
        let _ = self.shared.placement.set(placement);
    }

    /// Hands a result that came from another node to its run actor. Unknown
    /// runs (over, or owned elsewhere) drop it.
    pub fn deliver(
        &self,
        run_id: &str,
        key: TaskKey,
        attempt: u32,
        result: Result<Value, TaskError>,
    ) {
        if let Some(run) = self.shared.live_run(run_id) {
            let _ = run.cast(RunMsg::AttemptFinished {
                key,
                attempt,
                result,
            });
        } else {
            metrics::counter!("symphony_results_fenced_total").increment(1);
        }
    }

    /// Tells every live run that `node` is down: its attempts there fail
    /// with class `node_lost` and are placed again.
    pub fn node_lost(&self, node: &str) {
        for run in self.shared.live_runs() {
            let _ = run.cast(RunMsg::NodeLost(node.to_owned()));
        }
    }

    /// Runs an attempt that another node assigned to this one, as an attempt
    /// actor linked under `supervisor` (the node agent); `report` sends the
    /// result home.
    ///
    /// # Errors
    /// When the executor is unknown here or the actor cannot start.
    pub async fn run_assigned(
        &self,
        assignment: Assignment,
        supervisor: ActorCell,
        report: ReportFn,
    ) -> Result<ActorRef<AttemptMsg>, TaskError> {
        let Some(executor) = self.shared.executors.resolve(&assignment.uses) else {
            return Err(TaskError::fatal(
                "executor",
                format!(
                    "node {} has no executor \"{}\"",
                    self.shared.config.node, assignment.uses
                ),
            ));
        };
        let args = AttemptArgs {
            key: assignment.key,
            ctx: AttemptContext {
                run_id: assignment.run_id,
                task_id: assignment.task_id,
                item: assignment.key.item.map(|i| i as usize),
                attempt: assignment.attempt,
                idempotency_key: assignment.idempotency_key,
                uses: Arc::clone(&executor.uses),
            },
            executor,
            input: assignment.input,
            node: Arc::clone(&self.shared.node),
            pool: Arc::clone(&self.shared.pool),
            report: Report::Remote(std::sync::Mutex::new(Some(report))),
        };
        Actor::spawn_linked(None, TaskAttempt, args, supervisor)
            .await
            .map(|(actor, _)| actor)
            .map_err(|e| TaskError::retryable("spawn", format!("cannot start attempt: {e}")))
    }

    /// Attempts holding a place in this node's pool.
    pub fn load(&self) -> u32 {
        self.shared.pool.busy() as u32
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.shared.config.node
    }
}
