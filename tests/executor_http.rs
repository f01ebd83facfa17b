//! The `http` executor against a real axum server on 127.0.0.1.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::routing::{any, get};
use serde_json::json;
use symphony::executor::{AttemptContext, Executor, ExecutorConfig, Http, TaskError};
use symphony::value::Value;

fn ctx() -> AttemptContext {
    AttemptContext {
        run_id: "run-9".into(),
        task_id: "notify".into(),
        item: Some(3),
        attempt: 2,
        idempotency_key: "run-9/notify/3".into(),
        uses: "http".into(),
    }
}

fn map(pairs: &[(&str, Value)]) -> Value {
    Value::Map(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    )
}

fn header(headers: &HeaderMap, name: &str) -> serde_json::Value {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map_or(serde_json::Value::Null, |v| json!(v))
}

/// Answers with what it received: method, the headers the tests look at,
/// and the body (as JSON when it is JSON).
async fn inspect(method: Method, headers: HeaderMap, body: Bytes) -> axum::Json<serde_json::Value> {
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    axum::Json(json!({
        "method": method.as_str(),
        "idempotency_key": header(&headers, "idempotency-key"),
        "attempt": header(&headers, "x-symphony-attempt"),
        "content_type": header(&headers, "content-type"),
        "trace": header(&headers, "x-trace"),
        "body": body,
    }))
}

async fn status(Path(code): Path<u16>) -> (StatusCode, String) {
    let status = StatusCode::from_u16(code).unwrap();
    (status, format!("status {code} on purpose"))
}

async fn serve() -> SocketAddr {
    let app = Router::new()
        .route("/inspect", any(inspect))
        .route("/status/{code}", any(status))
        .route("/text", get(|| async { "plain text, not json" }))
        .route("/empty", get(|| async { StatusCode::NO_CONTENT }))
        .route("/big", get(|| async { "x".repeat(100 * 1024) }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn http() -> Http {
    Http::new(&ExecutorConfig::default()).unwrap()
}

async fn call(http: &Http, input: Value) -> Result<Value, TaskError> {
    http.execute(&ctx(), input).await
}

#[tokio::test]
async fn json_round_trip_with_attempt_headers() {
    let addr = serve().await;
    let body = map(&[
        ("text", "great product".into()),
        ("scores", Value::List(vec![0.5.into(), 1.into()])),
    ]);
    let input = map(&[
        ("url", format!("http://{addr}/inspect").into()),
        ("body", body.clone()),
        ("headers", map(&[("X-Trace", "abc".into())])),
    ]);
    let out = call(&http(), input).await.unwrap();
    assert_eq!(out.get("method"), Some(&Value::from("POST")));
    assert_eq!(out.get("body"), Some(&body));
    assert_eq!(
        out.get("idempotency_key"),
        Some(&Value::from("run-9/notify/3"))
    );
    assert_eq!(out.get("attempt"), Some(&Value::from("2")));
    assert_eq!(
        out.get("content_type"),
        Some(&Value::from("application/json"))
    );
    assert_eq!(out.get("trace"), Some(&Value::from("abc")));
}

#[tokio::test]
async fn get_without_body_and_headers_cannot_forge_the_key() {
    let addr = serve().await;
    let input = map(&[
        ("url", format!("http://{addr}/inspect").into()),
        ("headers", map(&[("Idempotency-Key", "forged".into())])),
    ]);
    let out = call(&http(), input).await.unwrap();
    assert_eq!(out.get("method"), Some(&Value::from("GET")));
    assert_eq!(out.get("body"), Some(&Value::Null));
    assert_eq!(
        out.get("idempotency_key"),
        Some(&Value::from("run-9/notify/3"))
    );
}

#[tokio::test]
async fn explicit_method_is_used() {
    let addr = serve().await;
    let input = map(&[
        ("url", format!("http://{addr}/inspect").into()),
        ("method", "put".into()),
        ("body", 7.into()),
    ]);
    let out = call(&http(), input).await.unwrap();
    assert_eq!(out.get("method"), Some(&Value::from("PUT")));
    assert_eq!(out.get("body"), Some(&Value::Int(7)));
}

#[tokio::test]
async fn non_json_and_empty_bodies() {
    let addr = serve().await;
    let http = http();
    let text = map(&[("url", format!("http://{addr}/text").into())]);
    assert_eq!(
        call(&http, text).await,
        Ok(Value::from("plain text, not json"))
    );
    let empty = map(&[("url", format!("http://{addr}/empty").into())]);
    assert_eq!(call(&http, empty).await, Ok(Value::Null));
}

async fn status_error(code: u16) -> TaskError {
    let addr = serve().await;
    let input = map(&[("url", format!("http://{addr}/status/{code}").into())]);
    call(&http(), input).await.unwrap_err()
}

#[tokio::test]
async fn server_error_is_retryable() {
    let err = status_error(500).await;
    assert_eq!((err.class.as_str(), err.retryable), ("http", true));
    assert!(
        err.message
            .contains("returned 500 Internal Server Error: status 500 on purpose"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn not_found_is_not_retryable() {
    let err = status_error(404).await;
    assert_eq!((err.class.as_str(), err.retryable), ("http", false));
    assert!(err.message.contains("404"), "{}", err.message);
}

#[tokio::test]
async fn too_many_requests_is_retryable() {
    let err = status_error(429).await;
    assert_eq!((err.class.as_str(), err.retryable), ("http", true));
    assert!(err.message.contains("429"), "{}", err.message);
}

#[tokio::test]
async fn connection_refused_is_retryable() {
    // A port that was just free and has no listener.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let input = map(&[("url", format!("http://127.0.0.1:{port}/").into())]);
    let err = call(&http(), input).await.unwrap_err();
    assert_eq!((err.class.as_str(), err.retryable), ("connect", true));
    assert!(err.message.contains("cannot connect"), "{}", err.message);
}

#[tokio::test]
async fn slow_server_times_out_retryably() {
    let addr = serve().await;
    let http = Http::new(&ExecutorConfig {
        http_timeout: Duration::from_millis(200),
        ..ExecutorConfig::default()
    })
    .unwrap();
    let input = map(&[("url", format!("http://{addr}/slow").into())]);
    let err = call(&http, input).await.unwrap_err();
    assert_eq!((err.class.as_str(), err.retryable), ("timeout", true));
}

#[tokio::test]
async fn oversized_response_is_refused() {
    let addr = serve().await;
    let http = Http::new(&ExecutorConfig {
        max_output_bytes: 1024,
        ..ExecutorConfig::default()
    })
    .unwrap();
    let input = map(&[("url", format!("http://{addr}/big").into())]);
    let err = call(&http, input).await.unwrap_err();
    assert_eq!(
        (err.class.as_str(), err.retryable),
        ("output_too_large", false)
    );
}

#[tokio::test]
async fn bad_url_is_bad_input() {
    let err = call(&http(), map(&[("url", "not a url".into())]))
        .await
        .unwrap_err();
    assert_eq!((err.class.as_str(), err.retryable), ("input", false));
    assert!(err.message.starts_with("field \"url\""), "{}", err.message);
}
