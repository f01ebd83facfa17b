//! A node's configuration: defaults, then a YAML file, then environment
//! variables, then command-line flags, then one [`NodeConfig::validate`]
//! that reports every problem at once.
//!
//! Every option has all four forms; a later layer replaces an option of an
//! earlier one as a whole (a list or map is not merged). `cookie` and
//! `cookie_file` are one option given two ways, as are `api_token` and
//! `api_token_file`: a later layer's `cookie_file` replaces an earlier
//! layer's `cookie`.
//!
//! | YAML key | flag | environment variable | default |
//! |---|---|---|---|
//! | `name` | `--name` | `SYMPHONY_NODE_NAME` | the host name, else `node` |
//! | `listen` | `--listen` | `SYMPHONY_LISTEN` | `127.0.0.1:7400` |
//! | `advertise` | `--advertise` | `SYMPHONY_ADVERTISE` | the `listen` IP, or the host name when that is `0.0.0.0`/`::` |
//! | `seeds` | `--seed` (repeatable) | `SYMPHONY_SEEDS` (comma-separated) | none |
//! | `cookie` | `--cookie` | `SYMPHONY_COOKIE` | none |
//! | `cookie_file` | `--cookie-file` | `SYMPHONY_COOKIE_FILE` | none |
//! | `labels` | `--label K=V` (repeatable) | `SYMPHONY_LABELS` (`k=v,k=v`) | none |
//! | `slots` | `--slots` | `SYMPHONY_SLOTS` | 256 |
//! | `max_invocations` | `--max-invocations` | `SYMPHONY_MAX_INVOCATIONS` | 1024 |
//! | `data_dir` | `--data-dir` | `SYMPHONY_DATA_DIR` | `.symphony` |
//! | `http` | `--http` | `SYMPHONY_HTTP` | `127.0.0.1:8080` |
//! | `api_token` | `--api-token` | `SYMPHONY_API_TOKEN` | none |
//! | `api_token_file` | `--api-token-file` | `SYMPHONY_API_TOKEN_FILE` | none |
//! | `heartbeat.interval` | `--heartbeat-interval` | `SYMPHONY_HEARTBEAT_INTERVAL` | 200ms |
//! | `heartbeat.suspect_after` | `--suspect-after` | `SYMPHONY_SUSPECT_AFTER` | 800ms |
//! | `heartbeat.down_after` | `--down-after` | `SYMPHONY_DOWN_AFTER` | 1500ms |
//! | `exec_allow` | `--exec-allow` (repeatable) | `SYMPHONY_EXEC_ALLOW` (comma-separated) | any command |
//! | `pipelines` | `--pipelines` | `SYMPHONY_PIPELINES` | none (a folder of pipeline workflows registered at start) |
//! | `model_cache` | `--model-cache` | `SYMPHONY_MODEL_CACHE` | 2GiB |
//! | `chaos.corrupt_chunks` | `--chaos-corrupt-chunks` | `SYMPHONY_CHAOS_CORRUPT_CHUNKS` | 0 (a testing aid) |
//! | `raft.voters` | `--raft-voters` (comma-separated) | `SYMPHONY_RAFT_VOTERS` (comma-separated) | none (no replicated log) |
//! | `chaos.nemesis` | `--chaos-nemesis[=BOOL]` | `SYMPHONY_CHAOS_NEMESIS` | false (a testing aid) |
//!
//! Relative paths (`data_dir`, `cookie_file`, `api_token_file`, `pipelines`) are taken
//! from the node's working directory, wherever they are written.
//!
//! This module reads files (the config file, the cookie and token files) and
//! the environment; it starts nothing.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_yaml::Value as Yaml;

/// Default cluster address: loopback, so a node started without
/// configuration is reachable only from its own machine and needs no cookie.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7400";
/// Default address of the HTTP API: loopback, so it needs no token.
pub const DEFAULT_HTTP: &str = "127.0.0.1:8080";
/// Default number of attempts a node runs at once.
pub const DEFAULT_SLOTS: usize = 256;
/// Default number of pipeline invocations a node runs at once.
pub const DEFAULT_MAX_INVOCATIONS: usize = 1024;
/// Default size cap of the cache of model artifacts fetched from other
/// nodes: 2 GiB.
pub const DEFAULT_MODEL_CACHE: u64 = 2 << 30;
/// Default data dir, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = ".symphony";
/// Name used when the host name cannot be read.
pub const FALLBACK_NAME: &str = "node";

/// Keys a config file may hold at its top level.
const KEYS: &[&str] = &[
    "name",
    "listen",
    "advertise",
    "seeds",
    "cookie",
    "cookie_file",
    "labels",
    "slots",
    "max_invocations",
    "data_dir",
    "http",
    "api_token",
    "api_token_file",
    "heartbeat",
    "exec_allow",
    "pipelines",
    "model_cache",
    "raft",
    "chaos",
];

/// Keys of the `raft` section.
const RAFT_KEYS: &[&str] = &["voters"];

/// Keys of the `chaos` section.
const CHAOS_KEYS: &[&str] = &["corrupt_chunks", "nemesis"];

/// Keys of the `heartbeat` section.
const HEARTBEAT_KEYS: &[&str] = &["interval", "suspect_after", "down_after"];

/// Names other tools use for our keys, for `did you mean`.
const SYNONYMS: &[(&str, &str)] = &[
    ("bind", "listen"),
    ("address", "listen"),
    ("port", "listen"),
    ("peers", "seeds"),
    ("seed", "seeds"),
    ("join", "seeds"),
    ("secret", "cookie"),
    ("token", "api_token"),
    ("label", "labels"),
    ("tags", "labels"),
    ("workers", "slots"),
    ("concurrency", "slots"),
    ("max_in_flight", "max_invocations"),
    ("dir", "data_dir"),
    ("data", "data_dir"),
    ("api", "http"),
    ("hostname", "advertise"),
    ("node_name", "name"),
];

/// Failure detection between nodes. Durations are written the `humantime`
/// way (`250ms`, `1s`, `1m 30s`) or, in YAML, as a number of milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatConfig {
    /// How often a node sends a heartbeat to each peer. Default 200ms.
    pub interval: Duration,
    /// Without a heartbeat for this long, a peer is suspect: no new work is
    /// placed there. Default 800ms.
    pub suspect_after: Duration,
    /// Without a heartbeat for this long, a peer is down: its attempts fail
    /// with class `node_lost` and run again elsewhere. Default 1500ms (a frozen peer is
    /// declared down within 1.5 s plus one interval, under 2 s).
    pub down_after: Duration,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig {
            interval: Duration::from_millis(200),
            suspect_after: Duration::from_millis(800),
            down_after: Duration::from_millis(1500),
        }
    }
}

