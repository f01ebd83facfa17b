//! The replicated state machine's pure core: who owns each `replicated` run,
//! at which epoch, and how long its journal is.
//!
//! Every node applies the same committed commands in the same order, so
//! every node reaches the same decisions. The rules that make failover safe
//! live here and nowhere else:
//!
//! - A run is created by `Own { epoch: 1 }` from the node that accepted it.
//! - Ownership moves only by `Own { epoch: current + 1 }`: of two nodes that
//!   race to take a run over, the first committed wins and the other is
//!   refused.
//! - An `Append` is applied only when it comes from the current owner at the
//!   current epoch and continues the journal exactly (`first_seq` equals the
//!   journal's length). A stale owner — frozen, cut off, or simply late —
//!   can never add to a run it lost, and a retried append is never applied
//!   twice.
//!
//! No I/O and no runtime: [`Machine::apply`] decides; the storage layer
//! (`super::machine`) writes the events of accepted appends.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::registry::Record;
use crate::store::RunSummary;

/// A command in the replicated log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Take ownership of `run` at `epoch` (1 creates the run).
    Own {
        /// The run.
        run: String,
        /// The node taking it.
        node: String,
        /// Must be the current epoch plus one.
        epoch: u64,
    },
    /// Append journal events of `run`.
    Append(Append),
    /// A model registry record (applied by the registry).
    Registry(#[serde(with = "record_bytes")] Record),
    /// Several commands in one log entry, applied in order.
    Batch(Vec<Command>),
}

/// A registry record as its own binary encoding inside a command: its serde
/// form is an internally tagged enum, which the log's encoding (bincode's
/// serde mode) cannot read back.
mod record_bytes {
    use serde::de::Error as _;
    use serde::ser::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::registry::Record;

    pub(super) fn serialize<S: Serializer>(record: &Record, s: S) -> Result<S::Ok, S::Error> {
        bincode::encode_to_vec(record, crate::codec::config())
            .map_err(S::Error::custom)?
            .serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Record, D::Error> {
        let bytes = Vec::<u8>::deserialize(d)?;
        bincode::decode_from_slice(&bytes, crate::codec::config())
            .map(|(record, _)| record)
            .map_err(D::Error::custom)
    }
}

/// Journal events of one run, from its owner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Append {
    /// The run.
    pub run: String,
    /// The owner sending them.
    pub node: String,
    /// The owner's epoch.
    pub epoch: u64,
    /// Sequence number of the first event.
    pub first_seq: u64,
    /// Encoded journal events.
    pub events: Vec<Vec<u8>>,
    /// The run's new summary, when it changed.
    pub summary: Option<RunSummary>,
}

/// What applying one command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Applied.
    Applied,
    /// Not applied, and never will be: the sender must give up.
    Refused(Refusal),
    /// One outcome per command of a batch.
    Batch(Vec<Outcome>),
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// Someone else owns the run now (or owned it at a later epoch).
    #[error("run {run} is owned by node {owner} at epoch {epoch}")]
    NotOwner {
        /// The run.
        run: String,
        /// Its owner.
        owner: String,
        /// The owner's epoch.
        epoch: u64,
    },
    /// An `Own` whose epoch is not the next one.
    #[error("run {run}: epoch {asked} asked, the current epoch is {current}")]
    StaleEpoch {
        /// The run.
        run: String,
        /// The epoch asked for.
        asked: u64,
        /// The current epoch.
        current: u64,
    },
    /// An append that does not continue the journal.
    #[error("run {run}: append at {first_seq}, the journal holds {len} events")]
    OutOfOrder {
        /// The run.
        run: String,
        /// Where the append starts.
        first_seq: u64,
        /// Events in the journal.
        len: u64,
    },
    /// An append for a run nobody owns.
    #[error("run {0} is not known to the replicated log")]
    UnknownRun(String),
}

/// What the log knows about one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The node that owns it.
    pub owner: String,
    /// The ownership epoch (1 at creation, +1 at each takeover).
    pub epoch: u64,
    /// Events in its journal.
    pub len: u64,
    /// Its latest summary.
    pub summary: Option<RunSummary>,
}

impl RunRecord {
    /// Whether the run has finished.
    pub fn is_final(&self) -> bool {
        self.summary.as_ref().is_some_and(|s| s.status.is_final())
    }
}

/// The deterministic part of the replicated state machine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    runs: BTreeMap<String, RunRecord>,
}

impl Machine {
    /// A machine holding `runs` (as reloaded from storage).
    pub fn from_records(runs: BTreeMap<String, RunRecord>) -> Machine {
        Machine { runs }
    }

    /// Applies one command.
    pub fn apply(&mut self, command: &Command) -> Outcome {
        match command {
            Command::Own { run, node, epoch } => self.own(run, node, *epoch),
            Command::Append(a) => self.append(a),
            Command::Registry(_) => Outcome::Applied,
            Command::Batch(commands) => {
                Outcome::Batch(commands.iter().map(|c| self.apply(c)).collect())
            }
        }
    }

    /// The record of one run.
    pub fn run(&self, run: &str) -> Option<&RunRecord> {
        self.runs.get(run)
    }

    /// Every run, by id.
    pub fn runs(&self) -> impl Iterator<Item = (&str, &RunRecord)> {
        self.runs.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Runs owned by `node` that have not finished.
    pub fn unfinished_of<'a>(&'a self, node: &'a str) -> impl Iterator<Item = (&'a str, u64)> {
        self.runs
            .iter()
            .filter(move |(_, r)| r.owner == node && !r.is_final())
            .map(|(k, r)| (k.as_str(), r.epoch))
    }

