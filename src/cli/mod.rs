//! The `symphony` command line. Thin: parse arguments, call the library, map
//! errors to exit codes. Data goes to stdout (one JSON document with
//! `--json`), progress and diagnostics to stderr.
//!
//! `run`, `resume`, `runs`, `validate` and `schema` work on an embedded
//! node; `node` starts a cluster node; `submit`, `status`, `cancel`, `watch`,
//! `cluster status`, `runs --server`, `models` and `pipelines` talk to a
//! node's HTTP API; `chaos run` starts a cluster of its own to test.

mod chaos;
mod client;
mod inputs;
mod models;
mod output;
mod pipelines;
mod run;
mod source;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use self::client::DEFAULT_SERVER;
pub use self::source::{compile_submitted, load_workflow};
use crate::node::config::{NodeArgs, NodeConfig};

/// Exit code: the run succeeded / the files are valid.
pub const EXIT_OK: u8 = 0;
/// Exit code: the run failed, or an operation failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: the node is at its bound (429); the same request may succeed
/// later (EX_TEMPFAIL).
pub const EXIT_TEMPFAIL: u8 = 75;
/// Exit code: invalid workflow, inputs or node configuration (EX_CONFIG).
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
    /// How log lines look on stderr: `pretty` for people, `json` (one
    /// object a line, with the span fields) for log collectors.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "SYMPHONY_LOG_FORMAT",
        default_value = "pretty"
    )]
    pub log_format: LogFormat,
}

/// The format of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a workflow on an embedded single node and wait for it.
    Run(run::RunArgs),
    /// Continue an interrupted run from its journal.
    Resume(run::ResumeArgs),
    /// List the runs of a data dir, or of a node with --server.
    Runs(client::ListArgs),
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
    /// Start a cluster node: join the seeds, run workflows, serve the HTTP API.
    Node(Box<NodeArgs>),
    /// Submit a workflow to a node (and, with --wait, follow it to its end).
    Submit(client::SubmitArgs),
    /// Show a run on a node.
    Status(client::RunArgs),
    /// Cancel a run on a node.
    Cancel(client::RunArgs),
    /// Follow a run on a node live until it ends.
    Watch(client::RunArgs),
    /// Look at the cluster through a node.
    #[command(subcommand)]
    Cluster(client::ClusterCommand),
    /// Manage a node's model registry: register, alias, list, show, delete.
    #[command(subcommand)]
    Models(models::ModelsCommand),
    /// Serve workflows at request speed: register, list, show, delete and
    /// invoke a node's pipelines.
    #[command(subcommand)]
    Pipelines(pipelines::PipelinesCommand),
    /// Test the cluster under faults: a local cluster, runs, kills,
    /// pauses, partitions, delays, and a checker's verdict.
    #[command(subcommand)]
    Chaos(chaos::ChaosCommand),
    /// Print a shell completion script (e.g. `symphony completions bash >
    /// /etc/bash_completion.d/symphony`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // A node's log is how an operator sees it work; commands stay quiet.
    init_logging(
        if matches!(cli.command, Command::Node(_)) {
            "info"
        } else {
            "warn"
        },
        cli.log_format,
    );
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
        Command::Runs(args) => runtime().block_on(client::runs(args)),
        Command::Node(args) => node(&args),
        Command::Submit(args) => runtime().block_on(client::submit(args)),
        Command::Status(args) => runtime().block_on(client::status(args)),
        Command::Cancel(args) => runtime().block_on(client::cancel(args)),
        Command::Watch(args) => runtime().block_on(client::watch(args)),
        Command::Cluster(command) => runtime().block_on(client::cluster(command)),
        Command::Models(command) => runtime().block_on(models::run(command)),
        Command::Pipelines(command) => runtime().block_on(pipelines::run(command)),
        Command::Chaos(command) => chaos::run(command),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "symphony",
                &mut std::io::stdout(),
            );
            EXIT_OK
        }
    };
    ExitCode::from(code)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime starts")
}

/// `symphony node`: loads the configuration (every problem at once, exit
/// 78), then runs the node until it stops.
fn node(args: &NodeArgs) -> u8 {
    let config = match NodeConfig::load(args) {
        Ok(config) => config,
        Err(e) => {
            for problem in e.problems() {
                eprintln!("error: {problem}");
            }
            return EXIT_CONFIG;
        }
    };
    if args.check {
        print!("{}", config.to_redacted_yaml());
        return EXIT_OK;
    }
    match runtime().block_on(crate::node::run(config)) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_FAILED
        }
    }
}

/// Logs to stderr at `SYMPHONY_LOG` (an env-filter directive) or `default`,
/// in `format`.
fn init_logging(default: &str, format: LogFormat) {
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("SYMPHONY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // openraft narrates every election and replication stream at `info`;
    // keep its warnings unless SYMPHONY_LOG asks for more of it by name.
    let asked = std::env::var("SYMPHONY_LOG").unwrap_or_default();
    if !asked.contains("openraft") {
        if let Ok(directive) = "openraft=warn".parse() {
            filter = filter.add_directive(directive);
        }
    }
    let logger = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Pretty => logger.try_init(),
        LogFormat::Json => logger
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