/// Everything a node needs to start, loaded by [`NodeConfig::load`].
///
/// `Debug` hides the cookie and the API token.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// The node's name in the cluster, unique there. Default: the host name,
    /// else `node`. Must not be empty or contain white space.
    pub name: String,
    /// Where the node listens for other nodes. Default `127.0.0.1:7400`;
    /// `0.0.0.0:7400` accepts peers from anywhere (and then needs a cookie).
    /// Port 0 picks a free port.
    pub listen: SocketAddr,
    /// The host (or `host:port`) peers dial to reach this node. Default: the
    /// `listen` IP, or the host name when `listen` is `0.0.0.0` or `::`.
    pub advertise: Option<String>,
    /// Cluster addresses (`host:port`) of nodes to join through; any one
    /// answering is enough. Default: none (the node starts a cluster).
    pub seeds: Vec<String>,
    /// The shared secret every node of a cluster must present. Required
    /// unless the node has no seeds and listens on loopback.
    pub cookie: Option<String>,
    /// A file holding the cookie (surrounding white space is ignored);
    /// read when the configuration is loaded.
    pub cookie_file: Option<PathBuf>,
    /// Labels for placement constraints (`placement: { labels: {...} }`).
    /// Default: none.
    pub labels: BTreeMap<String, String>,
    /// Attempts the node executes at once. Default 256; at least 1.
    pub slots: usize,
    /// Pipeline invocations in flight on the node at once, over all
    /// pipelines; more are refused with 429. Default 1024; at least 1.
    pub max_invocations: usize,
    /// Where the node keeps its journals and run summaries. Default
    /// `.symphony`.
    pub data_dir: PathBuf,
    /// A folder whose `*.yaml` workflows are registered as pipelines when
    /// the node starts. Default: none.
    pub pipelines: Option<PathBuf>,
    /// Where the HTTP API listens. Default `127.0.0.1:8080`.
    pub http: SocketAddr,
    /// The bearer token the HTTP API requires. Required when `http` is not
    /// a loopback address; optional (but enforced when set) otherwise.
    pub api_token: Option<String>,
    /// A file holding the API token (surrounding white space is ignored).
    pub api_token_file: Option<PathBuf>,
    /// Heartbeats and failure detection.
    pub heartbeat: HeartbeatConfig,
    /// The commands `exec` tasks may run, by argv\[0\] (see
    /// [`ExecutorConfig::exec_allow`](crate::executor::ExecutorConfig)).
    /// Default `None`: any command. An empty list allows none.
    pub exec_allow: Option<Vec<String>>,
    /// Bytes of model artifacts fetched from other nodes that the node
    /// keeps in its data dir; beyond it the least recently used are
    /// deleted (artifacts registered on the node are never). Written as a
    /// size (`2GiB`, `500MB`, `1048576`). Default 2GiB.
    pub model_cache: u64,
    /// The replicated log (`durability: replicated`). Default: none.
    pub raft: RaftSection,
    /// Fault injection for tests. Default: none.
    pub chaos: ChaosConfig,
}

/// The replicated log that `replicated` runs are journaled in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaftSection {
    /// The names of the voting nodes: 3 or 5, the same list on every node.
    /// Every other node of the cluster joins as a learner. Empty (the
    /// default): the node takes no part, and `replicated` runs are refused.
    pub voters: Vec<String>,
}

/// Fault injection, a testing aid: every option is off by default and
/// must stay off in production.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChaosConfig {
    /// Corrupt the first this many model artifact chunks the node serves to
    /// peers (the fetching node must refuse and fetch them again).
    /// Default 0.
    pub corrupt_chunks: u32,
    /// Enable the nemesis: the node takes faults (drop or delay its
    /// traffic to chosen peers) through `/api/v1/chaos/faults`. Default
    /// false.
    pub nemesis: bool,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            name: default_name(),
            listen: DEFAULT_LISTEN.parse().expect("default listen address"),
            advertise: None,
            seeds: Vec::new(),
            cookie: None,
            cookie_file: None,
            labels: BTreeMap::new(),
            slots: DEFAULT_SLOTS,
            max_invocations: DEFAULT_MAX_INVOCATIONS,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            pipelines: None,
            http: DEFAULT_HTTP.parse().expect("default http address"),
            api_token: None,
            api_token_file: None,
            heartbeat: HeartbeatConfig::default(),
            exec_allow: None,
            model_cache: DEFAULT_MODEL_CACHE,
            raft: RaftSection::default(),
            chaos: ChaosConfig::default(),
        }
    }
}

impl fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |s: &Option<String>| s.as_ref().map(|_| "<hidden>");
        f.debug_struct("NodeConfig")
            .field("name", &self.name)
            .field("listen", &self.listen)
            .field("advertise", &self.advertise)
            .field("seeds", &self.seeds)
            .field("cookie", &hidden(&self.cookie))
            .field("cookie_file", &self.cookie_file)
            .field("labels", &self.labels)
            .field("slots", &self.slots)
            .field("max_invocations", &self.max_invocations)
            .field("data_dir", &self.data_dir)
            .field("pipelines", &self.pipelines)
            .field("http", &self.http)
            .field("api_token", &hidden(&self.api_token))
            .field("api_token_file", &self.api_token_file)
            .field("heartbeat", &self.heartbeat)
            .field("exec_allow", &self.exec_allow)
            .field("model_cache", &self.model_cache)
            .field("raft", &self.raft)
            .field("chaos", &self.chaos)
            .finish()
    }
}

/// Every problem found while loading a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    problems: Vec<String>,
}

impl ConfigError {
    /// The problems, one sentence each, naming the option and where it was
    /// set (`config.yaml: heartbeat.interval: …`, `SYMPHONY_SLOTS: …`,
    /// `--listen: …`).
    pub fn problems(&self) -> &[String] {
        &self.problems
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problems.join("\n"))
    }
}

impl std::error::Error for ConfigError {}

/// `symphony node`: every option as a flag (flags override environment
/// variables, which override the config file).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NodeArgs {
    /// A YAML file with the node's configuration (see config/single.yaml).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The node's name in the cluster [default: the host name].
    #[arg(long)]
    pub name: Option<String>,
    /// Where to listen for other nodes, IP:PORT [default: 127.0.0.1:7400].
    #[arg(long, value_name = "IP:PORT")]
    pub listen: Option<String>,
    /// The host peers dial to reach this node [default: the listen IP, or the
    /// host name].
    #[arg(long, value_name = "HOST")]
    pub advertise: Option<String>,
    /// A node to join through, HOST:PORT (repeatable, or comma-separated).
    #[arg(long = "seed", value_name = "HOST:PORT", value_delimiter = ',')]
    pub seeds: Vec<String>,
    /// The cluster's shared secret (prefer --cookie-file: flags show in `ps`).
    #[arg(long)]
    pub cookie: Option<String>,
    /// A file holding the cluster's shared secret.
    #[arg(long, value_name = "FILE")]
    pub cookie_file: Option<PathBuf>,
    /// A label for placement constraints, KEY=VALUE (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Attempts executed at once [default: 256].
    #[arg(long, value_name = "N")]
    pub slots: Option<String>,
    /// Pipeline invocations in flight at once; more are refused (429)
    /// [default: 1024].
    #[arg(long, value_name = "N")]
    pub max_invocations: Option<String>,
    /// Where journals and run summaries live [default: .symphony].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// A folder of pipeline workflows to register at start.
    #[arg(long, value_name = "DIR")]
    pub pipelines: Option<PathBuf>,
    /// Where the HTTP API listens, IP:PORT [default: 127.0.0.1:8080].
    #[arg(long, value_name = "IP:PORT")]
    pub http: Option<String>,
    /// The bearer token the HTTP API requires (prefer --api-token-file).
    #[arg(long, value_name = "TOKEN")]
    pub api_token: Option<String>,
    /// A file holding the API token.
    #[arg(long, value_name = "FILE")]
    pub api_token_file: Option<PathBuf>,
    /// How often to send heartbeats [default: 200ms].
    #[arg(long, value_name = "DURATION")]
    pub heartbeat_interval: Option<String>,
    /// Silence after which a peer is suspect [default: 800ms].
    #[arg(long, value_name = "DURATION")]
    pub suspect_after: Option<String>,
    /// Silence after which a peer is down [default: 1500ms].
    #[arg(long, value_name = "DURATION")]
    pub down_after: Option<String>,
    /// A command `exec` tasks may run (repeatable) [default: any command].
    #[arg(long = "exec-allow", value_name = "COMMAND")]
    pub exec_allow: Vec<String>,
    /// Size cap of the cache of model artifacts fetched from other nodes,
    /// e.g. 2GiB or 500MB [default: 2GiB].
    #[arg(long, value_name = "SIZE")]
    pub model_cache: Option<String>,
    /// Testing aid: corrupt the first N model artifact chunks served to
    /// peers [default: 0].
    #[arg(long, value_name = "N", hide = true)]
    pub chaos_corrupt_chunks: Option<String>,
    /// The voting nodes of the replicated log, by name (3 or 5, the same on
    /// every node; repeatable or comma-separated) [default: none].
    #[arg(long = "raft-voters", value_name = "NAME", value_delimiter = ',')]
    pub raft_voters: Vec<String>,
    /// Testing aid: let the node take faults (drop or delay its traffic to
    /// chosen peers) through /api/v1/chaos/faults [default: false].
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        hide = true
    )]
    pub chaos_nemesis: Option<String>,
    /// Check the configuration, print it with secrets hidden, and exit.
    #[arg(long)]
    pub check: bool,
}

