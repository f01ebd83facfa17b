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

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use indicatif::ProgressBar;
use reqwest::StatusCode;
use serde_json::{Value as Json, json};

use super::{EXIT_CANCELLED, EXIT_CONFIG, EXIT_FAILED, EXIT_OK, EXIT_TEMPFAIL, output};
use crate::engine::{RunOutcome, TaskReport, TaskStatus};
use crate::executor::{ExecutorConfig, Executors};
use crate::store::{RunStatus, RunSummary};
use crate::value::Value;
use crate::wdl::{self, Sources, Workflow};

/// Where the client looks for a node when neither `--server` nor
/// `SYMPHONY_SERVER` says.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// Time limit of one request (event streams excepted).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Time limit for connecting to the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How many times in a row an event stream may fail to reconnect.
const MAX_RECONNECTS: u32 = 20;
/// How often the progress line asks for the run's counts.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

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

// ---- submit ----------------------------------------------------------------

/// The body of `POST /api/v1/runs`, after compiling the workflow and checking
/// the inputs here, so mistakes are reported before anything is sent.
///
/// Errors are printed; the exit code is returned.
fn submission(args: &SubmitArgs) -> Result<Json, u8> {
    let (workflow, mut body) = workflow_request(&args.file)?;
    let given = args.inputs.collect(&workflow).map_err(|e| {
        eprintln!("error: {e}");
        EXIT_CONFIG
    })?;
    if let Err(problems) = wdl::check_inputs(&workflow, &given) {
        for p in problems {
            eprintln!("error: {p}");
        }
        return Err(EXIT_CONFIG);
    }
    body["inputs"] = Value::Map(given).to_json();
    Ok(body)
}

/// Compiles the workflow `file` here, so mistakes are reported before
/// anything is sent, and returns it with the request body that carries it
/// and the files it imports: `{workflow, name, files}`, as `POST
/// /api/v1/runs` and `POST /api/v1/pipelines` take it.
///
/// Errors (diagnostics as `file:line:col: …`) are printed; the exit code is
/// returned.
pub(super) fn workflow_request(file: &Path) -> Result<(Workflow, Json), u8> {
    let sources = Sources::read(file);
    // The server checks `uses` against its own executors; here every
    // standard executor and any model are accepted.
    let executors = Executors::standard(&ExecutorConfig::default());
    let mut catalog: Vec<String> = executors.names().map(str::to_owned).collect();
    catalog.push("model/*".into());
    let workflow = wdl::compile(&sources, &catalog).map_err(|diagnostics| {
        eprint!("{diagnostics}");
        EXIT_CONFIG
    })?;
    let main = sources.main();
    let dir = Path::new(main).parent().unwrap_or(Path::new(""));
    let Some((_, text)) = sources.files().find(|(p, _)| *p == main) else {
        eprintln!("error: cannot read {}", file.display());
        return Err(EXIT_CONFIG);
    };
    let files: BTreeMap<String, &str> = sources
        .files()
        .filter(|(p, _)| *p != main)
        .map(|(p, t)| (relative_to(p, dir), t))
        .collect();
    let body = json!({
        "workflow": text,
        "name": relative_to(main, dir),
        "files": files,
    });
    Ok((workflow, body))
}

/// `path` relative to the directory `base`, both lexically normalised.
fn relative_to(path: &str, base: &Path) -> String {
    let path: Vec<Component<'_>> = Path::new(path).components().collect();
    let base: Vec<Component<'_>> = base.components().collect();
    let common = path.iter().zip(&base).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..base.len() {
        out.push("..");
    }
    for c in &path[common..] {
        out.push(c.as_os_str());
    }
    out.to_string_lossy().replace('\\', "/")
}

// ---- following a run -------------------------------------------------------

