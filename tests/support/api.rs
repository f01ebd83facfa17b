//! Helpers for the HTTP API tests: a real node's API on 127.0.0.1:0 over a
//! real engine, a client, polling with deadlines, and an SSE parser.

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use symphony::api::{self, ApiState};
use symphony::cluster::{ClusterView, Member, PeerState};
use symphony::engine::{Engine, EngineConfig, SubmittedSource};
use symphony::executor::{ExecutorConfig, Executors};
use symphony::store::{
    AppendBatch, Durable, MemoryStore, RunStore, RunSummary, SledStore, StoreError,
};
use symphony::wdl;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a test waits for anything before it fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// How a test node is set up.
#[derive(Debug, Clone)]
pub struct Options {
    /// The bearer token the API requires.
    pub token: Option<String>,
    /// The request body limit.
    pub max_body_bytes: usize,
    /// Whether the node has joined its cluster (what `/health` reports).
    pub joined: bool,
    /// Whether `/metrics` is served (installs the process-wide recorder).
    pub metrics: bool,
    /// Keep journals in sled in a temporary dir instead of in memory.
    pub sled: bool,
    /// Keep journals in memory, each batch stored only after this delay
    /// (journal writes that lag behind the event bus).
    pub journal_delay: Option<Duration>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            token: None,
            max_body_bytes: api::DEFAULT_MAX_BODY_BYTES,
            joined: true,
            metrics: false,
            sled: false,
            journal_delay: None,
        }
    }
}

/// A node's HTTP API serving on a real TCP port.
#[derive(Debug)]
pub struct TestNode {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The node's engine.
    pub engine: Engine,
    /// A client with no default headers.
    pub client: reqwest::Client,
    token: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
    _dir: Option<tempfile::TempDir>,
}

impl TestNode {
    /// Starts an engine and serves the API over it with `options`.
    pub async fn start(options: Options) -> TestNode {
        let executors = Executors::standard(&ExecutorConfig::default());
        let (store, dir): (Arc<dyn RunStore>, _) = if options.sled {
            let dir = tempfile::tempdir().expect("temp dir");
            let store = SledStore::open(dir.path()).expect("sled store opens");
            (Arc::new(store), Some(dir))
        } else if let Some(delay) = options.journal_delay {
            (Arc::new(DelayedStore::new(delay)), None)
        } else {
            (Arc::new(MemoryStore::new()), None)
        };
        // The recorder first: the engine takes its metric handles as it
        // starts, and handles taken with no recorder record nothing.
        let metrics = options
            .metrics
            .then(|| api::install_metrics().expect("the recorder installs"));
        let compile_with = executors.clone();
        let engine = Engine::start(
            EngineConfig::default(),
            executors.clone(),
            store,
            Arc::new(move |src: &SubmittedSource| {
                wdl::compile(&src.to_sources(), &compile_with).map_err(|d| d.to_string())
            }),
        )
        .await
        .expect("engine starts");
        let cluster = ClusterView::new(
            Member {
                name: "n1".into(),
                addr: "127.0.0.1:7100".into(),
                state: PeerState::Up,
                labels: Default::default(),
                slots: 256,
                load: 0,
                rtt_ms: None,
                last_seen_ms: 0,
                artifacts: Vec::new(),
            },
            options.joined,
        );
        let mut state = ApiState::new(engine.clone(), executors, cluster);
        state.token = options.token.clone();
        state.max_body_bytes = options.max_body_bytes;
        state.metrics = metrics;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("port");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(api::serve(listener, state, async move {
            let _ = stopped.await;
        }));
        TestNode {
            base,
            engine,
            client: reqwest::Client::new(),
            token: options.token,
            stop: Some(stop),
            server: Some(server),
            _dir: dir,
        }
    }

    /// `base + path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request with the node's token, if it has one.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.client.request(method, self.url(path));
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// `GET path` with the token; status and JSON body (null when empty).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        into_json(self.request(reqwest::Method::GET, path).send().await).await
    }

    /// `POST path` with a JSON body and the token; status and JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        into_json(
            self.request(reqwest::Method::POST, path)
                .json(body)
                .send()
                .await,
        )
        .await
    }

    /// Submits `yaml` with `inputs`; panics unless it is accepted. Returns
    /// the run id.
    pub async fn submit(&self, yaml: &str, inputs: Value) -> String {
        let (status, body) = self
            .post(
                "/api/v1/runs",
                &serde_json::json!({ "workflow": yaml, "inputs": inputs }),
            )
            .await;
        assert_eq!(status, 201, "submission refused: {body}");
        body["run_id"].as_str().expect("run_id").to_owned()
    }

    /// Polls `GET /api/v1/runs/{id}` until its status is `status`.
    pub async fn wait_status(&self, id: &str, status: &str) -> Value {
        let path = format!("/api/v1/runs/{id}");
        wait_for(&format!("run {id} to be {status}"), || async {
            let (code, body) = self.get(&path).await;
            (code == 200 && body["status"] == status).then_some(body)
        })
        .await
    }

    /// Stops the server (ending open event streams) and the engine.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let result = tokio::time::timeout(DEADLINE, server)
                .await
                .expect("the server stops in time")
                .expect("the server task does not panic");
            result.expect("the server ends cleanly");
        }
        self.engine.shutdown().await;
    }
}

