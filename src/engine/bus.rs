//! The node's event bus: every journal event of every run, as it is
//! published, numbered node-wide, with a bounded backlog for readers that
//! reconnect.
//!
//! Numbering and sending happen under one lock, so the order of the live
//! channel is the order of the numbers, and a reader that subscribes and
//! copies the backlog under the same lock sees every event exactly once:
//! the backlog up to the last number assigned, the channel after it.
//!
//! Event ids are `<epoch>-<n>`: `epoch` is when this bus started (ms since
//! the Unix epoch), `n` counts from 1. Numbers are not stored: after a
//! restart the node has a new epoch, and a reader that comes back with an
//! id of the old one is told it missed events (the journals still hold the
//! history of durable runs, per run).
//!
//! This module must not touch the store: the bus is what was published,
//! not what is durable.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use super::RunEvent;
use super::event::JournalEvent;

/// Events kept for readers that reconnect. Default of [`EventBus::new`].
pub const BACKLOG: usize = 4096;

/// The position of an event on the bus: the `id` of the all-runs event
/// stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId {
    /// When the bus that numbered the event started, ms since the Unix epoch.
    pub epoch: u64,
    /// Its number on that bus, from 1.
    pub n: u64,
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.epoch, self.n)
    }
}

impl std::str::FromStr for EventId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let bad = || format!("\"{s}\" is not an event id (EPOCH-N, e.g. 1760000000000-42)");
        let (epoch, n) = s.split_once('-').ok_or_else(bad)?;
        Ok(EventId {
            epoch: epoch.parse().map_err(|_| bad())?,
            n: n.parse().map_err(|_| bad())?,
        })
    }
}

/// What a reader gets when it starts following the bus.
#[derive(Debug)]
pub struct Follow {
    /// Events after the reader's position still in the backlog, in order.
    pub backlog: Vec<Arc<RunEvent>>,
    /// Everything published after the backlog.
    pub live: broadcast::Receiver<Arc<RunEvent>>,
    /// Whether events between the reader's position and the backlog are
    /// gone (too old, or numbered by an earlier run of the node).
    pub missed: bool,
    /// The id of the last event published before the reader started (n 0
    /// when there was none): every later event is in `backlog` or `live`.
    pub position: EventId,
}

/// Events published on this node, numbered.
pub struct EventBus {
    epoch: u64,
    capacity: usize,
    inner: Mutex<Backlog>,
    live: broadcast::Sender<Arc<RunEvent>>,
}

struct Backlog {
    /// The number the next event gets.
    next: u64,
    events: VecDeque<Arc<RunEvent>>,
}

impl fmt::Debug for EventBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventBus")
            .field("epoch", &self.epoch)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl EventBus {
    /// A bus of epoch `epoch` keeping the last `capacity` events.
    pub fn new(epoch: u64, capacity: usize) -> EventBus {
        let (live, _) = broadcast::channel(capacity.max(1));
        EventBus {
            epoch,
            capacity: capacity.max(1),
            inner: Mutex::new(Backlog {
                next: 1,
                events: VecDeque::new(),
            }),
            live,
        }
    }

    /// This bus's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Numbers `event` of `run_id` (its `seq` in the run's journal), keeps
    /// it in the backlog and sends it to the live readers.
    pub fn publish(&self, run_id: &Arc<str>, seq: u64, at_ms: u64, event: JournalEvent) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let id = EventId {
            epoch: self.epoch,
            n: inner.next,
        };
        inner.next += 1;
        let event = Arc::new(RunEvent {
            run_id: Arc::clone(run_id),
            seq,
            id,
            at_ms,
            event,
        });
        if inner.events.len() == self.capacity {
            inner.events.pop_front();
        }
        inner.events.push_back(Arc::clone(&event));
        if self.live.receiver_count() > 0 {
            let _ = self.live.send(event);
        }
    }

    /// Live events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<RunEvent>> {
        self.live.subscribe()
    }

    /// Starts following the bus after `after` (`None`: from now on).
    pub fn follow(&self, after: Option<EventId>) -> Follow {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let live = self.live.subscribe();
        let (backlog, missed) = match after {
            None => (Vec::new(), false),
            Some(after) => self.after(&inner, after),
        };
        Follow {
            backlog,
            live,
            missed,
            position: EventId {
                epoch: self.epoch,
                n: inner.next - 1,
            },
        }
    }

    /// The backlog after `after`, and whether events before it are gone.
    pub fn since(&self, after: EventId) -> (Vec<Arc<RunEvent>>, bool) {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        self.after(&inner, after)
    }

    /// When the events of `run_id` that the backlog still holds were
    /// published: `(seq, at_ms)` pairs.
    pub fn published(&self, run_id: &str) -> Vec<(u64, u64)> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .events
            .iter()
            .filter(|e| *e.run_id == *run_id)
            .map(|e| (e.seq, e.at_ms))
            .collect()
    }

    fn after(&self, inner: &Backlog, after: EventId) -> (Vec<Arc<RunEvent>>, bool) {
        let oldest = inner.events.front().map_or(inner.next, |e| e.id.n);
        if after.epoch != self.epoch || after.n >= inner.next {
            // Another run of the node (or a number this one never gave):
            // everything kept is new to the reader.
            return (inner.events.iter().cloned().collect(), true);
        }
        let missed = after.n + 1 < oldest;
        let skip = (after.n + 1).saturating_sub(oldest) as usize;
        (inner.events.iter().skip(skip).cloned().collect(), missed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> JournalEvent {
        JournalEvent::RunCancelled { reason: "x".into() }
    }

    fn ns(events: &[Arc<RunEvent>]) -> Vec<u64> {
        events.iter().map(|e| e.id.n).collect()
    }

    #[test]
    fn ids_round_trip() {
        let id = EventId { epoch: 17, n: 4 };
        assert_eq!(id.to_string(), "17-4");
        assert_eq!("17-4".parse::<EventId>().unwrap(), id);
        assert!("17".parse::<EventId>().is_err());
        assert!("a-4".parse::<EventId>().is_err());
    }

    #[test]
    fn followers_resume_exactly_after_their_position() {
        let bus = EventBus::new(5, 3);
        let run: Arc<str> = Arc::from("r");
        for seq in 0..2 {
            bus.publish(&run, seq, 0, event());
        }
        let early = bus.follow(Some(EventId { epoch: 5, n: 1 }));
        assert_eq!(ns(&early.backlog), vec![2]);
        assert!(!early.missed);
        let mut now = bus.follow(None);
        assert!(now.backlog.is_empty());
        bus.publish(&run, 2, 0, event());
        assert_eq!(now.live.try_recv().unwrap().id.n, 3);
        bus.publish(&run, 3, 0, event());
        // Capacity 3: event 1 is gone.
        let (kept, missed) = bus.since(EventId { epoch: 5, n: 0 });
        assert_eq!((ns(&kept), missed), (vec![2, 3, 4], true));
        let (kept, missed) = bus.since(EventId { epoch: 5, n: 1 });
        assert_eq!((ns(&kept), missed), (vec![2, 3, 4], false));
        let (kept, missed) = bus.since(EventId { epoch: 5, n: 4 });
        assert_eq!((ns(&kept), missed), (vec![], false));
        let (kept, missed) = bus.since(EventId { epoch: 4, n: 2 });
        assert_eq!((ns(&kept), missed), (vec![2, 3, 4], true));
    }
}
