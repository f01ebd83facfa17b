//! The engine through its library API: supervision of attempts, restart of
//! a node on its data dir, concurrency limits.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use symphony::engine::{Engine, EngineConfig, SubmittedSource, TaskStatus};
use symphony::executor::{AttemptContext, Executor, ExecutorConfig, Executors, TaskError};
use symphony::store::{RunStatus, RunStore, SledStore};
use symphony::value::{Map, Value};
use symphony::wdl::{self, Sources};

/// Panics on every attempt.
#[derive(Debug)]
struct Panics;

#[async_trait]
impl Executor for Panics {
    async fn execute(&self, _: &AttemptContext, _: Value) -> Result<Value, TaskError> {
        panic!("model exploded")
    }
}

/// Counts attempts running at once and the most seen.
#[derive(Debug, Default)]
struct Gauge {
    now: AtomicUsize,
    max: AtomicUsize,
}

#[async_trait]
impl Executor for Gauge {
    async fn execute(&self, _: &AttemptContext, _: Value) -> Result<Value, TaskError> {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(5)).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        Ok(Value::Null)
    }
}

fn executors(extra: &[(&str, Arc<dyn Executor>)]) -> Executors {
    let mut e = Executors::standard(&ExecutorConfig::default());
    for (name, ex) in extra {
        e.insert(*name, Arc::clone(ex));
    }
    e
}

async fn engine(store: Arc<dyn RunStore>, executors: Executors, config: EngineConfig) -> Engine {
    let compile_with = executors.clone();
    Engine::start(
        config,
        executors,
        store,
        Arc::new(move |src: &SubmittedSource| {
            wdl::compile(&src.to_sources(), &compile_with).map_err(|d| d.to_string())
        }),
    )
    .await
    .unwrap()
}

/// An engine on a memory store with the standard executors.
async fn memory_engine() -> (Engine, Executors) {
    let executors = executors(&[]);
    let store = Arc::new(symphony::store::MemoryStore::default());
    (
        engine(store, executors.clone(), EngineConfig::default()).await,
        executors,
    )
}

fn compile(yaml: &str, executors: &Executors) -> Arc<symphony::wdl::Workflow> {
    Arc::new(wdl::compile(&Sources::new("wf.yaml", yaml), executors).unwrap())
}

