//! What a chaos run records: the history the checker reads and the file
//! `--history` holds, one JSON object a line, each with a `type`.

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// The parameters of a chaos run (the first line of a history file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setup {
    /// Seed of the fault schedule and of where runs are submitted.
    pub seed: u64,
    /// Nodes in the cluster.
    pub nodes: Vec<String>,
    /// Runs submitted.
    pub runs: u32,
    /// How long faults were injected, in milliseconds.
    pub duration_ms: u64,
    /// The kinds of fault injected.
    pub faults: Vec<String>,
    /// The durability of the runs' workflow (`local` or `replicated`).
    pub durability: String,
}

/// One submission of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submission {
    /// Milliseconds since the chaos run started.
    pub at_ms: u64,
    /// The node it was sent to.
    pub node: String,
    /// The run's id when the node acknowledged it (`201`); `None`: not
    /// acknowledged (refused, unreachable, or no answer in time).
    pub run_id: Option<String>,
    /// Why it was not acknowledged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The durability of the submitted workflow.
    pub durability: String,
}

/// One fault, when it began and when it was undone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRecord {
    /// `kill`, `pause`, `partition` or `delay`.
    pub kind: String,
    /// The node it hit.
    pub node: String,
    /// Milliseconds since the start when it began.
    pub at_ms: u64,
    /// Milliseconds since the start when it was undone (restart, SIGCONT,
    /// heal); `None` if that never happened.
    pub healed_ms: Option<u64>,
    /// What exactly was done (the delay, the peers cut off, …).
    pub detail: String,
    /// Whether some step of it failed (the fault may not have taken).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One side-effect line a task wrote: `run task attempt node`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SideEffect {
    /// The run.
    pub run_id: String,
    /// The task's id.
    pub task: String,
    /// The attempt number (the fencing token).
    pub attempt: u32,
    /// The node the attempt ran on.
    pub node: String,
}

impl SideEffect {
    /// Parses one line of the side-effect file; `None` for a torn or
    /// foreign line.
    pub fn parse(line: &str) -> Option<SideEffect> {
        let mut parts = line.split_whitespace();
        let run_id = parts.next()?.to_owned();
        let task = parts.next()?.to_owned();
        let attempt = parts.next()?.parse().ok()?;
        let node = parts.next()?.to_owned();
        if parts.next().is_some() {
            return None;
        }
        Some(SideEffect {
            run_id,
            task,
            attempt,
            node,
        })
    }

    /// The line this side effect is written as (with its newline).
    pub fn line(run_id: &str, task: &str, attempt: &str, node: &str) -> String {
        format!("{run_id} {task} {attempt} {node}\n")
    }
}

/// The journal of one acknowledged run, as read back at the end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Journal {
    /// The run.
    pub run_id: String,
    /// The node it was read from; `None` when no node had it.
    pub read_from: Option<String>,
    /// The run's status as the node reported it (`GET /api/v1/runs/{id}`).
    pub status: Option<String>,
    /// Task ids by index (`key.task` in events).
    pub tasks: Vec<String>,
    /// The journal events, in order, as the events endpoint sends them.
    pub events: Vec<Json>,
    /// Why it could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A whole chaos run, as the checker sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// Every submission, acknowledged or not.
    pub submissions: Vec<Submission>,
    /// Every fault.
    pub faults: Vec<FaultRecord>,
    /// Every side-effect line.
    pub side_effects: Vec<SideEffect>,
    /// The journal of every acknowledged run.
    pub journals: Vec<Journal>,
}

/// One line of a history file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Line {
    /// The parameters.
    Setup(Setup),
    /// A submission.
    Submission(Submission),
    /// A fault.
    Fault(FaultRecord),
    /// A side effect.
    SideEffect(SideEffect),
    /// A run's journal.
    Journal(Journal),
    /// What the checker said.
    Verdict {
        /// Whether no invariant was violated.
        ok: bool,
        /// Every violation, as text.
        violations: Vec<String>,
    },
}

impl History {
    /// The history as file lines, after `setup` and before the verdict.
    pub fn lines(&self, setup: &Setup) -> Vec<Line> {
        let mut lines = vec![Line::Setup(setup.clone())];
        lines.extend(self.submissions.iter().cloned().map(Line::Submission));
        lines.extend(self.faults.iter().cloned().map(Line::Fault));
        lines.extend(self.side_effects.iter().cloned().map(Line::SideEffect));
        lines.extend(self.journals.iter().cloned().map(Line::Journal));
        lines
    }

    /// A history read back from file lines (setup and verdict lines are
    /// skipped).
    pub fn from_lines(lines: impl IntoIterator<Item = Line>) -> History {
        let mut history = History::default();
        for line in lines {
            match line {
                Line::Submission(s) => history.submissions.push(s),
                Line::Fault(f) => history.faults.push(f),
                Line::SideEffect(s) => history.side_effects.push(s),
                Line::Journal(j) => history.journals.push(j),
                Line::Setup(_) | Line::Verdict { .. } => {}
            }
        }
        history
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn side_effect_lines_round_trip_and_torn_ones_are_skipped() {
        let line = SideEffect::line("01J", "a", "2", "n1");
        assert_eq!(line, "01J a 2 n1\n");
        assert_eq!(
            SideEffect::parse(line.trim_end()),
            Some(SideEffect {
                run_id: "01J".into(),
                task: "a".into(),
                attempt: 2,
                node: "n1".into(),
            })
        );
        assert_eq!(SideEffect::parse("01J a"), None);
        assert_eq!(SideEffect::parse("01J a x n1"), None);
        assert_eq!(SideEffect::parse("01J a 1 n1 extra"), None);
    }

    #[test]
    fn history_lines_round_trip_through_json() {
        let history = History {
            submissions: vec![Submission {
                at_ms: 5,
                node: "n1".into(),
                run_id: Some("r".into()),
                error: None,
                durability: "local".into(),
            }],
            faults: vec![FaultRecord {
                kind: "kill".into(),
                node: "n2".into(),
                at_ms: 10,
                healed_ms: Some(20),
                detail: "SIGKILL".into(),
                error: None,
            }],
            side_effects: vec![SideEffect::parse("r a 1 n1").unwrap()],
            journals: vec![Journal {
                run_id: "r".into(),
                read_from: Some("n1".into()),
                status: Some("succeeded".into()),
                tasks: vec!["a".into()],
                events: vec![serde_json::json!({"type": "run_succeeded"})],
                error: None,
            }],
        };
        let setup = Setup {
            seed: 1,
            nodes: vec!["n1".into(), "n2".into()],
            runs: 1,
            duration_ms: 1000,
            faults: vec!["kill".into()],
            durability: "local".into(),
        };
        let text: Vec<String> = history
            .lines(&setup)
            .iter()
            .map(|l| serde_json::to_string(l).unwrap())
            .collect();
        assert!(text[0].starts_with(r#"{"type":"setup""#), "{}", text[0]);
        let back: Vec<Line> = text
            .iter()
            .map(|t| serde_json::from_str(t).unwrap())
            .collect();
        assert_eq!(History::from_lines(back), history);
    }
}
