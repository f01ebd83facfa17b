//! Pipelines: `durability: none` workflows registered under a name and
//! invoked at request speed.
//!
//! An invocation is an ordinary run with no journal: inputs in, outputs
//! out, nothing written to disk. What bounds memory is the number of
//! invocations in flight on the node: beyond [`PipelineConfig::max_in_flight`]
//! a new one is refused at once as [`InvokeError::Overloaded`] (HTTP 429 with
//! `Retry-After`), never queued without end.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use tokio::sync::Semaphore;

use crate::engine::{Engine, RunOutcome};
use crate::executor::Executors;
use crate::store::RunStatus;
use crate::value::{Map, Value};
use crate::wdl::{self, Durability, Sources, Workflow};

/// How many invocations a node runs at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipelineConfig {
    /// Invocations in flight on this node, over all pipelines; more are
    /// refused. Default 1024.
    pub max_in_flight: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            max_in_flight: 1024,
        }
    }
}

/// A registered pipeline.
#[derive(Debug)]
pub struct Pipeline {
    /// Its name: the workflow's `name`.
    pub name: String,
    /// The compiled workflow.
    pub workflow: Arc<Workflow>,
    /// `symphony_pipeline_invoke_seconds{pipeline}`, taken once.
    durations: metrics::Histogram,
}

/// Why a pipeline was not registered.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The workflow does not compile.
    #[error("the workflow is invalid:\n{0}")]
    Invalid(wdl::Diagnostics),
    /// Pipelines run without a journal.
    #[error(
        "pipeline \"{0}\" has durability {1}; pipelines run without a journal and need `durability: none`"
    )]
    Durable(String, &'static str),
    /// The pipelines folder cannot be read.
    #[error("cannot read the pipelines folder {0}: {1}")]
    Folder(String, std::io::Error),
}

/// Why an invocation gave no outputs.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// No pipeline has this name.
    #[error("no pipeline named \"{0}\"")]
    Unknown(String),
    /// Too many invocations in flight on this node.
    #[error("{0} invocations are in flight on this node; retry shortly")]
    Overloaded(usize),
    /// The inputs do not fit the pipeline.
    #[error("invalid inputs: {}", .0.join("; "))]
    Inputs(Vec<String>),
    /// A task failed because of what it was given (class `input`).
    #[error("{0}")]
    BadRequest(String),
    /// The run failed or was cancelled for another reason.
    #[error("{0}")]
    Failed(String),
    /// The run could not start.
    #[error("cannot start the pipeline: {0}")]
    Start(String),
}

/// An invocation's outputs: read in place from the run's outcome, not
/// copied out of it.
#[derive(Debug, Clone)]
pub struct Outputs(Arc<RunOutcome>);

impl std::ops::Deref for Outputs {
    type Target = Value;

    fn deref(&self) -> &Value {
        &self.0.outputs
    }
}

/// The pipelines of one node.
#[derive(Debug, Clone)]
pub struct Pipelines {
    by_name: Arc<RwLock<BTreeMap<String, Arc<Pipeline>>>>,
    in_flight: Arc<Semaphore>,
    config: PipelineConfig,
}

impl Pipelines {
    /// No pipelines yet.
    pub fn new(config: PipelineConfig) -> Pipelines {
        Pipelines {
            by_name: Arc::default(),
            in_flight: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
            config,
        }
    }

    /// Compiles `sources` and registers the workflow under its name,
    /// replacing a pipeline of that name.
    ///
    /// # Errors
    /// When the workflow does not compile or is not `durability: none`.
    pub fn register(
        &self,
        sources: &Sources,
        executors: &Executors,
    ) -> Result<Arc<Pipeline>, RegisterError> {
        let workflow = wdl::compile(sources, executors).map_err(RegisterError::Invalid)?;
        if workflow.durability != Durability::None {
            return Err(RegisterError::Durable(
                workflow.name.clone(),
                workflow.durability.as_str(),
            ));
        }
        let pipeline = Arc::new(Pipeline {
            name: workflow.name.clone(),
            durations: metrics::histogram!(
                "symphony_pipeline_invoke_seconds",
                "pipeline" => workflow.name.clone()
            ),
            workflow: Arc::new(workflow),
        });
        self.write()
            .insert(pipeline.name.clone(), Arc::clone(&pipeline));
        tracing::info!(pipeline = %pipeline.name, "Pipeline registered.");
        Ok(pipeline)
    }

    /// Registers every `*.yaml` / `*.yml` file of `dir`, in name order.
    ///
    /// # Errors
    /// The first file that does not register, naming it.
    pub fn register_dir(
        &self,
        dir: &Path,
        executors: &Executors,
    ) -> Result<Vec<String>, RegisterError> {
        let folder_error = |e| RegisterError::Folder(dir.display().to_string(), e);
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(folder_error)?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
            .collect();
        files.sort();
        let mut names = Vec::new();
        for file in files {
            names.push(
                self.register(&Sources::read(&file), executors)?
                    .name
                    .clone(),
            );
        }
        Ok(names)
    }

    /// The pipeline called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Pipeline>> {
        self.read().get(name).cloned()
    }

    /// Every pipeline, by name.
    pub fn list(&self) -> Vec<Arc<Pipeline>> {
        self.read().values().cloned().collect()
    }

    /// Removes a pipeline; whether it was there.
    pub fn remove(&self, name: &str) -> bool {
        self.write().remove(name).is_some()
    }

    /// How many invocations are running on this node now.
    pub fn in_flight(&self) -> usize {
        self.config
            .max_in_flight
            .max(1)
            .saturating_sub(self.in_flight.available_permits())
    }

    /// Runs pipeline `name` on `inputs` and returns its outputs.
    ///
    /// # Errors
    /// See [`InvokeError`].
    pub async fn invoke(
        &self,
        engine: &Engine,
        name: &str,
        inputs: Map,
    ) -> Result<Outputs, InvokeError> {
        let pipeline = self
            .get(name)
            .ok_or_else(|| InvokeError::Unknown(name.to_owned()))?;
        let Ok(_permit) = self.in_flight.try_acquire() else {
            metrics::counter!("symphony_pipeline_overloaded_total").increment(1);
            return Err(InvokeError::Overloaded(self.config.max_in_flight));
        };
        let started = std::time::Instant::now();
        let inputs = wdl::check_inputs(&pipeline.workflow, &inputs).map_err(InvokeError::Inputs)?;
        let mut handle = engine
            .invoke(Arc::clone(&pipeline.workflow), inputs)
            .await
            .map_err(|e| InvokeError::Start(e.to_string()))?;
        let outcome = handle.wait().await;
        pipeline.durations.record(started.elapsed().as_secs_f64());
        if outcome.status == RunStatus::Succeeded {
            return Ok(Outputs(outcome));
        }
        let failed = outcome
            .tasks
            .iter()
            .find_map(|t| t.error.as_ref().map(|e| (t.id.as_str(), e.as_str())));
        Err(match failed {
            Some((task, error)) if error.starts_with("input:") => {
                InvokeError::BadRequest(format!("task {task}: {error}"))
            }
            Some((task, error)) => InvokeError::Failed(format!("task {task}: {error}")),
            None => InvokeError::Failed(
                outcome
                    .error
                    .clone()
                    .unwrap_or_else(|| format!("the run ended {:?}", outcome.status)),
            ),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Pipeline>>> {
        self.by_name.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Pipeline>>> {
        self.by_name.write().unwrap_or_else(|p| p.into_inner())
    }
}
