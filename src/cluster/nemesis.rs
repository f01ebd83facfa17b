//! The nemesis: a chaos-testing aid that drops or delays this node's
//! traffic to chosen peers, so partitions and slow links can be made on
//! loopback without root.
//!
//! It works at the application layer: every message this node sends to a
//! peer (heartbeats, assignments, results, acknowledgements, blob and
//! artifact chunks, model requests, Raft messages) asks
//! [`Nemesis::verdict`] first. A partition is two one-way faults: each side
//! drops its traffic to the other. Dropped heartbeats make peers go
//! `suspect` then `down` exactly as a real partition does; while this node
//! drops its traffic to a peer it does not dial it either.
//!
//! Off unless the node config says `chaos: { nemesis: true }`; a disabled
//! nemesis refuses faults and always answers [`Verdict::Pass`]. With no
//! fault set, a verdict costs one atomic load.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ractor::ActorRef;
use serde::{Deserialize, Serialize};

use super::agent::AgentMsg;

/// What happens to one message to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it.
    Pass,
    /// Lose it.
    Drop,
    /// Send it after this long.
    Delay(Duration),
}

/// What a fault does to the traffic to its peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Every message is lost.
    Drop,
    /// Every message is sent `delay_ms` late.
    Delay,
}

/// A request for faults (`POST /api/v1/chaos/faults`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRequest {
    /// The peers (node names) whose traffic from this node is affected.
    pub peers: Vec<String>,
    /// Drop or delay.
    pub action: Action,
    /// For `delay`: how late, in milliseconds (1 to 600,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// How long the fault lasts, in milliseconds (1 to 86,400,000);
    /// absent: until healed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_ms: Option<u64>,
}

/// A fault in force (`GET /api/v1/chaos/faults`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultView {
    /// The peer whose traffic from this node is affected.
    pub peer: String,
    /// Drop or delay.
    pub action: Action,
    /// For `delay`: how late, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Milliseconds until the fault heals by itself; absent: until healed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_ms: Option<u64>,
}

/// Why a fault was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NemesisError {
    /// The node's config does not enable the nemesis.
    #[error(
        "the nemesis is disabled on this node: start it with `chaos: {{ nemesis: true }}` in its config (or --chaos-nemesis)"
    )]
    Disabled,
    /// The request makes no sense.
    #[error("{0}")]
    Invalid(String),
}

/// Longest delay a fault may ask for: 10 minutes.
pub const MAX_DELAY: Duration = Duration::from_secs(600);
/// Longest a timed fault may last: a day (longer: leave `for_ms` out).
pub const MAX_FOR: Duration = Duration::from_secs(86_400);

#[derive(Debug, Clone, Copy)]
struct Fault {
    verdict: Verdict,
    until: Option<Instant>,
}

impl Fault {
    fn live(&self, now: Instant) -> bool {
        self.until.is_none_or(|until| now < until)
    }
}

/// The node's nemesis; shared as an `Arc`, queried on every send to a peer.
#[derive(Debug, Default)]
pub struct Nemesis {
    enabled: bool,
    /// Whether any fault may be in force: the only thing read when none is.
    armed: AtomicBool,
    /// By peer name.
    faults: RwLock<BTreeMap<String, Fault>>,
}

impl Nemesis {
    /// A nemesis that accepts faults when `enabled`, and none set.
    pub fn new(enabled: bool) -> Nemesis {
        Nemesis {
            enabled,
            ..Nemesis::default()
        }
    }

    /// Whether the node's config enabled it.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// What to do with a message to `peer`: [`Verdict::Pass`] when disabled
    /// or no fault is set for it.
    pub fn verdict(&self, peer: &str) -> Verdict {
        if !self.armed.load(Ordering::Acquire) {
            return Verdict::Pass;
        }
        let now = Instant::now();
        let expired = {
            let faults = self.faults.read().unwrap_or_else(|p| p.into_inner());
            match faults.get(peer) {
                Some(fault) if fault.live(now) => return fault.verdict,
                Some(_) => true,
                None => false,
            }
        };
        if expired {
            self.prune(now);
        }
        Verdict::Pass
    }

