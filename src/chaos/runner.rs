//! Runs a chaos scenario against real `symphony node` processes on
//! loopback: starts the cluster, submits runs, injects the planned faults,
//! heals, waits for the runs, collects their journals and checks the
//! history.

use std::io::IsTerminal;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value as Json, json};
use tokio::process::{Child, Command};

use super::checker::{Violation, check};
use super::history::{FaultRecord, History, Journal, Line, Setup, SideEffect, Submission};
use super::schedule::{FaultKind, Plan, PlannedFault, plan};

/// The durability of the submitted runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    /// Journal in the owner's sled; the run waits for its owner.
    Local,
    /// Journal on a quorum of voters; the run survives its owner.
    Replicated,
}

impl Durability {
    /// Its name, as in a workflow.
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Local => "local",
            Durability::Replicated => "replicated",
        }
    }
}

/// What a chaos run does.
#[derive(Debug, Clone)]
pub struct Options {
    /// Nodes in the cluster (1 to 9).
    pub nodes: usize,
    /// Runs submitted.
    pub runs: u32,
    /// How long faults are injected.
    pub duration: Duration,
    /// The kinds of fault.
    pub faults: Vec<FaultKind>,
    /// Seed of the plan.
    pub seed: u64,
    /// Where the history goes (JSON lines).
    pub history: PathBuf,
    /// The runs' durability.
    pub durability: Durability,
    /// How long the runs may take to finish once everything is healed.
    pub settle: Duration,
    /// The `symphony` binary the nodes run.
    pub binary: PathBuf,
    /// Keep the work dir (configs, data dirs, logs) even when all is well.
    pub keep: bool,
}

/// What a chaos run found.
#[derive(Debug)]
pub struct Outcome {
    /// Every violation; empty means `ok`.
    pub violations: Vec<Violation>,
    /// The recorded history.
    pub history: History,
    /// The work dir, when kept (on violations, or with `keep`).
    pub work_dir: Option<PathBuf>,
}

/// Time limit of one request to a node.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a node may take to answer `/health` after it starts.
const HEALTH_DEADLINE: Duration = Duration::from_secs(60);
/// How long the cluster may take to see every node up again.
const FORMED_DEADLINE: Duration = Duration::from_secs(30);
/// How long reading one journal may take.
const JOURNAL_DEADLINE: Duration = Duration::from_secs(10);
/// How often conditions are polled.
const POLL: Duration = Duration::from_millis(100);

/// The workflow every run runs: a diamond of four `exec` tasks that each
/// append one side-effect line (after `work_ms` of work).
fn workflow(durability: Durability, binary: &Path, effects: &Path) -> String {
    let q = |p: &Path| Json::String(p.display().to_string()).to_string();
    let task = |name: &str, needs: &str| {
        format!(
            "  {name}:\n    uses: exec\n{needs}    with:\n      command: [{bin}, chaos, record, {file}, --sleep-ms, \"${{{{ inputs.work_ms }}}}\"]\n",
            bin = q(binary),
            file = q(effects),
        )
    };
    format!(
        "version: 1\nname: chaos\ndurability: {d}\ninputs:\n  work_ms: {{ type: int, default: 300 }}\ndefaults:\n  timeout: 30s\n  retry: {{ max_attempts: 5, backoff: exponential, initial: 100ms, max: 1s }}\ntasks:\n{a}{b}{c}{e}",
        d = durability.as_str(),
        a = task("a", ""),
        b = task("b", "    needs: [a]\n"),
        c = task("c", "    needs: [a]\n"),
        e = task("d", "    needs: [b, c]\n"),
    )
}

/// One node process.
#[derive(Debug)]
struct NodeProc {
    name: String,
    config: PathBuf,
    log: PathBuf,
    url: String,
    child: Option<Child>,
    paused: bool,
}

