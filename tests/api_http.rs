//! The HTTP API over real HTTP: a real engine behind `symphony::api::serve`
//! on 127.0.0.1:0, driven with reqwest.

#[path = "support/api.rs"]
mod api_support;
mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use api_support::{DEADLINE, Options, SseEvent, SseReader, TestNode, read_sse, wait_for};
use reqwest::Method;
use serde_json::{Value, json};
use support::{repo, symphony};

/// Doubles each number, then sums: outputs `{doubled, total}`.
const SUM: &str = r#"
version: 1
name: api-sum
inputs:
  numbers: { type: list }
tasks:
  double:
    uses: builtin/sum
    for_each: ${{ inputs.numbers }}
    with: { values: ["${{ item }}", "${{ item }}"] }
  total:
    uses: builtin/sum
    needs: [double]
    with: { values: "${{ tasks.double.outputs }}" }
outputs:
  doubled: ${{ tasks.double.outputs }}
  total: ${{ tasks.total.outputs }}
"#;

/// Takes long enough for a client to connect while it runs.
const SLOW: &str = r#"
version: 1
name: api-slow
durability: local
tasks:
  nap:
    uses: builtin/sleep
    with: { duration: 400ms }
  total:
    uses: builtin/sum
    needs: [nap]
    with: { values: [1, 2] }
outputs:
  total: ${{ tasks.total.outputs }}
"#;

/// Runs for a minute unless cancelled.
const LONG: &str = r#"
version: 1
name: api-long
tasks:
  wait:
    uses: builtin/sleep
    with: { duration: 60s }
"#;

fn is_final(kind: &str) -> bool {
    matches!(kind, "run_succeeded" | "run_failed" | "run_cancelled")
}

/// The checks every complete event stream of a succeeded run passes.
fn assert_complete_stream(events: &[SseEvent]) {
    assert!(!events.is_empty(), "no events");
    let kinds: Vec<_> = events
        .iter()
        .map(|e| e.event.as_deref().unwrap_or(""))
        .collect();
    assert_eq!(kinds[0], "run_submitted", "{kinds:?}");
    assert_eq!(*kinds.last().unwrap(), "run_succeeded", "{kinds:?}");
    assert!(
        kinds.contains(&"task_scheduled") && kinds.contains(&"task_succeeded"),
        "{kinds:?}"
    );
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e.seq(),
            i as u64,
            "sequence numbers count from 0 without gaps: {kinds:?}"
        );
        assert_eq!(e.data["type"], kinds[i], "data carries the event type");
    }
    assert_eq!(kinds.iter().filter(|k| is_final(k)).count(), 1);
}

async fn events(node: &TestNode, id: &str, last_event_id: Option<u64>) -> reqwest::Response {
    let mut request = node.request(Method::GET, &format!("/api/v1/runs/{id}/events"));
    if let Some(last) = last_event_id {
        request = request.header("Last-Event-ID", last.to_string());
    }
    request.send().await.expect("events request")
}

#[tokio::test]
async fn a_submitted_run_succeeds_with_its_outputs() {
    let node = TestNode::start(Options::default()).await;
    let response = node
        .request(Method::POST, "/api/v1/runs")
        .json(&json!({ "workflow": SUM, "inputs": { "numbers": [1, 2, 3] }, "name": "sum.yaml" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "running");
    let id = body["run_id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/api/v1/runs/{id}"));

    let info = node.wait_status(&id, "succeeded").await;
    assert_eq!(info["run_id"], id);
    assert_eq!(info["workflow"], "api-sum");
    assert_eq!(
        info["outputs"],
        json!({ "doubled": [2, 4, 6], "total": 12 })
    );
    assert_eq!(info["error"], Value::Null);
    let tasks: Vec<_> = info["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["id"])
        .collect();
    assert_eq!(tasks, vec!["double", "total"]);
    assert_eq!(info["tasks"][0]["items"], 3);

    // Durable runs are listed, and can be filtered by status.
    let (status, runs) = node.get("/api/v1/runs").await;
    assert_eq!(status, 200);
    assert!(
        runs.as_array().unwrap().iter().any(|r| r["id"] == id),
        "{runs}"
    );
    let (_, done) = node.get("/api/v1/runs?status=succeeded").await;
    assert!(
        done.as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "succeeded")
    );
    assert!(done.as_array().unwrap().iter().any(|r| r["id"] == id));
    let (_, running) = node.get("/api/v1/runs?status=running").await;
    assert!(running.as_array().unwrap().iter().all(|r| r["id"] != id));
    let (status, body) = node.get("/api/v1/runs?status=finished").await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("unknown status"),
        "{body}"
    );
    node.stop().await;
}

