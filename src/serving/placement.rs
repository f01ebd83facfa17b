//! Where a deployment's replicas run, decided without a coordinator: every
//! node computes [`plan`] from the deployment record (which every node has)
//! and its own membership view, and starts the replicas that fall on it.
//! Pure: no I/O, no clock, no randomness, so nodes that see the same members
//! agree.
//!
//! The rules, in order:
//! 1. Only members that are `up` and carry every placement label qualify.
//! 2. Nodes that already hold the version's artifact come first (no
//!    transfer, no cold cache), then the others; within each group, by node
//!    name.
//! 3. One replica per node: a replica batches every request its node sends
//!    it, so a second one on the same node would only split its batches.
//!    Replicas beyond the number of qualifying nodes are not placed; they
//!    are reported as `unplaced` and placed as soon as more nodes qualify.
//! 4. The canary gets `ceil(replicas × percent / 100)` replicas (at least
//!    one when its percent is above 0, none at 0), placed by the same rules
//!    independently of the primary (it may share nodes with it).
//!
//! When a node goes down it leaves every survivor's view; their plans then
//! put its replica on the next qualifying node: that is the replacement.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::cluster::{Member, PeerState};
use crate::registry::DeploymentSpec;

/// Where the replicas of one deployment go.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Nodes running a replica of the primary, in preference order.
    pub primary: Vec<String>,
    /// Nodes running a replica of the canary, in preference order.
    pub canary: Vec<String>,
    /// Replicas asked for (primary and canary) that no node could take.
    pub unplaced: u32,
}

/// How many replicas the canary of `spec` gets (see the module rules).
pub fn canary_replicas(spec: &DeploymentSpec) -> u32 {
    match &spec.canary {
        None => 0,
        Some(c) if c.percent == 0 => 0,
        Some(c) => (u64::from(spec.replicas) * u64::from(c.percent))
            .div_ceil(100)
            .max(1) as u32,
    }
}

/// The nodes `replicas` replicas go to among `members`: those up and
/// carrying `labels`, holders of the artifact first, then by name, one
/// replica per node.
pub fn place(
    replicas: u32,
    labels: &BTreeMap<String, String>,
    members: &[Member],
    holders: &BTreeSet<String>,
) -> Vec<String> {
    let mut candidates: Vec<(bool, &str)> = members
        .iter()
        .filter(|m| m.state == PeerState::Up && crate::cluster::placement::matches(m, labels))
        .map(|m| (!holders.contains(&m.name), m.name.as_str()))
        .collect();
    candidates.sort_unstable();
    candidates.dedup_by(|a, b| a.1 == b.1);
    candidates
        .into_iter()
        .take(replicas as usize)
        .map(|(_, name)| name.to_owned())
        .collect()
}

