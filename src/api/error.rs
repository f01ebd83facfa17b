//! Error responses: a status and a JSON object with an `error` field.

use axum::Json;
use axum::extract::Path;
use axum::extract::rejection::PathRejection;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// An error answer: `{"error": message, ...extra}` with a status.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    body: Value,
    header: Option<(HeaderName, HeaderValue)>,
}

impl ApiError {
    /// `{"error": message}` with `status`.
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: json!({ "error": message.into() }),
            header: None,
        }
    }

    /// Adds a response header (`Retry-After` on 429).
    pub(crate) fn with_header(mut self, name: HeaderName, value: &'static str) -> ApiError {
        self.header = Some((name, HeaderValue::from_static(value)));
        self
    }

    /// Adds a field next to `error`.
    pub(crate) fn with(mut self, key: &str, value: impl Into<Value>) -> ApiError {
        if let Value::Object(map) = &mut self.body {
            map.insert(key.to_owned(), value.into());
        }
        self
    }

    /// 400: the request cannot be understood.
    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404: no such run (or thing).
    pub(crate) fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// 500: something on this node failed.
    pub(crate) fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// 404 for a run id nobody knows.
    pub(crate) fn unknown_run(id: &str) -> ApiError {
        ApiError::not_found(format!("run {id} not found")).with("run_id", id)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        if let Some((name, value)) = self.header {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> ApiError {
        ApiError::internal(e.to_string())
    }
}

/// The `{id}` of a run path, or a 400 (e.g. for a percent-encoded id that
/// is not UTF-8).
pub(crate) fn run_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(id)| id)
        .map_err(|e| ApiError::bad_request(e.body_text().to_lowercase()))
}

/// What every unrouted path answers.
pub(crate) async fn no_such_endpoint(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no such endpoint: {method} {}", uri.path()))
}

/// What a routed path answers to a method it does not serve.
pub(crate) async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} does not accept {method}", uri.path()),
    )
}
