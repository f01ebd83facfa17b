//! The flag layer: `symphony node`'s command-line options.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::layer::{Layer, one_secret};
use super::parse::{
    comma_list, parse_bool, parse_bytes, parse_count, parse_duration, parse_label,
    parse_socket_addr, parse_u32, parsed,
};

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

pub(super) fn flag_layer(args: &NodeArgs, problems: &mut Vec<String>) -> Layer {
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