    /// Sets `request`'s fault for each of its peers (replacing what was set
    /// for them).
    ///
    /// # Errors
    /// When the nemesis is disabled, or the request is invalid (no peers,
    /// an empty name, a delay missing, zero or over [`MAX_DELAY`], a zero
    /// duration).
    pub fn inject(&self, request: &FaultRequest) -> Result<(), NemesisError> {
        if !self.enabled {
            return Err(NemesisError::Disabled);
        }
        let invalid = |why: &str| Err(NemesisError::Invalid(why.to_owned()));
        if request.peers.is_empty() {
            return invalid("\"peers\" names no node: give at least one peer's name");
        }
        if request.peers.iter().any(|p| p.trim().is_empty()) {
            return invalid("\"peers\" holds an empty node name");
        }
        let verdict = match (request.action, request.delay_ms) {
            (Action::Drop, None) => Verdict::Drop,
            (Action::Drop, Some(_)) => {
                return invalid("\"delay_ms\" is only for \"action\": \"delay\"");
            }
            (Action::Delay, None) => {
                return invalid("\"action\": \"delay\" needs \"delay_ms\" (milliseconds)");
            }
            (Action::Delay, Some(0)) => return invalid("\"delay_ms\" must be at least 1"),
            (Action::Delay, Some(ms)) if Duration::from_millis(ms) > MAX_DELAY => {
                return invalid("\"delay_ms\" must be at most 600000 (10 minutes)");
            }
            (Action::Delay, Some(ms)) => Verdict::Delay(Duration::from_millis(ms)),
        };
        let now = Instant::now();
        let until = match request.for_ms {
            None => None,
            Some(0) => {
                return invalid("\"for_ms\" must be at least 1 (leave it out: until healed)");
            }
            Some(ms) if Duration::from_millis(ms) > MAX_FOR => {
                return invalid(
                    "\"for_ms\" must be at most 86400000 (a day); leave it out: until healed",
                );
            }
            Some(ms) => now.checked_add(Duration::from_millis(ms)),
        };
        let mut faults = self.faults.write().unwrap_or_else(|p| p.into_inner());
        for peer in &request.peers {
            faults.insert(peer.trim().to_owned(), Fault { verdict, until });
        }
        self.armed.store(true, Ordering::Release);
        Ok(())
    }

    /// Removes every fault; returns how many were in force.
    pub fn heal(&self) -> usize {
        let mut faults = self.faults.write().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let live = faults.values().filter(|f| f.live(now)).count();
        faults.clear();
        self.armed.store(false, Ordering::Release);
        live
    }

    /// The faults in force, by peer.
    pub fn faults(&self) -> Vec<FaultView> {
        let now = Instant::now();
        self.prune(now);
        let faults = self.faults.read().unwrap_or_else(|p| p.into_inner());
        faults
            .iter()
            .map(|(peer, fault)| {
                let (action, delay_ms) = match fault.verdict {
                    Verdict::Delay(d) => (Action::Delay, Some(d.as_millis() as u64)),
                    _ => (Action::Drop, None),
                };
                FaultView {
                    peer: peer.clone(),
                    action,
                    delay_ms,
                    remaining_ms: fault
                        .until
                        .map(|u| u.saturating_duration_since(now).as_millis() as u64),
                }
            })
            .collect()
    }

    /// Forgets expired faults; disarms when none is left.
    fn prune(&self, now: Instant) {
        let Ok(mut faults) = self.faults.try_write() else {
            // Another thread holds the lock: it will do.
            return;
        };
        faults.retain(|_, f| f.live(now));
        if faults.is_empty() {
            self.armed.store(false, Ordering::Release);
        }
    }

    /// Casts `msg` to `agent`, the agent of `peer`, through the nemesis:
    /// sent now, lost (counted in `symphony_nemesis_messages_total`), or
    /// sent by a task of its own after the delay (delayed messages may
    /// overtake one another).
    ///
    /// # Errors
    /// When a message sent now cannot be sent (the session is gone).
    pub fn cast(
        &self,
        peer: &str,
        agent: &ActorRef<AgentMsg>,
        msg: AgentMsg,
    ) -> Result<(), String> {
        match self.verdict(peer) {
            Verdict::Pass => agent
                .cast(msg)
                .map_err(|e| format!("cannot reach node {peer}: {e}")),
            Verdict::Drop => {
                counted("dropped");
                Ok(())
            }
            Verdict::Delay(delay) => {
                counted("delayed");
                let agent = agent.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = agent.cast(msg);
                });
                Ok(())
            }
        }
    }

    /// Before a call (a request that waits for its answer) to `peer`: waits
    /// out a delay, or refuses at once when the traffic is dropped (the
    /// caller treats `peer` as unreachable).
    ///
    /// # Errors
    /// When the nemesis drops this node's traffic to `peer`.
    pub async fn admit(&self, peer: &str) -> Result<(), String> {
        match self.verdict(peer) {
            Verdict::Pass => Ok(()),
            Verdict::Drop => {
                counted("dropped");
                Err(format!("node {peer} is cut off by the nemesis"))
            }
            Verdict::Delay(delay) => {
                counted("delayed");
                tokio::time::sleep(delay).await;
                Ok(())
            }
        }
    }
}