#[tokio::test]
async fn imports_are_given_as_files() {
    let node = TestNode::start(Options::default()).await;
    let main = r#"
version: 1
name: with-lib
import: [lib/common.yaml]
tasks:
  hello:
    extends: greet
outputs:
  said: ${{ tasks.hello.outputs }}
"#;
    let lib = "version: 1\ntemplates:\n  greet:\n    uses: builtin/echo\n    with: { say: hi }\n";
    let (status, body) = node
        .post(
            "/api/v1/runs",
            &json!({ "workflow": main, "name": "flows/main.yaml", "files": { "flows/lib/common.yaml": lib } }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let info = node
        .wait_status(body["run_id"].as_str().unwrap(), "succeeded")
        .await;
    assert_eq!(info["outputs"], json!({ "said": { "say": "hi" } }));

    // Without the file, the import is reported where it is written.
    let (status, body) = node
        .post(
            "/api/v1/runs",
            &json!({ "workflow": main, "name": "flows/main.yaml" }),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["diagnostics"][0]["file"], "flows/main.yaml");
    node.stop().await;
}

#[tokio::test]
async fn a_token_guards_everything_but_health() {
    let node = TestNode::start(Options {
        token: Some("s3cret-token".into()),
        ..Options::default()
    })
    .await;
    let anonymous = |path: &str| node.client.get(node.url(path)).send();

    let response = anonymous("/api/v1/runs").await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("bearer token"),
        "{body}"
    );

    for path in [
        "/api/v1/cluster",
        "/metrics",
        "/api/v1/openapi.json",
        "/nowhere",
    ] {
        assert_eq!(anonymous(path).await.unwrap().status(), 401, "{path}");
    }
    let wrong = node
        .client
        .get(node.url("/api/v1/runs"))
        .bearer_auth("s3cret-tokem")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let submit = node
        .client
        .post(node.url("/api/v1/runs"))
        .json(&json!({ "workflow": SUM }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        submit.status(),
        401,
        "no run is submitted without the token"
    );

    let (status, _) = node.get("/api/v1/runs").await;
    assert_eq!(status, 200, "with the token");
    let health = anonymous("/health").await.unwrap();
    assert_eq!(health.status(), 200);
    let body: Value = health.json().await.unwrap();
    assert_eq!(body, json!({ "status": "ready", "node": "n1" }));
    node.stop().await;
}

#[tokio::test]
async fn health_is_503_until_the_node_joined() {
    let node = TestNode::start(Options {
        joined: false,
        ..Options::default()
    })
    .await;
    let (status, body) = node.get("/health").await;
    assert_eq!(status, 503);
    assert_eq!(body["status"], "joining");
    let (status, cluster) = node.get("/api/v1/cluster").await;
    assert_eq!(status, 200);
    assert_eq!(cluster["node"], "n1");
    assert_eq!(cluster["joined"], false);
    assert_eq!(cluster["members"][0]["name"], "n1");
    assert_eq!(cluster["members"][0]["state"], "up");
    node.stop().await;
}

#[tokio::test]
async fn an_invalid_workflow_gets_the_validate_diagnostics() {
    let node = TestNode::start(Options::default()).await;
    let path = "tests/fixtures/wdl/invalid/unknown_keys.yaml";
    let text = std::fs::read_to_string(repo().join(path)).unwrap();
    let (status, body) = node
        .post("/api/v1/runs", &json!({ "workflow": text, "name": path }))
        .await;
    assert_eq!(status, 422);
    assert_eq!(body["error"], "invalid workflow");

    let validate = symphony()
        .current_dir(repo())
        .args(["validate", path])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&validate.stderr);
    assert_eq!(body["text"].as_str().unwrap(), printed.trim_end());
    let golden = std::fs::read_to_string(repo().join(path.replace(".yaml", ".expected"))).unwrap();
    assert_eq!(body["text"].as_str().unwrap(), golden.trim_end());

    let first = &body["diagnostics"][0];
    assert_eq!(
        *first,
        json!({
            "file": path, "line": 3, "col": 1,
            "message": "unknown key \"taks\" in the workflow", "hint": "did you mean \"tasks\"?",
        })
    );
    assert_eq!(body["diagnostics"].as_array().unwrap().len(), 7);
    node.stop().await;
}

#[tokio::test]
async fn bad_requests_are_refused_with_json() {
    let node = TestNode::start(Options::default()).await;
    // Inputs that do not fit the workflow.
    let (status, body) = node
        .post(
            "/api/v1/runs",
            &json!({ "workflow": SUM, "inputs": { "numbers": "x", "extra": 1 } }),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(body["error"], "invalid inputs");
    let problems: Vec<_> = body["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems
            .iter()
            .any(|p| p.contains("unknown input \"extra\""))
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("input \"numbers\" must be a list"))
    );
    let (status, body) = node.post("/api/v1/runs", &json!({ "workflow": SUM })).await;
    assert_eq!(status, 422);
    assert!(
        body["problems"][0]
            .as_str()
            .unwrap()
            .contains("missing required input")
    );

    // A durability this node cannot give.
    let replicated = SUM.replace("name: api-sum", "name: api-sum\ndurability: replicated");
    let (status, body) = node
        .post(
            "/api/v1/runs",
            &json!({ "workflow": replicated, "inputs": { "numbers": [] } }),
        )
        .await;
    assert_eq!(status, 422);
    assert!(
        body["error"].as_str().unwrap().contains("replicated"),
        "{body}"
    );

    // Malformed JSON, a missing or misspelt field.
    for raw in [
        "{\"workflow\": ",
        "[]",
        "{}",
        "{\"workflow\": \"x\", \"input\": {}}",
    ] {
        let response = node
            .request(Method::POST, "/api/v1/runs")
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{raw}");
        let body: Value = response.json().await.unwrap();
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .starts_with("invalid request body"),
            "{body}"
        );
    }

    // Unknown endpoints and methods.
    let (status, body) = node.get("/api/v2/runs").await;
    assert_eq!(status, 404);
    assert!(
        body["error"].as_str().unwrap().contains("no such endpoint"),
        "{body}"
    );
    let response = node
        .request(Method::DELETE, "/api/v1/runs")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].is_string());
    node.stop().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let node = TestNode::start(Options {
        max_body_bytes: 2048,
        ..Options::default()
    })
    .await;
    let padding = "#".repeat(4096);
    let (status, body) = node
        .post(
            "/api/v1/runs",
            &json!({ "workflow": format!("{SUM}\n{padding}\n") }),
        )
        .await;
    assert_eq!(status, 413);
    assert_eq!(body["limit_bytes"], 2048);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("larger than the limit"),
        "{body}"
    );
    // Under the limit is fine.
    let id = node.submit(SUM, json!({ "numbers": [1] })).await;
    node.wait_status(&id, "succeeded").await;
    node.stop().await;
}

