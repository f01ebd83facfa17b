//! The HTTP client every command that talks to a node shares: [`Api`],
//! its errors ([`ClientError`]) and their exit codes.

use reqwest::StatusCode;
use serde_json::{Value as Json, json};

use super::{CONNECT_TIMEOUT, REQUEST_TIMEOUT};
use crate::cli::{EXIT_CONFIG, EXIT_FAILED, EXIT_TEMPFAIL};

/// What went wrong talking to the server, or in what was typed before
/// anything was sent.
#[derive(Debug)]
pub(crate) enum ClientError {
    /// What the user typed is wrong (a bad name, file or argument), found
    /// before anything was sent (exit 78).
    Usage(String),
    /// Already printed where it was found (a workflow's diagnostics); the
    /// exit code.
    Reported(u8),
    /// The server URL is not one.
    BadServer(String),
    /// No connection (refused, unknown host, timed out).
    Unreachable { server: String, reason: String },
    /// 401: no token, or the wrong one.
    Unauthorized { server: String, had_token: bool },
    /// 400 or 422: the request, the workflow or its inputs are invalid (the
    /// answer's body; exit 78).
    Invalid(Json),
    /// 404.
    NotFound(String),
    /// 409 or 413, or an upload cut short: the server refused what was
    /// asked, and its message says why.
    Refused(String),
    /// 429: the node is at its bound (of pipeline invocations in flight);
    /// the same request may succeed later (exit 75).
    Busy {
        server: String,
        message: String,
        /// The `Retry-After` header, when given.
        retry_after: Option<String>,
    },
    /// Any other error answer.
    Status { status: StatusCode, message: String },
    /// An answer that is not what the API promises.
    Protocol(String),
}

impl ClientError {
    /// [`ClientError::Usage`] from any error's text.
    pub(crate) fn usage(e: impl std::fmt::Display) -> ClientError {
        ClientError::Usage(e.to_string())
    }

    /// Prints the error on stderr and returns the exit code.
    pub(crate) fn report(&self) -> u8 {
        match self {
            ClientError::Usage(message) => {
                eprintln!("error: {message}");
                EXIT_CONFIG
            }
            ClientError::Reported(code) => *code,
            ClientError::Busy {
                server,
                message,
                retry_after,
            } => {
                let when = retry_after
                    .as_deref()
                    .map_or_else(|| "later".to_owned(), |s| format!("in {s}s"));
                eprintln!("error: the server at {server} is busy: {message} (try again {when})");
                EXIT_TEMPFAIL
            }
            ClientError::Invalid(body) => {
                if let Some(text) = body.get("text").and_then(Json::as_str) {
                    eprint!("{text}");
                    if !text.ends_with('\n') {
                        eprintln!();
                    }
                } else if let Some(problems) = body.get("problems").and_then(Json::as_array) {
                    for p in problems {
                        eprintln!(
                            "error: {}",
                            p.as_str().map_or_else(|| p.to_string(), str::to_owned)
                        );
                    }
                } else {
                    eprintln!("error: {}", error_message(body));
                }
                EXIT_CONFIG
            }
            ClientError::BadServer(s) => {
                eprintln!(
                    "error: {s:?} is not a server URL; expected e.g. http://127.0.0.1:8080 (--server or SYMPHONY_SERVER)"
                );
                EXIT_FAILED
            }
            ClientError::Unreachable { server, reason } => {
                eprintln!(
                    "error: cannot reach the server at {server}: {reason} (is `symphony node` running there? set --server or SYMPHONY_SERVER)"
                );
                EXIT_FAILED
            }
            ClientError::Unauthorized { server, had_token } => {
                if *had_token {
                    eprintln!(
                        "error: the server at {server} refused the API token (check --token or SYMPHONY_TOKEN)"
                    );
                } else {
                    eprintln!(
                        "error: the server at {server} requires an API token; give it with --token or SYMPHONY_TOKEN"
                    );
                }
                EXIT_FAILED
            }
            ClientError::NotFound(message)
            | ClientError::Refused(message)
            | ClientError::Protocol(message) => {
                eprintln!("error: {message}");
                EXIT_FAILED
            }
            ClientError::Status { status, message } => {
                eprintln!("error: the server answered {status}: {message}");
                EXIT_FAILED
            }
        }
    }
}

pub(super) fn error_message(body: &Json) -> String {
    body.get("error")
        .and_then(Json::as_str)
        .map_or_else(|| body.to_string(), str::to_owned)
}

/// A connection to one node's API.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    /// `http(s)://host:port`, without a trailing slash.
    pub(crate) base: String,
    pub(super) token: Option<String>,
    http: reqwest::Client,
}

