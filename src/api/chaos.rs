//! The nemesis's faults, a chaos-testing aid: `POST`, `GET` and `DELETE
//! /api/v1/chaos/faults`. A node whose config does not enable the nemesis
//! (`chaos: { nemesis: true }`) answers 404 to all three, saying so.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use crate::cluster::nemesis::{FaultRequest, Nemesis, NemesisError};

/// The node's nemesis, or 404 when its config does not enable it.
fn enabled(shared: &AppState) -> Result<&Nemesis, ApiError> {
    let nemesis = shared.state.cluster.nemesis();
    if nemesis.enabled() {
        Ok(nemesis)
    } else {
        Err(ApiError::not_found(NemesisError::Disabled.to_string()))
    }
}

/// The faults in force, as every answer shows them.
fn current(nemesis: &Nemesis) -> Response {
    Json(json!({ "faults": nemesis.faults() })).into_response()
}

/// `GET /api/v1/chaos/faults`: the faults in force.
pub(crate) async fn list(State(shared): State<AppState>) -> Result<Response, ApiError> {
    Ok(current(enabled(&shared)?))
}

/// `POST /api/v1/chaos/faults`: drop or delay this node's traffic to the
/// given peers, for `for_ms` or until healed.
pub(crate) async fn inject(
    State(shared): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let nemesis = enabled(&shared)?;
    let body = body.map_err(|e| ApiError::new(e.status(), e.body_text().to_lowercase()))?;
    let request: FaultRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body is not a fault request ({e}); expected {{\"peers\": [\"node-b\"], \"action\": \"drop\" or \"delay\", \"delay_ms\": 200, \"for_ms\": 5000}}"
        ))
    })?;
    nemesis.inject(&request).map_err(|e| match e {
        NemesisError::Disabled => ApiError::not_found(e.to_string()),
        NemesisError::Invalid(why) => ApiError::bad_request(why),
    })?;
    tracing::warn!(?request, "Nemesis fault injected.");
    Ok(current(nemesis))
}

/// `DELETE /api/v1/chaos/faults`: heals every fault.
pub(crate) async fn heal(State(shared): State<AppState>) -> Result<Response, ApiError> {
    let nemesis = enabled(&shared)?;
    let healed = nemesis.heal();
    if healed > 0 {
        tracing::warn!(healed, "Nemesis faults healed.");
    }
    Ok((
        StatusCode::OK,
        Json(json!({ "healed": healed, "faults": nemesis.faults() })),
    )
        .into_response())
}
