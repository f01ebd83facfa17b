//! `symphony pipelines register|list|show|delete|invoke`: a node's pipelines
//! (`durability: none` workflows served at request speed) over its HTTP API.
//!
//! Server and token come from `--server`/`SYMPHONY_SERVER` and
//! `--token`/`SYMPHONY_TOKEN`, as for the other client commands. Data goes to
//! stdout (exactly one JSON document with `--json`, the server's), messages
//! to stderr. Exit codes: 0 done; 1 the request or the invocation failed (no
//! such pipeline, a task failed, unreachable); 75 the node has as many
//! invocations in flight as it allows (429): try again later; 78 an invalid
//! pipeline file or invalid inputs.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use serde::Deserialize;
use serde_json::json;

use super::EXIT_OK;
use super::client::{ClientError, ServerArgs, segment, workflow_request};
use super::inputs::{self, InputArgs};
use super::models::table;
use crate::value::{Map, Value};
use crate::wdl::{Durability, Workflow};

/// `symphony pipelines …`.
#[derive(Debug, Subcommand)]
pub enum PipelinesCommand {
    /// Register a `durability: none` workflow as a pipeline under its
    /// `name`, replacing a pipeline of that name; the files it imports are
    /// sent along.
    Register {
        /// The workflow file.
        file: PathBuf,
        /// Print one JSON document on stdout and nothing else there.
        #[arg(long)]
        json: bool,
        /// The server.
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List the pipelines.
    List {
        /// Print one JSON document on stdout and nothing else there.
        #[arg(long)]
        json: bool,
        /// The server.
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Show a pipeline: its inputs, tasks and outputs.
    Show {
        /// The pipeline's name.
        name: String,
        /// Print one JSON document on stdout and nothing else there.
        #[arg(long)]
        json: bool,
        /// The server.
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Delete a pipeline (invocations under way finish).
    Delete {
        /// The pipeline's name.
        name: String,
        /// Print one JSON document on stdout and nothing else there.
        #[arg(long)]
        json: bool,
        /// The server.
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Invoke a pipeline and print its outputs as JSON.
    Invoke(InvokeArgs),
}

/// Arguments of `symphony pipelines invoke`.
#[derive(Debug, Args)]
#[command(mut_arg("inputs", |a| a.help(
    "An input, `KEY=VALUE` (repeatable). VALUE is parsed as YAML (a text input that looks like a number needs quotes: -i 'id=\"42\"')"
)))]
pub struct InvokeArgs {
    /// The pipeline's name.
    pub name: String,
    /// Inputs, as for `run` and `submit`, but every `-i` value is read as
    /// YAML (the node does not say its inputs' types).
    #[command(flatten)]
    pub inputs: InputArgs,
    /// The inputs as one JSON object (`-i` values override its keys).
    #[arg(long, value_name = "JSON", conflicts_with = "inputs_file")]
    pub input_json: Option<String>,
    /// How tensors in the outputs are written: nested lists of numbers, or
    /// `{"$tensor": {dtype, shape, data}}` with the data base64
    /// little-endian.
    #[arg(long, value_enum, default_value_t = TensorForm::Lists)]
    pub tensors: TensorForm,
    /// Print the server's JSON document on one line instead of indented.
    #[arg(long)]
    pub json: bool,
    /// The server.
    #[command(flatten)]
    pub server: ServerArgs,
}

/// The `?tensors=` of an invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TensorForm {
    /// Nested lists of numbers, by the tensor's shape.
    Lists,
    /// `{"$tensor": {"dtype", "shape", "data"}}`, data base64 little-endian.
    Base64,
}

impl TensorForm {
    fn as_str(self) -> &'static str {
        match self {
            TensorForm::Lists => "lists",
            TensorForm::Base64 => "base64",
        }
    }
}