impl NodeConfig {
    /// Loads defaults, the `--config` file, the process environment and the
    /// flags, in that order, reads the cookie and token files, and
    /// validates the result.
    ///
    /// # Errors
    /// Every problem found, in every layer, at once.
    pub fn load(args: &NodeArgs) -> Result<NodeConfig, ConfigError> {
        NodeConfig::load_with_env(args, |key| std::env::var(key).ok())
    }

    /// [`NodeConfig::load`] with the environment read through `env` (tests
    /// pass a map instead of the process environment).
    ///
    /// # Errors
    /// Every problem found, in every layer, at once.
    pub fn load_with_env(
        args: &NodeArgs,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<NodeConfig, ConfigError> {
        let mut problems = Vec::new();
        let mut config = NodeConfig::default();
        if let Some(path) = &args.config {
            file_layer(path, &mut problems).apply(&mut config);
        }
        env_layer(&env, &mut problems).apply(&mut config);
        flag_layer(args, &mut problems).apply(&mut config);
        config.resolve_secrets(&mut problems);
        problems.extend(config.problems());
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError { problems })
        }
    }

    /// Checks the rules between options: heartbeat durations in order,
    /// at least one slot and one invocation, a cookie for a node that can be reached from other
    /// machines or joins seeds, a token for an API reachable from other
    /// machines, well-formed seeds and name. Reads the cookie and token
    /// files when only those are set.
    ///
    /// # Errors
    /// Every rule broken, at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut resolved = self.clone();
        let mut problems = Vec::new();
        resolved.resolve_secrets(&mut problems);
        problems.extend(resolved.problems());
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems })
        }
    }

    /// The cluster cookie: `cookie`, else the trimmed content of
    /// `cookie_file` (after [`NodeConfig::load`], always `cookie`).
    pub fn cookie(&self) -> Option<String> {
        secret(self.cookie.as_ref(), self.cookie_file.as_deref())
    }

    /// The API token: `api_token`, else the trimmed content of
    /// `api_token_file`.
    pub fn api_token(&self) -> Option<String> {
        secret(self.api_token.as_ref(), self.api_token_file.as_deref())
    }

    /// The host peers dial: `advertise` without a port, else the `listen`
    /// IP, else (when listening on every address) the host name.
    pub fn advertise_host(&self) -> String {
        if let Some(advertise) = &self.advertise {
            return match split_host_port(advertise) {
                Some((host, _)) => host.to_owned(),
                None => advertise
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .into(),
            };
        }
        if self.listen.ip().is_unspecified() {
            hostname().unwrap_or_else(|| FALLBACK_NAME.into())
        } else {
            self.listen.ip().to_string()
        }
    }

    /// The address peers dial, `host:port`: the advertised host and the
    /// `listen` port, or `advertise` itself when it carries a port (a node
    /// behind NAT or a published container port).
    ///
    /// With `listen` port 0, this holds port 0: the node must advertise the
    /// port it actually bound, with [`NodeConfig::cluster_addr_with_port`].
    pub fn cluster_addr(&self) -> String {
        self.cluster_addr_with_port(self.listen.port())
    }

    /// [`NodeConfig::cluster_addr`] for a node that bound `port`.
    pub fn cluster_addr_with_port(&self, port: u16) -> String {
        if let Some(advertise) = &self.advertise {
            if split_host_port(advertise).is_some() {
                return advertise.clone();
            }
        }
        join_host_port(&self.advertise_host(), port)
    }

    /// The executor settings this configuration implies.
    pub fn executor_config(&self) -> crate::executor::ExecutorConfig {
        crate::executor::ExecutorConfig {
            exec_allow: self.exec_allow.clone(),
            ..crate::executor::ExecutorConfig::default()
        }
    }

    /// The configuration as YAML a config file could hold, with the cookie
    /// and the API token replaced by `<hidden>` (for `--check`).
    pub fn to_redacted_yaml(&self) -> String {
        /// The configuration in file order, for showing.
        #[derive(serde::Serialize)]
        struct Shown<'a> {
            name: &'a str,
            listen: String,
            advertise: &'a Option<String>,
            cluster_addr: String,
            seeds: &'a [String],
            cookie: Option<&'static str>,
            cookie_file: &'a Option<PathBuf>,
            labels: &'a BTreeMap<String, String>,
            slots: usize,
            max_invocations: usize,
            data_dir: &'a Path,
            pipelines: &'a Option<PathBuf>,
            http: String,
            api_token: Option<&'static str>,
            api_token_file: &'a Option<PathBuf>,
            heartbeat: BTreeMap<&'static str, String>,
            exec_allow: &'a Option<Vec<String>>,
            model_cache: String,
            raft: ShownRaft<'a>,
            chaos: ShownChaos,
        }
        #[derive(serde::Serialize)]
        struct ShownRaft<'a> {
            voters: &'a [String],
        }
        #[derive(serde::Serialize)]
        struct ShownChaos {
            corrupt_chunks: u32,
            nemesis: bool,
        }
        let show = |d: Duration| humantime::format_duration(d).to_string();
        let shown = Shown {
            name: &self.name,
            listen: self.listen.to_string(),
            advertise: &self.advertise,
            cluster_addr: self.cluster_addr(),
            seeds: &self.seeds,
            cookie: self.cookie().map(|_| "<hidden>"),
            cookie_file: &self.cookie_file,
            labels: &self.labels,
            slots: self.slots,
            max_invocations: self.max_invocations,
            data_dir: &self.data_dir,
            pipelines: &self.pipelines,
            http: self.http.to_string(),
            api_token: self.api_token().map(|_| "<hidden>"),
            api_token_file: &self.api_token_file,
            heartbeat: BTreeMap::from([
                ("interval", show(self.heartbeat.interval)),
                ("suspect_after", show(self.heartbeat.suspect_after)),
                ("down_after", show(self.heartbeat.down_after)),
            ]),
            exec_allow: &self.exec_allow,
            model_cache: show_bytes(self.model_cache),
            raft: ShownRaft {
                voters: &self.raft.voters,
            },
            chaos: ShownChaos {
                corrupt_chunks: self.chaos.corrupt_chunks,
                nemesis: self.chaos.nemesis,
            },
        };
        serde_yaml::to_string(&shown).unwrap_or_default()
    }

    /// Reads `cookie_file` and `api_token_file` into `cookie` and
    /// `api_token` when those are not set.
    fn resolve_secrets(&mut self, problems: &mut Vec<String>) {
        if self.cookie.is_none() {
            if let Some(path) = &self.cookie_file {
                match read_secret(path) {
                    Ok(s) => self.cookie = Some(s),
                    Err(e) => problems.push(format!("cookie_file: {e}")),
                }
            }
        }
        if self.api_token.is_none() {
            if let Some(path) = &self.api_token_file {
                match read_secret(path) {
                    Ok(s) => self.api_token = Some(s),
                    Err(e) => problems.push(format!("api_token_file: {e}")),
                }
            }
        }
    }

    /// The rules between options (secrets already resolved).
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.name.trim().is_empty() {
            problems.push("name: must not be empty".into());
        } else if self
            .name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            problems.push(format!(
                "name: {:?} must not contain spaces or control characters",
                self.name
            ));
        }
        if let Some(advertise) = &self.advertise {
            if advertise.is_empty() || advertise.chars().any(char::is_whitespace) {
                problems.push(format!(
                    "advertise: {advertise:?} is not a host name or address"
                ));
            }
        }
        for seed in &self.seeds {
            if let Err(e) = check_host_port(seed) {
                problems.push(format!("seeds: {e}"));
            }
        }
        if self.cookie.as_deref() == Some("") {
            problems.push("cookie: must not be empty".into());
        }
        let reachable = !self.listen.ip().is_loopback();
        if self.cookie.is_none() && (reachable || !self.seeds.is_empty()) {
            let why = if self.seeds.is_empty() {
                format!("listen is {}, which other machines can reach", self.listen)
            } else {
                "the node joins seeds".into()
            };
            problems.push(format!(
                "cookie: a cluster cookie is required because {why}; set cookie, cookie_file, SYMPHONY_COOKIE or --cookie"
            ));
        }
        if self.api_token.as_deref() == Some("") {
            problems.push("api_token: must not be empty".into());
        }
        if self.api_token.is_none() && !self.http.ip().is_loopback() {
            problems.push(format!(
                "api_token: an API token is required because http is {}, which other machines can reach; set api_token, api_token_file, SYMPHONY_API_TOKEN or --api-token",
                self.http
            ));
        }
        if self.slots == 0 {
            problems.push("slots: must be at least 1".into());
        }
        let voters = &self.raft.voters;
        let distinct: std::collections::BTreeSet<&String> = voters.iter().collect();
        if !voters.is_empty() && !matches!(voters.len(), 3 | 5) {
            problems.push(format!(
                "raft.voters: {} voters given; a replicated log needs 3 or 5 (a majority of them must be up to commit)",
                voters.len()
            ));
        } else if distinct.len() != voters.len() {
            problems.push("raft.voters: a node is listed twice".into());
        }
        if voters
            .iter()
            .any(|v| v.trim().is_empty() || v.chars().any(char::is_whitespace))
        {
            problems.push("raft.voters: names must not be empty or contain spaces".into());
        }
        if self.max_invocations == 0 {
            problems.push("max_invocations: must be at least 1".into());
        }
        if self.data_dir.as_os_str().is_empty() {
            problems.push("data_dir: must not be empty".into());
        }
        if self.listen.port() != 0
            && self.listen.port() == self.http.port()
            && overlap(self.listen.ip(), self.http.ip())
        {
            problems.push(format!(
                "http: {} and listen: {} use the same port",
                self.http, self.listen
            ));
        }
        let hb = &self.heartbeat;
        let show = |d: Duration| humantime::format_duration(d).to_string();
        if hb.interval.is_zero() {
            problems.push("heartbeat.interval: must be longer than 0".into());
        }
        if hb.interval >= hb.suspect_after {
            problems.push(format!(
                "heartbeat.interval ({}) must be shorter than heartbeat.suspect_after ({})",
                show(hb.interval),
                show(hb.suspect_after)
            ));
        }
        if hb.suspect_after >= hb.down_after {
            problems.push(format!(
                "heartbeat.suspect_after ({}) must be shorter than heartbeat.down_after ({})",
                show(hb.suspect_after),
                show(hb.down_after)
            ));
        }
        for (key, value) in &self.labels {
            if key.is_empty() {
                problems.push(format!(
                    "labels: a label with value {value:?} has an empty key"
                ));
            }
        }
        problems
    }
}