#[tokio::test]
async fn unknown_runs_are_404() {
    let node = TestNode::start(Options::default()).await;
    let (status, body) = node.get("/api/v1/runs/01NOPE").await;
    assert_eq!(status, 404);
    assert_eq!(body["run_id"], "01NOPE");
    assert!(body["error"].as_str().unwrap().contains("not found"));
    let (status, _) = node.post("/api/v1/runs/01NOPE/cancel", &json!({})).await;
    assert_eq!(status, 404);
    let response = events(&node, "01NOPE", None).await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["run_id"], "01NOPE");
    node.stop().await;
}

#[tokio::test]
async fn a_long_run_is_cancelled() {
    let node = TestNode::start(Options::default()).await;
    let id = node.submit(LONG, json!({})).await;
    let path = format!("/api/v1/runs/{id}");
    wait_for("the sleep to start", || async {
        let (_, info) = node.get(&path).await;
        (info["tasks"][0]["status"] == "running").then_some(())
    })
    .await;
    let (status, body) = node.post(&format!("{path}/cancel"), &Value::Null).await;
    assert_eq!(status, 202);
    assert_eq!(body, json!({ "run_id": id, "cancelling": true }));
    let info = node.wait_status(&id, "cancelled").await;
    assert!(
        info["error"].as_str().unwrap().contains("cancelled"),
        "{info}"
    );

    let (status, body) = node.post(&format!("{path}/cancel"), &Value::Null).await;
    assert_eq!(status, 409);
    assert_eq!(body["status"], "cancelled");
    assert!(body["error"].as_str().unwrap().contains("already finished"));
    node.stop().await;
}

