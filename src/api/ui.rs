//! The web UI: static HTML, CSS and JavaScript compiled into the binary and
//! served at `/` with no build step. The files hold no data, so they are
//! served without a token; the page asks for the token and sends it with
//! every API call (`Authorization: Bearer`, or `?token=` on the event
//! streams, which `EventSource` opens without headers).
//!
//! This module only serves files: everything the UI shows comes from the
//! public API.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/style.css");

/// Where the script and the style sheet are served.
pub(crate) const SCRIPT_PATH: &str = "/ui/app.js";
/// See [`SCRIPT_PATH`].
pub(crate) const STYLE_PATH: &str = "/ui/style.css";

/// Whether `path` is one of the UI's files (served without a token).
pub(crate) fn is_ui_path(path: &str) -> bool {
    matches!(path, "/" | SCRIPT_PATH | STYLE_PATH)
}

/// `GET /`: the page.
pub(crate) async fn index() -> Response {
    file(INDEX, "text/html; charset=utf-8")
}

/// `GET /ui/app.js`.
pub(crate) async fn script() -> Response {
    file(SCRIPT, "text/javascript; charset=utf-8")
}

/// `GET /ui/style.css`.
pub(crate) async fn style() -> Response {
    file(STYLE, "text/css; charset=utf-8")
}

fn file(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The files change with the binary: a browser checks again each time
    // rather than keeping a page of another version.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}
