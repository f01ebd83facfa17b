//! Deterministic simulation of the pure cores of replicated durability.
//!
//! Several simulated nodes own runs (one [`RunState`] per owned run) and
//! execute attempts for each other; the replicated log is one linearizable
//! [`Machine`] plus the committed journals. Consensus itself is openraft's
//! job and is not simulated, but every message between a node and the log
//! (commands and their outcomes) and between an owner and a worker
//! (assignments, results, stops) crosses a simulated network that drops,
//! delays, duplicates and reorders them. Nodes crash (losing everything
//! volatile) and restart, or pause (SIGSTOP) and resume with stale state; a
//! failure-detector oracle declares them down and up again.
//!
//! The simulated owner follows the engine's rules (`src/engine/run.rs`,
//! `src/raft/journal.rs`, `src/raft/failover.rs`): actions after a `Persist`
//! wait until the log applied it; one append per run in flight, resent as
//! the very same command until an outcome arrives; an "out of order"
//! refusal at a length that covers the append means it was applied; any
//! other refusal makes the node give the run up; a node that learns a
//! node is down fails its attempts there with `node_lost` and, if it is
//! the run's successor, takes the lost node's runs over with
//! `Own { epoch: current + 1 }` and resumes once its own (lagging) copy of
//! the log holds that `Own`, from the journal up to there; a node claims
//! the runs it owns but does not run (after a restart) again at a new epoch.
//!
//! Invariants, checked at the end of every seed:
//! - every acknowledged submission has exactly one final event in its
//!   committed journal (and no run has more than one);
//! - no task result is committed twice (at most one `TaskSucceeded` per key);
//! - no task that had a committed result ran again (no execution of an
//!   attempt newer than the committed one);
//! - what an owner takes for durable is in the committed journal where it
//!   thinks, and every outcome a node announces is the committed one;
//! - every run succeeds once the faults stop (within a step budget).
//!
//! `SIM_SEEDS=N` runs N seeds; `SIM_SEED=S` runs seed S alone and prints
//! its trace. Single-threaded per seed, no runtime, no real time.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use symphony::engine::retry::NODE_LOST;
use symphony::engine::state::{Action, Input, RunConfig, RunState, Timer};
use symphony::engine::{JournalEvent, SubmittedSource, TaskKey};
use symphony::executor::TaskError;
use symphony::raft::failover::successor;
use symphony::raft::journal::already_applied;
use symphony::raft::state::{Append, Command, Machine, Outcome};
use symphony::store::{RunStatus, RunSummary};
use symphony::value::{Map, Value};
use symphony::wdl::{self, Sources, Workflow};

/// A diamond with a fan-out in one branch, then a chain.
const WORKFLOW: &str = r#"
version: 1
name: sim
durability: replicated
defaults:
  timeout: 500ms
  retry: { max_attempts: 20, backoff: exponential, initial: 10ms, max: 200ms }
tasks:
  a: { uses: sim/work }
  b: { uses: sim/work, needs: [a], with: { from: "${{ tasks.a.outputs }}" } }
  c: { uses: sim/work, needs: [a], for_each: [1, 2, 3], with: { item: "${{ item }}" } }
  d: { uses: sim/work, needs: [b, c] }
  e: { uses: sim/work, needs: [d] }
outputs:
  e: ${{ tasks.e.outputs }}
"#;

// Simulated time, in milliseconds.
/// How often a node looks at the log (ownership changes, orphans, takeovers).
const TICK: u64 = 100;
/// How long a node is silent before the failure detector declares it down.
const DOWN_AFTER: u64 = 300;
/// How long after it is back before it is declared up again.
const UP_AFTER: u64 = 100;
/// Spread of the moment each node learns a verdict (below `UP_AFTER`, so a
/// node never learns "up" before "down").
const DETECT_JITTER: u64 = 80;
/// How long a run this node owns but does not run waits before a claim.
const ORPHANED_FOR: u64 = 500;
/// How long an append waits for its outcome before it is sent again.
const RESEND: u64 = 200;
/// How long an ownership claim waits for its outcome before another.
const CLAIM_RETRY: u64 = 400;
/// How often the log's state reaches the nodes.
const REPLICATE: u64 = 50;
/// Step budget of one seed.
const MAX_STEPS: u64 = 1_000_000;
/// Simulated time after the faults stop within which every run must end.
const SETTLE: u64 = 120_000;

/// What the simulated system gets wrong on purpose, to prove the checker
/// catches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// The system as built.
    Correct,
    /// The log applies an append from any node at any epoch (no fencing).
    NoFencing,
    /// The log appends whatever it is sent at the end of the journal,
    /// bypassing the machine's owner, epoch and sequence checks.
    TrustingLog,
    /// A node that took a run over replays the journal it has applied so
    /// far without waiting until that includes its `Own` (so it may miss the
    /// last events of the previous owner).
    StaleReplay,
}

/// Parameters of one seed, drawn from its RNG.
#[derive(Debug, Clone)]
struct Params {
    nodes: usize,
    runs: usize,
    drop: f64,
    dup: f64,
    max_delay: u64,
    long_delay: f64,
    flaky: f64,
    fault_end: u64,
    faults: usize,
}

#[derive(Debug, Clone)]
enum Ev {
    /// A client submits run number `i` to some live node.
    Submit(usize),
    /// A command reaches the log.
    Log {
        from: usize,
        req: u64,
        command: Box<Command>,
    },
    /// A message reaches a node.
    Msg {
        to: usize,
        msg: Box<Msg>,
    },
    /// Something node-local (timer, tick, attempt end) of incarnation `inc`.
    Local {
        node: usize,
        inc: u64,
        what: Local,
    },
    Crash {
        node: usize,
        restart_after: u64,
    },
    Restart(usize),
    Pause {
        node: usize,
        resume_after: u64,
    },
    Resume(usize),
    /// The failure detector checks whether outage `outage` of `node` lasts.
    DownCheck {
        node: usize,
        outage: u64,
    },
    /// `observer` learns that `peer` is down (or up).
    Detect {
        observer: usize,
        peer: usize,
        down: bool,
    },
    /// The faults stop: every node comes back.
    Heal,
    /// A node is crashed or paused (chosen when it happens).
    Fault,
    /// The log's state goes out to every node.
    Replicate,
}

#[derive(Debug, Clone)]
enum Msg {
    /// The log's state at `index`, as replication brings it to a node.
    State { index: u64, machine: Machine },
    LogReply {
        req: u64,
        /// Log index the command was applied at.
        index: u64,
        outcome: Outcome,
    },
    Assign {
        run: String,
        owner: usize,
        key: TaskKey,
        attempt: u32,
    },
    Result {
        run: String,
        key: TaskKey,
        attempt: u32,
        result: Result<Value, TaskError>,
    },
    Stop {
        run: String,
        key: TaskKey,
        attempt: u32,
    },
}

#[derive(Debug, Clone)]
enum Local {
    Tick,
    Timer {
        run: String,
        life: u64,
        timer: Timer,
    },
    Resend {
        run: String,
        life: u64,
        req: u64,
    },
    AttemptDone {
        job: u64,
    },
}

struct Scheduled {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    /// Earliest first in a max-heap.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Up,
    Paused,
    Crashed,
}

#[derive(Debug, Clone)]
enum Req {
    Append { run: String, life: u64 },
    Own { run: String, epoch: u64 },
}

/// Events waiting to be sent, `first_seq..upto`.
struct Batch {
    first_seq: u64,
    upto: u64,
    events: Vec<Vec<u8>>,
    summary: Option<RunSummary>,
}

