//! The model registry on the replicated log, across three voter processes
//! on loopback: a write on one node is seen by the writer at once and by
//! the others once applied, version numbers are never given twice, the
//! artifact is still fetched on demand, and a node cut off from the quorum
//! refuses writes with 503 (the CLI with exit 75) while it keeps answering
//! reads.

mod support;

use std::collections::BTreeSet;
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::node::{Node, clean_symphony, free_port};
use support::repo;

const NAMES: [&str; 3] = ["ra", "rb", "rc"];
/// How long an applied write may take to show on another node, and a
/// leader to be elected.
const DEADLINE: Duration = Duration::from_secs(30);

/// Three voters, each listing the other two as seeds.
fn trio(dir: &Path) -> Vec<Node> {
    let ports: Vec<(u16, u16)> = NAMES.iter().map(|_| (free_port(), free_port())).collect();
    let mut nodes: Vec<Node> = (0..NAMES.len())
        .map(|i| {
            let seeds: Vec<String> = (0..NAMES.len())
                .filter(|j| *j != i)
                .map(|j| format!("127.0.0.1:{}", ports[j].0))
                .collect();
            let extra = format!(
                "cookie: registry-replicated-test\nseeds: [{}]\nraft: {{ voters: [{}] }}\n\
                 heartbeat: {{ interval: 100ms, suspect_after: 500ms, down_after: 1s }}\n",
                seeds.join(", "),
                NAMES.join(", ")
            );
            Node::start_at(dir, NAMES[i], ports[i], &extra)
        })
        .collect();
    for node in &mut nodes {
        node.wait_healthy();
    }
    nodes
}

/// Polls `check` until it gives a value or [`DEADLINE`] passes.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

struct Client(reqwest::Client);

impl Client {
    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.send().await.expect("request is sent");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    async fn get(&self, node: &Node, path: &str) -> (u16, Value) {
        self.send(self.0.get(format!("{}{path}", node.url))).await
    }

    async fn register_iris(&self, node: &Node) -> (u16, Value) {
        let bytes = std::fs::read(repo().join("models/iris.onnx")).expect("models/iris.onnx");
        let request = self
            .0
            .post(format!("{}/api/v1/models/iris/versions", node.url))
            .header("content-type", "application/octet-stream")
            .body(bytes);
        self.send(request).await
    }

    async fn alias(&self, node: &Node, alias: &str, version: u64) -> (u16, Value) {
        let request = self
            .0
            .put(format!("{}/api/v1/models/iris/aliases/{alias}", node.url))
            .json(&json!({ "version": version }));
        self.send(request).await
    }

    /// Waits until every node knows the same leader.
    async fn leader(&self, nodes: &[&Node]) -> String {
        eventually("a leader known to every node", || async {
            let mut leaders = BTreeSet::new();
            for node in nodes {
                let (_, view) = self.get(node, "/api/v1/cluster").await;
                leaders.insert(view["raft"]["leader"].as_str()?.to_owned());
            }
            (leaders.len() == 1).then(|| leaders.into_iter().next().expect("one"))
        })
        .await
    }

