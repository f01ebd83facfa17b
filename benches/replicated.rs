//! Replicated durability on loopback, release build: three voters, this
//! process is voter `a` (engine, cluster and Raft through the library) and
//! two child `symphony node` processes are `b` and `c`.
//!
//! ```text
//! cargo bench --bench replicated                 # every scenario
//! cargo bench --bench replicated -- journal      # one
//! ```
//!
//! - `journal`: 128 writers append to replicated journals through this
//!   node's [`ReplicatedStore`], each two events (~120 bytes each) at a
//!   time and the next when the last is committed, for 10 s: events
//!   committed per second and the commit latency of each append (p50, p99).
//! - `tasks`: `replicated` runs of `builtin/noop` items submitted here and
//!   placed over the three nodes: tasks per second, each one scheduled and
//!   finished through the replicated journal.
//! - `takeover`: a run owned by `b` is half-way through a chain when `b` is
//!   SIGKILLed; the time from the kill to the run's next task being
//!   scheduled by its new owner, as this node's copy of the journal shows
//!   it; 20 trials (`b` restarts on its data dir between them).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use symphony::cluster::{Cluster, ClusterConfig, ClusterView, HeartbeatTimes, PeerState};
use symphony::engine::{Engine, EngineConfig, JournalEvent, SubmittedSource};
use symphony::executor::{ExecutorConfig, Executors};
use symphony::raft::journal::ReplicatedStore;
use symphony::raft::{RaftConfig, Replication, failover};
use symphony::store::{AppendBatch, MemoryStore, RunStatus, RunStore, RunSummary};
use symphony::value::Map;
use symphony::wdl::{self, Sources};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn free_port() -> u16 {
    symphony::chaos::runner::free_port().expect("a free port")
}

fn report(metric: &str, value: f64, unit: &str, extra: &str) {
    println!(
        "{{\"system\":\"symphony\",\"metric\":\"{metric}\",\"value\":{value:.1},\"unit\":\"{unit}\"{extra}}}"
    );
}

/// A child node; killed when dropped.
struct Child_ {
    child: Child,
}

