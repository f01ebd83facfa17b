//! Bearer-token authentication for every endpoint but `GET /health` and
//! the web UI's static files (they hold no data).
//!
//! The event streams also take the token as `?token=`: a browser's
//! `EventSource` cannot send headers. A token in a URL can end up in logs
//! of proxies on the way, so the UI uses it only there.

use std::collections::HashMap;

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;

/// Lets the request through when no token is configured, when it is the
/// health check or a file of the web UI, or when it carries the right bearer
/// token (or, for an event stream, `?token=`); answers 401 otherwise.
pub(crate) async fn require_token(
    State(shared): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = shared.state.token.as_deref() else {
        return next.run(request).await;
    };
    let path = request.uri().path();
    let open = matches!(*request.method(), Method::GET | Method::HEAD)
        && (path == "/health" || super::ui::is_ui_path(path));
    let given = presented(request.headers()).map(str::to_owned).or_else(|| {
        is_event_stream(path)
            .then(|| query_token(request.uri()))
            .flatten()
    });
    if open || given.is_some_and(|given| same(&given, token)) {
        return next.run(request).await;
    }
    let mut response = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "missing or wrong bearer token: send \"Authorization: Bearer <token>\"",
    )
    .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

/// Whether `path` is one of the event streams, which take `?token=`.
fn is_event_stream(path: &str) -> bool {
    path == "/api/v1/events"
        || path
            .strip_prefix("/api/v1/runs/")
            .and_then(|rest| rest.strip_suffix("/events"))
            .is_some_and(|id| !id.is_empty() && !id.contains('/'))
}

/// The `token` query parameter, decoded.
fn query_token(uri: &axum::http::Uri) -> Option<String> {
    let Query(mut params) = Query::<HashMap<String, String>>::try_from_uri(uri).ok()?;
    params.remove("token")
}

/// The token of an `Authorization: Bearer <token>` header.
fn presented(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start())
}

/// Compares in time independent of where the strings differ (only the
/// length can be learnt from timing).
fn same(given: &str, token: &str) -> bool {
    given.as_bytes().ct_eq(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    #[test]
    fn reads_bearer_tokens() {
        assert_eq!(presented(&headers("Bearer abc")), Some("abc"));
        assert_eq!(presented(&headers("bearer  abc")), Some("abc"));
        assert_eq!(presented(&headers("Basic abc")), None);
        assert_eq!(presented(&headers("Bearer")), None);
        assert_eq!(presented(&HeaderMap::new()), None);
    }

    #[test]
    fn only_event_streams_take_a_query_token() {
        assert!(is_event_stream("/api/v1/events"));
        assert!(is_event_stream("/api/v1/runs/01J/events"));
        assert!(!is_event_stream("/api/v1/runs//events"));
        assert!(!is_event_stream("/api/v1/runs/a/b/events"));
        assert!(!is_event_stream("/api/v1/runs"));
        let uri: axum::http::Uri = "/api/v1/events?since=1-2&token=a%2Bb".parse().unwrap();
        assert_eq!(query_token(&uri).as_deref(), Some("a+b"));
        let uri: axum::http::Uri = "/api/v1/events".parse().unwrap();
        assert_eq!(query_token(&uri), None);
    }

    #[test]
    fn compares_whole_tokens() {
        assert!(same("secret", "secret"));
        assert!(!same("secre", "secret"));
        assert!(!same("secreT", "secret"));
        assert!(!same("", "secret"));
    }
}
