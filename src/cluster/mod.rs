//! Messaging between nodes: bootstrap from seeds, membership, heartbeats and
//! failure detection, reconnects, the wire codec, the node agent, placement.
//!
//! Built on ractor_cluster, which gives the transport and the cookie
//! handshake but no failure detector and no reconnect: both live here.
//!
//! ```text
//! ractor_cluster NodeServer   TCP sessions, cookie auth, remote actor proxies, pg sync
//! Manager (local)             seeds, heartbeats, up/suspect/down, teardown, redial
//! NodeAgent (remote-capable)  heartbeats in, assignments in, results home
//! ClusterRegistry             registry records synced, model artifacts served and fetched
//! ClusterPlacement            the engine's Placement: labels, then two choices
//! ```

pub mod agent;
pub mod blob;
pub mod manager;
pub mod models;
pub mod nemesis;
pub mod outbox;
pub mod placement;
mod view;
pub mod wire;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use ractor::{Actor, ActorRef};
use ractor_cluster::node::NodeConnectionMode;
use ractor_cluster::{NodeServer, NodeServerMessage};

use self::agent::{AgentArgs, AgentMsg, NodeAgent, RaftHost, RaftSlot, ReplicaHost, ReplicaSlot};
pub use self::manager::HeartbeatTimes;
use self::manager::{Manager, ManagerArgs, ManagerMsg, Me};
use self::models::{ClusterArtifacts, ClusterRegistry};
pub use self::nemesis::{Nemesis, Verdict};
use self::placement::ClusterPlacement;
pub use self::view::{ClusterSnapshot, ClusterView, Member, PeerState};
use crate::engine::Engine;
use crate::registry::Registry;

/// How a node takes part in a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Node name (unique in the cluster).
    pub name: String,
    /// Where the cluster port listens.
    pub listen: SocketAddr,
    /// The host peers dial to reach this node.
    pub advertise: String,
    /// The `host:port` peers dial to reach this node.
    pub addr: String,
    /// Seed addresses.
    pub seeds: Vec<String>,
    /// Shared secret of the cluster.
    pub cookie: String,
    /// Labels, for placement.
    pub labels: BTreeMap<String, String>,
    /// Attempts this node runs at once.
    pub slots: u32,
    /// Heartbeat timing.
    pub times: HeartbeatTimes,
    /// The node's model registry, shared with the cluster (records synced,
    /// artifacts served and fetched); `None`: no part in it.
    pub registry: Option<Registry>,
    /// Chaos, a testing aid: corrupt the first this many model artifact
    /// chunks this node serves. 0 outside tests.
    pub corrupt_chunks: u32,
    /// Chaos, a testing aid: whether this node's [`Nemesis`] takes faults
    /// (drop or delay its traffic to chosen peers). False outside tests.
    pub nemesis: bool,
}

/// A node's membership in its cluster.
#[derive(Debug, Clone)]
pub struct Cluster {
    view: ClusterView,
    server: ActorRef<NodeServerMessage>,
    manager: ActorRef<ManagerMsg>,
    agent: ActorRef<AgentMsg>,
    replicas: ReplicaSlot,
    raft: RaftSlot,
}

impl Cluster {
    /// Listens on the cluster port, starts the manager and the agent, and
    /// connects `engine` to the cluster. Joining goes on in the background:
    /// [`ClusterView::is_joined`] says when it is done.
    ///
    /// # Errors
    /// When an actor cannot start (the port is taken, for example).
    pub async fn start(config: ClusterConfig, engine: Engine) -> Result<Cluster, String> {
        let me = Me {
            name: config.name.clone(),
            addr: config.addr.clone(),
            labels: config.labels.clone(),
            slots: config.slots,
        };
        let view = ClusterView::new(
            Member {
                name: me.name.clone(),
                addr: me.addr.clone(),
                state: PeerState::Up,
                labels: me.labels.clone(),
                slots: me.slots,
                load: 0,
                rtt_ms: None,
                last_seen_ms: 0,
                artifacts: Vec::new(),
            },
            config.seeds.is_empty(),
        )
        .with_nemesis(Arc::new(Nemesis::new(config.nemesis)));
        let server = NodeServer::new(
            config.listen.port(),
            config.cookie.clone(),
            config.name.clone(),
            config.advertise.clone(),
            None,
            Some(NodeConnectionMode::Transitive),
        )
        .with_listen_addr(config.listen.ip());
        let (server, _) = Actor::spawn(None, server, ()).await.map_err(|e| {
            format!(
                "cannot start the cluster listener on {}: {e}",
                config.listen
            )
        })?;
        let models = config.registry.as_ref().map(|registry| {
            registry.attach_source(Arc::new(ClusterArtifacts::new(&config.name, view.clone())));
            Arc::new(
                ClusterRegistry::new(registry.clone(), &config.name, config.corrupt_chunks)
                    .with_nemesis(Arc::clone(view.nemesis())),
            )
        });
        let (manager, _) = Actor::spawn(
            None,
            Manager,
            ManagerArgs {
                me,
                seeds: config.seeds.clone(),
                times: config.times,
                engine: engine.clone(),
                view: view.clone(),
                node_server: server.clone(),
                models: models.clone(),
            },
        )
        .await
        .map_err(|e| format!("cannot start the cluster manager: {e}"))?;
        let blobs =
            Arc::new(blob::Blobs::new(&config.name).with_nemesis(Arc::clone(view.nemesis())));
        let replicas = ReplicaSlot::default();
        let raft = RaftSlot::default();
        let (agent, _) = Actor::spawn(
            None,
            NodeAgent,
            AgentArgs {
                engine: engine.clone(),
                manager: manager.clone(),
                max_accepted: (config.slots as usize).saturating_mul(4).max(16),
                blobs: Arc::clone(&blobs),
                models,
                replicas: Arc::clone(&replicas),
                raft: Arc::clone(&raft),
                nemesis: Arc::clone(view.nemesis()),
            },
        )
        .await
        .map_err(|e| format!("cannot start the node agent: {e}"))?;
        engine.attach(Arc::new(ClusterPlacement::new(
            view.clone(),
            engine.clone(),
            blobs,
        )));
        Ok(Cluster {
            view,
            server,
            manager,
            agent,
            replicas,
            raft,
        })
    }

    /// Serves peers' requests for this node's model replicas from `host`
    /// (the first host given stays).
    pub fn serve_replicas(&self, host: Arc<dyn ReplicaHost>) {
        let _ = self.replicas.set(host);
    }

    /// Hands Raft messages from peers to `host` (the first host given stays).
    pub fn serve_raft(&self, host: Arc<dyn RaftHost>) {
        let _ = self.raft.set(host);
    }

    /// The membership view.
    pub fn view(&self) -> &ClusterView {
        &self.view
    }

    /// The node's nemesis: every message to a peer asks it first.
    pub fn nemesis(&self) -> Arc<Nemesis> {
        Arc::clone(self.view.nemesis())
    }

    /// Stops the agent, the manager and the listener.
    pub async fn stop(&self) {
        let _ = self.agent.stop_and_wait(None, None).await;
        let _ = self.manager.stop_and_wait(None, None).await;
        let _ = self.server.stop_and_wait(None, None).await;
    }
}
