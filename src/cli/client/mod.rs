//! Commands that talk to a node over its HTTP API: `submit`, `status`,
//! `runs --server`, `cancel`, `watch` and `cluster status`.
//!
//! The server comes from `--server` or `SYMPHONY_SERVER` (default
//! `http://127.0.0.1:8080`), the bearer token from `--token` or
//! `SYMPHONY_TOKEN`. Data goes to stdout (exactly one JSON document with
//! `--json`), progress and errors to stderr. Exit codes are those of
//! `symphony run`: 0 succeeded, 1 failed (or the request failed), 78 invalid
//! workflow or inputs, 130 cancelled.
//!
//! [`Api`] and [`ClientError`] are the HTTP client of every command that
//! talks to a node (`models` and `pipelines` too).
//!
//! Here: the arguments and one function per command. `submit` builds the
//! request body, `follow` streams a run to its end (over `sse`), `documents`
//! reads the server's answers, `http` is the client.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{Value as Json, json};

mod documents;
mod follow;
mod http;
mod sse;
mod submit;
#[cfg(test)]
mod tests;

pub(crate) use http::{Api, ClientError, root_cause, segment};
pub(crate) use submit::workflow_request;

use super::{EXIT_OK, output};
use crate::store::RunStatus;
use documents::{cluster_table, outcome_of, summaries_of};
use follow::{follow, progress_text};
use submit::submission;

/// Where the client looks for a node when neither `--server` nor
/// `SYMPHONY_SERVER` says.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// Time limit of one request (event streams excepted).
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Time limit for connecting to the server.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How many times in a row an event stream may fail to reconnect.
pub(super) const MAX_RECONNECTS: u32 = 20;
/// How often the progress line asks for the run's counts.
pub(super) const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Which node to talk to, and how to authenticate.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// The node's HTTP API, e.g. http://127.0.0.1:8081.
    #[arg(long, env = "SYMPHONY_SERVER", default_value = DEFAULT_SERVER, value_name = "URL")]
    pub server: String,
    /// The API's bearer token.
    #[arg(
        long,
        env = "SYMPHONY_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
}

impl ServerArgs {
    /// A client of this server.
    ///
    /// # Errors
    /// [`ClientError::BadServer`] when `--server` is not an http(s) URL.
    pub(super) fn api(&self) -> Result<Api, ClientError> {
        Api::new(&self.server, self.token.as_deref())
    }
}

/// Arguments of `symphony submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The workflow file; the files it imports are sent along.
    pub file: PathBuf,
    /// Workflow inputs.
    #[command(flatten)]
    pub inputs: super::inputs::InputArgs,
    /// Follow the run to its end and exit as `symphony run` does.
    #[arg(long)]
    pub wait: bool,
    /// Print one JSON document on stdout and nothing else there.
    #[arg(long)]
    pub json: bool,
    /// The server.
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Arguments of the commands that name one run.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The run id.
    pub run_id: String,
    /// Print one JSON document on stdout and nothing else there.
    #[arg(long)]
    pub json: bool,
    /// The server.
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Arguments of `symphony runs`: a node's runs over HTTP with `--server`
/// (or `SYMPHONY_SERVER`), else the runs of a local data dir.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The local data dir and `--json`.
    #[command(flatten)]
    pub local: super::run::RunsArgs,
    /// List the runs of the node serving this HTTP API instead of a data dir.
    #[arg(long, env = "SYMPHONY_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// The API's bearer token.
    #[arg(
        long,
        env = "SYMPHONY_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
}

/// `symphony cluster …`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// The members of the cluster as a node sees them.
    Status {
        /// Print one JSON document on stdout and nothing else there.
        #[arg(long)]
        json: bool,
        /// The server.
        #[command(flatten)]
        server: ServerArgs,
    },
}

// ---- commands --------------------------------------------------------------

