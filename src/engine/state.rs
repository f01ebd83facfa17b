//! The run state machine. Pure: no I/O, no clock, no runtime.
//!
//! [`RunState::apply`] takes an [`Input`] (an attempt finished, a timer fired,
//! a user cancelled) and returns the [`Action`]s the run actor must carry out
//! (persist, dispatch, stop, start a timer, finish). State changes only
//! through journal events: `apply` decides which events happen, records each
//! one with [`RunState::evolve`] and asks for it to be persisted. Replaying a
//! journal calls the same `evolve`, so a resumed run is in exactly the state
//! its journal describes.
//!
//! Semantics (see docs/engine.md):
//! - a task starts once everything it `needs` is final; a need that did not
//!   succeed skips the task unless the need says `if: always`;
//! - `when` false skips the task; a skipped or failed task's outputs are null;
//! - `for_each` items run up to `max_parallel` at a time, and the task's
//!   output is the list of item outputs in order;
//! - a failed attempt is retried while the policy allows; a task that fails
//!   for good stops its other items, skips what needs it, and fails the run
//!   once every other branch has finished;
//! - a result from an attempt that is no longer current is dropped.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use super::event::{JournalEvent, TaskKey};
use super::retry::{Jitter, backoff_delay, should_retry};
use crate::executor::TaskError;
use crate::store::RunStatus;
use crate::value::{Map, Value};
use crate::wdl::{NeedCondition, Scope, TaskIdx, Workflow};

/// Limits the engine applies to every run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Name of the node attempts are placed on.
    pub node: String,
    /// Most attempts of one run in flight at once (bounds memory of a large
    /// fan-out).
    pub max_in_flight: usize,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            node: "local".into(),
            max_in_flight: 1024,
        }
    }
}

/// Something that happened to a run.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A new run starts (its `RunSubmitted` was recorded).
    Start {
        /// Current time, ms since the Unix epoch.
        now_ms: u64,
    },
    /// A run rebuilt from its journal continues.
    Resume {
        /// Current time, ms since the Unix epoch.
        now_ms: u64,
    },
    /// An attempt reported its result.
    AttemptFinished {
        /// Which task or item.
        key: TaskKey,
        /// The attempt's number (its fencing token).
        attempt: u32,
        /// Output or error.
        result: Result<Value, TaskError>,
    },
    /// A timer asked for by [`Action::StartTimer`] fired.
    TimerFired(Timer),
    /// A user cancelled the run.
    Cancel {
        /// Who or why, for the journal.
        reason: String,
    },
}

/// Timers a run asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// Backoff of a failed attempt is over.
    Retry(TaskKey),
    /// An attempt ran past its task's timeout.
    AttemptTimeout {
        /// Which task or item.
        key: TaskKey,
        /// Which attempt.
        attempt: u32,
    },
    /// The run's deadline.
    Deadline,
}

/// What the run actor must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Append to the journal. Later actions wait until it is durable.
    Persist(JournalEvent),
    /// Start an attempt.
    Dispatch {
        /// Which task or item.
        key: TaskKey,
        /// Attempt number (fencing token).
        attempt: u32,
        /// The rendered `with`.
        input: Value,
    },
    /// Stop a running attempt (timeout, cancellation, sibling failure).
    StopAttempt {
        /// Which task or item.
        key: TaskKey,
        /// Which attempt.
        attempt: u32,
    },
    /// Deliver [`Input::TimerFired`] after a delay.
    StartTimer {
        /// Which timer.
        timer: Timer,
        /// Delay.
        after: Duration,
    },
    /// A result arrived for an attempt that is not current; it was ignored.
    ResultDropped {
        /// Which task or item.
        key: TaskKey,
        /// The stale attempt.
        attempt: u32,
    },
    /// The run is over.
    Finish(RunStatus),
}

/// State of one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    /// Waiting for what it needs.
    Waiting,
    /// Ready to start, not yet scheduled (never journaled).
    Ready,
    /// At least one attempt was scheduled.
    Running,
    /// Finished with an output.
    Succeeded,
    /// Failed for good.
    Failed,
    /// Did not run.
    Skipped,
}