struct InFlight {
    req: u64,
    command: Command,
    upto: u64,
}

/// A run this node owns and runs: what `RunActorState` keeps.
struct Owned {
    state: RunState,
    epoch: u64,
    /// Identifies this incarnation of the run on this node (timers).
    life: u64,
    created_ms: u64,
    next_seq: u64,
    durable_seq: u64,
    deferred: VecDeque<(u64, Action)>,
    inflight: Option<InFlight>,
    queued: VecDeque<Batch>,
    /// Attempts out on other nodes: key → (attempt, node).
    remote: BTreeMap<TaskKey, (u32, usize)>,
    placed: BTreeMap<TaskKey, usize>,
    /// Submitted here and not yet acknowledged to the client.
    unacked: bool,
    /// Finished or given up: drop it.
    gone: bool,
}

struct Node {
    name: String,
    status: Status,
    inc: u64,
    outage: u64,
    held: Vec<Ev>,
    down: BTreeSet<usize>,
    runs: BTreeMap<String, Owned>,
    requests: BTreeMap<u64, Req>,
    /// Ownership claims in flight: run → (epoch, sent at).
    claims: BTreeMap<String, (u64, u64)>,
    /// Runs owned here, not run here: run → since.
    orphans: BTreeMap<String, u64>,
    /// Highest epoch of each run this node took over.
    handled: BTreeMap<String, u64>,
    /// Attempts executing here: job → (run, key, attempt, owner).
    jobs: BTreeMap<u64, (String, TaskKey, u32, usize)>,
    /// This node's applied copy of the log's state and its index: it lags
    /// behind the log (and a paused node's copy is stale on resume). Kept
    /// across a crash, as sled keeps it.
    view: Machine,
    view_index: u64,
    /// Runs this node owns now, to resume once its view holds the `Own`:
    /// run → (epoch, log index of the `Own`).
    takeovers: BTreeMap<String, (u64, u64)>,
}

/// One execution of an attempt: the simulated side effect.
#[derive(Debug, Clone)]
struct Execution {
    run: String,
    key: TaskKey,
    attempt: u32,
    node: usize,
    at: u64,
}

/// A broken invariant.
#[derive(Debug, Clone)]
struct Violation {
    invariant: &'static str,
    detail: String,
}

#[derive(Debug, Default)]
struct Stats {
    steps: u64,
    end_ms: u64,
    runs: usize,
    acked: usize,
    executions: usize,
    takeovers: u64,
    given_up: u64,
    dropped_results: u64,
    /// Ownership claims the log refused (racing or stale).
    claims_refused: u64,
    /// Resent appends found already applied.
    already_applied: u64,
}

impl Stats {
    fn add(&mut self, other: &Stats) {
        self.steps += other.steps;
        self.end_ms += other.end_ms;
        self.runs += other.runs;
        self.acked += other.acked;
        self.executions += other.executions;
        self.takeovers += other.takeovers;
        self.given_up += other.given_up;
        self.dropped_results += other.dropped_results;
        self.claims_refused += other.claims_refused;
        self.already_applied += other.already_applied;
    }
}

struct Sim {
    variant: Variant,
    rng: StdRng,
    p: Params,
    now: u64,
    seq: u64,
    ids: u64,
    queue: BinaryHeap<Scheduled>,
    nodes: Vec<Node>,
    machine: Machine,
    /// Commands applied so far.
    index: u64,
    journals: BTreeMap<String, Vec<Vec<u8>>>,
    declared_down: BTreeSet<usize>,
    pending_submits: usize,
    healed: bool,
    acked: BTreeSet<String>,
    executions: Vec<Execution>,
    announced: Vec<(String, usize, RunStatus)>,
    workflow: Arc<Workflow>,
    source: SubmittedSource,
    inputs: Map,
    violation: Option<Violation>,
    trace: Option<Vec<String>>,
    stats: Stats,
}

fn compile(source: &SubmittedSource) -> Result<Workflow, String> {
    wdl::compile(&source.to_sources(), &["sim/work"]).map_err(|d| d.to_string())
}

/// The status a run's summary records after `event` (as `run.rs`).
fn summary_status(event: &JournalEvent) -> Option<RunStatus> {
    match event {
        JournalEvent::RunSubmitted { .. } => Some(RunStatus::Running),
        JournalEvent::RunSucceeded { .. } => Some(RunStatus::Succeeded),
        JournalEvent::RunFailed { .. } => Some(RunStatus::Failed),
        JournalEvent::RunCancelled { .. } => Some(RunStatus::Cancelled),
        _ => None,
    }
}

/// The verdict on one of this node's appends, as the committer gives it.
fn judge(command: &Command, outcome: &Outcome) -> Result<(), String> {
    let commands: Vec<&Command> = match command {
        Command::Batch(c) => c.iter().collect(),
        other => vec![other],
    };
    let outcomes: Vec<Outcome> = match outcome {
        Outcome::Batch(o) => o.clone(),
        other => vec![other.clone(); commands.len()],
    };
    for (command, outcome) in commands.iter().zip(&outcomes) {
        if let Some(refusal) = outcome.refusal() {
            if !already_applied(command, refusal) {
                return Err(refusal.to_string());
            }
        }
    }
    Ok(())
}

/// The appends of `command` that `outcome` says were applied.
fn applied_appends<'a>(command: &'a Command, outcome: &Outcome, out: &mut Vec<&'a Append>) {
    match (command, outcome) {
        (Command::Batch(cs), Outcome::Batch(os)) => {
            for (c, o) in cs.iter().zip(os) {
                applied_appends(c, o, out);
            }
        }
        (Command::Append(a), Outcome::Applied) => out.push(a),
        _ => {}
    }
}

fn key_str(key: TaskKey) -> String {
    match key.item {
        Some(i) => format!("{}[{i}]", key.task),
        None => key.task.to_string(),
    }
}

impl Sim {
    fn new(seed: u64, variant: Variant, trace: bool) -> Sim {
        let mut rng = StdRng::seed_from_u64(seed);
        let calm = rng.random_bool(0.1);
        let p = Params {
            nodes: rng.random_range(3..=5),
            runs: rng.random_range(2..=5),
            drop: if calm {
                0.0
            } else {
                rng.random_range(0.0..0.15)
            },
            dup: if calm {
                0.0
            } else {
                rng.random_range(0.0..0.1)
            },
            max_delay: rng.random_range(2..=40),
            long_delay: if calm {
                0.0
            } else {
                rng.random_range(0.0..0.05)
            },
            flaky: rng.random_range(0.0..0.2),
            fault_end: rng.random_range(2_000..=6_000),
            faults: if calm { 0 } else { rng.random_range(1..=8) },
        };
        let sources = Sources::new("sim.yaml", WORKFLOW);
        let source = SubmittedSource::from_sources(&sources);
        let workflow = compile(&source).expect("the simulated workflow compiles");
        let inputs = wdl::check_inputs(&workflow, &Map::new()).expect("no inputs");
        let nodes = (0..p.nodes)
            .map(|i| Node {
                name: format!("n{i}"),
                status: Status::Up,
                inc: 0,
                outage: 0,
                held: Vec::new(),
                down: BTreeSet::new(),
                runs: BTreeMap::new(),
                requests: BTreeMap::new(),
                claims: BTreeMap::new(),
                orphans: BTreeMap::new(),
                handled: BTreeMap::new(),
                jobs: BTreeMap::new(),
                view: Machine::default(),
                view_index: 0,
                takeovers: BTreeMap::new(),
            })
            .collect();
        let mut sim = Sim {
            variant,
            rng,
            now: 0,
            seq: 0,
            ids: 0,
            queue: BinaryHeap::new(),
            nodes,
            machine: Machine::default(),
            index: 0,
            journals: BTreeMap::new(),
            declared_down: BTreeSet::new(),
            pending_submits: p.runs,
            healed: false,
            acked: BTreeSet::new(),
            executions: Vec::new(),
            announced: Vec::new(),
            workflow: Arc::new(workflow),
            source,
            inputs,
            violation: None,
            trace: trace.then(Vec::new),
            stats: Stats::default(),
            p,
        };
        let params = format!("params {:?}", sim.p);
        sim.log(|| params);
        for n in 0..sim.p.nodes {
            let at = sim.rng.random_range(0..TICK);
            sim.at(
                at,
                Ev::Local {
                    node: n,
                    inc: 0,
                    what: Local::Tick,
                },
            );
        }
        for i in 0..sim.p.runs {
            let at = sim.rng.random_range(0..sim.p.fault_end * 7 / 10);
            sim.at(at, Ev::Submit(i));
        }
        for _ in 0..sim.p.faults {
            let at = sim.rng.random_range(100..sim.p.fault_end);
            sim.at(at, Ev::Fault);
        }
        sim.at(sim.p.fault_end, Ev::Heal);
        sim.at(REPLICATE, Ev::Replicate);
        sim
    }

