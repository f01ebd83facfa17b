//! `symphony submit`: the workflow compiled and its inputs checked here,
//! then sent as one request body with the files it imports.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde_json::{Value as Json, json};

use super::SubmitArgs;
use crate::cli::EXIT_CONFIG;
use crate::executor::{ExecutorConfig, Executors};
use crate::value::Value;
use crate::wdl::{self, Sources, Workflow};

/// The body of `POST /api/v1/runs`, after compiling the workflow and checking
/// the inputs here, so mistakes are reported before anything is sent.
///
/// Errors are printed; the exit code is returned.
pub(super) fn submission(args: &SubmitArgs) -> Result<Json, u8> {
    let (workflow, mut body) = workflow_request(&args.file)?;
    let given = args.inputs.collect(&workflow).map_err(|e| {
        eprintln!("error: {e}");
        EXIT_CONFIG
    })?;
    if let Err(problems) = wdl::check_inputs(&workflow, &given) {
        for p in problems {
            eprintln!("error: {p}");
        }
        return Err(EXIT_CONFIG);
    }
    body["inputs"] = Value::Map(given).to_json();
    Ok(body)
}

/// Compiles the workflow `file` here, so mistakes are reported before
/// anything is sent, and returns it with the request body that carries it
/// and the files it imports: `{workflow, name, files}`, as `POST
/// /api/v1/runs` and `POST /api/v1/pipelines` take it.
///
/// Errors (diagnostics as `file:line:col: …`) are printed; the exit code is
/// returned.
pub(crate) fn workflow_request(file: &Path) -> Result<(Workflow, Json), u8> {
    let sources = Sources::read(file);
    // The server checks `uses` against its own executors; here every
    // standard executor and any model are accepted.
    let executors = Executors::standard(&ExecutorConfig::default());
    let mut catalog: Vec<String> = executors.names().map(str::to_owned).collect();
    catalog.push("model/*".into());
    let workflow = wdl::compile(&sources, &catalog).map_err(|diagnostics| {
        eprint!("{diagnostics}");
        EXIT_CONFIG
    })?;
    let main = sources.main();
    let dir = Path::new(main).parent().unwrap_or(Path::new(""));
    let Some((_, text)) = sources.files().find(|(p, _)| *p == main) else {
        eprintln!("error: cannot read {}", file.display());
        return Err(EXIT_CONFIG);
    };
    let files: BTreeMap<String, &str> = sources
        .files()
        .filter(|(p, _)| *p != main)
        .map(|(p, t)| (relative_to(p, dir), t))
        .collect();
    let body = json!({
        "workflow": text,
        "name": relative_to(main, dir),
        "files": files,
    });
    Ok((workflow, body))
}

/// `path` relative to the directory `base`, both lexically normalised.
pub(super) fn relative_to(path: &str, base: &Path) -> String {
    let path: Vec<Component<'_>> = Path::new(path).components().collect();
    let base: Vec<Component<'_>> = base.components().collect();
    let common = path.iter().zip(&base).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..base.len() {
        out.push("..");
    }
    for c in &path[common..] {
        out.push(c.as_os_str());
    }
    out.to_string_lossy().replace('\\', "/")
}
