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
//!
//! Here: the options ([`NodeConfig`]), their defaults and loading. The
//! layers are `file` (the YAML file), [`env`] (variables) and `flags`
//! ([`NodeArgs`]), each producing a `layer::Layer` of what it sets; `validate`
//! holds the rules between options, `parse` the value parsers the layers
//! share, `secrets` the cookie and token files and the host name.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod file;
mod flags;
mod layer;
mod parse;
mod secrets;
mod validate;

pub mod env;

pub use flags::NodeArgs;

use env::env_layer;
use file::file_layer;
use flags::flag_layer;
use parse::{join_host_port, show_bytes, split_host_port};
use secrets::{default_name, hostname, read_secret, secret};

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
}

#[cfg(test)]
mod tests;
