//! `durability: replicated` across real node processes on loopback: three
//! voters, a run whose owner is killed or frozen is finished by another
//! node, and nothing is committed twice.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::node::{Node, free_port, get, post_json, request};

const NAMES: [&str; 3] = ["a", "b", "c"];

/// Three voters, each listing the other two as seeds, on fixed ports (so a
/// restarted node keeps its address).
struct Trio {
    ports: Vec<(u16, u16)>,
    nodes: Vec<Node>,
}

impl Trio {
    fn start(dir: &Path) -> Trio {
        let ports: Vec<(u16, u16)> = NAMES.iter().map(|_| (free_port(), free_port())).collect();
        let mut trio = Trio {
            ports,
            nodes: Vec::new(),
        };
        for i in 0..NAMES.len() {
            let node = trio.spawn(dir, i);
            trio.nodes.push(node);
        }
        for node in &mut trio.nodes {
            node.wait_healthy();
        }
        trio
    }

    fn spawn(&self, dir: &Path, i: usize) -> Node {
        let seeds: Vec<String> = (0..NAMES.len())
            .filter(|j| *j != i)
            .map(|j| format!("127.0.0.1:{}", self.ports[j].0))
            .collect();
        let extra = format!(
            "cookie: replicated-test\nslots: 8\nseeds: [{}]\nraft: {{ voters: [a, b, c] }}\n\
             chaos: {{ nemesis: true }}\n\
             heartbeat: {{ interval: 100ms, suspect_after: 500ms, down_after: 1s }}\n",
            seeds.join(", ")
        );
        Node::start_at(dir, NAMES[i], self.ports[i], &extra)
    }

    fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .expect("a node of the trio")
    }
}

fn get_json(node: &Node, path: &str) -> Option<Value> {
    let (code, body) = get(&node.url, path)?;
    (code == 200)
        .then(|| serde_json::from_str(&body).ok())
        .flatten()
}

fn wait_for<T>(what: &str, deadline: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Waits until every node knows the same leader.
fn wait_for_leader(nodes: &[&Node]) -> String {
    wait_for(
        "a leader known to every node",
        Duration::from_secs(30),
        || {
            let leaders: BTreeSet<String> = nodes
                .iter()
                .map(|n| {
                    get_json(n, "/api/v1/cluster")
                        .and_then(|v| v["raft"]["leader"].as_str().map(str::to_owned))
                })
                .collect::<Option<_>>()?;
            (leaders.len() == 1).then(|| leaders.into_iter().next().expect("one"))
        },
    )
}

fn chain(n: usize, sleep: &str) -> String {
    let mut yaml = String::from("version: 1\nname: chain\ndurability: replicated\ntasks:\n");
    for i in 0..n {
        yaml.push_str(&format!(
            "  t{i}:\n    uses: builtin/sleep\n    with: {{ duration: {sleep} }}\n"
        ));
        if i > 0 {
            yaml.push_str(&format!("    needs: [t{}]\n", i - 1));
        }
    }
    yaml
}

fn submit(node: &Node, workflow: &str) -> String {
    let (code, body) = post_json(&node.url, "/api/v1/runs", &json!({ "workflow": workflow }))
        .expect("the node answers");
    assert!(
        code == 200 || code == 201 || code == 202,
        "submit: {code} {body}"
    );
    let doc: Value = serde_json::from_str(&body).expect("json");
    doc["run_id"].as_str().expect("run_id").to_owned()
}

/// Succeeded tasks and their attempt counts, as `node` reads the run.
fn succeeded(node: &Node, run: &str) -> Option<BTreeMap<String, u64>> {
    let info = get_json(node, &format!("/api/v1/runs/{run}"))?;
    Some(
        info["tasks"]
            .as_array()?
            .iter()
            .filter(|t| t["status"] == "succeeded")
            .map(|t| {
                (
                    t["id"].as_str().unwrap_or("?").to_owned(),
                    t["attempts"].as_u64().unwrap_or(0),
                )
            })
            .collect(),
    )
}

fn status(node: &Node, run: &str) -> Option<String> {
    get_json(node, &format!("/api/v1/runs/{run}"))
        .and_then(|v| v["status"].as_str().map(str::to_owned))
}

/// The committed journal of a finished run, from `node`'s event stream.
fn journal(node: &Node, run: &str) -> Vec<Value> {
    let (_, body) = get(&node.url, &format!("/api/v1/runs/{run}/events")).expect("events");
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str(d.trim()).ok())
        .collect()
}