    fn own(&mut self, run: &str, node: &str, epoch: u64) -> Outcome {
        let current = self.runs.get(run).map_or(0, |r| r.epoch);
        if epoch != current + 1 {
            return Outcome::Refused(Refusal::StaleEpoch {
                run: run.to_owned(),
                asked: epoch,
                current,
            });
        }
        let record = self.runs.entry(run.to_owned()).or_insert(RunRecord {
            owner: String::new(),
            epoch: 0,
            len: 0,
            summary: None,
        });
        record.owner = node.to_owned();
        record.epoch = epoch;
        Outcome::Applied
    }

    fn append(&mut self, a: &Append) -> Outcome {
        let Some(record) = self.runs.get_mut(&a.run) else {
            return Outcome::Refused(Refusal::UnknownRun(a.run.clone()));
        };
        if record.owner != a.node || record.epoch != a.epoch {
            return Outcome::Refused(Refusal::NotOwner {
                run: a.run.clone(),
                owner: record.owner.clone(),
                epoch: record.epoch,
            });
        }
        if a.first_seq != record.len {
            return Outcome::Refused(Refusal::OutOfOrder {
                run: a.run.clone(),
                first_seq: a.first_seq,
                len: record.len,
            });
        }
        record.len += a.events.len() as u64;
        if let Some(summary) = &a.summary {
            record.summary = Some(summary.clone());
        }
        Outcome::Applied
    }
}

impl Outcome {
    /// The first refusal in this outcome, if any.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            Outcome::Applied => None,
            Outcome::Refused(r) => Some(r),
            Outcome::Batch(outcomes) => outcomes.iter().find_map(Outcome::refusal),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own(run: &str, node: &str, epoch: u64) -> Command {
        Command::Own {
            run: run.into(),
            node: node.into(),
            epoch,
        }
    }

    fn append(run: &str, node: &str, epoch: u64, first_seq: u64, n: usize) -> Command {
        Command::Append(Append {
            run: run.into(),
            node: node.into(),
            epoch,
            first_seq,
            events: vec![vec![0]; n],
            summary: None,
        })
    }

    #[test]
    fn the_creator_appends_in_order() {
        let mut m = Machine::default();
        assert_eq!(m.apply(&own("r", "a", 1)), Outcome::Applied);
        assert_eq!(m.apply(&append("r", "a", 1, 0, 2)), Outcome::Applied);
        assert_eq!(m.apply(&append("r", "a", 1, 2, 1)), Outcome::Applied);
        assert_eq!(m.run("r").unwrap().len, 3);
    }

    #[test]
    fn a_retried_append_is_not_applied_twice() {
        let mut m = Machine::default();
        m.apply(&own("r", "a", 1));
        m.apply(&append("r", "a", 1, 0, 2));
        let again = m.apply(&append("r", "a", 1, 0, 2));
        assert!(matches!(
            again,
            Outcome::Refused(Refusal::OutOfOrder { len: 2, .. })
        ));
        assert_eq!(m.run("r").unwrap().len, 2);
    }

    #[test]
    fn a_stale_owner_is_fenced_after_a_takeover() {
        let mut m = Machine::default();
        m.apply(&own("r", "a", 1));
        m.apply(&append("r", "a", 1, 0, 1));
        assert_eq!(m.apply(&own("r", "b", 2)), Outcome::Applied);
        let stale = m.apply(&append("r", "a", 1, 1, 1));
        assert_eq!(
            stale.refusal(),
            Some(&Refusal::NotOwner {
                run: "r".into(),
                owner: "b".into(),
                epoch: 2
            })
        );
        assert_eq!(m.apply(&append("r", "b", 2, 1, 1)), Outcome::Applied);
    }

    #[test]
    fn of_two_racing_takeovers_the_first_wins() {
        let mut m = Machine::default();
        m.apply(&own("r", "a", 1));
        assert_eq!(m.apply(&own("r", "b", 2)), Outcome::Applied);
        assert!(matches!(
            m.apply(&own("r", "c", 2)),
            Outcome::Refused(Refusal::StaleEpoch { current: 2, .. })
        ));
        assert_eq!(m.run("r").unwrap().owner, "b");
    }

    #[test]
    fn a_registry_record_survives_the_log_encoding() {
        let record = crate::registry::Record::Deletion(crate::registry::Deletion {
            name: "iris".into(),
            target: crate::registry::VersionId {
                stamp: crate::registry::Stamp::default(),
                node: "a".into(),
            },
            version: 1,
            stamp: crate::registry::Stamp::default(),
            by: "a".into(),
        });
        let command = Command::Batch(vec![Command::Registry(record)]);
        let back: Command = crate::raft::decode(&crate::raft::encode(&command)).unwrap();
        assert_eq!(back, command);
    }

    #[test]
    fn a_batch_applies_each_command_in_order() {
        let mut m = Machine::default();
        let out = m.apply(&Command::Batch(vec![
            own("r", "a", 1),
            append("r", "a", 1, 0, 1),
            append("x", "a", 1, 0, 1),
        ]));
        let Outcome::Batch(parts) = out else {
            panic!("a batch answers with a batch")
        };
        assert_eq!(parts[0], Outcome::Applied);
        assert_eq!(parts[1], Outcome::Applied);
        assert!(matches!(parts[2], Outcome::Refused(Refusal::UnknownRun(_))));
    }
}
