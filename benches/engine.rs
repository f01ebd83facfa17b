//! Engine throughput and latency, release build:
//!
//! ```text
//! cargo bench --bench engine                 # every scenario
//! cargo bench --bench engine -- fanout_none  # one scenario
//! ```
//!
//! Scenarios (numbers go to docs/performance.md):
//! - `fanout_none`: one run, a 100,000-item `for_each` of `builtin/noop`,
//!   `durability: none`; tasks/s and the process's peak RSS.
//! - `runs_none`: 10,000 one-task runs submitted at once; tasks/s.
//! - `fanout_local`: the fan-out with `durability: local` on sled; tasks/s.
//! - `runs_local`: 10,000 one-task `local` runs; tasks/s.
//! - `chain_1kb`: a 3-stage `builtin/echo` chain carrying 1 KiB, one run at a
//!   time, `durability: none`; p50/p99 latency from submit to outcome.
//!
//! Each scenario prints one JSON line:
//! `{"system":"symphony","metric":…,"value":…,"unit":…}`.

use std::sync::Arc;
use std::time::Instant;

use symphony::engine::{Engine, EngineConfig, SubmittedSource};
use symphony::executor::{ExecutorConfig, Executors};
use symphony::store::{MemoryStore, RunStatus, RunStore, SledStore};
use symphony::value::{Map, Value};
use symphony::wdl::{self, Durability, Workflow};

/// The binary's allocator, so the figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn compile(yaml: &str) -> Workflow {
    let executors = Executors::standard(&ExecutorConfig::default());
    wdl::compile_str("bench.yaml", yaml, &executors).expect("bench workflow compiles")
}

fn source(yaml: &str) -> SubmittedSource {
    SubmittedSource {
        main: "bench.yaml".into(),
        files: vec![("bench.yaml".into(), yaml.into())],
    }
}

async fn engine(store: Arc<dyn RunStore>) -> Engine {
    let executors = Executors::standard(&ExecutorConfig::default());
    let compile_executors = executors.clone();
    Engine::start(
        EngineConfig::default(),
        executors,
        store,
        Arc::new(move |src: &SubmittedSource| {
            wdl::compile(&src.to_sources(), &compile_executors).map_err(|d| d.to_string())
        }),
    )
    .await
    .expect("engine starts")
}

