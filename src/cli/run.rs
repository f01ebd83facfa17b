//! `symphony run`, `resume` and `runs`: an embedded single node.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::output;
use super::{DEFAULT_DATA_DIR, EXIT_CANCELLED, EXIT_CONFIG, EXIT_FAILED, EXIT_OK};
use crate::engine::{Engine, EngineConfig, RunHandle, RunOutcome};
use crate::executor::{ExecutorConfig, Executors};
use crate::store::{MemoryStore, RunStore, SledStore};
use crate::wdl::Durability;

/// Arguments of `symphony run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The workflow file.
    pub file: PathBuf,
    /// Workflow inputs.
    #[command(flatten)]
    pub inputs: super::inputs::InputArgs,
    /// Where `durability: local` runs keep their journal.
    #[arg(long, env = "SYMPHONY_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Print one JSON object on stdout and nothing else there.
    #[arg(long)]
    pub json: bool,
    /// Attempts executing at once on this node.
    #[arg(long, default_value_t = EngineConfig::default().slots)]
    pub slots: usize,
}

/// Arguments of `symphony resume`.
#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// The run to continue.
    pub run_id: String,
    /// The data dir the run was started with.
    #[arg(long, env = "SYMPHONY_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Print one JSON object on stdout and nothing else there.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `symphony runs`.
#[derive(Debug, Args)]
pub struct RunsArgs {
    /// The data dir to list.
    #[arg(long, env = "SYMPHONY_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Print one JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn executors() -> Executors {
    Executors::standard(&ExecutorConfig::default())
}

async fn start_engine(store: Arc<dyn RunStore>, slots: usize) -> Result<Engine, String> {
    let executors = executors();
    let compile_with = executors.clone();
    Engine::start(
        EngineConfig {
            slots,
            ..EngineConfig::default()
        },
        executors,
        store,
        Arc::new(move |src| super::compile_submitted(src, &compile_with)),
    )
    .await
    .map_err(|e| e.to_string())
}

fn open_store(dir: &Path) -> Result<Arc<dyn RunStore>, String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create data dir {}: {e}", dir.display()))?;
    SledStore::open(dir)
        .map(|s| Arc::new(s) as Arc<dyn RunStore>)
        .map_err(|e| e.to_string())
}

/// `symphony run`.
pub(crate) async fn run(args: RunArgs) -> u8 {
    let (workflow, source) = match super::load_workflow(&args.file, &executors()) {
        Ok(loaded) => loaded,
        Err(diagnostics) => {
            eprint!("{diagnostics}");
            return EXIT_CONFIG;
        }
    };
    let given = match args.inputs.collect(&workflow) {
        Ok(given) => given,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_CONFIG;
        }
    };
    let inputs = match crate::wdl::check_inputs(&workflow, &given) {
        Ok(inputs) => inputs,
        Err(problems) => {
            for p in problems {
                eprintln!("error: {p}");
            }
            return EXIT_CONFIG;
        }
    };
    let store = match workflow.durability {
        Durability::None => Ok(Arc::new(MemoryStore::new()) as Arc<dyn RunStore>),
        _ => open_store(&args.data_dir),
    };
    let store = match store {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_FAILED;
        }
    };
    let engine = match start_engine(store, args.slots).await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_FAILED;
        }
    };
    let handle = match engine.submit(Arc::new(workflow), source, inputs).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: {e}");
            engine.shutdown().await;
            return EXIT_CONFIG;
        }
    };
    follow(&engine, handle, args.json).await
}

/// `symphony resume`.
pub(crate) async fn resume(args: ResumeArgs) -> u8 {
    if !args.data_dir.exists() {
        eprintln!("error: data dir {} does not exist", args.data_dir.display());
        return EXIT_FAILED;
    }
    let store = match open_store(&args.data_dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_FAILED;
        }
    };
    let engine = match start_engine(store, EngineConfig::default().slots).await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_FAILED;
        }
    };
    match engine.resume(&args.run_id).await {
        Ok(handle) => follow(&engine, handle, args.json).await,
        Err(e) => {
            eprintln!("error: {e}");
            engine.shutdown().await;
            EXIT_FAILED
        }
    }
}

/// `symphony runs`.
pub(crate) fn runs(args: RunsArgs) -> u8 {
    if !args.data_dir.exists() {
        eprintln!("error: data dir {} does not exist", args.data_dir.display());
        return EXIT_FAILED;
    }
    let store = match SledStore::open(&args.data_dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_FAILED;
        }
    };
    match store.summaries() {
        Ok(all) => {
            output::runs(&all, args.json);
            EXIT_OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_FAILED
        }
    }
}

/// Waits for a run with live progress on a terminal; Ctrl-C cancels it.
async fn follow(engine: &Engine, mut handle: RunHandle, json: bool) -> u8 {
    let bar = std::io::stderr()
        .is_terminal()
        .then(|| output::progress_bar(handle.id()));
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut interrupted = false;
    let outcome: Arc<RunOutcome> = loop {
        tokio::select! {
            outcome = handle.wait() => break outcome,
            _ = tokio::signal::ctrl_c(), if !interrupted => {
                interrupted = true;
                if let Some(bar) = &bar {
                    bar.set_prefix("cancelling");
                } else {
                    eprintln!("cancelling run {} (Ctrl-C again to quit at once)", handle.id());
                }
                handle.cancel("interrupted (Ctrl-C)");
                tokio::spawn(async {
                    let _ = tokio::signal::ctrl_c().await;
                    std::process::exit(i32::from(EXIT_CANCELLED));
                });
            }
            _ = tick.tick(), if bar.is_some() => {
                if let (Some(bar), Some(p)) = (&bar, handle.progress().await) {
                    bar.set_message(format!(
                        "tasks {}/{}  running {}  failed {}  retries {}  attempts ok {}",
                        p.finished, p.tasks, p.running, p.failed, p.retries, p.attempts_succeeded
                    ));
                }
            }
        }
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    engine.shutdown().await;
    output::outcome(&outcome, json);
    output::exit_code(outcome.status)
}
