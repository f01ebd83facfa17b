//! The orchestration engine: runs compiled workflows as supervised actors.
//!
//! ```text
//! EngineSupervisor                 restarts a crashed durable run from its journal
//!   ├── RunActor  (run A)          owns RunState, the journal order, timers
//!   │     ├── TaskAttempt (A/t1#1) runs one executor call in the node's pool
//!   │     └── TaskAttempt (A/t2/0#2)
//!   └── RunActor  (run B)
//! ```
//!
//! The pure core is [`state::RunState`]; the actors only carry out its
//! actions. The engine never names the storage engine: it talks to
//! [`RunStore`]. Callers hold an [`Engine`] and [`RunHandle`]s, never raw
//! actor messages.

pub mod attempt;
pub mod bus;
pub mod event;
pub mod meters;
pub mod pool;
mod query;
pub mod remote;
pub mod retry;
pub mod run;
pub mod state;

use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use rustc_hash::FxHashMap;
use tokio::sync::{broadcast, watch};

use self::bus::{EventBus, EventId, Follow};
use tracing::{error, warn};

pub use self::event::{JournalEvent, SubmittedSource, TaskKey};
pub use self::query::RunInfo;
use self::run::{RunActor, RunArgs, RunMode, RunMsg};
pub use self::state::{Progress, RunConfig, TaskReport, TaskStatus};
use crate::executor::Executors;
use crate::store::{RunStatus, RunStore, StoreError};
use crate::value::{Map, Value};
use crate::wdl::{Durability, Workflow};

/// How long a submission waits for `RunSubmitted` to be durable.
const ACCEPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Compiles a journaled source back into a workflow (on resume).
pub type CompileFn = Arc<dyn Fn(&SubmittedSource) -> Result<Workflow, String> + Send + Sync>;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This node's name, recorded in `TaskScheduled`. Default `local`.
    pub node: String,
    /// Attempts executing at once on this node (the executor pool). Default 256.
    pub slots: usize,
    /// Attempts of one run in flight at once. Default 1024.
    pub max_in_flight_per_run: usize,
    /// Times a crashed durable run actor is restarted from its journal. Default 3.
    pub max_run_restarts: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            node: "local".into(),
            slots: 256,
            max_in_flight_per_run: 1024,
            max_run_restarts: 3,
        }
    }
}

/// A journal event of some run, as published on the event bus.
#[derive(Debug, Clone)]
pub struct RunEvent {
    /// The run.
    pub run_id: Arc<str>,
    /// Position in the run's journal.
    pub seq: u64,
    /// Position on this node's event bus, across all runs.
    pub id: EventId,
    /// When it was published, ms since the Unix epoch.
    pub at_ms: u64,
    /// The event.
    pub event: JournalEvent,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RunOutcome {
    /// The run.
    pub run_id: String,
    /// Workflow name.
    pub workflow: String,
    /// Final status.
    pub status: RunStatus,
    /// Run outputs (null unless succeeded).
    pub outputs: Value,
    /// Why it failed or was cancelled.
    pub error: Option<String>,
    /// Per-task reports, in workflow order; none for a pipeline invocation
    /// that succeeded (its caller wants the outputs, and the reports would
    /// be built on every request only to be dropped).
    pub tasks: Vec<TaskReport>,
    /// Results dropped because their attempt had been superseded.
    pub dropped_results: u64,
}

/// Services every run actor shares.
pub struct Shared {
    config: EngineConfig,
    executors: pool::Resolver,
    /// Metric handles per workflow name.
    workflows: meters::ByName<meters::WorkflowMeters>,
    store: Arc<dyn RunStore>,
    pool: Arc<pool::Pool>,
    events: EventBus,
    compile: CompileFn,
    /// Outcomes of the latest finished runs, so a `none` run can still be
    /// looked up for a while after it ended.
    recent: query::Recent,
    /// Where attempts run, once a cluster is attached.
    placement: std::sync::OnceLock<Arc<dyn remote::Placement>>,
    /// Live run actors by run id, for results that come from other nodes.
    live: std::sync::RwLock<FxHashMap<String, ActorRef<RunMsg>>>,
    /// The node's name, shared by every attempt's tracing span.
    node: Arc<str>,
    /// Journals of `replicated` runs, once the node takes part in the
    /// replicated log.
    replicated: std::sync::OnceLock<Arc<dyn RunStore>>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .field("executors", &self.executors)
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn live_run(&self, run_id: &str) -> Option<ActorRef<RunMsg>> {
        let live = self.live.read().unwrap_or_else(|p| p.into_inner());
        live.get(run_id).cloned()
    }

