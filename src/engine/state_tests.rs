//! State machine tests: no runtime, no I/O; every input is explicit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::wdl::{Need, RetryPolicy, Task, Template};

fn task(id: &str, needs: &[usize]) -> Task {
    Task {
        id: id.into(),
        uses: "builtin/echo".into(),
        with: Template::Value(Value::Null),
        needs: needs
            .iter()
            .map(|&task| Need {
                task,
                condition: NeedCondition::Succeeded,
            })
            .collect(),
        when: None,
        for_each: None,
        max_parallel: None,
        timeout: None,
        retry: RetryPolicy::default(),
        placement: BTreeMap::new(),
    }
}

fn workflow(tasks: Vec<Task>) -> Workflow {
    Workflow {
        name: "test".into(),
        description: None,
        durability: crate::wdl::Durability::Local,
        inputs: Vec::new(),
        tasks,
        outputs: Vec::new(),
        deadline: None,
    }
}

fn start(wf: Workflow) -> (RunState, Vec<Action>) {
    start_with(wf, RunConfig::default())
}

fn start_with(wf: Workflow, config: RunConfig) -> (RunState, Vec<Action>) {
    let mut state = RunState::new("run1".into(), Arc::new(wf), Map::new(), 0, config);
    let actions = state.apply(Input::Start { now_ms: 0 });
    (state, actions)
}

fn dispatched(actions: &[Action]) -> Vec<(TaskKey, u32)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Dispatch { key, attempt, .. } => Some((*key, *attempt)),
            _ => None,
        })
        .collect()
}

fn events(actions: &[Action]) -> Vec<&JournalEvent> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Persist(e) => Some(e),
            _ => None,
        })
        .collect()
}

fn finished(actions: &[Action]) -> Option<RunStatus> {
    actions.iter().find_map(|a| match a {
        Action::Finish(s) => Some(*s),
        _ => None,
    })
}

fn ok(state: &mut RunState, key: TaskKey, attempt: u32, v: Value) -> Vec<Action> {
    state.apply(Input::AttemptFinished {
        key,
        attempt,
        result: Ok(v),
    })
}

fn err(state: &mut RunState, key: TaskKey, attempt: u32, e: TaskError) -> Vec<Action> {
    state.apply(Input::AttemptFinished {
        key,
        attempt,
        result: Err(e),
    })
}

fn k(task: u32) -> TaskKey {
    TaskKey { task, item: None }
}

fn item(task: u32, i: u32) -> TaskKey {
    TaskKey {
        task,
        item: Some(i),
    }
}

fn retry_policy(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial: Duration::from_millis(100),
        max: Duration::from_secs(1),
        ..RetryPolicy::default()
    }
}

#[test]
fn a_chain_runs_in_order_and_persists_before_dispatching() {
    let (mut s, actions) = start(workflow(vec![task("a", &[]), task("b", &[0])]));
    assert_eq!(dispatched(&actions), vec![(k(0), 1)]);
    // The schedule event comes before the dispatch it allows.
    let sched = actions
        .iter()
        .position(|a| matches!(a, Action::Persist(JournalEvent::TaskScheduled { .. })))
        .unwrap();
    let disp = actions
        .iter()
        .position(|a| matches!(a, Action::Dispatch { .. }))
        .unwrap();
    assert!(sched < disp);

    let actions = ok(&mut s, k(0), 1, Value::from("A"));
    assert_eq!(dispatched(&actions), vec![(k(1), 1)]);
    assert_eq!(s.task_output(0), &Value::from("A"));

    let actions = ok(&mut s, k(1), 1, Value::from("B"));
    assert_eq!(finished(&actions), Some(RunStatus::Succeeded));
    assert!(matches!(
        events(&actions).last(),
        Some(JournalEvent::RunSucceeded { .. })
    ));
    assert_eq!(s.status(), RunStatus::Succeeded);
}

#[test]
fn independent_tasks_start_together() {
    let (_, actions) = start(workflow(vec![
        task("a", &[]),
        task("b", &[]),
        task("c", &[0, 1]),
    ]));
    assert_eq!(dispatched(&actions), vec![(k(0), 1), (k(1), 1)]);
}