fn counted(verdict: &'static str) {
    metrics::counter!("symphony_nemesis_messages_total", "verdict" => verdict).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(
        peers: &[&str],
        action: Action,
        delay_ms: Option<u64>,
        for_ms: Option<u64>,
    ) -> FaultRequest {
        FaultRequest {
            peers: peers.iter().map(|p| (*p).to_owned()).collect(),
            action,
            delay_ms,
            for_ms,
        }
    }

    #[test]
    fn a_disabled_nemesis_refuses_faults_and_passes_everything() {
        let n = Nemesis::default();
        assert!(!n.enabled());
        assert_eq!(
            n.inject(&request(&["b"], Action::Drop, None, None)),
            Err(NemesisError::Disabled)
        );
        assert_eq!(n.verdict("b"), Verdict::Pass);
        assert!(n.faults().is_empty());
        assert!(NemesisError::Disabled.to_string().contains("nemesis: true"));
    }

    #[test]
    fn faults_apply_to_their_peers_until_healed() {
        let n = Nemesis::new(true);
        assert_eq!(n.verdict("b"), Verdict::Pass);
        n.inject(&request(&["b", "c"], Action::Drop, None, None))
            .unwrap();
        n.inject(&request(&["d"], Action::Delay, Some(250), Some(60_000)))
            .unwrap();
        assert_eq!(n.verdict("b"), Verdict::Drop);
        assert_eq!(n.verdict("c"), Verdict::Drop);
        assert_eq!(n.verdict("d"), Verdict::Delay(Duration::from_millis(250)));
        assert_eq!(n.verdict("e"), Verdict::Pass);
        let views = n.faults();
        assert_eq!(views.len(), 3);
        assert_eq!(views[2].peer, "d");
        assert_eq!(views[2].delay_ms, Some(250));
        assert!(
            views[2]
                .remaining_ms
                .is_some_and(|ms| ms <= 60_000 && ms > 50_000)
        );
        assert_eq!(views[0].remaining_ms, None);
        // A new fault for a peer replaces its old one.
        n.inject(&request(&["b"], Action::Delay, Some(5), None))
            .unwrap();
        assert_eq!(n.verdict("b"), Verdict::Delay(Duration::from_millis(5)));
        assert_eq!(n.heal(), 3);
        assert_eq!(n.verdict("b"), Verdict::Pass);
        assert!(n.faults().is_empty());
    }

    #[test]
    fn timed_faults_expire_and_disarm() {
        let n = Nemesis::new(true);
        n.inject(&request(&["b"], Action::Drop, None, Some(1)))
            .unwrap();
        // Wait on the condition itself, with a deadline.
        let deadline = Instant::now() + Duration::from_secs(5);
        while n.verdict("b") != Verdict::Pass {
            assert!(Instant::now() < deadline, "the fault never expired");
            std::thread::yield_now();
        }
        assert!(!n.armed.load(Ordering::Acquire));
        assert!(n.faults().is_empty());
    }

    #[test]
    fn bad_requests_are_refused_with_a_reason() {
        let n = Nemesis::new(true);
        let refused = |r: FaultRequest| match n.inject(&r) {
            Err(NemesisError::Invalid(why)) => why,
            other => panic!("accepted {r:?}: {other:?}"),
        };
        assert!(refused(request(&[], Action::Drop, None, None)).contains("peers"));
        assert!(refused(request(&[" "], Action::Drop, None, None)).contains("empty"));
        assert!(refused(request(&["b"], Action::Delay, None, None)).contains("delay_ms"));
        assert!(refused(request(&["b"], Action::Delay, Some(0), None)).contains("at least 1"));
        assert!(refused(request(&["b"], Action::Delay, Some(600_001), None)).contains("at most"));
        assert!(refused(request(&["b"], Action::Drop, Some(5), None)).contains("only for"));
        assert!(refused(request(&["b"], Action::Drop, None, Some(0))).contains("for_ms"));
        assert!(
            refused(request(&["b"], Action::Drop, None, Some(u64::MAX)))
                .contains("at most 86400000")
        );
        assert!(n.faults().is_empty());
        assert_eq!(n.verdict("b"), Verdict::Pass);
    }

    #[test]
    fn requests_parse_from_the_documented_json() {
        let r: FaultRequest = serde_json::from_str(
            r#"{"peers":["node-b"],"action":"delay","delay_ms":200,"for_ms":5000}"#,
        )
        .unwrap();
        assert_eq!(
            r,
            request(&["node-b"], Action::Delay, Some(200), Some(5000))
        );
        let r: FaultRequest = serde_json::from_str(r#"{"peers":["b"],"action":"drop"}"#).unwrap();
        assert_eq!(r, request(&["b"], Action::Drop, None, None));
        assert!(serde_json::from_str::<FaultRequest>(r#"{"peers":["b"],"action":"cut"}"#).is_err());
        assert!(
            serde_json::from_str::<FaultRequest>(r#"{"peers":["b"],"action":"drop","x":1}"#)
                .is_err()
        );
    }

    #[tokio::test]
    async fn calls_to_a_cut_off_peer_are_refused_and_delayed_ones_wait() {
        let n = Nemesis::new(true);
        assert!(n.admit("b").await.is_ok());
        n.inject(&request(&["b"], Action::Drop, None, None))
            .unwrap();
        assert!(n.admit("b").await.unwrap_err().contains("cut off"));
        n.inject(&request(&["c"], Action::Delay, Some(30), None))
            .unwrap();
        let start = Instant::now();
        n.admit("c").await.unwrap();
        assert!(start.elapsed() >= Duration::from_millis(30));
    }
}