    fn live_runs(&self) -> Vec<ActorRef<RunMsg>> {
        let live = self.live.read().unwrap_or_else(|p| p.into_inner());
        live.values().cloned().collect()
    }

    /// Registers `actor` as the live actor of `run_id`.
    pub(crate) fn enter_live(&self, run_id: &str, actor: ActorRef<RunMsg>) {
        let mut live = self.live.write().unwrap_or_else(|p| p.into_inner());
        live.insert(run_id.to_owned(), actor);
    }

    /// Removes `run_id`'s entry if `actor` still holds it (a restarted run's
    /// new actor may have taken it over).
    pub(crate) fn leave_live(&self, run_id: &str, actor: ActorId) {
        let mut live = self.live.write().unwrap_or_else(|p| p.into_inner());
        if live.get(run_id).is_some_and(|a| a.get_id() == actor) {
            live.remove(run_id);
        }
    }

    /// The store of `replicated` journals.
    pub(crate) fn replicated_store(&self) -> Result<Arc<dyn RunStore>, SubmitError> {
        self.replicated
            .get()
            .cloned()
            .ok_or(SubmitError::ReplicatedUnsupported)
    }

    /// The store that holds `run_id`'s journal, if any does.
    pub(crate) fn store_of(&self, run_id: &str) -> Result<Option<Arc<dyn RunStore>>, StoreError> {
        if self.store.summary(run_id)?.is_some() {
            return Ok(Some(Arc::clone(&self.store)));
        }
        if let Some(replicated) = self.replicated.get() {
            if replicated.summary(run_id)?.is_some() {
                return Ok(Some(Arc::clone(replicated)));
            }
        }
        Ok(None)
    }

    fn run_config(&self) -> RunConfig {
        RunConfig {
            node: self.config.node.clone(),
            max_in_flight: self.config.max_in_flight_per_run,
        }
    }
}

/// Submitting or resuming a run failed.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The workflow asked for a durability level this build cannot give.
    #[error(
        "durability \"replicated\" needs a node that takes part in a replicated log (set \
         `raft.voters` in the node config of a cluster of 3 or 5 voters); use \"local\" \
         (survives a restart of this node) or \"none\""
    )]
    ReplicatedUnsupported,
    /// No such run in the store.
    #[error("run {0} is not in this data dir")]
    UnknownRun(String),
    /// The submission was not made durable in time (a `replicated` run on
    /// a node without a quorum): it may still start once it is.
    #[error(
        "run {0} was not recorded within 10s (is a quorum of the replicated log's voters \
         reachable?); it starts if and when it is"
    )]
    NotRecorded(String),
    /// The run is already over.
    #[error("run {0} has already finished ({1})")]
    AlreadyFinished(String, RunStatus),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The run actor could not start.
    #[error("cannot start run: {0}")]
    Spawn(String),
}

/// A handle on a running engine.
#[derive(Debug, Clone)]
pub struct Engine {
    shared: Arc<Shared>,
    supervisor: ActorRef<SupervisorMsg>,
}