#[test]
fn a_failed_attempt_is_retried_after_backoff_until_the_budget_is_spent() {
    let mut a = task("a", &[]);
    a.retry = retry_policy(3);
    let (mut s, _) = start(workflow(vec![a, task("b", &[0])]));

    for attempt in 1..=2 {
        let actions = err(&mut s, k(0), attempt, TaskError::retryable("exit", "boom"));
        assert!(matches!(
            events(&actions)[..],
            [JournalEvent::TaskFailed {
                will_retry: true,
                ..
            }]
        ));
        let delay = actions
            .iter()
            .find_map(|a| match a {
                Action::StartTimer {
                    timer: Timer::Retry(key),
                    after,
                } if *key == k(0) => Some(*after),
                _ => None,
            })
            .expect("a retry timer");
        assert!(delay >= Duration::from_millis(50) && delay <= Duration::from_secs(1));
        assert!(dispatched(&actions).is_empty(), "no retry before the timer");
        let actions = s.apply(Input::TimerFired(Timer::Retry(k(0))));
        assert_eq!(dispatched(&actions), vec![(k(0), attempt + 1)]);
    }
    let actions = err(&mut s, k(0), 3, TaskError::retryable("exit", "boom"));
    assert!(matches!(
        events(&actions)[0],
        JournalEvent::TaskFailed {
            will_retry: false,
            ..
        }
    ));
    assert_eq!(s.task_status(1), TaskStatus::Skipped);
    assert_eq!(finished(&actions), Some(RunStatus::Failed));
    assert!(s.error().unwrap().contains("task \"a\" failed"));
    assert_eq!(s.progress().retries, 2);
}

#[test]
fn non_retryable_classes_fail_at_once() {
    let mut a = task("a", &[]);
    a.retry = retry_policy(5);
    a.retry.non_retryable = vec!["bad".into()];
    let (mut s, _) = start(workflow(vec![a]));
    let actions = err(&mut s, k(0), 1, TaskError::retryable("bad", "no"));
    assert_eq!(finished(&actions), Some(RunStatus::Failed));
    let actions = err(&mut s, k(0), 1, TaskError::retryable("exit", "late"));
    assert!(matches!(actions[..], [Action::ResultDropped { .. }]));
}

#[test]
fn a_timed_out_attempt_is_stopped_and_its_late_result_dropped() {
    let mut a = task("a", &[]);
    a.timeout = Some(Duration::from_secs(2));
    a.retry = retry_policy(2);
    let (mut s, actions) = start(workflow(vec![a]));
    assert!(actions.contains(&Action::StartTimer {
        timer: Timer::AttemptTimeout {
            key: k(0),
            attempt: 1
        },
        after: Duration::from_secs(2)
    }));
    let actions = s.apply(Input::TimerFired(Timer::AttemptTimeout {
        key: k(0),
        attempt: 1,
    }));
    assert_eq!(
        actions[0],
        Action::StopAttempt {
            key: k(0),
            attempt: 1
        }
    );
    match events(&actions)[..] {
        [
            JournalEvent::TaskFailed {
                error, will_retry, ..
            },
        ] => {
            assert_eq!(error.class, "timeout");
            assert!(*will_retry);
        }
        ref other => panic!("unexpected events {other:?}"),
    }
    let actions = s.apply(Input::TimerFired(Timer::Retry(k(0))));
    assert_eq!(dispatched(&actions), vec![(k(0), 2)]);

    // Attempt 1 answers after all: fenced off.
    let actions = ok(&mut s, k(0), 1, Value::from("late"));
    assert_eq!(
        actions,
        vec![Action::ResultDropped {
            key: k(0),
            attempt: 1
        }]
    );
    assert_eq!(s.dropped_results(), 1);
    // A stale timeout timer of attempt 1 does nothing either.
    assert!(
        s.apply(Input::TimerFired(Timer::AttemptTimeout {
            key: k(0),
            attempt: 1
        }))
        .is_empty()
    );
    let actions = ok(&mut s, k(0), 2, Value::from("on time"));
    assert_eq!(finished(&actions), Some(RunStatus::Succeeded));
    assert_eq!(s.task_output(0), &Value::from("on time"));
}

