//! Where an attempt runs: nodes carrying the task's `placement` labels, then
//! the less loaded of two random candidates ("power of two choices"), by the
//! load each node last reported plus what this node sent there since.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::agent::{AgentMsg, agent_of};
use super::blob::Blobs;
use super::view::{ClusterView, Member, PeerState};
use super::wire::{Assigned, StopAttempt, Wire};
use crate::engine::remote::{Assignment, Placed, Placement};
use crate::engine::retry::Jitter;
use crate::engine::{Engine, TaskKey};

/// Chooses between candidates; pure. `load_of` gives a candidate's load per
/// slot; `draw` two uniform numbers in `[0, 1)`.
pub fn choose<'a>(
    candidates: &[&'a Member],
    load_of: impl Fn(&Member) -> f64,
    draw: (f64, f64),
) -> Option<&'a Member> {
    match candidates.len() {
        0 => None,
        1 => Some(candidates[0]),
        n => {
            let a = ((draw.0 * n as f64) as usize).min(n - 1);
            let mut b = ((draw.1 * (n - 1) as f64) as usize).min(n - 2);
            if b >= a {
                b += 1;
            }
            let (a, b) = (candidates[a], candidates[b]);
            Some(if load_of(b) < load_of(a) { b } else { a })
        }
    }
}

/// Whether `member` carries every label in `wanted`.
pub fn matches(member: &Member, wanted: &BTreeMap<String, String>) -> bool {
    wanted
        .iter()
        .all(|(k, v)| member.labels.get(k).is_some_and(|have| have == v))
}

/// The engine's [`Placement`] over the cluster view and node agents.
#[derive(Debug)]
pub struct ClusterPlacement {
    view: ClusterView,
    engine: Engine,
    /// Attempts this node sent to each peer and not yet settled.
    sent: Mutex<HashMap<String, u32>>,
    jitter: Mutex<Jitter>,
    blobs: std::sync::Arc<Blobs>,
}

impl ClusterPlacement {
    /// Placement for `engine` over `view`.
    pub fn new(view: ClusterView, engine: Engine, blobs: std::sync::Arc<Blobs>) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(7, |d| d.as_nanos() as u64);
        ClusterPlacement {
            view,
            engine,
            sent: Mutex::new(HashMap::new()),
            jitter: Mutex::new(Jitter::new(seed)),
            blobs,
        }
    }
}

impl Placement for ClusterPlacement {
    fn place(&self, labels: &BTreeMap<String, String>) -> Placed {
        let draw = {
            let mut j = self.jitter.lock().unwrap_or_else(|p| p.into_inner());
            (j.next_f64(), j.next_f64())
        };
        // Read in place: a task is placed per attempt, and a copy of the
        // view would copy every member's labels and artifact list.
        self.view.with(|view| {
            let candidates: Vec<&Member> = view
                .members
                .iter()
                .filter(|m| (m.name == view.node || m.state == PeerState::Up) && matches(m, labels))
                .collect();
            let sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
            let load_of = |m: &Member| {
                let load = if m.name == view.node {
                    self.engine.load()
                } else {
                    m.load + sent.get(&m.name).copied().unwrap_or(0)
                };
                f64::from(load) / f64::from(m.slots.max(1))
            };
            match choose(&candidates, load_of, draw) {
                None => Placed::Nowhere,
                Some(m) if m.name == view.node => Placed::Local,
                Some(m) => Placed::Remote(m.name.clone()),
            }
        })
    }

    fn assign(&self, node: &str, mut assignment: Assignment) -> Result<(), String> {
        let agent = agent_of(node).ok_or_else(|| format!("node {node} is not connected"))?;
        *self
            .sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(node.to_owned())
            .or_default() += 1;
        let input = self.blobs.pack(std::mem::take(&mut assignment.input));
        let msg = AgentMsg::Assign(Wire::new(Assigned { assignment, input }));
        self.view.nemesis().cast(node, &agent, msg)
    }

    fn stop(&self, node: &str, run_id: &str, key: TaskKey, attempt: u32) {
        if let Some(agent) = agent_of(node) {
            let stop = StopAttempt {
                run_id: run_id.to_owned(),
                key,
                attempt,
            };
            let msg = AgentMsg::Stop(Wire::new(stop));
            let _ = self.view.nemesis().cast(node, &agent, msg);
        }
    }

    fn released(&self, node: &str) {
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = sent.get_mut(node) {
            *n = n.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, labels: &[(&str, &str)]) -> Member {
        Member {
            name: name.into(),
            addr: String::new(),
            state: PeerState::Up,
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

    #[test]
    fn labels_filter_candidates() {
        let gpu = member("a", &[("gpu", "true")]);
        let cpu = member("b", &[]);
        let want: BTreeMap<_, _> = [("gpu".to_string(), "true".to_string())].into();
        assert!(matches(&gpu, &want));
        assert!(!matches(&cpu, &want));
        assert!(matches(&cpu, &BTreeMap::new()));
    }

    #[test]
    fn the_less_loaded_of_two_distinct_candidates_wins() {
        let (a, b, c) = (member("a", &[]), member("b", &[]), member("c", &[]));
        let all = [&a, &b, &c];
        let load = |m: &Member| if m.name == "a" { 0.9 } else { 0.1 };
        // Draws that pick a and b: b is less loaded.
        assert_eq!(choose(&all, load, (0.0, 0.0)).unwrap().name, "b");
        // Never the same candidate twice: with a drawn first, the second is b or c.
        for i in 0..100 {
            let x = i as f64 / 100.0;
            assert_ne!(choose(&all, load, (0.0, x)).unwrap().name, "a");
        }
        assert!(choose(&[], load, (0.5, 0.5)).is_none());
        assert_eq!(choose(&[&a], load, (0.5, 0.5)).unwrap().name, "a");
    }
}