fn report(metric: &str, value: f64, unit: &str, extra: &str) {
    println!(
        "{{\"system\":\"symphony\",\"metric\":\"{metric}\",\"value\":{value:.1},\"unit\":\"{unit}\"{extra}}}"
    );
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn fanout(store: Arc<dyn RunStore>, durability: Durability, n: usize) -> f64 {
    let items: Vec<Value> = (0..n as i64).map(Value::Int).collect();
    let yaml = format!(
        "version: 1\nname: fanout\ndurability: {}\ninputs:\n  items: {{ type: list }}\n\
         tasks:\n  fan:\n    uses: builtin/noop\n    for_each: ${{{{ inputs.items }}}}\n",
        durability.as_str()
    );
    let wf = Arc::new(compile(&yaml));
    let engine = engine(store).await;
    let mut inputs = Map::new();
    inputs.insert("items".into(), Value::List(items));
    let started = Instant::now();
    let mut run = engine.submit(wf, source(&yaml), inputs).await.unwrap();
    let outcome = run.wait().await;
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(outcome.status, RunStatus::Succeeded, "{:?}", outcome.error);
    engine.shutdown().await;
    n as f64 / secs
}

async fn many_runs(store: Arc<dyn RunStore>, durability: Durability, n: usize) -> f64 {
    let yaml = format!(
        "version: 1\nname: one\ndurability: {}\ntasks:\n  only:\n    uses: builtin/noop\n",
        durability.as_str()
    );
    let wf = Arc::new(compile(&yaml));
    let engine = engine(store).await;
    let started = Instant::now();
    let mut handles = Vec::with_capacity(n);
    for _ in 0..n {
        handles.push(
            engine
                .submit(Arc::clone(&wf), source(&yaml), Map::new())
                .await
                .unwrap(),
        );
    }
    for h in &mut handles {
        assert_eq!(h.wait().await.status, RunStatus::Succeeded);
    }
    let secs = started.elapsed().as_secs_f64();
    engine.shutdown().await;
    n as f64 / secs
}

async fn chain(runs: usize) -> (f64, f64) {
    let yaml = "version: 1\nname: chain\ndurability: none\ninputs:\n  payload: { type: string }\n\
                tasks:\n  a:\n    uses: builtin/echo\n    with: { v: \"${{ inputs.payload }}\" }\n  \
                b:\n    uses: builtin/echo\n    needs: [a]\n    with: { v: \"${{ tasks.a.outputs.v }}\" }\n  \
                c:\n    uses: builtin/echo\n    needs: [b]\n    with: { v: \"${{ tasks.b.outputs.v }}\" }\n\
                outputs:\n  v: ${{ tasks.c.outputs.v }}\n";
    let wf = Arc::new(compile(yaml));
    let engine = engine(Arc::new(MemoryStore::new())).await;
    let mut inputs = Map::new();
    inputs.insert("payload".into(), Value::String("x".repeat(1024)));
    let mut samples = Vec::with_capacity(runs);
    for i in 0..runs + runs / 10 {
        let started = Instant::now();
        let mut run = engine
            .submit(Arc::clone(&wf), source(yaml), inputs.clone())
            .await
            .unwrap();
        let outcome = run.wait().await;
        let took = started.elapsed();
        assert_eq!(outcome.status, RunStatus::Succeeded);
        if i >= runs / 10 {
            samples.push(took);
        }
    }
    engine.shutdown().await;
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    (pct(0.50).as_secs_f64() * 1e6, pct(0.99).as_secs_f64() * 1e6)
}

/// Median of `reps` runs of a scenario, each on a worker thread of a fresh
/// runtime (as the binary runs it), with the spread.
fn measure<F, Fut>(reps: usize, scenario: F) -> (f64, f64, f64)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = f64> + Send + 'static,
{
    let mut values: Vec<f64> = (0..reps)
        .map(|_| {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .unwrap();
            let _guard = rt.enter();
            let task = tokio::spawn(scenario());
            rt.block_on(task).unwrap()
        })
        .collect();
    values.sort_by(f64::total_cmp);
    (
        values[values.len() / 2],
        values[0],
        values[values.len() - 1],
    )
}

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    let reps: usize = std::env::var("BENCH_REPS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let spread = |min: f64, max: f64| format!(",\"min\":{min:.1},\"max\":{max:.1},\"reps\":{reps}");
    if wanted("fanout_none") {
        let (v, lo, hi) = measure(reps, || {
            fanout(Arc::new(MemoryStore::new()), Durability::None, 100_000)
        });
        report("fanout_none_100k", v, "tasks/s", &spread(lo, hi));
        report("fanout_none_100k_peak_rss", peak_rss_mb(), "MB", "");
    }
    if wanted("runs_none") {
        let (v, lo, hi) = measure(reps, || {
            many_runs(Arc::new(MemoryStore::new()), Durability::None, 10_000)
        });
        report("runs_none_10k", v, "tasks/s", &spread(lo, hi));
    }
    if wanted("fanout_local") {
        let (v, lo, hi) = measure(reps, || async {
            let dir = tempfile::tempdir().unwrap();
            let store = Arc::new(SledStore::open(dir.path()).unwrap());
            fanout(store, Durability::Local, 100_000).await
        });
        report("fanout_local_100k", v, "tasks/s", &spread(lo, hi));
    }
    if wanted("runs_local") {
        let (v, lo, hi) = measure(reps, || async {
            let dir = tempfile::tempdir().unwrap();
            let store = Arc::new(SledStore::open(dir.path()).unwrap());
            many_runs(store, Durability::Local, 10_000).await
        });
        report("runs_local_10k", v, "tasks/s", &spread(lo, hi));
    }
    if wanted("chain_1kb") {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let (p50, p99) = rt.block_on(tokio::spawn(chain(2_000))).unwrap();
        report("chain_1kb_p50", p50, "us", &format!(",\"p99_us\":{p99:.1}"));
    }
}
