//! A model replica: one actor that owns a loaded model and batches the
//! requests sent to it.
//!
//! Batching is adaptive. A request that finds the model idle runs at once
//! (after waiting up to `max_wait` for company, default zero), so a lone
//! client pays no batching delay; requests that arrive while a batch runs
//! queue up and go together, up to `max_batch`, as soon as it finishes. Under
//! load the batches grow by themselves; requests from different runs and
//! pipeline invocations share them. A model whose batch dimension is fixed
//! runs one request at a time.
//!
//! The model runs on tokio's blocking pool, never on the actor's thread, so
//! a slow model cannot stall the runtime; one batch is in flight per replica.

use std::collections::VecDeque;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::executor::TaskError;
use crate::inference::Model;
use crate::value::Value;

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
    /// The batch in flight finished (sent by the replica to itself).
    BatchDone,
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
            ReplicaMsg::BatchDone => f.write_str("BatchDone"),
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
    queue: VecDeque<(Value, Reply)>,
    /// A batch is running.
    busy: bool,
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
            label: args.label,
            queue: VecDeque::new(),
            busy: false,
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
                    state.start_batch(&myself);
                } else if !state.waiting {
                    state.waiting = true;
                    let n = state.gathering;
                    myself.send_after(state.batch.max_wait, move || ReplicaMsg::Flush(n));
                }
            }
            ReplicaMsg::Flush(n) => {
                if n == state.gathering && state.waiting && !state.busy {
                    state.start_batch(&myself);
                }
            }
            ReplicaMsg::Stats(reply) => {
                let _ = reply.send(state.stats);
            }
            ReplicaMsg::BatchDone => {
                state.busy = false;
                if !state.queue.is_empty() {
                    // These waited for the model: no reason to wait longer.
                    state.start_batch(&myself);
                }
            }
        }
        Ok(())
    }
}

impl ReplicaState {
    /// Takes up to `max_batch` queued requests and runs them off the actor.
    fn start_batch(&mut self, myself: &ActorRef<ReplicaMsg>) {
        let n = self.queue.len().min(self.batch.max_batch);
        let (requests, replies): (Vec<Value>, Vec<Reply>) = self.queue.drain(..n).unzip();
        self.busy = true;
        self.waiting = false;
        self.gathering += 1;
        self.stats.requests += n as u64;
        self.stats.batches += 1;
        self.stats.largest = self.stats.largest.max(n);
        metrics::histogram!("symphony_model_batch_size", "model" => self.label.clone())
            .record(n as f64);
        let model = self.model.clone();
        let me = myself.clone();
        tokio::task::spawn_blocking(move || {
            let run = std::panic::AssertUnwindSafe(move || model.infer_batch(requests));
            match std::panic::catch_unwind(run) {
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
            // Always: the replica takes the next batch even after a panic.
            let _ = me.cast(ReplicaMsg::BatchDone);
        });
    }
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

    async fn replica_default() -> ActorRef<ReplicaMsg> {
        replica(BatchConfig::default()).await
    }
}
