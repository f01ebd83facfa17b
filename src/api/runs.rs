//! Runs: submit, list, read, cancel.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tracing::info;

use super::AppState;
use super::error::{ApiError, run_id};
use crate::engine::{SubmitError, SubmittedSource};
use crate::executor::Executors;
use crate::store::RunStatus;
use crate::value::Map;
use crate::wdl::{self, Diagnostics, Sources, Workflow};

/// The main file's name when the request gives none.
const DEFAULT_NAME: &str = "workflow.yaml";

/// Why a cancel request names no reason of its own.
const CANCEL_REASON: &str = "cancelled through the HTTP API";

/// Body of `POST /api/v1/runs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SubmitRequest {
    /// The main workflow file's text.
    workflow: String,
    /// Run inputs; defaults fill the rest.
    #[serde(default)]
    inputs: Option<Map>,
    /// Files the workflow imports, by path relative to `name`.
    #[serde(default)]
    files: BTreeMap<String, String>,
    /// The main file's path, for diagnostics and for resolving imports.
    #[serde(default)]
    name: Option<String>,
}

/// `POST /api/v1/runs`: compiles the workflow, checks the inputs, starts
/// the run.
pub(crate) async fn submit(
    State(shared): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (request, sources) = submitted(body, shared.state.max_body_bytes)?;
    let given = request.inputs.unwrap_or_default();
    let executors = shared.state.executors.clone();
    // Compiling is CPU work proportional to the (up to max_body_bytes) text.
    let (workflow, inputs, sources) =
        tokio::task::spawn_blocking(move || prepare(&sources, &executors, &given))
            .await
            .map_err(|e| ApiError::internal(format!("compiling the workflow failed: {e}")))??;
    let name = workflow.name.clone();
    let handle = shared
        .state
        .engine
        .submit(
            Arc::new(workflow),
            SubmittedSource::from_sources(&sources),
            inputs,
        )
        .await
        .map_err(submit_error)?;
    let run_id = handle.id().to_owned();
    info!(run = %run_id, workflow = %name, "Run submitted through the HTTP API.");
    let location = format!("/api/v1/runs/{run_id}");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(json!({ "run_id": run_id, "status": RunStatus::Running })),
    )
        .into_response())
}

/// The body, or 413 beyond `limit` bytes (the other rejections as axum
/// words them).
pub(super) fn read_body(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body is larger than the limit of {limit} bytes"),
            )
            .with("limit_bytes", limit)
        } else {
            ApiError::new(rejection.status(), rejection.body_text().to_lowercase())
        }
    })
}

/// A workflow request body (`POST /api/v1/runs`, `POST /api/v1/pipelines`)
/// read within `limit` bytes, parsed, and its files gathered.
pub(super) fn submitted(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<(SubmitRequest, Sources), ApiError> {
    let body = read_body(body, limit)?;
    let request: SubmitRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?;
    let sources = sources(&request)?;
    Ok((request, sources))
}

/// The request's files, the main one last so it is the one compiled.
fn sources(request: &SubmitRequest) -> Result<Sources, ApiError> {
    let name = request.name.as_deref().unwrap_or(DEFAULT_NAME);
    if name.trim().is_empty() {
        return Err(ApiError::bad_request("\"name\" must not be empty"));
    }
    let mut sources = Sources::from_files(name, request.files.clone());
    if sources.files().any(|(path, _)| path == sources.main()) {
        return Err(ApiError::bad_request(format!(
            "\"files\" must not hold the main file \"{name}\"; its text goes in \"workflow\""
        )));
    }
    sources.insert(name, request.workflow.clone());
    Ok(sources)
}

/// Compiles and checks inputs; the errors are the 422 answers.
fn prepare(
    sources: &Sources,
    executors: &Executors,
    given: &Map,
) -> Result<(Workflow, Map, Sources), ApiError> {
    let workflow = wdl::compile(sources, executors).map_err(|d| invalid_workflow(&d))?;
    let inputs = wdl::check_inputs(&workflow, given).map_err(|problems| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid inputs").with("problems", problems)
    })?;
    Ok((workflow, inputs, sources.clone()))
}

/// 422 with every diagnostic, structured and as `symphony validate` prints them.
pub(super) fn invalid_workflow(diagnostics: &Diagnostics) -> ApiError {
    let list: Vec<_> = diagnostics
        .iter()
        .map(|d| {
            json!({
                "file": d.file, "line": d.line, "col": d.col,
                "message": d.message, "hint": d.hint,
            })
        })
        .collect();
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid workflow")
        .with("diagnostics", list)
        .with("text", diagnostics.to_string())
}

