//! The HTTP API every node serves: submit runs, read their status and event
//! streams, cancel them, look at the cluster, scrape metrics, manage the
//! model registry; and the web UI at `/`.
//!
//! JSON everywhere; every error is an object with an `error` field. When
//! [`ApiState::token`] is set, every endpoint but `GET /health` and the UI's
//! files needs `Authorization: Bearer <token>` (the event streams also take
//! `?token=`, for browsers). The endpoints are described in
//! `docs/api.md` and served as an OpenAPI 3 document at
//! `GET /api/v1/openapi.json`.
//!
//! This module owns the HTTP surface only: it talks to the [`Engine`]
//! through its public handle and to the membership through [`ClusterView`],
//! never to the store or to actors directly. Deciding whether a token is
//! needed is the node's job ([`requires_token`] helps).

mod auth;
mod chaos;
mod deployments;
mod error;
mod events;
mod feed;
mod models;
mod openapi;
mod pipelines;
mod prometheus;
mod runs;
mod status;
mod ui;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::routing::{self, MethodRouter};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;

pub use self::models::DEFAULT_MAX_MODEL_BYTES;
pub use self::prometheus::install_metrics;
use crate::cluster::ClusterView;
use crate::engine::Engine;
use crate::executor::Executors;
use crate::registry::Registry;
use crate::serving::{PipelineConfig, Pipelines};

/// Largest request body accepted by default: 8 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// What the HTTP API serves from.
#[derive(Clone)]
pub struct ApiState {
    /// The node's engine: runs are submitted to it and read from it.
    pub engine: Engine,
    /// The executors workflows are compiled against (`uses` is checked).
    pub executors: Executors,
    /// The membership view (`/api/v1/cluster`, `/health`).
    pub cluster: ClusterView,
    /// Bearer token every endpoint but `GET /health` requires; `None` means
    /// no authentication (only sensible on loopback, see [`requires_token`]).
    pub token: Option<String>,
    /// Largest request body accepted, in bytes; larger ones get 413.
    /// Default [`DEFAULT_MAX_BODY_BYTES`] (8 MiB).
    pub max_body_bytes: usize,
    /// Where `/metrics` renders from; `None` makes `/metrics` answer 404.
    /// See [`install_metrics`].
    pub metrics: Option<PrometheusHandle>,
    /// The model registry (`/api/v1/models`). Default: an empty one in
    /// memory.
    pub registry: Registry,
    /// Largest model artifact accepted, in bytes; larger ones get 413.
    /// Default [`DEFAULT_MAX_MODEL_BYTES`] (512 MiB).
    pub max_model_bytes: usize,
    /// The node's pipelines (`/api/v1/pipelines`). Default: none, with the
    /// default bound on invocations in flight.
    pub pipelines: Pipelines,
    /// The node's model host: where deployments are placed from and
    /// requests per version are counted (`/api/v1/models/{name}/deployment`).
    /// Default `None`: deployments are still recorded and shown, without
    /// counts.
    pub models: Option<crate::serving::ModelHost>,
    /// The node's part in the replicated log (`/api/v1/cluster` shows its
    /// state). Default `None`: the node takes no part.
    pub raft: Option<RaftPart>,
}

/// The replicated log as the API shows it.
#[derive(Debug, Clone)]
pub struct RaftPart {
    /// The node's Raft.
    pub replication: std::sync::Arc<crate::raft::Replication>,
    /// The replicated journals (why commits stall, if they do).
    pub journal: std::sync::Arc<crate::raft::journal::ReplicatedStore>,
}

impl ApiState {
    /// A state with no token, the default body limits, no metrics and an
    /// empty registry in memory.
    pub fn new(engine: Engine, executors: Executors, cluster: ClusterView) -> ApiState {
        let registry = Registry::in_memory(&cluster.snapshot().node);
        ApiState {
            engine,
            executors,
            cluster,
            token: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            metrics: None,
            registry,
            max_model_bytes: DEFAULT_MAX_MODEL_BYTES,
            pipelines: Pipelines::new(PipelineConfig::default()),
            models: None,
            raft: None,
        }
    }
}

impl fmt::Debug for ApiState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiState")
            .field("engine", &self.engine)
            .field("executors", &self.executors)
            .field("cluster", &self.cluster)
            // The token is a secret: show only whether there is one.
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("metrics", &self.metrics.is_some())
            .field("registry", &self.registry)
            .field("max_model_bytes", &self.max_model_bytes)
            .field("pipelines", &self.pipelines.list().len())
            .field("models", &self.models.is_some())
            .field("raft", &self.raft.is_some())
            .finish()
    }
}

/// Whether an API listening on `addr` must require a bearer token: anything
/// but a loopback address does.
pub fn requires_token(addr: &SocketAddr) -> bool {
    !addr.ip().is_loopback()
}