/// Whether two listening IPs can clash on one port.
fn overlap(a: IpAddr, b: IpAddr) -> bool {
    a == b || a.is_unspecified() || b.is_unspecified()
}

/// A secret given directly or as a file.
#[derive(Debug, Clone)]
enum Secret {
    Value(String),
    File(PathBuf),
}

/// What one layer (file, environment or flags) sets.
#[derive(Debug, Default)]
struct Layer {
    name: Option<String>,
    listen: Option<SocketAddr>,
    advertise: Option<String>,
    seeds: Option<Vec<String>>,
    cookie: Option<Secret>,
    labels: Option<BTreeMap<String, String>>,
    slots: Option<usize>,
    max_invocations: Option<usize>,
    data_dir: Option<PathBuf>,
    pipelines: Option<PathBuf>,
    http: Option<SocketAddr>,
    api_token: Option<Secret>,
    interval: Option<Duration>,
    suspect_after: Option<Duration>,
    down_after: Option<Duration>,
    exec_allow: Option<Vec<String>>,
    model_cache: Option<u64>,
    corrupt_chunks: Option<u32>,
    nemesis: Option<bool>,
    voters: Option<Vec<String>>,
}

impl Layer {
    /// Sets what this layer sets.
    fn apply(self, config: &mut NodeConfig) {
        set(&mut config.name, self.name);
        set(&mut config.listen, self.listen);
        if self.advertise.is_some() {
            config.advertise = self.advertise;
        }
        set(&mut config.seeds, self.seeds);
        match self.cookie {
            Some(Secret::Value(v)) => (config.cookie, config.cookie_file) = (Some(v), None),
            Some(Secret::File(p)) => (config.cookie, config.cookie_file) = (None, Some(p)),
            None => {}
        }
        set(&mut config.labels, self.labels);
        set(&mut config.slots, self.slots);
        set(&mut config.max_invocations, self.max_invocations);
        set(&mut config.data_dir, self.data_dir);
        if self.pipelines.is_some() {
            config.pipelines = self.pipelines;
        }
        set(&mut config.http, self.http);
        match self.api_token {
            Some(Secret::Value(v)) => (config.api_token, config.api_token_file) = (Some(v), None),
            Some(Secret::File(p)) => {
                (config.api_token, config.api_token_file) = (None, Some(p));
            }
            None => {}
        }
        set(&mut config.heartbeat.interval, self.interval);
        set(&mut config.heartbeat.suspect_after, self.suspect_after);
        set(&mut config.heartbeat.down_after, self.down_after);
        if self.exec_allow.is_some() {
            config.exec_allow = self.exec_allow;
        }
        set(&mut config.model_cache, self.model_cache);
        set(&mut config.chaos.corrupt_chunks, self.corrupt_chunks);
        set(&mut config.chaos.nemesis, self.nemesis);
        set(&mut config.raft.voters, self.voters);
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

/// One secret from a value and a file given in the same layer.
fn one_secret(
    value: Option<String>,
    file: Option<PathBuf>,
    names: (&str, &str),
    problems: &mut Vec<String>,
) -> Option<Secret> {
    match (value, file) {
        (Some(_), Some(_)) => {
            problems.push(format!(
                "{} and {} are both set; give one",
                names.0, names.1
            ));
            None
        }
        (Some(v), None) => Some(Secret::Value(v)),
        (None, Some(p)) => Some(Secret::File(p)),
        (None, None) => None,
    }
}

// ---- the file layer ------------------------------------------------------

fn file_layer(path: &Path, problems: &mut Vec<String>) -> Layer {
    let shown = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            problems.push(format!("{shown}: cannot read the config file: {e}"));
            return Layer::default();
        }
    };
    let doc: Yaml = match serde_yaml::from_str(&text) {
        Ok(doc) => doc,
        Err(e) => {
            problems.push(format!("{shown}: not valid YAML: {e}"));
            return Layer::default();
        }
    };
    let map = match doc {
        Yaml::Null => return Layer::default(),
        Yaml::Mapping(m) => m,
        other => {
            problems.push(format!(
                "{shown}: expected a mapping of options, found {}",
                yaml_kind(&other)
            ));
            return Layer::default();
        }
    };
    let mut file = FileReader {
        shown: &shown,
        problems,
    };
    let mut layer = Layer::default();
    let (mut cookie, mut cookie_file, mut token, mut token_file) = (None, None, None, None);
    for (key, value) in &map {
        let Some(key) = key.as_str() else {
            file.problem(
                "",
                format!("keys must be strings, found {}", yaml_kind(key)),
            );
            continue;
        };
        if value.is_null() {
            // An empty key keeps the default, so a file can list every key.
            if !KEYS.contains(&key) {
                file.unknown(key, KEYS, "");
            }
            continue;
        }
        match key {
            "name" => layer.name = file.string(key, value),
            "listen" => layer.listen = file.parsed(key, value, parse_socket_addr),
            "advertise" => layer.advertise = file.string(key, value),
            "seeds" => layer.seeds = file.strings(key, value),
            "cookie" => cookie = file.string(key, value),
            "cookie_file" => cookie_file = file.string(key, value).map(PathBuf::from),
            "labels" => layer.labels = file.labels(key, value),
            "slots" => layer.slots = file.count(key, value),
            "max_invocations" => layer.max_invocations = file.count(key, value),
            "data_dir" => layer.data_dir = file.string(key, value).map(PathBuf::from),
            "pipelines" => layer.pipelines = file.string(key, value).map(PathBuf::from),
            "http" => layer.http = file.parsed(key, value, parse_socket_addr),
            "api_token" => token = file.string(key, value),
            "api_token_file" => token_file = file.string(key, value).map(PathBuf::from),
            "heartbeat" => file.heartbeat(value, &mut layer),
            "exec_allow" => layer.exec_allow = file.strings(key, value),
            "model_cache" => layer.model_cache = file.parsed(key, value, parse_bytes),
            "chaos" => file.chaos(value, &mut layer),
            "raft" => file.raft(value, &mut layer),
            other => file.unknown(other, KEYS, ""),
        }
    }
    let in_file = |a: &str| format!("{shown}: {a}");
    layer.cookie = one_secret(
        cookie,
        cookie_file,
        (&in_file("cookie"), "cookie_file"),
        file.problems,
    );
    layer.api_token = one_secret(
        token,
        token_file,
        (&in_file("api_token"), "api_token_file"),
        file.problems,
    );
    layer
}

