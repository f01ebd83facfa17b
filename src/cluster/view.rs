//! The membership view every part of a node can read: who is in the
//! cluster, in what state, with what labels and load.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use super::nemesis::Nemesis;

/// What this node believes about a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerState {
    /// Heartbeats arrive.
    Up,
    /// Heartbeats are late (past `suspect_after`); no new work is placed there.
    Suspect,
    /// Heartbeats stopped (past `down_after`) or the link broke; its attempts
    /// fail with class `node_lost` and its session is torn down.
    Down,
}

impl PeerState {
    /// The state's name, as in JSON and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerState::Up => "up",
            PeerState::Suspect => "suspect",
            PeerState::Down => "down",
        }
    }
}

/// One member of the cluster, this node included.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Member {
    /// Node name.
    pub name: String,
    /// Cluster address (`host:port`) it advertises.
    pub addr: String,
    /// State as seen from this node (always `up` for itself).
    pub state: PeerState,
    /// Labels, for placement constraints.
    pub labels: BTreeMap<String, String>,
    /// Attempts it runs at once.
    pub slots: u32,
    /// Attempts running or queued there, as last reported.
    pub load: u32,
    /// Last heartbeat round trip in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Milliseconds since its last heartbeat (0 for this node).
    pub last_seen_ms: u64,
    /// SHA-256 (hex) of every model artifact it holds, as last reported.
    pub artifacts: Vec<String>,
}

/// The cluster as one node sees it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClusterSnapshot {
    /// This node's name.
    pub node: String,
    /// Whether this node has joined (always true for a node without seeds).
    pub joined: bool,
    /// Every known member, this node first, then by name.
    pub members: Vec<Member>,
}

/// A shared, cheap-to-clone handle on the membership view, and on the
/// node's [`Nemesis`], which everything that talks to peers consults.
#[derive(Debug, Clone)]
pub struct ClusterView {
    inner: Arc<RwLock<ClusterSnapshot>>,
    nemesis: Arc<Nemesis>,
}

impl ClusterView {
    /// A view holding only this node.
    pub fn new(me: Member, joined: bool) -> ClusterView {
        ClusterView {
            inner: Arc::new(RwLock::new(ClusterSnapshot {
                node: me.name.clone(),
                joined,
                members: vec![me],
            })),
            nemesis: Arc::new(Nemesis::default()),
        }
    }

    /// The same view with `nemesis` in place of the disabled one it was
    /// made with.
    pub fn with_nemesis(mut self, nemesis: Arc<Nemesis>) -> ClusterView {
        self.nemesis = nemesis;
        self
    }

    /// The node's nemesis (disabled unless the node's config enables it).
    pub fn nemesis(&self) -> &Arc<Nemesis> {
        &self.nemesis
    }

    /// A copy of the current view.
    pub fn snapshot(&self) -> ClusterSnapshot {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// `f` of the current view, read in place: for the hot paths that need
    /// a few fields of it and not a copy of every member.
    pub fn with<T>(&self, f: impl FnOnce(&ClusterSnapshot) -> T) -> T {
        f(&self.inner.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Whether this node has joined its cluster (what `/health` reports).
    pub fn is_joined(&self) -> bool {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).joined
    }

    /// The up members (this node included) that hold the model artifact
    /// `checksum` (hex SHA-256), by name: where to fetch it from, and where
    /// a replica of its model starts without fetching it.
    pub fn holders(&self, checksum: &str) -> Vec<String> {
        let view = self.inner.read().unwrap_or_else(|p| p.into_inner());
        view.members
            .iter()
            .filter(|m| m.state == PeerState::Up && m.artifacts.iter().any(|a| a == checksum))
            .map(|m| m.name.clone())
            .collect()
    }

    /// Changes the view.
    pub(crate) fn update(&self, f: impl FnOnce(&mut ClusterSnapshot)) {
        let mut view = self.inner.write().unwrap_or_else(|p| p.into_inner());
        f(&mut view);
        let me = view.node.clone();
        view.members
            .sort_by(|a, b| (a.name != me, &a.name).cmp(&(b.name != me, &b.name)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, state: PeerState, artifacts: &[&str]) -> Member {
        Member {
            name: name.into(),
            addr: String::new(),
            state,
            labels: BTreeMap::new(),
            slots: 1,
            load: 0,
            rtt_ms: None,
            last_seen_ms: 0,
            artifacts: artifacts.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    #[test]
    fn holders_are_the_up_members_that_hold_the_artifact() {
        let view = ClusterView::new(member("a", PeerState::Up, &["x"]), true);
        view.update(|v| {
            v.members.push(member("c", PeerState::Up, &["x", "y"]));
            v.members.push(member("b", PeerState::Down, &["x"]));
            v.members.push(member("d", PeerState::Suspect, &["x"]));
        });
        assert_eq!(view.holders("x"), vec!["a", "c"]);
        assert_eq!(view.holders("y"), vec!["c"]);
        assert!(view.holders("z").is_empty());
    }
}
