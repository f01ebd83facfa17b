//! One task attempt: an actor spawned linked under its run actor.
//!
//! It waits for a place in the node's executor pool, runs the executor, and
//! reports the result to its run. Stopping it (the run kills it on timeout or
//! cancellation) drops the executor's future, which kills a subprocess. A
//! panicking executor becomes a failed attempt of class `panic`.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::Instrument;

use super::event::TaskKey;
use super::pool::{Pool, TaskExecutor};
use super::run::RunMsg;
use crate::executor::{AttemptContext, TaskError};
use crate::value::Value;

/// Messages of [`TaskAttempt`].
#[derive(Debug)]
pub enum AttemptMsg {
    /// Run the attempt (sent to itself on start).
    Run,
}

// Local only: never crosses nodes (the node agent is the remote face).
impl ractor::Message for AttemptMsg {}

/// What an attempt needs to run.
#[derive(Debug)]
pub struct AttemptArgs {
    /// Which task or item.
    pub key: TaskKey,
    /// Identity handed to the executor.
    pub ctx: AttemptContext,
    /// The executor for the task's `uses`.
    pub executor: Arc<TaskExecutor>,
    /// The rendered `with`.
    pub input: Value,
    /// The node it runs on (for its tracing span).
    pub node: Arc<str>,
    /// The node's executor pool.
    pub pool: Arc<Pool>,
    /// Where the result goes.
    pub report: Report,
}

/// Where an attempt's result goes.
pub enum Report {
    /// The run actor on this node.
    Run(ActorRef<RunMsg>),
    /// Home to another node (the attempt was assigned from there).
    Remote(std::sync::Mutex<Option<super::remote::ReportFn>>),
}

impl std::fmt::Debug for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Report::Run(run) => f.debug_tuple("Run").field(&run.get_id()).finish(),
            Report::Remote(_) => f.write_str("Remote"),
        }
    }
}

/// The attempt actor. Holds no data; its state is its arguments.
#[derive(Debug)]
pub struct TaskAttempt;

impl Actor for TaskAttempt {
    type Msg = AttemptMsg;
    type State = Option<AttemptArgs>;
    type Arguments = AttemptArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: AttemptArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        // Work happens in a handler, not here: only handlers can be
        // interrupted by `kill`.
        myself.send_message(AttemptMsg::Run)?;
        Ok(Some(args))
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        AttemptMsg::Run: AttemptMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let Some(mut args) = state.take() else {
            return Ok(());
        };
        let result = run_attempt(&mut args).await;
        match &args.report {
            Report::Run(run) => {
                let _ = run.cast(RunMsg::AttemptFinished {
                    key: args.key,
                    attempt: args.ctx.attempt,
                    result,
                });
            }
            Report::Remote(send) => {
                let send = send.lock().unwrap_or_else(|p| p.into_inner()).take();
                if let Some(send) = send {
                    send(result);
                }
            }
        }
        myself.stop(None);
        Ok(())
    }
}

async fn run_attempt(args: &mut AttemptArgs) -> Result<Value, TaskError> {
    let _slot = args
        .pool
        .acquire()
        .await
        .map_err(|_| TaskError::retryable("shutdown", "the executor pool is closed"))?;
    let started = Instant::now();
    let input = std::mem::take(&mut args.input);
    // Every log line of the executor carries which attempt it belongs to.
    let span = tracing::info_span!(
        "attempt",
        node = %args.node,
        run = %args.ctx.run_id,
        task = %args.ctx.task_id,
        item = args.ctx.item,
        attempt = args.ctx.attempt,
    );
    let executor = &args.executor;
    let result = AssertUnwindSafe(executor.executor.execute(&args.ctx, input).instrument(span))
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| Err(TaskError::fatal("panic", panic_text(&*panic))));
    executor.duration.record(started.elapsed());
    result
}

/// The message of a panic payload.
pub(crate) fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    format!("executor panicked: {text}")
}
