//! The run actor: owns one run, drives its [`RunState`], carries out the
//! actions it returns.
//!
//! Ordering rule: an action that follows a `Persist` waits until the journal
//! says the event is durable (for `durability: local`), so an attempt never
//! starts before its `TaskScheduled` is on disk and a run never reports an
//! outcome it could lose. With `durability: none` nothing is written and
//! actions run at once.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use rustc_hash::FxHashMap;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::attempt::{AttemptArgs, AttemptMsg, Report, TaskAttempt};
use super::event::{JournalEvent, SubmittedSource, TaskKey};
use super::meters::WorkflowMeters;
use super::pool::TaskExecutor;
use super::remote::{Assignment, Placed};
use super::retry::{NODE_LOST, UNPLACEABLE};
use super::state::{Action, Input, Progress, RunState, Timer};
use super::{RunInfo, RunOutcome, Shared};
use crate::executor::{AttemptContext, TaskError};
use crate::store::{AppendBatch, RunStatus, RunStore, RunSummary, StoreError};
use crate::value::{Map, Value};
use crate::wdl::{Durability, Workflow};

/// Messages of [`RunActor`].
#[derive(Debug)]
pub enum RunMsg {
    /// An attempt reported its result.
    AttemptFinished {
        /// Which task or item.
        key: TaskKey,
        /// The attempt's number (fencing token).
        attempt: u32,
        /// Output or error.
        result: Result<Value, TaskError>,
    },
    /// A timer the state machine asked for fired.
    Timer(Timer),
    /// Journal events with sequence numbers below `upto` are durable.
    Persisted {
        /// Exclusive upper bound of durable sequence numbers.
        upto: u64,
        /// Whether the write succeeded.
        result: Result<(), StoreError>,
    },
    /// Cancel the run; running attempts are stopped.
    Cancel {
        /// Who asked, for the journal.
        reason: String,
    },
    /// Current progress counts.
    Progress(RpcReplyPort<Progress>),
    /// Everything known about the run now.
    Snapshot(RpcReplyPort<RunInfo>),
    /// A node was declared down: attempts placed there are lost.
    NodeLost(String),
    /// Another node owns the run from `epoch` on: stop without an outcome.
    GiveUp {
        /// The new owner's epoch.
        epoch: u64,
    },
}

// Local only: never crosses nodes (the node agent is the remote face).
impl ractor::Message for RunMsg {}

/// How the run begins.
#[derive(Debug)]
pub enum RunMode {
    /// A new submission.
    Fresh {
        /// The compiled workflow.
        workflow: Arc<Workflow>,
        /// Its source files, journaled for resume.
        source: SubmittedSource,
        /// Inputs, defaults filled in.
        inputs: Map,
        /// Told once `RunSubmitted` is durable (at once for `none`), or why
        /// it could not be made so.
        accepted: Option<tokio::sync::oneshot::Sender<Result<(), StoreError>>>,
    },
    /// A pipeline invocation (`durability: none`): nothing is journaled,
    /// its events stay off the node's event bus and its outcome out of the
    /// recent outcomes; no `RunSubmitted` is even built.
    Invocation {
        /// The compiled workflow.
        workflow: Arc<Workflow>,
        /// Inputs, defaults filled in.
        inputs: Map,
    },
    /// Rebuild from the local journal and continue.
    Resume,
    /// Rebuild a `replicated` run from the replicated journal and continue
    /// as its owner at `epoch`.
    Takeover {
        /// The ownership epoch this node holds.
        epoch: u64,
    },
}

/// Arguments of a run actor.
#[derive(Debug)]
pub struct RunArgs {
    /// The run id.
    pub run_id: String,
    /// Fresh or resumed.
    pub mode: RunMode,
    /// Engine-wide services.
    pub shared: Arc<Shared>,
    /// Where the outcome is announced.
    pub outcome: watch::Sender<Option<Arc<RunOutcome>>>,
}

/// The run actor. Holds no data; see [`RunActorState`].
#[derive(Debug)]
pub struct RunActor;