impl Engine {
    /// Starts the engine's supervisor.
    ///
    /// # Errors
    /// When the supervisor actor cannot be spawned.
    pub async fn start(
        config: EngineConfig,
        executors: Executors,
        store: Arc<dyn RunStore>,
        compile: CompileFn,
    ) -> Result<Engine, SubmitError> {
        let events = EventBus::new(run::now_ms(), bus::BACKLOG);
        let shared = Arc::new(Shared {
            pool: Arc::new(pool::Pool::new(config.slots)),
            node: Arc::from(config.node.as_str()),
            config,
            executors: pool::Resolver::new(executors),
            workflows: meters::ByName::default(),
            store,
            events,
            compile,
            recent: query::Recent::default(),
            placement: std::sync::OnceLock::new(),
            live: std::sync::RwLock::new(FxHashMap::default()),
            replicated: std::sync::OnceLock::new(),
        });
        let (supervisor, _) = Actor::spawn(None, EngineSupervisor, Arc::clone(&shared))
            .await
            .map_err(|e| SubmitError::Spawn(e.to_string()))?;
        Ok(Engine { shared, supervisor })
    }

    /// Starts a new run.
    ///
    /// # Errors
    /// When the workflow asks for `replicated` durability or the run actor
    /// cannot start.
    pub async fn submit(
        &self,
        workflow: Arc<Workflow>,
        source: SubmittedSource,
        inputs: Map,
    ) -> Result<RunHandle, SubmitError> {
        self.start_fresh(workflow, source, inputs).await
    }

    /// Starts a pipeline invocation: a run like [`Engine::submit`]'s of a
    /// `durability: none` workflow whose events stay off the node's event
    /// bus and whose outcome is not kept among the recent outcomes.
    /// Invocations come at request rates; there they would push the node's
    /// runs out of the backlog that reconnecting readers resume from and
    /// out of the outcomes `status` finds, and no reader can name an
    /// invocation (it is not listed: a pipeline is `none`).
    ///
    /// The run actor is spawned here, on the caller's task, linked to the
    /// supervisor, rather than by the supervisor: an invocation has no
    /// journal to restart from, so the supervisor has nothing to keep for
    /// it, and starting runs one at a time in its mailbox would make every
    /// request wait for the ones before it. If the actor fails, its outcome
    /// channel closes and [`RunHandle::wait`] answers with a failure.
    ///
    /// # Errors
    /// When the workflow is not `durability: none`, or the run actor cannot
    /// start.
    pub async fn invoke(
        &self,
        workflow: Arc<Workflow>,
        inputs: Map,
    ) -> Result<RunHandle, SubmitError> {
        if workflow.durability != Durability::None {
            return Err(SubmitError::Spawn(format!(
                "workflow \"{}\" is not `durability: none`; only those are invoked as pipelines",
                workflow.name
            )));
        }
        let run_id = ulid::Ulid::new().to_string();
        let (outcome, rx) = watch::channel(None);
        let args = RunArgs {
            run_id: run_id.clone(),
            mode: RunMode::Invocation { workflow, inputs },
            shared: Arc::clone(&self.shared),
            outcome,
        };
        Actor::spawn_linked(None, RunActor, args, self.supervisor.get_cell())
            .await
            .map_err(|e| SubmitError::Spawn(spawn_reason(e)))?;
        Ok(RunHandle {
            run_id,
            supervisor: self.supervisor.clone(),
            outcome: rx,
        })
    }

    async fn start_fresh(
        &self,
        workflow: Arc<Workflow>,
        source: SubmittedSource,
        inputs: Map,
    ) -> Result<RunHandle, SubmitError> {
        if workflow.durability == Durability::Replicated {
            self.shared.replicated_store()?;
        }
        let run_id = ulid::Ulid::new().to_string();
        let durability = workflow.durability;
        let (accepted, durable) = tokio::sync::oneshot::channel();
        let handle = self
            .start_run(
                run_id,
                RunMode::Fresh {
                    workflow,
                    source,
                    inputs,
                    accepted: Some(accepted),
                },
                durability,
            )
            .await?;
        // A `replicated` run is acknowledged only once its submission is
        // committed: a run the caller was told about is never lost with its
        // owner. (`local` runs are acknowledged at once; their first group
        // commit follows within milliseconds.)
        if durability != Durability::Replicated {
            return Ok(handle);
        }
        match tokio::time::timeout(ACCEPT_TIMEOUT, durable).await {
            Ok(Ok(Ok(()))) => Ok(handle),
            Ok(Ok(Err(e))) => Err(SubmitError::Store(e)),
            Ok(Err(_)) => Err(SubmitError::Spawn(
                "the run stopped before its submission was recorded".into(),
            )),
            Err(_) => Err(SubmitError::NotRecorded(handle.id().to_owned())),
        }
    }