/// The API's routes over `state`, for embedding or for tests. Event streams
/// served by this router end only when their run ends or the client goes;
/// [`serve`] also ends them on shutdown.
pub fn router(state: ApiState) -> Router {
    build(Arc::new(Shared::new(state)))
}

/// Serves the API on `listener` until `shutdown` completes, then stops
/// accepting connections, ends open event streams and waits for the
/// requests in flight.
///
/// # Errors
/// When accepting connections fails for good.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let shared = Arc::new(Shared::new(state));
    let app = build(Arc::clone(&shared));
    let signal = async move {
        shutdown.await;
        // Event streams never end on their own while a run is going; without
        // this, graceful shutdown would wait for every one of them.
        shared.closing.send_replace(true);
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(signal)
        .await
}

/// Every endpoint the router serves, as `(method, path)` with axum's
/// `{param}` syntax, in the order they are routed. The OpenAPI document
/// lists exactly these.
pub fn endpoints() -> Vec<(&'static str, &'static str)> {
    routes().endpoints
}

/// What every handler reads.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) state: ApiState,
    /// Turns true when [`serve`] begins shutting down.
    pub(crate) closing: watch::Sender<bool>,
}

impl Shared {
    fn new(state: ApiState) -> Shared {
        Shared {
            state,
            closing: watch::Sender::new(false),
        }
    }
}

type AppState = Arc<Shared>;

/// The router under construction, with the list of what it routes, so the
/// OpenAPI document can be checked against the real routes.
struct Routes {
    router: Router<AppState>,
    endpoints: Vec<(&'static str, &'static str)>,
}

impl Routes {
    fn add(
        mut self,
        method: &'static str,
        path: &'static str,
        route: MethodRouter<AppState>,
    ) -> Self {
        self.router = self.router.route(path, route);
        self.endpoints.push((method, path));
        self
    }

    fn get<H: Handler<T, AppState>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.add("GET", path, routing::get(handler))
    }

    fn post<H: Handler<T, AppState>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.add("POST", path, routing::post(handler))
    }
}

fn routes() -> Routes {
    Routes {
        router: Router::new(),
        endpoints: Vec::new(),
    }
    .post("/api/v1/runs", runs::submit)
    .get("/api/v1/runs", runs::list)
    .get("/api/v1/runs/{id}", runs::get)
    .post("/api/v1/runs/{id}/cancel", runs::cancel)
    .get("/api/v1/runs/{id}/events", events::stream)
    .get("/api/v1/events", feed::stream)
    .get("/api/v1/cluster", status::cluster)
    .post("/api/v1/chaos/faults", chaos::inject)
    .get("/api/v1/chaos/faults", chaos::list)
    .add(
        "DELETE",
        "/api/v1/chaos/faults",
        routing::delete(chaos::heal),
    )
    .get("/api/v1/models", models::list)
    .get("/api/v1/models/{name}", models::show)
    .post("/api/v1/models/{name}/versions", models::register)
    .get("/api/v1/models/{name}/versions/{version}", models::version)
    .add(
        "DELETE",
        "/api/v1/models/{name}/versions/{version}",
        routing::delete(models::delete),
    )
    .get(
        "/api/v1/models/{name}/versions/{version}/artifact",
        models::artifact,
    )
    .add(
        "PUT",
        "/api/v1/models/{name}/aliases/{alias}",
        routing::put(models::set_alias),
    )
    .add(
        "PUT",
        "/api/v1/models/{name}/deployment",
        routing::put(deployments::deploy),
    )
    .get("/api/v1/models/{name}/deployment", deployments::show)
    .add(
        "DELETE",
        "/api/v1/models/{name}/deployment",
        routing::delete(deployments::undeploy),
    )
    .post("/api/v1/models/{name}/rollback", deployments::rollback)
    .get("/api/v1/pipelines", pipelines::list)
    .post("/api/v1/pipelines", pipelines::register)
    .get("/api/v1/pipelines/{name}", pipelines::show)
    .add(
        "DELETE",
        "/api/v1/pipelines/{name}",
        routing::delete(pipelines::remove),
    )
    .post("/api/v1/pipelines/{name}/invoke", pipelines::invoke)
    .get("/api/v1/openapi.json", openapi::document)
    .get("/health", status::health)
    .get("/metrics", prometheus::render)
}

fn build(shared: AppState) -> Router {
    let limit = shared.state.max_body_bytes;
    routes()
        .router
        // The web UI's files: not API endpoints, so not in the OpenAPI document.
        .route("/", routing::get(ui::index))
        .route(ui::SCRIPT_PATH, routing::get(ui::script))
        .route(ui::STYLE_PATH, routing::get(ui::style))
        .fallback(error::no_such_endpoint)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            auth::require_token,
        ))
        .with_state(shared)
}
