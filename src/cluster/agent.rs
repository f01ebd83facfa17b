//! The node agent: the one remote-capable actor of a node.
//!
//! It joins the process group every agent is in and a group of its own
//! node's name, so peers find it by name. Through it pass heartbeats
//! (answered here, reported to the [`Manager`](super::manager)), assignments
//! from other nodes (run here as attempt actors it supervises, up to a bound:
//! beyond it the owner hears `overloaded`), results coming home and their
//! acknowledgements, and stop requests. Results going home leave through the
//! node's [`Outbox`], from the finished attempt's own task.

use std::collections::HashMap;

use std::sync::Arc;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use ractor_cluster::RactorClusterMessage;
use tracing::warn;

use super::blob::{Blobs, ChunkBytes, ChunkRequest, Payload};
use super::manager::ManagerMsg;
use super::models::{ClusterRegistry, ManifestReply, ManifestRequest};
use super::nemesis::Nemesis;
use super::outbox::Outbox;
use super::wire::{
    Assigned, Delivered, Finished, Heartbeat, InferRequest, Inferred, RaftReply, RaftRpc,
    StopAttempt, Wire,
};
use crate::engine::attempt::AttemptMsg;
use crate::engine::remote::Assignment;
use crate::engine::retry::OVERLOADED;
use crate::engine::{Engine, TaskKey};
use crate::executor::TaskError;
use crate::registry::Record;

/// Process group of every node agent.
pub const AGENTS: &str = "symphony.agents";

/// Process group of one node's agent.
pub fn group_of(node: &str) -> String {
    format!("symphony.node.{node}")
}

/// The agent of `node`, if a session to it is up.
pub fn agent_of(node: &str) -> Option<ActorRef<AgentMsg>> {
    ractor::pg::get_members(&group_of(node))
        .into_iter()
        .next()
        .map(ActorRef::from)
}

/// Messages of [`NodeAgent`]; every one may come from another node.
/// Variants are only ever added, never renamed.
#[derive(RactorClusterMessage)]
pub enum AgentMsg {
    /// A peer's heartbeat; answered with a pong.
    Ping(Wire<Heartbeat>),
    /// The answer to this node's heartbeat.
    Pong(Wire<Heartbeat>),
    /// Run an attempt here for a run owned by another node.
    Assign(Wire<Assigned>),
    /// The result of an attempt this node assigned elsewhere.
    Finished(Wire<Finished>),
    /// Stop an attempt that was assigned here.
    Stop(Wire<StopAttempt>),
    /// The owner got a result this node sent.
    Ack(Wire<Delivered>),
    /// Part of a blob this node holds.
    #[rpc]
    Fetch(Wire<ChunkRequest>, RpcReplyPort<ChunkBytes>),
    /// A peer's model registry records, to merge (its digest differed).
    RegistrySync(Wire<Vec<Record>>),
    /// The manifest of a model artifact this node holds.
    #[rpc]
    ArtifactManifest(Wire<ManifestRequest>, RpcReplyPort<ManifestReply>),
    /// Part of a model artifact this node holds (`hash` is its SHA-256).
    #[rpc]
    ArtifactChunk(Wire<ChunkRequest>, RpcReplyPort<ChunkBytes>),
    /// Run a model request on this node's replica of a deployed version.
    #[rpc]
    Infer(Wire<InferRequest>, RpcReplyPort<Wire<Inferred>>),
    /// A Raft message for this node's replicated log.
    #[rpc]
    Raft(Wire<RaftRpc>, RpcReplyPort<Wire<RaftReply>>),
}

impl std::fmt::Debug for AgentMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AgentMsg::Ping(_) => "Ping",
            AgentMsg::Pong(_) => "Pong",
            AgentMsg::Assign(_) => "Assign",
            AgentMsg::Finished(_) => "Finished",
            AgentMsg::Stop(_) => "Stop",
            AgentMsg::Fetch(..) => "Fetch",
            AgentMsg::Ack(_) => "Ack",
            AgentMsg::RegistrySync(_) => "RegistrySync",
            AgentMsg::ArtifactManifest(..) => "ArtifactManifest",
            AgentMsg::ArtifactChunk(..) => "ArtifactChunk",
            AgentMsg::Infer(..) => "Infer",
            AgentMsg::Raft(..) => "Raft",
        })
    }
}

