//! Pipelines end to end: the iris classifier registered in a real node's
//! model registry, the example pipeline registered over HTTP and invoked on
//! the reference cases; bad tensors and overload answered clearly.

mod support;

use std::sync::Arc;

use serde_json::{Value, json};
use support::node::Node;
use support::repo;
use symphony::api::{self, ApiState};
use symphony::cluster::{ClusterView, Member, PeerState};
use symphony::engine::{Engine, EngineConfig, SubmittedSource};
use symphony::executor::{ExecutorConfig, Executors};
use symphony::serving::{PipelineConfig, Pipelines};
use symphony::store::MemoryStore;

/// A cluster of one: this process.
fn alone() -> ClusterView {
    ClusterView::new(
        Member {
            name: "local".into(),
            addr: "127.0.0.1:7100".into(),
            state: PeerState::Up,
            labels: Default::default(),
            slots: 1,
            load: 0,
            rtt_ms: None,
            last_seen_ms: 0,
            artifacts: Vec::new(),
        },
        true,
    )
}

async fn call(
    _http: &reqwest::Client,
    request: reqwest::RequestBuilder,
) -> (u16, Value, Option<String>) {
    let response = request.send().await.expect("request is sent");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = response.text().await.expect("body");
    let body =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {text}"));
    (status, body, retry_after)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_iris_pipeline_answers_the_reference_predictions() {
    let node = Node::healthy("p1", "");
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", node.url);

    let model = std::fs::read(repo().join("models/iris.onnx")).unwrap();
    let upload = http
        .post(url("/api/v1/models/iris/versions"))
        .header("content-type", "application/octet-stream")
        .body(model);
    let (status, version, _) = call(&http, upload).await;
    assert_eq!(status, 201, "{version}");
    let alias = http
        .put(url("/api/v1/models/iris/aliases/production"))
        .json(&json!({ "version": 1 }));
    assert_eq!(call(&http, alias).await.0, 200);

    let yaml = std::fs::read_to_string(repo().join("examples/pipelines/iris.yaml")).unwrap();
    let register = http
        .post(url("/api/v1/pipelines"))
        .json(&json!({ "workflow": yaml, "name": "iris.yaml" }));
    let (status, pipeline, _) = call(&http, register).await;
    assert_eq!(status, 201, "{pipeline}");
    assert_eq!(pipeline["invoke"], "/api/v1/pipelines/iris/invoke");

    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("models/iris_reference.json")).unwrap(),
    )
    .unwrap();
    let cases = reference["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    for case in cases {
        let invoke = http
            .post(url("/api/v1/pipelines/iris/invoke"))
            .json(&json!({ "features": case["features"] }));
        let (status, out, _) = call(&http, invoke).await;
        assert_eq!(status, 200, "{out}");
        assert_eq!(out["label"], case["label"], "case {case}");
        let got = out["probabilities"][0].as_array().expect("[[p, p, p]]");
        let want = case["probabilities"].as_array().unwrap();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
            assert!((g - w).abs() < 1e-4, "case {case}: {g} vs {w}");
        }
    }

    // A pipeline that hands its input straight to the model: a tensor of
    // the wrong shape is refused with what the model expects.
    let raw = "version: 1\nname: raw\ndurability: none\ninputs:\n  x: { type: list }\ntasks:\n  classify:\n    uses: model/iris@production\n    with:\n      float_input: ${{ inputs.x }}\noutputs:\n  label: ${{ tasks.classify.outputs.label }}\n";
    let register = http
        .post(url("/api/v1/pipelines"))
        .json(&json!({ "workflow": raw }));
    assert_eq!(call(&http, register).await.0, 201);
    let invoke = http
        .post(url("/api/v1/pipelines/raw/invoke"))
        .json(&json!({ "x": [[1.0, 2.0, 3.0]] }));
    let (status, out, _) = call(&http, invoke).await;
    assert_eq!(status, 422, "{out}");
    let error = out["error"].as_str().unwrap();
    assert!(
        error.contains("float_input") && error.contains("4"),
        "{error}"
    );
    let (status, out, _) = call(
        &http,
        http.post(url("/api/v1/pipelines/raw/invoke"))
            .json(&json!({ "y": 1 })),
    )
    .await;
    assert_eq!(status, 422, "{out}");
    assert!(
        out["problems"][0]
            .as_str()
            .unwrap()
            .contains("unknown input \"y\""),
        "{out}"
    );

    let (status, _, _) = call(
        &http,
        http.post(url("/api/v1/pipelines/nope/invoke"))
            .json(&json!({})),
    )
    .await;
    assert_eq!(status, 404);
    let durable = "version: 1\nname: durable\ntasks:\n  a:\n    uses: builtin/noop\n";
    let (status, out, _) = call(
        &http,
        http.post(url("/api/v1/pipelines"))
            .json(&json!({ "workflow": durable })),
    )
    .await;
    assert_eq!(status, 422, "{out}");
    assert!(
        out["error"].as_str().unwrap().contains("durability: none"),
        "{out}"
    );
    let (status, list, _) = call(&http, http.get(url("/api/v1/pipelines"))).await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
}

#[tokio::test(flavor = "multi_thread")]
async fn invocations_beyond_the_bound_get_429_with_retry_after() {
    let executors = Executors::standard(&ExecutorConfig::default());
    let compile_with = executors.clone();
    let engine = Engine::start(
        EngineConfig::default(),
        executors.clone(),
        Arc::new(MemoryStore::new()),
        Arc::new(move |src: &SubmittedSource| {
            symphony::wdl::compile(&src.to_sources(), &compile_with).map_err(|d| d.to_string())
        }),
    )
    .await
    .unwrap();
    let pipelines = Pipelines::new(PipelineConfig { max_in_flight: 2 });
    let slow = "version: 1\nname: slow\ndurability: none\ntasks:\n  wait:\n    uses: builtin/sleep\n    with: { duration: 2s }\n";
    pipelines
        .register(&symphony::wdl::Sources::new("slow.yaml", slow), &executors)
        .unwrap();
    let state = ApiState {
        pipelines: pipelines.clone(),
        ..ApiState::new(engine.clone(), executors, alone())
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(api::serve(listener, state, std::future::pending()));
    let http = reqwest::Client::new();
    let invoke = || {
        http.post(format!("{base}/api/v1/pipelines/slow/invoke"))
            .json(&json!({}))
    };
    let first = tokio::spawn(invoke().send());
    let second = tokio::spawn(invoke().send());
    // The third is sent once both places are taken.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while pipelines.in_flight() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the first two invocations never got in: {} in flight",
            pipelines.in_flight()
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let (status, body, retry_after) = call(&http, invoke()).await;
    assert_eq!(status, 429);
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert!(
        body["error"].as_str().unwrap().contains("in flight"),
        "{body}"
    );
    assert_eq!(first.await.unwrap().unwrap().status(), 200);
    assert_eq!(second.await.unwrap().unwrap().status(), 200);
}
