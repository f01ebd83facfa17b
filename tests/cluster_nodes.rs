//! Real `symphony node` processes on loopback forming one cluster: joining
//! through seeds, work spreading, a killed or frozen worker, a lost seed, a
//! wrong cookie, garbage on the cluster port.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod support;
use support::node::free_port;

/// One `symphony node` process; killed when dropped.
struct Node {
    name: String,
    cluster: u16,
    http: u16,
    child: Child,
    log: PathBuf,
}

impl Node {
    fn start(dir: &Path, name: &str, seeds: &[&Node], cookie: &str) -> Node {
        Self::start_with(
            dir,
            name,
            &seeds.iter().map(|n| n.addr()).collect::<Vec<_>>(),
            cookie,
            &[],
        )
    }

    fn start_with(dir: &Path, name: &str, seeds: &[String], cookie: &str, extra: &[&str]) -> Node {
        let (cluster, http) = (free_port(), free_port());
        let log = dir.join(format!("{name}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_symphony"));
        cmd.args(["node", "--name", name])
            .args(["--listen", &format!("127.0.0.1:{cluster}")])
            .args(["--http", &format!("127.0.0.1:{http}")])
            .args([
                "--data-dir",
                dir.join(format!("{name}-data")).to_str().unwrap(),
            ])
            .args(["--cookie", cookie, "--slots", "8"])
            .args([
                "--heartbeat-interval",
                "100ms",
                "--suspect-after",
                "500ms",
                "--down-after",
                "1s",
            ])
            .args(extra)
            .env("SYMPHONY_LOG", "info")
            .env_remove("SYMPHONY_DATA_DIR")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for seed in seeds {
            cmd.args(["--seed", seed]);
        }
        let child = cmd.spawn().unwrap();
        Node {
            name: name.into(),
            cluster,
            http,
            child,
            log,
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.cluster)
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    fn get(&self, path: &str) -> Option<Value> {
        let out = Command::new("curl")
            .args(["-s", "-f", "-m", "2", &self.url(path)])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    fn metrics(&self) -> String {
        let out = Command::new("curl")
            .args(["-s", "-m", "2", &self.url("/metrics")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn submit(&self, workflow: &str) -> String {
        let body = json!({ "workflow": workflow }).to_string();
        let out = Command::new("curl")
            .args([
                "-s",
                "-f",
                "-m",
                "10",
                "-H",
                "content-type: application/json",
                "-d",
                &body,
            ])
            .arg(self.url("/api/v1/runs"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "submit failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        doc["run_id"].as_str().unwrap().to_owned()
    }

    /// State of `peer` as this node sees it.
    fn sees(&self, peer: &str) -> Option<String> {
        let view = self.get("/api/v1/cluster")?;
        view["members"]
            .as_array()?
            .iter()
            .find(|m| m["name"] == peer)
            .and_then(|m| m["state"].as_str().map(str::to_owned))
    }

    /// Whether `peer` reports attempts running, as this node sees it.
    fn sees_busy(&self, peer: &str) -> bool {
        self.get("/api/v1/cluster").is_some_and(|v| {
            v["members"].as_array().is_some_and(|ms| {
                ms.iter()
                    .any(|m| m["name"] == peer && m["load"].as_u64() > Some(0))
            })
        })
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    start.elapsed()
}

fn all_up(nodes: &[&Node]) -> bool {
    let up = nodes.iter().all(|n| {
        nodes
            .iter()
            .all(|m| n.sees(&m.name).as_deref() == Some("up"))
    });
    if !up && std::env::var("CLUSTER_DEBUG").is_ok() {
        for n in nodes {
            eprintln!("{}: {:?}", n.name, n.get("/api/v1/cluster"));
        }
    }
    up
}

fn run_status(node: &Node, run: &str) -> Option<String> {
    node.get(&format!("/api/v1/runs/{run}"))
        .and_then(|r| r["status"].as_str().map(str::to_owned))
}

/// The journal of a finished run, from its event stream.
fn events(node: &Node, run: &str) -> Vec<Value> {
    let out = Command::new("curl")
        .args([
            "-s",
            "-N",
            "-m",
            "10",
            &node.url(&format!("/api/v1/runs/{run}/events")),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| serde_json::from_str(d.trim()).unwrap())
        .collect()
}

fn nodes_used(events: &[Value]) -> std::collections::BTreeSet<String> {
    events
        .iter()
        .filter(|e| e["type"] == "task_scheduled")
        .map(|e| e["node"].as_str().unwrap().to_owned())
        .collect()
}

fn fan_out(n: usize, sleep: &str) -> String {
    let items: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    format!(
        "version: 1\nname: spread\ndurability: local\ntasks:\n  work:\n    uses: builtin/sleep\n    for_each: [{}]\n    with: {{ duration: {sleep} }}\n",
        items.join(", ")
    )
}

#[test]
fn three_nodes_join_through_seeds_and_share_a_workflow() {
    let dir = tempfile::tempdir().unwrap();
    let n1 = Node::start(dir.path(), "n1", &[], "secret");
    let n2 = Node::start(dir.path(), "n2", &[&n1], "secret");
    // n3 knows only n2, yet meets n1.
    let n3 = Node::start(dir.path(), "n3", &[&n2], "secret");
    wait_for("three nodes up everywhere", Duration::from_secs(20), || {
        all_up(&[&n1, &n2, &n3])
    });
    for n in [&n1, &n2, &n3] {
        assert_eq!(n.get("/health").unwrap()["status"], "ready");
    }

    let run = n2.submit(&fan_out(30, "100ms"));
    wait_for("the run to succeed", Duration::from_secs(30), || {
        run_status(&n2, &run).as_deref() == Some("succeeded")
    });
    let used = nodes_used(&events(&n2, &run));
    assert!(used.len() >= 2, "30 tasks ran on {used:?}");
}

#[test]
fn a_killed_worker_costs_a_retry_and_its_attempts_run_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let n1 = Node::start(dir.path(), "n1", &[], "secret");
    let n2 = Node::start(dir.path(), "n2", &[&n1], "secret");
    let mut n3 = Node::start(dir.path(), "n3", &[&n1], "secret");
    wait_for("three nodes up", Duration::from_secs(20), || {
        all_up(&[&n1, &n2, &n3])
    });

    let run = n1.submit(&fan_out(30, "1500ms"));
    wait_for("work on n3", Duration::from_secs(10), || n1.sees_busy("n3"));
    n3.child.kill().unwrap(); // SIGKILL
    n3.child.wait().unwrap();
    wait_for("n3 down", Duration::from_secs(5), || {
        n1.sees("n3").as_deref() == Some("down")
    });
    wait_for("the run to succeed", Duration::from_secs(40), || {
        run_status(&n1, &run).as_deref() == Some("succeeded")
    });
    let events = events(&n1, &run);
    let lost = events
        .iter()
        .filter(|e| e["type"] == "task_failed" && e["error"]["class"] == "node_lost")
        .count();
    assert!(lost > 0, "attempts on n3 failed with node_lost");
    let info = n1.get(&format!("/api/v1/runs/{run}")).unwrap();
    assert_eq!(info["status"], "succeeded");
}

#[test]
fn a_frozen_worker_is_declared_down_in_bound_and_its_late_results_are_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let n1 = Node::start(dir.path(), "n1", &[], "secret");
    let n2 = Node::start(dir.path(), "n2", &[&n1], "secret");
    let n3 = Node::start(dir.path(), "n3", &[&n1], "secret");
    wait_for("three nodes up", Duration::from_secs(20), || {
        all_up(&[&n1, &n2, &n3])
    });

    let run = n1.submit(&fan_out(24, "1500ms"));
    wait_for("work on n3", Duration::from_secs(10), || n1.sees_busy("n3"));
    n3.signal("-STOP");
    // Configured: suspect after 500 ms, down after 1 s; one tick of slack.
    let took = wait_for("n3 down", Duration::from_secs(5), || {
        n1.sees("n3").as_deref() == Some("down")
    });
    assert!(
        took <= Duration::from_millis(1600),
        "declared down after {took:?}"
    );
    wait_for("the run to succeed", Duration::from_secs(40), || {
        run_status(&n1, &run).as_deref() == Some("succeeded")
    });
    n3.signal("-CONT");
    wait_for("n3 back up", Duration::from_secs(20), || {
        n1.sees("n3").as_deref() == Some("up")
    });
    // Its attempts finish after all and report home: fenced, never applied.
    wait_for(
        "stale results dropped and counted",
        Duration::from_secs(20),
        || {
            n1.metrics()
                .lines()
                .find(|l| l.starts_with("symphony_results_fenced_total"))
                .and_then(|l| l.split_whitespace().last()?.parse::<f64>().ok())
                .is_some_and(|v| v > 0.0)
        },
    );
    assert_eq!(run_status(&n1, &run).as_deref(), Some("succeeded"));
}

#[test]
fn a_new_node_joins_through_another_seed_when_the_first_is_dead() {
    let dir = tempfile::tempdir().unwrap();
    let mut n1 = Node::start(dir.path(), "n1", &[], "secret");
    let n2 = Node::start(dir.path(), "n2", &[&n1], "secret");
    wait_for("two nodes up", Duration::from_secs(20), || {
        all_up(&[&n1, &n2])
    });
    let seeds = [n1.addr(), n2.addr()];
    n1.child.kill().unwrap();
    n1.child.wait().unwrap();
    let n4 = Node::start_with(dir.path(), "n4", &seeds, "secret", &[]);
    wait_for("n4 joined through n2", Duration::from_secs(20), || {
        n4.get("/health").is_some() && all_up(&[&n2, &n4])
    });
}

#[test]
fn a_wrong_cookie_is_refused_and_never_a_member() {
    let dir = tempfile::tempdir().unwrap();
    let n1 = Node::start(dir.path(), "n1", &[], "secret");
    let bad = Node::start(dir.path(), "intruder", &[&n1], "not-the-secret");
    wait_for(
        "both sides to log the refusal",
        Duration::from_secs(15),
        || {
            n1.log_text().contains("before the peer authenticated")
                && bad.log_text().contains("before the peer authenticated")
        },
    );
    assert_eq!(n1.sees("intruder"), None);
    let health = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &bad.url("/health"),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&health.stdout),
        "503",
        "the intruder never joins"
    );
}

#[test]
fn garbage_on_the_cluster_port_does_not_hurt_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let n1 = Node::start(dir.path(), "n1", &[], "secret");
    let n2 = Node::start(dir.path(), "n2", &[&n1], "secret");
    wait_for("two nodes up", Duration::from_secs(20), || {
        all_up(&[&n1, &n2])
    });
    for junk in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[0xff; 4096][..],
        &[0, 0, 0, 8, 1, 2, 3][..],
    ] {
        let mut s = std::net::TcpStream::connect(n1.addr()).unwrap();
        let _ = s.write_all(junk);
    }
    let run = n1.submit(&fan_out(6, "10ms"));
    wait_for("a run still succeeds", Duration::from_secs(20), || {
        run_status(&n1, &run).as_deref() == Some("succeeded")
    });
    assert!(all_up(&[&n1, &n2]), "the real peer stayed up");
}

#[test]
fn a_100_mb_value_moves_between_nodes_as_a_blob() {
    let dir = tempfile::tempdir().unwrap();
    let n1 = Node::start(dir.path(), "n1", &[], "secret");
    let n2 = Node::start_with(
        dir.path(),
        "n2",
        &[n1.addr()],
        "secret",
        &["--label", "role=maker"],
    );
    let n3 = Node::start_with(
        dir.path(),
        "n3",
        &[n1.addr()],
        "secret",
        &["--label", "role=taker"],
    );
    wait_for("three nodes up", Duration::from_secs(20), || {
        all_up(&[&n1, &n2, &n3])
    });
    let workflow = r#"
version: 1
name: big
durability: none
tasks:
  make:
    uses: builtin/bytes
    with: { size: 100000000 }
    placement: { labels: { role: maker } }
  take:
    needs: [make]
    uses: builtin/echo
    with: { size: "${{ length(tasks.make.outputs) }}", data: "${{ tasks.make.outputs }}" }
    placement: { labels: { role: taker } }
outputs:
  made: ${{ length(tasks.make.outputs) }}
  taken: ${{ length(tasks.take.outputs.data) }}
"#;
    let run = n1.submit(workflow);
    wait_for("the run to succeed", Duration::from_secs(120), || {
        run_status(&n1, &run).as_deref() == Some("succeeded")
    });
    let info = n1.get(&format!("/api/v1/runs/{run}")).unwrap();
    assert_eq!(info["outputs"]["made"], 100_000_000);
    assert_eq!(info["outputs"]["taken"], 100_000_000);
    // Both hops went through blobs: n2 → n1 (make's output) and n1 → n3
    // (take's input). Take's output is its input (echo), which n1 already
    // holds under the same hash: content addressing saves the third trip.
    let counter = |n: &Node, direction: &str| {
        n.metrics()
            .lines()
            .find(|l| l.starts_with("symphony_blob_bytes_total") && l.contains(direction))
            .and_then(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(counter(&n2, "sent") >= 1e8, "n2 served make's output");
    assert!(counter(&n1, "received") >= 1e8, "n1 fetched make's output");
    assert!(counter(&n1, "sent") >= 1e8, "n1 served take's input");
    assert!(counter(&n3, "received") >= 1e8, "n3 fetched take's input");
}