/// What the agent needs.
#[derive(Debug)]
pub struct AgentArgs {
    /// The node's engine.
    pub engine: Engine,
    /// The node's cluster manager.
    pub manager: ActorRef<ManagerMsg>,
    /// Assignments accepted at once (running or waiting for the pool);
    /// beyond it the owner hears `overloaded`.
    pub max_accepted: usize,
    /// The node's blob cache.
    pub blobs: Arc<Blobs>,
    /// The node's model registry, as the cluster sees it (`None`: the node
    /// takes no part in registry sync and serves no artifacts).
    pub models: Option<Arc<ClusterRegistry>>,
    /// Where requests for this node's model replicas go; empty until the
    /// node serves models.
    pub replicas: ReplicaSlot,
    /// Where Raft messages go; empty until the node takes part in the
    /// replicated log.
    pub raft: RaftSlot,
    /// The node's nemesis, which every message to a peer goes through.
    pub nemesis: Arc<Nemesis>,
}

/// Takes Raft messages from peers.
pub trait RaftHost: Send + Sync + std::fmt::Debug {
    /// Handles one message and answers it.
    fn handle(&self, rpc: RaftRpc) -> futures::future::BoxFuture<'static, RaftReply>;
}

/// Where the agent finds the node's [`RaftHost`].
pub type RaftSlot = Arc<std::sync::OnceLock<Arc<dyn RaftHost>>>;

/// Runs model requests from peers on this node's replicas.
pub trait ReplicaHost: Send + Sync + std::fmt::Debug {
    /// Runs `request` on this node's replica of its version (loading it if
    /// needed), without routing it further.
    fn infer(
        &self,
        request: InferRequest,
    ) -> futures::future::BoxFuture<'static, Result<crate::value::Value, TaskError>>;
}

/// Where the agent finds the node's [`ReplicaHost`], set once the node
/// serves models.
pub type ReplicaSlot = Arc<std::sync::OnceLock<Arc<dyn ReplicaHost>>>;

/// The agent actor; its state is [`AgentState`].
#[derive(Debug)]
pub struct NodeAgent;

/// The agent's state.
#[derive(Debug)]
pub struct AgentState {
    engine: Engine,
    manager: ActorRef<ManagerMsg>,
    max_accepted: usize,
    /// Attempts running here for other nodes.
    running: HashMap<ActorId, (String, TaskKey, u32, String, ActorRef<AttemptMsg>)>,
    /// Accepted but not yet spawned (spawning awaits).
    starting: usize,
    blobs: Arc<Blobs>,
    models: Option<Arc<ClusterRegistry>>,
    replicas: ReplicaSlot,
    raft: RaftSlot,
    nemesis: Arc<Nemesis>,
    /// Results sent home and not yet acknowledged.
    outbox: Arc<Outbox>,
}

/// The answer of a node without a model registry to an artifact request.
const NO_REGISTRY: &str = "this node has no model registry";