/// Reads values out of a config file, recording problems with the file
/// name and key.
struct FileReader<'a> {
    shown: &'a str,
    problems: &'a mut Vec<String>,
}

impl FileReader<'_> {
    fn problem(&mut self, key: &str, message: impl fmt::Display) {
        if key.is_empty() {
            self.problems.push(format!("{}: {message}", self.shown));
        } else {
            self.problems
                .push(format!("{}: {key}: {message}", self.shown));
        }
    }

    fn unknown(&mut self, key: &str, known: &[&str], prefix: &str) {
        let hint = match closest(key, known) {
            Some(c) => format!("; did you mean \"{prefix}{c}\"?"),
            None => format!(
                "; known keys: {}",
                known
                    .iter()
                    .map(|k| format!("{prefix}{k}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        self.problem("", format!("unknown key \"{prefix}{key}\"{hint}"));
    }

    /// A scalar as text (numbers and booleans too, as written).
    fn string(&mut self, key: &str, value: &Yaml) -> Option<String> {
        match scalar_text(value) {
            Some(s) => Some(s),
            None => {
                self.problem(key, format!("expected text, found {}", yaml_kind(value)));
                None
            }
        }
    }

    fn parsed<T>(
        &mut self,
        key: &str,
        value: &Yaml,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        let text = self.string(key, value)?;
        match parse(&text) {
            Ok(v) => Some(v),
            Err(e) => {
                self.problem(key, e);
                None
            }
        }
    }

    fn strings(&mut self, key: &str, value: &Yaml) -> Option<Vec<String>> {
        let Yaml::Sequence(items) = value else {
            self.problem(key, format!("expected a list, found {}", yaml_kind(value)));
            return None;
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match scalar_text(item) {
                Some(s) => out.push(s),
                None => self.problem(
                    &format!("{key}[{i}]"),
                    format!("expected text, found {}", yaml_kind(item)),
                ),
            }
        }
        Some(out)
    }

    fn labels(&mut self, key: &str, value: &Yaml) -> Option<BTreeMap<String, String>> {
        let Yaml::Mapping(entries) = value else {
            self.problem(
                key,
                format!(
                    "expected a mapping of names to values, found {}",
                    yaml_kind(value)
                ),
            );
            return None;
        };
        let mut out = BTreeMap::new();
        for (k, v) in entries {
            match (scalar_text(k), scalar_text(v)) {
                (Some(k), Some(v)) => {
                    out.insert(k, v);
                }
                (Some(k), None) => self.problem(
                    &format!("{key}.{k}"),
                    format!("expected text, found {}", yaml_kind(v)),
                ),
                (None, _) => self.problem(key, "label names must be text"),
            }
        }
        Some(out)
    }

    fn count(&mut self, key: &str, value: &Yaml) -> Option<usize> {
        match value.as_u64().and_then(|n| usize::try_from(n).ok()) {
            Some(n) => Some(n),
            None => {
                let shown = scalar_text(value).unwrap_or_else(|| yaml_kind(value).into());
                self.problem(key, format!("expected a whole number, found {shown}"));
                None
            }
        }
    }

    fn duration(&mut self, key: &str, value: &Yaml) -> Option<Duration> {
        if let Some(ms) = value.as_u64() {
            return Some(Duration::from_millis(ms));
        }
        self.parsed(key, value, parse_duration)
    }

    fn heartbeat(&mut self, value: &Yaml, layer: &mut Layer) {
        let Yaml::Mapping(entries) = value else {
            self.problem(
                "heartbeat",
                format!(
                    "expected a mapping with interval, suspect_after and down_after, found {}",
                    yaml_kind(value)
                ),
            );
            return;
        };
        for (k, v) in entries {
            let Some(k) = k.as_str() else {
                self.problem("heartbeat", "keys must be strings");
                continue;
            };
            let full = format!("heartbeat.{k}");
            if v.is_null() {
                if !HEARTBEAT_KEYS.contains(&k) {
                    self.unknown(k, HEARTBEAT_KEYS, "heartbeat.");
                }
                continue;
            }
            match k {
                "interval" => layer.interval = self.duration(&full, v),
                "suspect_after" => layer.suspect_after = self.duration(&full, v),
                "down_after" => layer.down_after = self.duration(&full, v),
                other => self.unknown(other, HEARTBEAT_KEYS, "heartbeat."),
            }
        }
    }
}

impl FileReader<'_> {
    fn raft(&mut self, value: &Yaml, layer: &mut Layer) {
        let Yaml::Mapping(entries) = value else {
            self.problem(
                "raft",
                format!(
                    "expected a mapping such as {{ voters: [node-a, node-b, node-c] }}, found {}",
                    yaml_kind(value)
                ),
            );
            return;
        };
        for (k, v) in entries {
            match k.as_str() {
                Some("voters") => layer.voters = self.strings("raft.voters", v),
                Some(other) => self.unknown(other, RAFT_KEYS, "raft."),
                None => self.problem("raft", "keys must be strings"),
            }
        }
    }

    fn chaos(&mut self, value: &Yaml, layer: &mut Layer) {
        let Yaml::Mapping(entries) = value else {
            self.problem(
                "chaos",
                format!(
                    "expected a mapping such as {{ corrupt_chunks: 1 }}, found {}",
                    yaml_kind(value)
                ),
            );
            return;
        };
        for (k, v) in entries {
            let Some(k) = k.as_str() else {
                self.problem("chaos", "keys must be strings");
                continue;
            };
            if v.is_null() {
                if !CHAOS_KEYS.contains(&k) {
                    self.unknown(k, CHAOS_KEYS, "chaos.");
                }
                continue;
            }
            match k {
                "corrupt_chunks" => {
                    layer.corrupt_chunks = self.parsed("chaos.corrupt_chunks", v, parse_u32);
                }
                "nemesis" => layer.nemesis = self.parsed("chaos.nemesis", v, parse_bool),
                other => self.unknown(other, CHAOS_KEYS, "chaos."),
            }
        }
    }
}