    /// Continues a run from its journal: succeeded tasks are kept, attempts
    /// that were in flight run again with new attempt numbers.
    ///
    /// # Errors
    /// When the run is unknown, already finished, or cannot be rebuilt.
    pub async fn resume(&self, run_id: &str) -> Result<RunHandle, SubmitError> {
        if let Some(handle) = self.live(run_id).await {
            return Ok(handle);
        }
        match self.shared.store.summary(run_id)? {
            None => Err(SubmitError::UnknownRun(run_id.to_owned())),
            Some(s) if s.status.is_final() => {
                Err(SubmitError::AlreadyFinished(run_id.to_owned(), s.status))
            }
            Some(_) => {
                self.start_run(run_id.to_owned(), RunMode::Resume, Durability::Local)
                    .await
            }
        }
    }

    /// Journals `replicated` runs in `store` from now on (once).
    pub fn attach_replicated(&self, store: Arc<dyn RunStore>) {
        let _ = self.shared.replicated.set(store);
    }

    /// Continues a `replicated` run that this node now owns at `epoch`,
    /// from the replicated journal: succeeded tasks are kept, attempts that
    /// were in flight run again with new attempt numbers.
    ///
    /// # Errors
    /// When the run is already live here or cannot be rebuilt.
    pub async fn take_over(&self, run_id: &str, epoch: u64) -> Result<RunHandle, SubmitError> {
        self.start_run(
            run_id.to_owned(),
            RunMode::Takeover { epoch },
            Durability::Replicated,
        )
        .await
    }

    /// Stops the live run `run_id` if it runs here at an epoch below
    /// `epoch` (another node took it over). Whether one was live.
    pub fn give_up(&self, run_id: &str, epoch: u64) -> bool {
        match self.shared.live_run(run_id) {
            Some(actor) => actor.cast(RunMsg::GiveUp { epoch }).is_ok(),
            None => false,
        }
    }

    /// Whether a run actor for `run_id` is live on this node.
    pub fn is_live(&self, run_id: &str) -> bool {
        self.shared.live_run(run_id).is_some()
    }

    /// Resumes every run of the store that had not finished (what a node
    /// does when it starts on a data dir).
    ///
    /// # Errors
    /// When the store cannot be read. Runs that fail to resume are logged
    /// and skipped.
    pub async fn resume_incomplete(&self) -> Result<Vec<RunHandle>, SubmitError> {
        let mut handles = Vec::new();
        for summary in self.shared.store.summaries()? {
            if summary.status.is_final() {
                continue;
            }
            match self.resume(&summary.id).await {
                Ok(h) => handles.push(h),
                Err(e) => warn!(run = %summary.id, error = %e, "Could not resume run."),
            }
        }
        Ok(handles)
    }

    /// The handle of a run that is live on this engine.
    pub async fn live(&self, run_id: &str) -> Option<RunHandle> {
        ractor::call!(self.supervisor, SupervisorMsg::Lookup, run_id.to_owned())
            .ok()
            .flatten()
    }

    /// Summaries of every durable run in the store (`durability: none`
    /// runs leave no trace once over).
    ///
    /// # Errors
    /// When the store cannot be read.
    pub fn runs(&self) -> Result<Vec<crate::store::RunSummary>, StoreError> {
        let mut runs = self.shared.store.summaries()?;
        if let Some(replicated) = self.shared.replicated.get() {
            runs.extend(replicated.summaries()?);
            runs.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        }
        Ok(runs)
    }

