//! The engine's [`RunStore`] for `replicated` runs: appends go into the
//! Raft log in group commits (every append queued while one commit is in
//! flight goes into the next log entry: many events, one entry); reads come
//! from this node's state machine.
//!
//! Up to four commits are in flight per node, never two with appends of
//! the same run, so the appends of a run reach the log in the order the run
//! made them. A commit that fails for want of a quorum
//! is retried, the same commands again, until it goes through: an append
//! that was applied although its answer was lost comes back "out of order"
//! at a length that already covers it, which counts as done. An append the
//! log refuses because another node owns the run now fails with
//! [`StoreError::Fenced`]: the run actor gives the run up.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tracing::warn;

use super::Replication;
use super::state::{Append, Command, Outcome, Refusal};
use crate::store::{AppendBatch, Durable, RunStore, RunSummary, StoreError};

/// Most appends in one log entry.
const MAX_APPENDS: usize = 1024;
/// Commits of one node in flight at once.
const MAX_IN_FLIGHT: usize = 4;
/// How long one commit may take before it is tried again.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(3);

/// Replicated journals, as the engine sees them.
pub struct ReplicatedStore {
    replication: Arc<Replication>,
    queue: mpsc::UnboundedSender<(AppendBatch, Durable)>,
    stalled: Arc<Mutex<Option<(Instant, String)>>>,
}

impl std::fmt::Debug for ReplicatedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicatedStore")
            .field("node", &self.replication.me())
            .finish_non_exhaustive()
    }
}

impl ReplicatedStore {
    /// Starts the committer of `replication`'s node.
    pub fn new(replication: Arc<Replication>) -> ReplicatedStore {
        let (queue, rx) = mpsc::unbounded_channel();
        let stalled = Arc::new(Mutex::new(None));
        tokio::spawn(commit_loop(
            Arc::clone(&replication),
            rx,
            Arc::clone(&stalled),
        ));
        ReplicatedStore {
            replication,
            queue,
            stalled,
        }
    }

    /// Why commits are not going through, and since when (`None`: they are).
    pub fn stalled(&self) -> Option<(Duration, String)> {
        let s = self.stalled.lock().unwrap_or_else(|p| p.into_inner());
        s.as_ref()
            .map(|(since, why)| (since.elapsed(), why.clone()))
    }
}

impl RunStore for ReplicatedStore {
    fn append(&self, batch: AppendBatch, done: Durable) {
        if let Err(mpsc::error::SendError((_, done))) = self.queue.send((batch, done)) {
            done(Err(StoreError::Closed));
        }
    }

    fn journal(&self, run: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        self.replication
            .applied()
            .journal(run)
            .map_err(StoreError::Io)
    }

    fn summary(&self, run: &str) -> Result<Option<RunSummary>, StoreError> {
        Ok(self.replication.applied().run(run).and_then(|r| r.summary))
    }

    fn summaries(&self) -> Result<Vec<RunSummary>, StoreError> {
        let mut all: Vec<RunSummary> = self
            .replication
            .applied()
            .runs()
            .into_iter()
            .filter_map(|(_, r)| r.summary)
            .collect();
        all.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        Ok(all)
    }
}

/// The commands for one append: a fresh run (epoch 1, first event) is
/// created by the same entry.
fn commands_of(me: &str, batch: AppendBatch) -> Vec<Command> {
    let mut commands = Vec::with_capacity(2);
    if batch.first_seq == 0 && batch.epoch == 1 {
        commands.push(Command::Own {
            run: batch.run.clone(),
            node: me.to_owned(),
            epoch: 1,
        });
    }
    commands.push(Command::Append(Append {
        run: batch.run,
        node: me.to_owned(),
        epoch: batch.epoch,
        first_seq: batch.first_seq,
        events: batch.events,
        summary: batch.summary,
    }));
    commands
}

/// Whether a refusal of one of this node's own commands means it had
/// already been applied (its answer was lost and it was sent again). Public
/// so the simulation (tests/simulation.rs) checks this very rule.
pub fn already_applied(command: &Command, refusal: &Refusal) -> bool {
    match (command, refusal) {
        (Command::Append(a), Refusal::OutOfOrder { len, .. }) => {
            a.first_seq < *len && a.first_seq + a.events.len() as u64 <= *len
        }
        (Command::Own { epoch, .. }, Refusal::StaleEpoch { current, .. }) => {
            // Only this node creates its runs (their ids are its own ULIDs).
            *epoch == 1 && *current >= 1
        }
        _ => false,
    }
}

/// One commit: the appends it carries, and their callbacks.
struct Commit {
    runs: Vec<String>,
    /// Per append: how many commands it became, and its callback.
    shape: Vec<(usize, Durable)>,
    commands: Vec<Command>,
    events: usize,
}

