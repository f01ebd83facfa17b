//! The config file layer: a YAML mapping whose every key is checked, with
//! a suggestion for a typo or another tool's name for an option.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_yaml::Value as Yaml;

use super::layer::{Layer, one_secret};
use super::parse::{parse_bool, parse_bytes, parse_duration, parse_socket_addr, parse_u32};

/// Keys a config file may hold at its top level.
pub(super) const KEYS: &[&str] = &[
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
pub(super) const RAFT_KEYS: &[&str] = &["voters"];

/// Keys of the `chaos` section.
pub(super) const CHAOS_KEYS: &[&str] = &["corrupt_chunks", "nemesis"];

/// Keys of the `heartbeat` section.
pub(super) const HEARTBEAT_KEYS: &[&str] = &["interval", "suspect_after", "down_after"];

/// Names other tools use for our keys, for `did you mean`.
pub(super) const SYNONYMS: &[(&str, &str)] = &[
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

pub(super) fn file_layer(path: &Path, problems: &mut Vec<String>) -> Layer {
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

pub(super) fn scalar_text(value: &Yaml) -> Option<String> {
    match value {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Bool(b) => Some(b.to_string()),
        Yaml::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

pub(super) fn yaml_kind(value: &Yaml) -> &'static str {
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
pub(super) fn closest<'k>(word: &str, known: &[&'k str]) -> Option<&'k str> {
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
