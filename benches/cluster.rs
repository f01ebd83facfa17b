//! Two nodes on loopback, release build: this process is node `owner`
//! (engine and cluster through the library, so latencies are measured
//! without HTTP in the way) and a child `symphony node` process is `worker`.
//!
//! ```text
//! cargo bench --bench cluster                  # every scenario
//! cargo bench --bench cluster -- remote_noop   # one
//! ```
//!
//! - `remote_noop`: 100,000 `builtin/noop` items all placed on the worker
//!   (placement labels); attempts/s dispatched to and completed there.
//! - `chain_remote`: a 3-stage `builtin/echo` chain with 1 KiB, each stage
//!   on the other node than the one before; p50/p99 per run.
//! - `detect_frozen`: SIGSTOP the worker, time until the owner declares it
//!   down, with default heartbeat settings; 20 trials.
//! - `transfer_100mb`: a 100 MB task output made on the worker and used on
//!   the owner; MB/s of the move (run time minus the same run made locally).

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use symphony::cluster::{Cluster, ClusterConfig, ClusterView, HeartbeatTimes, PeerState};
use symphony::engine::{Engine, EngineConfig, SubmittedSource};
use symphony::executor::{ExecutorConfig, Executors};
use symphony::store::{MemoryStore, RunStatus};
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

struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_worker(dir: &std::path::Path, seed: &str) -> Worker {
    let child = Command::new(env!("CARGO_BIN_EXE_symphony"))
        .args([
            "node",
            "--name",
            "worker",
            "--cookie",
            "bench",
            "--label",
            "role=worker",
        ])
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--http", &format!("127.0.0.1:{}", free_port())])
        .args([
            "--data-dir",
            dir.join("worker").to_str().unwrap(),
            "--seed",
            seed,
        ])
        .env("SYMPHONY_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("worker starts");
    Worker(child)
}

async fn owner() -> (Engine, Cluster, Executors, String) {
    let executors = Executors::standard(&ExecutorConfig::default());
    let compile_with = executors.clone();
    let engine = Engine::start(
        EngineConfig {
            node: "owner".into(),
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
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let cluster = Cluster::start(
        ClusterConfig {
            name: "owner".into(),
            listen: addr.parse().unwrap(),
            advertise: "127.0.0.1".into(),
            addr: addr.clone(),
            seeds: Vec::new(),
            cookie: "bench".into(),
            labels: BTreeMap::from([("role".into(), "owner".into())]),
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
    (engine, cluster, executors, addr)
}

async fn wait_state(view: &ClusterView, peer: &str, state: PeerState, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if view
            .snapshot()
            .members
            .iter()
            .any(|m| m.name == peer && m.state == state)
        {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{peer} never became {state:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn run(engine: &Engine, executors: &Executors, yaml: &str, inputs: Map) -> Duration {
    let sources = Sources::new("bench.yaml", yaml);
    let wf = wdl::compile(&sources, executors).expect("bench workflow compiles");
    let inputs = wdl::check_inputs(&wf, &inputs).unwrap();
    let started = Instant::now();
    let mut handle = engine
        .submit(
            Arc::new(wf),
            SubmittedSource::from_sources(&sources),
            inputs,
        )
        .await
        .unwrap();
    let outcome = handle.wait().await;
    assert_eq!(outcome.status, RunStatus::Succeeded, "{:?}", outcome.error);
    started.elapsed()
}

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted =
        move |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let dir = tempfile::tempdir().unwrap();
    let task = rt.spawn(async move {
        let (engine, cluster, executors, addr) = owner().await;
        let worker = start_worker(dir.path(), &addr);
        wait_state(cluster.view(), "worker", PeerState::Up, Duration::from_secs(30)).await;

        if wanted("remote_noop") {
            let n = 100_000;
            let yaml = format!(
                "version: 1\nname: remote\ndurability: none\ntasks:\n  fan:\n    uses: builtin/noop\n    for_each: ${{{{ range({n}) }}}}\n    placement: {{ labels: {{ role: worker }} }}\n"
            );
            let mut best = Vec::new();
            for _ in 0..3 {
                let took = run(&engine, &executors, &yaml, Map::new()).await;
                best.push(n as f64 / took.as_secs_f64());
            }
            best.sort_by(f64::total_cmp);
            report("remote_noop_100k", best[1], "attempts/s", &format!(",\"min\":{:.1},\"max\":{:.1},\"reps\":3", best[0], best[2]));
        }
        if wanted("chain_remote") {
            let yaml = "version: 1\nname: chain\ndurability: none\ninputs:\n  p: { type: string }\ntasks:\n  a:\n    uses: builtin/echo\n    with: { v: \"${{ inputs.p }}\" }\n    placement: { labels: { role: worker } }\n  b:\n    uses: builtin/echo\n    needs: [a]\n    with: { v: \"${{ tasks.a.outputs.v }}\" }\n    placement: { labels: { role: owner } }\n  c:\n    uses: builtin/echo\n    needs: [b]\n    with: { v: \"${{ tasks.b.outputs.v }}\" }\n    placement: { labels: { role: worker } }\noutputs:\n  v: ${{ tasks.c.outputs.v }}\n";
            let mut inputs = Map::new();
            inputs.insert("p".into(), "x".repeat(1024).into());
            let mut samples = Vec::new();
            for i in 0..2200 {
                let took = run(&engine, &executors, yaml, inputs.clone()).await;
                if i >= 200 {
                    samples.push(took);
                }
            }
            samples.sort();
            let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)].as_secs_f64() * 1e6;
            report("chain_remote_1kb_p50", pct(0.5), "us", &format!(",\"p99_us\":{:.1}", pct(0.99)));
        }
        if wanted("transfer_100mb") {
            // A different size each time: a value the owner already holds
            // (same hash) would not move at all.
            let on = |role: &str, rep: usize| format!("version: 1\nname: big\ndurability: none\ntasks:\n  make:\n    uses: builtin/bytes\n    with: {{ size: {} }}\n    placement: {{ labels: {{ role: {role} }} }}\noutputs:\n  n: ${{{{ length(tasks.make.outputs) }}}}\n", 100_000_000 + rep);
            let (mut whole, mut moved) = (Vec::new(), Vec::new());
            const REPS: usize = 9;
            for rep in 0..REPS {
                let local = run(&engine, &executors, &on("owner", rep), Map::new()).await;
                let remote = run(&engine, &executors, &on("worker", rep), Map::new()).await;
                eprintln!("  rep {rep}: made on the owner {local:.1?}, on the worker {remote:.1?}");
                // Whole run on the worker, making the value included: a floor.
                whole.push(100.0 / remote.as_secs_f64());
                // Minus the same run made locally: the move itself.
                moved.push(100.0 / remote.saturating_sub(local).as_secs_f64().max(1e-6));
            }
            whole.sort_by(f64::total_cmp);
            moved.sort_by(f64::total_cmp);
            eprintln!("transfer MB/s: moved {moved:.1?}, whole run {whole:.1?}");
            let mid = REPS / 2;
            report("transfer_100mb", moved[mid], "MB/s", &format!(",\"min\":{:.1},\"max\":{:.1},\"reps\":{REPS},\"whole_run_mb_s\":{:.1}", moved[0], moved[REPS - 1], whole[mid]));
        }
        if wanted("detect_frozen") {
            let pid = worker.0.id().to_string();
            let mut took = Vec::new();
            for _ in 0..20 {
                assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
                took.push(wait_state(cluster.view(), "worker", PeerState::Down, Duration::from_secs(10)).await);
                assert!(Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
                // Up, and still up a second later: the next trial starts clean.
                loop {
                    wait_state(cluster.view(), "worker", PeerState::Up, Duration::from_secs(30)).await;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let view = cluster.view().snapshot();
                    if view.members.iter().any(|m| m.name == "worker" && m.state == PeerState::Up) {
                        break;
                    }
                }
            }
            eprintln!("detection times: {took:?}");
            took.sort();
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            report("detect_frozen_ms_max", ms(took[19]), "ms", &format!(",\"p50_ms\":{:.1},\"min_ms\":{:.1},\"trials\":20", ms(took[10]), ms(took[0])));
        }
        drop(worker);
        cluster.stop().await;
        engine.shutdown().await;
    });
    rt.block_on(task).unwrap();
}