#[test]
fn cancel_stops_running_attempts_and_later_results_are_dropped() {
    let (mut s, _) = start(workflow(vec![
        task("a", &[]),
        task("b", &[]),
        task("c", &[0]),
    ]));
    let actions = s.apply(Input::Cancel {
        reason: "user".into(),
    });
    let stopped: Vec<_> = actions
        .iter()
        .filter(|a| matches!(a, Action::StopAttempt { .. }))
        .collect();
    assert_eq!(stopped.len(), 2);
    assert!(matches!(
        events(&actions)[..],
        [JournalEvent::RunCancelled { .. }]
    ));
    assert_eq!(finished(&actions), Some(RunStatus::Cancelled));
    assert_eq!(s.in_flight(), 0);
    let actions = ok(&mut s, k(0), 1, Value::Null);
    assert!(matches!(actions[..], [Action::ResultDropped { .. }]));
    assert!(
        s.apply(Input::Cancel {
            reason: "again".into()
        })
        .is_empty()
    );
}

#[test]
fn skips_propagate_unless_the_need_says_always() {
    // a fails; b needs a; c needs b; d needs a with `if: always`.
    let mut d = task("d", &[]);
    d.needs = vec![Need {
        task: 0,
        condition: NeedCondition::Always,
    }];
    let (mut s, _) = start(workflow(vec![
        task("a", &[]),
        task("b", &[0]),
        task("c", &[1]),
        d,
    ]));
    let actions = err(&mut s, k(0), 1, TaskError::fatal("exit", "boom"));
    assert_eq!(s.task_status(1), TaskStatus::Skipped);
    assert_eq!(s.task_status(2), TaskStatus::Skipped);
    assert_eq!(dispatched(&actions), vec![(k(3), 1)]);
    assert_eq!(finished(&actions), None, "d still runs");
    let skipped: Vec<_> = events(&actions)
        .into_iter()
        .filter_map(|e| match e {
            JournalEvent::TaskSkipped { task, reason } => Some((*task, reason.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        skipped,
        vec![
            (1, "needs \"a\", which failed".to_owned()),
            (2, "needs \"b\", which was skipped".to_owned())
        ]
    );
    let actions = ok(&mut s, k(3), 1, Value::Null);
    assert_eq!(finished(&actions), Some(RunStatus::Failed));
}

fn fan_out(n: usize, max_parallel: Option<u32>) -> Task {
    let mut t = task("fan", &[]);
    t.for_each = Some(Template::Value(Value::List(
        (0..n as i64).map(Value::Int).collect(),
    )));
    t.max_parallel = max_parallel;
    t
}

#[test]
fn for_each_respects_max_parallel_and_keeps_item_order() {
    let (mut s, actions) = start(workflow(vec![fan_out(5, Some(2)), task("after", &[0])]));
    assert!(matches!(
        events(&actions)[0],
        JournalEvent::TaskExpanded { task: 0, items: 5 }
    ));
    assert_eq!(dispatched(&actions), vec![(item(0, 0), 1), (item(0, 1), 1)]);
    // Finish out of order; each completion lets the next item in.
    let actions = ok(&mut s, item(0, 1), 1, Value::Int(10));
    assert_eq!(dispatched(&actions), vec![(item(0, 2), 1)]);
    let actions = ok(&mut s, item(0, 2), 1, Value::Int(20));
    assert_eq!(dispatched(&actions), vec![(item(0, 3), 1)]);
    ok(&mut s, item(0, 3), 1, Value::Int(30));
    ok(&mut s, item(0, 0), 1, Value::Int(0));
    assert_eq!(s.task_status(0), TaskStatus::Running);
    let actions = ok(&mut s, item(0, 4), 1, Value::Int(40));
    assert_eq!(
        s.task_output(0),
        &Value::List(
            vec![0, 10, 20, 30, 40]
                .into_iter()
                .map(Value::Int)
                .collect()
        )
    );
    assert_eq!(dispatched(&actions), vec![(k(1), 1)]);
}

#[test]
fn the_run_window_bounds_attempts_in_flight() {
    let config = RunConfig {
        max_in_flight: 3,
        ..RunConfig::default()
    };
    let (mut s, actions) = start_with(workflow(vec![fan_out(10, None)]), config);
    assert_eq!(dispatched(&actions).len(), 3);
    let actions = ok(&mut s, item(0, 0), 1, Value::Null);
    assert_eq!(dispatched(&actions), vec![(item(0, 3), 1)]);
    assert_eq!(s.in_flight(), 3);
}

#[test]
fn an_item_failing_for_good_stops_its_siblings_and_fails_the_task() {
    let (mut s, _) = start(workflow(vec![fan_out(4, Some(3))]));
    let actions = err(&mut s, item(0, 1), 1, TaskError::fatal("exit", "bad item"));
    let stopped: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::StopAttempt { key, .. } => Some(*key),
            _ => None,
        })
        .collect();
    assert_eq!(stopped, vec![item(0, 0), item(0, 2)]);
    assert!(dispatched(&actions).is_empty(), "item 3 never starts");
    assert_eq!(s.task_status(0), TaskStatus::Failed);
    assert_eq!(finished(&actions), Some(RunStatus::Failed));
    assert_eq!(s.in_flight(), 0);
}

#[test]
fn an_empty_for_each_succeeds_with_an_empty_list() {
    let (s, actions) = start(workflow(vec![fan_out(0, None)]));
    assert_eq!(finished(&actions), Some(RunStatus::Succeeded));
    assert_eq!(s.task_output(0), &Value::List(Vec::new()));
}

#[test]
fn the_deadline_fails_the_run_and_stops_attempts() {
    let mut wf = workflow(vec![task("a", &[])]);
    wf.deadline = Some(Duration::from_secs(5));
    let mut s = RunState::new(
        "r".into(),
        Arc::new(wf),
        Map::new(),
        1_000,
        RunConfig::default(),
    );
    let actions = s.apply(Input::Start { now_ms: 3_000 });
    assert!(actions.contains(&Action::StartTimer {
        timer: Timer::Deadline,
        after: Duration::from_secs(3)
    }));
    let actions = s.apply(Input::TimerFired(Timer::Deadline));
    assert!(actions.contains(&Action::StopAttempt {
        key: k(0),
        attempt: 1
    }));
    assert_eq!(finished(&actions), Some(RunStatus::Failed));
    assert!(s.error().unwrap().contains("deadline of 5s exceeded"));
}

/// Replays `events` into a fresh state, as a resumed run does.
fn replayed(wf: &Arc<Workflow>, events: &[JournalEvent]) -> RunState {
    let mut s = RunState::new(
        "run1".into(),
        Arc::clone(wf),
        Map::new(),
        0,
        RunConfig::default(),
    );
    for e in events {
        s.evolve(e);
    }
    s
}

#[test]
fn a_resumed_run_keeps_succeeded_tasks_and_reruns_in_flight_ones_with_new_attempts() {
    let wf = Arc::new(workflow(vec![
        task("a", &[]),
        task("b", &[0]),
        task("c", &[1]),
    ]));
    let mut s = RunState::new(
        "run1".into(),
        Arc::clone(&wf),
        Map::new(),
        0,
        RunConfig::default(),
    );
    let mut journal: Vec<JournalEvent> = Vec::new();
    let mut keep = |actions: Vec<Action>| {
        journal.extend(events(&actions).into_iter().cloned());
    };
    keep(s.apply(Input::Start { now_ms: 0 }));
    keep(ok(&mut s, k(0), 1, Value::from("A")));
    // The process dies while b's first attempt is out.
    let mut resumed = replayed(&wf, &journal);
    assert_eq!(resumed.task_status(0), TaskStatus::Succeeded);
    assert_eq!(resumed.task_output(0), &Value::from("A"));
    let actions = resumed.apply(Input::Resume { now_ms: 10 });
    assert_eq!(
        dispatched(&actions),
        vec![(k(1), 2)],
        "only b, with a new attempt"
    );
    // The old attempt's result (from before the crash) is fenced off.
    assert!(matches!(
        ok(&mut resumed, k(1), 1, Value::Null)[..],
        [Action::ResultDropped { .. }]
    ));
    let actions = ok(&mut resumed, k(1), 2, Value::from("B"));
    assert_eq!(dispatched(&actions), vec![(k(2), 1)]);
}

#[test]
fn a_crash_is_not_charged_to_the_retry_budget() {
    let mut a = task("a", &[]);
    a.retry = retry_policy(1);
    let wf = Arc::new(workflow(vec![a]));
    let mut s = RunState::new(
        "run1".into(),
        Arc::clone(&wf),
        Map::new(),
        0,
        RunConfig::default(),
    );
    let journal: Vec<JournalEvent> = events(&s.apply(Input::Start { now_ms: 0 }))
        .into_iter()
        .cloned()
        .collect();
    let mut resumed = replayed(&wf, &journal);
    let actions = resumed.apply(Input::Resume { now_ms: 0 });
    assert_eq!(dispatched(&actions), vec![(k(0), 2)]);
    let actions = ok(&mut resumed, k(0), 2, Value::Null);
    assert_eq!(finished(&actions), Some(RunStatus::Succeeded));
}

#[test]
fn replaying_a_finished_run_restores_its_outcome() {
    let wf = Arc::new(workflow(vec![task("a", &[])]));
    let mut s = RunState::new(
        "run1".into(),
        Arc::clone(&wf),
        Map::new(),
        0,
        RunConfig::default(),
    );
    let mut journal: Vec<JournalEvent> = events(&s.apply(Input::Start { now_ms: 0 }))
        .into_iter()
        .cloned()
        .collect();
    journal.extend(
        events(&ok(&mut s, k(0), 1, Value::Int(1)))
            .into_iter()
            .cloned(),
    );
    let resumed = replayed(&wf, &journal);
    assert_eq!(resumed.status(), RunStatus::Succeeded);
    assert_eq!(resumed.task_output(0), &Value::Int(1));
}

#[test]
fn a_retry_waiting_at_crash_time_runs_again_on_resume() {
    let mut a = task("a", &[]);
    a.retry = retry_policy(3);
    let wf = Arc::new(workflow(vec![a]));
    let mut s = RunState::new(
        "run1".into(),
        Arc::clone(&wf),
        Map::new(),
        0,
        RunConfig::default(),
    );
    let mut journal: Vec<JournalEvent> = events(&s.apply(Input::Start { now_ms: 0 }))
        .into_iter()
        .cloned()
        .collect();
    journal.extend(
        events(&err(&mut s, k(0), 1, TaskError::retryable("exit", "x")))
            .into_iter()
            .cloned(),
    );
    let mut resumed = replayed(&wf, &journal);
    let actions = resumed.apply(Input::Resume { now_ms: 0 });
    assert_eq!(dispatched(&actions), vec![(k(0), 2)]);
}

#[test]
fn a_lost_node_or_overload_is_retried_without_spending_the_budget() {
    let mut a = task("a", &[]);
    a.retry = retry_policy(1);
    let (mut s, _) = start(workflow(vec![a]));
    let actions = err(
        &mut s,
        k(0),
        1,
        TaskError::retryable("node_lost", "node b is down"),
    );
    assert!(actions.contains(&Action::StartTimer {
        timer: Timer::Retry(k(0)),
        after: Duration::ZERO
    }));
    let actions = s.apply(Input::TimerFired(Timer::Retry(k(0))));
    assert_eq!(dispatched(&actions), vec![(k(0), 2)]);
    let actions = err(&mut s, k(0), 2, TaskError::retryable("overloaded", "full"));
    assert!(matches!(
        events(&actions)[..],
        [JournalEvent::TaskFailed {
            will_retry: true,
            ..
        }]
    ));
    let actions = s.apply(Input::TimerFired(Timer::Retry(k(0))));
    assert_eq!(dispatched(&actions), vec![(k(0), 3)]);
    // The budget of one attempt is still whole: a real failure ends it.
    let actions = err(&mut s, k(0), 3, TaskError::retryable("exit", "boom"));
    assert_eq!(finished(&actions), Some(RunStatus::Failed));
}
