//! The `http` executor: one HTTP request per attempt, JSON in and out.
//!
//! `with` fields:
//!
//! - `url` (required): an `http` or `https` URL.
//! - `method`: any HTTP method, case-insensitive; `POST` when `body` is
//!   given, else `GET`.
//! - `headers`: a map of header values (strings, numbers or booleans).
//! - `body`: any value, sent as JSON (`Content-Type: application/json`
//!   unless `headers` says otherwise). A `body: null` sends `null`.
//!
//! Every request carries `Idempotency-Key` (the attempt's idempotency key,
//! the same for every attempt of a task) and `X-Symphony-Attempt` (the
//! attempt number, a fencing token); `headers` cannot override them.
//!
//! Output: the response body, parsed as JSON when it is JSON, else text
//! (bytes if not UTF-8; null when empty). Failures: a 5xx or 429 status is
//! a retryable error of class `http`; any other status that is not a
//! success is a non-retryable `http` error; refused or broken connections
//! are retryable `connect` errors and an expired
//! [`ExecutorConfig::http_timeout`] a retryable `timeout` error.

use std::error::Error as _;

use async_trait::async_trait;
use reqwest::header::{ACCEPT, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Client, Method, Response, StatusCode, Url};

use super::fields::{fields, missing, scalar_text, wrong};
use super::{AttemptContext, Executor, ExecutorConfig, TaskError, output_value};
use crate::value::{Map, Value};

/// Header carrying [`AttemptContext::idempotency_key`].
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// Header carrying [`AttemptContext::attempt`].
pub const ATTEMPT_HEADER: &str = "x-symphony-attempt";

/// How much of an error response's body its failure message quotes.
const ERROR_BODY_QUOTE: usize = 512;

/// The `http` executor (see the module documentation for its fields). It
/// holds one connection-pooling client, shared by its clones.
#[derive(Debug, Clone)]
pub struct Http {
    client: Client,
    max_body: usize,
}

impl Http {
    /// An `http` executor with `config`'s timeout
    /// ([`ExecutorConfig::http_timeout`]) and response size limit
    /// ([`ExecutorConfig::max_output_bytes`]).
    ///
    /// # Errors
    /// When the HTTP client cannot be built (its TLS backend failed to
    /// initialise).
    pub fn new(config: &ExecutorConfig) -> Result<Http, reqwest::Error> {
        let client = Client::builder()
            .timeout(config.http_timeout)
            .user_agent(concat!("symphony/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Http {
            client,
            max_body: config.max_output_bytes,
        })
    }
}

/// A parsed `with`.
#[derive(Debug)]
struct Spec<'a> {
    url: Url,
    method: Method,
    headers: HeaderMap,
    body: Option<&'a Value>,
}

fn parse(input: &Value) -> Result<Spec<'_>, TaskError> {
    let with = fields("http", input, &["url", "method", "headers", "body"])?;
    const URL: &str = "an http or https URL";
    let url = match with.get("url") {
        None => return Err(missing("url", URL)),
        Some(Value::String(text)) => Url::parse(text).map_err(|e| {
            TaskError::bad_input(format!("field \"url\": \"{text}\" is not a URL: {e}"))
        })?,
        Some(other) => return Err(wrong("url", URL, other)),
    };
    if !matches!(url.scheme(), "http" | "https") {
        return Err(TaskError::bad_input(format!(
            "field \"url\": scheme \"{}\" is not supported (use http or https)",
            url.scheme()
        )));
    }
    let body = with.get("body");
    let method = match with.get("method") {
        None if body.is_some() => Method::POST,
        None => Method::GET,
        Some(Value::String(name)) => Method::from_bytes(name.to_ascii_uppercase().as_bytes())
            .map_err(|_| {
                TaskError::bad_input(format!(
                    "field \"method\": \"{name}\" is not an HTTP method"
                ))
            })?,
        Some(other) => return Err(wrong("method", "an HTTP method such as \"POST\"", other)),
    };
    let headers = match with.get("headers") {
        None => HeaderMap::new(),
        Some(Value::Map(map)) => header_map(map)?,
        Some(other) => return Err(wrong("headers", "a map of strings", other)),
    };
    Ok(Spec {
        url,
        method,
        headers,
        body,
    })
}

fn header_map(map: &Map) -> Result<HeaderMap, TaskError> {
    let mut headers = HeaderMap::with_capacity(map.len());
    for (name, value) in map {
        let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            TaskError::bad_input(format!(
                "field \"headers\": \"{name}\" is not a valid header name"
            ))
        })?;
        let field = format!("headers.{name}");
        let text = scalar_text(value).ok_or_else(|| wrong(&field, "a string", value))?;
        let value = HeaderValue::from_str(&text).map_err(|_| {
            TaskError::bad_input(format!(
                "field \"{field}\": \"{text}\" is not a valid header value"
            ))
        })?;
        headers.insert(header, value);
    }
    Ok(headers)
}

