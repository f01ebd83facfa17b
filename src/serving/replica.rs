//! A model replica: one actor that owns a loaded model and batches the
//! requests sent to it.
//!
//! Batching is adaptive. A request that finds the model idle runs as soon
//! as the requests already in the replica's mailbox have joined it (after
//! waiting up to `max_wait` for more, default zero), so a lone client pays
//! no batching delay; requests that arrive while a batch runs queue up and
//! go together, up to `max_batch`, as soon as it finishes. Under load the
//! batches grow by themselves; requests from different runs and pipeline
//! invocations share them. A model whose batch dimension is fixed runs one
//! request at a time.
//!
//! Where a batch runs depends on how long the model takes. A model whose
//! batches take more than [`INLINE_MAX`] runs on tokio's blocking pool, so
//! it cannot stall the runtime; a faster one (the iris classifier takes a
//! few microseconds) runs on the replica's own task, because handing it to
//! another thread and back would cost more than the inference. Each batch's
//! time decides for the next. One batch is in flight per replica.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::executor::TaskError;
use crate::inference::Model;
use crate::value::Value;

/// Batches that took longer than this run the next one off the replica's
/// task, on the blocking pool.
pub const INLINE_MAX: Duration = Duration::from_micros(200);

/// How a replica forms batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// Most requests run at once. Default 32.
    pub max_batch: usize,
    /// Longest an idle replica waits for more requests before it runs
    /// fewer than `max_batch`. Default zero: run at once.
    pub max_wait: Duration,
    /// Requests queued beyond which new ones are refused as `overloaded`.
    /// Default 4096.
    pub max_queue: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_batch: 32,
            max_wait: Duration::ZERO,
            max_queue: 4096,
        }
    }
}

/// The outputs of one request, or why not.
pub type Reply = RpcReplyPort<Result<Value, TaskError>>;

/// Messages of a [`Replica`].
pub enum ReplicaMsg {
    /// Run the model on one request (a map of input name to tensor or
    /// nested list); the reply carries the map of outputs.
    Infer(Value, Reply),
    /// Run a batch now, with every request queued so far (sent by the
    /// replica to itself, so that it comes after the requests already in
    /// the mailbox).
    Run,
    /// The batch in flight on the blocking pool finished after this long
    /// (sent by the replica to itself).
    BatchDone(Duration),
    /// `max_wait` passed for gathering batch number `.0` (sent by the
    /// replica to itself).
    Flush(u64),
    /// What the replica has done so far.
    Stats(RpcReplyPort<ReplicaStats>),
}

/// Counts of a replica's work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplicaStats {
    /// Requests taken into batches.
    pub requests: u64,
    /// Batches run.
    pub batches: u64,
    /// The largest batch.
    pub largest: usize,
}

impl ractor::Message for ReplicaMsg {}

impl std::fmt::Debug for ReplicaMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplicaMsg::Infer(..) => f.write_str("Infer"),
            ReplicaMsg::Run => f.write_str("Run"),
            ReplicaMsg::BatchDone(took) => write!(f, "BatchDone({took:?})"),
            ReplicaMsg::Flush(n) => write!(f, "Flush({n})"),
            ReplicaMsg::Stats(_) => f.write_str("Stats"),
        }
    }
}

/// What a replica serves: the model and how to batch for it.
#[derive(Debug, Clone)]
pub struct ReplicaArgs {
    /// The loaded model.
    pub model: Model,
    /// Batching settings.
    pub batch: BatchConfig,
    /// The model's `name@version`, for metrics labels.
    pub label: String,
}

/// The replica actor.
#[derive(Debug)]
pub struct Replica;

/// A replica's state.
#[derive(Debug)]
pub struct ReplicaState {
    model: Model,
    batch: BatchConfig,
    label: String,
    /// `symphony_model_batch_size{model}`, taken once.
    batch_sizes: metrics::Histogram,
    queue: VecDeque<(Value, Reply)>,
    /// A batch is running, or a `Run` is on its way.
    busy: bool,
    /// The last batch took long enough to run the next off the task.
    slow: bool,
    /// Number of the batch being gathered; a `Flush` for an older one is stale.
    gathering: u64,
    /// A `Flush` timer is pending for `gathering`.
    waiting: bool,
    stats: ReplicaStats,
}