/// Follows a run's event stream to its end, showing progress on stderr, then
/// prints its outcome like `symphony run` and returns the exit code.
/// Ctrl-C stops watching (the run goes on) and exits 130.
async fn follow(api: &Api, run_id: &str, as_json: bool) -> u8 {
    let info = match api.run(run_id).await {
        Ok(info) => info,
        Err(e) => return e.report(),
    };
    let names: Vec<String> = info
        .get("tasks")
        .and_then(Json::as_array)
        .map(|tasks| {
            tasks
                .iter()
                .map(|t| t.get("id").and_then(Json::as_str).unwrap_or("?").to_owned())
                .collect()
        })
        .unwrap_or_default();
    let bar = std::io::stderr()
        .is_terminal()
        .then(|| output::progress_bar(run_id));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let ticker = bar
        .clone()
        .map(|bar| tokio::spawn(tick_progress(api.clone(), run_id.to_owned(), bar, stopped)));
    let streamed = tokio::select! {
        r = stream_events(api, run_id, &names, bar.is_none()) => r,
        _ = tokio::signal::ctrl_c() => {
            let _ = stop.send(true);
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            eprintln!("stopped watching run {run_id}; it goes on (`symphony cancel {run_id}` stops it)");
            return EXIT_CANCELLED;
        }
    };
    let _ = stop.send(true);
    if let Some(ticker) = ticker {
        let _ = ticker.await;
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if let Err(e) = streamed {
        return e.report();
    }
    let info = match api.run(run_id).await {
        Ok(info) => info,
        Err(e) => return e.report(),
    };
    let outcome = match outcome_of(&info) {
        Ok(o) => o,
        Err(e) => return e.report(),
    };
    if as_json {
        println!("{}", outcome_json(&info));
    } else {
        output::outcome(&outcome, false);
    }
    output::exit_code(outcome.status)
}

/// Reads the event stream until the run's final event, reconnecting (from
/// the last event seen) when the stream breaks before it.
async fn stream_events(
    api: &Api,
    run_id: &str,
    names: &[String],
    print_lines: bool,
) -> Result<(), ClientError> {
    let mut last: Option<u64> = None;
    let mut failures = 0u32;
    loop {
        let ended = match api.events(run_id, last).await {
            Ok(None) => return Ok(()),
            Ok(Some(response)) => {
                failures = 0;
                let mut reader = SseReader::new(response);
                loop {
                    match reader.next().await {
                        Ok(Some(event)) => {
                            if let Some(seq) = event.id.as_deref().and_then(|s| s.parse().ok()) {
                                last = Some(seq);
                            }
                            let data: Json =
                                serde_json::from_str(&event.data).unwrap_or(Json::Null);
                            if print_lines {
                                eprintln!("{}", describe(last, &event.event, &data, names));
                            }
                            if is_final(&event.event, &data) {
                                return Ok(());
                            }
                        }
                        Ok(None) => break Ok(()),
                        Err(e) => break Err(e),
                    }
                }
            }
            Err(e) => Err(e),
        };
        // The stream ended before the final event: the run may be over
        // anyway (its final event went missing), or the link broke.
        match api.run(run_id).await {
            Ok(info) if run_status(&info).is_some_and(RunStatus::is_final) => return Ok(()),
            Ok(_) => {}
            Err(e @ (ClientError::NotFound(_) | ClientError::Unauthorized { .. })) => {
                return Err(e);
            }
            Err(e) => {
                failures += 1;
                if failures > MAX_RECONNECTS {
                    return Err(e);
                }
            }
        }
        if let Err(e) = ended {
            failures += 1;
            if failures > MAX_RECONNECTS {
                return Err(e);
            }
        }
        // At least a little: a stream that keeps ending at once must not spin.
        let backoff = Duration::from_millis(100 * u64::from(failures.clamp(1, 20)));
        tokio::time::sleep(backoff).await;
    }
}

fn is_final(kind: &str, data: &Json) -> bool {
    let kind = data.get("type").and_then(Json::as_str).unwrap_or(kind);
    matches!(kind, "run_succeeded" | "run_failed" | "run_cancelled")
}

/// One line for one event: sequence number, kind, and what it says.
fn describe(seq: Option<u64>, kind: &str, data: &Json, names: &[String]) -> String {
    let kind = data.get("type").and_then(Json::as_str).unwrap_or(kind);
    let task_name = |index: Option<u64>| -> String {
        index
            .and_then(|i| names.get(usize::try_from(i).ok()?))
            .cloned()
            .unwrap_or_else(|| format!("#{}", index.unwrap_or(0)))
    };
    let key = || {
        let key = data.get("key");
        let task = task_name(key.and_then(|k| k.get("task")).and_then(Json::as_u64));
        match key.and_then(|k| k.get("item")).and_then(Json::as_u64) {
            Some(item) => format!("{task}[{item}]"),
            None => task,
        }
    };
    let attempt = data.get("attempt").and_then(Json::as_u64).unwrap_or(0);
    let text = |field: &str| {
        data.get(field)
            .and_then(Json::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let what = match kind {
        "run_submitted" => format!("run submitted (workflow {})", text("workflow")),
        "task_expanded" => format!(
            "{} expanded into {} items",
            task_name(data.get("task").and_then(Json::as_u64)),
            data.get("items").and_then(Json::as_u64).unwrap_or(0)
        ),
        "task_scheduled" => format!("{} attempt {attempt} scheduled on {}", key(), text("node")),
        "task_succeeded" => format!("{} attempt {attempt} succeeded", key()),
        "task_failed" => {
            let error = data.get("error");
            let class = error
                .and_then(|e| e.get("class"))
                .and_then(Json::as_str)
                .unwrap_or("");
            let message = error
                .and_then(|e| e.get("message"))
                .and_then(Json::as_str)
                .unwrap_or("");
            let retry = if data.get("will_retry").and_then(Json::as_bool) == Some(true) {
                " (will retry)"
            } else {
                ""
            };
            format!(
                "{} attempt {attempt} failed: {class}: {message}{retry}",
                key()
            )
        }
        "task_skipped" => format!(
            "{} skipped: {}",
            task_name(data.get("task").and_then(Json::as_u64)),
            text("reason")
        ),
        "run_succeeded" => "run succeeded".into(),
        "run_failed" => format!("run failed: {}", text("reason")),
        "run_cancelled" => format!("run cancelled: {}", text("reason")),
        other => format!("{other} {data}"),
    };
    match seq {
        Some(seq) => format!("{seq:>5} {kind:<15} {what}"),
        None => format!("      {kind:<15} {what}"),
    }
}

/// Keeps the progress line current until told to stop.
async fn tick_progress(
    api: Api,
    run_id: String,
    bar: ProgressBar,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if let Ok(info) = api.run(&run_id).await {
            if let Some(p) = info.get("progress") {
                bar.set_message(progress_text(p));
            }
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(PROGRESS_EVERY) => {}
        }
    }
}

fn progress_text(p: &Json) -> String {
    let n = |field: &str| p.get(field).and_then(Json::as_u64).unwrap_or(0);
    format!(
        "tasks {}/{}  running {}  failed {}  retries {}  attempts ok {}",
        n("finished"),
        n("tasks"),
        n("running"),
        n("failed"),
        n("retries"),
        n("attempts_succeeded")
    )
}

// ---- reading the server's documents ----------------------------------------

fn run_status(info: &Json) -> Option<RunStatus> {
    parse_run_status(info.get("status")?.as_str()?)
}

fn parse_run_status(s: &str) -> Option<RunStatus> {
    [
        RunStatus::Running,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Cancelled,
    ]
    .into_iter()
    .find(|status| status.as_str() == s)
}

fn parse_task_status(s: &str) -> Option<TaskStatus> {
    [
        TaskStatus::Waiting,
        TaskStatus::Ready,
        TaskStatus::Running,
        TaskStatus::Succeeded,
        TaskStatus::Failed,
        TaskStatus::Skipped,
    ]
    .into_iter()
    .find(|status| status.as_str() == s)
}

/// A run document (`GET /api/v1/runs/{id}`) as the outcome `symphony run`
/// prints.
fn outcome_of(info: &Json) -> Result<RunOutcome, ClientError> {
    let bad = || ClientError::Protocol(format!("unexpected run document: {info}"));
    let text = |field: &str| info.get(field).and_then(Json::as_str).map(str::to_owned);
    let mut tasks = Vec::new();
    for t in info.get("tasks").and_then(Json::as_array).ok_or_else(bad)? {
        tasks.push(TaskReport {
            id: t
                .get("id")
                .and_then(Json::as_str)
                .ok_or_else(bad)?
                .to_owned(),
            uses: t
                .get("uses")
                .and_then(Json::as_str)
                .unwrap_or_default()
                .to_owned(),
            needs: t
                .get("needs")
                .and_then(Json::as_array)
                .map(|needs| {
                    needs
                        .iter()
                        .filter_map(|n| n.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            status: t
                .get("status")
                .and_then(Json::as_str)
                .and_then(parse_task_status)
                .ok_or_else(bad)?,
            attempts: t
                .get("attempts")
                .and_then(Json::as_u64)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0),
            items: t
                .get("items")
                .and_then(Json::as_u64)
                .and_then(|n| usize::try_from(n).ok()),
            error: t.get("error").and_then(Json::as_str).map(str::to_owned),
        });
    }
    Ok(RunOutcome {
        run_id: text("run_id").ok_or_else(bad)?,
        workflow: text("workflow").unwrap_or_default(),
        status: run_status(info).ok_or_else(bad)?,
        outputs: Value::from_json(info.get("outputs").cloned().unwrap_or(Json::Null)),
        error: text("error"),
        tasks,
        dropped_results: 0,
    })
}

/// A run document in the shape `symphony run --json` prints: `{run_id,
/// status, outputs, tasks: {ID: {status, attempts, items?, error?}},
/// error?}`.
fn outcome_json(info: &Json) -> Json {
    let mut tasks = serde_json::Map::new();
    for t in info
        .get("tasks")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        let Some(id) = t.get("id").and_then(Json::as_str) else {
            continue;
        };
        let mut entry = json!({
            "status": t.get("status").cloned().unwrap_or(Json::Null),
            "attempts": t.get("attempts").cloned().unwrap_or(json!(0)),
        });
        for field in ["items", "error"] {
            if let Some(v) = t.get(field).filter(|v| !v.is_null()) {
                entry[field] = v.clone();
            }
        }
        tasks.insert(id.to_owned(), entry);
    }
    let mut doc = json!({
        "run_id": info.get("run_id").cloned().unwrap_or(Json::Null),
        "status": info.get("status").cloned().unwrap_or(Json::Null),
        "outputs": info.get("outputs").cloned().unwrap_or(Json::Null),
        "tasks": tasks,
    });
    if let Some(e) = info.get("error").filter(|e| !e.is_null()) {
        doc["error"] = e.clone();
    }
    doc
}

fn summaries_of(list: &Json) -> Result<Vec<RunSummary>, ClientError> {
    let bad = || ClientError::Protocol(format!("unexpected run list: {list}"));
    let mut out = Vec::new();
    for r in list.as_array().ok_or_else(bad)? {
        let n = |field: &str| r.get(field).and_then(Json::as_u64).unwrap_or(0);
        out.push(RunSummary {
            id: r
                .get("id")
                .and_then(Json::as_str)
                .ok_or_else(bad)?
                .to_owned(),
            workflow: r
                .get("workflow")
                .and_then(Json::as_str)
                .unwrap_or("")
                .to_owned(),
            status: r
                .get("status")
                .and_then(Json::as_str)
                .and_then(parse_run_status)
                .ok_or_else(bad)?,
            created_ms: n("created_ms"),
            updated_ms: n("updated_ms"),
        });
    }
    Ok(out)
}

/// `symphony cluster status` as a table: NAME ADDR STATE LOAD/SLOTS LABELS.
fn cluster_table(view: &Json) -> String {
    let node = view.get("node").and_then(Json::as_str).unwrap_or("?");
    let joined = view.get("joined").and_then(Json::as_bool).unwrap_or(false);
    let mut rows = vec![[
        "NAME".to_owned(),
        "ADDR".into(),
        "STATE".into(),
        "LOAD/SLOTS".into(),
        "LABELS".into(),
    ]];
    for m in view
        .get("members")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        let text = |f: &str| m.get(f).and_then(Json::as_str).unwrap_or("?").to_owned();
        let n = |f: &str| m.get(f).and_then(Json::as_u64).unwrap_or(0);
        let labels = m
            .get("labels")
            .and_then(Json::as_object)
            .map(|l| {
                l.iter()
                    .map(|(k, v)| {
                        format!(
                            "{k}={}",
                            v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .filter(|l| !l.is_empty())
            .unwrap_or_else(|| "-".into());
        rows.push([
            text("name"),
            text("addr"),
            text("state"),
            format!("{}/{}", n("load"), n("slots")),
            labels,
        ]);
    }
    let widths: Vec<usize> = (0..4)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let state = if joined { "joined" } else { "not joined yet" };
    let mut out = format!("cluster as seen by {node} ({state})\n");
    for r in &rows {
        for (c, width) in widths.iter().enumerate() {
            out.push_str(&format!("{:<width$}  ", r[c]));
        }
        out.push_str(&r[4]);
        out.push('\n');
    }
    if let Some(raft) = view.get("raft").filter(|r| r.is_object()) {
        out.push_str(&raft_lines(raft));
    }
    out
}

/// The replicated log's lines of `symphony cluster status`.
fn raft_lines(raft: &Json) -> String {
    let text = |f: &str| {
        raft.get(f)
            .and_then(Json::as_str)
            .unwrap_or("none")
            .to_owned()
    };
    let num = |f: &str| {
        raft.get(f)
            .and_then(Json::as_u64)
            .map_or_else(|| "-".to_owned(), |n| n.to_string())
    };
    let names = |f: &str| {
        let list: Vec<&str> = raft
            .get(f)
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .filter_map(Json::as_str)
            .collect();
        if list.is_empty() {
            "-".to_owned()
        } else {
            list.join(",")
        }
    };
    let mut out = format!(
        "replicated log: leader {}  term {}  this node {}  applied {}  last log {}\n  voters {}  learners {}\n",
        text("leader"),
        num("term"),
        text("role"),
        num("applied_index"),
        num("last_log_index"),
        names("voters"),
        names("learners"),
    );
    if let Some(lag) = raft
        .get("lag")
        .and_then(Json::as_object)
        .filter(|l| !l.is_empty())
    {
        let lags: Vec<String> = lag.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push_str(&format!(
            "  lag (entries behind the leader) {}\n",
            lags.join(" ")
        ));
    }
    if let Some(stalled) = raft.get("stalled").filter(|s| s.is_object()) {
        out.push_str(&format!(
            "  commits stalled for {} ms: {}\n",
            stalled.get("for_ms").and_then(Json::as_u64).unwrap_or(0),
            stalled.get("reason").and_then(Json::as_str).unwrap_or("?")
        ));
    }
    out
}

// ---- HTTP ------------------------------------------------------------------

/// What went wrong talking to the server, or in what was typed before
/// anything was sent.
#[derive(Debug)]
pub(super) enum ClientError {
    /// What the user typed is wrong (a bad name, file or argument), found
    /// before anything was sent (exit 78).
    Usage(String),
    /// Already printed where it was found (a workflow's diagnostics); the
    /// exit code.
    Reported(u8),
    /// The server URL is not one.
    BadServer(String),
    /// No connection (refused, unknown host, timed out).
    Unreachable { server: String, reason: String },
    /// 401: no token, or the wrong one.
    Unauthorized { server: String, had_token: bool },
    /// 400 or 422: the request, the workflow or its inputs are invalid (the
    /// answer's body; exit 78).
    Invalid(Json),
    /// 404.
    NotFound(String),
    /// 409 or 413, or an upload cut short: the server refused what was
    /// asked, and its message says why.
    Refused(String),
    /// 429: the node is at its bound (of pipeline invocations in flight);
    /// the same request may succeed later (exit 75).
    Busy {
        server: String,
        message: String,
        /// The `Retry-After` header, when given.
        retry_after: Option<String>,
    },
    /// Any other error answer.
    Status { status: StatusCode, message: String },
    /// An answer that is not what the API promises.
    Protocol(String),
}

impl ClientError {
    /// [`ClientError::Usage`] from any error's text.
    pub(super) fn usage(e: impl std::fmt::Display) -> ClientError {
        ClientError::Usage(e.to_string())
    }

    /// Prints the error on stderr and returns the exit code.
    pub(super) fn report(&self) -> u8 {
        match self {
            ClientError::Usage(message) => {
                eprintln!("error: {message}");
                EXIT_CONFIG
            }
            ClientError::Reported(code) => *code,
            ClientError::Busy {
                server,
                message,
                retry_after,
            } => {
                let when = retry_after
                    .as_deref()
                    .map_or_else(|| "later".to_owned(), |s| format!("in {s}s"));
                eprintln!("error: the server at {server} is busy: {message} (try again {when})");
                EXIT_TEMPFAIL
            }
            ClientError::Invalid(body) => {
                if let Some(text) = body.get("text").and_then(Json::as_str) {
                    eprint!("{text}");
                    if !text.ends_with('\n') {
                        eprintln!();
                    }
                } else if let Some(problems) = body.get("problems").and_then(Json::as_array) {
                    for p in problems {
                        eprintln!(
                            "error: {}",
                            p.as_str().map_or_else(|| p.to_string(), str::to_owned)
                        );
                    }
                } else {
                    eprintln!("error: {}", error_message(body));
                }
                EXIT_CONFIG
            }
            ClientError::BadServer(s) => {
                eprintln!(
                    "error: {s:?} is not a server URL; expected e.g. http://127.0.0.1:8080 (--server or SYMPHONY_SERVER)"
                );
                EXIT_FAILED
            }
            ClientError::Unreachable { server, reason } => {
                eprintln!(
                    "error: cannot reach the server at {server}: {reason} (is `symphony node` running there? set --server or SYMPHONY_SERVER)"
                );
                EXIT_FAILED
            }
            ClientError::Unauthorized { server, had_token } => {
                if *had_token {
                    eprintln!(
                        "error: the server at {server} refused the API token (check --token or SYMPHONY_TOKEN)"
                    );
                } else {
                    eprintln!(
                        "error: the server at {server} requires an API token; give it with --token or SYMPHONY_TOKEN"
                    );
                }
                EXIT_FAILED
            }
            ClientError::NotFound(message)
            | ClientError::Refused(message)
            | ClientError::Protocol(message) => {
                eprintln!("error: {message}");
                EXIT_FAILED
            }
            ClientError::Status { status, message } => {
                eprintln!("error: the server answered {status}: {message}");
                EXIT_FAILED
            }
        }
    }
}

fn error_message(body: &Json) -> String {
    body.get("error")
        .and_then(Json::as_str)
        .map_or_else(|| body.to_string(), str::to_owned)
}

/// A connection to one node's API.
#[derive(Debug, Clone)]
pub(super) struct Api {
    /// `http(s)://host:port`, without a trailing slash.
    pub(super) base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Api {
    /// A client of the node at `server` (`http://` is assumed when no scheme
    /// is given), sending `token` as the bearer token when it is not blank.
    ///
    /// # Errors
    /// [`ClientError::BadServer`] when `server` is not an http(s) URL.
    pub(super) fn new(server: &str, token: Option<&str>) -> Result<Api, ClientError> {
        let server = server.trim().trim_end_matches('/');
        let base = if server.contains("://") {
            server.to_owned()
        } else {
            format!("http://{server}")
        };
        let url = reqwest::Url::parse(&base).map_err(|_| ClientError::BadServer(server.into()))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(ClientError::BadServer(server.into()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| ClientError::Protocol(format!("cannot start an HTTP client: {e}")))?;
        Ok(Api {
            base,
            token: token
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
            http,
        })
    }

    /// A request for `path` (from `/api/…`) with the token, without a time
    /// limit (the helpers below set one).
    pub(super) fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// `GET path`; see [`Api::send`].
    pub(super) async fn get(&self, path: &str) -> Result<Json, ClientError> {
        let request = self
            .request(reqwest::Method::GET, path)
            .timeout(REQUEST_TIMEOUT);
        self.send(request).await
    }

    /// `POST path` with a JSON body; see [`Api::send`].
    pub(super) async fn post(&self, path: &str, body: &Json) -> Result<Json, ClientError> {
        let request = self
            .request(reqwest::Method::POST, path)
            .timeout(REQUEST_TIMEOUT)
            .json(body);
        self.send(request).await
    }

    /// `PUT path` with a JSON body; see [`Api::send`].
    pub(super) async fn put(&self, path: &str, body: &Json) -> Result<Json, ClientError> {
        let request = self
            .request(reqwest::Method::PUT, path)
            .timeout(REQUEST_TIMEOUT)
            .json(body);
        self.send(request).await
    }

    /// `DELETE path`; see [`Api::send`].
    pub(super) async fn delete(&self, path: &str) -> Result<Json, ClientError> {
        let request = self
            .request(reqwest::Method::DELETE, path)
            .timeout(REQUEST_TIMEOUT);
        self.send(request).await
    }

    /// `GET /api/v1/runs/{id}`.
    async fn run(&self, run_id: &str) -> Result<Json, ClientError> {
        self.get(&format!("/api/v1/runs/{}", segment(run_id))).await
    }

    /// Opens a run's event stream after event `after`; `None` when the run
    /// is over and there is nothing more to send (204).
    async fn events(
        &self,
        run_id: &str,
        after: Option<u64>,
    ) -> Result<Option<reqwest::Response>, ClientError> {
        let mut request = self
            .request(
                reqwest::Method::GET,
                &format!("/api/v1/runs/{}/events", segment(run_id)),
            )
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(seq) = after {
            request = request.header("Last-Event-ID", seq.to_string());
        }
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        if response.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        if response.status().is_success() {
            return Ok(Some(response));
        }
        Err(self.error_answer(response).await)
    }

    /// Sends `request`; see [`Api::answer`].
    ///
    /// # Errors
    /// No connection, or an error answer.
    pub(super) async fn send(&self, request: reqwest::RequestBuilder) -> Result<Json, ClientError> {
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        self.answer(response).await
    }

    /// The JSON of a success answer (`null` for an empty one, such as a
    /// 204), else the error it is.
    ///
    /// # Errors
    /// An error answer, or a body that is not JSON.
    pub(super) async fn answer(&self, response: reqwest::Response) -> Result<Json, ClientError> {
        if !response.status().is_success() {
            return Err(self.error_answer(response).await);
        }
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| self.unreachable(&e))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Json::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            ClientError::Protocol(format!(
                "the server at {} answered {status} with a body that is not JSON ({e})",
                self.base
            ))
        })
    }

    /// An answer as the type the API promises.
    ///
    /// # Errors
    /// [`ClientError::Protocol`] when it is not one.
    pub(super) fn parse<T: serde::de::DeserializeOwned>(
        &self,
        answer: Json,
    ) -> Result<T, ClientError> {
        serde_json::from_value(answer.clone()).map_err(|e| {
            ClientError::Protocol(format!(
                "the server at {} answered with an unexpected document ({e}): {answer}",
                self.base
            ))
        })
    }

    async fn error_answer(&self, response: reqwest::Response) -> ClientError {
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body: Json = match response.bytes().await {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| json!({ "error": String::from_utf8_lossy(&bytes).trim() })),
            Err(e) => json!({ "error": e.to_string() }),
        };
        match status {
            StatusCode::UNAUTHORIZED => ClientError::Unauthorized {
                server: self.base.clone(),
                had_token: self.token.is_some(),
            },
            StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => {
                ClientError::Invalid(body)
            }
            StatusCode::NOT_FOUND => ClientError::NotFound(error_message(&body)),
            StatusCode::CONFLICT | StatusCode::PAYLOAD_TOO_LARGE => {
                ClientError::Refused(error_message(&body))
            }
            StatusCode::TOO_MANY_REQUESTS => ClientError::Busy {
                server: self.base.clone(),
                message: error_message(&body),
                retry_after,
            },
            _ => ClientError::Status {
                status,
                message: error_message(&body),
            },
        }
    }

    /// The error of a request that got no answer.
    pub(super) fn unreachable(&self, e: &reqwest::Error) -> ClientError {
        ClientError::Unreachable {
            server: self.base.clone(),
            reason: root_cause(e),
        }
    }
}

/// The innermost cause of an error, which says what actually happened
/// ("connection refused"), in lower case.
pub(super) fn root_cause(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let text = cause.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    text.to_lowercase()
}

/// A run id (or any name) as one URL path segment.
pub(super) fn segment(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

// ---- server-sent events ----------------------------------------------------

/// One server-sent event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct SseEvent {
    /// `id:`, when given.
    id: Option<String>,
    /// `event:` (`message` when not given).
    event: String,
    /// `data:` lines, joined by newlines.
    data: String,
}

/// Splits a byte stream into server-sent events (the WHATWG format: fields
/// up to a blank line; `:` starts a comment, such as a keep-alive).
#[derive(Debug, Default)]
struct SseParser {
    buf: Vec<u8>,
    current: SseEvent,
    has_data: bool,
}

impl SseParser {
    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete event in what was pushed so far.
    fn next_event(&mut self) -> Option<SseEvent> {
        while let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
            let mut line: Vec<u8> = self.buf.drain(..=end).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line);
            if line.is_empty() {
                let event = std::mem::take(&mut self.current);
                let had_data = std::mem::take(&mut self.has_data);
                if had_data || !event.event.is_empty() {
                    return Some(SseEvent {
                        event: if event.event.is_empty() {
                            "message".into()
                        } else {
                            event.event
                        },
                        ..event
                    });
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (&*line, ""),
            };
            match field {
                "id" => self.current.id = Some(value.to_owned()),
                "event" => self.current.event = value.to_owned(),
                "data" => {
                    if self.has_data {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                    self.has_data = true;
                }
                _ => {}
            }
        }
        None
    }
}

/// Server-sent events from a response body, read chunk by chunk.
struct SseReader {
    response: reqwest::Response,
    parser: SseParser,
}

impl SseReader {
    fn new(response: reqwest::Response) -> SseReader {
        SseReader {
            response,
            parser: SseParser::default(),
        }
    }

    /// The next event, or `None` when the stream ended.
    ///
    /// Cancel safe: what was read stays in the parser.
    async fn next(&mut self) -> Result<Option<SseEvent>, ClientError> {
        loop {
            if let Some(event) = self.parser.next_event() {
                return Ok(Some(event));
            }
            match self.response.chunk().await {
                Ok(Some(bytes)) => self.parser.push(&bytes),
                Ok(None) => return Ok(None),
                Err(e) => {
                    return Err(ClientError::Unreachable {
                        server: self.response.url().origin().ascii_serialization(),
                        reason: root_cause(&e),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_split_across_chunks() {
        let stream = b": keep-alive\n\nid: 0\nevent: run_submitted\ndata: {\"type\":\"run_submitted\"}\n\nid: 1\r\nevent: task_scheduled\r\ndata: a\r\ndata: b\r\n\r\n";
        for split in 1..stream.len() {
            let mut parser = SseParser::default();
            let mut events = Vec::new();
            for chunk in stream.chunks(split) {
                parser.push(chunk);
                while let Some(e) = parser.next_event() {
                    events.push(e);
                }
            }
            assert_eq!(events.len(), 2, "chunks of {split}");
            assert_eq!(events[0].id.as_deref(), Some("0"));
            assert_eq!(events[0].event, "run_submitted");
            assert_eq!(events[0].data, "{\"type\":\"run_submitted\"}");
            assert_eq!(events[1].event, "task_scheduled");
            assert_eq!(events[1].data, "a\nb");
        }
    }

    #[test]
    fn imports_are_sent_relative_to_the_main_file() {
        assert_eq!(
            relative_to("examples/lib/t.yaml", Path::new("examples")),
            "lib/t.yaml"
        );
        assert_eq!(
            relative_to("shared/t.yaml", Path::new("dir")),
            "../shared/t.yaml"
        );
        assert_eq!(relative_to("wf.yaml", Path::new("")), "wf.yaml");
        assert_eq!(
            relative_to("/tmp/x/wf.yaml", Path::new("/tmp/x")),
            "wf.yaml"
        );
    }

    #[test]
    fn events_read_as_one_line() {
        let names = vec!["clean".to_owned(), "score".to_owned()];
        let e = json!({"type": "task_failed", "key": {"task": 1, "item": 3}, "attempt": 2,
            "error": {"class": "timeout", "message": "took too long", "retryable": true}, "will_retry": true});
        let line = describe(Some(7), "task_failed", &e, &names);
        assert!(
            line.contains("score[3] attempt 2 failed: timeout: took too long (will retry)"),
            "{line}"
        );
        assert!(is_final(
            "run_failed",
            &json!({"type": "run_failed", "reason": "x"})
        ));
        assert!(!is_final("task_failed", &e));
    }

    #[test]
    fn run_documents_become_outcomes() {
        let info = json!({
            "run_id": "r1", "workflow": "w", "status": "failed", "outputs": null,
            "error": "task \"b\" failed",
            "tasks": [{"id": "a", "status": "succeeded", "attempts": 1, "items": 2},
                      {"id": "b", "status": "failed", "attempts": 3, "error": "boom"}],
            "progress": {"tasks": 2, "finished": 2, "failed": 1, "running": 0, "attempts_succeeded": 2, "retries": 2},
            "created_ms": 1
        });
        let o = outcome_of(&info).unwrap();
        assert_eq!(o.status, RunStatus::Failed);
        assert_eq!(o.tasks[1].status, TaskStatus::Failed);
        let doc = outcome_json(&info);
        assert_eq!(
            doc["tasks"]["a"],
            json!({"status": "succeeded", "attempts": 1, "items": 2})
        );
        assert_eq!(doc["tasks"]["b"]["error"], "boom");
        assert_eq!(doc["error"], "task \"b\" failed");
        assert!(doc.get("progress").is_none());
    }

    #[test]
    fn cluster_tables_align() {
        let view = json!({"node": "node1", "joined": true, "members": [
            {"name": "node1", "addr": "127.0.0.1:7401", "state": "up", "labels": {}, "slots": 256, "load": 0},
            {"name": "node3", "addr": "127.0.0.1:7403", "state": "suspect", "labels": {"gpu": "true"}, "slots": 8, "load": 3},
        ]});
        let table = cluster_table(&view);
        assert!(
            table.starts_with("cluster as seen by node1 (joined)\nNAME "),
            "{table}"
        );
        assert!(
            table.contains("node3  127.0.0.1:7403  suspect  3/8         gpu=true"),
            "{table}"
        );
    }

    #[test]
    fn servers_need_a_scheme_or_get_http() {
        assert_eq!(
            Api::new("127.0.0.1:8081", None).unwrap().base,
            "http://127.0.0.1:8081"
        );
        assert_eq!(
            Api::new("https://x.example/", Some(" ")).unwrap().token,
            None
        );
        assert!(Api::new("ftp://x", None).is_err());
        assert_eq!(segment("01J/../x"), "01J%2F..%2Fx");
    }
}