/// `symphony submit`.
pub(crate) async fn submit(args: SubmitArgs) -> u8 {
    let body = match submission(&args) {
        Ok(body) => body,
        Err(code) => return code,
    };
    let api = match Api::new(&args.server.server, args.server.token.as_deref()) {
        Ok(api) => api,
        Err(e) => return e.report(),
    };
    let created = match api.post("/api/v1/runs", &body).await {
        Ok(doc) => doc,
        Err(e) => return e.report(),
    };
    let Some(run_id) = created.get("run_id").and_then(Json::as_str) else {
        return ClientError::Protocol(format!("the server answered without a run id: {created}"))
            .report();
    };
    if args.wait {
        if !args.json {
            eprintln!("submitted run {run_id} to {}", api.base);
        }
        return follow(&api, run_id, args.json).await;
    }
    if args.json {
        println!("{created}");
    } else {
        eprintln!("submitted run {run_id} to {}", api.base);
        println!("{run_id}");
    }
    EXIT_OK
}

/// `symphony status`.
pub(crate) async fn status(args: RunArgs) -> u8 {
    let api = match Api::new(&args.server.server, args.server.token.as_deref()) {
        Ok(api) => api,
        Err(e) => return e.report(),
    };
    let info = match api.run(&args.run_id).await {
        Ok(info) => info,
        Err(e) => return e.report(),
    };
    if args.json {
        println!("{info}");
        return EXIT_OK;
    }
    match outcome_of(&info) {
        Ok(outcome) => {
            output::outcome(&outcome, false);
            if outcome.status == RunStatus::Running {
                if let Some(p) = info.get("progress") {
                    println!("progress: {}", progress_text(p));
                }
            }
            EXIT_OK
        }
        Err(e) => e.report(),
    }
}

/// `symphony runs`: over HTTP when a server is given, else from a data dir.
pub(crate) async fn runs(args: ListArgs) -> u8 {
    let Some(server) = args.server else {
        return super::run::runs(args.local);
    };
    let api = match Api::new(&server, args.token.as_deref()) {
        Ok(api) => api,
        Err(e) => return e.report(),
    };
    let list = match api.get("/api/v1/runs").await {
        Ok(list) => list,
        Err(e) => return e.report(),
    };
    if args.local.json {
        println!("{list}");
        return EXIT_OK;
    }
    match summaries_of(&list) {
        Ok(all) => {
            output::runs(&all, false);
            EXIT_OK
        }
        Err(e) => e.report(),
    }
}

/// `symphony cancel`.
pub(crate) async fn cancel(args: RunArgs) -> u8 {
    let api = match Api::new(&args.server.server, args.server.token.as_deref()) {
        Ok(api) => api,
        Err(e) => return e.report(),
    };
    let path = format!("/api/v1/runs/{}/cancel", segment(&args.run_id));
    match api.post(&path, &json!({})).await {
        Ok(doc) if args.json => {
            println!("{doc}");
            EXIT_OK
        }
        Ok(_) => {
            println!("cancelling run {}", args.run_id);
            EXIT_OK
        }
        Err(e) => e.report(),
    }
}

/// `symphony watch`.
pub(crate) async fn watch(args: RunArgs) -> u8 {
    let api = match Api::new(&args.server.server, args.server.token.as_deref()) {
        Ok(api) => api,
        Err(e) => return e.report(),
    };
    follow(&api, &args.run_id, args.json).await
}

/// `symphony cluster status`.
pub(crate) async fn cluster(command: ClusterCommand) -> u8 {
    let ClusterCommand::Status { json, server } = command;
    let api = match Api::new(&server.server, server.token.as_deref()) {
        Ok(api) => api,
        Err(e) => return e.report(),
    };
    let view = match api.get("/api/v1/cluster").await {
        Ok(view) => view,
        Err(e) => return e.report(),
    };
    if json {
        println!("{view}");
    } else {
        print!("{}", cluster_table(&view));
    }
    EXIT_OK
}
