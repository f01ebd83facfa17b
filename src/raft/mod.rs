//! Replicated durability: run ownership and the journals of `replicated`
//! runs in a Raft log (openraft), stored in a log file and sled and carried
//! between nodes by the node agents.
//!
//! ```text
//! state      the pure core: ownership epochs, journal lengths, fencing
//! storage    openraft's log storage and state machine (sled)
//! log_file   the log itself: an append-only file, group commits
//! network    openraft's messages through the node agents
//! journal    the engine's RunStore for replicated runs: group commits
//! failover   takes over the runs of a node declared down
//! ```
//!
//! Voters are a configured set of nodes (3 or 5); every other node joins as
//! a learner, so every node holds every replicated journal and can take a
//! run over. Commands reach the leader: a node that is not the leader
//! forwards its command to the leader's agent.

pub mod failover;
pub mod journal;
pub mod log_file;
pub mod network;
pub mod state;
pub mod storage;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use openraft::BasicNode;
use openraft::error::{ClientWriteError, RaftError};
use tracing::{info, warn};

use self::state::{Command, Outcome};
use self::storage::Applied;
use crate::cluster::agent::RaftHost;
use crate::cluster::wire::{RaftKind, RaftReply, RaftRpc};
use crate::cluster::{Cluster, PeerState};

openraft::declare_raft_types!(
    /// Symphony's Raft types: commands in, outcomes out, nodes by name.
    /// A command is shared (`Arc`): openraft clones entries as it moves
    /// them between its tasks, and a clone must not copy the events.
    pub TypeConfig:
        D = Arc<Command>,
        R = Outcome,
        SnapshotData = std::io::Cursor<Vec<u8>>,
);

/// A node's id in Raft: derived from its name.
pub type NodeId = u64;

/// openraft, with Symphony's types.
pub type Raft = openraft::Raft<TypeConfig>;

/// The Raft id of the node called `name` (the first 8 bytes of its BLAKE3
/// hash: stable across restarts, equal on every node).
pub fn node_id(name: &str) -> NodeId {
    let hash = blake3::hash(name.as_bytes());
    u64::from_le_bytes(hash.as_bytes()[..8].try_into().expect("8 bytes"))
}

pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, crate::codec::config()).expect("raft values encode")
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    match bincode::serde::decode_from_slice(bytes, crate::codec::config()) {
        Ok((v, used)) if used == bytes.len() => Ok(v),
        Ok(_) => Err("trailing bytes".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// How the replicated log is set up on a node.
#[derive(Debug, Clone)]
pub struct RaftConfig {
    /// This node's name.
    pub me: String,
    /// The voters' names (3 or 5). Every other node is a learner.
    pub voters: Vec<String>,
    /// Leader heartbeat period.
    pub heartbeat: Duration,
    /// Election timeout (the lower bound; the upper bound is twice it).
    pub election_timeout: Duration,
    /// Where the model registry records of committed entries are applied
    /// (set before Raft starts, so no entry is missed).
    pub registry: Option<Arc<dyn storage::RegistryApplier>>,
}

impl RaftConfig {
    /// Defaults for `me` and `voters`: heartbeats every 100 ms, elections
    /// after 500–1000 ms without one.
    pub fn new(me: &str, voters: Vec<String>) -> RaftConfig {
        RaftConfig {
            me: me.to_owned(),
            voters,
            heartbeat: Duration::from_millis(100),
            election_timeout: Duration::from_millis(500),
            registry: None,
        }
    }
}

/// A command could not be committed (yet).
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// No leader is known, or it cannot be reached, or it lost its quorum.
    #[error("the replicated log has no reachable leader with a quorum: {0}")]
    NoQuorum(String),
    /// Raft stopped on this node.
    #[error("the replicated log stopped: {0}")]
    Stopped(String),
}

/// What `symphony cluster status` shows about the log.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RaftStatus {
    /// This node's role: leader, follower, candidate or learner.
    pub role: String,
    /// The leader, if known.
    pub leader: Option<String>,
    /// The current term.
    pub term: u64,
    /// Voters by name.
    pub voters: Vec<String>,
    /// Learners by name.
    pub learners: Vec<String>,
    /// Index of the last log entry here.
    pub last_log_index: Option<u64>,
    /// Index of the last entry applied here (committed, as this node knows).
    pub applied_index: Option<u64>,
    /// Per node, how far behind the leader's last entry it is (leader only).
    pub lag: BTreeMap<String, u64>,
}