    /// The version numbers `node` lists for iris, with their writers.
    async fn versions(&self, node: &Node) -> Vec<(u64, String)> {
        let (status, model) = self.get(node, "/api/v1/models/iris").await;
        assert_eq!(status, 200, "{model}");
        model["versions"]
            .as_array()
            .expect("versions")
            .iter()
            .map(|v| {
                (
                    v["version"].as_u64().unwrap(),
                    v["created_by"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_on_one_voter_is_read_on_the_others_and_numbers_are_never_given_twice() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = trio(dir.path());
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let http = Client(reqwest::Client::new());
    http.leader(&[a, b, c]).await;

    // Registered on A, aliased on B: B checks the alias against everything
    // committed before (A's version), without waiting for anything.
    let (status, v1) = http.register_iris(a).await;
    assert_eq!(status, 201, "{v1}");
    assert_eq!(v1["version"], 1);
    let (status, alias) = http.alias(b, "production", 1).await;
    assert_eq!(status, 200, "{alias}\n{}", b.log());
    // The writer sees its own write at once.
    let (status, on_b) = http.get(b, "/api/v1/models/iris/versions/production").await;
    assert_eq!(status, 200, "{on_b}");
    assert_eq!(on_b["checksum"], v1["checksum"]);
    // The third node once it applied the entry.
    let on_c = eventually("C to apply the alias", || async {
        let (status, v) = http.get(c, "/api/v1/models/iris/versions/production").await;
        (status == 200).then_some(v)
    })
    .await;
    assert_eq!(on_c["version"], 1);
    assert_eq!(on_c["checksum"], v1["checksum"]);
    assert_eq!(on_c["created_by"], "ra");

    // Two nodes register at the same time: numbers are given at apply, in
    // log order, so they get 2 and 3 (never the same one, never renumbered).
    let (ra, rc) = tokio::join!(http.register_iris(a), http.register_iris(c));
    assert_eq!((ra.0, rc.0), (201, 201), "{ra:?} {rc:?}");
    let got: BTreeSet<u64> = [&ra.1, &rc.1]
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(got, BTreeSet::from([2, 3]));
    for v in [&ra.1, &rc.1] {
        assert_eq!(v["version"], v["registered_as"], "{v}");
    }
    let on_a = http.versions(a).await;
    assert_eq!(on_a.len(), 3);
    for node in [b, c] {
        eventually(
            &format!("{} to list the same versions", node.name),
            || async { (http.versions(node).await == on_a).then_some(()) },
        )
        .await;
    }

    // Deleting the aliased version is refused everywhere alike; after the
    // alias moves on C, deleting it on A works.
    let delete = |node: &Node| {
        http.0
            .delete(format!("{}/api/v1/models/iris/versions/1", node.url))
    };
    let (status, body) = http.send(delete(a)).await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = http.alias(c, "production", 2).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = http.send(delete(a)).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = http.get(a, "/api/v1/models/iris/versions/1").await;
    assert_eq!(status, 404);

    // Artifacts do not go through the log: B never had the file, and
    // fetches it from a holder when a pipeline on B needs the model.
    let yaml = std::fs::read_to_string(repo().join("examples/pipelines/iris.yaml")).unwrap();
    let request = http
        .0
        .post(format!("{}/api/v1/pipelines", b.url))
        .json(&json!({ "workflow": yaml, "name": "iris.yaml" }));
    let (status, body) = http.send(request).await;
    assert_eq!(status, 201, "{body}");
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("models/iris_reference.json")).unwrap(),
    )
    .unwrap();
    let case = &reference["cases"][0];
    let request = http
        .0
        .post(format!("{}/api/v1/pipelines/iris/invoke", b.url))
        .json(&json!({ "features": case["features"] }));
    let (status, out) = http.send(request).await;
    assert_eq!(status, 200, "{out}\n{}", b.log());
    assert_eq!(out["label"], case["label"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_cut_off_from_the_quorum_refuses_writes_and_answers_reads() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = trio(dir.path());
    let http = Client(reqwest::Client::new());
    {
        let all: Vec<&Node> = nodes.iter().collect();
        http.leader(&all).await;
    }
    let (status, v1) = http.register_iris(&nodes[0]).await;
    assert_eq!(status, 201, "{v1}");
    let (status, v2) = http.register_iris(&nodes[1]).await;
    assert_eq!(status, 201, "{v2}");
    let (status, body) = http.alias(&nodes[2], "production", 1).await;
    assert_eq!(status, 200, "{body}");

    // Two of the three voters die (SIGKILL): the survivor has no quorum.
    nodes[0].kill();
    nodes[1].kill();
    let survivor = &nodes[2];
    let (status, body) = http.alias(survivor, "production", 2).await;
    assert_eq!(status, 503, "{body}");
    let message = body["error"].as_str().unwrap_or_default();
    eprintln!("the survivor answered: {message}");
    assert!(
        message.contains("cannot take writes") && message.contains("quorum"),
        "{message}"
    );
    // Nothing changed, and reads still answer from the survivor's copy.
    let (status, now) = http
        .get(survivor, "/api/v1/models/iris/versions/production")
        .await;
    assert_eq!(status, 200, "{now}");
    assert_eq!(now["version"], 1);
    let (status, list) = http.get(survivor, "/api/v1/models").await;
    assert_eq!(status, 200, "{list}");

    // The CLI says so and exits 75 (try again later).
    let out = clean_symphony()
        .args(["models", "alias", "iris", "production", "2", "--server"])
        .arg(&survivor.url)
        .output()
        .expect("symphony runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    assert!(stderr.contains("cannot take writes"), "{stderr}");
    let (_, now) = http
        .get(survivor, "/api/v1/models/iris/versions/production")
        .await;
    assert_eq!(now["version"], 1);
}
