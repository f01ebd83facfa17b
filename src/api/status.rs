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

/// `GET /api/v1/cluster`: the membership as this node sees it, and the
/// replicated log's state when the node takes part in one.
pub(crate) async fn cluster(State(shared): State<AppState>) -> Response {
    let mut view = serde_json::to_value(shared.state.cluster.snapshot()).unwrap_or_default();
    if let (Some(raft), Some(obj)) = (&shared.state.raft, view.as_object_mut()) {
        let mut status = serde_json::to_value(raft.replication.status()).unwrap_or_default();
        if let Some(s) = status.as_object_mut() {
            s.insert(
                "stalled".into(),
                match raft.journal.stalled() {
                    Some((for_, why)) => {
                        json!({ "for_ms": for_.as_millis() as u64, "reason": why })
                    }
                    None => serde_json::Value::Null,
                },
            );
        }
        obj.insert("raft".into(), status);
    }
    Json(view).into_response()
}