/// A node's part in the replicated log.
pub struct Replication {
    raft: Raft,
    nemesis: Arc<crate::cluster::Nemesis>,
    me: String,
    applied: Arc<Applied>,
    voters: Vec<String>,
}

impl Replication {
    /// Starts Raft on the storage in `dir` (see [`storage::open`]) and
    /// serves it through `cluster`'s agent. The first voter (by name)
    /// initializes the log the first time.
    ///
    /// # Errors
    /// When storage cannot be opened or Raft cannot start.
    pub async fn start(
        config: RaftConfig,
        dir: &std::path::Path,
        cluster: &Cluster,
    ) -> Result<Arc<Replication>, String> {
        let (log, machine) = storage::open(dir)?;
        let applied = machine.applied();
        if let Some(registry) = &config.registry {
            applied.set_registry_applier(Arc::clone(registry));
        }
        let ms = |d: Duration| d.as_millis().max(1) as u64;
        let raft_config = openraft::Config {
            cluster_name: "symphony".into(),
            heartbeat_interval: ms(config.heartbeat),
            election_timeout_min: ms(config.election_timeout),
            election_timeout_max: ms(config.election_timeout) * 2,
            snapshot_policy: openraft::SnapshotPolicy::Never,
            max_payload_entries: 256,
            ..Default::default()
        };
        let raft_config = Arc::new(
            raft_config
                .validate()
                .map_err(|e| format!("raft settings: {e}"))?,
        );
        let nemesis = cluster.nemesis();
        let network = network::Network {
            me: config.me.clone(),
            nemesis: Arc::clone(&nemesis),
        };
        let raft = Raft::new(node_id(&config.me), raft_config, network, log, machine)
            .await
            .map_err(|e| format!("cannot start raft: {e}"))?;
        let mut voters = config.voters.clone();
        voters.sort();
        voters.dedup();
        let replication = Arc::new(Replication {
            raft,
            nemesis,
            me: config.me.clone(),
            applied,
            voters: voters.clone(),
        });
        cluster.serve_raft(Arc::new(Host(Arc::clone(&replication))));
        if voters.first() == Some(&config.me) {
            let members: BTreeMap<NodeId, BasicNode> = voters
                .iter()
                .map(|v| (node_id(v), BasicNode::new(v)))
                .collect();
            match replication.raft.is_initialized().await {
                Ok(true) => {}
                _ => match replication.raft.initialize(members).await {
                    Ok(()) => info!(voters = ?voters, "Initialized the replicated log."),
                    Err(e) => warn!(error = %e, "Could not initialize the replicated log."),
                },
            }
        }
        tokio::spawn(add_learners(
            Arc::downgrade(&replication),
            cluster.view().clone(),
        ));
        Ok(replication)
    }

    /// This node's name.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// What this node's state machine holds.
    pub fn applied(&self) -> &Arc<Applied> {
        &self.applied
    }