fn scalar_text(value: &Yaml) -> Option<String> {
    match value {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Bool(b) => Some(b.to_string()),
        Yaml::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn yaml_kind(value: &Yaml) -> &'static str {
    match value {
        Yaml::Null => "nothing",
        Yaml::Bool(_) => "a boolean",
        Yaml::Number(_) => "a number",
        Yaml::String(_) => "text",
        Yaml::Sequence(_) => "a list",
        Yaml::Mapping(_) => "a mapping",
        Yaml::Tagged(_) => "a tagged value",
    }
}

/// The known key closest to `word`, if close enough to be a likely typo (or
/// a name another tool uses).
fn closest<'k>(word: &str, known: &[&'k str]) -> Option<&'k str> {
    if let Some((_, ours)) = SYNONYMS.iter().find(|(theirs, _)| *theirs == word) {
        if let Some(k) = known.iter().find(|k| *k == ours) {
            return Some(k);
        }
    }
    let lower = word.to_lowercase().replace('-', "_");
    if let Some(k) = known.iter().find(|k| **k == lower) {
        return Some(k);
    }
    let limit = (word.chars().count() / 3).max(1);
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(&lower, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, k)| (*d, *k))
        .map(|(_, k)| k)
}

// ---- the environment layer -----------------------------------------------

/// Environment variables, by option.
pub mod env {
    /// `name`.
    pub const NAME: &str = "SYMPHONY_NODE_NAME";
    /// `listen`.
    pub const LISTEN: &str = "SYMPHONY_LISTEN";
    /// `advertise`.
    pub const ADVERTISE: &str = "SYMPHONY_ADVERTISE";
    /// `seeds`, comma-separated.
    pub const SEEDS: &str = "SYMPHONY_SEEDS";
    /// `cookie`.
    pub const COOKIE: &str = "SYMPHONY_COOKIE";
    /// `cookie_file`.
    pub const COOKIE_FILE: &str = "SYMPHONY_COOKIE_FILE";
    /// `labels`, `k=v,k=v`.
    pub const LABELS: &str = "SYMPHONY_LABELS";
    /// `slots`.
    pub const SLOTS: &str = "SYMPHONY_SLOTS";
    /// `max_invocations`.
    pub const MAX_INVOCATIONS: &str = "SYMPHONY_MAX_INVOCATIONS";
    /// `data_dir`.
    pub const DATA_DIR: &str = "SYMPHONY_DATA_DIR";
    /// `pipelines`.
    pub const PIPELINES: &str = "SYMPHONY_PIPELINES";
    /// `http`.
    pub const HTTP: &str = "SYMPHONY_HTTP";
    /// `api_token`.
    pub const API_TOKEN: &str = "SYMPHONY_API_TOKEN";
    /// `api_token_file`.
    pub const API_TOKEN_FILE: &str = "SYMPHONY_API_TOKEN_FILE";
    /// `heartbeat.interval`.
    pub const HEARTBEAT_INTERVAL: &str = "SYMPHONY_HEARTBEAT_INTERVAL";
    /// `heartbeat.suspect_after`.
    pub const SUSPECT_AFTER: &str = "SYMPHONY_SUSPECT_AFTER";
    /// `heartbeat.down_after`.
    pub const DOWN_AFTER: &str = "SYMPHONY_DOWN_AFTER";
    /// `exec_allow`, comma-separated; set but empty allows no command.
    pub const EXEC_ALLOW: &str = "SYMPHONY_EXEC_ALLOW";
    /// `model_cache`.
    pub const MODEL_CACHE: &str = "SYMPHONY_MODEL_CACHE";
    /// `chaos.corrupt_chunks`.
    pub const CHAOS_CORRUPT_CHUNKS: &str = "SYMPHONY_CHAOS_CORRUPT_CHUNKS";
    /// `chaos.nemesis`.
    pub const CHAOS_NEMESIS: &str = "SYMPHONY_CHAOS_NEMESIS";
    /// `raft.voters`, comma-separated.
    pub const RAFT_VOTERS: &str = "SYMPHONY_RAFT_VOTERS";

    /// Every variable the node reads.
    pub const ALL: &[&str] = &[
        NAME,
        LISTEN,
        ADVERTISE,
        SEEDS,
        COOKIE,
        COOKIE_FILE,
        LABELS,
        SLOTS,
        MAX_INVOCATIONS,
        DATA_DIR,
        PIPELINES,
        HTTP,
        API_TOKEN,
        API_TOKEN_FILE,
        HEARTBEAT_INTERVAL,
        SUSPECT_AFTER,
        DOWN_AFTER,
        EXEC_ALLOW,
        MODEL_CACHE,
        CHAOS_CORRUPT_CHUNKS,
        CHAOS_NEMESIS,
        RAFT_VOTERS,
    ];
}

/// The environment layer. A variable set to the empty string counts as not
/// set, except `SYMPHONY_EXEC_ALLOW`, where it allows no command.
fn env_layer(get: &dyn Fn(&str) -> Option<String>, problems: &mut Vec<String>) -> Layer {
    let var = |name: &str| get(name).filter(|v| !v.trim().is_empty());
    let p = problems;
    Layer {
        name: var(env::NAME).map(|v| v.trim().to_owned()),
        listen: parsed(env::LISTEN, var(env::LISTEN), parse_socket_addr, p),
        advertise: var(env::ADVERTISE).map(|v| v.trim().to_owned()),
        seeds: var(env::SEEDS).map(|s| comma_list(&s)),
        cookie: one_secret(
            var(env::COOKIE),
            var(env::COOKIE_FILE).map(PathBuf::from),
            (env::COOKIE, env::COOKIE_FILE),
            p,
        ),
        labels: parsed(env::LABELS, var(env::LABELS), parse_labels, p),
        slots: parsed(env::SLOTS, var(env::SLOTS), parse_count, p),
        max_invocations: parsed(
            env::MAX_INVOCATIONS,
            var(env::MAX_INVOCATIONS),
            parse_count,
            p,
        ),
        data_dir: var(env::DATA_DIR).map(PathBuf::from),
        pipelines: var(env::PIPELINES).map(PathBuf::from),
        http: parsed(env::HTTP, var(env::HTTP), parse_socket_addr, p),
        api_token: one_secret(
            var(env::API_TOKEN),
            var(env::API_TOKEN_FILE).map(PathBuf::from),
            (env::API_TOKEN, env::API_TOKEN_FILE),
            p,
        ),
        interval: parsed(
            env::HEARTBEAT_INTERVAL,
            var(env::HEARTBEAT_INTERVAL),
            parse_duration,
            p,
        ),
        suspect_after: parsed(
            env::SUSPECT_AFTER,
            var(env::SUSPECT_AFTER),
            parse_duration,
            p,
        ),
        down_after: parsed(env::DOWN_AFTER, var(env::DOWN_AFTER), parse_duration, p),
        exec_allow: get(env::EXEC_ALLOW).map(|s| comma_list(&s)),
        model_cache: parsed(env::MODEL_CACHE, var(env::MODEL_CACHE), parse_bytes, p),
        corrupt_chunks: parsed(
            env::CHAOS_CORRUPT_CHUNKS,
            var(env::CHAOS_CORRUPT_CHUNKS),
            parse_u32,
            p,
        ),
        nemesis: parsed(env::CHAOS_NEMESIS, var(env::CHAOS_NEMESIS), parse_bool, p),
        voters: var(env::RAFT_VOTERS).map(|s| comma_list(&s)),
    }
}