impl Actor for NodeAgent {
    type Msg = AgentMsg;
    type State = AgentState;
    type Arguments = AgentArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<AgentMsg>,
        args: AgentArgs,
    ) -> Result<AgentState, ActorProcessingErr> {
        let node = args.engine.node().to_owned();
        ractor::pg::join(AGENTS.to_owned(), vec![myself.get_cell()]);
        ractor::pg::join(group_of(&node), vec![myself.get_cell()]);
        Ok(AgentState {
            engine: args.engine,
            manager: args.manager,
            max_accepted: args.max_accepted,
            running: HashMap::new(),
            starting: 0,
            blobs: args.blobs,
            models: args.models,
            replicas: args.replicas,
            raft: args.raft,
            outbox: Arc::new(Outbox::new(node, Arc::clone(&args.nemesis))),
            nemesis: args.nemesis,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<AgentMsg>,
        msg: AgentMsg,
        state: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AgentMsg::Ping(Wire(Ok(ping))) => {
                if let Some(peer) = agent_of(&ping.from) {
                    let pong = AgentMsg::Pong(Wire::new(Heartbeat {
                        seq: ping.seq,
                        sent_us: ping.sent_us,
                        ..state.heartbeat_template()
                    }));
                    let _ = state.nemesis.cast(&ping.from, &peer, pong);
                }
                state.outbox.heard(&ping.from);
                if let Some(models) = &state.models {
                    models.heard(&ping);
                }
                let _ = state.manager.cast(ManagerMsg::Heard(ping, None));
            }
            AgentMsg::Pong(Wire(Ok(pong))) => {
                let _ = state
                    .manager
                    .cast(ManagerMsg::Heard(pong.clone(), Some(pong.sent_us)));
            }
            AgentMsg::Assign(Wire(Ok(Assigned {
                mut assignment,
                input,
            }))) => match input {
                Payload::Inline(value) => {
                    assignment.input = value;
                    state.assign(&myself, assignment).await;
                }
                blob => state.fetch_then_assign(&myself, assignment, blob),
            },
            AgentMsg::Ack(Wire(Ok(ack))) => {
                state.outbox.acked(ack.delivery);
            }
            AgentMsg::Ack(Wire(Err(_))) => {}
            AgentMsg::Finished(Wire(Ok(f))) => {
                let (from, delivery) = (f.from.clone(), f.delivery);
                // The run first: the acknowledgement is off its path.
                state.receive(f);
                if let Some(worker) = agent_of(&from) {
                    let ack = AgentMsg::Ack(Wire::new(Delivered { delivery }));
                    let _ = state.nemesis.cast(&from, &worker, ack);
                }
            }
            AgentMsg::Fetch(Wire(Ok(req)), reply) => {
                let _ = reply.send(state.blobs.chunk(&req));
            }
            AgentMsg::Fetch(Wire(Err(e)), reply) => {
                let _ = reply.send(ChunkBytes(Err(e)));
            }
            AgentMsg::Stop(Wire(Ok(stop))) => {
                for (run, key, attempt, _, actor) in state.running.values() {
                    if *run == stop.run_id && *key == stop.key && *attempt == stop.attempt {
                        actor.kill();
                    }
                }
            }
            // Undecodable frames were logged and counted by `Wire`; none of
            // these expects an answer, and without a decoded body there is
            // nobody to answer.
            AgentMsg::Ping(Wire(Err(_)))
            | AgentMsg::Pong(Wire(Err(_)))
            | AgentMsg::Assign(Wire(Err(_)))
            | AgentMsg::Finished(Wire(Err(_)))
            | AgentMsg::Stop(Wire(Err(_)))
            | AgentMsg::RegistrySync(Wire(Err(_))) => {}
            AgentMsg::RegistrySync(Wire(Ok(records))) => {
                if let Some(models) = &state.models {
                    models.merge(records);
                }
            }
            AgentMsg::ArtifactManifest(Wire(req), reply) => match &state.models {
                // Reading and hashing a large artifact must not hold up
                // the agent.
                Some(models) => {
                    let models = Arc::clone(models);
                    tokio::spawn(async move {
                        let _ = reply.send(models.manifest(req).await);
                    });
                }
                None => {
                    let _ = reply.send(Wire::new(Err(NO_REGISTRY.to_owned())));
                }
            },
            AgentMsg::Infer(Wire(request), reply) => state.infer(request, reply),
            AgentMsg::Raft(Wire(rpc), reply) => match (rpc, state.raft.get()) {
                (Ok(rpc), Some(host)) => {
                    let answer = host.handle(rpc);
                    tokio::spawn(async move {
                        let _ = reply.send(Wire::new(answer.await));
                    });
                }
                (Err(e), _) => {
                    let _ = reply.send(Wire::new(RaftReply(Err(e))));
                }
                (Ok(_), None) => {
                    let _ = reply.send(Wire::new(RaftReply(Err(
                        "this node takes no part in the replicated log".to_owned(),
                    ))));
                }
            },
            AgentMsg::ArtifactChunk(Wire(req), reply) => match &state.models {
                Some(models) => {
                    let models = Arc::clone(models);
                    tokio::spawn(async move {
                        let _ = reply.send(models.chunk(req).await);
                    });
                }
                None => {
                    let _ = reply.send(ChunkBytes(Err(NO_REGISTRY.to_owned())));
                }
            },
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<AgentMsg>,
        event: SupervisionEvent,
        state: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                state.running.remove(&cell.get_id());
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                if let Some((run_id, key, attempt, owner, _)) = state.running.remove(&cell.get_id())
                {
                    state.outbox.send(
                        owner,
                        Finished {
                            run_id,
                            key,
                            attempt,
                            result: Err(TaskError::fatal(
                                "panic",
                                format!("attempt failed: {err}"),
                            )),
                            from: String::new(),
                            delivery: 0,
                        },
                    );
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl AgentState {
    /// Hands a peer's model request to this node's replica on a task of
    /// its own (a batch or a model load must not hold up the agent), which
    /// replies.
    fn infer(&self, request: Result<InferRequest, String>, reply: RpcReplyPort<Wire<Inferred>>) {
        let host = self.replicas.get().cloned();
        match (request, host) {
            (Ok(request), Some(host)) => {
                tokio::spawn(async move {
                    let result = host.infer(request).await;
                    let _ = reply.send(Wire::new(Inferred { result }));
                });
            }
            (Ok(_), None) => {
                let result = Err(TaskError::retryable(
                    "replica",
                    format!("node {} serves no models", self.engine.node()),
                ));
                let _ = reply.send(Wire::new(Inferred { result }));
            }
            (Err(e), _) => {
                let result = Err(TaskError::fatal("wire", e));
                let _ = reply.send(Wire::new(Inferred { result }));
            }
        }
    }

    /// A result came home: hand it to the engine (fetching a blob first).
    fn receive(&self, f: Finished) {
        match f.result {
            Ok(Payload::Inline(value)) => {
                self.engine.deliver(&f.run_id, f.key, f.attempt, Ok(value));
            }
            Err(e) => self.engine.deliver(&f.run_id, f.key, f.attempt, Err(e)),
            Ok(blob) => {
                let (engine, blobs) = (self.engine.clone(), Arc::clone(&self.blobs));
                tokio::spawn(async move {
                    let result = blobs
                        .unpack(blob, false)
                        .await
                        .map_err(|e| TaskError::retryable("transfer", e));
                    engine.deliver(&f.run_id, f.key, f.attempt, result);
                });
            }
        }
    }

    /// Fetches a blob input off the agent, then assigns again with it inline.
    fn fetch_then_assign(
        &self,
        myself: &ActorRef<AgentMsg>,
        assignment: Assignment,
        input: Payload,
    ) {
        let (me, blobs, outbox) = (
            myself.clone(),
            Arc::clone(&self.blobs),
            Arc::clone(&self.outbox),
        );
        tokio::spawn(async move {
            match blobs.unpack(input, true).await {
                Ok(value) => {
                    let _ = me.cast(AgentMsg::Assign(Wire::new(Assigned {
                        assignment,
                        input: Payload::Inline(value),
                    })));
                }
                Err(e) => outbox.send(
                    assignment.owner,
                    Finished {
                        run_id: assignment.run_id,
                        key: assignment.key,
                        attempt: assignment.attempt,
                        result: Err(TaskError::retryable("transfer", e)),
                        from: String::new(),
                        delivery: 0,
                    },
                ),
            }
        });
    }

    fn heartbeat_template(&self) -> Heartbeat {
        Heartbeat {
            from: self.engine.node().to_owned(),
            seq: 0,
            sent_us: 0,
            addr: String::new(),
            labels: Vec::new(),
            slots: 0,
            load: self.engine.load() + self.running.len() as u32,
            registry_digest: 0,
            artifacts: Vec::new(),
        }
    }

    async fn assign(&mut self, myself: &ActorRef<AgentMsg>, a: Assignment) {
        let accepted = self.running.len() + self.starting;
        if accepted >= self.max_accepted {
            metrics::counter!("symphony_overloaded_replies_total").increment(1);
            let owner = a.owner.clone();
            self.outbox.send(
                owner,
                Finished {
                    run_id: a.run_id,
                    key: a.key,
                    attempt: a.attempt,
                    result: Err(TaskError::retryable(
                        OVERLOADED,
                        format!("node {} is full ({accepted} attempts)", self.engine.node()),
                    )),
                    from: String::new(),
                    delivery: 0,
                },
            );
            return;
        }
        let (run_id, key, attempt, owner) = (a.run_id.clone(), a.key, a.attempt, a.owner.clone());
        let home = owner.clone();
        let report_run = run_id.clone();
        let outbox = Arc::clone(&self.outbox);
        let blobs = Arc::clone(&self.blobs);
        let report: crate::engine::remote::ReportFn = Box::new(move |result| {
            let finished = Finished {
                run_id: report_run,
                key,
                attempt,
                result: result.map(|v| blobs.pack(v)),
                from: String::new(),
                delivery: 0,
            };
            // From the attempt's task: no hop through this agent.
            outbox.send(home, finished);
        });
        self.starting += 1;
        let spawned = self.engine.run_assigned(a, myself.get_cell(), report).await;
        self.starting -= 1;
        match spawned {
            Ok(actor) => {
                self.running
                    .insert(actor.get_id(), (run_id, key, attempt, owner, actor));
            }
            Err(error) => {
                warn!(run = %run_id, error = %error, "Could not start an assigned attempt.");
                self.outbox.send(
                    owner,
                    Finished {
                        run_id,
                        key,
                        attempt,
                        result: Err(error),
                        from: String::new(),
                        delivery: 0,
                    },
                );
            }
        }
    }
}
