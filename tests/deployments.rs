//! Model deployments end to end, on real `symphony node` processes on
//! loopback: replicas placed on distinct nodes, invocations from every
//! node, a replica's node SIGKILLed and its replica replaced, a canary's
//! share of 1,000 requests, rollback, bad requests, and the CLI flow.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::node::{Node, clean_symphony};
use support::repo;

/// How long the cluster may take to converge on a change.
const CONVERGE: Duration = Duration::from_secs(30);

/// Waits for `cond` (async) to hold, polling; panics with `what` at the
/// deadline.
async fn eventually<F, Fut>(what: &str, deadline: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A request on a node's API: status and JSON body (null when not JSON or
/// nothing answered).
async fn call(http: &reqwest::Client, request: reqwest::RequestBuilder) -> (u16, Value) {
    let _ = http;
    match request.timeout(Duration::from_secs(10)).send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let text = response.text().await.unwrap_or_default();
            (status, serde_json::from_str(&text).unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

/// Three nodes joined through `n1`, with fast failure detection.
fn cluster() -> Vec<Node> {
    let timing =
        "cookie: secret\nheartbeat:\n  interval: 100ms\n  suspect_after: 500ms\n  down_after: 1s\n";
    let mut n1 = Node::start("n1", timing);
    n1.wait_healthy();
    let seeds = format!("{timing}seeds: [\"{}\"]\n", n1.cluster_addr);
    let mut n2 = Node::start("n2", &seeds);
    let mut n3 = Node::start("n3", &seeds);
    n2.wait_healthy();
    n3.wait_healthy();
    vec![n1, n2, n3]
}

async fn all_up(http: &reqwest::Client, nodes: &[&Node]) -> bool {
    for n in nodes {
        let (_, view) = call(http, http.get(format!("{}/api/v1/cluster", n.url))).await;
        let up = view["members"].as_array().map_or(0, |ms| {
            ms.iter()
                .filter(|m| {
                    m["state"] == "up" && nodes.iter().any(|o| m["name"] == o.name.as_str())
                })
                .count()
        });
        if up != nodes.len() {
            return false;
        }
    }
    true
}

/// Registers the iris model on `node` (the registry replicates it); returns
/// the version's number.
async fn register(http: &reqwest::Client, node: &Node) -> u64 {
    let model = std::fs::read(repo().join("models/iris.onnx")).unwrap();
    let upload = http
        .post(format!("{}/api/v1/models/iris/versions", node.url))
        .header("content-type", "application/octet-stream")
        .body(model);
    let (status, version) = call(http, upload).await;
    assert_eq!(status, 201, "{version}");
    version["version"].as_u64().unwrap()
}

/// The iris cluster: three nodes up, iris@1 (`production`) known on every
/// node, the example pipeline registered on every node.
async fn iris_cluster(http: &reqwest::Client) -> Vec<Node> {
    let nodes = cluster();
    let refs: Vec<&Node> = nodes.iter().collect();
    eventually("three nodes up everywhere", CONVERGE, || {
        all_up(http, &refs)
    })
    .await;
    assert_eq!(register(http, &nodes[0]).await, 1);
    let alias = http
        .put(format!(
            "{}/api/v1/models/iris/aliases/production",
            nodes[0].url
        ))
        .json(&json!({ "version": 1 }));
    assert_eq!(call(http, alias).await.0, 200);
    let yaml = std::fs::read_to_string(repo().join("examples/pipelines/iris.yaml")).unwrap();
    for n in &nodes {
        let path = format!("{}/api/v1/models/iris/versions/production", n.url);
        eventually(&format!("iris@production on {}", n.name), CONVERGE, || {
            let request = http.get(&path);
            async move { call(http, request).await.0 == 200 }
        })
        .await;
        let register = http
            .post(format!("{}/api/v1/pipelines", n.url))
            .json(&json!({ "workflow": yaml, "name": "iris.yaml" }));
        let (status, body) = call(http, register).await;
        assert_eq!(status, 201, "{}: {body}", n.name);
    }
    nodes
}

async fn deployment(http: &reqwest::Client, node: &Node) -> Value {
    let url = format!("{}/api/v1/models/iris/deployment", node.url);
    call(http, http.get(url)).await.1
}

fn nodes_of(d: &Value, role: &str) -> Vec<String> {
    d[role]["nodes"]
        .as_array()
        .map(|a| a.iter().map(|n| n.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// Whether `node` runs a deployed replica of iris@`version` (its metric).
async fn runs_replica(http: &reqwest::Client, node: &Node, version: u64) -> bool {
    let Ok(response) = http
        .get(format!("{}/metrics", node.url))
        .timeout(Duration::from_secs(5))
        .send()
        .await
    else {
        return false;
    };
    let text = response.text().await.unwrap_or_default();
    let want = format!("symphony_model_replicas{{model=\"iris\",version=\"{version}\"}} 1");
    text.lines().any(|l| l.trim() == want)
}

/// One invocation of the iris pipeline on `node` with the first reference
/// case: whether it answered 200 with the reference label.
async fn invoke(http: &reqwest::Client, node: &Node, case: &Value) -> Result<(), String> {
    let request = http
        .post(format!("{}/api/v1/pipelines/iris/invoke", node.url))
        .json(&json!({ "features": case["features"] }));
    let (status, out) = call(http, request).await;
    if status == 200 && out["label"] == case["label"] {
        Ok(())
    } else {
        Err(format!("{} answered {status}: {out}", node.name))
    }
}

fn reference_case() -> Value {
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("models/iris_reference.json")).unwrap(),
    )
    .unwrap();
    reference["cases"][0].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_spread_over_nodes_and_a_lost_one_is_replaced() {
    let http = reqwest::Client::new();
    let mut nodes = iris_cluster(&http).await;
    let case = reference_case();

    let deploy = http
        .put(format!("{}/api/v1/models/iris/deployment", nodes[0].url))
        .json(&json!({ "version": "production", "replicas": 2 }));
    let (status, d) = call(&http, deploy).await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["replicas"], 2);
    let placed = nodes_of(&d, "primary");
    assert_eq!(placed.len(), 2, "{d}");
    assert_eq!(placed.iter().collect::<BTreeSet<_>>().len(), 2, "distinct");
    // Every node computes the same placement, and the replicas run there.
    for n in &nodes {
        eventually(
            &format!("{} to agree on the placement", n.name),
            CONVERGE,
            || {
                let http = &http;
                let placed = &placed;
                async move { nodes_of(&deployment(http, n).await, "primary") == *placed }
            },
        )
        .await;
    }
    for n in nodes.iter().filter(|n| placed.contains(&n.name)) {
        eventually(
            &format!("a replica running on {}", n.name),
            CONVERGE,
            || runs_replica(&http, n, 1),
        )
        .await;
    }
    let idle = nodes.iter().find(|n| !placed.contains(&n.name)).unwrap();
    assert!(!runs_replica(&http, idle, 1).await);
    for n in &nodes {
        for _ in 0..10 {
            invoke(&http, n, &case).await.unwrap();
        }
    }
    // The idle node's requests went to the replicas through its agent.
    assert!(!runs_replica(&http, idle, 1).await);
    let mut remote = 0.0;
    for n in &nodes {
        let text = http
            .get(format!("{}/metrics", n.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        remote += text
            .lines()
            .filter(|l| l.starts_with("symphony_model_remote_requests_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    assert!(
        remote > 0.0,
        "some requests went to a replica on another node"
    );

    // SIGKILL a node holding a replica (not n1, which the test talks to).
    let victim = nodes
        .iter()
        .position(|n| n.name != "n1" && placed.contains(&n.name))
        .unwrap();
    nodes[victim].kill();
    let lost = nodes.remove(victim).name.clone();
    let survivors: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    for n in &nodes {
        eventually(
            &format!("{} to place the replica of {lost} elsewhere", n.name),
            CONVERGE,
            || {
                let http = &http;
                let survivors = &survivors;
                async move {
                    let now: BTreeSet<String> = nodes_of(&deployment(http, n).await, "primary")
                        .into_iter()
                        .collect();
                    now == survivors.iter().cloned().collect()
                }
            },
        )
        .await;
    }
    for n in &nodes {
        eventually(
            &format!("the replacement replica on {}", n.name),
            CONVERGE,
            || runs_replica(&http, n, 1),
        )
        .await;
    }
    for n in &nodes {
        for _ in 0..20 {
            invoke(&http, n, &case).await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canary_takes_its_share_and_a_rollback_returns_to_the_previous_deployment() {
    let http = reqwest::Client::new();
    let nodes = iris_cluster(&http).await;
    let case = reference_case();
    // Version 2: the same classifier, a separate version.
    assert_eq!(register(&http, &nodes[0]).await, 2);
    for n in &nodes {
        let path = format!("{}/api/v1/models/iris/versions/2", n.url);
        eventually(&format!("iris@2 on {}", n.name), CONVERGE, || {
            let (http, request) = (&http, http.get(&path));
            async move { call(http, request).await.0 == 200 }
        })
        .await;
    }
    let put = |body: Value| {
        http.put(format!("{}/api/v1/models/iris/deployment", nodes[0].url))
            .json(&body)
    };

    // Bad requests say what is wrong.
    let (status, e) = call(
        &http,
        http.post(format!("{}/api/v1/models/iris/rollback", nodes[0].url)),
    )
    .await;
    assert_eq!(status, 404, "{e}");
    assert!(e["error"].as_str().unwrap().contains("not deployed"), "{e}");
    for (body, code, text) in [
        (
            json!({ "version": 1, "replicas": 0 }),
            400,
            "replicas must be at least 1",
        ),
        (json!({ "version": 9 }), 404, "no version 9"),
        (
            json!({ "version": 1, "canary": "iris@2", "percent": 101 }),
            400,
            "percent must be 0 to 100",
        ),
        (
            json!({ "version": 1, "canary": "rose@1", "percent": 10 }),
            400,
            "not of \"iris\"",
        ),
        (
            json!({ "version": 1, "canary": "iris@1", "percent": 10 }),
            400,
            "deployed as primary",
        ),
    ] {
        let (status, e) = call(&http, put(body.clone())).await;
        assert_eq!(status, code, "{body}: {e}");
        assert!(e["error"].as_str().unwrap().contains(text), "{body}: {e}");
    }

    let (status, first) = call(&http, put(json!({ "version": 1, "replicas": 2 }))).await;
    assert_eq!(status, 200, "{first}");
    let (status, d) = call(
        &http,
        put(json!({ "version": 1, "replicas": 2, "canary": "iris@2", "percent": 20 })),
    )
    .await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["canary"]["percent"], 20);
    assert_eq!(d["primary"]["percent"], 80);
    let generation = d["generation"].as_u64().unwrap();
    for n in &nodes {
        eventually(&format!("{} to see the canary", n.name), CONVERGE, || {
            let http = &http;
            async move { deployment(http, n).await["generation"].as_u64() == Some(generation) }
        })
        .await;
    }
    // The deployed versions cannot be deleted.
    let (status, e) = call(
        &http,
        http.delete(format!("{}/api/v1/models/iris/versions/2", nodes[0].url)),
    )
    .await;
    assert_eq!(status, 409, "{e}");

    // 1,000 invocations, spread over the nodes, 16 at a time.
    let counts = |d: &Value, v: &str| d["requests"][v].as_u64().unwrap_or(0);
    let total = |http: reqwest::Client| {
        let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
        async move {
            let mut sum = (0, 0);
            for url in urls {
                let (_, d) = call(
                    &http,
                    http.get(format!("{url}/api/v1/models/iris/deployment")),
                )
                .await;
                sum.0 += counts(&d, "1");
                sum.1 += counts(&d, "2");
            }
            sum
        }
    };
    let before = total(http.clone()).await;
    let mut failures = Vec::new();
    for round in 0..(1000 / 16 + 1) {
        let batch = (0..16).filter(|i| round * 16 + i < 1000).map(|i| {
            let node = &nodes[(round * 16 + i) % nodes.len()];
            invoke(&http, node, &case)
        });
        for r in futures::future::join_all(batch).await {
            if let Err(e) = r {
                failures.push(e);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failed, e.g. {}",
        failures.len(),
        failures[0]
    );
    let after = total(http.clone()).await;
    let (primary, canary) = (after.0 - before.0, after.1 - before.1);
    assert_eq!(primary + canary, 1000, "every request routed once");
    let share = canary as f64 / 1000.0;
    assert!((0.15..=0.25).contains(&share), "canary share {share}");

    // Rollback: the deployment without the canary again.
    let (status, back) = call(
        &http,
        http.post(format!("{}/api/v1/models/iris/rollback", nodes[0].url)),
    )
    .await;
    assert_eq!(status, 200, "{back}");
    assert!(back["canary"].is_null(), "{back}");
    assert_eq!(back["generation"].as_u64(), Some(generation + 1));
    assert_eq!(back["primary"]["version"], 1);
    for n in &nodes {
        eventually(&format!("{} to see the rollback", n.name), CONVERGE, || {
            let http = &http;
            async move { deployment(http, n).await["generation"].as_u64() == Some(generation + 1) }
        })
        .await;
    }
    for n in &nodes {
        for _ in 0..20 {
            invoke(&http, n, &case).await.unwrap();
        }
    }
    let rolled = total(http.clone()).await;
    assert_eq!(rolled.1, after.1, "no request reaches the old canary");
    assert_eq!(rolled.0, after.0 + 60);
}

/// Runs `symphony ARGS --server URL` in `dir`.
fn client(dir: &Path, node: &Node, args: &[&str]) -> Output {
    clean_symphony()
        .current_dir(dir)
        .args(args)
        .args(["--server", &node.url])
        .output()
        .expect("symphony runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_cli_deploys_canaries_rolls_back_and_undeploys() {
    let node = Node::healthy("c1", "");
    let dir = tempfile::tempdir().unwrap();
    let model = repo().join("models/iris.onnx");
    let model = model.to_str().unwrap();
    for _ in 0..2 {
        let out = client(
            dir.path(),
            &node,
            &["models", "register", "iris", "--file", model],
        );
        assert!(out.status.success(), "{}", text(&out));
    }
    let ok = |args: &[&str]| {
        let out = client(dir.path(), &node, args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        text(&out)
    };
    let deployed = ok(&[
        "models",
        "deploy",
        "iris@1",
        "--replicas",
        "2",
        "--max-batch",
        "16",
        "--max-wait",
        "2ms",
    ]);
    assert!(deployed.contains("generation 1"), "{deployed}");
    assert!(deployed.contains("iris@1"), "{deployed}");
    // One node: the second replica has nowhere to go.
    assert!(deployed.contains("1 replicas unplaced"), "{deployed}");
    let canaried = ok(&[
        "models",
        "deploy",
        "iris@1",
        "--canary",
        "iris@2",
        "--percent",
        "20",
    ]);
    assert!(
        canaried.contains("canary") && canaried.contains("20%"),
        "{canaried}"
    );
    let shown = ok(&["models", "show", "iris"]);
    assert!(
        shown.contains("(deployed)") && shown.contains("canary"),
        "{shown}"
    );

    // Bad input: exit 78 (usage) or 2 (arguments), or 1 (refused).
    let code = |args: &[&str]| client(dir.path(), &node, args).status.code();
    assert_eq!(
        code(&[
            "models",
            "deploy",
            "iris@1",
            "--canary",
            "rose@1",
            "--percent",
            "5"
        ]),
        Some(78)
    );
    assert_eq!(
        code(&["models", "deploy", "iris@1", "--replicas", "0"]),
        Some(2)
    );
    assert_eq!(
        code(&[
            "models",
            "deploy",
            "iris@1",
            "--canary",
            "iris@2",
            "--percent",
            "101"
        ]),
        Some(2)
    );
    assert_eq!(code(&["models", "deploy", "iris@7"]), Some(1));
    assert_eq!(
        code(&["models", "delete", "iris@2"]),
        Some(1),
        "deployed as canary"
    );

    let out = client(dir.path(), &node, &["models", "rollback", "iris", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let back: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(back["canary"].is_null(), "{back}");
    assert_eq!(back["generation"], 3);
    assert_eq!(back["max_batch"], 16);
    assert_eq!(back["max_wait_ms"], 2);
    ok(&["models", "delete", "iris@2"]);
    let gone = ok(&["models", "undeploy", "iris"]);
    assert!(gone.contains("not deployed"), "{gone}");
    ok(&["models", "delete", "iris@1"]);
}