/// The journal's invariants: one submission, one end, one result per task.
fn assert_committed_once(events: &[Value], tasks: usize) {
    let count = |t: &str| events.iter().filter(|e| e["type"] == t).count();
    assert_eq!(count("run_submitted"), 1, "{events:#?}");
    assert_eq!(count("run_succeeded"), 1, "{events:#?}");
    let mut results: BTreeMap<u64, usize> = BTreeMap::new();
    for e in events.iter().filter(|e| e["type"] == "task_succeeded") {
        *results
            .entry(e["key"]["task"].as_u64().unwrap())
            .or_default() += 1;
    }
    assert_eq!(results.len(), tasks, "every task has a result: {results:?}");
    assert!(
        results.values().all(|n| *n == 1),
        "a result committed twice: {results:?}"
    );
}

/// Tasks that had a committed result before `cut` were never scheduled
/// again.
fn assert_not_rerun(events: &[Value], done_before: &BTreeMap<String, u64>) {
    for (task, attempts) in done_before {
        let index: u64 = task.trim_start_matches('t').parse().unwrap();
        let scheduled = events
            .iter()
            .filter(|e| e["type"] == "task_scheduled" && e["key"]["task"] == index)
            .count() as u64;
        assert_eq!(
            scheduled, *attempts,
            "task {task} succeeded before the fault but was scheduled again"
        );
    }
}

#[test]
fn a_killed_owner_s_run_is_finished_by_another_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut trio = Trio::start(dir.path());
    let all: Vec<&Node> = trio.nodes.iter().collect();
    wait_for_leader(&all);
    let run = submit(trio.node("b"), &chain(8, "300ms"));
    // Read by another node, from its copy of the replicated journal.
    let done = wait_for("two tasks committed", Duration::from_secs(30), || {
        succeeded(trio.node("c"), &run).filter(|s| s.len() >= 2)
    });
    let owner = trio.nodes.iter_mut().find(|n| n.name == "b").unwrap();
    owner.kill();
    let killed = Instant::now();
    let a = trio.node("a");
    wait_for(
        "the run to succeed on the survivors",
        Duration::from_secs(60),
        || (status(a, &run).as_deref() == Some("succeeded")).then_some(()),
    );
    eprintln!("finished {:?} after the kill", killed.elapsed());
    let events = journal(a, &run);
    assert_committed_once(&events, 8);
    assert_not_rerun(&events, &done);
    let after: BTreeSet<&str> = events
        .iter()
        .filter(|e| e["type"] == "task_scheduled")
        .skip(done.len())
        .filter_map(|e| e["node"].as_str())
        .collect();
    assert!(!after.is_empty());
}

