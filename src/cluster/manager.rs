//! The cluster manager: one local actor per node that owns membership.
//!
//! ractor_cluster authenticates sessions but never notices a frozen or cut
//! off peer and never reconnects. So every `interval` the manager pings every
//! peer's agent; a peer not heard from for `suspect_after` is `suspect` (no
//! new work goes there), for `down_after` `down`: the engine fails its
//! attempts with `node_lost`, the session is torn down, and the manager
//! dials the peer's address with backoff until it answers again. A broken
//! TCP link (a killed process) is `down` at once. Seeds are dialled the same
//! way until one session is ready.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::{NodeEventSubscription, NodeServerMessage};
use tracing::{debug, info, warn};

use super::agent::{AGENTS, AgentMsg};
use super::models::{ClusterRegistry, to_hex as hex};
use super::view::{ClusterView, Member, PeerState};
use super::wire::{Heartbeat, Wire};
use crate::engine::Engine;

/// Heartbeat timing.
#[derive(Debug, Clone, Copy)]
pub struct HeartbeatTimes {
    /// Between pings. Default 200 ms.
    pub interval: Duration,
    /// Silence after which a peer is `suspect`. Default 800 ms.
    pub suspect_after: Duration,
    /// Silence after which a peer is `down`. Default 1.5 s: with one interval
    /// of lateness, a frozen peer is down in under 2 s.
    pub down_after: Duration,
}

impl Default for HeartbeatTimes {
    fn default() -> Self {
        HeartbeatTimes {
            interval: Duration::from_millis(200),
            suspect_after: Duration::from_millis(800),
            down_after: Duration::from_millis(1500),
        }
    }
}

/// Longest wait between two dials of one address.
const MAX_DIAL_BACKOFF: Duration = Duration::from_secs(2);

/// Messages of [`Manager`].
#[derive(Debug)]
pub enum ManagerMsg {
    /// Time to ping, check silences and dial.
    Tick,
    /// A peer was heard: its ping, or its pong (with the echoed send time).
    Heard(Heartbeat, Option<u64>),
    /// A session event from ractor_cluster.
    Session(SessionEvent),
}

impl ractor::Message for ManagerMsg {}

/// What ractor_cluster reported about a session.
#[derive(Debug)]
pub enum SessionEvent {
    /// Authenticated and synced: the peer is reachable.
    Ready {
        /// ractor_cluster's id of the peer node.
        node_id: u64,
        /// The peer's name.
        name: String,
        /// The cluster address the peer advertises.
        addr: String,
    },
    /// The session ended.
    Closed {
        /// ractor_cluster's id of the peer node.
        node_id: u64,
        /// The peer's name, if it got as far as saying it.
        name: Option<String>,
        /// The peer's address.
        addr: String,
    },
}

/// This node, as peers should see it.
#[derive(Debug, Clone)]
pub struct Me {
    /// Node name.
    pub name: String,
    /// Advertised cluster address.
    pub addr: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Slots.
    pub slots: u32,
}

/// What the manager needs.
#[derive(Debug)]
pub struct ManagerArgs {
    /// This node.
    pub me: Me,
    /// Seed addresses (`host:port`).
    pub seeds: Vec<String>,
    /// Heartbeat timing.
    pub times: HeartbeatTimes,
    /// The node's engine (told about lost nodes; reports load).
    pub engine: Engine,
    /// The membership view to keep current.
    pub view: ClusterView,
    /// ractor_cluster's node server.
    pub node_server: ActorRef<NodeServerMessage>,
    /// The node's model registry, whose digest and artifacts pings carry.
    pub models: Option<Arc<ClusterRegistry>>,
}

/// The manager actor; its state is [`ManagerState`].
#[derive(Debug)]
pub struct Manager;

#[derive(Debug)]
struct Peer {
    addr: String,
    state: PeerState,
    last_seen: Instant,
    labels: BTreeMap<String, String>,
    slots: u32,
    load: u32,
    rtt_ms: Option<f64>,
    node_id: Option<u64>,
    /// Model artifacts it holds (hex SHA-256).
    artifacts: Vec<String>,
}

#[derive(Debug)]
struct Dial {
    next: Instant,
    backoff: Duration,
}