    fn log(&mut self, line: impl FnOnce() -> String) {
        if let Some(trace) = &mut self.trace {
            trace.push(format!("{:>7} {}", self.now, line()));
        }
    }

    fn id(&mut self) -> u64 {
        self.ids += 1;
        self.ids
    }

    fn at(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Scheduled {
            at,
            seq: self.seq,
            ev,
        });
    }

    fn after(&mut self, delay: u64, ev: Ev) {
        self.at(self.now + delay, ev);
    }

    fn local(&mut self, node: usize, delay: u64, what: Local) {
        let inc = self.nodes[node].inc;
        self.after(delay, Ev::Local { node, inc, what });
    }

    fn faulty(&self) -> bool {
        self.now < self.p.fault_end
    }

    /// Sends a message through the network: maybe dropped, maybe twice,
    /// each copy with its own delay (so reordered).
    fn send(&mut self, ev: Ev) {
        let faulty = self.faulty();
        if faulty && self.rng.random_bool(self.p.drop) {
            self.log(|| format!("net: dropped {}", short(&ev)));
            return;
        }
        let copies = if faulty && self.rng.random_bool(self.p.dup) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = if !faulty {
                self.rng.random_range(1..=5)
            } else if self.rng.random_bool(self.p.long_delay) {
                self.rng.random_range(100..=800)
            } else {
                self.rng.random_range(1..=self.p.max_delay)
            };
            self.after(delay, ev.clone());
        }
    }

    fn fail(&mut self, invariant: &'static str, detail: String) {
        if self.violation.is_none() {
            self.violation = Some(Violation { invariant, detail });
        }
    }

    /// Runs the seed to its end and checks the invariants.
    fn run(mut self) -> (Result<Stats, Violation>, Vec<String>) {
        let mut steps = 0;
        let result = loop {
            let Some(next) = self.queue.pop() else {
                break Err(Violation {
                    invariant: "liveness",
                    detail: "nothing left to happen but runs are not finished".into(),
                });
            };
            self.now = next.at;
            steps += 1;
            self.handle(next.ev);
            if self.violation.is_some() {
                break Err(self.violation.take().expect("set"));
            }
            if self.healed && steps % 64 == 0 && self.settled() {
                break Ok(());
            }
            if steps >= MAX_STEPS || self.now > self.p.fault_end + SETTLE {
                break Err(Violation {
                    invariant: "liveness",
                    detail: format!(
                        "runs not finished {} ms after the faults stopped ({steps} steps): {}",
                        self.now - self.p.fault_end,
                        self.unfinished().join(", ")
                    ),
                });
            }
        };
        self.stats.steps = steps;
        self.stats.end_ms = self.now;
        // Safety first: a liveness failure may come from a safety one.
        let result = match (self.check_safety(), result) {
            (Err(v), _) | (Ok(()), Err(v)) => Err(v),
            (Ok(()), Ok(())) => self.check_liveness(),
        };
        let trace = self.trace.take().unwrap_or_default();
        (result.map(|()| self.stats), trace)
    }

    fn unfinished(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .machine
            .runs()
            .filter(|(_, r)| !r.is_final())
            .map(|(run, r)| format!("{run} (owner {} epoch {})", r.owner, r.epoch))
            .collect();
        for node in &self.nodes {
            for run in node.runs.keys() {
                out.push(format!("{run} live on {}", node.name));
            }
        }
        out
    }

    /// Whether the faults stopped long enough ago that nothing sent before
    /// is still in the network, and every run has ended.
    fn settled(&self) -> bool {
        self.now > self.p.fault_end + 1_000
            && self.pending_submits == 0
            && self.nodes.iter().all(|n| n.runs.is_empty())
            && self.machine.runs().all(|(_, r)| r.is_final())
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Submit(i) => self.submit(i),
            Ev::Log { from, req, command } => self.log_apply(from, req, *command),
            Ev::Msg { to, msg } => match self.nodes[to].status {
                Status::Crashed => {}
                Status::Paused => self.nodes[to].held.push(Ev::Msg { to, msg }),
                Status::Up => self.on_msg(to, *msg),
            },
            Ev::Local { node, inc, what } => {
                if self.nodes[node].inc != inc {
                    return;
                }
                match self.nodes[node].status {
                    Status::Crashed => {}
                    Status::Paused => self.nodes[node].held.push(Ev::Local { node, inc, what }),
                    Status::Up => self.on_local(node, what),
                }
            }
            Ev::Detect {
                observer,
                peer,
                down,
            } => match self.nodes[observer].status {
                Status::Crashed => {}
                Status::Paused => self.nodes[observer].held.push(Ev::Detect {
                    observer,
                    peer,
                    down,
                }),
                Status::Up => self.on_detect(observer, peer, down),
            },
            Ev::Crash {
                node,
                restart_after,
            } => {
                if self.nodes[node].status != Status::Crashed {
                    self.crash(node);
                    self.after(restart_after, Ev::Restart(node));
                }
            }
            Ev::Restart(node) => self.restart(node),
            Ev::Pause { node, resume_after } => {
                if self.nodes[node].status == Status::Up {
                    self.log(|| format!("n{node}: paused"));
                    self.nodes[node].status = Status::Paused;
                    self.nodes[node].outage += 1;
                    let outage = self.nodes[node].outage;
                    self.after(DOWN_AFTER, Ev::DownCheck { node, outage });
                    self.after(resume_after, Ev::Resume(node));
                }
            }
            Ev::Resume(node) => self.resume(node),
            Ev::DownCheck { node, outage } => {
                let n = &self.nodes[node];
                if n.outage == outage && n.status != Status::Up {
                    self.log(|| format!("detector: n{node} is down"));
                    self.declared_down.insert(node);
                    for observer in 0..self.nodes.len() {
                        if observer != node {
                            let jitter = self.rng.random_range(0..DETECT_JITTER);
                            self.after(
                                jitter,
                                Ev::Detect {
                                    observer,
                                    peer: node,
                                    down: true,
                                },
                            );
                        }
                    }
                }
            }
            Ev::Fault => self.fault(),
            Ev::Replicate => {
                self.after(REPLICATE, Ev::Replicate);
                for to in 0..self.nodes.len() {
                    let machine = self.machine.clone();
                    let index = self.index;
                    self.send(Ev::Msg {
                        to,
                        msg: Box::new(Msg::State { index, machine }),
                    });
                }
            }
            Ev::Heal => {
                self.log(|| "faults stop".into());
                self.healed = true;
                for node in 0..self.nodes.len() {
                    match self.nodes[node].status {
                        Status::Paused => self.resume(node),
                        Status::Crashed => self.restart(node),
                        Status::Up => {}
                    }
                }
            }
        }
    }

    // ---- faults and the failure detector ----

    /// Crashes or pauses a node, most often one that owns runs.
    fn fault(&mut self) {
        let owners: Vec<usize> = (0..self.nodes.len())
            .filter(|&n| !self.nodes[n].runs.is_empty())
            .collect();
        let node = if !owners.is_empty() && self.rng.random_bool(0.7) {
            owners[self.rng.random_range(0..owners.len())]
        } else {
            self.rng.random_range(0..self.nodes.len())
        };
        let ev = if self.rng.random_bool(0.4) {
            Ev::Crash {
                node,
                restart_after: self.rng.random_range(50..=1_500),
            }
        } else {
            // Some shorter than the down bound, some much longer.
            Ev::Pause {
                node,
                resume_after: self.rng.random_range(20..=1_500),
            }
        };
        self.handle(ev);
    }

    fn crash(&mut self, node: usize) {
        self.log(|| format!("n{node}: crashed"));
        let n = &mut self.nodes[node];
        n.status = Status::Crashed;
        n.inc += 1;
        n.outage += 1;
        n.held.clear();
        n.down.clear();
        n.runs.clear();
        n.requests.clear();
        n.claims.clear();
        n.orphans.clear();
        n.handled.clear();
        n.jobs.clear();
        n.takeovers.clear();
        let outage = n.outage;
        self.after(DOWN_AFTER, Ev::DownCheck { node, outage });
    }

    fn restart(&mut self, node: usize) {
        if self.nodes[node].status != Status::Crashed {
            return;
        }
        self.log(|| format!("n{node}: restarted"));
        let mut down = self.declared_down.clone();
        down.remove(&node);
        let n = &mut self.nodes[node];
        n.status = Status::Up;
        n.down = down;
        self.local(node, 0, Local::Tick);
        self.back_up(node);
    }

    fn resume(&mut self, node: usize) {
        if self.nodes[node].status != Status::Paused {
            return;
        }
        self.log(|| format!("n{node}: resumed with its old state"));
        self.nodes[node].status = Status::Up;
        for ev in std::mem::take(&mut self.nodes[node].held) {
            self.after(0, ev);
        }
        self.back_up(node);
    }

    fn back_up(&mut self, node: usize) {
        if self.declared_down.remove(&node) {
            for observer in 0..self.nodes.len() {
                if observer != node {
                    let jitter = self.rng.random_range(0..DETECT_JITTER);
                    self.after(
                        UP_AFTER + jitter,
                        Ev::Detect {
                            observer,
                            peer: node,
                            down: false,
                        },
                    );
                }
            }
        }
    }

    fn on_detect(&mut self, n: usize, peer: usize, down: bool) {
        if !down {
            self.nodes[n].down.remove(&peer);
            return;
        }
        if !self.nodes[n].down.insert(peer) {
            return;
        }
        // Attempts placed on the lost node fail with `node_lost`.
        let runs: Vec<String> = self.nodes[n].runs.keys().cloned().collect();
        for run in runs {
            let Some(mut o) = self.nodes[n].runs.remove(&run) else {
                continue;
            };
            let lost: Vec<(TaskKey, u32)> = o
                .remote
                .iter()
                .filter(|(_, (_, node))| *node == peer)
                .map(|(k, (a, _))| (*k, *a))
                .collect();
            for (key, attempt) in lost {
                o.remote.remove(&key);
                if o.gone {
                    break;
                }
                let error = TaskError::retryable(NODE_LOST, format!("node n{peer} is down"));
                let actions = o.state.apply(Input::AttemptFinished {
                    key,
                    attempt,
                    result: Err(error),
                });
                self.perform(n, &run, &mut o, actions);
            }
            self.put_back(n, run, o);
        }
        self.take_over_down_nodes(n);
    }

    // ---- the log ----

    fn log_apply(&mut self, from: usize, req: u64, command: Command) {
        let command = match self.variant {
            Variant::Correct => command,
            Variant::NoFencing | Variant::TrustingLog => self.broken(command),
            Variant::StaleReplay => command,
        };
        let outcome = self.machine.apply(&command);
        self.index += 1;
        let mut applied = Vec::new();
        applied_appends(&command, &outcome, &mut applied);
        for a in applied {
            self.journals
                .entry(a.run.clone())
                .or_default()
                .extend(a.events.iter().cloned());
        }
        self.log(|| format!("log: {} from n{from} -> {outcome:?}", short_cmd(&command)));
        self.send(Ev::Msg {
            to: from,
            msg: Box::new(Msg::LogReply {
                req,
                index: self.index,
                outcome,
            }),
        });
    }

    /// The deliberately broken logs: appends are made to pass the checks.
    fn broken(&self, command: Command) -> Command {
        match command {
            Command::Batch(cs) => {
                // Commands of a batch are applied in order: an `Own` in it
                // changes what the appends after it are checked against.
                let mut m = self.machine.clone();
                let mut out = Vec::new();
                for c in cs {
                    let c = broken_one(&m, c, self.variant);
                    m.apply(&c);
                    out.push(c);
                }
                Command::Batch(out)
            }
            c => broken_one(&self.machine, c, self.variant),
        }
    }

    // ---- nodes ----

    fn on_msg(&mut self, n: usize, msg: Msg) {
        match msg {
            Msg::LogReply {
                req,
                index,
                outcome,
            } => match self.nodes[n].requests.get(&req).cloned() {
                None => {}
                Some(Req::Own { run, epoch }) => {
                    self.nodes[n].requests.remove(&req);
                    if self.nodes[n].claims.get(&run).map(|c| c.0) == Some(epoch) {
                        self.nodes[n].claims.remove(&run);
                    }
                    if outcome != Outcome::Applied {
                        self.stats.claims_refused += 1;
                    } else {
                        if self.nodes[n].view_index >= index || self.variant == Variant::StaleReplay
                        {
                            self.take_over(n, &run, epoch);
                        } else {
                            // The journal to replay is the one up to the
                            // `Own`: wait until this node has applied it.
                            self.nodes[n].takeovers.insert(run, (epoch, index));
                        }
                    }
                }
                Some(Req::Append { run, life }) => {
                    self.on_append_outcome(n, &run, life, req, outcome)
                }
            },
            Msg::State { index, machine } => {
                let node = &mut self.nodes[n];
                if index > node.view_index {
                    node.view_index = index;
                    node.view = machine;
                    let due: Vec<(String, u64)> = node
                        .takeovers
                        .iter()
                        .filter(|(_, (_, at))| *at <= index)
                        .map(|(run, (epoch, _))| (run.clone(), *epoch))
                        .collect();
                    for (run, epoch) in due {
                        self.nodes[n].takeovers.remove(&run);
                        self.take_over(n, &run, epoch);
                    }
                }
            }
            Msg::Assign {
                run,
                owner,
                key,
                attempt,
            } => self.start_job(n, run, owner, key, attempt),
            Msg::Result {
                run,
                key,
                attempt,
                result,
            } => {
                let Some(mut o) = self.nodes[n].runs.remove(&run) else {
                    return;
                };
                if let Some((a, _)) = o.remote.get(&key) {
                    if *a == attempt {
                        o.remote.remove(&key);
                    }
                }
                let actions = o.state.apply(Input::AttemptFinished {
                    key,
                    attempt,
                    result,
                });
                self.perform(n, &run, &mut o, actions);
                self.put_back(n, run, o);
            }
            Msg::Stop { run, key, attempt } => {
                self.nodes[n]
                    .jobs
                    .retain(|_, (r, k, a, _)| !(*r == run && *k == key && *a == attempt));
            }
        }
    }

    fn on_local(&mut self, n: usize, what: Local) {
        match what {
            Local::Tick => {
                self.local(n, TICK, Local::Tick);
                self.tick(n);
            }
            Local::Timer { run, life, timer } => {
                let Some(mut o) = self.nodes[n].runs.remove(&run) else {
                    return;
                };
                if o.life == life {
                    let actions = o.state.apply(Input::TimerFired(timer));
                    self.perform(n, &run, &mut o, actions);
                }
                self.put_back(n, run, o);
            }
            Local::Resend { run, life, req } => {
                let Some(o) = self.nodes[n].runs.get(&run) else {
                    return;
                };
                if o.life != life {
                    return;
                }
                let Some(inflight) = o.inflight.as_ref().filter(|f| f.req == req) else {
                    return;
                };
                let command = inflight.command.clone();
                self.log(|| format!("n{n}: resends {}", short_cmd(&command)));
                self.send(Ev::Log {
                    from: n,
                    req,
                    command: Box::new(command),
                });
                self.local(n, RESEND, Local::Resend { run, life, req });
            }
            Local::AttemptDone { job } => {
                let Some((run, key, attempt, owner)) = self.nodes[n].jobs.remove(&job) else {
                    return;
                };
                let result = if self.rng.random_bool(self.p.flaky) {
                    Err(TaskError::retryable("flaky", "simulated failure"))
                } else {
                    Ok(Value::Int(i64::from(attempt)))
                };
                let msg = Msg::Result {
                    run,
                    key,
                    attempt,
                    result,
                };
                if owner == n {
                    self.after(
                        0,
                        Ev::Msg {
                            to: n,
                            msg: Box::new(msg),
                        },
                    );
                } else {
                    self.send(Ev::Msg {
                        to: owner,
                        msg: Box::new(msg),
                    });
                }
            }
        }
    }

    fn start_job(&mut self, n: usize, run: String, owner: usize, key: TaskKey, attempt: u32) {
        self.log(|| format!("n{n}: executes {run} {} attempt {attempt}", key_str(key)));
        self.executions.push(Execution {
            run: run.clone(),
            key,
            attempt,
            node: n,
            at: self.now,
        });
        let job = self.id();
        self.nodes[n].jobs.insert(job, (run, key, attempt, owner));
        let took = self.rng.random_range(5..=80);
        self.local(n, took, Local::AttemptDone { job });
    }

    fn submit(&mut self, i: usize) {
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|&n| self.nodes[n].status == Status::Up)
            .collect();
        if up.is_empty() {
            self.after(50, Ev::Submit(i));
            return;
        }
        self.pending_submits -= 1;
        let n = up[self.rng.random_range(0..up.len())];
        let run = format!("run-{i}");
        self.log(|| format!("n{n}: submitted {run}"));
        let config = RunConfig {
            node: self.nodes[n].name.clone(),
            ..RunConfig::default()
        };
        let mut state = RunState::new(
            run.clone(),
            Arc::clone(&self.workflow),
            self.inputs.clone(),
            self.now,
            config,
        );
        let mut actions = vec![Action::Persist(JournalEvent::RunSubmitted {
            run_id: run.clone(),
            workflow: self.workflow.name.clone(),
            source: self.source.clone(),
            inputs: Value::Map(self.inputs.clone()),
            submitted_ms: self.now,
        })];
        actions.extend(state.apply(Input::Start { now_ms: self.now }));
        let life = self.id();
        let mut o = Owned {
            state,
            epoch: 1,
            life,
            created_ms: self.now,
            next_seq: 0,
            durable_seq: 0,
            deferred: VecDeque::new(),
            inflight: None,
            queued: VecDeque::new(),
            remote: BTreeMap::new(),
            placed: BTreeMap::new(),
            unacked: true,
            gone: false,
        };
        self.nodes[n].handled.insert(run.clone(), 1);
        self.perform(n, &run, &mut o, actions);
        self.put_back(n, run, o);
    }

    fn put_back(&mut self, n: usize, run: String, o: Owned) {
        if !o.gone {
            self.nodes[n].runs.insert(run, o);
        }
    }

    /// Carries out actions in order (`RunActorState::perform`).
    fn perform(&mut self, n: usize, run: &str, o: &mut Owned, actions: Vec<Action>) {
        let mut events = Vec::new();
        let mut summary = None;
        let first_seq = o.next_seq;
        for action in actions {
            if o.gone {
                return;
            }
            match action {
                Action::Persist(mut event) => {
                    if let JournalEvent::TaskScheduled { key, node, .. } = &mut event {
                        let placed = self.place(n);
                        *node = self.nodes[placed].name.clone();
                        o.placed.insert(*key, placed);
                    }
                    if let Some(status) = summary_status(&event) {
                        summary = Some(RunSummary {
                            id: run.to_owned(),
                            workflow: o.state.workflow().name.clone(),
                            status,
                            created_ms: o.created_ms,
                            updated_ms: self.now,
                        });
                    }
                    events.push(event.encode());
                    o.next_seq += 1;
                }
                other => {
                    if o.durable_seq < o.next_seq {
                        o.deferred.push_back((o.next_seq, other));
                    } else {
                        self.execute(n, run, o, other);
                    }
                }
            }
        }
        if !events.is_empty() {
            o.queued.push_back(Batch {
                first_seq,
                upto: o.next_seq,
                events,
                summary,
            });
            self.pump_appends(n, run, o);
        }
    }

    /// Any live node of this node's view, itself included.
    fn place(&mut self, n: usize) -> usize {
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|p| !self.nodes[n].down.contains(p))
            .collect();
        live[self.rng.random_range(0..live.len())]
    }

    /// Sends the queued events as one append when none is in flight.
    fn pump_appends(&mut self, n: usize, run: &str, o: &mut Owned) {
        if o.inflight.is_some() || o.queued.is_empty() {
            return;
        }
        let first_seq = o.queued[0].first_seq;
        let mut events = Vec::new();
        let mut summary = None;
        let mut upto = first_seq;
        for b in o.queued.drain(..) {
            debug_assert_eq!(b.first_seq, upto);
            events.extend(b.events);
            summary = b.summary.or(summary);
            upto = b.upto;
        }
        let me = self.nodes[n].name.clone();
        let mut commands = Vec::with_capacity(2);
        if first_seq == 0 && o.epoch == 1 {
            commands.push(Command::Own {
                run: run.to_owned(),
                node: me.clone(),
                epoch: 1,
            });
        }
        commands.push(Command::Append(Append {
            run: run.to_owned(),
            node: me,
            epoch: o.epoch,
            first_seq,
            events,
            summary,
        }));
        let command = Command::Batch(commands);
        let req = self.id();
        self.nodes[n].requests.insert(
            req,
            Req::Append {
                run: run.to_owned(),
                life: o.life,
            },
        );
        o.inflight = Some(InFlight {
            req,
            command: command.clone(),
            upto,
        });
        self.send(Ev::Log {
            from: n,
            req,
            command: Box::new(command),
        });
        let life = o.life;
        self.local(
            n,
            RESEND,
            Local::Resend {
                run: run.to_owned(),
                life,
                req,
            },
        );
    }

    fn on_append_outcome(&mut self, n: usize, run: &str, life: u64, req: u64, outcome: Outcome) {
        self.nodes[n].requests.remove(&req);
        let Some(mut o) = self.nodes[n].runs.remove(run) else {
            return;
        };
        let current = o.life == life && o.inflight.as_ref().is_some_and(|f| f.req == req);
        if !current {
            self.put_back(n, run.to_owned(), o);
            return;
        }
        let inflight = o.inflight.take().expect("checked");
        match judge(&inflight.command, &outcome) {
            Ok(()) => {
                if outcome.refusal().is_some() {
                    self.stats.already_applied += 1;
                }
                self.check_durable(run, &inflight.command);
                o.durable_seq = o.durable_seq.max(inflight.upto);
                if o.unacked {
                    o.unacked = false;
                    self.log(|| format!("n{n}: {run} acknowledged to its client"));
                    self.acked.insert(run.to_owned());
                }
                self.release(n, run, &mut o);
                if !o.gone {
                    self.pump_appends(n, run, &mut o);
                }
                self.put_back(n, run.to_owned(), o);
            }
            Err(why) => self.give_up(n, run, o, &why),
        }
    }

    /// An append its owner now takes for durable must be in the committed
    /// journal, at the place the owner thinks.
    fn check_durable(&mut self, run: &str, command: &Command) {
        let Command::Batch(commands) = command else {
            return;
        };
        for c in commands {
            if let Command::Append(a) = c {
                let from = a.first_seq as usize;
                let journal = self.journals.get(run).map_or(&[][..], Vec::as_slice);
                let committed = journal.get(from..from + a.events.len());
                if committed != Some(a.events.as_slice()) {
                    let detail = format!(
                        "{run}: {} events at {from} acknowledged, the journal holds {}",
                        a.events.len(),
                        journal.len()
                    );
                    self.fail("what an owner takes for durable is committed", detail);
                }
            }
        }
    }

    /// Runs deferred actions whose events are now durable.
    fn release(&mut self, n: usize, run: &str, o: &mut Owned) {
        while let Some((seq, _)) = o.deferred.front() {
            if *seq > o.durable_seq || o.gone {
                break;
            }
            let (_, action) = o.deferred.pop_front().expect("front exists");
            self.execute(n, run, o, action);
        }
    }

    fn execute(&mut self, n: usize, run: &str, o: &mut Owned, action: Action) {
        match action {
            Action::Persist(_) => unreachable!("persist is handled by perform"),
            Action::Dispatch { key, attempt, .. } => {
                let placed = o.placed.remove(&key).unwrap_or(n);
                if placed == n {
                    self.start_job(n, run.to_owned(), n, key, attempt);
                } else if self.nodes[n].down.contains(&placed) {
                    // The link is gone: the assignment fails at once.
                    let error = TaskError::retryable(NODE_LOST, format!("node n{placed} is down"));
                    self.after(
                        0,
                        Ev::Msg {
                            to: n,
                            msg: Box::new(Msg::Result {
                                run: run.to_owned(),
                                key,
                                attempt,
                                result: Err(error),
                            }),
                        },
                    );
                } else {
                    o.remote.insert(key, (attempt, placed));
                    self.send(Ev::Msg {
                        to: placed,
                        msg: Box::new(Msg::Assign {
                            run: run.to_owned(),
                            owner: n,
                            key,
                            attempt,
                        }),
                    });
                }
            }
            Action::StopAttempt { key, attempt } => {
                if let Some((a, node)) = o.remote.get(&key).copied() {
                    if a == attempt {
                        o.remote.remove(&key);
                        self.stop_remote(node, run, key, attempt);
                    }
                }
                let r = run.to_owned();
                self.nodes[n]
                    .jobs
                    .retain(|_, (jr, k, a, _)| !(*jr == r && *k == key && *a == attempt));
            }
            Action::StartTimer { timer, after } => {
                let life = o.life;
                self.local(
                    n,
                    after.as_millis() as u64,
                    Local::Timer {
                        run: run.to_owned(),
                        life,
                        timer,
                    },
                );
            }
            Action::ResultDropped { .. } => self.stats.dropped_results += 1,
            Action::Finish(status) => {
                self.log(|| format!("n{n}: {run} finished {status:?}"));
                self.announced.push((run.to_owned(), n, status));
                self.stop_everything(n, run, o);
                o.gone = true;
            }
        }
    }

    fn stop_remote(&mut self, node: usize, run: &str, key: TaskKey, attempt: u32) {
        self.send(Ev::Msg {
            to: node,
            msg: Box::new(Msg::Stop {
                run: run.to_owned(),
                key,
                attempt,
            }),
        });
    }

    fn stop_everything(&mut self, n: usize, run: &str, o: &mut Owned) {
        for (key, (attempt, node)) in std::mem::take(&mut o.remote) {
            self.stop_remote(node, run, key, attempt);
        }
        self.nodes[n].jobs.retain(|_, (r, ..)| r != run);
    }

    /// Stops the run here without an outcome: another node owns it.
    fn give_up(&mut self, n: usize, run: &str, mut o: Owned, why: &str) {
        self.log(|| format!("n{n}: gives {run} (epoch {}) up: {why}", o.epoch));
        self.stats.given_up += 1;
        o.deferred.clear();
        self.stop_everything(n, run, &mut o);
        if let Some(f) = &o.inflight {
            self.nodes[n].requests.remove(&f.req);
        }
    }

    /// Takes `run` over at `epoch` (the log applied this node's `Own`):
    /// replays the committed journal and continues (`RunMode::Takeover`).
    fn take_over(&mut self, n: usize, run: &str, epoch: u64) {
        if self.nodes[n].handled.get(run).is_some_and(|&h| h >= epoch) {
            return;
        }
        self.nodes[n].handled.insert(run.to_owned(), epoch);
        if let Some(old) = self.nodes[n].runs.remove(run) {
            self.give_up(n, run, old, "this node took it over again");
        }
        // The journal as this node has applied it.
        let len = self.nodes[n].view.run(run).map_or(0, |r| r.len) as usize;
        let journal = self
            .journals
            .get(run)
            .map_or(Vec::new(), |j| j[..len].to_vec());
        let config = RunConfig {
            node: self.nodes[n].name.clone(),
            ..RunConfig::default()
        };
        let (state, created_ms) = match replay(run, &journal, config) {
            Ok(r) => r,
            Err(e) => {
                self.fail("committed journal replays", format!("{run}: {e}"));
                return;
            }
        };
        self.log(|| {
            format!(
                "n{n}: takes {run} over at epoch {epoch} ({} events)",
                journal.len()
            )
        });
        self.stats.takeovers += 1;
        let len = journal.len() as u64;
        let life = self.id();
        let mut o = Owned {
            state,
            epoch,
            life,
            created_ms,
            next_seq: len,
            durable_seq: len,
            deferred: VecDeque::new(),
            inflight: None,
            queued: VecDeque::new(),
            remote: BTreeMap::new(),
            placed: BTreeMap::new(),
            unacked: false,
            gone: false,
        };
        let actions = if o.state.status().is_final() {
            vec![Action::Finish(o.state.status())]
        } else {
            o.state.apply(Input::Resume { now_ms: self.now })
        };
        self.perform(n, run, &mut o, actions);
        self.put_back(n, run.to_owned(), o);
    }

    fn claim(&mut self, n: usize, run: &str, epoch: u64) {
        let req = self.id();
        let me = self.nodes[n].name.clone();
        self.log(|| format!("n{n}: claims {run} at epoch {epoch}"));
        let node = &mut self.nodes[n];
        node.requests.insert(
            req,
            Req::Own {
                run: run.to_owned(),
                epoch,
            },
        );
        node.claims.insert(run.to_owned(), (epoch, self.now));
        self.send(Ev::Log {
            from: n,
            req,
            command: Box::new(Command::Own {
                run: run.to_owned(),
                node: me,
                epoch,
            }),
        });
    }

    /// What a node does on each tick, from its view of the log
    /// (`src/raft/failover.rs`).
    fn tick(&mut self, n: usize) {
        let me = self.nodes[n].name.clone();
        // A run moved elsewhere is given up.
        let moved: Vec<String> = self.nodes[n]
            .runs
            .iter()
            .filter(|(run, o)| {
                self.nodes[n]
                    .view
                    .run(run)
                    .is_some_and(|r| r.owner != me || r.epoch != o.epoch)
            })
            .map(|(run, _)| run.clone())
            .collect();
        for run in moved {
            let o = self.nodes[n].runs.remove(&run).expect("listed");
            self.give_up(n, &run, o, "the log says another node owns it");
        }
        let now = self.now;
        self.nodes[n]
            .claims
            .retain(|_, (_, sent)| now - *sent < CLAIM_RETRY);
        // Runs owned here but not run here are claimed again, at a new epoch.
        let mut orphans = BTreeMap::new();
        let mut claims = Vec::new();
        for (run, epoch) in self.nodes[n].view.unfinished_of(&me) {
            let node = &self.nodes[n];
            if node.runs.contains_key(run)
                || node.claims.contains_key(run)
                || node.takeovers.contains_key(run)
            {
                continue;
            }
            let since = node.orphans.get(run).copied().unwrap_or(now);
            if now - since >= ORPHANED_FOR {
                claims.push((run.to_owned(), epoch + 1));
            } else {
                orphans.insert(run.to_owned(), since);
            }
        }
        self.nodes[n].orphans = orphans;
        for (run, epoch) in claims {
            self.claim(n, &run, epoch);
        }
        self.take_over_down_nodes(n);
    }

    /// Claims the unfinished runs of the nodes this node believes down
    /// whose successor (among the nodes it believes up) it is.
    fn take_over_down_nodes(&mut self, n: usize) {
        let node = &self.nodes[n];
        let names: Vec<&str> = self.nodes.iter().map(|x| x.name.as_str()).collect();
        let live: Vec<&str> = (0..names.len())
            .filter(|p| !node.down.contains(p))
            .map(|p| names[p])
            .collect();
        let mut claims = Vec::new();
        for &lost in &node.down {
            for (run, epoch) in node.view.unfinished_of(names[lost]) {
                if successor(run, live.iter().copied()) == Some(node.name.as_str())
                    && !node.claims.contains_key(run)
                    && !node.takeovers.contains_key(run)
                    && !node.runs.contains_key(run)
                {
                    claims.push((run.to_owned(), epoch + 1));
                }
            }
        }
        for (run, epoch) in claims {
            self.claim(n, &run, epoch);
        }
    }

    // ---- the checker ----

    fn check_safety(&self) -> Result<(), Violation> {
        let mut committed: BTreeMap<(&str, TaskKey), u32> = BTreeMap::new();
        for (run, journal) in &self.journals {
            let record = self.machine.run(run);
            if record.map(|r| r.len) != Some(journal.len() as u64) {
                return Err(Violation {
                    invariant: "the log's length is the journal's",
                    detail: format!("{run}: {record:?}, journal of {}", journal.len()),
                });
            }
            let events: Vec<JournalEvent> = journal
                .iter()
                .map(|b| JournalEvent::decode(b).expect("a committed event decodes"))
                .collect();
            if !matches!(events.first(), Some(JournalEvent::RunSubmitted { .. })) {
                return Err(Violation {
                    invariant: "a journal starts with RunSubmitted",
                    detail: format!("{run}: {:?}", events.first().map(JournalEvent::kind)),
                });
            }
            let finals: Vec<usize> = (0..events.len())
                .filter(|&i| summary_status(&events[i]).is_some_and(RunStatus::is_final))
                .collect();
            if finals.len() > 1 {
                return Err(Violation {
                    invariant: "a run finishes exactly once",
                    detail: format!("{run}: {} final events, at {finals:?}", finals.len()),
                });
            }
            if let Some(&at) = finals.first() {
                if at + 1 != events.len() {
                    return Err(Violation {
                        invariant: "nothing follows a run's final event",
                        detail: format!("{run}: final event at {at} of {}", events.len()),
                    });
                }
            }
            for (i, e) in events.iter().enumerate() {
                if let JournalEvent::TaskSucceeded { key, attempt, .. } = e {
                    if let Some(first) = committed.insert((run.as_str(), *key), *attempt) {
                        return Err(Violation {
                            invariant: "no task result is committed twice",
                            detail: format!(
                                "{run} task {}: attempts {first} and {attempt} (event {i})",
                                key_str(*key)
                            ),
                        });
                    }
                }
            }
        }
        for x in &self.executions {
            if let Some(&c) = committed.get(&(x.run.as_str(), x.key)) {
                if x.attempt > c {
                    return Err(Violation {
                        invariant: "no task with a committed result runs again",
                        detail: format!(
                            "{} task {}: attempt {} ran on n{} at {} ms, attempt {c} had committed its result",
                            x.run,
                            key_str(x.key),
                            x.attempt,
                            x.node,
                            x.at
                        ),
                    });
                }
            }
        }
        // Every outcome a node announced is the committed one.
        for (run, node, status) in &self.announced {
            let committed = self
                .journals
                .get(run)
                .and_then(|j| j.last())
                .and_then(|b| summary_status(&JournalEvent::decode(b).ok()?));
            if committed != Some(*status) || !status.is_final() {
                return Err(Violation {
                    invariant: "an announced outcome is committed",
                    detail: format!(
                        "{run}: n{node} announced {status:?}, the journal says {committed:?}"
                    ),
                });
            }
        }
        Ok(())
    }

    fn check_liveness(&mut self) -> Result<(), Violation> {
        for run in &self.acked {
            if !self.journals.contains_key(run) {
                return Err(Violation {
                    invariant: "an acknowledged submission is committed",
                    detail: format!("{run} has no journal"),
                });
            }
        }
        for (run, journal) in &self.journals {
            let last = JournalEvent::decode(journal.last().expect("not empty")).expect("decodes");
            if !matches!(last, JournalEvent::RunSucceeded { .. }) {
                return Err(Violation {
                    invariant: "every run succeeds once the faults stop",
                    detail: format!("{run} ended with {}", last.kind()),
                });
            }
        }
        self.stats.runs = self.journals.len();
        self.stats.acked = self.acked.len();
        self.stats.executions = self.executions.len();
        Ok(())
    }
}