#[test]
fn a_frozen_owner_gives_its_run_up_and_nothing_commits_twice() {
    let dir = tempfile::tempdir().unwrap();
    let trio = Trio::start(dir.path());
    let all: Vec<&Node> = trio.nodes.iter().collect();
    wait_for_leader(&all);
    let run = submit(trio.node("b"), &chain(6, "400ms"));
    let done = wait_for("a task committed", Duration::from_secs(30), || {
        succeeded(trio.node("a"), &run).filter(|s| !s.is_empty())
    });
    let b = trio.node("b");
    b.signal("-STOP");
    let a = trio.node("a");
    wait_for(
        "the run to succeed without its owner",
        Duration::from_secs(60),
        || (status(a, &run).as_deref() == Some("succeeded")).then_some(()),
    );
    b.signal("-CONT");
    // The old owner catches up, learns it lost the run and gives it up:
    // its copy of the journal ends the same way, with nothing of its own
    // added after the takeover.
    wait_for("the old owner to catch up", Duration::from_secs(30), || {
        (status(b, &run).as_deref() == Some("succeeded")).then_some(())
    });
    let events = journal(b, &run);
    assert_committed_once(&events, 6);
    assert_not_rerun(&events, &done);
    // Publication times (`at_ms`) are each node's own; the events are not.
    let bare = |events: Vec<Value>| -> Vec<Value> {
        events
            .into_iter()
            .map(|mut e| {
                e.as_object_mut().map(|o| o.remove("at_ms"));
                e
            })
            .collect()
    };
    assert_eq!(
        bare(events),
        bare(journal(a, &run)),
        "every node holds the same journal"
    );
}

/// Cuts `node` off from `others`, both ways, through the nemesis.
fn partition(node: &Node, others: &[&Node]) {
    let fault = |from: &Node, peers: Vec<&str>| {
        let (code, body) = post_json(
            &from.url,
            "/api/v1/chaos/faults",
            &json!({ "peers": peers, "action": "drop" }),
        )
        .expect("the node answers");
        assert!((200..300).contains(&code), "fault refused: {code} {body}");
    };
    fault(node, others.iter().map(|n| n.name.as_str()).collect());
    for other in others {
        fault(other, vec![node.name.as_str()]);
    }
}

fn heal(nodes: &[&Node]) {
    for n in nodes {
        let (code, _) = request(&n.url, "DELETE", "/api/v1/chaos/faults", None).expect("answers");
        assert!((200..300).contains(&code));
    }
}

#[test]
fn a_partitioned_leader_is_replaced_and_runs_go_on_on_the_majority() {
    let dir = tempfile::tempdir().unwrap();
    let trio = Trio::start(dir.path());
    let all: Vec<&Node> = trio.nodes.iter().collect();
    let old = wait_for_leader(&all);
    let leader = trio.node(&old);
    let majority: Vec<&Node> = trio.nodes.iter().filter(|n| n.name != old).collect();
    // One run owned by the leader, one by a node of the majority.
    let on_leader = submit(leader, &chain(6, "300ms"));
    let on_majority = submit(majority[0], &chain(6, "300ms"));
    wait_for("both runs under way", Duration::from_secs(30), || {
        let a = succeeded(majority[1], &on_leader)?;
        let b = succeeded(majority[1], &on_majority)?;
        (!a.is_empty() && !b.is_empty()).then_some(())
    });
    partition(leader, &majority);
    let new = wait_for(
        "a new leader on the majority side",
        Duration::from_secs(30),
        || {
            let seen: BTreeSet<String> = majority
                .iter()
                .map(|n| {
                    get_json(n, "/api/v1/cluster")
                        .and_then(|v| v["raft"]["leader"].as_str().map(str::to_owned))
                })
                .collect::<Option<_>>()?;
            let leader = seen.into_iter().next().filter(|l| *l != old)?;
            Some(leader)
        },
    );
    assert_ne!(new, old);
    for run in [&on_leader, &on_majority] {
        wait_for(
            "the run to finish on the majority",
            Duration::from_secs(60),
            || (status(majority[0], run).as_deref() == Some("succeeded")).then_some(()),
        );
    }
    // The cut-off node cannot commit: its API says why.
    wait_for(
        "the old leader to report no quorum",
        Duration::from_secs(30),
        || {
            let view = get_json(leader, "/api/v1/cluster")?;
            let raft = &view["raft"];
            raft["stalled"]["reason"].as_str().map(str::to_owned)
        },
    );
    heal(&all);
    for run in [&on_leader, &on_majority] {
        wait_for(
            "the old leader to catch up",
            Duration::from_secs(60),
            || (status(leader, run).as_deref() == Some("succeeded")).then_some(()),
        );
        let events = journal(leader, run);
        assert_committed_once(&events, 6);
    }
}