#[async_trait]
impl Executor for Http {
    /// Sends the request and reads the response.
    ///
    /// Cancellation: dropping the future abandons the request; its
    /// connection is closed rather than returned to the pool.
    async fn execute(&self, ctx: &AttemptContext, input: Value) -> Result<Value, TaskError> {
        let spec = parse(&input)?;
        let mut headers = spec.headers;
        if !headers.contains_key(ACCEPT) {
            headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        }
        let key = HeaderValue::from_str(&ctx.idempotency_key).map_err(|_| {
            TaskError::fatal(
                "http",
                format!(
                    "idempotency key \"{}\" cannot be sent as a header",
                    ctx.idempotency_key
                ),
            )
        })?;
        headers.insert(HeaderName::from_static(IDEMPOTENCY_KEY_HEADER), key);
        headers.insert(HeaderName::from_static(ATTEMPT_HEADER), ctx.attempt.into());

        let what = format!("{} {}", spec.method, spec.url);
        let mut request = self.client.request(spec.method, spec.url).headers(headers);
        if let Some(body) = spec.body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| transport_error(&what, &e))?;
        let status = response.status();
        if status.is_success() {
            let (body, complete) = read_body(response, self.max_body)
                .await
                .map_err(|e| transport_error(&what, &e))?;
            if !complete {
                return Err(TaskError::fatal(
                    "output_too_large",
                    format!(
                        "{what}: response body exceeded the limit of {} bytes",
                        self.max_body
                    ),
                ));
            }
            return Ok(output_value(body));
        }
        // The body of a failure is only quoted, and only if it arrives.
        let quote = match read_body(response, ERROR_BODY_QUOTE).await {
            Ok((body, _)) => String::from_utf8_lossy(&body).trim().to_owned(),
            Err(_) => String::new(),
        };
        Err(status_error(&what, status, &quote))
    }
}

/// Reads up to `cap` bytes of the body; `false` when there was more.
async fn read_body(mut response: Response, cap: usize) -> Result<(Vec<u8>, bool), reqwest::Error> {
    if response
        .content_length()
        .is_some_and(|len| len > u64::try_from(cap).unwrap_or(u64::MAX))
    {
        return Ok((Vec::new(), false));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > cap {
            body.extend_from_slice(&chunk[..cap - body.len()]);
            return Ok((body, false));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, true))
}

fn status_error(what: &str, status: StatusCode, quote: &str) -> TaskError {
    let message = if quote.is_empty() {
        format!("{what} returned {status}")
    } else {
        format!("{what} returned {status}: {quote}")
    };
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        TaskError::retryable("http", message)
    } else {
        TaskError::fatal("http", message)
    }
}

fn transport_error(what: &str, e: &reqwest::Error) -> TaskError {
    // reqwest's own text names the URL; the cause is in the source chain.
    let mut cause = String::new();
    let mut source = e.source();
    while let Some(inner) = source {
        cause.push_str(": ");
        cause.push_str(&inner.to_string());
        source = inner.source();
    }
    if e.is_timeout() {
        TaskError::retryable("timeout", format!("{what} timed out{cause}"))
    } else if e.is_redirect() {
        TaskError::fatal("http", format!("{what}: redirect failed{cause}"))
    } else if e.is_builder() {
        TaskError::bad_input(format!("{what}: cannot build the request{cause}"))
    } else if e.is_connect() {
        TaskError::retryable("connect", format!("{what}: cannot connect{cause}"))
    } else {
        // The connection broke after it was made (reset, closed early).
        TaskError::retryable("connect", format!("{what}: connection failed{cause}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, Value)]) -> Value {
        Value::Map(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        )
    }

    #[test]
    fn method_defaults_to_post_with_a_body() {
        let get = map(&[("url", "http://x/".into())]);
        assert_eq!(parse(&get).unwrap().method, Method::GET);
        let post = map(&[("url", "http://x/".into()), ("body", Value::Null)]);
        assert_eq!(parse(&post).unwrap().method, Method::POST);
        let put = map(&[("url", "http://x/".into()), ("method", "put".into())]);
        assert_eq!(parse(&put).unwrap().method, Method::PUT);
    }

    #[test]
    fn bad_fields_are_named() {
        let cases: [(Value, &str); 6] = [
            (Value::Null, "missing field \"url\""),
            (map(&[("url", 3.into())]), "field \"url\": expected an http"),
            (
                map(&[("url", "nope".into())]),
                "field \"url\": \"nope\" is not a URL",
            ),
            (
                map(&[("url", "ftp://x/".into())]),
                "field \"url\": scheme \"ftp\" is not supported",
            ),
            (
                map(&[("url", "http://x/".into()), ("method", "GE T".into())]),
                "field \"method\": \"GE T\" is not an HTTP method",
            ),
            (
                map(&[
                    ("url", "http://x/".into()),
                    ("headers", map(&[("x-a", Value::List(vec![]))])),
                ]),
                "field \"headers.x-a\": expected a string, got list",
            ),
        ];
        for (input, start) in cases {
            let err = parse(&input).unwrap_err();
            assert_eq!(err.class, "input");
            assert!(err.message.starts_with(start), "{}", err.message);
        }
    }

    #[test]
    fn statuses_are_classified() {
        let e = status_error("GET u", StatusCode::BAD_GATEWAY, "");
        assert!(e.retryable && e.class == "http");
        assert_eq!(e.message, "GET u returned 502 Bad Gateway");
        assert!(status_error("GET u", StatusCode::TOO_MANY_REQUESTS, "").retryable);
        assert!(!status_error("GET u", StatusCode::NOT_FOUND, "").retryable);
        assert!(!status_error("GET u", StatusCode::NOT_MODIFIED, "").retryable);
    }
}