fn submit_error(e: SubmitError) -> ApiError {
    match e {
        SubmitError::ReplicatedUnsupported => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
        }
        SubmitError::Spawn(_) | SubmitError::NotRecorded(_) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
        other => ApiError::internal(other.to_string()),
    }
}

/// Query of `GET /api/v1/runs`.
#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    /// Only runs in this status.
    status: Option<String>,
}

/// `GET /api/v1/runs`: summaries of the durable runs, oldest first.
pub(crate) async fn list(
    State(shared): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text().to_lowercase()))?;
    let wanted = match query.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(RunStatus::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "unknown status \"{s}\"; expected running, succeeded, failed or cancelled"
            ))
        })?),
    };
    let engine = shared.state.engine.clone();
    let mut runs = tokio::task::spawn_blocking(move || engine.runs())
        .await
        .map_err(|e| ApiError::internal(format!("listing runs failed: {e}")))??;
    if let Some(status) = wanted {
        runs.retain(|r| r.status == status);
    }
    Ok(Json(runs).into_response())
}

/// `GET /api/v1/runs/{id}`: what is known about a run.
pub(crate) async fn get(
    State(shared): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = run_id(id)?;
    match shared.state.engine.run_info(&id).await? {
        Some(info) => Ok(Json(info).into_response()),
        None => Err(ApiError::unknown_run(&id)),
    }
}

/// `POST /api/v1/runs/{id}/cancel`: asks a live run to cancel.
pub(crate) async fn cancel(
    State(shared): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = run_id(id)?;
    let engine = &shared.state.engine;
    if let Some(handle) = engine.live(&id).await {
        // The run's own state says whether it is over: its final event may
        // already be out on the event stream while the actor still waits
        // for the journal, before the outcome is announced.
        let running = match engine.run_info(&id).await? {
            Some(info) => !info.status.is_final(),
            None => handle.outcome().is_none(),
        };
        if running {
            handle.cancel(CANCEL_REASON);
            info!(run = %id, "Run cancellation asked through the HTTP API.");
            return Ok((
                StatusCode::ACCEPTED,
                Json(json!({ "run_id": id, "cancelling": true })),
            )
                .into_response());
        }
    }
    match engine.run_info(&id).await? {
        None => Err(ApiError::unknown_run(&id)),
        Some(info) if info.status.is_final() => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("run {id} has already finished ({})", info.status),
        )
        .with("run_id", id)
        .with("status", info.status.as_str())),
        Some(info) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "run {id} is not running on this node: it was interrupted and has not been resumed"
            ),
        )
        .with("run_id", id)
        .with("status", info.status.as_str())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: serde_json::Value) -> Result<SubmitRequest, serde_json::Error> {
        serde_json::from_value(json)
    }

    #[test]
    fn requests_are_strict() {
        assert!(request(json!({ "workflow": "x" })).is_ok());
        assert!(request(json!({ "workflow": "x", "input": {} })).is_err());
        assert!(request(json!({ "inputs": {} })).is_err());
        assert!(request(json!({ "workflow": "x", "inputs": [1] })).is_err());
    }

    #[test]
    fn the_main_file_is_the_workflow_text() {
        let r = request(json!({
            "workflow": "main", "name": "dir/wf.yaml", "files": { "dir/lib/a.yaml": "lib" },
        }))
        .unwrap();
        let s = sources(&r).unwrap();
        assert_eq!(s.main(), "dir/wf.yaml");
        assert_eq!(
            s.files().collect::<Vec<_>>(),
            vec![("dir/lib/a.yaml", "lib"), ("dir/wf.yaml", "main")]
        );
        let r = request(json!({ "workflow": "m", "files": { "./workflow.yaml": "x" } })).unwrap();
        assert!(sources(&r).is_err());
        let r = request(json!({ "workflow": "m", "name": " " })).unwrap();
        assert!(sources(&r).is_err());
    }

    #[test]
    fn statuses_parse() {
        assert_eq!(RunStatus::parse("running"), Some(RunStatus::Running));
        assert_eq!(RunStatus::parse("cancelled"), Some(RunStatus::Cancelled));
        assert_eq!(RunStatus::parse("done"), None);
    }
}