async fn into_json(response: reqwest::Result<reqwest::Response>) -> (u16, Value) {
    let response = response.expect("request is sent");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body is read");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("body is not JSON ({e}): {text}"))
    };
    (status, body)
}

/// Polls `check` every 20 ms until it gives a value or [`DEADLINE`] passes;
/// panics naming `what` then.
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    /// `id:`.
    pub id: Option<String>,
    /// `event:`.
    pub event: Option<String>,
    /// `data:`, parsed as JSON.
    pub data: Value,
}

impl SseEvent {
    /// The id as a sequence number.
    pub fn seq(&self) -> u64 {
        self.id
            .as_deref()
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("event without a numeric id: {self:?}"))
    }
}

/// Parses a whole `text/event-stream` body; comments are skipped.
pub fn parse_sse(text: &str) -> Vec<SseEvent> {
    let mut events = Vec::new();
    for block in text.split("\n\n") {
        let (mut id, mut event, mut data) = (None, None, Vec::new());
        for line in block.lines() {
            if line.starts_with(':') || line.is_empty() {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => id = Some(value.to_owned()),
                "event" => event = Some(value.to_owned()),
                "data" => data.push(value.to_owned()),
                _ => {}
            }
        }
        if id.is_none() && event.is_none() && data.is_empty() {
            continue;
        }
        let data = data.join("\n");
        let data = serde_json::from_str(&data)
            .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {data}"));
        events.push(SseEvent { id, event, data });
    }
    events
}

/// Reads an event stream to its end (within [`DEADLINE`]).
pub async fn read_sse(response: reqwest::Response) -> Vec<SseEvent> {
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(
        content_type.starts_with("text/event-stream"),
        "not an event stream: {content_type}"
    );
    let text = tokio::time::timeout(DEADLINE, response.text())
        .await
        .expect("the event stream ends in time")
        .expect("the event stream is read");
    parse_sse(&text)
}

/// Reads an event stream that does not end, one event at a time.
#[derive(Debug)]
pub struct SseReader {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl SseReader {
    /// Reads `response`, which must be an event stream.
    pub fn new(response: reqwest::Response) -> SseReader {
        assert_eq!(response.status(), 200, "not a stream: {response:?}");
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(
            content_type.starts_with("text/event-stream"),
            "not an event stream: {content_type}"
        );
        SseReader {
            response,
            buffer: Vec::new(),
        }
    }

    /// The next event (comments such as keep-alives are skipped); panics
    /// when none comes within [`DEADLINE`] or the stream ends.
    pub async fn next(&mut self) -> SseEvent {
        let start = Instant::now();
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let text = String::from_utf8(block).expect("events are UTF-8");
                if let Some(event) = parse_sse(&text).into_iter().next() {
                    return event;
                }
                continue;
            }
            let left = DEADLINE.saturating_sub(start.elapsed());
            let chunk = tokio::time::timeout(left, self.response.chunk())
                .await
                .expect("an event arrives in time")
                .expect("the event stream is read")
                .expect("the event stream stays open");
            self.buffer.extend_from_slice(&chunk);
        }
    }

    /// The next `n` events.
    pub async fn take(&mut self, n: usize) -> Vec<SseEvent> {
        let mut events = Vec::with_capacity(n);
        for _ in 0..n {
            events.push(self.next().await);
        }
        events
    }
}

/// A [`MemoryStore`] whose appends become visible (and durable) only after
/// a delay, in order: a journal writer that lags behind the event bus.
#[derive(Debug)]
pub struct DelayedStore {
    inner: Arc<MemoryStore>,
    writer: std::sync::Mutex<std::sync::mpsc::Sender<(AppendBatch, Durable)>>,
}

impl DelayedStore {
    /// Each batch is stored `delay` after it was appended.
    pub fn new(delay: Duration) -> DelayedStore {
        let inner = Arc::new(MemoryStore::new());
        let (tx, rx) = std::sync::mpsc::channel::<(AppendBatch, Durable)>();
        let store = Arc::clone(&inner);
        std::thread::spawn(move || {
            while let Ok((batch, done)) = rx.recv() {
                std::thread::sleep(delay);
                store.append(batch, done);
            }
        });
        DelayedStore {
            inner,
            writer: std::sync::Mutex::new(tx),
        }
    }
}

impl RunStore for DelayedStore {
    fn append(&self, batch: AppendBatch, done: Durable) {
        let writer = self.writer.lock().unwrap();
        if let Err(std::sync::mpsc::SendError((_, done))) = writer.send((batch, done)) {
            done(Err(StoreError::Closed));
        }
    }

    fn journal(&self, run: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        self.inner.journal(run)
    }

    fn summary(&self, run: &str) -> Result<Option<RunSummary>, StoreError> {
        self.inner.summary(run)
    }

    fn summaries(&self) -> Result<Vec<RunSummary>, StoreError> {
        self.inner.summaries()
    }
}