async fn submit(engine: &Engine, executors: &Executors, yaml: &str) -> symphony::engine::RunHandle {
    let sources = Sources::new("wf.yaml", yaml);
    let wf = wdl::compile(&sources, executors).unwrap();
    let inputs = wdl::check_inputs(&wf, &Map::new()).unwrap();
    engine
        .submit(
            Arc::new(wf),
            SubmittedSource::from_sources(&sources),
            inputs,
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn a_panicking_executor_fails_its_attempt_not_the_node() {
    let ex = executors(&[("test/panics", Arc::new(Panics))]);
    let engine = engine(
        Arc::new(symphony::store::MemoryStore::new()),
        ex.clone(),
        EngineConfig::default(),
    )
    .await;
    let yaml = "version: 1\nname: p\ndurability: none\ntasks:\n  boom:\n    uses: test/panics\n    retry: { max_attempts: 3, initial: 1ms }\n";
    let outcome = submit(&engine, &ex, yaml).await.wait().await;
    assert_eq!(outcome.status, RunStatus::Failed);
    let task = &outcome.tasks[0];
    assert_eq!(task.status, TaskStatus::Failed);
    assert_eq!(task.attempts, 1, "a panic is not retried");
    let error = task.error.as_deref().unwrap();
    assert!(error.starts_with("panic:"), "{error}");
    assert!(error.contains("model exploded"), "{error}");

    // The engine carries on.
    let ok = "version: 1\nname: ok\ndurability: none\ntasks:\n  a:\n    uses: builtin/noop\n";
    assert_eq!(
        submit(&engine, &ex, ok).await.wait().await.status,
        RunStatus::Succeeded
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn the_executor_pool_bounds_attempts_across_runs() {
    let gauge = Arc::new(Gauge::default());
    let ex = executors(&[("test/gauge", gauge.clone() as Arc<dyn Executor>)]);
    let config = EngineConfig {
        slots: 3,
        ..EngineConfig::default()
    };
    let engine = engine(
        Arc::new(symphony::store::MemoryStore::new()),
        ex.clone(),
        config,
    )
    .await;
    let yaml = "version: 1\nname: g\ndurability: none\ninputs:\n  xs: { type: list, default: [1,2,3,4,5,6,7,8,9,10] }\ntasks:\n  fan:\n    uses: test/gauge\n    for_each: ${{ inputs.xs }}\n";
    let mut a = submit(&engine, &ex, yaml).await;
    let mut b = submit(&engine, &ex, yaml).await;
    assert_eq!(a.wait().await.status, RunStatus::Succeeded);
    assert_eq!(b.wait().await.status, RunStatus::Succeeded);
    assert_eq!(gauge.max.load(Ordering::SeqCst), 3);
    engine.shutdown().await;
}

#[tokio::test]
async fn max_parallel_bounds_items_of_one_task() {
    let gauge = Arc::new(Gauge::default());
    let ex = executors(&[("test/gauge", gauge.clone() as Arc<dyn Executor>)]);
    let engine = engine(
        Arc::new(symphony::store::MemoryStore::new()),
        ex.clone(),
        EngineConfig::default(),
    )
    .await;
    let yaml = "version: 1\nname: g\ndurability: none\ninputs:\n  xs: { type: list, default: [1,2,3,4,5,6,7,8,9,10,11,12] }\ntasks:\n  fan:\n    uses: test/gauge\n    for_each: ${{ inputs.xs }}\n    max_parallel: 2\n";
    assert_eq!(
        submit(&engine, &ex, yaml).await.wait().await.status,
        RunStatus::Succeeded
    );
    assert_eq!(gauge.max.load(Ordering::SeqCst), 2);
    engine.shutdown().await;
}

#[tokio::test]
async fn a_node_restarting_on_its_data_dir_resumes_unfinished_runs() {
    let dir = tempfile::tempdir().unwrap();
    let ex = executors(&[]);
    let yaml = "version: 1\nname: slow\ndurability: local\ntasks:\n  first:\n    uses: builtin/echo\n    with: { v: 1 }\n  wait:\n    needs: [first]\n    uses: builtin/sleep\n    with: { duration: 60s }\n";
    let run_id = {
        let store = Arc::new(SledStore::open(dir.path()).unwrap());
        let engine = engine(store.clone(), ex.clone(), EngineConfig::default()).await;
        let handle = submit(&engine, &ex, yaml).await;
        let id = handle.id().to_owned();
        // Wait until `wait` is scheduled, i.e. `first` succeeded durably.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if handle
                .progress()
                .await
                .is_some_and(|p| p.finished == 1 && p.running == 1)
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "run never reached `wait`"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        engine.shutdown().await;
        id
    };
    // A new node on the same data dir, with a shorter sleep this time: the
    // journaled source is what counts, so patch nothing; instead cancel after
    // checking it resumed where it was.
    let store = Arc::new(SledStore::open(dir.path()).unwrap());
    assert_eq!(
        store.summary(&run_id).unwrap().unwrap().status,
        RunStatus::Running
    );
    let engine = engine(store.clone(), ex.clone(), EngineConfig::default()).await;
    let handles = engine.resume_incomplete().await.unwrap();
    assert_eq!(handles.len(), 1);
    let mut handle = handles.into_iter().next().unwrap();
    assert_eq!(handle.id(), run_id);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let p = handle.progress().await.expect("run is live");
        if p.running == 1 {
            assert_eq!(p.finished, 1, "`first` is not run again");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    handle.cancel("test over");
    let outcome = handle.wait().await;
    assert_eq!(outcome.status, RunStatus::Cancelled);
    assert_eq!(
        outcome.tasks[0].attempts, 1,
        "first ran once, before the restart"
    );
    assert_eq!(
        outcome.tasks[1].attempts, 2,
        "wait ran again with a new attempt"
    );
    engine.shutdown().await;
    assert_eq!(
        store.summary(&run_id).unwrap().unwrap().status,
        RunStatus::Cancelled
    );
}

#[tokio::test]
async fn a_corrupt_journal_is_refused_with_a_clear_error_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let ex = executors(&[]);
    let store = Arc::new(SledStore::open(dir.path()).unwrap());
    let engine = engine(store.clone(), ex.clone(), EngineConfig::default()).await;
    let yaml = "version: 1\nname: c\ndurability: local\ntasks:\n  wait:\n    uses: builtin/sleep\n    with: { duration: 60s }\n";
    let handle = submit(&engine, &ex, yaml).await;
    let id = handle.id().to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    // RunSubmitted and TaskScheduled are durable.
    while store.journal(&id).unwrap().len() < 2 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    engine.shutdown().await;
    // Garbage lands after the good events (a torn or foreign write).
    let n = store.journal(&id).unwrap().len() as u64;
    let (tx, rx) = tokio::sync::oneshot::channel();
    store.append(
        symphony::store::AppendBatch {
            run: id.clone(),
            first_seq: n,
            epoch: 0,
            events: vec![vec![0xff, 0xfe, 0xfd]],
            summary: None,
        },
        Box::new(move |r| {
            let _ = tx.send(r.is_ok());
        }),
    );
    assert!(rx.await.unwrap());
    let engine = self::engine(store.clone(), ex.clone(), EngineConfig::default()).await;
    let err = engine.resume(&id).await.unwrap_err().to_string();
    assert!(err.contains("corrupt journal record"), "{err}");
    // Nothing was lost or rewritten: the journal and summary are as they were.
    assert_eq!(store.journal(&id).unwrap().len() as u64, n + 1);
    assert_eq!(
        store.summary(&id).unwrap().unwrap().status,
        RunStatus::Running
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn invocations_stay_off_the_event_bus_and_out_of_recent_outcomes() {
    let (engine, executors) = memory_engine().await;
    let yaml = "version: 1\nname: quiet\ndurability: none\ntasks:\n  a:\n    uses: builtin/noop\n";
    let wf = compile(yaml, &executors);
    let mut events = engine.subscribe();

    let mut invoked = engine.invoke(wf, Map::new()).await.unwrap();
    let outcome = invoked.wait().await;
    assert_eq!(outcome.status, RunStatus::Succeeded);
    // Its caller wants the outputs: no task reports are built for it.
    assert!(outcome.tasks.is_empty(), "{:?}", outcome.tasks);
    let mut submitted = submit(&engine, &executors, yaml).await;
    assert_eq!(submitted.wait().await.status, RunStatus::Succeeded);

    // The first event on the bus is the submitted run's: the invocation,
    // which ran to its end before, published none.
    let first = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("an event within 10 s")
        .unwrap();
    assert_eq!(&*first.run_id, submitted.id());
    assert_ne!(invoked.id(), submitted.id());

    // A finished `none` run is still found for a while; an invocation is
    // not (at request rates it would push the node's runs out).
    let found = engine.run_info(submitted.id()).await.unwrap();
    assert_eq!(found.map(|i| i.status), Some(RunStatus::Succeeded));
    assert!(engine.run_info(invoked.id()).await.unwrap().is_none());

    // Only `none` workflows are invoked: a journaled one is refused, saying why.
    let local = "version: 1\nname: kept\ndurability: local\ntasks:\n  a:\n    uses: builtin/noop\n";
    let kept = compile(local, &executors);
    let refused = engine.invoke(kept, Map::new()).await.unwrap_err();
    assert!(
        refused.to_string().contains("not `durability: none`"),
        "{refused}"
    );
}

#[tokio::test]
async fn an_invocation_can_be_cancelled_and_leaves_no_live_entry_behind() {
    let (engine, executors) = memory_engine().await;
    let yaml = "version: 1\nname: slow\ndurability: none\ntasks:\n  a:\n    uses: builtin/sleep\n    with: { duration: 60s }\n";
    let wf = compile(yaml, &executors);

    // Live while it runs; cancelled through its handle like any run.
    let mut invoked = engine.invoke(Arc::clone(&wf), Map::new()).await.unwrap();
    assert!(engine.is_live(invoked.id()));
    invoked.cancel("client went away");
    let outcome = tokio::time::timeout(Duration::from_secs(10), invoked.wait())
        .await
        .expect("cancelled within 10 s, not after the 60 s sleep");
    assert_eq!(outcome.status, RunStatus::Cancelled);
    // One that did not succeed says how each task ended.
    assert_eq!(outcome.tasks.len(), 1);
    assert_eq!(outcome.tasks[0].id, "a");

    // Its entry among the live runs goes with its actor: invocations come
    // at request rates and must not accumulate there.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while engine.is_live(invoked.id()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the finished invocation is still registered as live"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    engine.shutdown().await;
}