fn broken_one(m: &Machine, command: Command, variant: Variant) -> Command {
    match command {
        Command::Append(mut a) => {
            if let Some(r) = m.run(&a.run) {
                a.node = r.owner.clone();
                a.epoch = r.epoch;
                if variant == Variant::TrustingLog {
                    a.first_seq = r.len;
                }
            }
            Command::Append(a)
        }
        other => other,
    }
}

/// Rebuilds a run from its committed journal (`replay` in `run.rs`).
fn replay(run: &str, journal: &[Vec<u8>], config: RunConfig) -> Result<(RunState, u64), String> {
    let mut events = journal.iter().map(|r| JournalEvent::decode(r));
    let Some(Ok(JournalEvent::RunSubmitted {
        source,
        inputs,
        submitted_ms,
        ..
    })) = events.next()
    else {
        return Err("no RunSubmitted first".into());
    };
    let workflow = compile(&source)?;
    let inputs = match inputs {
        Value::Map(m) => m,
        _ => Map::new(),
    };
    let mut state = RunState::new(
        run.to_owned(),
        Arc::new(workflow),
        inputs,
        submitted_ms,
        config,
    );
    for event in events {
        state.evolve(&event.map_err(|e| format!("corrupt record: {e}"))?);
    }
    Ok((state, submitted_ms))
}

