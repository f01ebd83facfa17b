//! `symphony chaos run`: a local cluster under faults, and the checker's
//! verdict. `symphony chaos record` (hidden) is the side-effect recorder
//! the chaos workflow's tasks run.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::{EXIT_CONFIG, EXIT_FAILED, EXIT_OK};
use crate::chaos::{self, Durability, FaultKind, Options};

/// `symphony chaos …`.
#[derive(Debug, Subcommand)]
pub enum ChaosCommand {
    /// Start a local cluster, submit runs, inject faults on a seeded
    /// schedule, heal, and check that no run was lost, finished twice or
    /// had a task result committed twice or run again after its commit.
    Run(RunArgs),
    /// (Used by the chaos workflow's tasks) append `run task attempt node`
    /// to FILE.
    #[command(hide = true)]
    Record {
        /// The side-effect file.
        file: PathBuf,
        /// Milliseconds of work before the line is written.
        #[arg(long, default_value_t = 0)]
        sleep_ms: u64,
    },
}

/// Arguments of `symphony chaos run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Nodes in the local cluster (1 to 9).
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Runs submitted, spread over the nodes and over the first 70% of the
    /// duration.
    #[arg(long, default_value_t = 20)]
    pub runs: u32,
    /// How long faults are injected, e.g. 60s or 5m.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// The kinds of fault, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "kill,pause,partition,delay"
    )]
    pub faults: Vec<FaultKind>,
    /// Seed of the schedule [default: from the clock, printed].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Where the history goes (JSON lines).
    #[arg(long, default_value = "chaos-history.jsonl", value_name = "FILE")]
    pub history: PathBuf,
    /// The durability of the submitted runs.
    #[arg(long, value_enum, default_value = "replicated")]
    pub durability: Durability,
    /// How long the runs may take to finish once every fault is healed.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub settle: Duration,
    /// Keep the work dir (node configs, data dirs, logs) even when the
    /// verdict is ok; it is always kept when it is not.
    #[arg(long)]
    pub keep: bool,
}

/// Runs `symphony chaos …`.
pub(crate) fn run(command: ChaosCommand) -> u8 {
    match command {
        ChaosCommand::Record { file, sleep_ms } => {
            match chaos::record(&file, Duration::from_millis(sleep_ms)) {
                Ok(()) => EXIT_OK,
                Err(e) => {
                    eprintln!("error: {e}");
                    EXIT_FAILED
                }
            }
        }
        ChaosCommand::Run(args) => run_scenario(args),
    }
}

fn run_scenario(args: RunArgs) -> u8 {
    if args.faults.is_empty() {
        eprintln!("error: --faults names no fault kind (kill, pause, partition, delay)");
        return EXIT_CONFIG;
    }
    let binary = match std::env::current_exe() {
        Ok(path) => path,
        Err(e) => {
            eprintln!("error: cannot find the symphony binary to start nodes with: {e}");
            return EXIT_FAILED;
        }
    };
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64 % 1_000_000)
    });
    let mut faults = args.faults.clone();
    faults.sort();
    faults.dedup();
    let options = Options {
        nodes: args.nodes,
        runs: args.runs,
        duration: args.duration,
        faults,
        seed,
        history: args.history.clone(),
        durability: args.durability,
        settle: args.settle,
        binary,
        keep: args.keep,
    };
    let outcome = match super::runtime().block_on(chaos::runner::run(options)) {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("error: {e}");
            return if e.starts_with("--") {
                EXIT_CONFIG
            } else {
                EXIT_FAILED
            };
        }
    };
    let h = &outcome.history;
    let acknowledged = h.submissions.iter().filter(|s| s.run_id.is_some()).count();
    eprintln!(
        "chaos: seed {seed}: {acknowledged}/{} submissions acknowledged, {} faults, {} side effects, history in {}",
        h.submissions.len(),
        h.faults.len(),
        h.side_effects.len(),
        args.history.display()
    );
    if let Some(dir) = &outcome.work_dir {
        eprintln!(
            "chaos: node configs, data dirs and logs kept in {}",
            dir.display()
        );
    }
    if outcome.violations.is_empty() {
        println!("ok");
        EXIT_OK
    } else {
        println!("{} violations:", outcome.violations.len());
        for v in &outcome.violations {
            println!("- {v}");
        }
        EXIT_FAILED
    }
}