/// The manager's state.
#[derive(Debug)]
pub struct ManagerState {
    args: ManagerArgs,
    peers: BTreeMap<String, Peer>,
    /// Addresses to dial: seeds until joined, and down peers.
    dials: HashMap<String, Dial>,
    joined: bool,
    seq: u64,
    clock: Instant,
    /// When the last tick ran: a long gap means this node was paused.
    last_tick: Instant,
    /// Model artifacts this node holds, as of the last ping.
    artifacts: Vec<String>,
}

/// Forwards ractor_cluster's node events to the manager.
struct Subscription(ActorRef<ManagerMsg>);

fn peer_name(ses: &ractor_cluster::node::NodeServerSessionInformation) -> Option<String> {
    ses.peer_name
        .as_ref()
        .map(|n| n.name.split('@').next().unwrap_or_default().to_owned())
}

impl NodeEventSubscription for Subscription {
    fn node_session_opened(&self, ses: ractor_cluster::node::NodeServerSessionInformation) {
        debug!(addr = %ses.peer_addr, "Cluster session opened.");
    }

    fn node_session_disconnected(&self, ses: ractor_cluster::node::NodeServerSessionInformation) {
        let _ = self.0.cast(ManagerMsg::Session(SessionEvent::Closed {
            node_id: ses.node_id,
            name: peer_name(&ses),
            addr: ses.peer_addr.clone(),
        }));
    }

    fn node_session_authenticated(&self, _ses: ractor_cluster::node::NodeServerSessionInformation) {
    }

    fn node_session_ready(&self, ses: ractor_cluster::node::NodeServerSessionInformation) {
        if let Some(name) = peer_name(&ses) {
            let addr = ses
                .peer_name
                .as_ref()
                .map(|n| n.connection_string.clone())
                .unwrap_or_default();
            let _ = self.0.cast(ManagerMsg::Session(SessionEvent::Ready {
                node_id: ses.node_id,
                name,
                addr,
            }));
        }
    }
}

