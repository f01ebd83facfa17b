//! Deployed models on one node: the reconciler that starts the replicas the
//! deployments place here and stops those no longer placed here, and the
//! router that sends a model request to a replica of the deployed version.
//!
//! Nothing coordinates this: every node reads the same deployment records
//! (replicated with the registry) and its own membership view, and runs
//! [`plan`](super::placement::plan). The reconciler runs on every change it
//! is told of (a deploy through this node's API) and otherwise every
//! [`RECONCILE_EVERY`], which is how replicated records and membership
//! changes (a node lost: its replica is placed again) reach it.
//!
//! Routing (see `docs/models.md`): a request for `NAME` or `NAME@ALIAS`
//! whose version is the deployment's primary or canary follows the
//! deployment: the canary takes exactly `percent` of every 100 requests this
//! node routes, the primary the rest. `NAME@N` naming the primary or the
//! canary goes to that version's replicas, without a split. Any other
//! version, or a model without a deployment, loads on this node as before.
//! Then the replica: this node's when the plan puts one here, else one of
//! the planned nodes in turn, through its node agent.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;
use ractor::ActorRef;
use serde::Serialize;
use tokio::sync::Notify;
use tracing::{info, warn};

use super::placement::{Plan, plan};
use super::replica::{self, BatchConfig, ReplicaMsg};
use super::{ModelHost, Slot};
use crate::cluster::agent::{AgentMsg, ReplicaHost, agent_of};
use crate::cluster::wire::{InferRequest, Inferred, Wire};
use crate::cluster::{ClusterView, Member, Nemesis, PeerState};
use crate::executor::TaskError;
use crate::registry::{
    DeploymentSpec, ModelRef, ModelVersion, RegistryError, VersionId, VersionRef,
};
use crate::value::Value;

/// How often the reconciler looks at the deployments and the membership
/// when nothing told it of a change.
pub const RECONCILE_EVERY: Duration = Duration::from_millis(250);

/// Longest a request waits for a replica on another node.
pub const REMOTE_TIMEOUT: Duration = Duration::from_secs(30);

/// The deployment side of a [`ModelHost`].
#[derive(Debug, Default)]
pub(super) struct Deployments {
    /// The membership view; without it the node is alone.
    cluster: OnceLock<ClusterView>,
    /// Replicas the deployments place on this node, by artifact checksum.
    replicas: Mutex<HashMap<String, Deployed>>,
    /// Errors already logged, by checksum (logged again when they change).
    failing: Mutex<HashMap<String, String>>,
    /// Requests this node routed, by (model, version number).
    routed: Mutex<BTreeMap<(String, u32), u64>>,
    /// Requests split between primary and canary so far.
    split: AtomicU64,
    /// Turns over the remote replicas.
    next_remote: AtomicUsize,
    /// Wakes the reconciler.
    wake: Notify,
    /// The reconciler's task.
    reconciler: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// A replica a deployment placed here.
#[derive(Debug)]
struct Deployed {
    version: ModelVersion,
    batch: BatchConfig,
    slot: Slot,
}

/// Which replicas a request follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Follow {
    /// The deployment: primary or canary, by the canary's percent.
    Split,
    /// This version of the deployment (primary or canary), without a split.
    Pin(VersionId),
    /// Not the deployment: load the version on this node.
    Local,
}

/// Whether a request for `reference`, which resolves to `resolved`, follows
/// `spec` (see the module documentation).
pub fn follows(reference: &ModelRef, resolved: &ModelVersion, spec: &DeploymentSpec) -> Follow {
    let id = resolved.id();
    let deployed = spec.targets().any(|t| *t == id);
    match &reference.version {
        VersionRef::Latest => Follow::Split,
        VersionRef::Alias(_) if deployed => Follow::Split,
        VersionRef::Number(_) if deployed => Follow::Pin(id),
        _ => Follow::Local,
    }
}

