//! Bearer-token authentication for every endpoint but `GET /health`.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;

/// Lets the request through when no token is configured, when it is the
/// health check, or when it carries the right bearer token; answers 401
/// otherwise.
pub(crate) async fn require_token(
    State(shared): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = shared.state.token.as_deref() else {
        return next.run(request).await;
    };
    let open = request.uri().path() == "/health"
        && matches!(*request.method(), Method::GET | Method::HEAD);
    if open || presented(request.headers()).is_some_and(|given| same(given, token)) {
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
    fn compares_whole_tokens() {
        assert!(same("secret", "secret"));
        assert!(!same("secre", "secret"));
        assert!(!same("secreT", "secret"));
        assert!(!same("", "secret"));
    }
}
