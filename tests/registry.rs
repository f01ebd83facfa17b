//! The model registry end to end: a real `symphony node` process, driven
//! through its HTTP API and through `symphony models`; the upload limit on
//! an API served in process.

mod support;

use std::path::PathBuf;
use std::process::Output;
use std::sync::Arc;

use reqwest::Method;
use serde_json::{Value, json};
use support::node::Node;
use support::repo;
use symphony::api::{self, ApiState};
use symphony::cluster::{ClusterView, Member, PeerState};
use symphony::engine::{Engine, EngineConfig, SubmittedSource};
use symphony::executor::{ExecutorConfig, Executors};
use symphony::registry::sha256_hex;
use symphony::store::MemoryStore;

/// The iris classifier (see `scripts/make_iris_model.py`).
fn iris() -> Vec<u8> {
    std::fs::read(iris_path()).expect("models/iris.onnx is readable")
}

fn iris_path() -> PathBuf {
    repo().join("models/iris.onnx")
}

/// A client for one node's API.
struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn new(base: &str) -> Api {
        Api {
            base: base.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        answer(request.send().await).await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(Method::GET, path, None).await
    }

    async fn delete(&self, path: &str) -> (u16, Value) {
        self.call(Method::DELETE, path, None).await
    }

    async fn alias(&self, name: &str, alias: &str, version: u32) -> (u16, Value) {
        let path = format!("/api/v1/models/{name}/aliases/{alias}");
        self.call(Method::PUT, &path, Some(json!({ "version": version })))
            .await
    }

    /// `POST /api/v1/models/{name}/versions?{query}` with `bytes`.
    async fn upload(&self, name: &str, query: &str, bytes: Vec<u8>) -> (u16, Value) {
        let url = format!("{}/api/v1/models/{name}/versions?{query}", self.base);
        answer(
            self.http
                .post(url)
                .header("content-type", "application/octet-stream")
                .body(bytes)
                .send()
                .await,
        )
        .await
    }

    async fn artifact(&self, path: &str) -> (u16, Vec<u8>) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("request is sent");
        let status = response.status().as_u16();
        (status, response.bytes().await.expect("body").to_vec())
    }
}

async fn answer(response: reqwest::Result<reqwest::Response>) -> (u16, Value) {
    let response = response.expect("request is sent");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body is read");
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("answer {status} is not JSON ({e}): {text}"));
    (status, body)
}

/// The error text of an error answer.
fn error(body: &Value) -> &str {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error: {body}"))
}

/// Where a node started by [`Node::start`] keeps artifacts.
fn artifact_file(node: &Node, checksum: &str) -> PathBuf {
    node.dir
        .join(format!("data-{}", node.name))
        .join("artifacts/sha256")
        .join(checksum)
}