/// Whether request number `n` (from 0) goes to a canary taking `percent`:
/// exactly `percent` of every 100 consecutive requests do, evenly spread.
pub fn takes_canary(n: u64, percent: u8) -> bool {
    let p = u64::from(percent.min(100));
    (n % 100 + 1) * p / 100 > (n % 100) * p / 100
}

/// The batch settings of a deployment's replicas.
pub fn batch_of(spec: &DeploymentSpec) -> BatchConfig {
    BatchConfig {
        max_batch: spec.max_batch.max(1) as usize,
        max_wait: Duration::from_millis(spec.max_wait_ms),
        ..BatchConfig::default()
    }
}

/// A deployment as one node sees it: `GET /api/v1/models/{name}/deployment`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeploymentStatus {
    /// The model.
    pub name: String,
    /// Whether it is deployed (false after an undeploy).
    pub deployed: bool,
    /// Counts the writes to its deployment.
    pub generation: u64,
    /// The node that wrote the deployment.
    pub by: String,
    /// When it was written, ms since the Unix epoch.
    pub updated_ms: u64,
    /// Replicas of the primary asked for.
    pub replicas: u32,
    /// Most requests a replica batches.
    pub max_batch: u32,
    /// Longest an idle replica waits for more requests, in ms.
    pub max_wait_ms: u64,
    /// Labels a node must carry to hold a replica.
    pub placement: BTreeMap<String, String>,
    /// The primary version and where its replicas run.
    pub primary: Option<VersionStatus>,
    /// The canary version and where its replicas run.
    pub canary: Option<VersionStatus>,
    /// Replicas asked for that no node can take now.
    pub unplaced: u32,
    /// What a rollback returns to.
    pub previous: Option<DeploymentSpec>,
    /// Requests this node routed to each version, by version number.
    pub requests: BTreeMap<String, u64>,
}

/// One version of a deployment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VersionStatus {
    /// Its number.
    pub version: u32,
    /// Its artifact.
    pub checksum: String,
    /// Percent of the requests it takes.
    pub percent: u8,
    /// The nodes running its replicas, as this node computes them.
    pub nodes: Vec<String>,
}

impl ModelHost {
    /// Places deployments over `view` and starts the reconciler (once).
    /// Must be called from within a tokio runtime.
    pub fn serve_deployments(&self, view: ClusterView) {
        let _ = self.inner.deployments.cluster.set(view);
        let mut task = self
            .inner
            .deployments
            .reconciler
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if task.is_some() {
            return;
        }
        let host = self.clone();
        *task = Some(tokio::spawn(async move {
            loop {
                host.reconcile().await;
                let wake = host.inner.deployments.wake.notified();
                let _ = tokio::time::timeout(RECONCILE_EVERY, wake).await;
            }
        }));
    }

    /// Tells the reconciler a deployment changed.
    pub fn deployments_changed(&self) {
        self.inner.deployments.wake.notify_one();
    }

