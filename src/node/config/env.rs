//! The environment layer and the variables it reads, one per option.

use std::path::PathBuf;

use super::layer::{Layer, one_secret};
use super::parse::{
    comma_list, parse_bool, parse_bytes, parse_count, parse_duration, parse_labels,
    parse_socket_addr, parse_u32, parsed,
};

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

/// The environment layer. A variable set to the empty string counts as not
/// set, except `SYMPHONY_EXEC_ALLOW`, where it allows no command.
pub(super) fn env_layer(get: &dyn Fn(&str) -> Option<String>, problems: &mut Vec<String>) -> Layer {
    let var = |name: &str| get(name).filter(|v| !v.trim().is_empty());
    let p = problems;
    Layer {
        name: var(NAME).map(|v| v.trim().to_owned()),
        listen: parsed(LISTEN, var(LISTEN), parse_socket_addr, p),
        advertise: var(ADVERTISE).map(|v| v.trim().to_owned()),
        seeds: var(SEEDS).map(|s| comma_list(&s)),
        cookie: one_secret(
            var(COOKIE),
            var(COOKIE_FILE).map(PathBuf::from),
            (COOKIE, COOKIE_FILE),
            p,
        ),
        labels: parsed(LABELS, var(LABELS), parse_labels, p),
        slots: parsed(SLOTS, var(SLOTS), parse_count, p),
        max_invocations: parsed(MAX_INVOCATIONS, var(MAX_INVOCATIONS), parse_count, p),
        data_dir: var(DATA_DIR).map(PathBuf::from),
        pipelines: var(PIPELINES).map(PathBuf::from),
        http: parsed(HTTP, var(HTTP), parse_socket_addr, p),
        api_token: one_secret(
            var(API_TOKEN),
            var(API_TOKEN_FILE).map(PathBuf::from),
            (API_TOKEN, API_TOKEN_FILE),
            p,
        ),
        interval: parsed(
            HEARTBEAT_INTERVAL,
            var(HEARTBEAT_INTERVAL),
            parse_duration,
            p,
        ),
        suspect_after: parsed(SUSPECT_AFTER, var(SUSPECT_AFTER), parse_duration, p),
        down_after: parsed(DOWN_AFTER, var(DOWN_AFTER), parse_duration, p),
        exec_allow: get(EXEC_ALLOW).map(|s| comma_list(&s)),
        model_cache: parsed(MODEL_CACHE, var(MODEL_CACHE), parse_bytes, p),
        corrupt_chunks: parsed(
            CHAOS_CORRUPT_CHUNKS,
            var(CHAOS_CORRUPT_CHUNKS),
            parse_u32,
            p,
        ),
        nemesis: parsed(CHAOS_NEMESIS, var(CHAOS_NEMESIS), parse_bool, p),
        voters: var(RAFT_VOTERS).map(|s| comma_list(&s)),
    }
}