impl NodeProc {
    fn spawn(&mut self, binary: &Path) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("cannot open {}: {e}", self.log.display()))?;
        let mut cmd = Command::new(binary);
        // The caller's SYMPHONY_* variables would override the config file.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SYMPHONY_") {
                cmd.env_remove(key);
            }
        }
        let child = cmd
            .arg("node")
            .arg("--config")
            .arg(&self.config)
            .env("SYMPHONY_LOG", "info")
            // The side-effect recorder names the node its attempt ran on.
            .env(super::NODE_VAR, &self.name)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        self.child = Some(child);
        self.paused = false;
        Ok(())
    }

    fn pid(&self) -> Option<i32> {
        self.child
            .as_ref()
            .and_then(Child::id)
            .and_then(|p| i32::try_from(p).ok())
    }

    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        self.paused = false;
    }

    fn signal(&mut self, stop: bool) -> Result<(), String> {
        let pid = self.pid().ok_or("the node is not running")?;
        signal(pid, stop)?;
        self.paused = stop;
        Ok(())
    }

    /// Asks the node to stop (SIGCONT first if it is paused, then SIGTERM).
    fn terminate(&mut self) {
        if self.paused {
            let _ = self.signal(false);
        }
        if let Some(pid) = self.pid() {
            let _ = terminate(pid);
        }
    }

    /// Waits for the node to stop after [`NodeProc::terminate`], and kills
    /// it after a grace period.
    async fn reap(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
        }
        self.child = None;
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

#[cfg(unix)]
fn signal(pid: i32, stop: bool) -> Result<(), String> {
    use nix::sys::signal::{Signal, kill};
    let sig = if stop {
        Signal::SIGSTOP
    } else {
        Signal::SIGCONT
    };
    kill(nix::unistd::Pid::from_raw(pid), sig).map_err(|e| format!("{sig}: {e}"))
}

#[cfg(unix)]
fn terminate(pid: i32) -> Result<(), String> {
    use nix::sys::signal::{Signal, kill};
    kill(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM).map_err(|e| e.to_string())
}

#[cfg(not(unix))]
fn signal(_pid: i32, _stop: bool) -> Result<(), String> {
    Err("pausing a process needs a Unix system".to_owned())
}

#[cfg(not(unix))]
fn terminate(_pid: i32) -> Result<(), String> {
    Err("no SIGTERM outside Unix".to_owned())
}

/// First of the loopback ports [`free_port`] hands out.
const PORTS_FROM: u32 = 20_000;
/// How many: up to 31,999, below Linux's ephemeral range (32,768 and up).
const PORTS: u32 = 12_000;

/// A loopback port nothing listens on now, below the OS's ephemeral range:
/// outgoing connections and listeners on port 0 take their ports from that
/// range, so none of them can take this one before the node that gets it
/// binds it (and a node restarting on its port finds it free). Each call
/// of a process tries the next port, from a start that depends on the
/// process id, so processes started together rarely meet. Public for the
/// end-to-end tests, which start nodes the same way.
///
/// # Errors
/// When every port of the range is taken.
pub fn free_port() -> Result<u16, String> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7_919) % PORTS;
    for _ in 0..PORTS {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = (PORTS_FROM + (start + n) % PORTS) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(format!(
        "no free loopback port between {PORTS_FROM} and {}",
        PORTS_FROM + PORTS - 1
    ))
}

/// Everything the two loops (submissions, faults) and the end share.
struct Shared {
    http: reqwest::Client,
    start: Instant,
    urls: Vec<String>,
    names: Vec<String>,
    /// Whether each node takes submissions (not killed, not paused).
    available: Vec<AtomicBool>,
    progress: ProgressBar,
}

impl Shared {
    fn ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn say(&self, message: String) {
        if self.progress.is_hidden() {
            tracing::info!("{message}");
        } else {
            self.progress.println(message);
        }
    }

    async fn healthy(&self, i: usize) -> bool {
        let url = format!("{}/health", self.urls[i]);
        matches!(self.http.get(url).send().await, Ok(r) if r.status().is_success())
    }