/// Where the primary's and the canary's replicas of `spec` go;
/// `holders(primary)` and `holders(canary)` are the nodes holding each
/// one's artifact.
pub fn plan(
    spec: &DeploymentSpec,
    members: &[Member],
    primary_holders: &BTreeSet<String>,
    canary_holders: &BTreeSet<String>,
) -> Plan {
    let primary = place(spec.replicas, &spec.placement, members, primary_holders);
    let wanted_canary = canary_replicas(spec);
    let canary = place(wanted_canary, &spec.placement, members, canary_holders);
    let unplaced =
        (spec.replicas as usize - primary.len()) + (wanted_canary as usize - canary.len());
    Plan {
        primary,
        canary,
        unplaced: unplaced as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Canary, Stamp, VersionId};

    fn member(name: &str, state: PeerState, labels: &[(&str, &str)]) -> Member {
        Member {
            name: name.into(),
            addr: String::new(),
            state,
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            slots: 4,
            load: 0,
            rtt_ms: None,
            last_seen_ms: 0,
            artifacts: Vec::new(),
        }
    }

    fn up(name: &str) -> Member {
        member(name, PeerState::Up, &[])
    }

    fn id(n: u64) -> VersionId {
        VersionId {
            stamp: Stamp {
                wall_ms: n,
                logical: 0,
            },
            node: "n1".into(),
        }
    }

    fn spec(replicas: u32, canary: Option<u8>) -> DeploymentSpec {
        DeploymentSpec {
            primary: id(1),
            primary_version: 1,
            replicas,
            max_batch: 32,
            max_wait_ms: 0,
            canary: canary.map(|percent| Canary {
                target: id(2),
                version: 2,
                percent,
            }),
            placement: BTreeMap::new(),
        }
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn replicas_spread_over_distinct_nodes_by_name() {
        // The order members are listed in does not matter.
        let members = [up("n3"), up("n1"), up("n2")];
        assert_eq!(
            place(2, &BTreeMap::new(), &members, &set(&[])),
            ["n1", "n2"]
        );
        let mut reversed = members.clone();
        reversed.reverse();
        assert_eq!(
            place(2, &BTreeMap::new(), &reversed, &set(&[])),
            ["n1", "n2"]
        );
        // More replicas than nodes: one per node, the rest unplaced.
        let p = plan(&spec(5, None), &members, &set(&[]), &set(&[]));
        assert_eq!(p.primary, ["n1", "n2", "n3"]);
        assert_eq!(p.unplaced, 2);
    }

    #[test]
    fn nodes_holding_the_artifact_come_first() {
        let members = [up("n1"), up("n2"), up("n3")];
        assert_eq!(
            place(2, &BTreeMap::new(), &members, &set(&["n3"])),
            ["n3", "n1"]
        );
        assert_eq!(
            place(1, &BTreeMap::new(), &members, &set(&["n2", "n3"])),
            ["n2"]
        );
    }

    #[test]
    fn labels_and_states_filter_nodes() {
        let members = [
            member("a", PeerState::Up, &[("gpu", "true")]),
            member("b", PeerState::Up, &[]),
            member("c", PeerState::Suspect, &[("gpu", "true")]),
            member("d", PeerState::Down, &[("gpu", "true")]),
            member("e", PeerState::Up, &[("gpu", "true"), ("zone", "x")]),
        ];
        let gpu = BTreeMap::from([("gpu".to_owned(), "true".to_owned())]);
        assert_eq!(place(3, &gpu, &members, &set(&["d"])), ["a", "e"]);
        let mut s = spec(3, None);
        s.placement = gpu;
        assert_eq!(plan(&s, &members, &set(&[]), &set(&[])).unplaced, 1);
        let none = BTreeMap::from([("gpu".to_owned(), "false".to_owned())]);
        assert!(place(1, &none, &members, &set(&[])).is_empty());
    }

    #[test]
    fn a_lost_node_is_replaced_by_the_next_one() {
        let all = [up("n1"), up("n2"), up("n3")];
        assert_eq!(place(2, &BTreeMap::new(), &all, &set(&[])), ["n1", "n2"]);
        let lost = [up("n1"), member("n2", PeerState::Down, &[]), up("n3")];
        assert_eq!(place(2, &BTreeMap::new(), &lost, &set(&[])), ["n1", "n3"]);
        // Without n2 in the view at all, the same.
        assert_eq!(
            place(2, &BTreeMap::new(), &[up("n3"), up("n1")], &set(&[])),
            ["n1", "n3"]
        );
    }

    #[test]
    fn the_canary_gets_its_share_of_replicas() {
        assert_eq!(canary_replicas(&spec(4, None)), 0);
        assert_eq!(canary_replicas(&spec(4, Some(0))), 0);
        assert_eq!(canary_replicas(&spec(4, Some(1))), 1);
        assert_eq!(canary_replicas(&spec(4, Some(20))), 1);
        assert_eq!(canary_replicas(&spec(4, Some(50))), 2);
        assert_eq!(canary_replicas(&spec(4, Some(100))), 4);
        let members = [up("n1"), up("n2"), up("n3")];
        let p = plan(&spec(2, Some(20)), &members, &set(&[]), &set(&["n3"]));
        assert_eq!(p.primary, ["n1", "n2"]);
        assert_eq!(p.canary, ["n3"]);
        assert_eq!(p.unplaced, 0);
    }
}
