//! The seeded plan of a chaos run: when each run is submitted and to which
//! node, and which fault hits which node when and for how long. Pure: the
//! same seed gives the same plan.

use std::time::Duration;

use crate::engine::retry::Jitter;

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum FaultKind {
    /// SIGKILL a node, restart it on its data dir a few seconds later.
    Kill,
    /// SIGSTOP a node for longer than the down bound, then SIGCONT.
    Pause,
    /// Cut a node off from the rest, both ways, with the nemesis; then heal.
    Partition,
    /// Delay a node's traffic to and from the rest with the nemesis.
    Delay,
}

impl FaultKind {
    /// Its name, as on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::Delay => "delay",
        }
    }
}

/// One planned fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFault {
    /// When it begins, from the start of the run.
    pub at: Duration,
    /// How long it lasts.
    pub length: Duration,
    /// What it is.
    pub kind: FaultKind,
    /// Index of the node it hits.
    pub node: usize,
    /// For `delay`: how late messages are.
    pub delay: Duration,
}

/// One planned submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedSubmission {
    /// When, from the start of the run.
    pub at: Duration,
    /// The node it goes to (another is taken when this one is down).
    pub node: usize,
}

/// The whole plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Submissions, in time order.
    pub submissions: Vec<PlannedSubmission>,
    /// Faults, in time order, one at a time (never overlapping: a majority
    /// of the nodes is always whole).
    pub faults: Vec<PlannedFault>,
}

/// Where the failure detector declares a silent peer down (down_after plus
/// a heartbeat interval, with the defaults); a pause lasts longer.
pub const DOWN_BOUND: Duration = Duration::from_millis(1700);

fn between(j: &mut Jitter, lo_ms: u64, hi_ms: u64) -> Duration {
    Duration::from_millis(lo_ms + (j.next_f64() * (hi_ms - lo_ms) as f64) as u64)
}

/// Plans `runs` submissions over the first 70% of `duration` and faults of
/// `kinds` on `nodes` nodes until `duration` ends, from `seed`.
pub fn plan(seed: u64, nodes: usize, runs: u32, duration: Duration, kinds: &[FaultKind]) -> Plan {
    let mut j = Jitter::new(seed);
    let nodes = nodes.max(1);
    let window = duration.mul_f64(0.7);
    let mut submissions: Vec<PlannedSubmission> = (0..runs)
        .map(|i| PlannedSubmission {
            at: window.mul_f64(j.next_f64()),
            node: i as usize % nodes,
        })
        .collect();
    submissions.sort_by_key(|s| s.at);
    let mut faults = Vec::new();
    // A partition or a delay between one node and "the rest" needs a rest.
    let usable: Vec<FaultKind> = kinds
        .iter()
        .copied()
        .filter(|k| nodes > 1 || matches!(k, FaultKind::Kill | FaultKind::Pause))
        .collect();
    let mut at = between(&mut j, 500, 1500);
    // Kinds come in rounds, each round every kind once in a seeded order:
    // a run with as many faults as kinds has them all.
    let mut round: Vec<FaultKind> = Vec::new();
    while !usable.is_empty() && at < duration {
        if round.is_empty() {
            round = usable.clone();
            // Fisher-Yates; popped from the back.
            for k in (1..round.len()).rev() {
                let other = ((j.next_f64() * (k + 1) as f64) as usize).min(k);
                round.swap(k, other);
            }
        }
        let Some(kind) = round.pop() else { break };
        let node = ((j.next_f64() * nodes as f64) as usize).min(nodes - 1);
        let length = match kind {
            FaultKind::Kill => between(&mut j, 1500, 4000),
            FaultKind::Pause => DOWN_BOUND + between(&mut j, 800, 2500),
            FaultKind::Partition => between(&mut j, 2500, 6000),
            FaultKind::Delay => between(&mut j, 2000, 5000),
        };
        let delay = if kind == FaultKind::Delay {
            between(&mut j, 20, 400)
        } else {
            Duration::ZERO
        };
        // The last fault ends with the run.
        let length = length
            .min(duration.saturating_sub(at))
            .max(Duration::from_millis(100));
        faults.push(PlannedFault {
            at,
            length,
            kind,
            node,
            delay,
        });
        at += length + between(&mut j, 500, 2000);
    }
    Plan {
        submissions,
        faults,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[FaultKind] = &[
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Partition,
        FaultKind::Delay,
    ];

    #[test]
    fn the_same_seed_gives_the_same_plan() {
        let d = Duration::from_secs(60);
        assert_eq!(plan(7, 3, 20, d, ALL), plan(7, 3, 20, d, ALL));
        assert_ne!(plan(7, 3, 20, d, ALL), plan(8, 3, 20, d, ALL));
    }

    #[test]
    fn faults_do_not_overlap_and_fit_the_duration() {
        for seed in 0..200 {
            let d = Duration::from_secs(30);
            let p = plan(seed, 3, 10, d, ALL);
            assert_eq!(p.submissions.len(), 10);
            assert!(p.submissions.windows(2).all(|w| w[0].at <= w[1].at));
            assert!(p.submissions.iter().all(|s| s.at <= d && s.node < 3));
            assert!(!p.faults.is_empty());
            for w in p.faults.windows(2) {
                assert!(w[0].at + w[0].length < w[1].at, "seed {seed}: {w:?}");
            }
            for f in &p.faults {
                assert!(f.node < 3);
                assert!(f.at < d);
                if f.kind == FaultKind::Pause && f.at + f.length < d {
                    assert!(f.length > DOWN_BOUND);
                }
                assert_eq!(f.kind == FaultKind::Delay, f.delay > Duration::ZERO);
            }
        }
    }

    #[test]
    fn every_kind_asked_for_shows_up_in_a_long_enough_run() {
        for seed in 0..100 {
            let p = plan(seed, 3, 6, Duration::from_secs(120), ALL);
            for round in p.faults.chunks(ALL.len()) {
                let kinds: std::collections::BTreeSet<_> = round.iter().map(|f| f.kind).collect();
                assert_eq!(
                    kinds.len(),
                    round.len(),
                    "seed {seed}: a kind twice in a round"
                );
            }
            for kind in ALL {
                assert!(p.faults.iter().any(|f| f.kind == *kind), "{kind:?} missing");
            }
        }
        let p = plan(1, 3, 6, Duration::from_secs(60), &[FaultKind::Kill]);
        assert!(p.faults.iter().all(|f| f.kind == FaultKind::Kill));
        // One node: no one to be cut off from.
        let p = plan(1, 1, 6, Duration::from_secs(60), &[FaultKind::Partition]);
        assert!(p.faults.is_empty());
    }
}