    /// Live journal events of every run.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<RunEvent>> {
        self.shared.events.subscribe()
    }

    /// Follows the journal events of every run after `after` (`None`: from
    /// now on): the backlog the bus still holds, then live. See [`bus`].
    pub fn follow(&self, after: Option<EventId>) -> Follow {
        self.shared.events.follow(after)
    }

    /// The events after `after` that the bus still holds, and whether some
    /// between are gone (for a follower whose live channel lagged).
    pub fn events_since(&self, after: EventId) -> (Vec<Arc<RunEvent>>, bool) {
        self.shared.events.since(after)
    }

    /// When the events of a run that the bus still holds were published:
    /// `(seq, at_ms)` pairs (journals keep no times).
    pub fn published(&self, run_id: &str) -> Vec<(u64, u64)> {
        self.shared.events.published(run_id)
    }

    /// The epoch of this node's event ids (when the engine started).
    pub fn event_epoch(&self) -> u64 {
        self.shared.events.epoch()
    }

    /// Stops every run actor and the supervisor. Durable runs stay
    /// `running` in the store and can be resumed.
    pub async fn shutdown(&self) {
        let _ = self.supervisor.stop_children_and_wait(None, None).await;
        let _ = self.supervisor.stop_and_wait(None, None).await;
    }

    /// Starts a supervised run actor. Invocations are not started here:
    /// [`Engine::invoke`] spawns them linked, outside the supervisor's map.
    async fn start_run(
        &self,
        run_id: String,
        mode: RunMode,
        durability: Durability,
    ) -> Result<RunHandle, SubmitError> {
        ractor::call!(self.supervisor, |reply| SupervisorMsg::Start {
            run_id,
            mode,
            durability,
            reply
        })
        .map_err(|e| SubmitError::Spawn(e.to_string()))?
        .map_err(SubmitError::Spawn)
    }
}

/// A run that is live on an engine.
#[derive(Debug, Clone)]
pub struct RunHandle {
    run_id: String,
    supervisor: ActorRef<SupervisorMsg>,
    outcome: watch::Receiver<Option<Arc<RunOutcome>>>,
}

impl RunHandle {
    /// The run id.
    pub fn id(&self) -> &str {
        &self.run_id
    }

    /// Waits until the run is over. Cancel-safe: dropping the future leaves
    /// the run running.
    pub async fn wait(&mut self) -> Arc<RunOutcome> {
        match self.outcome.wait_for(Option::is_some).await {
            Ok(o) => Arc::clone(o.as_ref().expect("waited for some")),
            Err(_) => Arc::new(RunOutcome {
                run_id: self.run_id.clone(),
                workflow: String::new(),
                status: RunStatus::Failed,
                outputs: Value::Null,
                error: Some("the run's actor stopped before the run finished".into()),
                tasks: Vec::new(),
                dropped_results: 0,
            }),
        }
    }

    /// The outcome, if the run is over.
    pub fn outcome(&self) -> Option<Arc<RunOutcome>> {
        self.outcome.borrow().clone()
    }

    /// Asks the run to cancel; running attempts are stopped.
    pub fn cancel(&self, reason: impl Into<String>) {
        let _ = self.supervisor.cast(SupervisorMsg::Cancel {
            run_id: self.run_id.clone(),
            reason: reason.into(),
        });
    }

    /// Current progress counts (`None` once the run is over).
    pub async fn progress(&self) -> Option<Progress> {
        ractor::call!(self.supervisor, |reply| SupervisorMsg::Progress {
            run_id: self.run_id.clone(),
            reply
        })
        .ok()
        .flatten()
    }
}

