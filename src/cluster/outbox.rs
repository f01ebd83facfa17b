//! Results this node sends home to the owners of runs, kept until the owner
//! acknowledges them.
//!
//! A finished attempt sends its result from its own task, not through the
//! node agent's mailbox: one actor hop less on every remote stage. The agent
//! still owns the protocol around it: it passes acknowledgements in
//! ([`Outbox::acked`]) and, whenever it hears an owner, has what that owner
//! has not acknowledged sent again ([`Outbox::heard`]) — so a frozen or
//! cut-off owner, or a link that died under a result, loses nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tracing::debug;

use super::agent::{AgentMsg, agent_of};
use super::nemesis::Nemesis;
use super::wire::{Finished, Wire};

/// Most results kept unacknowledged.
const OUTBOX_MAX: usize = 10_000;
/// How long a result waits for its owner.
const OUTBOX_TTL: Duration = Duration::from_secs(120);
/// A result unacknowledged this long is sent again when its owner is heard.
const RESEND_AFTER: Duration = Duration::from_millis(500);

/// The results sent home and not yet acknowledged, by delivery number.
#[derive(Debug)]
pub struct Outbox {
    node: String,
    nemesis: Arc<Nemesis>,
    state: Mutex<Unacked>,
}

#[derive(Debug, Default)]
struct Unacked {
    by_delivery: BTreeMap<u64, (Instant, String, Finished)>,
    next_delivery: u64,
}

impl Outbox {
    /// The outbox of node `node`, whose messages go through `nemesis`.
    pub fn new(node: String, nemesis: Arc<Nemesis>) -> Outbox {
        Outbox {
            node,
            nemesis,
            state: Mutex::new(Unacked::default()),
        }
    }

    /// Sends a result to the agent of the run's owner and keeps it until the
    /// owner acknowledges it.
    pub fn send(&self, owner: String, mut finished: Finished) {
        finished.from.clone_from(&self.node);
        let message = {
            let mut state = self.lock();
            state.next_delivery += 1;
            finished.delivery = state.next_delivery;
            if state.by_delivery.len() == OUTBOX_MAX {
                state.by_delivery.pop_first();
                metrics::counter!("symphony_results_undeliverable_total").increment(1);
            }
            let message = AgentMsg::Finished(Wire::new(finished.clone()));
            state
                .by_delivery
                .insert(finished.delivery, (Instant::now(), owner.clone(), finished));
            message
        };
        // Kept before it is sent: an acknowledgement always finds it.
        match agent_of(&owner) {
            Some(agent) => {
                let _ = self.nemesis.cast(&owner, &agent, message);
            }
            None => debug!(owner = %owner, "Owner unreachable; result kept."),
        }
    }

    /// The owner got delivery `delivery`.
    pub fn acked(&self, delivery: u64) {
        self.lock().by_delivery.remove(&delivery);
    }

    /// `owner` was heard from: sends again what it has not acknowledged for
    /// a while; forgets what is too old.
    pub fn heard(&self, owner: &str) {
        let again: Vec<Finished> = {
            let mut state = self.lock();
            if state.by_delivery.is_empty() {
                return;
            }
            let before = state.by_delivery.len();
            state
                .by_delivery
                .retain(|_, (at, _, _)| at.elapsed() <= OUTBOX_TTL);
            let expired = before - state.by_delivery.len();
            if expired > 0 {
                metrics::counter!("symphony_results_undeliverable_total").increment(expired as u64);
            }
            state
                .by_delivery
                .values_mut()
                .filter(|(at, to, _)| to == owner && at.elapsed() > RESEND_AFTER)
                .map(|(at, _, finished)| {
                    *at = Instant::now();
                    finished.clone()
                })
                .collect()
        };
        if again.is_empty() {
            return;
        }
        let Some(agent) = agent_of(owner) else {
            return;
        };
        for finished in again {
            let _ = self
                .nemesis
                .cast(owner, &agent, AgentMsg::Finished(Wire::new(finished)));
        }
    }

    fn lock(&self) -> MutexGuard<'_, Unacked> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::TaskKey;
    use crate::executor::TaskError;

    fn finished(run: &str) -> Finished {
        Finished {
            run_id: run.to_owned(),
            key: TaskKey {
                task: 0,
                item: None,
            },
            attempt: 1,
            result: Err(TaskError::fatal("test", "x")),
            from: String::new(),
            delivery: 0,
        }
    }

    fn pending(outbox: &Outbox) -> Vec<(u64, String, String)> {
        outbox
            .lock()
            .by_delivery
            .iter()
            .map(|(d, (_, owner, f))| (*d, owner.clone(), f.from.clone()))
            .collect()
    }

    #[test]
    fn a_result_is_kept_numbered_until_acknowledged_also_when_its_owner_is_unreachable() {
        let outbox = Outbox::new("worker".into(), Arc::new(Nemesis::new(false)));
        outbox.send("nowhere-a".into(), finished("r1"));
        outbox.send("nowhere-b".into(), finished("r2"));
        assert_eq!(
            pending(&outbox),
            vec![
                (1, "nowhere-a".to_owned(), "worker".to_owned()),
                (2, "nowhere-b".to_owned(), "worker".to_owned()),
            ]
        );
        outbox.acked(1);
        outbox.acked(7); // unknown: ignored
        assert_eq!(pending(&outbox).len(), 1);
        // Hearing an owner too soon after sending sends nothing again and
        // forgets nothing.
        outbox.heard("nowhere-b");
        assert_eq!(pending(&outbox)[0].0, 2);
    }

    #[test]
    fn the_oldest_result_gives_way_when_the_outbox_is_full() {
        let outbox = Outbox::new("worker".into(), Arc::new(Nemesis::new(false)));
        for i in 0..=OUTBOX_MAX {
            outbox.send("nowhere".into(), finished(&format!("r{i}")));
        }
        let pending = pending(&outbox);
        assert_eq!(pending.len(), OUTBOX_MAX);
        assert_eq!(pending[0].0, 2, "delivery 1 gave way");
    }
}