    /// How many members node `i` sees `up` (itself included).
    async fn up_seen_by(&self, i: usize) -> Option<usize> {
        let url = format!("{}/api/v1/cluster", self.urls[i]);
        let view: Json = self.http.get(url).send().await.ok()?.json().await.ok()?;
        Some(
            view["members"]
                .as_array()?
                .iter()
                .filter(|m| m["state"] == "up")
                .count(),
        )
    }

    async fn faults(&self, i: usize, body: &Json) -> Result<(), String> {
        self.chaos_request(i, reqwest::Method::POST, Some(body), "")
            .await
    }

    async fn heal(&self, i: usize) -> Result<(), String> {
        self.chaos_request(i, reqwest::Method::DELETE, None, " to a heal")
            .await
    }

    /// `method /api/v1/chaos/faults` on node `i`; a failure names the node
    /// and what it answered.
    async fn chaos_request(
        &self,
        i: usize,
        method: reqwest::Method,
        body: Option<&Json>,
        what: &str,
    ) -> Result<(), String> {
        let url = format!("{}/api/v1/chaos/faults", self.urls[i]);
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.json(body);
        }
        let r = request
            .send()
            .await
            .map_err(|e| format!("{}: {e}", self.names[i]))?;
        let status = r.status();
        if status.is_success() {
            return Ok(());
        }
        Err(format!(
            "{} answered {status}{what}: {}",
            self.names[i],
            r.text().await.unwrap_or_default()
        ))
    }
}

/// Polls `cond` every [`POLL`] until it holds or `deadline` passes.
async fn wait_for<F, Fut>(deadline: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + deadline;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn wait_healthy(shared: &Shared, nodes: &mut [NodeProc], i: usize) -> Result<(), String> {
    let ok = wait_for(HEALTH_DEADLINE, || async { shared.healthy(i).await }).await;
    if ok {
        return Ok(());
    }
    let exited = match nodes[i].child.as_mut().map(Child::try_wait) {
        Some(Ok(Some(status))) => format!(" (it exited: {status})"),
        _ => String::new(),
    };
    Err(format!(
        "node {} did not become healthy within {HEALTH_DEADLINE:?}{exited}; the end of its log:\n{}",
        nodes[i].name,
        nodes[i].log_tail()
    ))
}

/// Waits until every node sees every node up.
async fn wait_formed(shared: &Shared) -> bool {
    let n = shared.urls.len();
    wait_for(FORMED_DEADLINE, || async {
        for i in 0..n {
            if shared.up_seen_by(i).await != Some(n) {
                return false;
            }
        }
        true
    })
    .await
}

/// Runs the scenario of `options` and checks it.
///
/// # Errors
/// When the cluster cannot be set up (a node does not start, a file
/// cannot be written): nothing was tested.
pub async fn run(options: Options) -> Result<Outcome, String> {
    if !(1..=9).contains(&options.nodes) {
        return Err(format!("--nodes must be 1 to 9, not {}", options.nodes));
    }
    if options.runs == 0 {
        return Err("--runs must be at least 1".to_owned());
    }
    if options.duration < Duration::from_secs(1) {
        return Err("--duration must be at least 1s".to_owned());
    }
    let plan = plan(
        options.seed,
        options.nodes,
        options.runs,
        options.duration,
        &options.faults,
    );
    let work = tempfile::Builder::new()
        .prefix("symphony-chaos-")
        .tempdir()
        .map_err(|e| format!("cannot create a work dir: {e}"))?;
    let effects = work.path().join("side-effects.log");
    std::fs::write(&effects, b"")
        .map_err(|e| format!("cannot create {}: {e}", effects.display()))?;
    let names: Vec<String> = (1..=options.nodes).map(|i| format!("n{i}")).collect();
    let mut ports = Vec::new();
    for _ in &names {
        ports.push((free_port()?, free_port()?));
    }
    let cookie = ulid::Ulid::new().to_string();
    let mut nodes = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let dir = work.path().join(name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let seeds: Vec<String> = ports
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, (c, _))| format!("127.0.0.1:{c}"))
            .collect();
        let mut config = json!({
            "name": name,
            "listen": format!("127.0.0.1:{}", ports[i].0),
            "http": format!("127.0.0.1:{}", ports[i].1),
            "data_dir": dir.join("data").display().to_string(),
            "cookie": cookie,
            "seeds": seeds,
            "exec_allow": [options.binary.display().to_string()],
            "chaos": { "nemesis": true },
        });
        if options.durability == Durability::Replicated {
            config["raft"] = json!({ "voters": names });
        }
        let yaml = serde_yaml::to_string(&config).map_err(|e| e.to_string())?;
        let path = dir.join("node.yaml");
        std::fs::write(&path, yaml).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        nodes.push(NodeProc {
            name: name.clone(),
            config: path,
            log: dir.join("node.log"),
            url: format!("http://127.0.0.1:{}", ports[i].1),
            child: None,
            paused: false,
        });
    }
    let progress = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(u64::from(options.runs));
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {elapsed:>4} [{bar:30}] {pos}/{len} runs submitted  {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    } else {
        ProgressBar::hidden()
    };
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(1))
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    let shared = Arc::new(Shared {
        http,
        start: Instant::now(),
        urls: nodes.iter().map(|n| n.url.clone()).collect(),
        names: names.clone(),
        available: names.iter().map(|_| AtomicBool::new(false)).collect(),
        progress,
    });
    let setup = Setup {
        seed: options.seed,
        nodes: names.clone(),
        runs: options.runs,
        duration_ms: options.duration.as_millis() as u64,
        faults: options
            .faults
            .iter()
            .map(|f| f.as_str().to_owned())
            .collect(),
        durability: options.durability.as_str().to_owned(),
    };
    let result = scenario(&options, &plan, &shared, &mut nodes, &effects).await;
    shared.progress.set_message("stopping the nodes");
    for node in &mut nodes {
        node.terminate();
    }
    for node in &mut nodes {
        node.reap().await;
    }
    shared.progress.finish_and_clear();
    let history = result?;
    let violations = check(&history);
    write_history(&options.history, &setup, &history, &violations)?;
    let work_dir = if options.keep || !violations.is_empty() {
        Some(work.keep())
    } else {
        None
    };
    Ok(Outcome {
        violations,
        history,
        work_dir,
    })
}