/// Everything a run actor keeps.
#[derive(Debug)]
pub struct RunActorState {
    machine: RunState,
    shared: Arc<Shared>,
    outcome: watch::Sender<Option<Arc<RunOutcome>>>,
    run_id: Arc<str>,
    /// The executor of each task, by task index.
    executors: Vec<Arc<TaskExecutor>>,
    /// The workflow's counters.
    meters: Arc<WorkflowMeters>,
    /// `None` for `durability: none`.
    journal: Option<Arc<dyn RunStore>>,
    /// Ownership epoch of a `replicated` run (0 otherwise).
    epoch: u64,
    next_seq: u64,
    durable_seq: u64,
    /// Actions waiting for the journal: (sequence that must be durable, action).
    deferred: VecDeque<(u64, Action)>,
    attempts: FxHashMap<ActorId, (TaskKey, u32, ActorRef<AttemptMsg>)>,
    /// Attempts out on other nodes: key → (attempt, node).
    remote: FxHashMap<TaskKey, (u32, String)>,
    /// Placements chosen when `TaskScheduled` was recorded, used at dispatch.
    placed: FxHashMap<TaskKey, Placed>,
    created_ms: u64,
    /// `RunSubmitted` of a fresh run, persisted first thing in `post_start`.
    pending_first: Option<JournalEvent>,
    /// Who waits for `RunSubmitted` to be durable.
    accepted: Option<tokio::sync::oneshot::Sender<Result<(), StoreError>>>,
    /// `Start` or `Resume`, applied in `post_start`.
    begin: Option<Input>,
    /// Whether its events stay off the node's event bus and its outcome
    /// out of the recent outcomes (a pipeline invocation).
    quiet: bool,
    /// This actor, whose entry among the live runs is removed with this
    /// state, however the actor ended.
    actor: ActorId,
}

