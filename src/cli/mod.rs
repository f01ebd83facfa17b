//! The `symphony` command line. Thin: parse arguments, call the library, map
//! errors to exit codes. Data goes to stdout (one JSON document with
//! `--json`), progress and diagnostics to stderr.

mod inputs;
mod output;
mod run;
mod source;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use self::source::{compile_submitted, load_workflow};

/// Exit code: the run succeeded / the files are valid.
pub const EXIT_OK: u8 = 0;
/// Exit code: the run failed, or an operation failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: invalid workflow or inputs (EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;
/// Exit code: the run was cancelled (128 + SIGINT).
pub const EXIT_CANCELLED: u8 = 130;

/// Default data directory of the embedded node, relative to the current
/// directory.
pub const DEFAULT_DATA_DIR: &str = ".symphony";

/// Symphony: run AI workflows written in YAML.
#[derive(Debug, Parser)]
#[command(name = "symphony", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a workflow on an embedded single node and wait for it.
    Run(run::RunArgs),
    /// Continue an interrupted run from its journal.
    Resume(run::ResumeArgs),
    /// List the runs recorded in a data dir.
    Runs(run::RunsArgs),
    /// Check workflow files and report every problem.
    Validate {
        /// Workflow files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the JSON Schema of the workflow language (for editors).
    Schema,
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let code = match cli.command {
        Command::Validate { files, json } => source::validate(&files, json),
        Command::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&crate::wdl::json_schema()).expect("schema is JSON")
            );
            EXIT_OK
        }
        Command::Run(args) => runtime().block_on(run::run(args)),
        Command::Resume(args) => runtime().block_on(run::resume(args)),
        Command::Runs(args) => run::runs(args),
    };
    ExitCode::from(code)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime starts")
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SYMPHONY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
