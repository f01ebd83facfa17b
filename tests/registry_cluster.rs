//! The model registry across real `symphony node` processes on loopback:
//! records reach every node (also one that joins later), an alias moved on
//! one node is seen on the others, a node that never saw a registration
//! fetches the artifact from a holder and serves the model (also after the
//! origin is killed), and a corrupted chunk is refused and fetched again.

mod support;

use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::node::Node;
use support::repo;

/// How long records or an artifact may take to reach a node.
const DEADLINE: Duration = Duration::from_secs(30);
const COOKIE: &str = "registry-cluster-test";

/// Config lines for a node of the test cluster joining through `seeds`.
fn cluster_extra(seeds: &[&Node], more: &str) -> String {
    let seeds: Vec<String> = seeds.iter().map(|n| n.cluster_addr.clone()).collect();
    format!(
        "cookie: {COOKIE}\nseeds: [{}]\nheartbeat: {{ interval: 100ms, suspect_after: 500ms, down_after: 1s }}\n{more}",
        seeds.join(", ")
    )
}

/// Polls `check` until it gives a value or the deadline passes.
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
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A client for the nodes' APIs.
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

    async fn register_iris(&self, node: &Node) -> Value {
        let bytes = std::fs::read(repo().join("models/iris.onnx")).expect("models/iris.onnx");
        let request = self
            .0
            .post(format!("{}/api/v1/models/iris/versions", node.url))
            .header("content-type", "application/octet-stream")
            .body(bytes);
        let (status, version) = self.send(request).await;
        assert_eq!(status, 201, "{version}");
        version
    }

    async fn alias(&self, node: &Node, alias: &str, version: u32) {
        let request = self
            .0
            .put(format!("{}/api/v1/models/iris/aliases/{alias}", node.url))
            .json(&json!({ "version": version }));
        let (status, body) = self.send(request).await;
        assert_eq!(status, 200, "{body}");
    }

    /// Waits until `node` resolves `iris@{reference}` and returns the version.
    async fn resolved(&self, node: &Node, reference: &str) -> Value {
        let path = format!("/api/v1/models/iris/versions/{reference}");
        eventually(
            &format!("{} to resolve iris@{reference}", node.name),
            || async {
                let (status, body) = self.get(node, &path).await;
                (status == 200).then_some(body)
            },
        )
        .await
    }

    async fn register_pipeline(&self, node: &Node) {
        let yaml = std::fs::read_to_string(repo().join("examples/pipelines/iris.yaml")).unwrap();
        let request = self
            .0
            .post(format!("{}/api/v1/pipelines", node.url))
            .json(&json!({ "workflow": yaml, "name": "iris.yaml" }));
        let (status, body) = self.send(request).await;
        assert_eq!(status, 201, "{}: {body}", node.name);
    }

    /// Invokes the iris pipeline on `node` for every reference case and
    /// checks the answers.
    async fn invoke_reference_cases(&self, node: &Node) {
        let reference: Value = serde_json::from_str(
            &std::fs::read_to_string(repo().join("models/iris_reference.json")).unwrap(),
        )
        .unwrap();
        for case in reference["cases"].as_array().unwrap() {
            let request = self
                .0
                .post(format!("{}/api/v1/pipelines/iris/invoke", node.url))
                .json(&json!({ "features": case["features"] }));
            let (status, out) = self.send(request).await;
            assert_eq!(status, 200, "{}: {out}\n{}", node.name, node.log());
            assert_eq!(out["label"], case["label"], "case {case}");
            let got = out["probabilities"][0].as_array().expect("[[p, p, p]]");
            let want = case["probabilities"].as_array().unwrap();
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(want) {
                let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
                assert!((g - w).abs() < 1e-4, "case {case}: {g} vs {w}");
            }
        }
    }

    /// The value of a counter or gauge at `node`'s `/metrics` (0 when absent).
    async fn metric(&self, node: &Node, name: &str) -> f64 {
        let text = self
            .0
            .get(format!("{}/metrics", node.url))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body");
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn records_reach_every_node_and_artifacts_follow_after_the_origin_is_gone() {
    let http = Client(reqwest::Client::new());
    let mut a = Node::healthy("rc-a", &cluster_extra(&[], ""));
    let b = Node::healthy("rc-b", &cluster_extra(&[&a], ""));
    let c = Node::healthy("rc-c", &cluster_extra(&[&a], ""));

    // Registered on A: B and C list and resolve it.
    let v1 = http.register_iris(&a).await;
    let checksum = v1["checksum"].as_str().unwrap().to_owned();
    for node in [&b, &c] {
        let version = http.resolved(node, "1").await;
        assert_eq!(version["checksum"], v1["checksum"]);
        assert_eq!(version["created_by"], "rc-a");
        let (status, model) = http.get(node, "/api/v1/models/iris").await;
        assert_eq!(status, 200, "{model}");
        let (status, list) = http.get(node, "/api/v1/models").await;
        assert_eq!(status, 200);
        assert!(list.to_string().contains("\"iris\""), "{list}");
    }

    // An alias moved on B is seen on A (and C).
    http.alias(&b, "production", 1).await;
    for node in [&a, &c] {
        let version = http.resolved(node, "production").await;
        assert_eq!(version["version"], 1);
    }

    // C never had the artifact; it knows A holds it.
    let (_, cluster) = http.get(&c, "/api/v1/cluster").await;
    let holds = |cluster: &Value, name: &str| {
        cluster["members"].as_array().is_some_and(|members| {
            members.iter().any(|m| {
                m["name"] == name
                    && m["artifacts"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|x| x == checksum.as_str()))
            })
        })
    };
    assert!(holds(&cluster, "rc-a"), "{cluster}");
    assert!(!holds(&cluster, "rc-c"), "{cluster}");

    // The pipeline (model/iris@production) runs on C: the artifact is
    // fetched from A, checked, cached, and the answers are the reference.
    http.register_pipeline(&c).await;
    http.invoke_reference_cases(&c).await;
    assert!(http.metric(&c, "symphony_model_cache_misses_total").await >= 1.0);
    assert!(http.metric(&c, "symphony_model_cache_bytes").await > 0.0);

    // A is gone: C still serves it.
    a.kill();
    http.invoke_reference_cases(&c).await;

    // D joins later through B: it learns the registry and fetches the
    // artifact from C, the only live holder.
    eventually("C to advertise the cached artifact", || async {
        let (_, cluster) = http.get(&b, "/api/v1/cluster").await;
        holds(&cluster, "rc-c").then_some(())
    })
    .await;
    let d = Node::healthy("rc-d", &cluster_extra(&[&b], ""));
    let version = http.resolved(&d, "production").await;
    assert_eq!(version["checksum"], json!(checksum));
    http.register_pipeline(&d).await;
    http.invoke_reference_cases(&d).await;
    assert!(http.metric(&d, "symphony_model_cache_misses_total").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupted_chunk_is_refused_and_fetched_again() {
    let http = Client(reqwest::Client::new());
    // A corrupts the first chunk it serves.
    let a = Node::healthy("rx-a", &cluster_extra(&[], "chaos: { corrupt_chunks: 1 }"));
    let b = Node::healthy("rx-b", &cluster_extra(&[&a], ""));
    let v1 = http.register_iris(&a).await;
    http.alias(&a, "production", 1).await;
    let version = http.resolved(&b, "production").await;
    assert_eq!(version["checksum"], v1["checksum"]);
    http.register_pipeline(&b).await;
    http.invoke_reference_cases(&b).await;
    let refused = http
        .metric(&b, "symphony_artifact_chunks_refused_total")
        .await;
    assert!(refused >= 1.0, "refused {refused}:\n{}", b.log());
    assert!(b.log().contains("Refused a corrupt chunk"), "{}", b.log());
}
