//! `symphony models register|alias|list|show|delete`: a node's model
//! registry over its HTTP API.
//!
//! Server and token come from `--server`/`SYMPHONY_SERVER` and
//! `--token`/`SYMPHONY_TOKEN`, as for the other client commands. Data goes to
//! stdout (exactly one JSON document with `--json`, the server's), messages
//! to stderr. Exit codes: 0 done, 1 the request failed (not found, in use,
//! unreachable), 78 a bad name, reference, file or metadata.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, UNIX_EPOCH};

use axum::body::Bytes;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use serde_json::json;

use super::client::{Api, ClientError, ServerArgs, root_cause};
use super::{EXIT_OK, EXIT_TEMPFAIL};
use crate::inference::TensorSpec;
use crate::registry::{
    Alias, ModelInfo, ModelRef, ModelSummary, ModelVersion, VersionRef, check_alias, check_format,
    check_meta, check_name,
};

/// Bytes handed to the connection at a time during an upload (the progress
/// bar moves by this much).
const UPLOAD_CHUNK: usize = 256 * 1024;

/// `symphony models …`.
#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Register a model file as the next version of NAME.
    Register(RegisterArgs),
    /// Point an alias (production, staging, …) of a model at a version,
    /// creating or moving it.
    Alias {
        /// The model.
        name: String,
        /// The alias.
        alias: String,
        /// The version it is to point at.
        #[arg(value_name = "VERSION", value_parser = clap::value_parser!(u32).range(1..))]
        number: u32,
        /// Print one JSON document on stdout and nothing else there.
        #[arg(long)]
        json: bool,
        /// The server.
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List the models.
    List {
        /// Print one JSON document on stdout and nothing else there.
        #[arg(long)]
        json: bool,
        /// The server.
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Show a model with its versions (NAME), or one version (NAME@3,
    /// NAME@production, NAME@latest).
    Show {
        /// NAME or NAME@REF.
        #[arg(value_name = "NAME[@REF]")]
        reference: String,
        /// Print one JSON document on stdout and nothing else there.
        #[arg(long)]
        json: bool,
        /// The server.
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Deploy NAME@REF on N replicas across the cluster, optionally with a
    /// canary taking a percent of the requests.
    Deploy(DeployArgs),
    /// Return a model to its previous deployment.
    Rollback {
        /// The model.
        name: String,
        /// Print one JSON document on stdout and nothing else there.
        #[arg(long)]
        json: bool,
        /// The server.
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Undeploy a model: its replicas stop everywhere.
    Undeploy {
        /// The model.
        name: String,
        /// Print one JSON document on stdout and nothing else there.
        #[arg(long)]
        json: bool,
        /// The server.
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Delete a version; refused while an alias points at it or it is
    /// deployed.
    Delete {
        /// NAME@VERSION (a number).
        #[arg(value_name = "NAME@VERSION")]
        reference: String,
        /// Print one JSON document on stdout and nothing else there.
        #[arg(long)]
        json: bool,
        /// The server.
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// Arguments of `symphony models register`.
#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// The model's name: lower-case letters, digits, '-' and '_'.
    pub name: String,
    /// The model file.
    #[arg(long, value_name = "PATH")]
    pub file: PathBuf,
    /// The file's format (only onnx for now).
    #[arg(long, default_value = "onnx")]
    pub format: String,
    /// Metadata to record with the version, KEY=VALUE (repeatable).
    #[arg(long = "meta", value_name = "K=V")]
    pub meta: Vec<String>,
    /// Print one JSON document on stdout and nothing else there.
    #[arg(long)]
    pub json: bool,
    /// The server.
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Arguments of `symphony models deploy`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// NAME@REF: the version to deploy (a number, an alias or latest).
    #[arg(value_name = "NAME@REF")]
    pub reference: String,
    /// Replicas, each on its own node.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub replicas: u32,
    /// Most requests a replica runs as one batch.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_batch: Option<u32>,
    /// Longest an idle replica waits for more requests (e.g. 5ms).
    #[arg(long, value_name = "DURATION")]
    pub max_wait: Option<String>,
    /// A canary: NAME@REF2, another version of the same model.
    #[arg(long, value_name = "NAME@REF2", requires = "percent")]
    pub canary: Option<String>,
    /// Percent of the requests the canary takes, 0 to 100.
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100), requires = "canary")]
    pub percent: Option<u8>,
    /// A label a node must carry to hold a replica, K=V (repeatable).
    #[arg(long = "placement", value_name = "K=V")]
    pub placement: Vec<String>,
    /// Print one JSON document on stdout and nothing else there.
    #[arg(long)]
    pub json: bool,
    /// The server.
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Runs a `symphony models` command; returns the exit code.
pub(crate) async fn run(command: ModelsCommand) -> u8 {
    let result = match command {
        ModelsCommand::Register(args) => register(args).await,
        ModelsCommand::Alias {
            name,
            alias,
            number,
            json,
            server,
        } => set_alias(&name, &alias, number, json, &server).await,
        ModelsCommand::List { json, server } => list(json, &server).await,
        ModelsCommand::Show {
            reference,
            json,
            server,
        } => show(&reference, json, &server).await,
        ModelsCommand::Delete {
            reference,
            json,
            server,
        } => delete(&reference, json, &server).await,
        ModelsCommand::Deploy(args) => deploy(args).await,
        ModelsCommand::Rollback { name, json, server } => {
            deployment_write(&name, "rollback", json, &server).await
        }
        ModelsCommand::Undeploy { name, json, server } => {
            deployment_write(&name, "undeploy", json, &server).await
        }
    };
    match result {
        Ok(()) => EXIT_OK,
        // The registry cannot take writes now (its replicated log has no
        // quorum within reach): the same command may work later.
        Err(ClientError::Status { status, message })
            if status == reqwest::StatusCode::SERVICE_UNAVAILABLE =>
        {
            eprintln!("error: {message}");
            EXIT_TEMPFAIL
        }
        Err(e) => e.report(),
    }
}

async fn register(args: RegisterArgs) -> Result<(), ClientError> {
    check_name(&args.name).map_err(ClientError::usage)?;
    let format = check_format(&args.format).map_err(ClientError::usage)?;
    let meta = parse_meta(&args.meta)?;
    let bytes = std::fs::read(&args.file)
        .map_err(|e| ClientError::Usage(format!("cannot read {}: {e}", args.file.display())))?;
    let api = args.server.api()?;
    let mut query: Vec<(&str, String)> = vec![("format", format)];
    query.extend(meta.iter().map(|(k, v)| ("meta", format!("{k}={v}"))));
    let bar = std::io::stderr()
        .is_terminal()
        .then(|| upload_bar(&args.name, bytes.len()));
    let body = reqwest::Body::wrap(Upload {
        data: Bytes::from(bytes),
        sent: 0,
        bar: bar.clone(),
    });
    let request = api
        .request(
            Method::POST,
            &format!("/api/v1/models/{}/versions", args.name),
        )
        .query(&query)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(body);
    let answer = upload(&api, request).await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let answer = answer?;
    if args.json {
        println!("{answer}");
        return Ok(());
    }
    let version: ModelVersion = api.parse(answer)?;
    eprintln!(
        "registered {}@{} (sha256 {}, {})",
        version.name,
        version.version,
        short(&version.checksum),
        human_size(version.size)
    );
    println!("{}@{}", version.name, version.version);
    Ok(())
}

async fn set_alias(
    name: &str,
    alias: &str,
    version: u32,
    json: bool,
    server: &ServerArgs,
) -> Result<(), ClientError> {
    check_name(name).map_err(ClientError::usage)?;
    check_alias(alias).map_err(ClientError::usage)?;
    let api = server.api()?;
    let answer = api
        .put(
            &format!("/api/v1/models/{name}/aliases/{alias}"),
            &json!({ "version": version }),
        )
        .await?;
    if json {
        println!("{answer}");
        return Ok(());
    }
    let alias: Alias = api.parse(answer)?;
    println!("{}@{} -> {}", alias.name, alias.alias, alias.version);
    Ok(())
}

async fn list(json: bool, server: &ServerArgs) -> Result<(), ClientError> {
    let api = server.api()?;
    let answer = api.get("/api/v1/models").await?;
    if json {
        println!("{answer}");
        return Ok(());
    }
    let models: Vec<ModelSummary> = api.parse(answer)?;
    print!("{}", models_table(&models));
    Ok(())
}

async fn show(text: &str, json: bool, server: &ServerArgs) -> Result<(), ClientError> {
    let reference = ModelRef::parse(text).map_err(ClientError::usage)?;
    let api = server.api()?;
    // `NAME` alone shows the model; `NAME@…` (even `@latest`) one version.
    let whole_model = !text.contains('@');
    let path = if whole_model {
        format!("/api/v1/models/{}", reference.name)
    } else {
        format!(
            "/api/v1/models/{}/versions/{}",
            reference.name, reference.version
        )
    };
    let answer = api.get(&path).await?;
    if json {
        println!("{answer}");
    } else if whole_model {
        let info = api.parse::<ModelInfo>(answer)?;
        print!("{}", model_text(&info));
        if info.deployment.is_some() {
            let path = format!("/api/v1/models/{}/deployment", reference.name);
            print!("{}", deployment_text(&api.get(&path).await?));
        }
    } else {
        print!("{}", version_text(&api.parse::<ModelVersion>(answer)?));
    }
    Ok(())
}

async fn delete(reference: &str, json: bool, server: &ServerArgs) -> Result<(), ClientError> {
    let parsed = ModelRef::parse(reference).map_err(ClientError::usage)?;
    let VersionRef::Number(number) = parsed.version else {
        return Err(ClientError::Usage(format!(
            "delete needs NAME@VERSION with a version number, e.g. {}@1; got \"{reference}\"",
            parsed.name
        )));
    };
    let api = server.api()?;
    let answer = api
        .delete(&format!("/api/v1/models/{}/versions/{number}", parsed.name))
        .await?;
    if json {
        println!("{answer}");
    } else {
        println!("deleted {}@{number}", parsed.name);
    }
    Ok(())
}

async fn deploy(args: DeployArgs) -> Result<(), ClientError> {
    let reference = ModelRef::parse(&args.reference).map_err(ClientError::usage)?;
    let mut body = json!({
        "version": reference.version.to_string(),
        "replicas": args.replicas,
    });
    if let Some(b) = args.max_batch {
        body["max_batch"] = json!(b);
    }
    if let Some(wait) = &args.max_wait {
        humantime::parse_duration(wait).map_err(|e| {
            ClientError::Usage(format!(
                "--max-wait \"{wait}\" is not a duration such as 5ms: {e}"
            ))
        })?;
        body["max_wait"] = json!(wait);
    }
    if let Some(canary) = &args.canary {
        let parsed = ModelRef::parse(canary).map_err(ClientError::usage)?;
        if parsed.name != reference.name {
            return Err(ClientError::Usage(format!(
                "the canary {canary} is a version of model \"{}\", not of \"{}\"",
                parsed.name, reference.name
            )));
        }
        body["canary"] = json!(canary);
        body["percent"] = json!(args.percent);
    }
    let mut placement = serde_json::Map::new();
    for pair in &args.placement {
        let Some((k, v)) = pair
            .split_once('=')
            .filter(|(k, v)| !k.is_empty() && !v.is_empty())
        else {
            return Err(ClientError::Usage(format!(
                "--placement {pair:?} is not KEY=VALUE"
            )));
        };
        placement.insert(k.to_owned(), json!(v));
    }
    body["placement"] = serde_json::Value::Object(placement);
    let api = args.server.api()?;
    let answer = api
        .put(
            &format!("/api/v1/models/{}/deployment", reference.name),
            &body,
        )
        .await?;
    if args.json {
        println!("{answer}");
    } else {
        print!("{}", deployment_text(&answer));
    }
    Ok(())
}

/// `rollback` or `undeploy` of `name`.
async fn deployment_write(
    name: &str,
    what: &str,
    json: bool,
    server: &ServerArgs,
) -> Result<(), ClientError> {
    check_name(name).map_err(ClientError::usage)?;
    let api = server.api()?;
    let answer = if what == "rollback" {
        api.post(&format!("/api/v1/models/{name}/rollback"), &json!({}))
            .await?
    } else {
        api.delete(&format!("/api/v1/models/{name}/deployment"))
            .await?
    };
    if json {
        println!("{answer}");
    } else {
        print!("{}", deployment_text(&answer));
    }
    Ok(())
}

/// A deployment (the server's JSON) as text.
fn deployment_text(d: &serde_json::Value) -> String {
    let name = d["name"].as_str().unwrap_or_default();
    if d["deployed"] != json!(true) {
        return format!("{name}: not deployed (generation {})\n", d["generation"]);
    }
    let line = |role: &str, v: &serde_json::Value| {
        let nodes: Vec<&str> = v["nodes"]
            .as_array()
            .map(|a| a.iter().filter_map(|n| n.as_str()).collect())
            .unwrap_or_default();
        let version = v["version"].as_u64().unwrap_or_default();
        let requests = d["requests"][version.to_string()].as_u64().unwrap_or(0);
        format!(
            "  {role:<8} {name}@{version}  {}%  on {}  ({requests} requests routed here)\n",
            v["percent"],
            if nodes.is_empty() {
                "-".to_owned()
            } else {
                nodes.join(", ")
            }
        )
    };
    let mut out = format!(
        "{name}: deployed (generation {}), {} replicas, max batch {}, max wait {} ms\n",
        d["generation"], d["replicas"], d["max_batch"], d["max_wait_ms"]
    );
    out.push_str(&line("primary", &d["primary"]));
    if d["canary"].is_object() {
        out.push_str(&line("canary", &d["canary"]));
    }
    if let Some(labels) = d["placement"].as_object().filter(|m| !m.is_empty()) {
        let text: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect();
        out.push_str(&format!("  placement {}\n", text.join(",")));
    }
    if d["unplaced"].as_u64().unwrap_or(0) > 0 {
        out.push_str(&format!(
            "  {} replicas unplaced: not enough nodes qualify\n",
            d["unplaced"]
        ));
    }
    out
}

/// `--meta K=V` arguments as a map; a repeated key or a pair without `=`
/// is a usage error.
fn parse_meta(pairs: &[String]) -> Result<BTreeMap<String, String>, ClientError> {
    let mut meta = BTreeMap::new();
    for pair in pairs {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(ClientError::Usage(format!(
                "--meta {pair:?} is not KEY=VALUE"
            )));
        };
        if meta.insert(key.to_owned(), value.to_owned()).is_some() {
            return Err(ClientError::Usage(format!(
                "--meta key \"{key}\" is given more than once"
            )));
        }
    }
    check_meta(&meta).map_err(ClientError::Usage)?;
    Ok(meta)
}

// ---- what is printed -------------------------------------------------------

/// `models list` as a table: NAME VERSIONS LATEST ALIASES.
fn models_table(models: &[ModelSummary]) -> String {
    let mut rows = vec![[
        "NAME".to_owned(),
        "VERSIONS".into(),
        "LATEST".into(),
        "ALIASES".into(),
    ]];
    for m in models {
        rows.push([
            m.name.clone(),
            m.versions.to_string(),
            m.latest.map_or_else(|| "-".into(), |n| n.to_string()),
            aliases_text(m.aliases.iter().map(|(a, v)| (a.as_str(), *v))),
        ]);
    }
    table(&rows)
}

/// `models show NAME`: the versions as a table, then the aliases.
fn model_text(info: &ModelInfo) -> String {
    let mut rows = vec![[
        "VERSION".to_owned(),
        "SIZE".into(),
        "SHA256".into(),
        "CREATED".into(),
        "BY".into(),
        "ALIASES".into(),
    ]];
    for v in &info.versions {
        let mut aliases: Vec<&str> = info
            .aliases
            .iter()
            .filter(|a| a.version == v.version)
            .map(|a| a.alias.as_str())
            .collect();
        if info.deployed.contains(&v.version) {
            aliases.push("(deployed)");
        }
        rows.push([
            v.version.to_string(),
            human_size(v.size),
            short(&v.checksum).to_owned(),
            time(v.created_ms),
            v.created_by.clone(),
            if aliases.is_empty() {
                "-".into()
            } else {
                aliases.join(",")
            },
        ]);
    }
    let mut out = format!("model {}\n", info.name);
    out.push_str(&table(&rows));
    if let Some(latest) = info.versions.last() {
        out.push_str(&format!(
            "signature of {}: {}\n",
            latest.version, latest.signature
        ));
    }
    out
}

/// `models show NAME@REF`: one version, field by field.
fn version_text(v: &ModelVersion) -> String {
    let mut out = format!("{}@{}\n", v.name, v.version);
    let mut field = |key: &str, value: String| out.push_str(&format!("  {key:<10} {value}\n"));
    field("sha256", v.checksum.clone());
    field("size", format!("{} ({} bytes)", human_size(v.size), v.size));
    field("format", v.format.clone());
    field(
        "created",
        format!("{} by {}", time(v.created_ms), v.created_by),
    );
    if v.registered_as != v.version {
        field("registered", format!("as version {}", v.registered_as));
    }
    let specs = |specs: &[TensorSpec]| {
        specs
            .iter()
            .map(|s| format!("{}: {}", s.name, s.describe()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    field("inputs", specs(&v.signature.inputs));
    field("outputs", specs(&v.signature.outputs));
    for (key, value) in &v.meta {
        field("meta", format!("{key}={value}"));
    }
    out
}

fn aliases_text<'a>(aliases: impl Iterator<Item = (&'a str, u32)>) -> String {
    let text: Vec<String> = aliases.map(|(a, v)| format!("{a}={v}")).collect();
    if text.is_empty() {
        "-".into()
    } else {
        text.join(",")
    }
}

/// Rows with every column but the last padded to its widest cell.
pub(super) fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let widths: Vec<usize> = (0..N)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The first 12 hex digits of a checksum, as `git` abbreviates.
fn short(checksum: &str) -> &str {
    checksum.get(..12).unwrap_or(checksum)
}

fn time(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// `1.5 MiB`, `812 B`.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

// ---- the upload ------------------------------------------------------------

fn upload_bar(name: &str, len: usize) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(format!("uploading {name}"));
    bar
}

/// A request body handed out in chunks, moving a progress bar as the
/// connection takes them.
struct Upload {
    data: Bytes,
    sent: usize,
    bar: Option<ProgressBar>,
}

impl http_body::Body for Upload {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let start = self.sent;
        if start >= self.data.len() {
            return Poll::Ready(None);
        }
        let end = (start + UPLOAD_CHUNK).min(self.data.len());
        let chunk = self.data.slice(start..end);
        self.sent = end;
        if let Some(bar) = &self.bar {
            bar.set_position(end as u64);
        }
        Poll::Ready(Some(Ok(http_body::Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent >= self.data.len()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact((self.data.len() - self.sent) as u64)
    }
}

/// Sends an upload. The server cuts the connection of an upload it refuses
/// (too large) before it has all of it, which the client sees as a failed
/// write: that is said as such, not as an unreachable server.
async fn upload(
    api: &Api,
    request: reqwest::RequestBuilder,
) -> Result<serde_json::Value, ClientError> {
    match request.send().await {
        Ok(response) => api.answer(response).await,
        Err(e) if e.is_request() && !e.is_connect() && !e.is_timeout() => {
            Err(ClientError::Refused(format!(
                "the server at {} cut the upload short: {}; it refuses a model file over its limit (512 MiB by default)",
                api.base,
                root_cause(&e)
            )))
        }
        Err(e) => Err(api.unreachable(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_pairs_are_key_value() {
        let meta = parse_meta(&["owner=ml".into(), "note=a=b".into()]).unwrap();
        assert_eq!(meta["owner"], "ml");
        assert_eq!(meta["note"], "a=b");
        assert!(parse_meta(&["novalue".into()]).is_err());
        assert!(parse_meta(&["k=1".into(), "k=2".into()]).is_err());
        assert!(parse_meta(&["=v".into()]).is_err());
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_size(812), "812 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(3 * 1024 * 1024), "3.0 MiB");
    }

    #[test]
    fn model_tables_align() {
        let models = vec![
            ModelSummary {
                name: "iris".into(),
                versions: 2,
                latest: Some(2),
                aliases: BTreeMap::from([("production".into(), 1), ("staging".into(), 2)]),
                updated_ms: Some(0),
            },
            ModelSummary {
                name: "resnet-50".into(),
                versions: 0,
                latest: None,
                aliases: BTreeMap::new(),
                updated_ms: None,
            },
        ];
        assert_eq!(
            models_table(&models),
            "NAME       VERSIONS  LATEST  ALIASES\n\
             iris       2         2       production=1,staging=2\n\
             resnet-50  0         -       -\n"
        );
    }
}