impl Actor for Replica {
    type Msg = ReplicaMsg;
    type State = ReplicaState;
    type Arguments = ReplicaArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<ReplicaMsg>,
        args: ReplicaArgs,
    ) -> Result<ReplicaState, ActorProcessingErr> {
        let mut batch = args.batch;
        batch.max_batch = if args.model.batchable() {
            batch.max_batch.max(1)
        } else {
            1
        };
        Ok(ReplicaState {
            model: args.model,
            batch,
            batch_sizes: metrics::histogram!("symphony_model_batch_size", "model" => args.label.clone()),
            label: args.label,
            queue: VecDeque::new(),
            busy: false,
            slow: true,
            gathering: 0,
            waiting: false,
            stats: ReplicaStats::default(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ReplicaMsg>,
        msg: ReplicaMsg,
        state: &mut ReplicaState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ReplicaMsg::Infer(request, reply) => {
                if state.queue.len() >= state.batch.max_queue {
                    metrics::counter!("symphony_model_overloaded_total", "model" => state.label.clone())
                        .increment(1);
                    let _ = reply.send(Err(TaskError::retryable(
                        "overloaded",
                        format!(
                            "model {} has {} requests queued",
                            state.label,
                            state.queue.len()
                        ),
                    )));
                    return Ok(());
                }
                state.queue.push_back((request, reply));
                if state.busy {
                    return Ok(());
                }
                if state.queue.len() >= state.batch.max_batch || state.batch.max_wait.is_zero() {
                    state.busy = true;
                    let _ = myself.cast(ReplicaMsg::Run);
                } else if !state.waiting {
                    state.waiting = true;
                    let n = state.gathering;
                    myself.send_after(state.batch.max_wait, move || ReplicaMsg::Flush(n));
                }
            }
            ReplicaMsg::Flush(n) => {
                if n == state.gathering && state.waiting && !state.busy {
                    state.busy = true;
                    let _ = myself.cast(ReplicaMsg::Run);
                }
            }
            ReplicaMsg::Run => state.run_batch(&myself),
            ReplicaMsg::Stats(reply) => {
                let _ = reply.send(state.stats);
            }
            ReplicaMsg::BatchDone(took) => state.finished(&myself, took),
        }
        Ok(())
    }
}

impl ReplicaState {
    /// Takes up to `max_batch` queued requests and runs them: here when the
    /// model is fast, else on the blocking pool.
    fn run_batch(&mut self, myself: &ActorRef<ReplicaMsg>) {
        let n = self.queue.len().min(self.batch.max_batch);
        if n == 0 {
            self.busy = false;
            return;
        }
        let (requests, replies): (Vec<Value>, Vec<Reply>) = self.queue.drain(..n).unzip();
        self.waiting = false;
        self.gathering += 1;
        self.stats.requests += n as u64;
        self.stats.batches += 1;
        self.stats.largest = self.stats.largest.max(n);
        self.batch_sizes.record(n as f64);
        let model = self.model.clone();
        if !self.slow {
            let took = run(&model, requests, replies);
            self.finished(myself, took);
            return;
        }
        let me = myself.clone();
        tokio::task::spawn_blocking(move || {
            let took = run(&model, requests, replies);
            let _ = me.cast(ReplicaMsg::BatchDone(took));
        });
    }

    /// A batch took `took`: choose where the next runs, and start it if
    /// requests are waiting (they waited for the model: no reason to wait
    /// longer).
    fn finished(&mut self, myself: &ActorRef<ReplicaMsg>, took: Duration) {
        self.slow = took > INLINE_MAX;
        if self.queue.is_empty() {
            self.busy = false;
        } else {
            let _ = myself.cast(ReplicaMsg::Run);
        }
    }
}

/// Runs one batch and answers each request; how long it took. A panic in
/// the model answers every request of the batch with class `panic`.
fn run(model: &Model, requests: Vec<Value>, replies: Vec<Reply>) -> Duration {
    let started = Instant::now();
    let batch = std::panic::AssertUnwindSafe(move || model.infer_batch(requests));
    match std::panic::catch_unwind(batch) {
        Ok(results) => {
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result);
            }
        }
        Err(_) => {
            for reply in replies {
                let _ = reply.send(Err(TaskError::fatal("panic", "the model panicked")));
            }
        }
    }
    started.elapsed()
}