#[tokio::test]
async fn events_stream_live_and_from_history() {
    let node = TestNode::start(Options {
        sled: true,
        ..Options::default()
    })
    .await;
    let id = node.submit(SLOW, json!({})).await;

    // Connected while the run goes: history so far, then live events.
    let live = events(&node, &id, None).await;
    assert_eq!(live.status(), 200);
    let live = read_sse(live).await;
    assert_complete_stream(&live);
    assert_eq!(live[0].data["run_id"], id);
    assert_eq!(live.last().unwrap().data["outputs"], json!({ "total": 3 }));

    // Connected after it ended: the journal, identical.
    node.wait_status(&id, "succeeded").await;
    let replay = read_sse(events(&node, &id, None).await).await;
    assert_eq!(replay, live);

    // Resuming after an event id sends only what follows.
    let resumed = read_sse(events(&node, &id, Some(2)).await).await;
    assert_eq!(resumed, live[3..].to_vec());

    // Resuming after the final event: nothing more, and 204 stops EventSource.
    let last = live.last().unwrap().seq();
    assert_eq!(events(&node, &id, Some(last)).await.status(), 204);
    let bad = node
        .request(Method::GET, &format!("/api/v1/runs/{id}/events"))
        .header("Last-Event-ID", "seven")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    node.stop().await;
}

/// `GET /api/v1/events` with `Last-Event-ID` and extra query text.
async fn all_events(node: &TestNode, last_event_id: Option<&str>, query: &str) -> SseReader {
    let mut request = node.request(Method::GET, &format!("/api/v1/events{query}"));
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    SseReader::new(request.send().await.expect("events request"))
}

/// The `n` of an all-runs event id `<epoch>-<n>`.
fn bus_position(event: &SseEvent) -> (u64, u64) {
    let id = event.id.as_deref().expect("an id");
    let (epoch, n) = id.split_once('-').expect("EPOCH-N");
    (epoch.parse().unwrap(), n.parse().unwrap())
}