impl TaskStatus {
    /// Whether the task will not change any more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskStatus::Succeeded | TaskStatus::Failed | TaskStatus::Skipped
        )
    }

    /// Lower-case word for humans and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Waiting => "waiting",
            TaskStatus::Ready => "ready",
            TaskStatus::Running => "running",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
            TaskStatus::Skipped => "skipped",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum SlotState {
    /// Never started.
    #[default]
    Idle,
    /// An attempt is out.
    Running,
    /// Failed, waiting for its retry timer.
    Backoff,
    /// Waiting in the task's retry queue for a free place.
    Queued,
    Succeeded,
    Failed,
    /// Its task or run ended while it was out or waiting.
    Abandoned,
}

/// One attempt chain: a plain task, or one `for_each` item.
#[derive(Debug, Clone, Default)]
struct Slot {
    /// Last attempt number used (0: none yet).
    attempt: u32,
    /// Failed attempts so far (what the retry budget counts; an attempt cut
    /// short by a crash is not a failure).
    failures: u32,
    state: SlotState,
    output: Value,
}

#[derive(Debug, Clone)]
struct TaskState {
    status: TaskStatus,
    fan_out: bool,
    slots: Vec<Slot>,
    /// `for_each` values, once expanded.
    items: Vec<Value>,
    /// Slots below this index have been started at least once.
    next: usize,
    /// Slots waiting for a retry.
    retry: VecDeque<u32>,
    running: usize,
    succeeded: usize,
    /// Attempts scheduled, all slots together.
    attempts: u32,
    output: Value,
    error: Option<TaskError>,
    /// Whether the task sits in `RunState::active`.
    active: bool,
}

/// Counts for a progress display.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Progress {
    /// Tasks in the workflow.
    pub tasks: usize,
    /// Tasks finished (succeeded, failed or skipped).
    pub finished: usize,
    /// Tasks that failed for good.
    pub failed: usize,
    /// Attempts out now.
    pub running: usize,
    /// Attempts (items included) that succeeded.
    pub attempts_succeeded: u64,
    /// Failed attempts that were retried.
    pub retries: u64,
}

/// The summary of one task for reports.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TaskReport {
    /// Task id.
    pub id: String,
    /// Its executor (`uses`).
    pub uses: String,
    /// The tasks it needs, by id (the edges of the run's graph).
    pub needs: Vec<String>,
    /// Its status.
    pub status: TaskStatus,
    /// Attempts scheduled (over all items for `for_each`).
    pub attempts: u32,
    /// Items, for `for_each` tasks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<usize>,
    /// The final error, for failed tasks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The state of one run.
#[derive(Debug, Clone)]
pub struct RunState {
    run_id: String,
    workflow: Arc<Workflow>,
    inputs: Map,
    submitted_ms: u64,
    config: RunConfig,
    status: RunStatus,
    tasks: Vec<TaskState>,
    /// Tasks with slots to start, in the order they became ready.
    active: Vec<TaskIdx>,
    in_flight: usize,
    finished_tasks: usize,
    /// A task became final since the last `advance`.
    dirty: bool,
    /// Items evaluated just before `TaskExpanded` is recorded, so `evolve`
    /// need not evaluate them again.
    expanded: Option<Vec<Value>>,
    jitter: Jitter,
    outputs: Value,
    error: Option<String>,
    dropped_results: u64,
    succeeded_attempts: u64,
    retries: u64,
}

impl RunState {
    /// The state right after `RunSubmitted`.
    pub fn new(
        run_id: String,
        workflow: Arc<Workflow>,
        inputs: Map,
        submitted_ms: u64,
        config: RunConfig,
    ) -> Self {
        let tasks = workflow
            .tasks
            .iter()
            .map(|t| TaskState {
                status: TaskStatus::Waiting,
                fan_out: t.for_each.is_some(),
                slots: if t.for_each.is_some() {
                    Vec::new()
                } else {
                    vec![Slot::default()]
                },
                items: Vec::new(),
                next: 0,
                retry: VecDeque::new(),
                running: 0,
                succeeded: 0,
                attempts: 0,
                output: Value::Null,
                error: None,
                active: false,
            })
            .collect();
        let seed = run_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        RunState {
            run_id,
            workflow,
            inputs,
            submitted_ms,
            config,
            status: RunStatus::Running,
            tasks,
            active: Vec::new(),
            in_flight: 0,
            finished_tasks: 0,
            dirty: true,
            expanded: None,
            jitter: Jitter::new(seed),
            outputs: Value::Null,
            error: None,
            dropped_results: 0,
            succeeded_attempts: 0,
            retries: 0,
        }
    }

