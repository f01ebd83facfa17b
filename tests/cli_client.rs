//! The client commands end to end: a real `symphony node` as a child
//! process (loopback, free ports), then `submit`, `status`, `runs --server`,
//! `cancel`, `watch` and `cluster status` through the binary.
//!
//! Every test that needs a node starts one and waits for `/health`; when
//! the node cannot start (for instance it reports "not built yet"), the test
//! fails with the node's log rather than being skipped.

mod support;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use support::node::{Node, clean_symphony};
use support::{json, wait_until};

/// Runs `symphony ARGS` in `dir` against `node` (adds `--server`).
fn client(dir: &Path, node: &Node, args: &[&str]) -> Output {
    clean_symphony()
        .current_dir(dir)
        .args(args)
        .args(["--server", &node.url])
        .output()
        .expect("symphony runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

/// A workflow with an import, an input and a fan-out.
fn fan_out_workflow(dir: &Path) {
    write(
        dir,
        "lib/steps.yaml",
        r#"
version: 1
templates:
  double:
    uses: builtin/sum
    with: { values: ["${{ item }}", "${{ item }}"] }
"#,
    );
    write(
        dir,
        "wf.yaml",
        r#"
version: 1
name: client-e2e
durability: local
import: [lib/steps.yaml]
inputs:
  xs: { type: list }
  who: { type: string, default: you }
tasks:
  double:
    extends: double
    for_each: ${{ inputs.xs }}
  total:
    uses: builtin/sum
    needs: [double]
    with: { values: "${{ tasks.double.outputs }}" }
outputs:
  total: ${{ tasks.total.outputs }}
  who: ${{ inputs.who }}
"#,
    );
}

fn slow_workflow(dir: &Path) {
    write(
        dir,
        "slow.yaml",
        r#"
version: 1
name: slow
durability: local
tasks:
  wait:
    uses: builtin/sleep
    with: { duration: 60s }
"#,
    );
}

#[test]
fn submit_wait_status_runs_and_cluster_status() {
    let node = Node::healthy("solo", "");
    let dir = tempfile::tempdir().unwrap();
    fan_out_workflow(dir.path());

    let out = client(
        dir.path(),
        &node,
        &[
            "submit",
            "wf.yaml",
            "--wait",
            "--json",
            "-i",
            "xs=[1, 2, 3]",
            "-i",
            "who=42",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc = json(&out);
    assert_eq!(doc["status"], "succeeded", "{doc}");
    assert_eq!(doc["outputs"]["total"], 12, "{doc}");
    assert_eq!(
        doc["outputs"]["who"], "42",
        "string inputs stay text: {doc}"
    );
    assert_eq!(doc["tasks"]["double"]["items"], 3, "{doc}");
    assert_eq!(doc["tasks"]["total"]["status"], "succeeded", "{doc}");
    assert_eq!(doc["tasks"]["total"]["attempts"], 1, "{doc}");
    let run_id = doc["run_id"].as_str().unwrap().to_owned();

    let out = client(dir.path(), &node, &["status", &run_id, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let info = json(&out);
    assert_eq!(info["run_id"], run_id.as_str());
    assert_eq!(info["status"], "succeeded");

    let out = client(dir.path(), &node, &["status", &run_id]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&run_id) && text.contains("succeeded"),
        "{text}"
    );

    let out = client(dir.path(), &node, &["runs", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let runs = json(&out);
    assert!(
        runs.as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == run_id.as_str() && r["workflow"] == "client-e2e"),
        "{runs}"
    );

    let out = client(dir.path(), &node, &["cluster", "status", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let view = json(&out);
    assert_eq!(view["node"], "solo");
    assert_eq!(view["joined"], true);
    assert_eq!(view["members"][0]["name"], "solo");
    assert_eq!(view["members"][0]["state"], "up");

    let out = client(dir.path(), &node, &["cluster", "status"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("NAME") && table.contains("LOAD/SLOTS"),
        "{table}"
    );
    assert!(table.contains("solo"), "{table}");

    // Without --wait: the run id alone on stdout.
    let out = client(dir.path(), &node, &["submit", "wf.yaml", "-i", "xs=[1]"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        !id.is_empty() && !id.contains(char::is_whitespace),
        "{id:?}"
    );
}

#[test]
fn watch_follows_a_run_and_cancel_ends_it() {
    let node = Node::healthy("canceller", "");
    let dir = tempfile::tempdir().unwrap();
    slow_workflow(dir.path());

    let out = client(dir.path(), &node, &["submit", "slow.yaml", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let run_id = json(&out)["run_id"].as_str().unwrap().to_owned();

    // Not a terminal: one line per event on stderr, the outcome on stdout.
    let watcher = clean_symphony()
        .current_dir(dir.path())
        .args(["watch", &run_id, "--json", "--server", &node.url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the sleep task to start", Duration::from_secs(20), || {
        let out = client(dir.path(), &node, &["status", &run_id, "--json"]);
        out.status.success() && json(&out)["tasks"][0]["status"] == "running"
    });

    let out = client(dir.path(), &node, &["cancel", &run_id]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let out = watcher.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let doc = json(&out);
    assert_eq!(doc["status"], "cancelled", "{doc}");
    let events = stderr(&out);
    assert!(events.contains("run_submitted"), "{events}");
    assert!(events.contains("task_scheduled"), "{events}");
    assert!(events.contains("run_cancelled"), "{events}");

    // A finished run cannot be cancelled again; watching it just reports it.
    let out = client(dir.path(), &node, &["cancel", &run_id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("already finished"),
        "{}",
        stderr(&out)
    );
    let out = client(dir.path(), &node, &["watch", &run_id, "--json"]);
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert_eq!(json(&out)["status"], "cancelled");
}

#[test]
fn failures_exit_like_run_and_unknown_runs_are_errors() {
    let node = Node::healthy("failer", "");
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "fail.yaml",
        r#"
version: 1
name: failing
durability: none
tasks:
  boom:
    uses: builtin/fail
    with: { times: 5, retryable: false }
"#,
    );
    let out = client(
        dir.path(),
        &node,
        &["submit", "fail.yaml", "--wait", "--json"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let doc = json(&out);
    assert_eq!(doc["status"], "failed", "{doc}");
    assert_eq!(doc["tasks"]["boom"]["status"], "failed", "{doc}");
    assert!(doc["error"].is_string(), "{doc}");

    let out = client(dir.path(), &node, &["status", "no-such-run"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no-such-run"), "{}", stderr(&out));
}

#[test]
fn invalid_workflows_exit_78_locally_and_from_the_server() {
    let node = Node::healthy("checker", "");
    let dir = tempfile::tempdir().unwrap();
    // Caught before sending: an unknown key.
    write(
        dir.path(),
        "bad.yaml",
        "version: 1\nname: bad\ntasks:\n  a:\n    usess: builtin/noop\n",
    );
    let out = client(dir.path(), &node, &["submit", "bad.yaml"]);
    assert_eq!(out.status.code(), Some(78));
    assert!(stderr(&out).contains("bad.yaml:5:5"), "{}", stderr(&out));

    // Caught by the server (422): a model the node does not have.
    write(
        dir.path(),
        "model.yaml",
        "version: 1\nname: m\ntasks:\n  a:\n    uses: model/nothing@production\n",
    );
    let out = client(dir.path(), &node, &["submit", "model.yaml", "--wait"]);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(stderr(&out).contains("model.yaml:"), "{}", stderr(&out));

    // Inputs are checked before sending too.
    fan_out_workflow(dir.path());
    let out = client(dir.path(), &node, &["submit", "wf.yaml", "-i", "xs=3"]);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
}

#[test]
fn a_token_protected_node_says_what_is_wrong() {
    let node = Node::healthy("guarded", "api_token: s3cret");
    let dir = tempfile::tempdir().unwrap();

    let out = client(dir.path(), &node, &["cluster", "status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("requires an API token"),
        "{}",
        stderr(&out)
    );

    let out = client(dir.path(), &node, &["cluster", "status", "--token", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("refused the API token"),
        "{}",
        stderr(&out)
    );

    let out = clean_symphony()
        .current_dir(dir.path())
        .args(["cluster", "status", "--json", "--server", &node.url])
        .env("SYMPHONY_TOKEN", "s3cret")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json(&out)["node"], "guarded");
}

#[test]
fn an_unreachable_server_is_named() {
    let dir = tempfile::tempdir().unwrap();
    // A bound socket that never listens holds the port for the whole test
    // (a node started by a parallel test cannot take it) and refuses every
    // connection.
    let closed = tokio::net::TcpSocket::new_v4().unwrap();
    closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let url = format!("http://127.0.0.1:{}", closed.local_addr().unwrap().port());
    for args in [
        vec!["status", "r1"],
        vec!["runs"],
        vec!["cancel", "r1"],
        vec!["watch", "r1"],
        vec!["cluster", "status"],
    ] {
        let out = clean_symphony()
            .current_dir(dir.path())
            .args(&args)
            .env("SYMPHONY_SERVER", &url)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.contains(&format!("cannot reach the server at {url}")),
            "{args:?}: {err}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn runs_without_a_server_lists_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let out = clean_symphony()
        .current_dir(dir.path())
        .args(["runs", "--data-dir", "nowhere"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("data dir nowhere does not exist"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn cluster_status_lists_every_member() {
    let seed = Node::healthy("alpha", "cookie: c00kie\nlabels: { zone: a }");
    let joiner = Node::healthy(
        "beta",
        &format!(
            "cookie: c00kie\nseeds: [{}]\nlabels: {{ gpu: \"true\" }}",
            seed.cluster_addr
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    wait_until("alpha to see beta up", Duration::from_secs(20), || {
        let out = client(dir.path(), &seed, &["cluster", "status", "--json"]);
        let view = json(&out);
        view["members"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["name"] == "beta" && m["state"] == "up"))
    });
    // Right after joining, a peer's labels and slots may not have arrived.
    wait_until(
        "beta to know alpha's labels",
        Duration::from_secs(20),
        || {
            let out = client(dir.path(), &joiner, &["cluster", "status", "--json"]);
            json(&out)["members"].as_array().is_some_and(|m| {
                m.iter()
                    .any(|m| m["name"] == "alpha" && m["labels"]["zone"] == "a")
            })
        },
    );
    let out = client(dir.path(), &joiner, &["cluster", "status"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines[0], "cluster as seen by beta (joined)", "{table}");
    assert!(lines[1].starts_with("NAME"), "{table}");
    assert!(
        lines[2].starts_with("beta ") && lines[2].contains("gpu=true"),
        "{table}"
    );
    assert!(
        lines[3].starts_with("alpha ") && lines[3].contains("zone=a"),
        "{table}"
    );
    assert!(lines[3].contains(&seed.cluster_addr), "{table}");
}