fn write_history(
    path: &Path,
    setup: &Setup,
    history: &History,
    violations: &[Violation],
) -> Result<(), String> {
    let mut text = String::new();
    let mut lines = history.lines(setup);
    lines.push(Line::Verdict {
        ok: violations.is_empty(),
        violations: violations.iter().map(ToString::to_string).collect(),
    });
    for line in &lines {
        let json = serde_json::to_string(line).map_err(|e| e.to_string())?;
        text.push_str(&json);
        text.push('\n');
    }
    std::fs::write(path, text)
        .map_err(|e| format!("cannot write the history to {}: {e}", path.display()))
}

/// Starts the nodes, runs the plan, heals, waits and collects.
async fn scenario(
    options: &Options,
    plan: &Plan,
    shared: &Arc<Shared>,
    nodes: &mut [NodeProc],
    effects: &Path,
) -> Result<History, String> {
    shared.progress.set_message("starting the nodes");
    for node in nodes.iter_mut() {
        node.spawn(&options.binary)?;
    }
    for i in 0..nodes.len() {
        wait_healthy(shared, nodes, i).await?;
        shared.available[i].store(true, Ordering::Release);
    }
    if !wait_formed(shared).await {
        return Err(format!(
            "the {} nodes did not all see each other up within {FORMED_DEADLINE:?}",
            nodes.len()
        ));
    }
    shared.say(format!(
        "chaos: {} nodes up, seed {}, {} runs over {:?}, {} faults planned",
        nodes.len(),
        options.seed,
        options.runs,
        options.duration,
        plan.faults.len()
    ));
    let workflow = workflow(options.durability, &options.binary, effects);
    let durability = options.durability.as_str();
    // The clock of the plan starts now.
    let start = Instant::now();
    let submitter = {
        let shared = Arc::clone(shared);
        let planned = plan.submissions.clone();
        let workflow = workflow.clone();
        let durability = durability.to_owned();
        tokio::spawn(async move {
            let mut submissions = Vec::new();
            for (k, s) in planned.iter().enumerate() {
                tokio::time::sleep_until((start + s.at).into()).await;
                let n = shared.urls.len();
                let node = (0..n)
                    .map(|d| (s.node + d) % n)
                    .find(|&i| shared.available[i].load(Ordering::Acquire))
                    .unwrap_or(s.node);
                let work_ms = 200 + (k as u64 * 37) % 400;
                let body = json!({ "workflow": workflow, "inputs": { "work_ms": work_ms } });
                let at_ms = shared.ms();
                let url = format!("{}/api/v1/runs", shared.urls[node]);
                let answer = shared.http.post(url).json(&body).send().await;
                let (run_id, error) = match answer {
                    Ok(r) if r.status() == reqwest::StatusCode::CREATED => {
                        match r.json::<Json>().await {
                            Ok(v) => match v["run_id"].as_str() {
                                Some(id) => (Some(id.to_owned()), None),
                                None => (None, Some(format!("no run_id in {v}"))),
                            },
                            Err(e) => (None, Some(format!("unreadable answer: {e}"))),
                        }
                    }
                    Ok(r) => {
                        let status = r.status();
                        (
                            None,
                            Some(format!("{status}: {}", r.text().await.unwrap_or_default())),
                        )
                    }
                    Err(e) => (None, Some(e.to_string())),
                };
                if let Some(e) = &error {
                    shared.say(format!(
                        "chaos: submission {k} to {} not acknowledged: {e}",
                        shared.names[node]
                    ));
                }
                shared.progress.inc(1);
                submissions.push(Submission {
                    at_ms,
                    node: shared.names[node].clone(),
                    run_id,
                    error,
                    durability: durability.clone(),
                });
            }
            submissions
        })
    };
    let mut faults = Vec::new();
    for planned in &plan.faults {
        tokio::time::sleep_until((start + planned.at).into()).await;
        faults.push(inject(options, shared, nodes, planned).await);
    }
    tokio::time::sleep_until((start + options.duration).into()).await;
    let submissions = submitter
        .await
        .map_err(|e| format!("the submitting task failed: {e}"))?;
    // Heal everything.
    shared.progress.set_message("healing");
    for node in nodes.iter_mut() {
        if node.paused {
            let _ = node.signal(false);
        }
        let running = matches!(node.child.as_mut().map(Child::try_wait), Some(Ok(None)));
        if !running {
            node.kill().await;
            node.spawn(&options.binary)?;
        }
    }
    for i in 0..nodes.len() {
        wait_healthy(shared, nodes, i).await?;
        let _ = shared.heal(i).await;
        shared.available[i].store(true, Ordering::Release);
    }
    if !wait_formed(shared).await {
        shared.say("chaos: the nodes do not all see each other up after healing".to_owned());
    }
    shared
        .progress
        .set_message("waiting for the runs to finish");
    let acknowledged: Vec<(String, usize)> = submissions
        .iter()
        .filter_map(|s| {
            let id = s.run_id.clone()?;
            let node = shared.names.iter().position(|n| *n == s.node)?;
            Some((id, node))
        })
        .collect();
    let settle_until = Instant::now() + options.settle;
    for (id, node) in &acknowledged {
        let left = settle_until.saturating_duration_since(Instant::now());
        let finished = wait_for(left, || async {
            run_status(shared, id, *node)
                .await
                .1
                .is_some_and(|s| is_final(&s))
        })
        .await;
        if !finished {
            shared.say(format!("chaos: run {id} did not finish in time"));
        }
    }
    shared.progress.set_message("collecting journals");
    let mut journals = Vec::new();
    for (id, node) in &acknowledged {
        journals.push(journal(shared, id, *node).await);
    }
    let text = std::fs::read_to_string(effects)
        .map_err(|e| format!("cannot read {}: {e}", effects.display()))?;
    let side_effects = text.lines().filter_map(SideEffect::parse).collect();
    Ok(History {
        submissions,
        faults,
        side_effects,
        journals,
    })
}

