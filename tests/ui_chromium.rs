//! The web UI end to end: a real `symphony node`, Debian's `chromium`
//! driven headless through `chromedriver` (WebDriver, with fantoccini).
//! Submits a run, watches its graph turn green on the run page, checks the
//! runs list and the cluster page, and saves the screenshots the README
//! shows (`docs/screenshots/`).
//!
//! Without `chromium` or `chromedriver` on the PATH the test says it was
//! skipped and passes: `.ci/run` installs both.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use support::node::{Node, free_port};
use support::repo;

/// How long the browser may take to show what the test waits for.
const DEADLINE: Duration = Duration::from_secs(30);

/// A small pipeline: a flaky download retried once, two branches, a join.
const PIPELINE: &str = r#"
version: 1
name: review-pipeline
durability: local
defaults:
  retry: { max_attempts: 3, backoff: exponential, initial: 100ms, max: 1s }
tasks:
  fetch:
    uses: builtin/fail
    with: { times: 1, class: transient }
  clean:
    uses: builtin/sleep
    needs: [fetch]
    with: { duration: 300ms }
  embed:
    uses: builtin/sleep
    needs: [fetch]
    with: { duration: 500ms }
  score:
    uses: builtin/sum
    needs: [clean, embed]
    with: { values: [1, 2, 3] }
  report:
    uses: builtin/sleep
    needs: [score]
    with: { duration: 200ms }
outputs:
  score: ${{ tasks.score.outputs }}
"#;

/// A run that fails, so the runs list shows more than one status.
const BROKEN: &str = r#"
version: 1
name: nightly-import
durability: local
tasks:
  load:
    uses: builtin/fail
    with: { times: 5, class: upstream_down, retryable: false }
"#;

/// The first of `names` found on the PATH.
fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// `chromedriver`, killed when dropped.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts chromedriver on a free port and waits until it answers.
fn start_driver(binary: &PathBuf) -> (Driver, String) {
    let port = free_port();
    let child = Command::new(binary)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver(child);
    let url = format!("http://127.0.0.1:{port}");
    support::wait_until("chromedriver to listen", DEADLINE, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (driver, url)
}

async fn browser(driver: &str, chromium: &PathBuf) -> Client {
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", "--window-size=1280,860",
                "--force-device-scale-factor=1",
            ],
        },
    });
    let Value::Object(capabilities) = capabilities else {
        unreachable!("an object")
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(driver)
        .await
        .expect("a browser session starts")
}

/// Submits `workflow` to the node; the run id.
async fn submit(node: &Node, workflow: &str) -> String {
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/runs", node.url))
        .json(&json!({ "workflow": workflow }))
        .send()
        .await
        .expect("submission sent");
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.expect("JSON");
    body["run_id"].as_str().expect("run_id").to_owned()
}

/// Evaluates `script` in the page until it returns something other than
/// null or false; panics naming `what` after [`DEADLINE`].
async fn wait_in_page(client: &Client, what: &str, script: &str) -> Value {
    let start = Instant::now();
    loop {
        let value = client.execute(script, vec![]).await.expect("script runs");
        if !(value.is_null() || value == Value::Bool(false)) {
            return value;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out waiting for {what}; page text:\n{}",
            page_text(client).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn page_text(client: &Client) -> String {
    client
        .execute("return document.body.innerText", vec![])
        .await
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("a screenshot");
    let dir = repo().join("docs/screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    std::fs::write(dir.join(name), png).expect("screenshot written");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ui_shows_a_run_live_the_runs_and_the_cluster() {
    let chromium = find(&["chromium", "chromium-browser", "google-chrome"]);
    let chromedriver = find(&["chromedriver"]);
    let (Some(chromium), Some(chromedriver)) = (chromium, chromedriver) else {
        eprintln!(
            "SKIPPED ui_chromium: chromium and chromedriver are not installed \
             (apt-get install -y chromium chromium-driver)"
        );
        return;
    };
    let node = Node::healthy("ui-node", "labels:\n  zone: a\n  gpu: \"false\"");
    let (_driver, driver_url) = start_driver(&chromedriver);
    let client = browser(&driver_url, &chromium).await;

    let broken = submit(&node, BROKEN).await;
    let run = submit(&node, PIPELINE).await;
    client
        .goto(&format!("{}/#/runs/{run}", node.url))
        .await
        .expect("the run page opens");

    // Every task of the graph turns green as the run goes.
    let statuses = wait_in_page(
        &client,
        "every task of the graph to succeed",
        r#"const nodes = [...document.querySelectorAll('#dag g.node')];
           return nodes.length === 5 && nodes.every(n => n.dataset.status === "succeeded")
               ? nodes.map(n => n.dataset.task) : null;"#,
    )
    .await;
    assert_eq!(
        statuses,
        json!(["fetch", "clean", "embed", "score", "report"])
    );
    // The attempts table: six attempts (fetch failed once), on this node.
    let attempts = wait_in_page(
        &client,
        "the attempts table",
        r#"const rows = [...document.querySelectorAll('#attempts tbody tr')]
               .map(r => [...r.cells].map(c => c.innerText));
           return rows.length === 6 ? rows : null;"#,
    )
    .await;
    let rows = attempts.as_array().unwrap();
    assert!(
        rows.iter().all(|r| r[2] == "ui-node"),
        "attempts run on the node: {attempts}"
    );
    assert!(
        rows.iter().any(|r| r[0] == "fetch"
            && r[1] == "1"
            && r[5].as_str().unwrap().contains("transient")),
        "the failed first attempt shows its error: {attempts}"
    );
    screenshot(&client, "run.png").await;

    // The runs list: both runs, counts by status, filters.
    client
        .goto(&format!("{}/#/runs", node.url))
        .await
        .expect("the runs page opens");
    wait_in_page(
        &client,
        "both runs in the list",
        &format!(
            r#"return document.querySelector('tr[data-run="{run}"] .badge.succeeded')
                && document.querySelector('tr[data-run="{broken}"] .badge.failed');"#
        ),
    )
    .await;
    let counts = client
        .execute(
            r#"return Object.fromEntries([...document.querySelectorAll("[data-count]")]
                 .map(b => [b.dataset.count, Number(b.querySelector("b").innerText)]));"#,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(counts["all"], 2, "{counts}");
    assert_eq!(counts["succeeded"], 1, "{counts}");
    assert_eq!(counts["failed"], 1, "{counts}");
    screenshot(&client, "runs.png").await;
    client
        .find(Locator::Css(r#"[data-count="failed"]"#))
        .await
        .expect("the failed count")
        .click()
        .await
        .expect("a click");
    let shown = client
        .execute(
            r#"return [...document.querySelectorAll('#runs tbody tr[data-run]')].map(r => r.dataset.run);"#,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(shown, json!([broken]), "the status filter applies");

    // The cluster page lists the node with its labels.
    client
        .goto(&format!("{}/#/cluster", node.url))
        .await
        .expect("the cluster page opens");
    let member = wait_in_page(
        &client,
        "the node among the members",
        r#"const row = document.querySelector('tr[data-member="ui-node"]');
           return row ? row.innerText : null;"#,
    )
    .await;
    let member = member.as_str().unwrap();
    assert!(member.contains("up"), "{member}");
    assert!(member.contains("zone=a"), "{member}");
    screenshot(&client, "cluster.png").await;

    client.close().await.expect("the browser closes");
}