fn short(ev: &Ev) -> String {
    match ev {
        Ev::Log { from, command, .. } => format!("n{from}->log {}", short_cmd(command)),
        Ev::Msg { to, msg } => match msg.as_ref() {
            Msg::State { index, .. } => format!("log->n{to} state at {index}"),
            Msg::LogReply { outcome, .. } => format!("log->n{to} {outcome:?}"),
            Msg::Assign {
                run, key, attempt, ..
            } => format!("assign {run} {} #{attempt} ->n{to}", key_str(*key)),
            Msg::Result {
                run, key, attempt, ..
            } => format!("result {run} {} #{attempt} ->n{to}", key_str(*key)),
            Msg::Stop {
                run, key, attempt, ..
            } => format!("stop {run} {} #{attempt} ->n{to}", key_str(*key)),
        },
        other => format!("{other:?}"),
    }
}

fn short_cmd(command: &Command) -> String {
    match command {
        Command::Own { run, node, epoch } => format!("Own({run}, {node}, e{epoch})"),
        Command::Append(a) => {
            let kinds: Vec<&str> = a
                .events
                .iter()
                .map(|b| JournalEvent::decode(b).map_or("?", |e| e.kind()))
                .collect();
            format!(
                "Append({}, {}, e{}, @{}, {kinds:?})",
                a.run, a.node, a.epoch, a.first_seq
            )
        }
        Command::Batch(cs) => {
            let parts: Vec<String> = cs.iter().map(short_cmd).collect();
            format!("[{}]", parts.join(", "))
        }
        Command::Registry(_) => "Registry".into(),
    }
}

