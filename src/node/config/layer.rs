//! What one layer (file, environment or flags) sets, and how a layer is
//! applied over the ones before it: an option set replaces the earlier
//! value whole.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::NodeConfig;

/// A secret given directly or as a file.
#[derive(Debug, Clone)]
pub(super) enum Secret {
    Value(String),
    File(PathBuf),
}

/// What one layer (file, environment or flags) sets.
#[derive(Debug, Default)]
pub(super) struct Layer {
    pub(super) name: Option<String>,
    pub(super) listen: Option<SocketAddr>,
    pub(super) advertise: Option<String>,
    pub(super) seeds: Option<Vec<String>>,
    pub(super) cookie: Option<Secret>,
    pub(super) labels: Option<BTreeMap<String, String>>,
    pub(super) slots: Option<usize>,
    pub(super) max_invocations: Option<usize>,
    pub(super) data_dir: Option<PathBuf>,
    pub(super) pipelines: Option<PathBuf>,
    pub(super) http: Option<SocketAddr>,
    pub(super) api_token: Option<Secret>,
    pub(super) interval: Option<Duration>,
    pub(super) suspect_after: Option<Duration>,
    pub(super) down_after: Option<Duration>,
    pub(super) exec_allow: Option<Vec<String>>,
    pub(super) model_cache: Option<u64>,
    pub(super) corrupt_chunks: Option<u32>,
    pub(super) nemesis: Option<bool>,
    pub(super) voters: Option<Vec<String>>,
}

impl Layer {
    /// Sets what this layer sets.
    pub(super) fn apply(self, config: &mut NodeConfig) {
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

pub(super) fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

/// One secret from a value and a file given in the same layer.
pub(super) fn one_secret(
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