impl Commit {
    fn new(me: &str, appends: Vec<(AppendBatch, Durable)>) -> Commit {
        let mut commit = Commit {
            runs: Vec::with_capacity(appends.len()),
            shape: Vec::with_capacity(appends.len()),
            commands: Vec::with_capacity(appends.len() + 1),
            events: 0,
        };
        for (batch, done) in appends {
            commit.events += batch.events.len();
            commit.runs.push(batch.run.clone());
            let cmds = commands_of(me, batch);
            commit.shape.push((cmds.len(), done));
            commit.commands.extend(cmds);
        }
        commit
    }

    /// Commits, retrying until it goes through, then answers every append.
    async fn run(
        self,
        replication: Arc<Replication>,
        stalled: Arc<Mutex<Option<(Instant, String)>>>,
    ) -> Vec<String> {
        let command = Arc::new(Command::Batch(self.commands));
        let mut backoff = Duration::from_millis(50);
        let outcome = loop {
            match replication
                .write(Arc::clone(&command), COMMIT_TIMEOUT)
                .await
            {
                Ok((_, outcome)) => {
                    *stalled.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    break outcome;
                }
                Err(e) => {
                    let why = e.to_string();
                    warn!(error = %why, "Replicated journal commit failed; retrying.");
                    metrics::counter!("symphony_raft_commit_retries_total").increment(1);
                    {
                        let mut s = stalled.lock().unwrap_or_else(|p| p.into_inner());
                        let since = s.as_ref().map_or_else(Instant::now, |(t, _)| *t);
                        *s = Some((since, why));
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        };
        metrics::counter!("symphony_raft_journal_events_total").increment(self.events as u64);
        let Command::Batch(commands) = &*command else {
            unreachable!("built as a batch")
        };
        let outcomes = match outcome {
            Outcome::Batch(o) => o,
            other => vec![other; commands.len()],
        };
        let mut at = 0;
        for (n, done) in self.shape {
            let mut result = Ok(());
            for (command, outcome) in commands[at..at + n].iter().zip(&outcomes[at..at + n]) {
                if let Some(refusal) = outcome.refusal() {
                    if !already_applied(command, refusal) {
                        result = Err(StoreError::Fenced(refusal.to_string()));
                        break;
                    }
                }
            }
            at += n;
            done(result);
        }
        self.runs
    }
}

/// Takes appends off the queue into commits, up to [`MAX_IN_FLIGHT`] at
/// once. An append whose run has a commit in flight waits for it, so the
/// appends of a run reach the log in order even when commits overtake one
/// another on their way to the leader.
async fn commit_loop(
    replication: Arc<Replication>,
    mut queue: mpsc::UnboundedReceiver<(AppendBatch, Durable)>,
    stalled: Arc<Mutex<Option<(Instant, String)>>>,
) {
    let me = replication.me().to_owned();
    let mut waiting: VecDeque<(AppendBatch, Durable)> = VecDeque::new();
    let mut busy: HashMap<String, usize> = HashMap::new();
    let mut in_flight = FuturesUnordered::new();
    let mut open = true;
    loop {
        tokio::select! {
            item = queue.recv(), if open => match item {
                Some(item) => {
                    waiting.push_back(item);
                    while let Ok(next) = queue.try_recv() {
                        waiting.push_back(next);
                    }
                }
                None => open = false,
            },
            Some(runs) = in_flight.next(), if !in_flight.is_empty() => {
                for run in runs {
                    if let Some(n) = busy.get_mut(&run) {
                        *n -= 1;
                        if *n == 0 {
                            busy.remove(&run);
                        }
                    }
                }
            }
            else => return,
        }
        while in_flight.len() < MAX_IN_FLIGHT && !waiting.is_empty() {
            let mut ready = Vec::new();
            let mut held = VecDeque::new();
            while let Some(item) = waiting.pop_front() {
                if ready.len() < MAX_APPENDS && !busy.contains_key(&item.0.run) {
                    ready.push(item);
                } else {
                    held.push_back(item);
                }
            }
            waiting = held;
            if ready.is_empty() {
                break;
            }
            let commit = Commit::new(&me, ready);
            for run in &commit.runs {
                *busy.entry(run.clone()).or_default() += 1;
            }
            in_flight.push(commit.run(Arc::clone(&replication), Arc::clone(&stalled)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(first_seq: u64, n: usize) -> Command {
        Command::Append(Append {
            run: "r".into(),
            node: "a".into(),
            epoch: 1,
            first_seq,
            events: vec![vec![]; n],
            summary: None,
        })
    }

    #[test]
    fn a_resent_append_that_was_applied_counts_as_done() {
        let covered = Refusal::OutOfOrder {
            run: "r".into(),
            first_seq: 2,
            len: 4,
        };
        assert!(already_applied(&append(2, 2), &covered));
        assert!(!already_applied(&append(4, 1), &covered));
        let gap = Refusal::OutOfOrder {
            run: "r".into(),
            first_seq: 6,
            len: 4,
        };
        assert!(!already_applied(&append(6, 1), &gap));
    }

    #[test]
    fn a_fence_is_never_taken_for_done() {
        let fenced = Refusal::NotOwner {
            run: "r".into(),
            owner: "b".into(),
            epoch: 2,
        };
        assert!(!already_applied(&append(0, 1), &fenced));
    }
}