/// Runs one seed; a panic inside the pure cores is a violation too.
fn run_seed(seed: u64, variant: Variant, trace: bool) -> (Result<Stats, Violation>, Vec<String>) {
    match catch_unwind(AssertUnwindSafe(|| Sim::new(seed, variant, trace).run())) {
        Ok(r) => r,
        Err(panic) => {
            let detail = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "a panic".into());
            (
                Err(Violation {
                    invariant: "no panic",
                    detail,
                }),
                Vec::new(),
            )
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got {v:?}")),
    )
}

/// A panic in a seed is reported as that seed's failure: the default hook
/// need not print it too.
fn quiet_panics_in_simulation_threads() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let name = std::thread::current().name().map(str::to_owned);
            if !name.is_some_and(|n| n.starts_with("sim-")) {
                default(info);
            }
        }));
    });
}

/// Seeds by default: 6–20 s on two cores in a debug build.
const DEFAULT_SEEDS: u64 = 10_000;

/// Runs `seeds` on every core; returns the failures, by seed, and the
/// totals of the seeds that passed.
fn run_many(seeds: std::ops::Range<u64>, variant: Variant) -> (Vec<(u64, Violation)>, Stats) {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let start = seeds.start;
    let count = seeds.end - seeds.start;
    quiet_panics_in_simulation_threads();
    let mut total = Stats::default();
    let mut failures: Vec<(u64, Violation)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let builder = std::thread::Builder::new().name(format!("sim-{t}"));
                builder
                    .spawn_scoped(s, move || {
                        let mut failed = Vec::new();
                        let mut total = Stats::default();
                        let mut i = t;
                        while i < count {
                            let seed = start + i;
                            match run_seed(seed, variant, false) {
                                (Ok(stats), _) => total.add(&stats),
                                (Err(v), _) => failed.push((seed, v)),
                            }
                            i += threads;
                        }
                        (failed, total)
                    })
                    .expect("a simulation thread starts")
            })
            .collect();
        let mut failures = Vec::new();
        for h in handles {
            let (failed, stats) = h.join().expect("a simulation thread panicked");
            failures.extend(failed);
            total.add(&stats);
        }
        failures
    });
    failures.sort_by_key(|(seed, _)| *seed);
    (failures, total)
}