    /// Stops the reconciler and this node's deployed replicas.
    pub(super) fn stop_deployments(&self) {
        let d = &self.inner.deployments;
        if let Some(task) = d
            .reconciler
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            task.abort();
        }
        let replicas = std::mem::take(&mut *d.replicas.lock().unwrap_or_else(|p| p.into_inner()));
        for deployed in replicas.values() {
            if let Some(replica) = deployed.slot.get() {
                replica.stop(None);
            }
        }
    }

    /// The deployment of `name` as this node sees it.
    ///
    /// # Errors
    /// [`RegistryError::NotDeployed`] when it never was deployed; a bad name.
    pub fn deployment_status(&self, name: &str) -> Result<DeploymentStatus, RegistryError> {
        crate::registry::check_name(name)?;
        let registry = &self.inner.registry;
        let record = registry
            .deployment(name)
            .ok_or_else(|| RegistryError::NotDeployed(name.to_owned()))?;
        let requests = self
            .inner
            .deployments
            .routed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|((model, _), _)| model == name)
            .map(|((_, version), n)| (version.to_string(), *n))
            .collect();
        let mut status = DeploymentStatus {
            name: name.to_owned(),
            deployed: record.spec.is_some(),
            generation: record.generation,
            by: record.by.clone(),
            updated_ms: record.stamp.wall_ms,
            replicas: 0,
            max_batch: 0,
            max_wait_ms: 0,
            placement: BTreeMap::new(),
            primary: None,
            canary: None,
            unplaced: 0,
            previous: record.previous.clone(),
            requests,
        };
        let Some(spec) = record.spec else {
            return Ok(status);
        };
        let placed = self.plan(name, &spec);
        let checksum = |id: &VersionId| {
            registry
                .version_by_id(name, id)
                .map(|v| v.checksum)
                .unwrap_or_default()
        };
        let canary_percent = spec.canary.as_ref().map_or(0, |c| c.percent);
        status.primary = Some(VersionStatus {
            version: spec.primary_version,
            checksum: checksum(&spec.primary),
            percent: 100 - canary_percent,
            nodes: placed.primary,
        });
        status.canary = spec.canary.as_ref().map(|c| VersionStatus {
            version: c.version,
            checksum: checksum(&c.target),
            percent: c.percent,
            nodes: placed.canary,
        });
        status.unplaced = placed.unplaced;
        status.replicas = spec.replicas;
        status.max_batch = spec.max_batch;
        status.max_wait_ms = spec.max_wait_ms;
        status.placement = spec.placement;
        Ok(status)
    }

    /// This node's name and the members it sees (itself alone without a
    /// cluster).
    fn members(&self) -> (String, Vec<Member>) {
        match self.inner.deployments.cluster.get() {
            Some(view) => {
                let snapshot = view.snapshot();
                (snapshot.node, snapshot.members)
            }
            None => {
                let me = self.inner.registry.node().to_owned();
                let member = Member {
                    name: me.clone(),
                    addr: String::new(),
                    state: PeerState::Up,
                    labels: BTreeMap::new(),
                    slots: 1,
                    load: 0,
                    rtt_ms: None,
                    last_seen_ms: 0,
                    artifacts: Vec::new(),
                };
                (me, vec![member])
            }
        }
    }

    /// The nodes holding the artifact of version `id` of `name`.
    fn holders(&self, name: &str, id: &VersionId) -> BTreeSet<String> {
        let Some(view) = self.inner.deployments.cluster.get() else {
            return BTreeSet::new();
        };
        match self.inner.registry.version_by_id(name, id) {
            Ok(v) => view.holders(&v.checksum).into_iter().collect(),
            Err(_) => BTreeSet::new(),
        }
    }

    /// Where the replicas of `spec` go, as this node sees the cluster.
    fn plan(&self, name: &str, spec: &DeploymentSpec) -> Plan {
        let (_, members) = self.members();
        let canary = spec
            .canary
            .as_ref()
            .map(|c| self.holders(name, &c.target))
            .unwrap_or_default();
        plan(spec, &members, &self.holders(name, &spec.primary), &canary)
    }

    /// Starts the replicas the deployments place here and stops the others.
    async fn reconcile(&self) {
        let (me, _) = self.members();
        let registry = &self.inner.registry;
        let mut want: HashMap<String, (ModelVersion, BatchConfig)> = HashMap::new();
        for (name, spec) in registry.deployments() {
            let placed = self.plan(&name, &spec);
            let mut here = Vec::new();
            if placed.primary.contains(&me) {
                here.push(&spec.primary);
            }
            if let Some(canary) = &spec.canary {
                if placed.canary.contains(&me) {
                    here.push(&canary.target);
                }
            }
            for id in here {
                match registry.version_by_id(&name, id) {
                    Ok(v) => {
                        want.insert(v.checksum.clone(), (v, batch_of(&spec)));
                    }
                    Err(e) => self.failed(&id.to_string(), &name, &e.to_string()),
                }
            }
        }
        let stale: Vec<Deployed> = {
            let mut replicas = self
                .inner
                .deployments
                .replicas
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let gone: Vec<String> = replicas
                .iter()
                .filter(|(checksum, d)| {
                    want.get(*checksum)
                        .is_none_or(|(_, batch)| *batch != d.batch)
                        || d.slot.get().is_some_and(stopped)
                })
                .map(|(checksum, _)| checksum.clone())
                .collect();
            gone.iter().filter_map(|c| replicas.remove(c)).collect()
        };
        for d in stale {
            if let Some(replica) = d.slot.get() {
                replica.stop(None);
            }
            metrics::gauge!("symphony_model_replicas", "model" => d.version.name.clone(), "version" => d.version.version.to_string())
                .set(0.0);
            info!(model = %d.version.name, version = d.version.version, "Deployed replica stopped.");
        }
        for (checksum, (version, batch)) in want {
            let fresh = !self
                .inner
                .deployments
                .replicas
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(&checksum);
            match self.deployed_replica(&version, batch).await {
                Ok(_) => {
                    self.inner
                        .deployments
                        .failing
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&checksum);
                    if fresh {
                        metrics::gauge!("symphony_model_replicas", "model" => version.name.clone(), "version" => version.version.to_string())
                            .set(1.0);
                        info!(model = %version.name, version = version.version, "Deployed replica started.");
                    }
                }
                Err(e) => self.failed(&checksum, &version.name, &e.to_string()),
            }
        }
    }

    /// Logs a replica that cannot start, once per distinct error.
    fn failed(&self, key: &str, model: &str, error: &str) {
        let mut failing = self
            .inner
            .deployments
            .failing
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if failing.get(key).map(String::as_str) != Some(error) {
            warn!(model = %model, error = %error, "Deployed replica cannot start; trying again.");
            failing.insert(key.to_owned(), error.to_owned());
        }
    }

    /// This node's replica of deployed `version` with `batch`, started (and
    /// recorded as deployed) if need be. The load is shared with whoever
    /// asks at the same time.
    ///
    /// # Errors
    /// When the model cannot be obtained or loaded; the entry is removed
    /// so the next call tries again.
    async fn deployed_replica(
        &self,
        version: &ModelVersion,
        batch: BatchConfig,
    ) -> Result<ActorRef<ReplicaMsg>, TaskError> {
        let slot = {
            let mut replicas = self
                .inner
                .deployments
                .replicas
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let entry = replicas
                .entry(version.checksum.clone())
                .or_insert_with(|| Deployed {
                    version: version.clone(),
                    batch,
                    slot: Slot::default(),
                });
            Arc::clone(&entry.slot)
        };
        match slot.get_or_try_init(|| self.start(version, batch)).await {
            Ok(replica) => Ok(replica.clone()),
            Err(e) => {
                let mut replicas = self
                    .inner
                    .deployments
                    .replicas
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                if replicas
                    .get(&version.checksum)
                    .is_some_and(|d| Arc::ptr_eq(&d.slot, &slot))
                {
                    replicas.remove(&version.checksum);
                }
                Err(e)
            }
        }
    }

    /// The deployed replica of `checksum` on this node, if one runs.
    pub(super) fn running_deployed(&self, checksum: &str) -> Option<ActorRef<ReplicaMsg>> {
        self.inner
            .deployments
            .replicas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(checksum)
            .and_then(|d| d.slot.get().cloned())
            .filter(|r| !stopped(r))
    }

    /// The replica this node runs `version` on for a request that is not
    /// routed further: its deployed replica (started with the deployment's
    /// batching if need be) when the deployment serves it, else the plain
    /// one.
    async fn local_replica(
        &self,
        version: &ModelVersion,
    ) -> Result<ActorRef<ReplicaMsg>, TaskError> {
        if let Some(replica) = self.running_deployed(&version.checksum) {
            return Ok(replica);
        }
        let spec = self
            .inner
            .registry
            .deployment(&version.name)
            .and_then(|d| d.spec)
            .filter(|s| s.targets().any(|t| *t == version.id()));
        match spec {
            Some(spec) => self.deployed_replica(version, batch_of(&spec)).await,
            None => self.replica(version).await,
        }
    }

    /// Routes a request for `reference` (resolved to `version`) when the
    /// model's deployment serves it: `None` when it should load here.
    pub(super) fn route(
        &self,
        reference: &ModelRef,
        version: &ModelVersion,
    ) -> Option<(VersionId, DeploymentSpec)> {
        self.inner.deployments.cluster.get()?;
        let spec = self.inner.registry.deployment(&version.name)?.spec?;
        let id = match follows(reference, version, &spec) {
            Follow::Local => return None,
            Follow::Pin(id) => id,
            Follow::Split => match &spec.canary {
                Some(c) => {
                    let n = self.inner.deployments.split.fetch_add(1, Ordering::Relaxed);
                    if takes_canary(n, c.percent) {
                        c.target.clone()
                    } else {
                        spec.primary.clone()
                    }
                }
                None => spec.primary.clone(),
            },
        };
        Some((id, spec))
    }

    /// Runs a request on a replica of deployed version `id`: here when the
    /// plan puts one here, else on a planned node, in turn.
    ///
    /// # Errors
    /// When the version is not known here, no planned node is reachable, or
    /// the replica fails.
    pub(super) async fn infer_deployed(
        &self,
        name: &str,
        id: &VersionId,
        spec: &DeploymentSpec,
        request: Value,
    ) -> Result<Value, TaskError> {
        let version = self
            .inner
            .registry
            .version_by_id(name, id)
            .map_err(|e| TaskError::retryable("model", e.to_string()))?;
        *self
            .inner
            .deployments
            .routed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((name.to_owned(), version.version))
            .or_default() += 1;
        metrics::counter!("symphony_model_requests_total", "model" => name.to_owned(), "version" => version.version.to_string())
            .increment(1);
        let placed = self.plan(name, spec);
        let nodes = if *id == spec.primary {
            placed.primary
        } else {
            placed.canary
        };
        let (me, _) = self.members();
        if nodes.contains(&me) {
            let replica = self.deployed_replica(&version, batch_of(spec)).await?;
            return replica::infer(&replica, request).await;
        }
        let reachable: Vec<String> = nodes
            .into_iter()
            .filter(|n| agent_of(n).is_some())
            .collect();
        if reachable.is_empty() {
            return Err(TaskError::retryable(
                "unavailable",
                format!(
                    "no node running a replica of {name}@{} is reachable",
                    version.version
                ),
            ));
        }
        let first = self
            .inner
            .deployments
            .next_remote
            .fetch_add(1, Ordering::Relaxed);
        let mut last = None;
        // A node that went away since the view was read: try one other.
        for k in 0..reachable.len().min(2) {
            let node = &reachable[(first + k) % reachable.len()];
            metrics::counter!("symphony_model_remote_requests_total", "model" => name.to_owned(), "node" => node.clone())
                .increment(1);
            let nemesis = self
                .inner
                .deployments
                .cluster
                .get()
                .map(ClusterView::nemesis);
            match remote_infer(node, &version, request.clone(), nemesis).await {
                Err(e) if e.class == "unreachable" => last = Some(e),
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| TaskError::retryable("unreachable", "no replica answered")))
    }
}