#[tokio::test(flavor = "multi_thread")]
async fn versions_move_between_aliases_and_deletion_respects_them() {
    let node = Node::healthy("n1", "");
    let api = Api::new(&node.url);
    let bytes = iris();

    let (status, v1) = api.upload("iris", "meta=owner=ml", bytes.clone()).await;
    assert_eq!(status, 201, "{v1}");
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["checksum"], sha256_hex(&bytes));
    assert_eq!(v1["size"], bytes.len());
    assert_eq!(v1["format"], "onnx");
    assert_eq!(v1["meta"], json!({ "owner": "ml" }));
    assert_eq!(v1["created_by"], "n1");
    let inputs = v1["signature"]["inputs"].as_array().expect("inputs");
    assert!(!inputs.is_empty(), "the signature was read: {v1}");
    let (status, v2) = api.upload("iris", "format=onnx", bytes.clone()).await;
    assert_eq!(status, 201, "{v2}");
    assert_eq!(v2["version"], 2);
    assert_eq!(v2["checksum"], v1["checksum"], "same bytes, same address");

    let (status, alias) = api.alias("iris", "production", 1).await;
    assert_eq!(status, 200, "{alias}");
    assert_eq!(
        (alias["alias"].clone(), alias["version"].clone()),
        (json!("production"), json!(1))
    );
    let (status, resolved) = api.get("/api/v1/models/iris/versions/production").await;
    assert_eq!((status, resolved["version"].clone()), (200, json!(1)));

    let (status, refused) = api.delete("/api/v1/models/iris/versions/1").await;
    assert_eq!(status, 409, "{refused}");
    assert!(
        error(&refused).contains("aliased as production"),
        "{refused}"
    );
    assert_eq!(refused["aliases"], json!(["production"]));

    let (status, moved) = api.alias("iris", "production", 2).await;
    assert_eq!((status, moved["version"].clone()), (200, json!(2)));
    let (_, resolved) = api.get("/api/v1/models/iris/versions/production").await;
    assert_eq!(resolved["version"], 2);
    let (status, deleted) = api.delete("/api/v1/models/iris/versions/1").await;
    assert_eq!((status, deleted["version"].clone()), (200, json!(1)));

    let (status, gone) = api.get("/api/v1/models/iris/versions/1").await;
    assert_eq!(status, 404, "{gone}");
    assert!(error(&gone).contains("was deleted"), "{gone}");
    let (status, again) = api.delete("/api/v1/models/iris/versions/1").await;
    assert_eq!(status, 404, "{again}");

    let (status, latest) = api.get("/api/v1/models/iris/versions/latest").await;
    assert_eq!((status, latest["version"].clone()), (200, json!(2)));
    let (status, list) = api.get("/api/v1/models").await;
    assert_eq!(status, 200);
    assert_eq!(list[0]["name"], "iris");
    assert_eq!(list[0]["versions"], 1);
    assert_eq!(list[0]["latest"], 2);
    assert_eq!(list[0]["aliases"], json!({ "production": 2 }));
    let (status, model) = api.get("/api/v1/models/iris").await;
    assert_eq!(status, 200);
    let numbers: Vec<&Value> = model["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| &v["version"])
        .collect();
    assert_eq!(numbers, [&json!(2)]);

    let (status, artifact) = api
        .artifact("/api/v1/models/iris/versions/production/artifact")
        .await;
    assert_eq!(status, 200);
    assert_eq!(artifact, bytes);

    // A new version never takes a deleted version's number.
    let (_, v3) = api.upload("iris", "", bytes).await;
    assert_eq!(v3["version"], 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_names_references_and_uploads_get_clear_4xx() {
    let node = Node::healthy("n1", "");
    let api = Api::new(&node.url);
    let (status, _) = api.upload("iris", "", iris()).await;
    assert_eq!(status, 201);

    let cases: Vec<(u16, Value, &str)> = vec![
        {
            let (s, b) = api.upload("Iris", "", iris()).await;
            (s, b, "invalid model name \"Iris\"")
        },
        {
            let (s, b) = api.upload("iris", "format=pt", iris()).await;
            (s, b, "unsupported model format \"pt\"")
        },
        {
            let (s, b) = api.upload("iris", "meta=novalue", iris()).await;
            (s, b, "is not KEY=VALUE")
        },
        {
            let (s, b) = api.upload("iris", "", Vec::new()).await;
            (s, b, "the request body is empty")
        },
        {
            let (s, b) = api.get("/api/v1/models/iris/versions/0").await;
            (s, b, "numbered from 1")
        },
        {
            let (s, b) = api.get("/api/v1/models/iris/versions/Prod").await;
            (s, b, "invalid alias \"Prod\"")
        },
        {
            let (s, b) = api.get("/api/v1/models/iris/versions/99999999999").await;
            (s, b, "too large")
        },
        {
            let (s, b) = api.alias("iris", "latest", 1).await;
            (s, b, "reserved")
        },
        {
            let (s, b) = api
                .call(
                    Method::PUT,
                    "/api/v1/models/iris/aliases/production",
                    Some(json!({ "version": "one" })),
                )
                .await;
            (s, b, "invalid request body")
        },
        {
            let (s, b) = api.delete("/api/v1/models/iris/versions/production").await;
            (s, b, "deleted by number")
        },
    ];
    for (status, body, expected) in &cases {
        assert_eq!(*status, 400, "{expected}: {body}");
        assert!(error(body).contains(expected), "{expected}: {body}");
    }

    let (status, body) = api.upload("iris", "", b"not a model".to_vec()).await;
    assert_eq!(status, 422, "{body}");
    assert!(error(&body).contains("cannot read the model"), "{body}");

    for (path, expected) in [
        ("/api/v1/models/rose", "model \"rose\" not found"),
        ("/api/v1/models/iris/versions/7", "has no version 7"),
        (
            "/api/v1/models/iris/versions/staging",
            "has no alias \"staging\"",
        ),
    ] {
        let (status, body) = api.get(path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(error(&body).contains(expected), "{path}: {body}");
    }
    let (status, body) = api.alias("iris", "production", 9).await;
    assert_eq!(status, 404, "{body}");
    let (status, list) = api.get("/api/v1/models").await;
    assert_eq!((status, list[0]["versions"].clone()), (200, json!(1)));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupted_artifact_is_detected_when_read() {
    let node = Node::healthy("n1", "");
    let api = Api::new(&node.url);
    let (_, v1) = api.upload("iris", "", iris()).await;
    let checksum = v1["checksum"].as_str().expect("checksum").to_owned();
    let file = artifact_file(&node, &checksum);
    let mut bytes = std::fs::read(&file).expect("the artifact is on disk");
    bytes[0] ^= 0xff;
    std::fs::write(&file, bytes).expect("artifact overwritten");

    let (status, body) = answer(
        api.http
            .get(format!(
                "{}/api/v1/models/iris/versions/1/artifact",
                node.url
            ))
            .send()
            .await,
    )
    .await;
    assert_eq!(status, 500, "{body}");
    assert!(error(&body).contains("corrupt"), "{body}");
    assert!(error(&body).contains(&checksum), "{body}");
    assert_eq!(body["checksum"], checksum);
    // The node is still up.
    let (status, _) = api.get("/api/v1/models/iris").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_registry_survives_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bytes = iris();
    {
        let mut node = Node::start_in(dir.path(), "n1", "");
        node.wait_healthy();
        let api = Api::new(&node.url);
        for n in 1..=2 {
            let (status, v) = api.upload("iris", "meta=run=7", bytes.clone()).await;
            assert_eq!((status, v["version"].clone()), (201, json!(n)));
        }
        assert_eq!(api.alias("iris", "production", 2).await.0, 200);
        // No clean shutdown: every write is durable when it is answered.
        node.kill();
    }
    let mut node = Node::start_in(dir.path(), "n1", "");
    node.wait_healthy();
    let api = Api::new(&node.url);
    let (status, production) = api.get("/api/v1/models/iris/versions/production").await;
    assert_eq!(status, 200, "{production}");
    assert_eq!(production["version"], 2);
    assert_eq!(production["meta"], json!({ "run": "7" }));
    let (status, artifact) = api
        .artifact("/api/v1/models/iris/versions/production/artifact")
        .await;
    assert_eq!((status, artifact), (200, bytes.clone()));
    let (_, v3) = api.upload("iris", "", bytes).await;
    assert_eq!(v3["version"], 3);
}

/// Runs `symphony models ARGS --server URL`.
fn models(server: &str, args: &[&str]) -> Output {
    support::node::clean_symphony()
        .arg("models")
        .args(args)
        .args(["--server", server])
        .output()
        .expect("symphony runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_command_line_manages_the_registry() {
    let node = Node::healthy("n1", "");
    let url = node.url.as_str();
    let file = iris_path();
    let file = file.to_str().expect("utf-8 path");

    let out = models(
        url,
        &["register", "iris", "--file", file, "--meta", "owner=ml"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "iris@1\n");
    let out = models(url, &["register", "iris", "--file", file, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(support::json(&out)["version"], 2);

    let out = models(url, &["alias", "iris", "production", "1"]);
    assert_eq!(stdout(&out), "iris@production -> 1\n", "{}", stderr(&out));
    let out = models(url, &["show", "iris@production", "--json"]);
    assert_eq!(support::json(&out)["version"], 1);
    let out = models(url, &["show", "iris@production"]);
    assert!(stdout(&out).starts_with("iris@1\n"), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("meta       owner=ml"),
        "{}",
        stdout(&out)
    );
    let out = models(url, &["show", "iris"]);
    let text = stdout(&out);
    assert!(text.starts_with("model iris\nVERSION"), "{text}");
    assert!(text.contains("production"), "{text}");

    let out = models(url, &["delete", "iris@1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("aliased as production"),
        "{}",
        stderr(&out)
    );
    let out = models(url, &["alias", "iris", "production", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = models(url, &["delete", "iris@1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "deleted iris@1\n");

    let out = models(url, &["list"]);
    let text = stdout(&out);
    assert!(
        text.starts_with("NAME  VERSIONS  LATEST  ALIASES\n"),
        "{text}"
    );
    assert!(
        text.contains("iris  1         2       production=2"),
        "{text}"
    );
    let out = models(url, &["list", "--json"]);
    assert_eq!(support::json(&out)[0]["latest"], 2);

    // Mistakes in what was typed: exit 78, said before anything is sent.
    for args in [
        &["show", "Iris"][..],
        &["show", "iris@"],
        &["delete", "iris@production"],
        &["register", "iris", "--file", "/does/not/exist.onnx"],
        &["register", "iris", "--file", file, "--meta", "novalue"],
        &["register", "iris", "--file", file, "--format", "pt"],
    ] {
        let out = models(url, args);
        assert_eq!(out.status.code(), Some(78), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).starts_with("error: "), "{args:?}");
    }
    let out = models(url, &["show", "rose"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "error: model \"rose\" not found\n");
}

/// An API over an empty engine, served in process with these limits.
async fn serve(max_body_bytes: usize, max_model_bytes: usize) -> String {
    let executors = Executors::standard(&ExecutorConfig::default());
    let engine = Engine::start(
        EngineConfig::default(),
        executors.clone(),
        Arc::new(MemoryStore::new()),
        Arc::new(|_: &SubmittedSource| Err("no workflows here".to_owned())),
    )
    .await
    .expect("engine starts");
    let cluster = ClusterView::new(
        Member {
            name: "n1".into(),
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
    );
    let mut state = ApiState::new(engine, executors, cluster);
    state.max_body_bytes = max_body_bytes;
    state.max_model_bytes = max_model_bytes;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(api::serve(listener, state, std::future::pending()));
    base
}

/// What a server answers to a POST announcing `length` bytes of body
/// before any of them is sent (up to the end of the answer's JSON).
async fn early_answer(base: &str, path: &str, length: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = base.strip_prefix("http://").expect("http URL");
    let mut stream = tokio::net::TcpStream::connect(host)
        .await
        .expect("connects");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\nContent-Length: {length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("head sent");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.ends_with(b"}") {
        let read = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("the server answers before the body comes")
            .expect("read");
        if read == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..read]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn models_have_their_own_body_limit() {
    let bytes = iris();
    // Over the limit of the other endpoints, under the model limit.
    let api = Api::new(&serve(bytes.len() / 2, bytes.len()).await);
    let (status, body) = api.upload("iris", "", bytes.clone()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["created_by"], "n1");

    let limit = bytes.len() - 1;
    let api = Api::new(&serve(1 << 20, limit).await);
    let (status, body) = api.upload("iris", "", bytes).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["limit_bytes"], limit);
    assert!(error(&body).contains("larger than the limit"), "{body}");
    // Refused as soon as the announced length is known, before the body
    // is sent.
    let head = early_answer(&api.base, "/api/v1/models/iris/versions", 32 << 20).await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    let (status, list) = api.get("/api/v1/models").await;
    assert_eq!((status, list), (200, json!([])));
}