fn is_final(status: &str) -> bool {
    matches!(status, "succeeded" | "failed" | "cancelled")
}

/// The run as the first node that knows it shows it (its submission node
/// first): `(node, status, body)`.
async fn run_status(
    shared: &Shared,
    id: &str,
    first: usize,
) -> (Option<usize>, Option<String>, Json) {
    let n = shared.urls.len();
    for i in (0..n).map(|d| (first + d) % n) {
        let url = format!("{}/api/v1/runs/{id}", shared.urls[i]);
        let Ok(r) = shared.http.get(url).send().await else {
            continue;
        };
        if !r.status().is_success() {
            continue;
        }
        if let Ok(body) = r.json::<Json>().await {
            let status = body["status"].as_str().map(str::to_owned);
            return (Some(i), status, body);
        }
    }
    (None, None, Json::Null)
}

/// Reads a run's journal through the events endpoint.
async fn journal(shared: &Shared, id: &str, first: usize) -> Journal {
    let (node, status, body) = run_status(shared, id, first).await;
    let tasks = body["tasks"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .map(|t| t["id"].as_str().unwrap_or("?").to_owned())
                .collect()
        })
        .unwrap_or_default();
    let Some(node) = node else {
        return Journal {
            run_id: id.to_owned(),
            read_from: None,
            status,
            tasks,
            events: Vec::new(),
            error: Some("no node answered for it".to_owned()),
        };
    };
    let (events, error) = match read_events(shared, id, node).await {
        Ok(events) => (events, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    Journal {
        run_id: id.to_owned(),
        read_from: Some(shared.names[node].clone()),
        status,
        tasks,
        events,
        error,
    }
}

/// The run's events, history first; a run that is not over is read for
/// [`JOURNAL_DEADLINE`] and what came is kept.
async fn read_events(shared: &Shared, id: &str, node: usize) -> Result<Vec<Json>, String> {
    let url = format!("{}/api/v1/runs/{id}/events", shared.urls[node]);
    // The client's own timeout would cut the stream: read under ours.
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(1))
        .build()
        .map_err(|e| e.to_string())?;
    let mut response = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("events of {id}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("events of {id}: {}", response.status()));
    }
    let until = tokio::time::Instant::now() + JOURNAL_DEADLINE;
    let mut raw = Vec::new();
    loop {
        match tokio::time::timeout_at(until, response.chunk()).await {
            Ok(Ok(Some(chunk))) => raw.extend_from_slice(&chunk),
            Ok(Ok(None)) | Err(_) => break,
            Ok(Err(e)) => return Err(format!("events of {id}: {e}")),
        }
    }
    Ok(parse_sse(&String::from_utf8_lossy(&raw)))
}