/// A pipeline as `GET /api/v1/pipelines/{name}` describes it.
#[derive(Debug, Deserialize)]
struct PipelineDoc {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    inputs: Vec<String>,
    #[serde(default)]
    tasks: Vec<TaskDoc>,
    #[serde(default)]
    outputs: Vec<String>,
    #[serde(default)]
    invoke: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TaskDoc {
    id: String,
    uses: String,
}

/// Runs a `symphony pipelines` command; returns the exit code.
pub(crate) async fn run(command: PipelinesCommand) -> u8 {
    let result = match command {
        PipelinesCommand::Register { file, json, server } => register(&file, json, &server).await,
        PipelinesCommand::List { json, server } => list(json, &server).await,
        PipelinesCommand::Show { name, json, server } => show(&name, json, &server).await,
        PipelinesCommand::Delete { name, json, server } => delete(&name, json, &server).await,
        PipelinesCommand::Invoke(args) => invoke(args).await,
    };
    match result {
        Ok(()) => EXIT_OK,
        Err(e) => e.report(),
    }
}

async fn register(
    file: &std::path::Path,
    json: bool,
    server: &ServerArgs,
) -> Result<(), ClientError> {
    // Diagnostics are printed where they are found; only the code is left.
    let body = match workflow_request(file) {
        Ok((_, body)) => body,
        Err(code) => return Err(ClientError::Reported(code)),
    };
    let api = server.api()?;
    let answer = api.post("/api/v1/pipelines", &body).await?;
    if json {
        println!("{answer}");
        return Ok(());
    }
    let pipeline: PipelineDoc = api.parse(answer)?;
    let tasks: Vec<&str> = pipeline.tasks.iter().map(|t| t.id.as_str()).collect();
    eprintln!(
        "registered pipeline {} ({}) on {}",
        pipeline.name,
        plural(tasks.len(), "task"),
        api.base
    );
    println!("{}", pipeline.name);
    Ok(())
}

async fn list(json: bool, server: &ServerArgs) -> Result<(), ClientError> {
    let api = server.api()?;
    let answer = api.get("/api/v1/pipelines").await?;
    if json {
        println!("{answer}");
        return Ok(());
    }
    let pipelines: Vec<PipelineDoc> = api.parse(answer)?;
    print!("{}", pipelines_table(&pipelines));
    Ok(())
}

async fn show(name: &str, json: bool, server: &ServerArgs) -> Result<(), ClientError> {
    let api = server.api()?;
    let answer = api
        .get(&format!("/api/v1/pipelines/{}", segment(name)))
        .await?;
    if json {
        println!("{answer}");
    } else {
        print!("{}", pipeline_text(&api.parse(answer)?));
    }
    Ok(())
}

async fn delete(name: &str, json: bool, server: &ServerArgs) -> Result<(), ClientError> {
    let api = server.api()?;
    // 204: nothing to print but what was done.
    api.delete(&format!("/api/v1/pipelines/{}", segment(name)))
        .await?;
    if json {
        println!("{}", json!({ "name": name, "deleted": true }));
    } else {
        println!("deleted pipeline {name}");
    }
    Ok(())
}

async fn invoke(args: InvokeArgs) -> Result<(), ClientError> {
    let inputs = invocation_inputs(&args)?;
    let api = args.server.api()?;
    // No time limit: an invocation lasts as long as its pipeline runs.
    let request = api
        .request(
            reqwest::Method::POST,
            &format!("/api/v1/pipelines/{}/invoke", segment(&args.name)),
        )
        .query(&[("tensors", args.tensors.as_str())])
        .json(&Value::Map(inputs).to_json());
    let outputs = api.send(request).await?;
    if args.json {
        println!("{outputs}");
    } else {
        println!(
            "{}",
            serde_json::to_string_pretty(&outputs).unwrap_or_else(|_| outputs.to_string())
        );
    }
    Ok(())
}

/// The inputs of an invocation: `--input-json` (or `--inputs FILE`), then
/// each `-i` on top.
///
/// The node does not say the types of a pipeline's inputs, so every `-i`
/// value is read as YAML (kept as text when it is not YAML), the way `run`
/// reads an input it does not know; the node checks the types.
fn invocation_inputs(args: &InvokeArgs) -> Result<Map, ClientError> {
    let mut inputs = Map::new();
    if let Some(text) = &args.input_json {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Map(given)) => inputs.extend(given),
            Ok(other) => {
                return Err(ClientError::Usage(format!(
                    "--input-json must hold a JSON object of inputs, not a {}",
                    other.type_name()
                )));
            }
            Err(e) => return Err(ClientError::Usage(format!("--input-json: {e}"))),
        }
    }
    let untyped = untyped(&args.name);
    inputs.extend(
        inputs::collect(
            &untyped,
            &args.inputs.inputs,
            args.inputs.inputs_file.as_deref(),
        )
        .map_err(ClientError::Usage)?,
    );
    Ok(inputs)
}