#[tokio::test]
async fn the_all_runs_stream_carries_every_run_and_resumes_exactly() {
    let node = TestNode::start(Options::default()).await;
    let mut stream = all_events(&node, None, "").await;
    let a = node.submit(SLOW, json!({})).await;
    let b = node.submit(SUM, json!({ "numbers": [1, 2] })).await;

    // Read until both runs have ended.
    let mut seen = Vec::new();
    let mut ended = BTreeSet::new();
    while ended.len() < 2 {
        let event = stream.next().await;
        if is_final(event.event.as_deref().unwrap()) {
            ended.insert(event.data["run_id"].as_str().unwrap().to_owned());
        }
        seen.push(event);
    }
    assert_eq!(ended, BTreeSet::from([a.clone(), b.clone()]));
    // One bus, numbered without gaps, in order.
    let (epoch, first) = bus_position(&seen[0]);
    for (i, event) in seen.iter().enumerate() {
        assert_eq!(bus_position(event), (epoch, first + i as u64), "{event:?}");
        assert_eq!(event.data["type"], event.event.as_deref().unwrap());
        assert!(event.data["at_ms"].as_u64().unwrap() > 0);
    }
    // Each run's events are its whole journal, in its order.
    for run in [&a, &b] {
        let own: Vec<_> = seen.iter().filter(|e| e.data["run_id"] == **run).collect();
        let seqs: Vec<_> = own
            .iter()
            .map(|e| e.data["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, (0..own.len() as u64).collect::<Vec<_>>(), "run {run}");
        assert_eq!(own[0].event.as_deref(), Some("run_submitted"));
        assert_eq!(own.last().unwrap().event.as_deref(), Some("run_succeeded"));
        // The same events as the run's own stream, with the same times.
        let per_run = read_sse(events(&node, run, None).await).await;
        let kinds: Vec<_> = per_run.iter().map(|e| e.event.clone()).collect();
        let all_kinds: Vec<_> = own.iter().map(|e| e.event.clone()).collect();
        assert_eq!(kinds, all_kinds);
        assert_eq!(per_run[1].data["at_ms"], own[1].data["at_ms"]);
    }

    // Reconnecting after an event gets exactly those after it: the rest of
    // what was seen, then the next run's first event and nothing between.
    let cut = 3;
    let cut_id = seen[cut].id.clone().unwrap();
    for (header, query) in [
        (Some(cut_id.as_str()), String::new()),
        (None, format!("?since={cut_id}")),
    ] {
        let mut resumed = all_events(&node, header, &query).await;
        assert_eq!(resumed.take(seen.len() - cut - 1).await, seen[cut + 1..]);
        let c = node.submit(SUM, json!({ "numbers": [3] })).await;
        let next = resumed.next().await;
        assert_eq!(next.data["run_id"], c);
        assert_eq!(next.event.as_deref(), Some("run_submitted"));
        // The first stream sees the new run too; the next reconnection
        // must replay it as well.
        loop {
            let event = stream.next().await;
            let over = event.data["run_id"] == c && is_final(event.event.as_deref().unwrap());
            seen.push(event);
            if over {
                break;
            }
        }
    }

    // An id of an earlier life of the node: told to resync, then the backlog.
    let mut other = all_events(&node, Some(&format!("{}-5", epoch - 1)), "").await;
    let resync = other.next().await;
    assert_eq!(resync.event.as_deref(), Some("resync"));
    assert_eq!(resync.id, None);
    assert_eq!(other.next().await, seen[0]);

    for bad in ["seven", "12"] {
        let response = node
            .request(Method::GET, "/api/v1/events")
            .header("Last-Event-ID", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{bad}");
    }
    node.stop().await;
}

#[tokio::test]
async fn event_streams_take_the_token_in_the_query_and_the_ui_needs_none() {
    let node = TestNode::start(Options {
        token: Some("s3cret-token".into()),
        ..Options::default()
    })
    .await;
    let anonymous = |path: &str| node.client.get(node.url(path)).send();
    assert_eq!(anonymous("/api/v1/events").await.unwrap().status(), 401);
    assert_eq!(
        anonymous("/api/v1/events?token=wrong")
            .await
            .unwrap()
            .status(),
        401
    );
    let stream = anonymous("/api/v1/events?token=s3cret-token")
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    drop(stream);
    let id = node.submit(SUM, json!({ "numbers": [1] })).await;
    node.wait_status(&id, "succeeded").await;
    let per_run = anonymous(&format!("/api/v1/runs/{id}/events?token=s3cret-token"))
        .await
        .unwrap();
    assert_complete_stream(&read_sse(per_run).await);
    // Only the event streams take a query token.
    assert_eq!(
        anonymous("/api/v1/runs?token=s3cret-token")
            .await
            .unwrap()
            .status(),
        401
    );

    // The UI's files are open and hold no data.
    for (path, kind) in [
        ("/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
    ] {
        let response = anonymous(path).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
    }
    let page = anonymous("/").await.unwrap().text().await.unwrap();
    assert!(page.contains("/ui/app.js"), "{page}");
    node.stop().await;
}

#[tokio::test]
async fn run_documents_carry_the_graph() {
    let node = TestNode::start(Options::default()).await;
    let id = node.submit(SUM, json!({ "numbers": [1] })).await;
    let info = node.wait_status(&id, "succeeded").await;
    assert_eq!(info["tasks"][0]["uses"], "builtin/sum");
    assert_eq!(info["tasks"][0]["needs"], json!([]));
    assert_eq!(info["tasks"][1]["needs"], json!(["double"]));
    node.stop().await;
}

#[tokio::test]
async fn many_clients_see_the_same_stream() {
    let node = TestNode::start(Options::default()).await;
    let id = node.submit(SLOW, json!({})).await;
    let streams = futures::future::join_all(
        (0..4).map(|_| async { read_sse(events(&node, &id, None).await).await }),
    )
    .await;
    for stream in &streams {
        assert_complete_stream(stream);
        assert_eq!(*stream, streams[0]);
    }
    node.stop().await;
}

#[tokio::test]
async fn streams_are_complete_however_early_a_client_connects() {
    // Clients connect while the first events are still on their way to the
    // journal: the stream must fill that gap from the journal, in order.
    let node = TestNode::start(Options {
        sled: true,
        ..Options::default()
    })
    .await;
    let numbers: Vec<_> = (1..=20).collect();
    let streams = futures::future::join_all((0..8).map(|_| async {
        let id = node.submit(SUM, json!({ "numbers": numbers })).await;
        let stream = read_sse(events(&node, &id, None).await).await;
        (id, stream)
    }))
    .await;
    for (id, stream) in &streams {
        assert_complete_stream(stream);
        assert_eq!(stream[0].data["run_id"], *id);
        let replay = read_sse(events(&node, id, None).await).await;
        assert_eq!(replay, *stream);
    }
    node.stop().await;
}

#[tokio::test]
async fn streams_wait_for_a_lagging_journal() {
    // Every event reaches the bus 30 ms before the journal: a client that
    // connects in between must get it from the journal, in order.
    let node = TestNode::start(Options {
        journal_delay: Some(Duration::from_millis(30)),
        ..Options::default()
    })
    .await;
    let numbers: Vec<_> = (1..=5).collect();
    let id = node.submit(SUM, json!({ "numbers": numbers })).await;
    let stream = read_sse(events(&node, &id, None).await).await;
    assert_complete_stream(&stream);
    let (_, info) = node.get(&format!("/api/v1/runs/{id}")).await;
    assert_eq!(info["outputs"]["total"], 30);
    let replay = read_sse(events(&node, &id, None).await).await;
    assert_eq!(replay, stream);
    node.stop().await;
}

#[tokio::test]
async fn events_of_a_run_without_journal_end_with_the_run() {
    let node = TestNode::start(Options::default()).await;
    let volatile = SLOW.replace("durability: local", "durability: none");
    let id = node.submit(&volatile, json!({})).await;
    let live = read_sse(events(&node, &id, None).await).await;
    let last = live.last().expect("at least the final event");
    assert_eq!(last.event.as_deref(), Some("run_succeeded"));
    let seqs: Vec<_> = live.iter().map(SseEvent::seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    // Over, and nothing journaled to replay.
    node.wait_status(&id, "succeeded").await;
    assert_eq!(events(&node, &id, None).await.status(), 204);
    node.stop().await;
}

#[tokio::test]
async fn a_cancelled_run_streams_its_cancellation() {
    let node = TestNode::start(Options::default()).await;
    let id = node.submit(LONG, json!({})).await;
    let stream = tokio::spawn({
        let request = node.request(Method::GET, &format!("/api/v1/runs/{id}/events"));
        async move { read_sse(request.send().await.unwrap()).await }
    });
    wait_for("the sleep to start", || async {
        let (_, info) = node.get(&format!("/api/v1/runs/{id}")).await;
        (info["tasks"][0]["status"] == "running").then_some(())
    })
    .await;
    let (status, _) = node
        .post(&format!("/api/v1/runs/{id}/cancel"), &Value::Null)
        .await;
    assert_eq!(status, 202);
    let events = tokio::time::timeout(DEADLINE, stream)
        .await
        .unwrap()
        .unwrap();
    let kinds: Vec<_> = events.iter().map(|e| e.event.clone().unwrap()).collect();
    assert_eq!(kinds.first().map(String::as_str), Some("run_submitted"));
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("run_cancelled"),
        "{kinds:?}"
    );
    node.stop().await;
}

#[tokio::test]
async fn shutdown_ends_open_event_streams() {
    let node = TestNode::start(Options::default()).await;
    let id = node.submit(LONG, json!({})).await;
    let response = events(&node, &id, None).await;
    assert_eq!(response.status(), 200);
    let reading = tokio::spawn(response.text());
    // `stop` fails the test if the server does not stop within the deadline.
    node.stop().await;
    let text = tokio::time::timeout(DEADLINE, reading)
        .await
        .unwrap()
        .unwrap();
    // The stream was cut short: whatever arrived is well formed.
    if let Ok(text) = text {
        let events = api_support::parse_sse(&text);
        assert!(
            events
                .iter()
                .all(|e| !is_final(e.event.as_deref().unwrap()))
        );
    }
}

#[tokio::test]
async fn the_openapi_document_lists_every_route() {
    let node = TestNode::start(Options::default()).await;
    let (status, doc) = node.get("/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));

    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let routed: BTreeSet<_> = symphony::api::endpoints()
        .into_iter()
        .map(|(m, p)| (m.to_owned(), p.to_owned()))
        .collect();
    assert_eq!(documented, routed);
    for route in [
        ("POST", "/api/v1/runs"),
        ("GET", "/api/v1/runs"),
        ("GET", "/api/v1/runs/{id}"),
        ("POST", "/api/v1/runs/{id}/cancel"),
        ("GET", "/api/v1/runs/{id}/events"),
        ("GET", "/api/v1/cluster"),
        ("GET", "/api/v1/openapi.json"),
        ("GET", "/health"),
        ("GET", "/metrics"),
    ] {
        assert!(
            routed.contains(&(route.0.to_owned(), route.1.to_owned())),
            "{route:?}"
        );
    }

    // Every documented operation is served: none falls to the router's
    // "no such endpoint" or "method not allowed".
    for (method, path) in &documented {
        let path = path.replace("{id}", "01NOPE");
        let response = node
            .request(Method::from_bytes(method.as_bytes()).unwrap(), &path)
            .send()
            .await
            .unwrap();
        assert_ne!(response.status(), 405, "{method} {path}");
        let streaming = response
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        if streaming {
            // The all-runs stream never ends: being served is enough.
            continue;
        }
        let body = response.text().await.unwrap();
        assert!(
            !body.contains("no such endpoint"),
            "{method} {path}: {body}"
        );
    }
    node.stop().await;
}

#[tokio::test]
async fn metrics_are_exported_after_a_run() {
    let first = symphony::api::install_metrics();
    let second = symphony::api::install_metrics();
    assert!(
        first.is_some() && second.is_some(),
        "installing twice is harmless"
    );

    let node = TestNode::start(Options {
        metrics: true,
        ..Options::default()
    })
    .await;
    let id = node.submit(SUM, json!({ "numbers": [4] })).await;
    node.wait_status(&id, "succeeded").await;
    let text = wait_for("symphony_runs_total", || async {
        let response = node.request(Method::GET, "/metrics").send().await.unwrap();
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        let text = response.text().await.unwrap();
        text.contains("symphony_runs_total").then_some(text)
    })
    .await;
    // Counted, not just registered (series of every status start at zero).
    let counted = |l: &&str| {
        l.starts_with("symphony_runs_total{")
            && l.contains("status=\"succeeded\"")
            && l.contains("workflow=\"api-sum\"")
            && l.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|v| v >= 1.0)
    };
    assert!(text.lines().any(|l| counted(&l)), "{text}");
    node.stop().await;

    // A node without a recorder has no /metrics.
    let bare = TestNode::start(Options::default()).await;
    let (status, body) = bare.get("/metrics").await;
    assert_eq!(status, 404);
    assert!(body["error"].is_string());
    bare.stop().await;
}
