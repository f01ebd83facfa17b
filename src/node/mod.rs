//! A Symphony node: the process `symphony node` runs. It opens the data dir,
//! starts the engine, joins the cluster, resumes the `local` runs it owned,
//! opens the model registry, and serves the HTTP API until SIGINT or
//! SIGTERM.

pub mod config;
mod registry_log;

use std::sync::Arc;

use tracing::info;

pub use self::config::NodeConfig;
use crate::api::{self, ApiState, RaftPart};
use crate::cluster::{Cluster, ClusterConfig, HeartbeatTimes};
use crate::engine::{Engine, EngineConfig, SubmittedSource};
use crate::executor::Executors;
use crate::raft::journal::ReplicatedStore;
use crate::raft::{RaftConfig, Replication, failover};
use crate::registry::Registry;
use crate::serving::{
    BatchConfig, MODEL_EXECUTOR, ModelExecutor, ModelHost, PipelineConfig, Pipelines,
};
use crate::store::SledStore;
use crate::wdl;

/// The cookie of a node alone on loopback, which needs none (the
/// configuration refuses a missing cookie anywhere else).
const LOOPBACK_COOKIE: &str = "symphony-loopback";

/// Runs a node until it is stopped.
///
/// # Errors
/// When the data dir, the cluster port or the HTTP port cannot be opened.
pub async fn run(config: NodeConfig) -> Result<(), String> {
    let metrics = api::install_metrics();
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| format!("cannot create data dir {}: {e}", config.data_dir.display()))?;
    let store = Arc::new(SledStore::open(&config.data_dir).map_err(|e| e.to_string())?);
    let registry = Registry::open(&config.data_dir, &config.name).map_err(|e| e.to_string())?;
    registry.set_cache_limit(config.model_cache);
    // With a replicated log, registry writes go through it (strongly
    // consistent) instead of spreading by anti-entropy: the registry is
    // told before the cluster starts, so it never merges a record from
    // elsewhere.
    let registry_log = (!config.raft.voters.is_empty()).then(|| {
        let log = Arc::new(registry_log::RegistryLog::default());
        registry.attach_log(log.clone());
        log
    });
    let mut executors = Executors::standard(&config.executor_config());
    let models = ModelHost::new(registry.clone(), BatchConfig::default());
    executors.insert(MODEL_EXECUTOR, Arc::new(ModelExecutor::new(models.clone())));
    let compile_with = executors.clone();
    let engine = Engine::start(
        EngineConfig {
            node: config.name.clone(),
            slots: config.slots,
            ..EngineConfig::default()
        },
        executors.clone(),
        store,
        Arc::new(move |src: &SubmittedSource| {
            wdl::compile(&src.to_sources(), &compile_with).map_err(|d| d.to_string())
        }),
    )
    .await
    .map_err(|e| e.to_string())?;
    let cluster = Cluster::start(
        ClusterConfig {
            name: config.name.clone(),
            listen: config.listen,
            advertise: config.advertise_host(),
            addr: config.cluster_addr(),
            seeds: config.seeds.clone(),
            cookie: config
                .cookie()
                .unwrap_or_else(|| LOOPBACK_COOKIE.to_owned()),
            labels: config.labels.clone(),
            slots: config.slots as u32,
            times: HeartbeatTimes {
                interval: config.heartbeat.interval,
                suspect_after: config.heartbeat.suspect_after,
                down_after: config.heartbeat.down_after,
            },
            registry: Some(registry.clone()),
            corrupt_chunks: config.chaos.corrupt_chunks,
            nemesis: config.chaos.nemesis,
        },
        engine.clone(),
    )
    .await?;
    let raft = if config.raft.voters.is_empty() {
        None
    } else {
        let replication = Replication::start(
            RaftConfig {
                registry: Some(Arc::new(registry_log::ApplyToRegistry(registry.clone()))),
                ..RaftConfig::new(&config.name, config.raft.voters.clone())
            },
            &config.data_dir.join("raft"),
            &cluster,
        )
        .await?;
        if let Some(log) = &registry_log {
            log.bind(&replication);
        }
        let journal = Arc::new(ReplicatedStore::new(Arc::clone(&replication)));
        engine.attach_replicated(journal.clone());
        tokio::spawn(failover::run(
            Arc::clone(&replication),
            engine.clone(),
            cluster.view().clone(),
        ));
        Some(RaftPart {
            replication,
            journal,
        })
    };
    // Deployments place replicas over the membership view; peers reach
    // this node's replicas through its agent.
    models.serve_deployments(cluster.view().clone());
    cluster.serve_replicas(Arc::new(models.clone()));
    let resumed = engine
        .resume_incomplete()
        .await
        .map_err(|e| e.to_string())?;
    if !resumed.is_empty() {
        info!(runs = resumed.len(), "Resumed unfinished runs.");
    }
    let listener = tokio::net::TcpListener::bind(config.http)
        .await
        .map_err(|e| format!("cannot listen for HTTP on {}: {e}", config.http))?;
    info!(
        node = %config.name,
        cluster = %config.cluster_addr(),
        http = %config.http,
        "Node started."
    );
    let pipelines = Pipelines::new(PipelineConfig {
        max_in_flight: config.max_invocations,
    });
    if let Some(dir) = &config.pipelines {
        let names = pipelines
            .register_dir(dir, &executors)
            .map_err(|e| e.to_string())?;
        info!(pipelines = ?names, "Pipelines registered from the pipelines folder.");
    }
    let state = ApiState {
        token: config.api_token(),
        metrics,
        registry,
        pipelines,
        models: Some(models.clone()),
        raft: raft.clone(),
        ..ApiState::new(engine.clone(), executors, cluster.view().clone())
    };
    let served = api::serve(listener, state, stopped()).await;
    cluster.stop().await;
    engine.shutdown().await;
    if let Some(raft) = &raft {
        raft.replication.shutdown().await;
    }
    models.stop();
    served.map_err(|e| format!("http server failed: {e}"))
}

/// Completes on SIGINT or SIGTERM.
async fn stopped() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler installs");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