/// A workflow that declares no inputs, for [`inputs::collect`].
fn untyped(name: &str) -> Workflow {
    Workflow {
        name: name.to_owned(),
        description: None,
        durability: Durability::None,
        inputs: Vec::new(),
        tasks: Vec::new(),
        outputs: Vec::new(),
        deadline: None,
    }
}

// ---- what is printed -------------------------------------------------------

/// `pipelines list` as a table: NAME INPUTS OUTPUTS DESCRIPTION.
fn pipelines_table(pipelines: &[PipelineDoc]) -> String {
    let mut rows = vec![[
        "NAME".to_owned(),
        "INPUTS".into(),
        "OUTPUTS".into(),
        "DESCRIPTION".into(),
    ]];
    for p in pipelines {
        rows.push([
            p.name.clone(),
            names(&p.inputs),
            names(&p.outputs),
            p.description.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    table(&rows)
}

/// `pipelines show NAME`: field by field.
fn pipeline_text(p: &PipelineDoc) -> String {
    let mut out = format!("pipeline {}\n", p.name);
    let mut field = |key: &str, value: String| out.push_str(&format!("  {key:<12} {value}\n"));
    if let Some(description) = &p.description {
        field("description", description.clone());
    }
    field("inputs", names(&p.inputs));
    let tasks: Vec<String> = p
        .tasks
        .iter()
        .map(|t| format!("{} ({})", t.id, t.uses))
        .collect();
    field("tasks", names(&tasks));
    field("outputs", names(&p.outputs));
    if let Some(path) = &p.invoke {
        field("invoke", format!("POST {path}"));
    }
    out
}

fn names(list: &[String]) -> String {
    if list.is_empty() {
        "-".into()
    } else {
        list.join(", ")
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn doc(value: serde_json::Value) -> PipelineDoc {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn pipeline_tables_align() {
        let list = vec![
            doc(json!({"name": "iris", "description": "Classify an iris.",
                "inputs": ["features"], "outputs": ["label", "probabilities"],
                "tasks": [], "invoke": "/api/v1/pipelines/iris/invoke"})),
            doc(
                json!({"name": "echo-all", "description": null, "inputs": [],
                "outputs": ["x"], "tasks": []}),
            ),
        ];
        assert_eq!(
            pipelines_table(&list),
            "NAME      INPUTS    OUTPUTS               DESCRIPTION\n\
             iris      features  label, probabilities  Classify an iris.\n\
             echo-all  -         x                     -\n"
        );
        let text = pipeline_text(&doc(json!({"name": "iris", "inputs": ["features"],
            "tasks": [{"id": "label", "uses": "builtin/label"}], "outputs": ["label"],
            "invoke": "/api/v1/pipelines/iris/invoke"})));
        assert_eq!(
            text,
            "pipeline iris\n  inputs       features\n  tasks        label (builtin/label)\n  \
             outputs      label\n  invoke       POST /api/v1/pipelines/iris/invoke\n"
        );
    }

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: PipelinesCommand,
    }

    fn invoke_args(argv: &[&str]) -> InvokeArgs {
        let cli = Cli::try_parse_from(["pipelines", "invoke"].iter().chain(argv)).unwrap();
        match cli.command {
            PipelinesCommand::Invoke(args) => args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn inputs_come_from_json_then_each_i() {
        let args = invoke_args(&[
            "iris",
            "--input-json",
            r#"{"features": [1, 2], "who": "me", "t": {"$tensor": {"dtype": "u8", "shape": [2], "data": "AQI="}}}"#,
            "-i",
            "who=42",
            "-i",
            "name=not: [yaml",
        ]);
        let inputs = invocation_inputs(&args).unwrap();
        assert_eq!(
            inputs["features"],
            Value::List(vec![Value::Int(1), Value::Int(2)])
        );
        assert_eq!(inputs["who"], Value::Int(42), "-i wins, read as YAML");
        assert_eq!(inputs["name"], Value::from("not: [yaml"));
        assert!(matches!(inputs["t"], Value::Tensor(_)), "{:?}", inputs["t"]);

        for bad in ["[1, 2]", "{nope"] {
            let args = invoke_args(&["iris", "--input-json", bad]);
            assert!(matches!(
                invocation_inputs(&args),
                Err(ClientError::Usage(_))
            ));
        }
        let both = Cli::try_parse_from([
            "pipelines",
            "invoke",
            "iris",
            "--input-json",
            "{}",
            "--inputs",
            "f.json",
        ]);
        assert!(both.is_err(), "--input-json and --inputs conflict");
    }
}