/// The `data` of every whole event in a `text/event-stream` body.
pub fn parse_sse(text: &str) -> Vec<Json> {
    let text = text.replace("\r\n", "\n");
    let mut blocks: Vec<&str> = text.split("\n\n").collect();
    // The last block is whole only if the text ended with a blank line.
    if !text.ends_with("\n\n") {
        blocks.pop();
    }
    blocks
        .into_iter()
        .filter_map(|block| {
            let data: Vec<&str> = block
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            if data.is_empty() {
                return None;
            }
            serde_json::from_str(&data.join("\n")).ok()
        })
        .collect()
}

/// Carries out one planned fault and undoes it; returns its record.
async fn inject(
    options: &Options,
    shared: &Shared,
    nodes: &mut [NodeProc],
    f: &PlannedFault,
) -> FaultRecord {
    let i = f.node;
    let name = nodes[i].name.clone();
    let others: Vec<usize> = (0..nodes.len()).filter(|&j| j != i).collect();
    let other_names: Vec<String> = others.iter().map(|&j| nodes[j].name.clone()).collect();
    let at_ms = shared.ms();
    let mut errors = Vec::new();
    let detail;
    shared
        .progress
        .set_message(format!("{} {name}", f.kind.as_str()));
    shared.say(format!(
        "chaos: t={:.1}s {} {name} for {:?}",
        at_ms as f64 / 1000.0,
        f.kind.as_str(),
        f.length
    ));
    match f.kind {
        FaultKind::Kill => {
            detail = format!("SIGKILL, restart after {} ms", f.length.as_millis());
            shared.available[i].store(false, Ordering::Release);
            nodes[i].kill().await;
            tokio::time::sleep(f.length).await;
            match nodes[i].spawn(&options.binary) {
                Ok(()) => match wait_healthy(shared, nodes, i).await {
                    Ok(()) => shared.available[i].store(true, Ordering::Release),
                    Err(e) => errors.push(e),
                },
                Err(e) => errors.push(e),
            }
        }
        FaultKind::Pause => {
            detail = format!("SIGSTOP, SIGCONT after {} ms", f.length.as_millis());
            shared.available[i].store(false, Ordering::Release);
            if let Err(e) = nodes[i].signal(true) {
                errors.push(e);
            }
            tokio::time::sleep(f.length).await;
            if nodes[i].paused {
                if let Err(e) = nodes[i].signal(false) {
                    errors.push(e);
                }
            }
            shared.available[i].store(true, Ordering::Release);
        }
        FaultKind::Partition | FaultKind::Delay => {
            let (action, delay_ms) = if f.kind == FaultKind::Partition {
                ("drop", None)
            } else {
                ("delay", Some(f.delay.as_millis() as u64))
            };
            detail = match delay_ms {
                Some(ms) => format!("{ms} ms both ways with {}", other_names.join(",")),
                None => format!("cut off from {}", other_names.join(",")),
            };
            // The faults end by themselves too, should a heal not arrive.
            let for_ms = f.length.as_millis() as u64 + 2_000;
            let fault = |peers: Vec<String>| {
                let mut body = json!({ "peers": peers, "action": action, "for_ms": for_ms });
                if let Some(ms) = delay_ms {
                    body["delay_ms"] = json!(ms);
                }
                body
            };
            if let Err(e) = shared.faults(i, &fault(other_names.clone())).await {
                errors.push(e);
            }
            for &j in &others {
                if let Err(e) = shared.faults(j, &fault(vec![name.clone()])).await {
                    errors.push(e);
                }
            }
            tokio::time::sleep(f.length).await;
            for j in 0..nodes.len() {
                if let Err(e) = shared.heal(j).await {
                    errors.push(e);
                }
            }
        }
    }
    FaultRecord {
        kind: f.kind.as_str().to_owned(),
        node: name,
        at_ms,
        healed_ms: Some(shared.ms()),
        detail,
        error: (!errors.is_empty()).then(|| errors.join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_bodies_parse_to_their_whole_events() {
        let text = "id: 0\nevent: run_submitted\ndata: {\"type\":\"run_submitted\"}\n\n: keep-alive\n\nid: 1\ndata: {\"type\":\"task_scheduled\"}\n\nid: 2\ndata: {\"type\":";
        let events = parse_sse(text);
        assert_eq!(events.len(), 2);
        assert_eq!(events[1]["type"], "task_scheduled");
        assert!(parse_sse("").is_empty());
    }

    #[test]
    fn the_workflow_is_valid_and_records_side_effects() {
        let yaml = workflow(
            Durability::Local,
            Path::new("/opt/sym phony"),
            Path::new("/tmp/x y/effects.log"),
        );
        assert!(yaml.contains("durability: local"));
        let executors =
            crate::executor::Executors::standard(&crate::executor::ExecutorConfig::default());
        let compiled = crate::wdl::compile_str("chaos.yaml", &yaml, &executors);
        assert!(
            compiled.is_ok(),
            "{yaml}\n{:?}",
            compiled.err().map(|d| d.to_string())
        );
    }
}