#[test]
fn the_pure_cores_keep_the_invariants_under_faults() {
    if let Some(seed) = env_u64("SIM_SEED") {
        let (result, trace) = run_seed(seed, Variant::Correct, true);
        for line in &trace {
            println!("{line}");
        }
        match result {
            Ok(stats) => println!("seed {seed}: ok: {stats:?}"),
            Err(v) => panic!(
                "seed {seed}: invariant violated: {}: {}",
                v.invariant, v.detail
            ),
        }
        return;
    }
    let seeds = env_u64("SIM_SEEDS").unwrap_or(DEFAULT_SEEDS);
    let started = Instant::now();
    let (failures, total) = run_many(0..seeds, Variant::Correct);
    eprintln!(
        "simulation: {seeds} seeds in {:.1} s, {} failed; the others together: {total:?}",
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    if failures.is_empty() && seeds >= 1_000 {
        // The faults reach the paths they are meant to test.
        assert!(total.takeovers > 0, "no run was taken over");
        assert!(total.given_up > 0, "no owner gave a run up");
        assert!(total.claims_refused > 0, "no takeover lost a race");
        assert!(
            total.already_applied > 0,
            "no resent append was found applied"
        );
        assert!(total.dropped_results > 0, "no stale result was dropped");
    }
    if let Some((seed, v)) = failures.first() {
        let all: Vec<String> = failures.iter().map(|(s, _)| s.to_string()).collect();
        panic!(
            "seed {seed}: invariant violated: {}: {}\n\
             failing seeds: {}\n\
             replay it (its trace is printed): SIM_SEED={seed} cargo test --test simulation",
            v.invariant,
            v.detail,
            all.join(" ")
        );
    }
}

/// The checker is not vacuous: a log without fencing is caught.
#[test]
fn a_log_without_fencing_is_caught() {
    let (failures, _) = run_many(0..300, Variant::NoFencing);
    let (seed, v) = failures
        .first()
        .expect("a log that does not fence stale owners breaks an invariant for some seed");
    eprintln!(
        "no fencing: {} of 300 seeds caught; seed {seed}: {}: {}",
        failures.len(),
        v.invariant,
        v.detail
    );
}

/// The checker is not vacuous: a log that appends whatever it is sent
/// (retries applied twice, stale owners heard) is caught.
#[test]
fn a_log_that_trusts_its_clients_is_caught() {
    let (failures, _) = run_many(0..300, Variant::TrustingLog);
    let (seed, v) = failures
        .first()
        .expect("a log that appends whatever it is sent breaks an invariant for some seed");
    eprintln!(
        "trusting log: {} of 300 seeds caught; seed {seed}: {}: {}",
        failures.len(),
        v.invariant,
        v.detail
    );
}

/// The checker is not vacuous: a takeover that replays a journal missing
/// the previous owner's last events is caught.
#[test]
fn a_takeover_from_a_stale_journal_is_caught() {
    let (failures, _) = run_many(0..300, Variant::StaleReplay);
    let (seed, v) = failures
        .first()
        .expect("a takeover from a stale journal breaks an invariant for some seed");
    eprintln!(
        "stale replay: {} of 300 seeds caught; seed {seed}: {}: {}",
        failures.len(),
        v.invariant,
        v.detail
    );
}
