//! The node's own state: health and the cluster view.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;

/// `GET /health`: 200 once the node has joined its cluster, 503 before.
/// Never needs a token, so load balancers and orchestrators can probe it.
pub(crate) async fn health(State(shared): State<AppState>) -> Response {
    let view = shared.state.cluster.snapshot();
    if view.joined {
        (
            StatusCode::OK,
            Json(json!({ "status": "ready", "node": view.node })),
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "joining", "node": view.node })),
        )
            .into_response()
    }
}

/// `GET /api/v1/cluster`: the membership as this node sees it.
pub(crate) async fn cluster(State(shared): State<AppState>) -> Response {
    Json(shared.state.cluster.snapshot()).into_response()
}