impl Api {
    /// A client of the node at `server` (`http://` is assumed when no scheme
    /// is given), sending `token` as the bearer token when it is not blank.
    ///
    /// # Errors
    /// [`ClientError::BadServer`] when `server` is not an http(s) URL.
    pub(crate) fn new(server: &str, token: Option<&str>) -> Result<Api, ClientError> {
        let server = server.trim().trim_end_matches('/');
        let base = if server.contains("://") {
            server.to_owned()
        } else {
            format!("http://{server}")
        };
        let url = reqwest::Url::parse(&base).map_err(|_| ClientError::BadServer(server.into()))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(ClientError::BadServer(server.into()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| ClientError::Protocol(format!("cannot start an HTTP client: {e}")))?;
        Ok(Api {
            base,
            token: token
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
            http,
        })
    }

    /// A request for `path` (from `/api/…`) with the token, without a time
    /// limit (the helpers below set one).
    pub(crate) fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// `GET path`; see [`Api::send`].
    pub(crate) async fn get(&self, path: &str) -> Result<Json, ClientError> {
        let request = self
            .request(reqwest::Method::GET, path)
            .timeout(REQUEST_TIMEOUT);
        self.send(request).await
    }

    /// `POST path` with a JSON body; see [`Api::send`].
    pub(crate) async fn post(&self, path: &str, body: &Json) -> Result<Json, ClientError> {
        let request = self
            .request(reqwest::Method::POST, path)
            .timeout(REQUEST_TIMEOUT)
            .json(body);
        self.send(request).await
    }

    /// `PUT path` with a JSON body; see [`Api::send`].
    pub(crate) async fn put(&self, path: &str, body: &Json) -> Result<Json, ClientError> {
        let request = self
            .request(reqwest::Method::PUT, path)
            .timeout(REQUEST_TIMEOUT)
            .json(body);
        self.send(request).await
    }

    /// `DELETE path`; see [`Api::send`].
    pub(crate) async fn delete(&self, path: &str) -> Result<Json, ClientError> {
        let request = self
            .request(reqwest::Method::DELETE, path)
            .timeout(REQUEST_TIMEOUT);
        self.send(request).await
    }

    /// `GET /api/v1/runs/{id}`.
    pub(crate) async fn run(&self, run_id: &str) -> Result<Json, ClientError> {
        self.get(&format!("/api/v1/runs/{}", segment(run_id))).await
    }

    /// Opens a run's event stream after event `after`; `None` when the run
    /// is over and there is nothing more to send (204).
    pub(crate) async fn events(
        &self,
        run_id: &str,
        after: Option<u64>,
    ) -> Result<Option<reqwest::Response>, ClientError> {
        let mut request = self
            .request(
                reqwest::Method::GET,
                &format!("/api/v1/runs/{}/events", segment(run_id)),
            )
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(seq) = after {
            request = request.header("Last-Event-ID", seq.to_string());
        }
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        if response.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        if response.status().is_success() {
            return Ok(Some(response));
        }
        Err(self.error_answer(response).await)
    }

    /// Sends `request`; see [`Api::answer`].
    ///
    /// # Errors
    /// No connection, or an error answer.
    pub(crate) async fn send(&self, request: reqwest::RequestBuilder) -> Result<Json, ClientError> {
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        self.answer(response).await
    }

    /// The JSON of a success answer (`null` for an empty one, such as a
    /// 204), else the error it is.
    ///
    /// # Errors
    /// An error answer, or a body that is not JSON.
    pub(crate) async fn answer(&self, response: reqwest::Response) -> Result<Json, ClientError> {
        if !response.status().is_success() {
            return Err(self.error_answer(response).await);
        }
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| self.unreachable(&e))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Json::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            ClientError::Protocol(format!(
                "the server at {} answered {status} with a body that is not JSON ({e})",
                self.base
            ))
        })
    }

    /// An answer as the type the API promises.
    ///
    /// # Errors
    /// [`ClientError::Protocol`] when it is not one.
    pub(crate) fn parse<T: serde::de::DeserializeOwned>(
        &self,
        answer: Json,
    ) -> Result<T, ClientError> {
        serde_json::from_value(answer.clone()).map_err(|e| {
            ClientError::Protocol(format!(
                "the server at {} answered with an unexpected document ({e}): {answer}",
                self.base
            ))
        })
    }

    pub(crate) async fn error_answer(&self, response: reqwest::Response) -> ClientError {
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body: Json = match response.bytes().await {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| json!({ "error": String::from_utf8_lossy(&bytes).trim() })),
            Err(e) => json!({ "error": e.to_string() }),
        };
        match status {
            StatusCode::UNAUTHORIZED => ClientError::Unauthorized {
                server: self.base.clone(),
                had_token: self.token.is_some(),
            },
            StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => {
                ClientError::Invalid(body)
            }
            StatusCode::NOT_FOUND => ClientError::NotFound(error_message(&body)),
            StatusCode::CONFLICT | StatusCode::PAYLOAD_TOO_LARGE => {
                ClientError::Refused(error_message(&body))
            }
            StatusCode::TOO_MANY_REQUESTS => ClientError::Busy {
                server: self.base.clone(),
                message: error_message(&body),
                retry_after,
            },
            _ => ClientError::Status {
                status,
                message: error_message(&body),
            },
        }
    }

    /// The error of a request that got no answer.
    pub(crate) fn unreachable(&self, e: &reqwest::Error) -> ClientError {
        ClientError::Unreachable {
            server: self.base.clone(),
            reason: root_cause(e),
        }
    }
}

/// The innermost cause of an error, which says what actually happened
/// ("connection refused"), in lower case.
pub(crate) fn root_cause(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let text = cause.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    text.to_lowercase()
}

/// A run id (or any name) as one URL path segment.
pub(crate) fn segment(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}