/// `raw` parsed, when given; a failure is recorded as a problem of `source`
/// (a variable or a flag).
fn parsed<T>(
    source: &str,
    raw: Option<String>,
    parse: fn(&str) -> Result<T, String>,
    problems: &mut Vec<String>,
) -> Option<T> {
    match parse(raw?.trim()) {
        Ok(v) => Some(v),
        Err(e) => {
            problems.push(format!("{source}: {e}"));
            None
        }
    }
}

fn comma_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

// ---- the flag layer --------------------------------------------------------

fn flag_layer(args: &NodeArgs, problems: &mut Vec<String>) -> Layer {
    let mut labels = BTreeMap::new();
    for pair in &args.labels {
        if let Some((k, v)) = parsed("--label", Some(pair.clone()), parse_label, problems) {
            labels.insert(k, v);
        }
    }
    let p = problems;
    Layer {
        name: args.name.clone(),
        listen: parsed("--listen", args.listen.clone(), parse_socket_addr, p),
        advertise: args.advertise.clone(),
        seeds: (!args.seeds.is_empty()).then(|| comma_list(&args.seeds.join(","))),
        cookie: one_secret(
            args.cookie.clone(),
            args.cookie_file.clone(),
            ("--cookie", "--cookie-file"),
            p,
        ),
        labels: (!args.labels.is_empty()).then_some(labels),
        slots: parsed("--slots", args.slots.clone(), parse_count, p),
        max_invocations: parsed(
            "--max-invocations",
            args.max_invocations.clone(),
            parse_count,
            p,
        ),
        data_dir: args.data_dir.clone(),
        pipelines: args.pipelines.clone(),
        http: parsed("--http", args.http.clone(), parse_socket_addr, p),
        api_token: one_secret(
            args.api_token.clone(),
            args.api_token_file.clone(),
            ("--api-token", "--api-token-file"),
            p,
        ),
        interval: parsed(
            "--heartbeat-interval",
            args.heartbeat_interval.clone(),
            parse_duration,
            p,
        ),
        suspect_after: parsed(
            "--suspect-after",
            args.suspect_after.clone(),
            parse_duration,
            p,
        ),
        down_after: parsed("--down-after", args.down_after.clone(), parse_duration, p),
        exec_allow: (!args.exec_allow.is_empty()).then(|| args.exec_allow.clone()),
        model_cache: parsed("--model-cache", args.model_cache.clone(), parse_bytes, p),
        corrupt_chunks: parsed(
            "--chaos-corrupt-chunks",
            args.chaos_corrupt_chunks.clone(),
            parse_u32,
            p,
        ),
        nemesis: parsed("--chaos-nemesis", args.chaos_nemesis.clone(), parse_bool, p),
        voters: (!args.raft_voters.is_empty()).then(|| comma_list(&args.raft_voters.join(","))),
    }
}

// ---- value parsers ---------------------------------------------------------

fn parse_socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        format!(
            "{text:?} is not an address; expected IP:PORT such as 127.0.0.1:7400 or 0.0.0.0:7400"
        )
    })
}

fn parse_count(text: &str) -> Result<usize, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number"))
}

fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(format!("{text:?} is not a boolean; expected true or false")),
    }
}

fn parse_u32(text: &str) -> Result<u32, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number from 0 to {}", u32::MAX))
}

/// A size: a whole number of bytes, or one with a unit (`B`, `KB`, `MB`,
/// `GB`, `TB` in powers of 1000; `KiB`, `MiB`, `GiB`, `TiB` in powers of
/// 1024; case does not matter, a space may come before the unit).
fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = (t[..split].trim(), t[split..].trim());
    let bad = || format!("{text:?} is not a size; write e.g. 2GiB, 500MB or 1048576");
    let scale: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1_000,
        "mb" | "m" => 1_000_000,
        "gb" | "g" => 1_000_000_000,
        "tb" | "t" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    if number.is_empty() {
        return Err(bad());
    }
    if let Ok(n) = number.parse::<u64>() {
        return n.checked_mul(scale).ok_or_else(bad);
    }
    let n: f64 = number.parse().map_err(|_| bad())?;
    let bytes = n * scale as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes.round() as u64)
}

/// A size the way [`parse_bytes`] reads it back: in the largest binary
/// unit that divides it, else in bytes.
fn show_bytes(bytes: u64) -> String {
    for (unit, scale) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if bytes >= scale && bytes % scale == 0 {
            return format!("{}{unit}", bytes / scale);
        }
    }
    bytes.to_string()
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration ({e}); write e.g. 250ms, 1s or 2m"))
}

/// `k=v,k=v`.
fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    comma_list(text)
        .iter()
        .map(|pair| parse_label(pair))
        .collect()
}

fn parse_label(pair: &str) -> Result<(String, String), String> {
    match pair.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(format!("{pair:?} is not a label; expected KEY=VALUE")),
    }
}

/// `host:port` → (host, port) when the text ends in a valid port; IPv6
/// hosts are written in brackets (`[::1]:7400`).
fn split_host_port(text: &str) -> Option<(&str, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = match host.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']')?,
        None if host.contains(':') => return None,
        None => host,
    };
    Some((host, port))
}

fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Checks a seed: a non-empty host and a port from 1 to 65535.
fn check_host_port(seed: &str) -> Result<(), String> {
    match split_host_port(seed) {
        Some((host, port))
            if !host.is_empty() && port != 0 && !host.chars().any(char::is_whitespace) =>
        {
            Ok(())
        }
        _ => Err(format!(
            "{seed:?} is not HOST:PORT (e.g. node1:7401, 10.0.0.5:7400 or [::1]:7400)"
        )),
    }
}

// ---- secrets and the host name --------------------------------------------

fn read_secret(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(secret.to_owned())
}

fn secret(value: Option<&String>, file: Option<&Path>) -> Option<String> {
    value
        .cloned()
        .or_else(|| file.and_then(|p| read_secret(p).ok()))
}

/// The default node name: the host name, else `node`.
fn default_name() -> String {
    hostname()
        .filter(|h| !h.chars().any(char::is_whitespace))
        .unwrap_or_else(|| FALLBACK_NAME.into())
}