/// Sends one request to a replica and waits for its answer.
///
/// # Errors
/// The model's error, or class `replica` when the replica is gone.
pub async fn infer(replica: &ActorRef<ReplicaMsg>, request: Value) -> Result<Value, TaskError> {
    match replica
        .call(|reply| ReplicaMsg::Infer(request, reply), None)
        .await
    {
        Ok(ractor::rpc::CallResult::Success(result)) => result,
        Ok(_) | Err(_) => Err(TaskError::retryable(
            "replica",
            "the model replica stopped before answering",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iris() -> Model {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/models/iris.onnx");
        Model::load(&std::fs::read(path).unwrap()).unwrap()
    }

    async fn replica(batch: BatchConfig) -> ActorRef<ReplicaMsg> {
        let args = ReplicaArgs {
            model: iris(),
            batch,
            label: "iris@1".into(),
        };
        Actor::spawn(None, Replica, args).await.unwrap().0
    }

    fn row(x: f64) -> Value {
        Value::List(vec![Value::Float(x), 0.0.into(), 0.0.into(), 0.0.into()])
    }

    #[tokio::test]
    async fn concurrent_requests_share_batches_and_each_gets_its_own_answer() {
        let replica = replica(BatchConfig {
            max_batch: 32,
            max_wait: Duration::from_millis(200),
            max_queue: 4096,
        })
        .await;
        let requests = (0..64).map(|i| infer(&replica, row(if i % 2 == 0 { -3.0 } else { 3.0 })));
        let answers = futures::future::join_all(requests).await;
        for (i, answer) in answers.into_iter().enumerate() {
            let outputs = answer.unwrap();
            let Some(Value::Tensor(label)) = outputs.get("label") else {
                panic!("a label tensor: {outputs:?}");
            };
            assert_eq!(label.shape, vec![1], "one row back for one row in");
            let class = i64::from_le_bytes(label.data[..8].try_into().unwrap());
            // Far below or above the mean sepal length: different classes.
            assert_eq!(class == 0, i % 2 == 0, "request {i} got class {class}");
        }
        let stats = replica
            .call(ReplicaMsg::Stats, None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stats.requests, 64);
        assert_eq!(stats.largest, 32, "{stats:?}");
        assert!(
            stats.batches <= 4,
            "64 requests sent at once form few batches: {stats:?}"
        );
    }

    #[tokio::test]
    async fn a_lone_request_runs_at_once_and_a_full_queue_answers_overloaded() {
        let replica = replica(BatchConfig {
            max_batch: 32,
            max_wait: Duration::ZERO,
            max_queue: 0,
        })
        .await;
        let e = infer(&replica, row(0.0)).await.unwrap_err();
        assert_eq!(e.class, "overloaded");
        let replica = replica_default().await;
        let started = std::time::Instant::now();
        infer(&replica, row(0.0)).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(1));
        let e = infer(&replica, Value::List(vec![1.into()]))
            .await
            .unwrap_err();
        assert_eq!(e.class, "input", "{e}");
        assert!(e.message.contains("float_input"), "{e}");
    }

    #[tokio::test]
    async fn with_no_wait_requests_already_in_the_mailbox_still_share_a_batch() {
        let replica = replica_default().await;
        // Warm: the first batch tells the replica the model is fast.
        infer(&replica, row(0.0)).await.unwrap();
        let answers = futures::future::join_all((0..64).map(|_| infer(&replica, row(0.0)))).await;
        assert!(answers.iter().all(Result::is_ok));
        let stats = replica
            .call(ReplicaMsg::Stats, None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stats.requests, 65);
        assert_eq!(stats.largest, 32, "{stats:?}");
        assert_eq!(stats.batches, 3, "{stats:?}");
    }

    async fn replica_default() -> ActorRef<ReplicaMsg> {
        replica(BatchConfig::default()).await
    }
}