impl Drop for Child_ {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_child(dir: &Path, name: &str, ports: (u16, u16), seed: &str) -> Child_ {
    let child = Command::new(env!("CARGO_BIN_EXE_symphony"))
        .args(["node", "--name", name, "--cookie", "bench"])
        .args(["--listen", &format!("127.0.0.1:{}", ports.0)])
        .args(["--http", &format!("127.0.0.1:{}", ports.1)])
        .args(["--data-dir", dir.join(name).to_str().unwrap()])
        .args(["--seed", seed, "--raft-voters", "a,b,c"])
        .env("SYMPHONY_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("child node starts");
    Child_ { child }
}

struct Me {
    engine: Engine,
    executors: Executors,
    view: ClusterView,
    replication: Arc<Replication>,
    journal: Arc<ReplicatedStore>,
    /// This process's metrics, as summaries with exact quantiles.
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    _cluster: Cluster,
}

async fn start_me(dir: &Path, port: u16) -> Me {
    let executors = Executors::standard(&ExecutorConfig::default());
    let compile_with = executors.clone();
    let engine = Engine::start(
        EngineConfig {
            node: "a".into(),
            ..EngineConfig::default()
        },
        executors.clone(),
        Arc::new(MemoryStore::new()),
        Arc::new(move |src: &SubmittedSource| {
            wdl::compile(&src.to_sources(), &compile_with).map_err(|d| d.to_string())
        }),
    )
    .await
    .unwrap();
    let addr = format!("127.0.0.1:{port}");
    let cluster = Cluster::start(
        ClusterConfig {
            name: "a".into(),
            listen: addr.parse().unwrap(),
            advertise: "127.0.0.1".into(),
            addr,
            seeds: Vec::new(),
            cookie: "bench".into(),
            labels: BTreeMap::new(),
            slots: 256,
            times: HeartbeatTimes::default(),
            registry: None,
            corrupt_chunks: 0,
            nemesis: false,
        },
        engine.clone(),
    )
    .await
    .unwrap();
    let voters = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
    let replication =
        Replication::start(RaftConfig::new("a", voters), &dir.join("a-raft"), &cluster)
            .await
            .unwrap();
    let journal = Arc::new(ReplicatedStore::new(Arc::clone(&replication)));
    engine.attach_replicated(journal.clone());
    Me {
        engine,
        executors,
        view: cluster.view().clone(),
        replication,
        journal,
        metrics: metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .ok(),
        _cluster: cluster,
    }
}

async fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn all_up(view: &ClusterView) -> bool {
    let s = view.snapshot();
    s.members.len() == 3 && s.members.iter().all(|m| m.state == PeerState::Up)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

async fn journal(me: &Me, followers: &[(&str, u16)]) {
    // `JOURNAL_WRITERS` trades latency for throughput (default 128).
    let writers: usize = std::env::var("JOURNAL_WRITERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(128);
    const RUN_FOR: Duration = Duration::from_secs(10);
    let event = vec![7u8; 120];
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = Arc::clone(&me.journal);
        let event = event.clone();
        tasks.push(tokio::spawn(async move {
            let run = format!("bench-{}-{w}", ulid::Ulid::new());
            let mut latencies = Vec::new();
            let mut seq = 0;
            let mut last = false;
            while !last {
                last = started.elapsed() >= RUN_FOR;
                let (tx, rx) = tokio::sync::oneshot::channel();
                let t = Instant::now();
                store.append(
                    AppendBatch {
                        run: run.clone(),
                        first_seq: seq,
                        epoch: 1,
                        events: vec![event.clone(), event.clone()],
                        // The last append ends the run, so no node takes
                        // it for an orphan.
                        summary: last.then(|| RunSummary {
                            id: run.clone(),
                            workflow: "bench".into(),
                            status: RunStatus::Succeeded,
                            created_ms: 0,
                            updated_ms: 0,
                        }),
                    },
                    Box::new(move |r| {
                        let _ = tx.send(r);
                    }),
                );
                rx.await.unwrap().expect("committed");
                latencies.push(t.elapsed());
                seq += 2;
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    let events = all.len() as f64 * 2.0;
    let extra = format!(
        ",\"writers\":{writers},\"appends\":{},\"p50_ms\":{:.2},\"p99_ms\":{:.2}",
        all.len(),
        percentile(&all, 0.5),
        percentile(&all, 0.99)
    );
    report(
        "replicated_journal_events_per_s",
        events / elapsed,
        "events/s",
        &extra,
    );
    // Where the time went, on this node (the leader when it leads) and on
    // the followers (their buckets).
    if let Some(handle) = &me.metrics {
        for line in handle.render().lines() {
            if line.starts_with("symphony_raft_")
                && (line.contains("quantile=\"0.5\"") || line.contains("quantile=\"0.99\""))
            {
                eprintln!("  a: {line}");
            }
        }
    }
    for (name, port) in followers {
        let Ok(response) = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await else {
            continue;
        };
        let Ok(text) = response.text().await else {
            continue;
        };
        for line in text.lines() {
            if line.starts_with("symphony_raft_follow_seconds")
                || line.starts_with("symphony_raft_flush_seconds")
            {
                eprintln!("  {name}: {line}");
            }
        }
    }
}

async fn submit(me: &Me, yaml: &str) -> symphony::engine::RunHandle {
    let sources = Sources::new("bench.yaml", yaml);
    let wf = wdl::compile(&sources, &me.executors).expect("bench workflow compiles");
    let inputs = wdl::check_inputs(&wf, &Map::new()).unwrap();
    me.engine
        .submit(
            Arc::new(wf),
            SubmittedSource::from_sources(&sources),
            inputs,
        )
        .await
        .unwrap()
}

async fn tasks(me: &Me) {
    const RUNS: usize = 16;
    const ITEMS: usize = 2_000;
    let items: Vec<String> = (0..ITEMS).map(|i| i.to_string()).collect();
    let yaml = format!(
        "version: 1\nname: noops\ndurability: replicated\ntasks:\n  work:\n    uses: builtin/noop\n    for_each: [{}]\n",
        items.join(", ")
    );
    // Warm up: one small run.
    let mut warm = submit(me, &yaml.replace(&items.join(", "), "1, 2, 3")).await;
    assert_eq!(warm.wait().await.status, RunStatus::Succeeded);
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..RUNS {
        handles.push(submit(me, &yaml).await);
    }
    for mut h in handles {
        let outcome = h.wait().await;
        assert_eq!(outcome.status, RunStatus::Succeeded, "{:?}", outcome.error);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let total = (RUNS * ITEMS) as f64;
    report(
        "replicated_noop_tasks_per_s",
        total / elapsed,
        "tasks/s",
        &format!(",\"runs\":{RUNS},\"tasks\":{}", RUNS * ITEMS),
    );
}

fn scheduled(me: &Me, run: &str) -> usize {
    me.engine
        .history(run)
        .unwrap_or_default()
        .iter()
        .filter(|(_, e)| matches!(e, JournalEvent::TaskScheduled { .. }))
        .count()
}

fn succeeded(me: &Me, run: &str) -> usize {
    me.engine
        .history(run)
        .unwrap_or_default()
        .iter()
        .filter(|(_, e)| matches!(e, JournalEvent::TaskSucceeded { .. }))
        .count()
}

async fn submit_http(port: u16, yaml: &str) -> String {
    let body = serde_json::json!({ "workflow": yaml });
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/v1/runs"))
        .json(&body)
        .send()
        .await
        .expect("submit")
        .json()
        .await
        .expect("json");
    answer["run_id"].as_str().expect("run_id").to_owned()
}

async fn takeover(me: &Me, dir: &Path, b: &mut Option<Child_>, b_ports: (u16, u16), seed: &str) {
    const TRIALS: usize = 20;
    let chain = "version: 1\nname: chain\ndurability: replicated\ntasks:\n  t0:\n    uses: builtin/sleep\n    with: { duration: 200ms }\n  t1:\n    uses: builtin/sleep\n    with: { duration: 2s }\n    needs: [t0]\n  t2:\n    uses: builtin/sleep\n    with: { duration: 10ms }\n    needs: [t1]\n";
    // Failover runs only here: the `journal` scenario's writers are not
    // run actors, so their unfinished runs would look orphaned.
    tokio::spawn(failover::run(
        Arc::clone(&me.replication),
        me.engine.clone(),
        me.view.clone(),
    ));
    let mut times = Vec::new();
    for trial in 0..TRIALS {
        if b.is_none() {
            *b = Some(start_child(dir, "b", b_ports, seed));
        }
        wait_until("b up", Duration::from_secs(60), || all_up(&me.view)).await;
        wait_until("a leader", Duration::from_secs(30), || {
            me.replication.leader().is_some()
        })
        .await;
        let health = format!("http://127.0.0.1:{}/health", b_ports.1);
        let started = Instant::now();
        while !reqwest::get(&health)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "b never healthy"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let run = submit_http(b_ports.1, chain).await;
        // t0 committed and t1 scheduled: kill the owner.
        wait_until("t0 committed here", Duration::from_secs(30), || {
            succeeded(me, &run) >= 1 && scheduled(me, &run) >= 2
        })
        .await;
        let before = scheduled(me, &run);
        drop(b.take());
        let killed = Instant::now();
        wait_until(
            "the next task scheduled elsewhere",
            Duration::from_secs(30),
            || scheduled(me, &run) > before,
        )
        .await;
        let took = killed.elapsed();
        eprintln!("trial {trial}: {took:?}");
        times.push(took);
    }
    times.sort();
    let extra = format!(
        ",\"trials\":{TRIALS},\"p50_ms\":{:.0},\"max_ms\":{:.0}",
        percentile(&times, 0.5),
        times.last().unwrap().as_secs_f64() * 1e3
    );
    report(
        "takeover_after_kill_ms_max",
        times.last().unwrap().as_secs_f64() * 1e3,
        "ms",
        &extra,
    );
}

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir: PathBuf = tempfile::tempdir().unwrap().keep();
        let a_port = free_port();
        let seed = format!("127.0.0.1:{a_port}");
        let me = start_me(&dir, a_port).await;
        let b_ports = (free_port(), free_port());
        let mut b = Some(start_child(&dir, "b", b_ports, &seed));
        let c_ports = (free_port(), free_port());
        let c = start_child(&dir, "c", c_ports, &seed);
        wait_until("three nodes up", Duration::from_secs(60), || {
            all_up(&me.view)
        })
        .await;
        wait_until("a leader", Duration::from_secs(30), || {
            me.replication.leader().is_some()
        })
        .await;
        eprintln!("leader: {:?}", me.replication.leader());
        if wanted("journal") {
            journal(&me, &[("b", b_ports.1), ("c", c_ports.1)]).await;
        }
        if wanted("tasks") {
            tasks(&me).await;
        }
        if wanted("takeover") {
            takeover(&me, &dir, &mut b, b_ports, &seed).await;
        }
        // `exit` runs no destructors: stop the child nodes first.
        drop(b);
        drop(c);
        let _ = std::fs::remove_dir_all(&dir);
        std::process::exit(0);
    });
}