    /// The run id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The compiled workflow.
    pub fn workflow(&self) -> &Arc<Workflow> {
        &self.workflow
    }

    /// Current status.
    pub fn status(&self) -> RunStatus {
        self.status
    }

    /// Run outputs (null until the run succeeded).
    pub fn outputs(&self) -> &Value {
        &self.outputs
    }

    /// The run's outputs, moved out (null left behind): for the outcome of
    /// a run that is over.
    pub fn take_outputs(&mut self) -> Value {
        std::mem::take(&mut self.outputs)
    }

    /// Why the run failed or was cancelled.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// Attempts in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Results dropped because their attempt was no longer current.
    pub fn dropped_results(&self) -> u64 {
        self.dropped_results
    }

    /// Status of a task by index.
    pub fn task_status(&self, task: TaskIdx) -> TaskStatus {
        self.tasks[task].status
    }

    /// Output of a task by index (null unless it succeeded).
    pub fn task_output(&self, task: TaskIdx) -> &Value {
        &self.tasks[task].output
    }

    /// Counts for a progress display.
    pub fn progress(&self) -> Progress {
        Progress {
            tasks: self.tasks.len(),
            finished: self.finished_tasks,
            failed: self
                .tasks
                .iter()
                .filter(|t| t.status == TaskStatus::Failed)
                .count(),
            running: self.in_flight,
            attempts_succeeded: self.succeeded_attempts,
            retries: self.retries,
        }
    }

    /// One report per task, in workflow order.
    pub fn task_reports(&self) -> Vec<TaskReport> {
        self.workflow
            .tasks
            .iter()
            .zip(&self.tasks)
            .map(|(spec, t)| TaskReport {
                id: spec.id.clone(),
                uses: spec.uses.clone(),
                needs: spec
                    .needs
                    .iter()
                    .map(|n| self.workflow.tasks[n.task].id.clone())
                    .collect(),
                status: t.status,
                attempts: t.attempts,
                items: t.fan_out.then_some(t.slots.len()),
                error: t.error.as_ref().map(ToString::to_string),
            })
            .collect()
    }