impl Drop for RunActorState {
    fn drop(&mut self) {
        self.shared.leave_live(&self.run_id, self.actor);
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Actor for RunActor {
    type Msg = RunMsg;
    type State = RunActorState;
    type Arguments = RunArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RunMsg>,
        args: RunArgs,
    ) -> Result<RunActorState, ActorProcessingErr> {
        let RunArgs {
            run_id,
            mode,
            shared,
            outcome,
        } = args;
        let now = now_ms();
        let epoch = match &mode {
            RunMode::Fresh { workflow, .. } if workflow.durability == Durability::Replicated => 1,
            RunMode::Takeover { epoch } => *epoch,
            _ => 0,
        };
        let mut accepted = None;
        let mut quiet = false;
        let (machine, submitted, next_seq, created_ms, begin) = match mode {
            RunMode::Fresh {
                workflow,
                source,
                inputs,
                accepted: waiter,
            } => {
                accepted = waiter;
                let submitted = JournalEvent::RunSubmitted {
                    run_id: run_id.clone(),
                    workflow: workflow.name.clone(),
                    source,
                    inputs: Value::Map(inputs.clone()),
                    submitted_ms: now,
                };
                let machine =
                    RunState::new(run_id.clone(), workflow, inputs, now, shared.run_config());
                (
                    machine,
                    Some(submitted),
                    0,
                    now,
                    Input::Start { now_ms: now },
                )
            }
            RunMode::Invocation { workflow, inputs } => {
                quiet = true;
                let machine =
                    RunState::new(run_id.clone(), workflow, inputs, now, shared.run_config());
                (machine, None, 0, now, Input::Start { now_ms: now })
            }
            RunMode::Resume | RunMode::Takeover { .. } => {
                let store = if epoch > 0 {
                    shared.replicated_store()?
                } else {
                    Arc::clone(&shared.store)
                };
                let (machine, events, created) = replay(&shared, store.as_ref(), &run_id)?;
                (
                    machine,
                    None,
                    events,
                    created,
                    Input::Resume { now_ms: now },
                )
            }
        };
        let executors = machine
            .workflow()
            .tasks
            .iter()
            .map(|t| {
                shared
                    .executors
                    .resolve(&t.uses)
                    .ok_or_else(|| format!("task \"{}\": unknown executor \"{}\"", t.id, t.uses))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let name = &machine.workflow().name;
        let meters = shared
            .workflows
            .get_or_make(name, || WorkflowMeters::new(name));
        let journal = match machine.workflow().durability {
            Durability::None => None,
            Durability::Local => Some(Arc::clone(&shared.store)),
            Durability::Replicated => Some(shared.replicated_store()?),
        };
        let state = RunActorState {
            run_id: Arc::from(run_id.as_str()),
            machine,
            shared,
            outcome,
            executors,
            meters,
            journal,
            epoch,
            next_seq,
            durable_seq: next_seq,
            deferred: VecDeque::new(),
            attempts: FxHashMap::default(),
            remote: FxHashMap::default(),
            placed: FxHashMap::default(),
            created_ms,
            pending_first: submitted,
            accepted,
            begin: Some(begin),
            quiet,
            actor: myself.get_id(),
        };
        // Registered before `post_start` dispatches anything, so a result from
        // another node always finds the run.
        state.shared.enter_live(&state.run_id, myself);
        Ok(state)
    }

    async fn post_start(
        &self,
        myself: ActorRef<RunMsg>,
        state: &mut RunActorState,
    ) -> Result<(), ActorProcessingErr> {
        let mut actions = Vec::new();
        if let Some(submitted) = state.pending_first.take() {
            info!(run = %state.run_id, workflow = %state.machine.workflow().name, "Run submitted.");
            actions.push(Action::Persist(submitted));
            if state.journal.is_none() {
                state.accept(Ok(()));
            }
        }
        if state.machine.status().is_final() {
            // Resumed a run that had already finished: just report it.
            actions.push(Action::Finish(state.machine.status()));
        } else if let Some(begin) = state.begin.take() {
            actions.extend(state.machine.apply(begin));
        }
        state.perform(&myself, actions).await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<RunMsg>,
        msg: RunMsg,
        state: &mut RunActorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RunMsg::AttemptFinished {
                key,
                attempt,
                result,
            } => {
                state.meters.attempt(result.is_ok());
                state.settle_remote(key, attempt);
                let actions = state.machine.apply(Input::AttemptFinished {
                    key,
                    attempt,
                    result,
                });
                state.perform(&myself, actions).await;
            }
            RunMsg::Timer(timer) => {
                let actions = state.machine.apply(Input::TimerFired(timer));
                state.perform(&myself, actions).await;
            }
            RunMsg::Persisted { upto, result } => match result {
                Ok(()) => {
                    state.accept(Ok(()));
                    state.durable_seq = state.durable_seq.max(upto);
                    state.release(&myself).await;
                }
                Err(StoreError::Fenced(why)) => {
                    state.accept(Err(StoreError::Fenced(why.clone())));
                    // Another node took the run over: it carries on from
                    // the replicated journal; nothing more happens here.
                    info!(run = %state.run_id, reason = %why, "Run taken over elsewhere; giving it up.");
                    state.give_up(&myself);
                }
                Err(e) => {
                    state.accept(Err(e.clone()));
                    // The journal can no longer be trusted to hold what
                    // happens next: stop here; the run stays `running` on disk
                    // and resumes from its last durable event.
                    warn!(run = %state.run_id, error = %e, "Journal write failed; stopping the run.");
                    state.announce(
                        RunStatus::Failed,
                        Some(format!("journal write failed: {e}")),
                    );
                    myself.stop(Some(format!("journal write failed: {e}")));
                }
            },
            RunMsg::Cancel { reason } => {
                let actions = state.machine.apply(Input::Cancel { reason });
                state.perform(&myself, actions).await;
            }
            RunMsg::Progress(reply) => {
                let _ = reply.send(state.machine.progress());
            }
            RunMsg::NodeLost(node) => {
                for (key, attempt) in state.lost_on(&node) {
                    let error = TaskError::retryable(NODE_LOST, format!("node {node} is down"));
                    let actions = state.machine.apply(Input::AttemptFinished {
                        key,
                        attempt,
                        result: Err(error),
                    });
                    state.perform(&myself, actions).await;
                }
            }
            RunMsg::Snapshot(reply) => {
                let _ = reply.send(RunInfo::of(&state.machine, state.created_ms));
            }
            RunMsg::GiveUp { epoch } => {
                if state.epoch > 0 && state.epoch < epoch {
                    info!(run = %state.run_id, epoch, "Run taken over elsewhere; giving it up.");
                    state.give_up(&myself);
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<RunMsg>,
        event: SupervisionEvent,
        state: &mut RunActorState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                state.attempts.remove(&cell.get_id());
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                if let Some((key, attempt, _)) = state.attempts.remove(&cell.get_id()) {
                    let result = Err(TaskError::fatal(
                        "panic",
                        format!("attempt actor failed: {err}"),
                    ));
                    let actions = state.machine.apply(Input::AttemptFinished {
                        key,
                        attempt,
                        result,
                    });
                    state.perform(&myself, actions).await;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Rebuilds a run from its journal.
pub(crate) fn replay(
    shared: &Shared,
    store: &dyn RunStore,
    run_id: &str,
) -> Result<(RunState, u64, u64), ActorProcessingErr> {
    let records = store.journal(run_id)?;
    let mut events = records.iter().map(|r| JournalEvent::decode(r));
    let Some(Ok(JournalEvent::RunSubmitted {
        source,
        inputs,
        submitted_ms,
        ..
    })) = events.next()
    else {
        return Err(format!("run {run_id} has no journal in this data dir").into());
    };
    let workflow = (shared.compile)(&source)
        .map_err(|e| format!("run {run_id}: its workflow no longer compiles: {e}"))?;
    let inputs = match inputs {
        Value::Map(m) => m,
        _ => Map::new(),
    };
    let mut machine = RunState::new(
        run_id.to_owned(),
        Arc::new(workflow),
        inputs,
        submitted_ms,
        shared.run_config(),
    );
    for event in events {
        let event = event.map_err(|e| format!("run {run_id}: corrupt journal record: {e}"))?;
        machine.evolve(&event);
    }
    Ok((machine, records.len() as u64, submitted_ms))
}

impl RunActorState {
    /// Carries out actions in order; see the module doc for the ordering rule.
    ///
    /// Boxed: ractor moves an actor's handler future on every message it
    /// handles (supervision events too), and carrying out actions (starting
    /// attempt actors above all) is most of the run actor's future; boxed,
    /// its size is paid when actions are carried out, not on every message.
    fn perform<'a>(
        &'a mut self,
        myself: &'a ActorRef<RunMsg>,
        actions: Vec<Action>,
    ) -> BoxFuture<'a, ()> {
        Box::pin(self.carry_out(myself, actions))
    }

    async fn carry_out(&mut self, myself: &ActorRef<RunMsg>, actions: Vec<Action>) {
        let mut batch = Vec::new();
        let mut summary = None;
        let first_seq = self.next_seq;
        for action in actions {
            match action {
                Action::Persist(mut event) => {
                    if let JournalEvent::TaskScheduled { key, node, .. } = &mut event {
                        // Where it runs is decided as the schedule is recorded,
                        // so the journal says which node each attempt went to.
                        let placed = self.place(*key);
                        *node = match &placed {
                            Placed::Local => self.shared.config.node.clone(),
                            Placed::Remote(peer) => peer.clone(),
                            Placed::Nowhere => String::new(),
                        };
                        self.placed.insert(*key, placed);
                    }
                    if self.journal.is_some() {
                        if let Some(status) = summary_status(&event) {
                            summary = Some(self.summary(status));
                        }
                        batch.push(event.encode());
                    }
                    self.publish(self.next_seq, event);
                    self.next_seq += 1;
                }
                other => {
                    if self.journal.is_some() && self.durable_seq < self.next_seq {
                        self.deferred.push_back((self.next_seq, other));
                    } else {
                        self.execute(myself, other).await;
                    }
                }
            }
        }
        if let Some(journal) = &self.journal {
            if !batch.is_empty() {
                let upto = self.next_seq;
                let me = myself.clone();
                journal.append(
                    AppendBatch {
                        run: self.run_id.to_string(),
                        first_seq,
                        epoch: self.epoch,
                        events: batch,
                        summary,
                    },
                    Box::new(move |result| {
                        let _ = me.cast(RunMsg::Persisted { upto, result });
                    }),
                );
            }
        }
    }

    /// Runs deferred actions whose events are now durable.
    async fn release(&mut self, myself: &ActorRef<RunMsg>) {
        while let Some((seq, _)) = self.deferred.front() {
            if *seq > self.durable_seq {
                break;
            }
            let (_, action) = self.deferred.pop_front().expect("front exists");
            // Boxed for the reason `perform` is.
            Box::pin(self.execute(myself, action)).await;
        }
    }

    async fn execute(&mut self, myself: &ActorRef<RunMsg>, action: Action) {
        match action {
            Action::Persist(_) => unreachable!("persist is handled by perform"),
            Action::Dispatch {
                key,
                attempt,
                input,
            } => self.dispatch(myself, key, attempt, input).await,
            Action::StopAttempt { key, attempt } => {
                if let Some((a, node)) = self.remote.get(&key).cloned() {
                    if a == attempt {
                        if let Some(p) = self.shared.placement.get() {
                            p.stop(&node, &self.run_id, key, attempt);
                        }
                        self.settle_remote(key, attempt);
                    }
                }
                if let Some((_, _, actor)) = self
                    .attempts
                    .values()
                    .find(|(k, a, _)| *k == key && *a == attempt)
                {
                    actor.kill();
                }
            }
            Action::StartTimer { timer, after } => {
                myself.send_after(after, move || RunMsg::Timer(timer));
            }
            Action::ResultDropped { key, attempt } => {
                metrics::counter!("symphony_results_fenced_total").increment(1);
                info!(run = %self.run_id, task = key.task, item = ?key.item, attempt, "Dropped a result from a superseded attempt.");
            }
            Action::Finish(status) => {
                let error = self.machine.error().map(str::to_owned);
                self.announce(status, error);
                self.stop_attempts();
                myself.stop(None);
            }
        }
    }

    async fn dispatch(
        &mut self,
        myself: &ActorRef<RunMsg>,
        key: TaskKey,
        attempt: u32,
        input: Value,
    ) {
        let task = key.task as usize;
        let spec = &self.machine.workflow().tasks[task];
        let task_id = spec.id.clone();
        let idempotency_key = match key.item {
            Some(i) => format!("{}/{task_id}/{i}", self.run_id),
            None => format!("{}/{task_id}", self.run_id),
        };
        let placed = self.placed.remove(&key).unwrap_or(Placed::Local);
        let failed = match placed {
            Placed::Local => {
                self.start_local(myself, key, attempt, task_id, idempotency_key, input)
                    .await
            }
            Placed::Remote(node) => {
                let placement = self.shared.placement.get().expect("placed remotely");
                let assignment = Assignment {
                    run_id: self.run_id.to_string(),
                    owner: self.shared.config.node.clone(),
                    key,
                    task_id,
                    uses: spec.uses.clone(),
                    attempt,
                    idempotency_key,
                    input,
                };
                match placement.assign(&node, assignment) {
                    Ok(()) => {
                        self.remote.insert(key, (attempt, node));
                        None
                    }
                    Err(e) => {
                        placement.released(&node);
                        Some(TaskError::retryable(NODE_LOST, e))
                    }
                }
            }
            Placed::Nowhere => Some(TaskError::retryable(
                UNPLACEABLE,
                format!("no live node carries the labels {:?}", spec.placement),
            )),
        };
        if let Some(error) = failed {
            let _ = myself.cast(RunMsg::AttemptFinished {
                key,
                attempt,
                result: Err(error),
            });
        }
    }

    /// Starts an attempt actor on this node; returns the error if it cannot.
    async fn start_local(
        &mut self,
        myself: &ActorRef<RunMsg>,
        key: TaskKey,
        attempt: u32,
        task_id: String,
        idempotency_key: String,
        input: Value,
    ) -> Option<TaskError> {
        let executor = &self.executors[key.task as usize];
        let args = AttemptArgs {
            key,
            ctx: AttemptContext {
                run_id: self.run_id.to_string(),
                task_id,
                item: key.item.map(|i| i as usize),
                attempt,
                idempotency_key,
                uses: Arc::clone(&executor.uses),
            },
            executor: Arc::clone(executor),
            input,
            node: Arc::clone(&self.shared.node),
            pool: Arc::clone(&self.shared.pool),
            report: Report::Run(myself.clone()),
        };
        match Actor::spawn_linked(None, TaskAttempt, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                self.attempts.insert(actor.get_id(), (key, attempt, actor));
                None
            }
            Err(e) => Some(TaskError::retryable(
                "spawn",
                format!("cannot start attempt: {e}"),
            )),
        }
    }

    /// Tells the submitter whether `RunSubmitted` is durable (once).
    fn accept(&mut self, result: Result<(), StoreError>) {
        if let Some(waiter) = self.accepted.take() {
            let _ = waiter.send(result);
        }
    }

    /// Stops the run here without an outcome (another node owns it now):
    /// local attempts are killed, remote ones told to stop.
    fn give_up(&mut self, myself: &ActorRef<RunMsg>) {
        metrics::counter!("symphony_runs_given_up_total").increment(1);
        self.deferred.clear();
        self.stop_attempts();
        myself.stop(Some("taken over by another node".into()));
    }

    /// Kills this run's local attempts and tells nodes running its remote
    /// ones to stop them.
    fn stop_attempts(&mut self) {
        for (_, _, actor) in self.attempts.values() {
            actor.kill();
        }
        let remote: Vec<_> = self.remote.drain().collect();
        if let Some(p) = self.shared.placement.get() {
            for (key, (attempt, node)) in remote {
                p.stop(&node, &self.run_id, key, attempt);
                p.released(&node);
            }
        }
    }

    /// Chooses the node for the next attempt of `key`.
    fn place(&self, key: TaskKey) -> Placed {
        match self.shared.placement.get() {
            Some(p) => p.place(&self.machine.workflow().tasks[key.task as usize].placement),
            None => Placed::Local,
        }
    }

    /// A result for `key` arrived: forget where its remote attempt ran.
    fn settle_remote(&mut self, key: TaskKey, attempt: u32) {
        if let Some((a, _)) = self.remote.get(&key) {
            if *a == attempt {
                let (_, node) = self.remote.remove(&key).expect("present");
                if let Some(p) = self.shared.placement.get() {
                    p.released(&node);
                }
            }
        }
    }

    /// `node` is down: its attempts of this run are lost.
    fn lost_on(&mut self, node: &str) -> Vec<(TaskKey, u32)> {
        let lost: Vec<_> = self
            .remote
            .iter()
            .filter(|(_, (_, n))| n == node)
            .map(|(k, (a, _))| (*k, *a))
            .collect();
        for (key, attempt) in &lost {
            self.settle_remote(*key, *attempt);
        }
        lost
    }

    fn summary(&self, status: RunStatus) -> RunSummary {
        RunSummary {
            id: self.run_id.to_string(),
            workflow: self.machine.workflow().name.clone(),
            status,
            created_ms: self.created_ms,
            updated_ms: now_ms(),
        }
    }

    fn publish(&self, seq: u64, event: JournalEvent) {
        if self.quiet {
            return;
        }
        self.shared
            .events
            .publish(&self.run_id, seq, now_ms(), event);
    }

    /// Announces the run's end: its outputs move from the machine into the
    /// outcome (the actor stops right after).
    fn announce(&mut self, status: RunStatus, error: Option<String>) {
        self.meters.run(status);
        match status {
            // Invocations come at request rates: a line each would be the
            // bulk of a node's log (and of its time at `info`).
            _ if self.quiet => debug!(run = %self.run_id, status = %status, "Invocation ended."),
            RunStatus::Succeeded => info!(run = %self.run_id, "Run succeeded."),
            _ => {
                info!(run = %self.run_id, status = %status, error = error.as_deref().unwrap_or(""), "Run ended.")
            }
        }
        let outcome = RunOutcome {
            run_id: self.run_id.to_string(),
            workflow: self.machine.workflow().name.clone(),
            status,
            outputs: self.machine.take_outputs(),
            error,
            tasks: if self.quiet && status == RunStatus::Succeeded {
                Vec::new()
            } else {
                self.machine.task_reports()
            },
            dropped_results: self.machine.dropped_results(),
        };
        let outcome = Arc::new(outcome);
        if !self.quiet {
            self.shared.remember(&outcome, self.created_ms);
        }
        self.outcome.send_replace(Some(outcome));
    }
}

/// The status a run's summary records after `event`, when it changes.
fn summary_status(event: &JournalEvent) -> Option<RunStatus> {
    match event {
        JournalEvent::RunSubmitted { .. } => Some(RunStatus::Running),
        JournalEvent::RunSucceeded { .. } => Some(RunStatus::Succeeded),
        JournalEvent::RunFailed { .. } => Some(RunStatus::Failed),
        JournalEvent::RunCancelled { .. } => Some(RunStatus::Cancelled),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineSupervisor;

    /// The size of the future `handler` returns, without calling it.
    fn future_size<'a, A, B, C, D, F>(_handler: fn(&'a A, B, C, &'a mut D) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// ractor moves an actor's handler future on every message it handles,
    /// so the actors every run and invocation messages (a run gets three
    /// messages per attempt, the supervisor two per run) keep theirs small:
    /// spawning, the large part, is boxed. Before that the run actor's were
    /// 2.6 KiB, copied several times per message.
    #[test]
    fn the_busy_actors_handler_futures_stay_small() {
        const BOUND: usize = 1024;
        let sizes = [
            ("run: handle", future_size(<RunActor as Actor>::handle)),
            (
                "run: supervision event",
                future_size(<RunActor as Actor>::handle_supervisor_evt),
            ),
            (
                "supervisor: supervision event",
                future_size(<EngineSupervisor as Actor>::handle_supervisor_evt),
            ),
            (
                "attempt: handle",
                future_size(<TaskAttempt as Actor>::handle),
            ),
        ];
        for (what, size) in sizes {
            assert!(size <= BOUND, "{what}: {size} bytes, more than {BOUND}");
        }
    }
}
