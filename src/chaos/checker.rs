//! The checker: a pure function from a recorded [`History`] to the
//! invariants it violates.
//!
//! - every acknowledged submission finished exactly once (one final event
//!   in its journal: `run_succeeded`, `run_failed` or `run_cancelled`);
//! - no task result was committed twice (at most one `task_succeeded` per
//!   task and item in a journal);
//! - no task that had a committed result ran again (no side-effect line of
//!   that task with an attempt higher than the committed one: a superseded
//!   attempt that ran anyway has a lower number);
//! - every `replicated` run succeeded;
//! - and something was acknowledged at all (a run that proves nothing is
//!   not `ok`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::Value as Json;

use super::history::{History, Journal};

/// An invariant a history breaks.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Violation {
    /// No submission was acknowledged: nothing was tested.
    NothingAcknowledged,
    /// An acknowledged run no node could show.
    Lost {
        /// The run.
        run_id: String,
        /// Why it could not be read.
        why: String,
    },
    /// An acknowledged run whose journal has no final event.
    NotFinished {
        /// The run.
        run_id: String,
        /// Its status as its node reported it, if any.
        status: Option<String>,
    },
    /// An acknowledged run whose journal has several final events.
    FinishedTwice {
        /// The run.
        run_id: String,
        /// The final events, in order.
        finals: Vec<String>,
    },
    /// A task with more than one committed result.
    CommittedTwice {
        /// The run.
        run_id: String,
        /// The task (with `[item]` for a `for_each` item).
        task: String,
        /// The attempts whose results were committed.
        attempts: Vec<u32>,
    },
    /// A task ran again after its result was committed.
    RanAfterCommit {
        /// The run.
        run_id: String,
        /// The task.
        task: String,
        /// The attempt whose result was committed.
        committed: u32,
        /// The later attempt that ran.
        attempt: u32,
        /// Where it ran.
        node: String,
    },
    /// A `replicated` run that did not succeed.
    ReplicatedNotSucceeded {
        /// The run.
        run_id: String,
        /// How it ended (its final event, or its status).
        outcome: String,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::NothingAcknowledged => {
                write!(f, "no submission was acknowledged: the run tested nothing")
            }
            Violation::Lost { run_id, why } => {
                write!(
                    f,
                    "run {run_id} was acknowledged but no node shows it: {why}"
                )
            }
            Violation::NotFinished { run_id, status } => write!(
                f,
                "run {run_id} was acknowledged but never finished (status {})",
                status.as_deref().unwrap_or("unknown")
            ),
            Violation::FinishedTwice { run_id, finals } => write!(
                f,
                "run {run_id} finished {} times: {}",
                finals.len(),
                finals.join(", ")
            ),
            Violation::CommittedTwice {
                run_id,
                task,
                attempts,
            } => write!(
                f,
                "run {run_id} task {task}: {} results committed (attempts {attempts:?})",
                attempts.len()
            ),
            Violation::RanAfterCommit {
                run_id,
                task,
                committed,
                attempt,
                node,
            } => write!(
                f,
                "run {run_id} task {task}: attempt {attempt} ran on {node} after attempt {committed}'s result was committed"
            ),
            Violation::ReplicatedNotSucceeded { run_id, outcome } => {
                write!(f, "replicated run {run_id} did not succeed: {outcome}")
            }
        }
    }
}

const FINALS: &[&str] = &["run_succeeded", "run_failed", "run_cancelled"];

fn kind(event: &Json) -> &str {
    event.get("type").and_then(Json::as_str).unwrap_or("")
}

/// A task's name in a journal: its id (by `key.task`), with `[item]`.
fn task_name(journal: &Journal, event: &Json) -> Option<(String, bool)> {
    let key = event.get("key")?;
    let index = key.get("task")?.as_u64()?;
    let id = usize::try_from(index)
        .ok()
        .and_then(|i| journal.tasks.get(i))
        .cloned()
        .unwrap_or_else(|| format!("#{index}"));
    Some(match key.get("item").and_then(Json::as_u64) {
        Some(item) => (format!("{id}[{item}]"), true),
        None => (id, false),
    })
}

