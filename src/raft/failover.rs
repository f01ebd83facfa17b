//! Owner failover: when a node is declared down, the unfinished replicated
//! runs it owned move to live nodes; a node that learns that a run it runs
//! moved gives it up, and a node that learns a run moved to it resumes it.
//!
//! The leader decides the moves: it is on the majority side by definition
//! (a leader cut off from its quorum commits nothing), so a node that was
//! only frozen and wakes up believing every peer is down cannot take runs
//! from healthy nodes. It spreads the runs of a lost node over the live ones
//! by rendezvous hashing of the run id, and commits `Own { run, node,
//! epoch: current + 1 }` for each; the log applies a move once.
//!
//! A node that restarts finds its own unfinished runs in the log with no
//! live actor for them and claims them again itself, at a new epoch, so
//! nothing from before the restart can commit.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::broadcast::error::RecvError;
use tracing::{info, warn};

use super::Replication;
use super::state::{Command, Outcome};
use crate::cluster::{ClusterView, PeerState};
use crate::engine::Engine;

/// How often ownership is checked against the membership view.
const TICK: Duration = Duration::from_millis(100);
/// How long a run this node owns must have no live actor before the node
/// claims it again (a run being resumed is not live for a moment).
const ORPHANED_FOR: Duration = Duration::from_secs(1);

/// Which of `nodes` takes `run` over: the highest BLAKE3 of (run, node).
pub fn successor<'a>(run: &str, nodes: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    nodes.into_iter().max_by_key(|node| {
        let mut h = blake3::Hasher::new();
        h.update(run.as_bytes());
        h.update(&[0]);
        h.update(node.as_bytes());
        *h.finalize().as_bytes()
    })
}

/// Watches the view and the log until the node stops.
pub async fn run(replication: Arc<Replication>, engine: Engine, view: ClusterView) {
    let me = replication.me().to_owned();
    let mut changes = replication.applied().owner_changes();
    let mut tick = tokio::time::interval(TICK);
    let mut orphans: HashMap<String, Instant> = HashMap::new();
    // Runs this node could not rebuild (their workflow no longer compiles
    // here, say): not claimed again and again.
    let mut abandoned: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            change = changes.recv() => match change {
                Ok(change) if change.owner == me => {
                    if change.epoch > 1
                        && !engine.is_live(&change.run)
                        && !resume(&engine, &change.run, change.epoch).await
                    {
                        abandoned.insert(change.run);
                    }
                }
                Ok(change) => {
                    if engine.give_up(&change.run, change.epoch) {
                        info!(run = %change.run, owner = %change.owner, epoch = change.epoch,
                            "Gave up a run another node took over.");
                    }
                }
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
            _ = tick.tick() => {
                if !view.is_joined() {
                    continue;
                }
                if replication.leader().as_deref() == Some(me.as_str()) {
                    move_runs_of_down_nodes(&replication, &view).await;
                }
                claim_orphans(&replication, &engine, &mut orphans, &abandoned).await;
            }
        }
    }
}

/// On the leader: moves the unfinished runs of every down node to live ones.
async fn move_runs_of_down_nodes(replication: &Replication, view: &ClusterView) {
    let snapshot = view.snapshot();
    let live: Vec<&str> = snapshot
        .members
        .iter()
        .filter(|m| m.state == PeerState::Up)
        .map(|m| m.name.as_str())
        .collect();
    let mut moves = Vec::new();
    for lost in snapshot
        .members
        .iter()
        .filter(|m| m.state == PeerState::Down)
    {
        for (run, epoch) in replication.applied().unfinished_of(&lost.name) {
            if let Some(to) = successor(&run, live.iter().copied()) {
                moves.push(Command::Own {
                    run,
                    node: to.to_owned(),
                    epoch: epoch + 1,
                });
            }
        }
    }
    if moves.is_empty() {
        return;
    }
    let n = moves.len();
    match replication
        .write(Command::Batch(moves), Duration::from_secs(3))
        .await
    {
        Ok(_) => {
            metrics::counter!("symphony_raft_takeovers_total").increment(n as u64);
            info!(runs = n, "Moved the runs of down nodes.");
        }
        Err(e) => warn!(error = %e, "Could not move the runs of down nodes; will try again."),
    }
}

/// Claims, at a new epoch, the unfinished runs this node owns but does not
/// run (it restarted, or a run actor stopped on a journal error).
async fn claim_orphans(
    replication: &Replication,
    engine: &Engine,
    orphans: &mut HashMap<String, Instant>,
    abandoned: &HashSet<String>,
) {
    let me = replication.me();
    let now = Instant::now();
    let mut seen = HashMap::new();
    for (run, epoch) in replication.applied().unfinished_of(me) {
        if engine.is_live(&run) || abandoned.contains(&run) {
            continue;
        }
        let since = orphans.get(&run).copied().unwrap_or(now);
        if now.duration_since(since) < ORPHANED_FOR {
            seen.insert(run, since);
            continue;
        }
        let claim = Command::Own {
            run: run.clone(),
            node: me.to_owned(),
            epoch: epoch + 1,
        };
        match replication.write(claim, Duration::from_secs(3)).await {
            Ok((_, Outcome::Applied)) => info!(run, epoch = epoch + 1, "Claimed an orphaned run."),
            Ok((_, outcome)) => {
                if let Some(refusal) = outcome.refusal() {
                    info!(run, reason = %refusal, "Did not claim the run.");
                }
            }
            Err(e) => warn!(run, error = %e, "Could not claim the run; will try again."),
        }
    }
    *orphans = seen;
}

/// Resumes a run that moved to this node, from the replicated journal this
/// node has applied up to the move. Whether it could.
async fn resume(engine: &Engine, run: &str, epoch: u64) -> bool {
    match engine.take_over(run, epoch).await {
        Ok(_) => {
            info!(run, epoch, "Took the run over.");
            true
        }
        Err(e) => {
            warn!(run, epoch, error = %e, "Could not resume the run taken over; leaving it.");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_picks_the_same_successor() {
        let a = successor("run-1", ["n1", "n2", "n3"]);
        let b = successor("run-1", ["n3", "n1", "n2"]);
        assert_eq!(a, b);
        assert!(successor("run-1", []).is_none());
    }

    #[test]
    fn the_runs_of_a_lost_node_spread_over_the_survivors() {
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..64 {
            seen.insert(successor(&format!("run-{i}"), ["n1", "n2", "n3"]).unwrap());
        }
        assert_eq!(seen.len(), 3);
    }
}
