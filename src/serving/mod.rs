//! Serving models on a node: warm replicas, and the `model/NAME@REF`
//! executor that workflows and pipelines use.
//!
//! A [`ModelHost`] keeps one [`Replica`] per model version a node has used:
//! the first request for a version loads it (on a blocking thread, off every
//! other request's path) and later requests find it warm. Every task and
//! pipeline invocation on the node that names the version shares that
//! replica, so their requests batch together.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use ractor::{Actor, ActorRef};
use rustc_hash::FxHashMap;
use tokio::sync::OnceCell;
use tracing::info;

use crate::executor::{AttemptContext, Executor, TaskError};
use crate::inference::Model;
use crate::registry::{ModelRef, ModelVersion, Registry};
use crate::value::Value;

mod deployments;
pub mod pipelines;
pub mod placement;
pub mod replica;

pub use deployments::{
    DeploymentStatus, Follow, RECONCILE_EVERY, REMOTE_TIMEOUT, VersionStatus, batch_of, follows,
    takes_canary,
};
pub use pipelines::{InvokeError, Pipeline, PipelineConfig, Pipelines};
pub use replica::{BatchConfig, Replica, ReplicaArgs, ReplicaMsg};

/// The `uses` prefix of model tasks: `model/NAME@REF`.
pub const MODEL_PREFIX: &str = "model/";
/// The executor entry serving every `model/NAME@REF`.
pub const MODEL_EXECUTOR: &str = "model/*";

type Slot = Arc<OnceCell<ActorRef<ReplicaMsg>>>;

/// A node's loaded models, one warm replica per version.
#[derive(Debug, Clone)]
pub struct ModelHost {
    inner: Arc<HostInner>,
}

#[derive(Debug)]
struct HostInner {
    registry: Registry,
    batch: BatchConfig,
    /// By artifact checksum.
    replicas: Mutex<FxHashMap<String, Slot>>,
    /// Deployed replicas and routing.
    deployments: deployments::Deployments,
}

impl ModelHost {
    /// A host resolving models in `registry`, batching with `batch`.
    pub fn new(registry: Registry, batch: BatchConfig) -> ModelHost {
        ModelHost {
            inner: Arc::new(HostInner {
                registry,
                batch,
                replicas: Mutex::new(FxHashMap::default()),
                deployments: deployments::Deployments::default(),
            }),
        }
    }

    /// The registry models are resolved in.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// Runs one request on the version `reference` names now: on a replica
    /// of the model's deployment when it serves that version (see
    /// [`follows`]), else on this node's replica of it.
    ///
    /// # Errors
    /// An unknown model or version (class `model`, not retried), a request
    /// that does not fit the model (class `input`), or the model's failure.
    pub async fn infer(&self, reference: &ModelRef, request: Value) -> Result<Value, TaskError> {
        let version = self
            .inner
            .registry
            .resolve(reference)
            .map_err(|e| TaskError::fatal("model", e.to_string()))?;
        if let Some((id, spec)) = self.route(reference, &version) {
            return self
                .infer_deployed(&version.name, &id, &spec, request)
                .await;
        }
        let replica = self.replica(&version).await?;
        replica::infer(&replica, request).await
    }

    /// The warm replica of `version`, loading the model on first use.
    ///
    /// # Errors
    /// When the artifact is not on this node or does not load.
    pub async fn replica(&self, version: &ModelVersion) -> Result<ActorRef<ReplicaMsg>, TaskError> {
        if let Some(replica) = self.running_deployed(&version.checksum) {
            return Ok(replica);
        }
        let batch = self.inner.batch;
        let slot = {
            let mut replicas = self
                .inner
                .replicas
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            Arc::clone(replicas.entry(version.checksum.clone()).or_default())
        };
        let replica = slot.get_or_try_init(|| self.start(version, batch)).await?;
        if !matches!(
            replica.get_status(),
            ractor::ActorStatus::Stopping | ractor::ActorStatus::Stopped
        ) {
            return Ok(replica.clone());
        }
        // It stopped (a panic in the actor): start a new one in a new slot.
        let fresh = Slot::default();
        self.inner
            .replicas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(version.checksum.clone(), Arc::clone(&fresh));
        fresh
            .get_or_try_init(|| self.start(version, batch))
            .await
            .cloned()
    }

    async fn start(
        &self,
        version: &ModelVersion,
        batch: BatchConfig,
    ) -> Result<ActorRef<ReplicaMsg>, TaskError> {
        let label = format!("{}@{}", version.name, version.version);
        let (registry, checksum) = (self.inner.registry.clone(), version.checksum.clone());
        let started = std::time::Instant::now();
        // Fetched from a node that holds it when this one does not.
        let bytes = registry
            .obtain_artifact(&checksum)
            .await
            .map_err(|e| TaskError::retryable("model", e.to_string()))?;
        let model = tokio::task::spawn_blocking(move || {
            Model::load(&bytes).map_err(|e| TaskError::fatal("model", e.to_string()))
        })
        .await
        .map_err(|e| TaskError::retryable("model", format!("loading the model failed: {e}")))??;
        let loaded = started.elapsed();
        metrics::histogram!("symphony_model_load_seconds").record(loaded.as_secs_f64());
        info!(model = %label, took = ?loaded, "Model loaded.");
        let args = ReplicaArgs {
            model,
            batch,
            label,
        };
        Actor::spawn(None, Replica, args)
            .await
            .map(|(actor, _)| actor)
            .map_err(|e| TaskError::retryable("model", format!("cannot start a replica: {e}")))
    }

    /// Stops every replica, and the deployments' reconciler.
    pub fn stop(&self) {
        self.stop_deployments();
        let replicas = std::mem::take(
            &mut *self
                .inner
                .replicas
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for slot in replicas.values() {
            if let Some(replica) = slot.get() {
                replica.stop(None);
            }
        }
    }
}

/// The executor behind `uses: model/NAME@REF`: its `with` is the request (a
/// map of input name to tensor or nested list of numbers), its output the
/// map of output name to tensor.
#[derive(Debug, Clone)]
pub struct ModelExecutor {
    host: ModelHost,
}

impl ModelExecutor {
    /// Runs models on `host`.
    pub fn new(host: ModelHost) -> ModelExecutor {
        ModelExecutor { host }
    }
}

#[async_trait]
impl Executor for ModelExecutor {
    async fn execute(&self, ctx: &AttemptContext, input: Value) -> Result<Value, TaskError> {
        let Some(text) = ctx.uses.strip_prefix(MODEL_PREFIX) else {
            return Err(TaskError::fatal(
                "model",
                format!("\"{}\" is not a model/NAME@REF executor", ctx.uses),
            ));
        };
        let reference =
            ModelRef::parse(text).map_err(|e| TaskError::fatal("model", e.to_string()))?;
        self.host.infer(&reference, input).await
    }

    fn serves(&self, uses: &str) -> bool {
        uses.strip_prefix(MODEL_PREFIX)
            .and_then(|text| ModelRef::parse(text).ok())
            .is_some_and(|reference| self.host.registry().resolve(&reference).is_ok())
    }
}