    /// Handles one input and returns what to do.
    pub fn apply(&mut self, input: Input) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::Start { now_ms } => self.begin(now_ms, &mut out),
            Input::Resume { now_ms } => {
                self.requeue_interrupted();
                self.begin(now_ms, &mut out);
            }
            Input::AttemptFinished {
                key,
                attempt,
                result,
            } => {
                if !self.is_current(key, attempt) {
                    self.dropped_results += 1;
                    out.push(Action::ResultDropped { key, attempt });
                    return out;
                }
                match result {
                    Ok(output) => self.record(
                        JournalEvent::TaskSucceeded {
                            key,
                            attempt,
                            output,
                        },
                        &mut out,
                    ),
                    Err(error) => self.fail_attempt(key, attempt, error, &mut out),
                }
            }
            Input::TimerFired(Timer::Retry(key)) => self.retry_due(key),
            Input::TimerFired(Timer::AttemptTimeout { key, attempt }) => {
                if self.is_current(key, attempt) {
                    out.push(Action::StopAttempt { key, attempt });
                    let after = self.workflow.tasks[key.task as usize]
                        .timeout
                        .unwrap_or_default();
                    let error = TaskError::retryable(
                        "timeout",
                        format!("attempt {attempt} timed out after {}", fmt_duration(after)),
                    );
                    self.fail_attempt(key, attempt, error, &mut out);
                }
            }
            Input::TimerFired(Timer::Deadline) => {
                if self.status == RunStatus::Running {
                    let deadline = self.workflow.deadline.unwrap_or_default();
                    self.stop_all(&mut out);
                    let reason = format!("deadline of {} exceeded", fmt_duration(deadline));
                    self.record(JournalEvent::RunFailed { reason }, &mut out);
                    out.push(Action::Finish(RunStatus::Failed));
                }
                return out;
            }
            Input::Cancel { reason } => {
                if self.status == RunStatus::Running {
                    self.stop_all(&mut out);
                    self.record(JournalEvent::RunCancelled { reason }, &mut out);
                    out.push(Action::Finish(RunStatus::Cancelled));
                }
                return out;
            }
        }
        self.step(&mut out);
        out
    }

    /// Applies one journal event to the state. Used both live (through
    /// `record`) and when replaying a journal.
    pub fn evolve(&mut self, event: &JournalEvent) {
        match event {
            JournalEvent::RunSubmitted { .. } => {}
            JournalEvent::TaskExpanded { task, items } => {
                let idx = *task as usize;
                let values = match self.expanded.take() {
                    Some(values) => values,
                    None => self.eval_items(idx).unwrap_or_default(),
                };
                let t = &mut self.tasks[idx];
                t.items = values;
                t.items.resize(*items as usize, Value::Null);
                t.slots = vec![Slot::default(); *items as usize];
                t.status = TaskStatus::Running;
                if *items == 0 {
                    t.output = Value::List(Vec::new());
                    self.set_final(idx, TaskStatus::Succeeded);
                }
            }
            JournalEvent::TaskScheduled { key, attempt, .. } => {
                let t = &mut self.tasks[key.task as usize];
                let i = key.item.unwrap_or(0) as usize;
                t.status = TaskStatus::Running;
                t.attempts += 1;
                t.running += 1;
                t.next = t.next.max(i + 1);
                let slot = &mut t.slots[i];
                slot.attempt = *attempt;
                slot.state = SlotState::Running;
                self.in_flight += 1;
            }
            JournalEvent::TaskSucceeded { key, output, .. } => {
                let idx = key.task as usize;
                let t = &mut self.tasks[idx];
                let slot = &mut t.slots[key.item.unwrap_or(0) as usize];
                if slot.state != SlotState::Running {
                    return;
                }
                slot.state = SlotState::Succeeded;
                slot.output = output.clone();
                t.running -= 1;
                t.succeeded += 1;
                self.in_flight -= 1;
                self.succeeded_attempts += 1;
                if t.succeeded == t.slots.len() {
                    t.output = if t.fan_out {
                        Value::List(
                            t.slots
                                .iter_mut()
                                .map(|s| std::mem::take(&mut s.output))
                                .collect(),
                        )
                    } else {
                        std::mem::take(&mut t.slots[0].output)
                    };
                    t.items = Vec::new();
                    self.set_final(idx, TaskStatus::Succeeded);
                }
            }
            JournalEvent::TaskFailed {
                key,
                attempt,
                error,
                will_retry,
            } => {
                let idx = key.task as usize;
                if *attempt > 0 {
                    let t = &mut self.tasks[idx];
                    let slot = &mut t.slots[key.item.unwrap_or(0) as usize];
                    if slot.state != SlotState::Running {
                        return;
                    }
                    if !super::retry::uncharged(&error.class) {
                        slot.failures += 1;
                    }
                    slot.state = if *will_retry {
                        SlotState::Backoff
                    } else {
                        SlotState::Failed
                    };
                    t.running -= 1;
                    self.in_flight -= 1;
                    if *will_retry {
                        self.retries += 1;
                        return;
                    }
                }
                let abandoned = self.abandon_slots(idx);
                self.in_flight -= abandoned;
                let t = &mut self.tasks[idx];
                t.error = Some(error.clone());
                t.items = Vec::new();
                self.set_final(idx, TaskStatus::Failed);
            }
            JournalEvent::TaskSkipped { task, .. } => {
                self.set_final(*task as usize, TaskStatus::Skipped);
            }
            JournalEvent::RunSucceeded { outputs } => {
                self.status = RunStatus::Succeeded;
                self.outputs = outputs.clone();
            }
            JournalEvent::RunFailed { reason } => {
                self.end(RunStatus::Failed, reason);
            }
            JournalEvent::RunCancelled { reason } => {
                self.end(RunStatus::Cancelled, reason);
            }
        }
    }

    fn end(&mut self, status: RunStatus, reason: &str) {
        self.status = status;
        self.error = Some(reason.to_owned());
        for idx in 0..self.tasks.len() {
            self.abandon_slots(idx);
        }
        self.in_flight = 0;
    }

    /// Marks every slot of a task that is out or waiting as abandoned and
    /// returns how many were out.
    fn abandon_slots(&mut self, idx: TaskIdx) -> usize {
        let t = &mut self.tasks[idx];
        let mut out = 0;
        for slot in &mut t.slots {
            match slot.state {
                SlotState::Running => {
                    out += 1;
                    slot.state = SlotState::Abandoned;
                }
                SlotState::Backoff | SlotState::Queued => slot.state = SlotState::Abandoned,
                _ => {}
            }
        }
        t.running -= out;
        t.retry.clear();
        out
    }

    fn set_final(&mut self, idx: TaskIdx, status: TaskStatus) {
        let t = &mut self.tasks[idx];
        if !t.status.is_final() {
            self.finished_tasks += 1;
            self.dirty = true;
        }
        t.status = status;
    }

    fn record(&mut self, event: JournalEvent, out: &mut Vec<Action>) {
        self.evolve(&event);
        out.push(Action::Persist(event));
    }

    fn is_current(&self, key: TaskKey, attempt: u32) -> bool {
        if self.status != RunStatus::Running {
            return false;
        }
        let Some(t) = self.tasks.get(key.task as usize) else {
            return false;
        };
        match t.slots.get(key.item.unwrap_or(0) as usize) {
            Some(slot) => slot.state == SlotState::Running && slot.attempt == attempt,
            None => false,
        }
    }

    fn begin(&mut self, now_ms: u64, out: &mut Vec<Action>) {
        if self.status != RunStatus::Running {
            return;
        }
        if let Some(deadline) = self.workflow.deadline {
            let elapsed = Duration::from_millis(now_ms.saturating_sub(self.submitted_ms));
            out.push(Action::StartTimer {
                timer: Timer::Deadline,
                after: deadline.saturating_sub(elapsed),
            });
        }
    }

    /// After a replay: attempts that were out when the process stopped, and
    /// retries that were waiting, start again with new attempt numbers.
    fn requeue_interrupted(&mut self) {
        for (idx, t) in self.tasks.iter_mut().enumerate() {
            if t.status != TaskStatus::Running {
                continue;
            }
            for (i, slot) in t.slots.iter_mut().enumerate() {
                if matches!(slot.state, SlotState::Running | SlotState::Backoff) {
                    if slot.state == SlotState::Running {
                        t.running -= 1;
                        self.in_flight -= 1;
                    }
                    slot.state = SlotState::Queued;
                    t.retry.push_back(i as u32);
                }
            }
            if !t.active && (!t.retry.is_empty() || t.next < t.slots.len()) {
                t.active = true;
                self.active.push(idx);
            }
        }
    }

    fn retry_due(&mut self, key: TaskKey) {
        if self.status != RunStatus::Running {
            return;
        }
        let idx = key.task as usize;
        let i = key.item.unwrap_or(0);
        let t = &mut self.tasks[idx];
        if t.slots.get(i as usize).map(|s| s.state) != Some(SlotState::Backoff) {
            return;
        }
        t.slots[i as usize].state = SlotState::Queued;
        t.retry.push_back(i);
        if !t.active {
            t.active = true;
            self.active.push(idx);
        }
    }

    fn fail_attempt(
        &mut self,
        key: TaskKey,
        attempt: u32,
        error: TaskError,
        out: &mut Vec<Action>,
    ) {
        let idx = key.task as usize;
        let policy = &self.workflow.tasks[idx].retry;
        let failures = self.tasks[idx].slots[key.item.unwrap_or(0) as usize].failures + 1;
        let (will_retry, retry_after) = if super::retry::uncharged(&error.class) {
            // Not the task's fault: place it again, without spending its budget.
            (
                true,
                Some(super::retry::replace_delay(
                    &error.class,
                    self.jitter.next_f64(),
                )),
            )
        } else {
            let will_retry = should_retry(policy, &error, failures);
            let delay = will_retry.then(|| backoff_delay(policy, failures, self.jitter.next_f64()));
            (will_retry, delay)
        };
        if !will_retry {
            self.stop_task(idx, Some(key), out);
        }
        self.record(
            JournalEvent::TaskFailed {
                key,
                attempt,
                error,
                will_retry,
            },
            out,
        );
        if let Some(after) = retry_after {
            out.push(Action::StartTimer {
                timer: Timer::Retry(key),
                after,
            });
        }
    }

    /// Asks to stop every attempt of a task that is out, except `keep`.
    fn stop_task(&self, idx: TaskIdx, keep: Option<TaskKey>, out: &mut Vec<Action>) {
        let t = &self.tasks[idx];
        if t.running == 0 {
            return;
        }
        for (i, slot) in t.slots.iter().enumerate() {
            let key = TaskKey {
                task: idx as u32,
                item: t.fan_out.then_some(i as u32),
            };
            if slot.state == SlotState::Running && Some(key) != keep {
                out.push(Action::StopAttempt {
                    key,
                    attempt: slot.attempt,
                });
            }
        }
    }

    fn stop_all(&self, out: &mut Vec<Action>) {
        for idx in 0..self.tasks.len() {
            self.stop_task(idx, None, out);
        }
    }

    /// Moves the run forward after any change: start what became ready,
    /// dispatch what fits, finish when everything is final.
    fn step(&mut self, out: &mut Vec<Action>) {
        if self.status != RunStatus::Running {
            return;
        }
        while self.dirty {
            self.dirty = false;
            self.advance(out);
        }
        self.pump(out);
        self.maybe_finish(out);
    }

    /// Decides every waiting task whose needs are all final. Tasks are in
    /// topological order, so one pass sees the effect of earlier decisions.
    fn advance(&mut self, out: &mut Vec<Action>) {
        for idx in 0..self.tasks.len() {
            if self.tasks[idx].status != TaskStatus::Waiting {
                continue;
            }
            let spec = &self.workflow.tasks[idx];
            let mut blocked = None;
            let mut ready = true;
            for need in &spec.needs {
                let dep = self.tasks[need.task].status;
                if !dep.is_final() {
                    ready = false;
                    break;
                }
                if need.condition == NeedCondition::Succeeded
                    && dep != TaskStatus::Succeeded
                    && blocked.is_none()
                {
                    blocked = Some(format!(
                        "needs \"{}\", which {}",
                        self.workflow.tasks[need.task].id,
                        if dep == TaskStatus::Failed {
                            "failed"
                        } else {
                            "was skipped"
                        }
                    ));
                }
            }
            if !ready {
                continue;
            }
            if let Some(reason) = blocked {
                self.record(
                    JournalEvent::TaskSkipped {
                        task: idx as u32,
                        reason,
                    },
                    out,
                );
                continue;
            }
            if let Some(when) = &spec.when {
                match when.eval(&self.scope(None)) {
                    Ok(v) if v.truthy() => {}
                    Ok(_) => {
                        let reason = "when was false".to_owned();
                        self.record(
                            JournalEvent::TaskSkipped {
                                task: idx as u32,
                                reason,
                            },
                            out,
                        );
                        continue;
                    }
                    Err(e) => {
                        self.fail_task(idx, format!("when: {e}"), out);
                        continue;
                    }
                }
            }
            if spec.for_each.is_some() {
                match self.eval_items(idx) {
                    Ok(items) => {
                        let n = items.len() as u32;
                        self.expanded = Some(items);
                        self.record(
                            JournalEvent::TaskExpanded {
                                task: idx as u32,
                                items: n,
                            },
                            out,
                        );
                    }
                    Err(message) => {
                        self.fail_task(idx, message, out);
                        continue;
                    }
                }
            } else {
                self.tasks[idx].status = TaskStatus::Ready;
            }
            let t = &mut self.tasks[idx];
            if !t.status.is_final() && !t.active {
                t.active = true;
                self.active.push(idx);
            }
        }
    }

    fn fail_task(&mut self, idx: TaskIdx, message: String, out: &mut Vec<Action>) {
        self.record(
            JournalEvent::TaskFailed {
                key: TaskKey::task(idx),
                attempt: 0,
                error: TaskError::fatal("expression", message),
                will_retry: false,
            },
            out,
        );
    }

    fn eval_items(&self, idx: TaskIdx) -> Result<Vec<Value>, String> {
        let Some(template) = &self.workflow.tasks[idx].for_each else {
            return Ok(Vec::new());
        };
        match template.eval(&self.scope(None)) {
            Ok(Value::List(items)) => Ok(items),
            Ok(other) => Err(format!(
                "for_each must be a list, got {}",
                other.type_name()
            )),
            Err(e) => Err(format!("for_each: {e}")),
        }
    }

    /// Dispatches attempts while the run's window and each task's
    /// `max_parallel` allow.
    fn pump(&mut self, out: &mut Vec<Action>) {
        let mut i = 0;
        while i < self.active.len() && self.in_flight < self.config.max_in_flight {
            let idx = self.active[i];
            let limit = self.workflow.tasks[idx]
                .max_parallel
                .map_or(usize::MAX, |m| m as usize);
            loop {
                let t = &self.tasks[idx];
                let has_work = !t.retry.is_empty() || t.next < t.slots.len();
                if t.status.is_final() || !has_work {
                    self.tasks[idx].active = false;
                    self.active.swap_remove(i);
                    break;
                }
                if t.running >= limit || self.in_flight >= self.config.max_in_flight {
                    i += 1;
                    break;
                }
                let slot = match self.tasks[idx].retry.pop_front() {
                    Some(s) => s as usize,
                    None => self.tasks[idx].next,
                };
                self.dispatch(idx, slot, out);
            }
        }
        // Keep the order tasks became ready in: swap_remove disturbed it.
        self.active.sort_unstable();
    }

    fn dispatch(&mut self, idx: TaskIdx, slot: usize, out: &mut Vec<Action>) {
        let t = &self.tasks[idx];
        let key = TaskKey {
            task: idx as u32,
            item: t.fan_out.then_some(slot as u32),
        };
        let attempt = t.slots[slot].attempt + 1;
        let item = t.fan_out.then(|| (&t.items[slot], slot));
        let input = self.workflow.tasks[idx].with.eval(&self.scope(item));
        self.record(
            JournalEvent::TaskScheduled {
                key,
                attempt,
                node: self.config.node.clone(),
                fence: u64::from(attempt),
            },
            out,
        );
        match input {
            Ok(input) => {
                out.push(Action::Dispatch {
                    key,
                    attempt,
                    input,
                });
                if let Some(after) = self.workflow.tasks[idx].timeout {
                    out.push(Action::StartTimer {
                        timer: Timer::AttemptTimeout { key, attempt },
                        after,
                    });
                }
            }
            Err(e) => {
                let error = TaskError::fatal("expression", format!("with: {e}"));
                self.fail_attempt(key, attempt, error, out);
            }
        }
    }

    fn maybe_finish(&mut self, out: &mut Vec<Action>) {
        if self.status != RunStatus::Running || self.finished_tasks < self.tasks.len() {
            return;
        }
        let failed = self
            .workflow
            .tasks
            .iter()
            .zip(&self.tasks)
            .find(|(_, t)| t.status == TaskStatus::Failed);
        if let Some((spec, t)) = failed {
            let reason = match &t.error {
                Some(e) => format!("task \"{}\" failed: {e}", spec.id),
                None => format!("task \"{}\" failed", spec.id),
            };
            self.record(JournalEvent::RunFailed { reason }, out);
            out.push(Action::Finish(RunStatus::Failed));
            return;
        }
        let scope = self.scope(None);
        let outputs: Result<Map, String> = self
            .workflow
            .outputs
            .iter()
            .map(|(name, t)| {
                t.eval(&scope)
                    .map(|v| (name.clone(), v))
                    .map_err(|e| format!("output \"{name}\": {e}"))
            })
            .collect();
        match outputs {
            Ok(outputs) => {
                self.record(
                    JournalEvent::RunSucceeded {
                        outputs: Value::Map(outputs),
                    },
                    out,
                );
                out.push(Action::Finish(RunStatus::Succeeded));
            }
            Err(reason) => {
                self.record(JournalEvent::RunFailed { reason }, out);
                out.push(Action::Finish(RunStatus::Failed));
            }
        }
    }

    fn scope<'a>(&'a self, item: Option<(&'a Value, usize)>) -> RunScope<'a> {
        RunScope { state: self, item }
    }
}

struct RunScope<'a> {
    state: &'a RunState,
    item: Option<(&'a Value, usize)>,
}

impl Scope for RunScope<'_> {
    fn input(&self, name: &str) -> Option<&Value> {
        self.state.inputs.get(name)
    }

    fn task_outputs(&self, task: TaskIdx) -> Option<&Value> {
        self.state.tasks.get(task).map(|t| &t.output)
    }

    fn item(&self) -> Option<&Value> {
        self.item.map(|(v, _)| v)
    }

    fn index(&self) -> Option<usize> {
        self.item.map(|(_, i)| i)
    }
}

fn fmt_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