    /// The leader's name, if one is known.
    pub fn leader(&self) -> Option<String> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let leader = m.current_leader?;
        m.membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())
    }

    /// Commits `command` (through the leader) and returns its log index and
    /// outcome once it is committed and applied on the leader.
    ///
    /// # Errors
    /// When no leader with a quorum answers within `timeout`.
    pub async fn write(
        &self,
        command: impl Into<Arc<Command>>,
        timeout: Duration,
    ) -> Result<(u64, Outcome), WriteError> {
        let command = command.into();
        let leader = match self.leader() {
            Some(leader) if leader != self.me => leader,
            // The leader, or no leader known: openraft answers (or says
            // where the leader is).
            _ => return self.write_here(command, timeout).await,
        };
        let bytes = network::call(
            &self.nemesis,
            &self.me,
            &leader,
            RaftKind::Write,
            encode(&*command),
            timeout,
        )
        .await
        .map_err(WriteError::NoQuorum)?;
        decode::<Result<(u64, Outcome), String>>(&bytes)
            .map_err(|e| WriteError::NoQuorum(format!("undecodable answer from {leader}: {e}")))?
            .map_err(WriteError::NoQuorum)
    }

    async fn write_here(
        &self,
        command: Arc<Command>,
        timeout: Duration,
    ) -> Result<(u64, Outcome), WriteError> {
        let started = std::time::Instant::now();
        let written = tokio::time::timeout(timeout, self.raft.client_write(command)).await;
        metrics::histogram!("symphony_raft_commit_seconds").record(started.elapsed().as_secs_f64());
        match written {
            Err(_) => Err(WriteError::NoQuorum(format!(
                "not committed within {}",
                humantime::format_duration(timeout)
            ))),
            Ok(Ok(response)) => Ok((response.log_id.index, response.data)),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(WriteError::NoQuorum(match f.leader_node {
                    Some(n) => format!("the leader is now {}", n.addr),
                    None => "no leader is known".into(),
                }))
            }
            Ok(Err(e)) => Err(WriteError::Stopped(e.to_string())),
        }
    }

    /// Waits until this node has applied the entry at `index` (reads of the
    /// journal here then see everything up to it).
    ///
    /// # Errors
    /// When it does not happen within `timeout`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<(), String> {
        self.raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "takeover")
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// The log's state as this node sees it.
    pub fn status(&self) -> RaftStatus {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        let name = |id: &NodeId| {
            membership
                .get_node(id)
                .map_or_else(|| id.to_string(), |n| n.addr.clone())
        };
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let mut lag = BTreeMap::new();
        if let (Some(replication), Some(last)) = (&m.replication, m.last_log_index) {
            for (id, matched) in replication {
                let at = matched.map_or(0, |l| l.index + 1);
                lag.insert(name(id), (last + 1).saturating_sub(at));
            }
        }
        let role = match m.state {
            openraft::ServerState::Leader => "leader",
            openraft::ServerState::Candidate => "candidate",
            openraft::ServerState::Learner => "learner",
            openraft::ServerState::Follower => "follower",
            openraft::ServerState::Shutdown => "shutdown",
        };
        RaftStatus {
            role: role.into(),
            leader: m.current_leader.as_ref().map(name),
            term: m.current_term,
            voters: voters.iter().map(name).collect(),
            learners: membership.learner_ids().map(|id| name(&id)).collect(),
            last_log_index: m.last_log_index,
            applied_index: m.last_applied.map(|l| l.index),
            lag,
        }
    }

    /// Stops Raft on this node.
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }

    async fn handle(&self, rpc: RaftRpc) -> Result<Vec<u8>, String> {
        let bad = |e: String| format!("undecodable raft message from {}: {e}", rpc.from);
        Ok(match rpc.kind {
            RaftKind::AppendEntries => {
                let started = std::time::Instant::now();
                let req = decode(&rpc.body).map_err(bad)?;
                let answer = encode(&self.raft.append_entries(req).await);
                metrics::histogram!("symphony_raft_follow_seconds")
                    .record(started.elapsed().as_secs_f64());
                answer
            }
            RaftKind::Vote => {
                let req = decode(&rpc.body).map_err(bad)?;
                encode(&self.raft.vote(req).await)
            }
            RaftKind::InstallSnapshot => {
                let req = decode(&rpc.body).map_err(bad)?;
                encode(&self.raft.install_snapshot(req).await)
            }
            RaftKind::Write => {
                let command: Command = decode(&rpc.body).map_err(bad)?;
                let answer = self
                    .write_here(Arc::new(command), Duration::from_secs(5))
                    .await
                    .map_err(|e| e.to_string());
                encode(&answer)
            }
        })
    }
}

impl std::fmt::Debug for Replication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replication")
            .field("me", &self.me)
            .field("voters", &self.voters)
            .finish_non_exhaustive()
    }
}

/// The agent's way into [`Replication`].
#[derive(Debug)]
struct Host(Arc<Replication>);

impl RaftHost for Host {
    fn handle(&self, rpc: RaftRpc) -> BoxFuture<'static, RaftReply> {
        let replication = Arc::clone(&self.0);
        async move { RaftReply(replication.handle(rpc).await) }.boxed()
    }
}

/// On the leader, adds every cluster member that is not in the membership
/// as a learner, so every node holds every replicated journal.
async fn add_learners(
    replication: std::sync::Weak<Replication>,
    view: crate::cluster::ClusterView,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let Some(r) = replication.upgrade() else {
            return;
        };
        if r.leader().as_deref() != Some(r.me.as_str()) {
            continue;
        }
        let known: BTreeSet<NodeId> = {
            let metrics = r.raft.metrics();
            let m = metrics.borrow();
            m.membership_config
                .membership()
                .nodes()
                .map(|(id, _)| *id)
                .collect()
        };
        for member in view.snapshot().members {
            if member.state != PeerState::Up || known.contains(&node_id(&member.name)) {
                continue;
            }
            let id = node_id(&member.name);
            match r
                .raft
                .add_learner(id, BasicNode::new(&member.name), false)
                .await
            {
                Ok(_) => info!(node = %member.name, "Added a learner to the replicated log."),
                Err(e) => warn!(node = %member.name, error = %e, "Could not add a learner."),
            }
        }
    }
}
