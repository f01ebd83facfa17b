//! Pipelines: register `durability: none` workflows by name, invoke them at
//! request speed.
//!
//! `POST /api/v1/pipelines/{name}/invoke` takes the inputs as a JSON object
//! and answers the pipeline's outputs as a JSON object. Tensors in the
//! outputs are nested lists of numbers by default, or, with
//! `?tensors=base64`, `{"$tensor": {"dtype", "shape", "data"}}` objects
//! with the data base64 little-endian (the form inputs may use too).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use super::runs::{invalid_workflow, read_body, submitted};
use crate::serving::{InvokeError, Pipeline, pipelines::RegisterError};
use crate::value::{DType, Map, Tensor, Value};

/// Seconds a client told `429` should wait.
const RETRY_AFTER_SECONDS: &str = "1";

/// `GET /api/v1/pipelines`.
pub(crate) async fn list(State(shared): State<AppState>) -> Response {
    let list: Vec<_> = shared.state.pipelines.list().iter().map(describe).collect();
    Json(list).into_response()
}

/// `GET /api/v1/pipelines/{name}`.
pub(crate) async fn show(
    State(shared): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let pipeline = shared
        .state
        .pipelines
        .get(&name)
        .ok_or_else(|| invoke_error(InvokeError::Unknown(name)))?;
    Ok(Json(describe(&pipeline)).into_response())
}

/// `POST /api/v1/pipelines`: the same body as `POST /api/v1/runs`, without
/// inputs; registers the workflow under its `name`.
pub(crate) async fn register(
    State(shared): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (_, sources) = submitted(body, shared.state.max_body_bytes)?;
    let (pipelines, executors) = (
        shared.state.pipelines.clone(),
        shared.state.executors.clone(),
    );
    let registered = tokio::task::spawn_blocking(move || pipelines.register(&sources, &executors))
        .await
        .map_err(|e| ApiError::internal(format!("compiling the pipeline failed: {e}")))?;
    let pipeline = registered.map_err(|e| match e {
        RegisterError::Invalid(d) => invalid_workflow(&d),
        other => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, other.to_string()),
    })?;
    Ok((StatusCode::CREATED, Json(describe(&pipeline))).into_response())
}

/// `DELETE /api/v1/pipelines/{name}`.
pub(crate) async fn remove(
    State(shared): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    if shared.state.pipelines.remove(&name) {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(invoke_error(InvokeError::Unknown(name)))
    }
}

/// How tensors in an invocation's outputs are written.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct InvokeQuery {
    #[serde(default)]
    tensors: TensorForm,
}

#[derive(Debug, Default, Deserialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum TensorForm {
    #[default]
    Lists,
    Base64,
}

/// `POST /api/v1/pipelines/{name}/invoke`: inputs in, outputs out.
pub(crate) async fn invoke(
    State(shared): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<InvokeQuery>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = read_body(body, shared.state.max_body_bytes)?;
    let inputs: Map = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("the inputs must be a JSON object: {e}")))?
    };
    let outputs = shared
        .state
        .pipelines
        .invoke(&shared.state.engine, &name, inputs)
        .await
        .map_err(invoke_error)?;
    let json = match query.tensors {
        TensorForm::Base64 => serde_json::to_value(&*outputs).unwrap_or_default(),
        TensorForm::Lists => with_lists(&outputs),
    };
    Ok(Json(json).into_response())
}

fn invoke_error(e: InvokeError) -> ApiError {
    match &e {
        InvokeError::Unknown(_) => ApiError::not_found(e.to_string()),
        InvokeError::Overloaded(_) => ApiError::new(StatusCode::TOO_MANY_REQUESTS, e.to_string())
            .with_header(header::RETRY_AFTER, RETRY_AFTER_SECONDS),
        InvokeError::Inputs(problems) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid inputs")
                .with("problems", problems.clone())
        }
        InvokeError::BadRequest(_) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
        }
        InvokeError::Failed(_) | InvokeError::Start(_) => ApiError::internal(e.to_string()),
    }
}

fn describe(pipeline: &Arc<Pipeline>) -> serde_json::Value {
    let wf = &pipeline.workflow;
    json!({
        "name": pipeline.name,
        "description": wf.description,
        "inputs": wf.inputs.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
        "tasks": wf.tasks.iter().map(|t| json!({"id": t.id, "uses": t.uses})).collect::<Vec<_>>(),
        "outputs": wf.outputs.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>(),
        "invoke": format!("/api/v1/pipelines/{}/invoke", pipeline.name),
    })
}

/// `value` as JSON with every tensor as nested lists of numbers.
pub(crate) fn with_lists(value: &Value) -> serde_json::Value {
    match value {
        Value::Tensor(t) => tensor_lists(t).unwrap_or_else(|| value.to_json()),
        Value::List(items) => items.iter().map(with_lists).collect(),
        Value::Map(map) => map
            .iter()
            .map(|(k, v)| (k.clone(), with_lists(v)))
            .collect(),
        other => other.to_json(),
    }
}

/// A tensor's elements nested by its shape; `None` when its data does not
/// fill its shape.
fn tensor_lists(t: &Tensor) -> Option<serde_json::Value> {
    let size = t.dtype.size();
    if t.data.len() != t.shape.iter().product::<usize>() * size {
        return None;
    }
    let element = |c: &[u8]| -> serde_json::Value {
        match t.dtype {
            DType::F32 => json!(f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            DType::F64 => json!(f64::from_le_bytes(c.try_into().unwrap_or([0; 8]))),
            DType::I32 => json!(i32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            DType::I64 => json!(i64::from_le_bytes(c.try_into().unwrap_or([0; 8]))),
            DType::U8 => json!(c[0]),
            DType::Bool => json!(c[0] != 0),
        }
    };
    let flat: Vec<serde_json::Value> = t.data.chunks_exact(size).map(element).collect();
    Some(nest(&flat, &t.shape))
}

fn nest(flat: &[serde_json::Value], shape: &[usize]) -> serde_json::Value {
    match shape {
        [] => flat.first().cloned().unwrap_or(serde_json::Value::Null),
        [_] => serde_json::Value::Array(flat.to_vec()),
        [outer, inner @ ..] => {
            let step = inner.iter().product::<usize>();
            serde_json::Value::Array(
                (0..*outer)
                    .map(|i| nest(&flat[i * step..(i + 1) * step], inner))
                    .collect(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_become_nested_lists_by_their_shape() {
        let t = Tensor {
            dtype: DType::I64,
            shape: vec![2, 3],
            data: (0..6i64).flat_map(|i| i.to_le_bytes()).collect(),
        };
        let mut map = Map::new();
        map.insert("t".into(), Value::Tensor(t));
        map.insert("s".into(), Value::from("x"));
        assert_eq!(
            with_lists(&Value::Map(map)),
            json!({"s": "x", "t": [[0, 1, 2], [3, 4, 5]]})
        );
        let scalar = Tensor {
            dtype: DType::Bool,
            shape: vec![],
            data: vec![1],
        };
        assert_eq!(with_lists(&Value::Tensor(scalar)), json!(true));
    }
}