/// This machine's host name, from the kernel (Linux) or `/etc/hostname`.
fn hostname() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ports_split_with_ipv6_brackets() {
        assert_eq!(split_host_port("node1:7401"), Some(("node1", 7401)));
        assert_eq!(split_host_port("[::1]:7400"), Some(("::1", 7400)));
        assert_eq!(split_host_port("::1"), None);
        assert_eq!(split_host_port("node1"), None);
        assert_eq!(split_host_port("node1:x"), None);
        assert!(check_host_port("node1:0").is_err());
        assert!(check_host_port(":7400").is_err());
        assert!(check_host_port("10.0.0.5:7400").is_ok());
    }

    #[test]
    fn cluster_addr_uses_advertise_then_listen() {
        let mut c = NodeConfig {
            listen: "10.0.0.5:7400".parse().unwrap(),
            ..NodeConfig::default()
        };
        assert_eq!(c.cluster_addr(), "10.0.0.5:7400");
        c.advertise = Some("node1".into());
        assert_eq!(c.cluster_addr(), "node1:7400");
        assert_eq!(c.cluster_addr_with_port(9000), "node1:9000");
        c.advertise = Some("public.example:17400".into());
        assert_eq!(c.cluster_addr(), "public.example:17400");
        assert_eq!(c.advertise_host(), "public.example");
        c.advertise = Some("::1".into());
        assert_eq!(c.cluster_addr(), "[::1]:7400");
        c.advertise = None;
        c.listen = "0.0.0.0:7400".parse().unwrap();
        assert!(!c.cluster_addr().starts_with("0.0.0.0"));
    }

    #[test]
    fn typos_and_other_tools_names_are_suggested() {
        assert_eq!(closest("sedes", KEYS), Some("seeds"));
        assert_eq!(closest("peers", KEYS), Some("seeds"));
        assert_eq!(closest("data-dir", KEYS), Some("data_dir"));
        assert_eq!(closest("intervall", HEARTBEAT_KEYS), Some("interval"));
        assert_eq!(closest("zzzzzz", KEYS), None);
    }

    #[test]
    fn max_invocations_is_set_in_every_layer_like_slots() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.yaml");
        std::fs::write(&file, "max_invocations: 10\n").unwrap();
        let with_file = NodeArgs {
            config: Some(file),
            ..NodeArgs::default()
        };
        let env = |value: &'static str| {
            move |key: &str| (key == env::MAX_INVOCATIONS).then(|| value.to_owned())
        };
        let none = |_: &str| None;

        let c = NodeConfig::load_with_env(&NodeArgs::default(), none).unwrap();
        assert_eq!(c.max_invocations, DEFAULT_MAX_INVOCATIONS);
        assert_eq!(c.max_invocations, 1024);
        let c = NodeConfig::load_with_env(&with_file, none).unwrap();
        assert_eq!(c.max_invocations, 10);
        let c = NodeConfig::load_with_env(&with_file, env("20")).unwrap();
        assert_eq!(c.max_invocations, 20);
        let flagged = NodeArgs {
            max_invocations: Some("30".into()),
            ..with_file.clone()
        };
        let c = NodeConfig::load_with_env(&flagged, env("20")).unwrap();
        assert_eq!(c.max_invocations, 30);
        assert!(
            c.to_redacted_yaml().contains("max_invocations: 30"),
            "{}",
            c.to_redacted_yaml()
        );

        let zero = NodeArgs {
            max_invocations: Some("0".into()),
            ..NodeArgs::default()
        };
        let problems = NodeConfig::load_with_env(&zero, env("many"))
            .unwrap_err()
            .problems()
            .to_vec();
        assert_eq!(
            problems,
            vec![
                "SYMPHONY_MAX_INVOCATIONS: \"many\" is not a whole number".to_owned(),
                "max_invocations: must be at least 1".to_owned(),
            ]
        );
        assert_eq!(closest("max_in_flight", KEYS), Some("max_invocations"));
        assert!(env::ALL.contains(&env::MAX_INVOCATIONS));
    }

    #[test]
    fn debug_hides_secrets() {
        let c = NodeConfig {
            cookie: Some("s3cret".into()),
            api_token: Some("t0ken".into()),
            ..NodeConfig::default()
        };
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("t0ken"),
            "{shown}"
        );
        assert!(!c.to_redacted_yaml().contains("s3cret"));
    }

    #[test]
    fn model_cache_and_chaos_are_set_in_every_layer() {
        assert_eq!(parse_bytes("2GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes("500 MB"), Ok(500_000_000));
        assert_eq!(parse_bytes("1.5kib"), Ok(1536));
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("GiB").is_err());
        assert!(parse_bytes("-1").is_err());
        assert_eq!(show_bytes(2 << 30), "2GiB");
        assert_eq!(show_bytes(1000), "1000");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.yaml");
        std::fs::write(&file, "model_cache: 1GiB\nchaos: { corrupt_chunks: 2 }\n").unwrap();
        let with_file = NodeArgs {
            config: Some(file),
            ..NodeArgs::default()
        };
        let none = |_: &str| None;
        let c = NodeConfig::load_with_env(&NodeArgs::default(), none).unwrap();
        assert_eq!(
            (c.model_cache, c.chaos.corrupt_chunks),
            (DEFAULT_MODEL_CACHE, 0)
        );
        let c = NodeConfig::load_with_env(&with_file, none).unwrap();
        assert_eq!((c.model_cache, c.chaos.corrupt_chunks), (1 << 30, 2));
        let env = |key: &str| (key == env::MODEL_CACHE).then(|| "300MiB".to_owned());
        let c = NodeConfig::load_with_env(&with_file, env).unwrap();
        assert_eq!(c.model_cache, 300 << 20);
        let flagged = NodeArgs {
            model_cache: Some("1MiB".into()),
            chaos_corrupt_chunks: Some("0".into()),
            ..with_file.clone()
        };
        let c = NodeConfig::load_with_env(&flagged, env).unwrap();
        assert_eq!((c.model_cache, c.chaos.corrupt_chunks), (1 << 20, 0));
        assert!(c.to_redacted_yaml().contains("model_cache: 1MiB"));

        std::fs::write(
            dir.path().join("node.yaml"),
            "model_cache: big\nchaos: { corupt_chunks: 1 }\n",
        )
        .unwrap();
        let problems = NodeConfig::load_with_env(&with_file, none)
            .unwrap_err()
            .problems()
            .to_vec();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].contains("model_cache: \"big\" is not a size"),
            "{problems:?}"
        );
        assert!(
            problems[1].contains("did you mean \"chaos.corrupt_chunks\"?"),
            "{problems:?}"
        );
    }

    #[test]
    fn the_nemesis_is_off_unless_a_layer_enables_it() {
        assert_eq!(parse_bool("true"), Ok(true));
        assert_eq!(parse_bool(" ON "), Ok(true));
        assert_eq!(parse_bool("0"), Ok(false));
        assert!(parse_bool("maybe").unwrap_err().contains("not a boolean"));

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.yaml");
        std::fs::write(&file, "chaos: { nemesis: true }\n").unwrap();
        let with_file = NodeArgs {
            config: Some(file.clone()),
            ..NodeArgs::default()
        };
        let none = |_: &str| None;
        let c = NodeConfig::load_with_env(&NodeArgs::default(), none).unwrap();
        assert!(!c.chaos.nemesis);
        let c = NodeConfig::load_with_env(&with_file, none).unwrap();
        assert!(c.chaos.nemesis);
        assert!(c.to_redacted_yaml().contains("nemesis: true"));
        let env = |key: &str| (key == env::CHAOS_NEMESIS).then(|| "false".to_owned());
        let c = NodeConfig::load_with_env(&with_file, env).unwrap();
        assert!(!c.chaos.nemesis);
        let flagged = NodeArgs {
            chaos_nemesis: Some("true".into()),
            ..with_file.clone()
        };
        let c = NodeConfig::load_with_env(&flagged, env).unwrap();
        assert!(c.chaos.nemesis);

        std::fs::write(&file, "chaos: { nemesis: sometimes }\n").unwrap();
        let problems = NodeConfig::load_with_env(&with_file, none)
            .unwrap_err()
            .problems()
            .to_vec();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("chaos.nemesis"), "{problems:?}");
        let env = |key: &str| (key == env::CHAOS_NEMESIS).then(|| "2".to_owned());
        let problems = NodeConfig::load_with_env(&NodeArgs::default(), env)
            .unwrap_err()
            .problems()
            .to_vec();
        assert!(
            problems[0].contains("SYMPHONY_CHAOS_NEMESIS"),
            "{problems:?}"
        );
    }
}