impl ReplicaHost for ModelHost {
    fn infer(&self, request: InferRequest) -> BoxFuture<'static, Result<Value, TaskError>> {
        let host = self.clone();
        Box::pin(async move {
            let replica = host.local_replica(&request.version).await?;
            replica::infer(&replica, request.request).await
        })
    }
}

/// Sends `request` to the replica of `version` on `node`.
async fn remote_infer(
    node: &str,
    version: &ModelVersion,
    request: Value,
    nemesis: Option<&Arc<Nemesis>>,
) -> Result<Value, TaskError> {
    let unreachable = |why: String| TaskError::retryable("unreachable", why);
    let agent =
        agent_of(node).ok_or_else(|| unreachable(format!("node {node} is not connected")))?;
    if let Some(nemesis) = nemesis {
        nemesis.admit(node).await.map_err(unreachable)?;
    }
    let message = InferRequest {
        version: version.clone(),
        request,
    };
    let answer = agent
        .call(
            |reply| AgentMsg::Infer(Wire::new(message), reply),
            Some(REMOTE_TIMEOUT),
        )
        .await;
    match answer {
        Ok(ractor::rpc::CallResult::Success(Wire(Ok(Inferred { result })))) => result,
        Ok(ractor::rpc::CallResult::Success(Wire(Err(e)))) => Err(TaskError::retryable(
            "wire",
            format!("node {node} answered: {e}"),
        )),
        Ok(ractor::rpc::CallResult::Timeout) => Err(TaskError::retryable(
            "timeout",
            format!("the replica on node {node} did not answer within {REMOTE_TIMEOUT:?}"),
        )),
        Ok(ractor::rpc::CallResult::SenderError) | Err(_) => Err(unreachable(format!(
            "node {node} went away before answering"
        ))),
    }
}