/// Messages of [`EngineSupervisor`].
#[derive(Debug)]
pub enum SupervisorMsg {
    /// Spawn a run actor (never an invocation: see [`Engine::invoke`]).
    Start {
        /// Run id.
        run_id: String,
        /// Fresh, resumed or taken over.
        mode: RunMode,
        /// How the run is journaled (decides how a crash is handled).
        durability: Durability,
        /// The new run's handle.
        reply: RpcReplyPort<Result<RunHandle, String>>,
    },
    /// The handle of a live run.
    Lookup(String, RpcReplyPort<Option<RunHandle>>),
    /// Cancel a live run.
    Cancel {
        /// Run id.
        run_id: String,
        /// Why.
        reason: String,
    },
    /// Snapshot of a live run (`None` when not live).
    Snapshot {
        /// Run id.
        run_id: String,
        /// Answer.
        reply: RpcReplyPort<Option<RunInfo>>,
    },
    /// Progress of a live run (`None` when not live).
    Progress {
        /// Run id.
        run_id: String,
        /// Answer.
        reply: RpcReplyPort<Option<Progress>>,
    },
}

// Local only: never crosses nodes (the node agent is the remote face).
impl ractor::Message for SupervisorMsg {}

/// Supervises run actors; holds no data itself.
#[derive(Debug)]
pub struct EngineSupervisor;

/// A live run as the supervisor knows it.
#[derive(Debug)]
pub struct LiveRun {
    actor: ActorRef<RunMsg>,
    outcome: watch::Sender<Option<Arc<RunOutcome>>>,
    durability: Durability,
    /// Ownership epoch of a `replicated` run (0 otherwise).
    epoch: u64,
    restarts: u32,
}

/// The supervisor's state.
#[derive(Debug)]
pub struct SupervisorState {
    shared: Arc<Shared>,
    runs: FxHashMap<String, LiveRun>,
    by_actor: FxHashMap<ActorId, String>,
}

