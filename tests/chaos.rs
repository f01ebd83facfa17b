//! The chaos toolkit end to end: the nemesis of real `symphony node`
//! processes cutting one off from the others through the HTTP API (and
//! healing), and a short `symphony chaos run` whose verdict must be ok.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::node::{Node, clean_symphony, free_port, post_json, request};
use support::wait_until;

const COOKIE: &str = "chaos-test-cookie";

/// The state `node` sees `peer` in, if it lists it.
fn state_of(node: &Node, peer: &str) -> Option<String> {
    let (code, body) = node.get("/api/v1/cluster", None)?;
    if code != 200 {
        return None;
    }
    let view: Value = serde_json::from_str(&body).ok()?;
    view["members"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == peer)
        .and_then(|m| m["state"].as_str())
        .map(str::to_owned)
}

fn all_see_all(nodes: &[Node], state: &str) -> bool {
    nodes.iter().all(|a| {
        nodes
            .iter()
            .filter(|b| b.name != a.name)
            .all(|b| state_of(a, &b.name).as_deref() == Some(state))
    })
}

#[test]
fn a_nemesis_partition_makes_a_node_down_and_healing_brings_it_back() {
    let tmp = tempfile::tempdir().unwrap();
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let names = ["ca", "cb", "cc"];
    let mut nodes: Vec<Node> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let seeds: Vec<String> = ports
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, (c, _))| format!("127.0.0.1:{c}"))
                .collect();
            let extra = format!(
                "cookie: {COOKIE}\nseeds: [{}]\nheartbeat: {{ interval: 100ms, suspect_after: 500ms, down_after: 1s }}\nchaos: {{ nemesis: true }}",
                seeds.join(", ")
            );
            Node::start_at(tmp.path(), name, ports[i], &extra)
        })
        .collect();
    for node in &mut nodes {
        node.wait_healthy();
    }
    wait_until(
        "every node to see the others up",
        Duration::from_secs(30),
        || all_see_all(&nodes, "up"),
    );

    // Bad requests are refused with a reason.
    let (code, body) = post_json(
        &nodes[0].url,
        "/api/v1/chaos/faults",
        &json!({"peers": ["cb"], "action": "delay"}),
    )
    .unwrap();
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("delay_ms"), "{body}");
    let (code, body) = post_json(
        &nodes[0].url,
        "/api/v1/chaos/faults",
        &json!({"peers": [], "action": "drop"}),
    )
    .unwrap();
    assert_eq!(code, 400, "{body}");

    // Cut ca off from cb and cc, both ways.
    let (code, body) = post_json(
        &nodes[0].url,
        "/api/v1/chaos/faults",
        &json!({"peers": ["cb", "cc"], "action": "drop"}),
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let faults: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(faults["faults"].as_array().unwrap().len(), 2, "{body}");
    for node in &nodes[1..] {
        let (code, body) = post_json(
            &node.url,
            "/api/v1/chaos/faults",
            &json!({"peers": ["ca"], "action": "drop"}),
        )
        .unwrap();
        assert_eq!(code, 200, "{body}");
    }
    let (code, body) = nodes[1].get("/api/v1/chaos/faults", None).unwrap();
    assert_eq!(code, 200);
    assert!(body.contains(r#""peer":"ca""#), "{body}");

    wait_until("cb and cc to see ca down", Duration::from_secs(15), || {
        state_of(&nodes[1], "ca").as_deref() == Some("down")
            && state_of(&nodes[2], "ca").as_deref() == Some("down")
    });
    wait_until("ca to see cb and cc down", Duration::from_secs(15), || {
        state_of(&nodes[0], "cb").as_deref() == Some("down")
            && state_of(&nodes[0], "cc").as_deref() == Some("down")
    });
    // The majority still sees itself whole.
    assert_eq!(state_of(&nodes[1], "cc").as_deref(), Some("up"));

    for node in &nodes {
        let (code, body) = request(&node.url, "DELETE", "/api/v1/chaos/faults", None).unwrap();
        assert_eq!(code, 200, "{body}");
        assert!(body.contains(r#""faults":[]"#), "{body}");
    }
    wait_until(
        "every node to see the others up again",
        Duration::from_secs(30),
        || all_see_all(&nodes, "up"),
    );
    let metrics = nodes[0].get("/metrics", None).unwrap().1;
    assert!(
        metrics.contains("symphony_nemesis_messages_total{verdict=\"dropped\"}"),
        "{metrics}"
    );
}

#[test]
fn a_node_without_the_nemesis_refuses_faults() {
    let mut node = Node::start("plain", "");
    node.wait_healthy();
    let (code, body) = post_json(
        &node.url,
        "/api/v1/chaos/faults",
        &json!({"peers": ["x"], "action": "drop"}),
    )
    .unwrap();
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("nemesis is disabled"), "{body}");
    for method in ["GET", "DELETE"] {
        let (code, body) = request(&node.url, method, "/api/v1/chaos/faults", None).unwrap();
        assert_eq!(code, 404, "{method}: {body}");
    }
}

/// Runs `symphony chaos run` with every fault kind and checks its verdict
/// and history: every submission recorded, every fault kind taken, side
/// effects and journals collected, verdict ok.
fn chaos_run_is_ok(durability: &str, runs: usize, duration: &str, seed: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let history = tmp.path().join("history.jsonl");
    let runs_arg = runs.to_string();
    let out = clean_symphony()
        .args(["chaos", "run", "--nodes", "3", "--runs", &runs_arg])
        .args([
            "--duration",
            duration,
            "--faults",
            "kill,pause,partition,delay",
        ])
        .args(["--durability", durability, "--seed", seed, "--history"])
        .arg(&history)
        .output()
        .expect("symphony chaos runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.trim() == "ok",
        "verdict not ok ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let lines: Vec<Value> = std::fs::read_to_string(&history)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let count = |kind: &str| lines.iter().filter(|l| l["type"] == kind).count();
    assert_eq!(count("setup"), 1);
    assert_eq!(count("submission"), runs);
    for kind in ["kill", "pause", "partition", "delay"] {
        assert!(
            lines
                .iter()
                .any(|l| l["type"] == "fault" && l["kind"] == kind && l.get("error").is_none()),
            "no {kind} fault took: {lines:?}"
        );
    }
    assert!(count("side_effect") >= 4, "{lines:?}");
    assert!(count("journal") >= 1);
    let verdict = lines.last().unwrap();
    assert_eq!(verdict["type"], "verdict");
    assert_eq!(verdict["ok"], true);
}

#[test]
fn a_short_chaos_run_with_every_fault_kind_is_ok() {
    // Seed 1 fits every kind into 20 seconds.
    chaos_run_is_ok("local", 6, "20s", "1");
}

#[test]
fn a_replicated_chaos_run_of_two_minutes_is_ok() {
    // Replicated runs through kills, pauses, partitions and delays: every
    // acknowledged run finishes exactly once and every one succeeds.
    chaos_run_is_ok("replicated", 20, "2m", "7");
}

#[test]
fn chaos_run_refuses_bad_arguments() {
    let out = clean_symphony()
        .args(["chaos", "run", "--nodes", "0", "--durability", "local"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--nodes must be 1 to 9"));
    let out = clean_symphony()
        .args(["chaos", "run", "--faults", "flood"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