fn stopped(replica: &ActorRef<ReplicaMsg>) -> bool {
    matches!(
        replica.get_status(),
        ractor::ActorStatus::Stopping | ractor::ActorStatus::Stopped
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::Signature;
    use crate::registry::{Canary, Stamp};

    fn version(n: u32) -> ModelVersion {
        ModelVersion {
            name: "iris".into(),
            version: n,
            registered_as: n,
            checksum: format!("c{n}"),
            size: 1,
            format: "onnx".into(),
            signature: Signature::default(),
            meta: BTreeMap::new(),
            created_ms: 0,
            created_by: "n1".into(),
            stamp: Stamp {
                wall_ms: u64::from(n),
                logical: 0,
            },
        }
    }

    #[test]
    fn references_follow_the_deployment_as_documented() {
        let spec = DeploymentSpec {
            primary: version(1).id(),
            primary_version: 1,
            replicas: 2,
            max_batch: 32,
            max_wait_ms: 0,
            canary: Some(Canary {
                target: version(2).id(),
                version: 2,
                percent: 20,
            }),
            placement: BTreeMap::new(),
        };
        let r = |t: &str| ModelRef::parse(t).unwrap();
        assert_eq!(follows(&r("iris"), &version(3), &spec), Follow::Split);
        assert_eq!(
            follows(&r("iris@production"), &version(1), &spec),
            Follow::Split
        );
        assert_eq!(
            follows(&r("iris@staging"), &version(2), &spec),
            Follow::Split
        );
        assert_eq!(
            follows(&r("iris@staging"), &version(3), &spec),
            Follow::Local
        );
        assert_eq!(
            follows(&r("iris@2"), &version(2), &spec),
            Follow::Pin(version(2).id())
        );
        assert_eq!(follows(&r("iris@3"), &version(3), &spec), Follow::Local);
    }

    #[test]
    fn the_canary_takes_exactly_its_percent() {
        for percent in [0u8, 1, 20, 33, 50, 99, 100] {
            let n = (0..1000).filter(|&i| takes_canary(i, percent)).count();
            assert_eq!(n, usize::from(percent) * 10, "{percent}%");
        }
        // Spread out, not in a block: 20 % is one request in five.
        let first: Vec<bool> = (0..10).map(|i| takes_canary(i, 20)).collect();
        assert_eq!(first.iter().filter(|c| **c).count(), 2);
        assert!(!(first[0] && first[1]));
    }
}