impl Actor for EngineSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = Arc<Shared>;

    async fn pre_start(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        shared: Arc<Shared>,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        Ok(SupervisorState {
            shared,
            runs: FxHashMap::default(),
            by_actor: FxHashMap::default(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Start {
                run_id,
                mode,
                durability,
                reply,
            } => {
                let (tx, rx) = watch::channel(None);
                let result = state
                    .spawn(&myself, run_id.clone(), mode, tx.clone(), durability, 0)
                    .await
                    .map(|()| RunHandle {
                        run_id,
                        supervisor: myself.clone(),
                        outcome: rx,
                    });
                let _ = reply.send(result);
            }
            SupervisorMsg::Lookup(run_id, reply) => {
                let handle = state.runs.get(&run_id).map(|live| RunHandle {
                    run_id: run_id.clone(),
                    supervisor: myself.clone(),
                    outcome: live.outcome.subscribe(),
                });
                let _ = reply.send(handle);
            }
            SupervisorMsg::Cancel { run_id, reason } => {
                if let Some(actor) = state.actor_of(&run_id) {
                    let _ = actor.cast(RunMsg::Cancel { reason });
                }
            }
            SupervisorMsg::Snapshot { run_id, reply } => match state.actor_of(&run_id) {
                Some(actor) => query::snapshot(actor, reply),
                None => {
                    let _ = reply.send(None);
                }
            },
            SupervisorMsg::Progress { run_id, reply } => match state.actor_of(&run_id) {
                Some(actor) => {
                    // Answer from a task so a busy run never blocks the supervisor.
                    tokio::spawn(async move {
                        let p = ractor::call!(actor, RunMsg::Progress).ok();
                        let _ = reply.send(p);
                    });
                }
                None => {
                    let _ = reply.send(None);
                }
            },
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                if let Some(run_id) = state.by_actor.remove(&cell.get_id()) {
                    state.runs.remove(&run_id);
                }
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                let Some(run_id) = state.by_actor.remove(&cell.get_id()) else {
                    // An invocation's actor (spawned by `Engine::invoke`, not
                    // kept here): its handle answers with a failure.
                    error!(actor = %cell.get_id(), error = %err, "Invocation's run actor failed.");
                    return Ok(());
                };
                let Some(live) = state.runs.remove(&run_id) else {
                    return Ok(());
                };
                error!(run = %run_id, error = %err, "Run actor failed.");
                let restartable = live.durability != Durability::None
                    && live.restarts < state.shared.config.max_run_restarts;
                if restartable {
                    warn!(run = %run_id, restarts = live.restarts + 1, "Restarting run from its journal.");
                    let mode = match live.durability {
                        Durability::Replicated => RunMode::Takeover { epoch: live.epoch },
                        _ => RunMode::Resume,
                    };
                    let restarted = state
                        .spawn(
                            &myself,
                            run_id.clone(),
                            mode,
                            live.outcome.clone(),
                            live.durability,
                            live.restarts + 1,
                        )
                        .await;
                    if let Err(e) = restarted {
                        fail_outcome(
                            &live.outcome,
                            &run_id,
                            format!("{err}; restart failed: {e}"),
                        );
                    }
                } else {
                    fail_outcome(&live.outcome, &run_id, format!("run actor failed: {err}"));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Why a run actor did not start, without ractor's wrapping.
fn spawn_reason(e: ractor::SpawnErr) -> String {
    match e {
        ractor::SpawnErr::StartupFailed(inner) => inner.to_string(),
        other => other.to_string(),
    }
}

fn fail_outcome(tx: &watch::Sender<Option<Arc<RunOutcome>>>, run_id: &str, error: String) {
    if tx.borrow().is_some() {
        return;
    }
    tx.send_replace(Some(Arc::new(RunOutcome {
        run_id: run_id.to_owned(),
        workflow: String::new(),
        status: RunStatus::Failed,
        outputs: Value::Null,
        error: Some(error),
        tasks: Vec::new(),
        dropped_results: 0,
    })));
}

impl SupervisorState {
    /// The actor of a live run: one this supervisor started, or an
    /// invocation (started by `Engine::invoke`, known only among the live).
    fn actor_of(&self, run_id: &str) -> Option<ActorRef<RunMsg>> {
        match self.runs.get(run_id) {
            Some(live) => Some(live.actor.clone()),
            None => self.shared.live_run(run_id),
        }
    }

    /// Spawns and keeps a run actor.
    ///
    /// Boxed: ractor moves the supervisor's handler futures on every
    /// message, and every run and invocation sends it two (started,
    /// terminated); spawning would otherwise be most of their size.
    fn spawn<'a>(
        &'a mut self,
        myself: &'a ActorRef<SupervisorMsg>,
        run_id: String,
        mode: RunMode,
        outcome: watch::Sender<Option<Arc<RunOutcome>>>,
        durability: Durability,
        restarts: u32,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(self.spawn_run(myself, run_id, mode, outcome, durability, restarts))
    }

    async fn spawn_run(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        run_id: String,
        mode: RunMode,
        outcome: watch::Sender<Option<Arc<RunOutcome>>>,
        durability: Durability,
        restarts: u32,
    ) -> Result<(), String> {
        if self.runs.contains_key(&run_id) {
            return Err(format!("run {run_id} is already live"));
        }
        let epoch = match &mode {
            RunMode::Takeover { epoch } => *epoch,
            _ if durability == Durability::Replicated => 1,
            _ => 0,
        };
        let args = RunArgs {
            run_id: run_id.clone(),
            mode,
            shared: Arc::clone(&self.shared),
            outcome: outcome.clone(),
        };
        let (actor, _) = Actor::spawn_linked(None, RunActor, args, myself.get_cell())
            .await
            .map_err(spawn_reason)?;
        self.by_actor.insert(actor.get_id(), run_id.clone());
        self.runs.insert(
            run_id,
            LiveRun {
                actor,
                outcome,
                durability,
                epoch,
                restarts,
            },
        );
        Ok(())
    }
}