/// Every invariant `history` violates, sorted; empty means `ok`.
pub fn check(history: &History) -> Vec<Violation> {
    let mut violations = BTreeSet::new();
    let acknowledged: BTreeMap<&str, &str> = history
        .submissions
        .iter()
        .filter_map(|s| s.run_id.as_deref().map(|id| (id, s.durability.as_str())))
        .collect();
    if acknowledged.is_empty() {
        violations.insert(Violation::NothingAcknowledged);
    }
    let journals: BTreeMap<&str, &Journal> = history
        .journals
        .iter()
        .map(|j| (j.run_id.as_str(), j))
        .collect();
    // Side effects by (run, task): the attempts that ran and where.
    let mut ran: BTreeMap<(&str, &str), Vec<(u32, &str)>> = BTreeMap::new();
    for s in &history.side_effects {
        ran.entry((s.run_id.as_str(), s.task.as_str()))
            .or_default()
            .push((s.attempt, s.node.as_str()));
    }
    for (&run_id, &durability) in &acknowledged {
        let Some(journal) = journals.get(run_id) else {
            violations.insert(Violation::Lost {
                run_id: run_id.to_owned(),
                why: "its journal was not collected".to_owned(),
            });
            continue;
        };
        if journal.events.is_empty() {
            violations.insert(Violation::Lost {
                run_id: run_id.to_owned(),
                why: journal
                    .error
                    .clone()
                    .unwrap_or_else(|| "its journal is empty".to_owned()),
            });
            continue;
        }
        let finals: Vec<String> = journal
            .events
            .iter()
            .map(kind)
            .filter(|k| FINALS.contains(k))
            .map(str::to_owned)
            .collect();
        match finals.len() {
            0 => {
                violations.insert(Violation::NotFinished {
                    run_id: run_id.to_owned(),
                    status: journal.status.clone(),
                });
            }
            1 => {}
            _ => {
                violations.insert(Violation::FinishedTwice {
                    run_id: run_id.to_owned(),
                    finals: finals.clone(),
                });
            }
        }
        if durability == "replicated" && finals.first().map(String::as_str) != Some("run_succeeded")
        {
            let outcome = finals
                .first()
                .cloned()
                .or_else(|| journal.status.clone())
                .unwrap_or_else(|| "unknown".to_owned());
            violations.insert(Violation::ReplicatedNotSucceeded {
                run_id: run_id.to_owned(),
                outcome,
            });
        }
        let mut committed: BTreeMap<(String, bool), Vec<u32>> = BTreeMap::new();
        for event in journal
            .events
            .iter()
            .filter(|e| kind(e) == "task_succeeded")
        {
            let Some(task) = task_name(journal, event) else {
                continue;
            };
            let attempt = event
                .get("attempt")
                .and_then(Json::as_u64)
                .and_then(|a| u32::try_from(a).ok())
                .unwrap_or(0);
            committed.entry(task).or_default().push(attempt);
        }
        for ((task, is_item), attempts) in committed {
            if attempts.len() > 1 {
                violations.insert(Violation::CommittedTwice {
                    run_id: run_id.to_owned(),
                    task: task.clone(),
                    attempts: attempts.clone(),
                });
            }
            // Side-effect lines name the task, not the item.
            if is_item {
                continue;
            }
            let first = attempts[0];
            for &(attempt, node) in ran.get(&(run_id, task.as_str())).into_iter().flatten() {
                if attempt > first {
                    violations.insert(Violation::RanAfterCommit {
                        run_id: run_id.to_owned(),
                        task: task.clone(),
                        committed: first,
                        attempt,
                        node: node.to_owned(),
                    });
                }
            }
        }
    }
    violations.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::history::{SideEffect, Submission};
    use super::*;

    fn submitted(run_id: &str, durability: &str) -> Submission {
        Submission {
            at_ms: 0,
            node: "n1".into(),
            run_id: Some(run_id.into()),
            error: None,
            durability: durability.into(),
        }
    }

    fn scheduled(task: u64, attempt: u32) -> Json {
        json!({"type": "task_scheduled", "key": {"task": task, "item": null}, "attempt": attempt, "node": "n1", "fence": attempt})
    }

    fn succeeded(task: u64, attempt: u32) -> Json {
        json!({"type": "task_succeeded", "key": {"task": task, "item": null}, "attempt": attempt, "output": null})
    }

    fn journal(run_id: &str, events: Vec<Json>) -> Journal {
        Journal {
            run_id: run_id.into(),
            read_from: Some("n1".into()),
            status: Some("succeeded".into()),
            tasks: vec!["a".into(), "b".into()],
            events,
            error: None,
        }
    }

    fn effect(run_id: &str, task: &str, attempt: u32) -> SideEffect {
        SideEffect {
            run_id: run_id.into(),
            task: task.into(),
            attempt,
            node: "n2".into(),
        }
    }

    /// A clean run: a retried task (attempt 1 ran, was superseded, ran
    /// anyway), one final event.
    fn clean(run_id: &str) -> (Journal, Vec<SideEffect>) {
        let events = vec![
            json!({"type": "run_submitted"}),
            scheduled(0, 1),
            scheduled(0, 2),
            succeeded(0, 2),
            scheduled(1, 1),
            succeeded(1, 1),
            json!({"type": "run_succeeded", "outputs": {}}),
        ];
        let effects = vec![
            effect(run_id, "a", 1),
            effect(run_id, "a", 2),
            effect(run_id, "b", 1),
        ];
        (journal(run_id, events), effects)
    }

    fn history(durability: &str) -> History {
        let (j, effects) = clean("r1");
        History {
            submissions: vec![
                submitted("r1", durability),
                Submission {
                    run_id: None,
                    error: Some("connection refused".into()),
                    ..submitted("x", durability)
                },
            ],
            faults: Vec::new(),
            side_effects: effects,
            journals: vec![j],
        }
    }

    #[test]
    fn a_clean_history_is_ok() {
        assert_eq!(check(&history("local")), vec![]);
        assert_eq!(check(&history("replicated")), vec![]);
    }

    #[test]
    fn nothing_acknowledged_is_not_ok() {
        let mut h = history("local");
        h.submissions.retain(|s| s.run_id.is_none());
        assert_eq!(check(&h), vec![Violation::NothingAcknowledged]);
    }

    #[test]
    fn an_acknowledged_run_that_never_finished_is_reported() {
        let mut h = history("local");
        h.journals[0].events.pop();
        h.journals[0].status = Some("running".into());
        let v = check(&h);
        assert_eq!(
            v,
            vec![Violation::NotFinished {
                run_id: "r1".into(),
                status: Some("running".into())
            }]
        );
        assert!(v[0].to_string().contains("never finished (status running)"));
    }

    #[test]
    fn an_acknowledged_run_without_a_journal_is_lost() {
        let mut h = history("local");
        h.journals.clear();
        assert!(matches!(&check(&h)[..], [Violation::Lost { run_id, .. }] if run_id == "r1"));
        let mut h = history("local");
        h.journals[0].events.clear();
        h.journals[0].error = Some("no node knows it".into());
        let v = check(&h);
        assert_eq!(
            v,
            vec![Violation::Lost {
                run_id: "r1".into(),
                why: "no node knows it".into()
            }]
        );
    }

    #[test]
    fn a_run_that_finished_twice_is_reported() {
        let mut h = history("local");
        h.journals[0]
            .events
            .push(json!({"type": "run_failed", "reason": "x"}));
        let v = check(&h);
        assert_eq!(
            v,
            vec![Violation::FinishedTwice {
                run_id: "r1".into(),
                finals: vec!["run_succeeded".into(), "run_failed".into()]
            }]
        );
        assert!(v[0].to_string().contains("finished 2 times"));
    }

    #[test]
    fn a_result_committed_twice_is_reported() {
        let mut h = history("local");
        h.journals[0].events.insert(4, succeeded(0, 1));
        let v = check(&h);
        assert_eq!(
            v,
            vec![Violation::CommittedTwice {
                run_id: "r1".into(),
                task: "a".into(),
                attempts: vec![2, 1]
            }]
        );
    }

    #[test]
    fn a_task_that_ran_after_its_commit_is_reported() {
        let mut h = history("local");
        h.side_effects.push(effect("r1", "b", 2));
        let v = check(&h);
        assert_eq!(
            v,
            vec![Violation::RanAfterCommit {
                run_id: "r1".into(),
                task: "b".into(),
                committed: 1,
                attempt: 2,
                node: "n2".into()
            }]
        );
        assert!(
            v[0].to_string()
                .contains("attempt 2 ran on n2 after attempt 1")
        );
        // Side effects of runs that were never acknowledged do not count.
        let mut h = history("local");
        h.side_effects.push(effect("x", "b", 9));
        assert_eq!(check(&h), vec![]);
    }

    #[test]
    fn a_replicated_run_that_did_not_succeed_is_reported() {
        let mut h = history("replicated");
        let last = h.journals[0].events.len() - 1;
        h.journals[0].events[last] = json!({"type": "run_failed", "reason": "node_lost"});
        let v = check(&h);
        assert_eq!(
            v,
            vec![Violation::ReplicatedNotSucceeded {
                run_id: "r1".into(),
                outcome: "run_failed".into()
            }]
        );
        // A local run may fail without breaking an invariant.
        let mut h = history("local");
        h.journals[0].events[last] = json!({"type": "run_failed", "reason": "x"});
        assert_eq!(check(&h), vec![]);
    }

    #[test]
    fn several_violations_are_all_reported() {
        let (j2, _) = clean("r2");
        let mut h = history("replicated");
        h.submissions.push(submitted("r2", "replicated"));
        h.journals.push(Journal {
            events: j2.events[..3].to_vec(),
            status: Some("running".into()),
            ..j2
        });
        h.side_effects.push(effect("r1", "a", 3));
        let v = check(&h);
        assert_eq!(v.len(), 3, "{v:?}");
    }
}
