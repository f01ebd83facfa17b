//! A hybrid logical clock: stamps that follow the wall clock, never go
//! backwards on one node, and come after every stamp the node has seen from
//! others. Pure: the caller passes the time in.

use super::model::Stamp;

/// One node's hybrid logical clock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Clock {
    last: Stamp,
}

impl Clock {
    /// A clock that has given no stamp yet.
    pub fn new() -> Clock {
        Clock::default()
    }

    /// A stamp for a write happening at `now_ms` (wall clock, ms since the
    /// Unix epoch): greater than every stamp given or observed before.
    pub fn tick(&mut self, now_ms: u64) -> Stamp {
        self.last = if now_ms > self.last.wall_ms {
            Stamp {
                wall_ms: now_ms,
                logical: 0,
            }
        } else if self.last.logical == u32::MAX {
            Stamp {
                wall_ms: self.last.wall_ms + 1,
                logical: 0,
            }
        } else {
            Stamp {
                wall_ms: self.last.wall_ms,
                logical: self.last.logical + 1,
            }
        };
        self.last
    }

    /// Takes note of a stamp written elsewhere (or stored before a
    /// restart): later ticks come after it.
    pub fn observe(&mut self, seen: Stamp) {
        self.last = self.last.max(seen);
    }

    /// The last stamp given or observed.
    pub fn last(&self) -> Stamp {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_grow_even_when_the_wall_clock_does_not() {
        let mut clock = Clock::new();
        let a = clock.tick(100);
        let b = clock.tick(100);
        let c = clock.tick(90);
        let d = clock.tick(101);
        assert!(a < b && b < c && c < d, "{a} {b} {c} {d}");
        assert_eq!(
            d,
            Stamp {
                wall_ms: 101,
                logical: 0
            }
        );
    }

    #[test]
    fn observed_stamps_come_before_later_ticks() {
        let mut clock = Clock::new();
        clock.tick(100);
        let remote = Stamp {
            wall_ms: 5_000,
            logical: 7,
        };
        clock.observe(remote);
        assert!(clock.tick(200) > remote);
        clock.observe(Stamp {
            wall_ms: 1,
            logical: 0,
        });
        assert!(clock.last() > remote);
    }
}
