//! openraft's network: Raft messages travel through the node agents over
//! ractor_cluster, as [`RaftRpc`] frames whose bodies are openraft's own
//! serde types in bincode.

use std::sync::Arc;
use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use super::{NodeId, TypeConfig, decode, encode};
use crate::cluster::Nemesis;
use crate::cluster::agent::{AgentMsg, agent_of};
use crate::cluster::wire::{RaftKind, RaftReply, RaftRpc, Wire};

/// Makes a [`Peer`] per target node.
#[derive(Debug, Clone)]
pub struct Network {
    /// This node's name.
    pub me: String,
    /// The node's nemesis (chaos testing): Raft traffic is cut or delayed
    /// like every other message to a peer.
    pub nemesis: Arc<Nemesis>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer {
            me: self.me.clone(),
            nemesis: Arc::clone(&self.nemesis),
            target,
            name: node.addr.clone(),
        }
    }
}

/// The way to one peer's Raft.
#[derive(Debug, Clone)]
pub struct Peer {
    me: String,
    nemesis: Arc<Nemesis>,
    target: NodeId,
    name: String,
}

/// Sends one Raft message to `peer`'s agent and waits for the answer.
///
/// # Errors
/// When the peer is not connected, does not answer in time, or answers
/// with an error.
pub async fn call(
    nemesis: &Nemesis,
    me: &str,
    peer: &str,
    kind: RaftKind,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    nemesis.admit(peer).await?;
    let agent = agent_of(peer).ok_or_else(|| format!("node {peer} is not connected"))?;
    let rpc = RaftRpc {
        from: me.to_owned(),
        kind,
        body,
    };
    let reply: Wire<RaftReply> = ractor::call_t!(
        agent,
        AgentMsg::Raft,
        timeout.as_millis().max(1) as u64,
        Wire::new(rpc)
    )
    .map_err(|e| format!("raft message to {peer} failed: {e}"))?;
    reply.0.and_then(|r| r.0)
}

impl Peer {
    async fn send<Req, Resp, E>(
        &self,
        kind: RaftKind,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        E: serde::de::DeserializeOwned + std::error::Error,
    {
        let unreachable =
            |why: String| RPCError::Unreachable(Unreachable::new(&std::io::Error::other(why)));
        let started = std::time::Instant::now();
        let label = kind.as_str();
        let bytes = call(
            &self.nemesis,
            &self.me,
            &self.name,
            kind,
            encode(request),
            option.hard_ttl(),
        )
        .await
        .map_err(unreachable)?;
        metrics::histogram!("symphony_raft_rpc_seconds", "kind" => label)
            .record(started.elapsed().as_secs_f64());
        let answer: Result<Resp, RaftError<NodeId, E>> = decode(&bytes).map_err(|e| {
            RPCError::Network(NetworkError::new(&std::io::Error::other(format!(
                "undecodable raft answer from {}: {e}",
                self.name
            ))))
        })?;
        answer.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                BasicNode::new(&self.name),
                e,
            ))
        })
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.send(RaftKind::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.send(RaftKind::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.send(RaftKind::Vote, &rpc, &option).await
    }
}