impl Actor for Manager {
    type Msg = ManagerMsg;
    type State = ManagerState;
    type Arguments = ManagerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ManagerMsg>,
        args: ManagerArgs,
    ) -> Result<ManagerState, ActorProcessingErr> {
        args.node_server
            .cast(NodeServerMessage::SubscribeToEvents {
                id: "symphony-manager".into(),
                subscription: Box::new(Subscription(myself.clone())),
            })
            .map_err(|e| format!("cannot subscribe to node events: {e}"))?;
        let now = Instant::now();
        let dials = args
            .seeds
            .iter()
            .filter(|s| **s != args.me.addr)
            .map(|s| {
                let dial = Dial {
                    next: now,
                    backoff: Duration::from_millis(100),
                };
                (s.clone(), dial)
            })
            .collect::<HashMap<_, _>>();
        let joined = dials.is_empty();
        args.view.update(|v| v.joined = joined);
        myself.send_interval(args.times.interval, || ManagerMsg::Tick);
        let _ = myself.cast(ManagerMsg::Tick);
        Ok(ManagerState {
            args,
            peers: BTreeMap::new(),
            dials,
            joined,
            seq: 0,
            clock: now,
            last_tick: now,
            artifacts: Vec::new(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<ManagerMsg>,
        msg: ManagerMsg,
        state: &mut ManagerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ManagerMsg::Tick => {
                state.forgive_own_pause();
                state.ping();
                state.check_silences().await;
                state.dial();
            }
            ManagerMsg::Heard(hb, echo) => state.heard(hb, echo),
            ManagerMsg::Session(SessionEvent::Ready {
                node_id,
                name,
                addr,
            }) => {
                // Joined means a session with a seed: a peer that dialled us
                // first may itself be cut off from the rest of the cluster.
                if !state.joined && state.args.seeds.contains(&addr) {
                    info!(peer = %name, seed = %addr, "Joined the cluster.");
                    state.joined = true;
                    let seeds = &state.args.seeds;
                    state.dials.retain(|a, _| !seeds.contains(a));
                    state.args.view.update(|v| v.joined = true);
                }
                let peer = state.peer(&name);
                peer.node_id = Some(node_id);
                if !addr.is_empty() {
                    peer.addr = addr;
                }
            }
            ManagerMsg::Session(SessionEvent::Closed {
                node_id,
                name,
                addr,
            }) => {
                let peer = name.as_ref().and_then(|n| state.peers.get(n));
                match peer.map(|p| (p.node_id == Some(node_id), p.state)) {
                    Some((true, PeerState::Up | PeerState::Suspect)) => {
                        let name = name.unwrap_or_default();
                        info!(peer = %name, "Cluster session closed.");
                        state.declare_down(&name, "its connection closed").await;
                    }
                    // The session of a peer already down, or a duplicate.
                    Some((true, PeerState::Down)) | Some((false, _)) => {}
                    None => warn!(
                        peer = name.as_deref().unwrap_or("?"),
                        %addr,
                        "A cluster session closed before the peer authenticated: wrong cookie, or not a symphony node."
                    ),
                }
            }
        }
        state.publish();
        Ok(())
    }
}

impl ManagerState {
    fn now_us(&self) -> u64 {
        self.clock.elapsed().as_micros() as u64
    }

    fn peer(&mut self, name: &str) -> &mut Peer {
        self.peers.entry(name.to_owned()).or_insert_with(|| Peer {
            addr: String::new(),
            state: PeerState::Up,
            last_seen: Instant::now(),
            labels: BTreeMap::new(),
            slots: 0,
            load: 0,
            rtt_ms: None,
            node_id: None,
            artifacts: Vec::new(),
        })
    }

    fn ping(&mut self) {
        self.seq += 1;
        let (registry_digest, artifacts) = self
            .args
            .models
            .as_ref()
            .map(|m| m.advertised())
            .unwrap_or_default();
        self.artifacts = artifacts.iter().map(hex).collect();
        let me = &self.args.me;
        let hb = Heartbeat {
            from: me.name.clone(),
            seq: self.seq,
            sent_us: self.now_us(),
            addr: me.addr.clone(),
            labels: me
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            slots: me.slots,
            load: self.args.engine.load(),
            registry_digest,
            artifacts,
        };
        // Pings go through the nemesis like everything sent to a peer, so
        // that a nemesis partition makes peers suspect and down.
        let names: HashMap<u64, &str> = self
            .peers
            .iter()
            .filter_map(|(name, p)| p.node_id.map(|id| (id, name.as_str())))
            .collect();
        let nemesis = self.args.view.nemesis();
        for cell in ractor::pg::get_members(&AGENTS.to_owned()) {
            if cell.get_id().is_local() {
                continue;
            }
            let name = names.get(&cell.get_id().node()).copied();
            let agent: ActorRef<AgentMsg> = cell.into();
            let ping = AgentMsg::Ping(Wire::new(hb.clone()));
            let _ = match name {
                Some(name) => nemesis.cast(name, &agent, ping),
                // Not yet named by its session: nobody can have cut it off.
                None => agent.cast(ping).map_err(|e| e.to_string()),
            };
        }
    }

    fn heard(&mut self, hb: Heartbeat, echo: Option<u64>) {
        if hb.from == self.args.me.name {
            return;
        }
        let now_us = self.now_us();
        let peer = self.peer(&hb.from);
        if peer.state != PeerState::Up {
            info!(peer = %hb.from, was = ?peer.state, "Peer is up.");
            metrics::counter!("symphony_peer_recoveries_total").increment(1);
        }
        peer.state = PeerState::Up;
        peer.last_seen = Instant::now();
        peer.load = hb.load;
        if let Some(sent) = echo {
            let rtt = now_us.saturating_sub(sent) as f64 / 1000.0;
            peer.rtt_ms = Some(rtt);
            metrics::histogram!("symphony_heartbeat_rtt_seconds").record(rtt / 1000.0);
        } else {
            peer.addr = hb.addr;
            peer.labels = hb.labels.into_iter().collect();
            peer.slots = hb.slots;
            peer.artifacts = hb.artifacts.iter().map(hex).collect();
        }
        let addr = peer.addr.clone();
        self.dials.remove(&addr);
    }

    /// If this node itself was paused (SIGSTOP, a long GC-like stall), its
    /// peers' silence is its own doing: restart their clocks rather than
    /// declare healthy peers down the moment it wakes up.
    fn forgive_own_pause(&mut self) {
        let gap = self.last_tick.elapsed();
        self.last_tick = Instant::now();
        if gap > self.args.times.suspect_after {
            warn!(
                paused_ms = gap.as_millis() as u64,
                "This node was paused; restarting peer clocks."
            );
            for peer in self.peers.values_mut() {
                peer.last_seen = self.last_tick;
            }
        }
    }

    async fn check_silences(&mut self) {
        let times = self.args.times;
        let mut down = Vec::new();
        for (name, peer) in &mut self.peers {
            let silent = peer.last_seen.elapsed();
            match peer.state {
                PeerState::Down => {}
                _ if silent > times.down_after => down.push(name.clone()),
                PeerState::Up if silent > times.suspect_after => {
                    warn!(peer = %name, silent_ms = silent.as_millis() as u64, "Peer is suspect.");
                    peer.state = PeerState::Suspect;
                }
                _ => {}
            }
        }
        for name in down {
            self.declare_down(&name, "no heartbeat").await;
        }
    }

    /// A peer is gone: fail its attempts, drop its session, dial it again.
    async fn declare_down(&mut self, name: &str, why: &str) {
        let Some(peer) = self.peers.get_mut(name) else {
            return;
        };
        warn!(peer = %name, reason = why, "Peer is down.");
        metrics::counter!("symphony_peers_down_total").increment(1);
        peer.state = PeerState::Down;
        let node_id = peer.node_id.take();
        let addr = peer.addr.clone();
        self.args.engine.node_lost(name);
        if let Some(node_id) = node_id {
            let sessions =
                ractor::call_t!(self.args.node_server, NodeServerMessage::GetSessions, 1000);
            if let Ok(sessions) = sessions {
                if let Some(ses) = sessions.get(&node_id) {
                    ses.actor.stop(Some(format!("peer {name} is down: {why}")));
                }
            }
        }
        if !addr.is_empty() {
            self.dials.insert(
                addr,
                Dial {
                    next: Instant::now() + Duration::from_millis(100),
                    backoff: Duration::from_millis(200),
                },
            );
        }
    }

    /// Dials every address whose backoff is over, without waiting for it.
    fn dial(&mut self) {
        let now = Instant::now();
        let nemesis = self.args.view.nemesis();
        for (addr, dial) in &mut self.dials {
            if dial.next > now {
                continue;
            }
            // A peer the nemesis cuts this node off from is not dialled:
            // on a real partition the dial would not get through either.
            let cut_off = self.peers.iter().any(|(name, p)| {
                p.addr == *addr && nemesis.verdict(name) == super::nemesis::Verdict::Drop
            });
            if cut_off {
                continue;
            }
            dial.next = now + dial.backoff;
            dial.backoff = (dial.backoff * 2).min(MAX_DIAL_BACKOFF);
            let server = self.args.node_server.clone();
            let addr = addr.clone();
            metrics::counter!("symphony_dials_total").increment(1);
            tokio::spawn(async move {
                if let Err(e) = ractor_cluster::client_connect(&server, addr.as_str()).await {
                    debug!(%addr, error = %e, "Dial failed.");
                }
            });
        }
    }

    /// Copies the peers into the shared view.
    fn publish(&self) {
        let me = &self.args.me;
        let mut members = vec![Member {
            name: me.name.clone(),
            addr: me.addr.clone(),
            state: PeerState::Up,
            labels: me.labels.clone(),
            slots: me.slots,
            load: self.args.engine.load(),
            rtt_ms: None,
            last_seen_ms: 0,
            artifacts: self.artifacts.clone(),
        }];
        members.extend(self.peers.iter().map(|(name, p)| Member {
            name: name.clone(),
            addr: p.addr.clone(),
            state: p.state,
            labels: p.labels.clone(),
            slots: p.slots,
            load: p.load,
            rtt_ms: p.rtt_ms,
            last_seen_ms: p.last_seen.elapsed().as_millis() as u64,
            artifacts: p.artifacts.clone(),
        }));
        for state in [PeerState::Up, PeerState::Suspect, PeerState::Down] {
            let count = members.iter().filter(|m| m.state == state).count();
            metrics::gauge!("symphony_peers", "state" => state.as_str()).set(count as f64);
        }
        self.args.view.update(|v| v.members = members);
    }
}
