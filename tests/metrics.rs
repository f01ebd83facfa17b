//! Metrics: every metric the code records is documented in
//! docs/metrics.md (and nothing documented is gone from the code), and a
//! real Prometheus (Debian's `prometheus` package) scraping a real node
//! finds the documented series after some work.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};
use support::node::{Node, free_port};
use support::repo;

/// The metric names `metrics::counter!/gauge!/histogram!` record in `src/`.
fn recorded() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut dirs = vec![repo().join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                names.extend(recorded_in(&std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    names
}

/// The names in one source file: the first string literal after each
/// `metrics::KIND!(`.
fn recorded_in(source: &str) -> Vec<String> {
    let mut names = Vec::new();
    for kind in ["counter!(", "gauge!(", "histogram!("] {
        let macro_call = format!("metrics::{kind}");
        for (at, _) in source.match_indices(&macro_call) {
            let rest = source[at + macro_call.len()..].trim_start();
            if let Some(literal) = rest.strip_prefix('"') {
                let name = &literal[..literal.find('"').unwrap()];
                names.push(name.to_owned());
            }
        }
    }
    names
}

/// The metric names docs/metrics.md documents: the first cell of each
/// table row, in backticks.
fn documented() -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo().join("docs/metrics.md")).unwrap();
    text.lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .filter(|name| name.starts_with("symphony_"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_recorded_metric_is_documented_and_every_documented_one_recorded() {
    let recorded = recorded();
    let documented = documented();
    assert!(
        recorded.len() >= 20,
        "the source scan found too few metrics: {recorded:?}"
    );
    let undocumented: Vec<_> = recorded.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "recorded but not in docs/metrics.md: {undocumented:?}"
    );
    let stale: Vec<_> = documented.difference(&recorded).collect();
    assert!(
        stale.is_empty(),
        "in docs/metrics.md but recorded nowhere: {stale:?}"
    );
}

#[test]
fn metric_names_follow_prometheus_conventions() {
    for name in recorded() {
        assert!(
            name.starts_with("symphony_")
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{name}: snake_case with the symphony_ prefix"
        );
        assert!(
            !name.ends_with("_count") && !name.ends_with("_sum") && !name.ends_with("_bucket"),
            "{name}: suffix reserved for histogram series"
        );
    }
}

/// A Prometheus server run for the test, killed when dropped.
struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts Debian's `prometheus` scraping `target` every second with
/// `token`; `None` when it is not installed.
fn prometheus(target: &str, token: &str) -> Option<Prometheus> {
    let binary = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())?;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: symphony\n    \
             authorization:\n      credentials: {token}\n    static_configs:\n      \
             - targets: [\"{target}\"]\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let child = Command::new(binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("prometheus starts");
    Some(Prometheus {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    })
}

/// Runs a PromQL instant query; the result vector, or `None` while
/// Prometheus is not answering yet.
async fn query(http: &reqwest::Client, prometheus: &str, promql: &str) -> Option<Vec<Value>> {
    let response = http
        .get(format!("{prometheus}/api/v1/query"))
        .query(&[("query", promql)])
        .send()
        .await
        .ok()?;
    let body: Value = response.json().await.ok()?;
    body["data"]["result"].as_array().cloned()
}

/// Polls `check` until it gives a value; panics naming `what` after 60 s
/// (Prometheus starts, then scrapes every second).
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = std::time::Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// The series name a histogram's or summary's part belongs to.
fn family(name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name)
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_the_documented_series_from_a_real_node() {
    let token = "metrics-test-token";
    let node = Node::healthy("m1", &format!("api_token: {token}"));
    let target = node.url.trim_start_matches("http://").to_owned();
    let Some(prometheus) = prometheus(&target, token) else {
        eprintln!(
            "SKIPPED: prometheus_scrapes_the_documented_series_from_a_real_node \
             (Debian's `prometheus` package is not installed; .ci/run installs it)"
        );
        return;
    };
    let http = reqwest::Client::new();
    let api = |method: reqwest::Method, path: &str| {
        http.request(method, format!("{}{path}", node.url))
            .bearer_auth(token)
    };

    // Work that records the documented series: a run of two tasks, a model,
    // a pipeline invocation.
    let workflow = "version: 1\nname: metered\ntasks:\n  a:\n    uses: builtin/echo\n    with: { x: 1 }\n  b:\n    uses: builtin/echo\n    needs: [a]\n    with: { x: 2 }\n";
    let submitted = api(reqwest::Method::POST, "/api/v1/runs")
        .json(&json!({ "workflow": workflow }))
        .send()
        .await
        .unwrap();
    assert_eq!(submitted.status().as_u16(), 201);
    let model = std::fs::read(repo().join("models/iris.onnx")).unwrap();
    let uploaded = api(reqwest::Method::POST, "/api/v1/models/iris/versions")
        .header("content-type", "application/octet-stream")
        .body(model)
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.status().as_u16(), 201);
    let alias = api(
        reqwest::Method::PUT,
        "/api/v1/models/iris/aliases/production",
    )
    .json(&json!({ "version": 1 }))
    .send()
    .await
    .unwrap();
    assert_eq!(alias.status().as_u16(), 200);
    let yaml = std::fs::read_to_string(repo().join("examples/pipelines/iris.yaml")).unwrap();
    let registered = api(reqwest::Method::POST, "/api/v1/pipelines")
        .json(&json!({ "workflow": yaml, "name": "iris.yaml" }))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status().as_u16(), 201);
    let invoked = api(reqwest::Method::POST, "/api/v1/pipelines/iris/invoke")
        .json(&json!({ "features": [5.1, 3.5, 1.4, 0.2] }))
        .send()
        .await
        .unwrap();
    assert_eq!(invoked.status().as_u16(), 200);

    // Series present once the work is done and scraped.
    let expected = [
        "symphony_runs_total",
        "symphony_attempts_total",
        "symphony_attempt_duration_seconds",
        "symphony_attempts_queued",
        "symphony_attempts_running",
        "symphony_journal_flush_seconds",
        "symphony_journal_batch_events",
        "symphony_peers",
        "symphony_model_load_seconds",
        "symphony_model_batch_size",
        "symphony_pipeline_invoke_seconds",
    ];
    let documented = documented();
    let scraped = wait_for("Prometheus to scrape the node's series", || {
        let http = http.clone();
        let url = prometheus.url.clone();
        async move {
            let up = query(&http, &url, "up{job=\"symphony\"} == 1").await?;
            if up.is_empty() {
                return None;
            }
            let series = query(&http, &url, "{__name__=~\"symphony_.+\"}").await?;
            let names: BTreeSet<String> = series
                .iter()
                .filter_map(|s| s["metric"]["__name__"].as_str())
                .map(|n| family(n).to_owned())
                .collect();
            expected.iter().all(|e| names.contains(*e)).then_some(names)
        }
    })
    .await;
    let undocumented: Vec<_> = scraped.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "scraped series not in docs/metrics.md: {undocumented:?}"
    );
    // The scrape really went through the token: without it, 401.
    let bare = reqwest::get(format!("{}/metrics", node.url)).await.unwrap();
    assert_eq!(bare.status().as_u16(), 401);
}
