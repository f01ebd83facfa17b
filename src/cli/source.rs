//! Workflow files for the command line: load, validate, recompile.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::{EXIT_CONFIG, EXIT_OK};
use crate::engine::SubmittedSource;
use crate::executor::{ExecutorConfig, Executors};
use crate::wdl::{self, Diagnostics, Sources, Workflow};

/// Reads and compiles a workflow file, keeping its sources for the journal.
///
/// # Errors
/// Every problem of the file and its imports.
pub fn load_workflow(
    path: &Path,
    executors: &Executors,
) -> Result<(Workflow, SubmittedSource), Diagnostics> {
    let sources = Sources::read(path);
    let workflow = wdl::compile(&sources, executors)?;
    Ok((workflow, SubmittedSource::from_sources(&sources)))
}

/// Compiles the sources a run was submitted with (on resume).
///
/// # Errors
/// The diagnostics, as text.
pub fn compile_submitted(
    source: &SubmittedSource,
    executors: &Executors,
) -> Result<Workflow, String> {
    wdl::compile(&source.to_sources(), executors).map_err(|d| d.to_string())
}

/// `symphony validate`: every problem of every file, exit 78 if any.
pub(crate) fn validate(files: &[PathBuf], as_json: bool) -> u8 {
    let executors = Executors::standard(&ExecutorConfig::default());
    let mut report = Vec::new();
    let mut invalid = false;
    for file in files {
        match wdl::load(file, &executors) {
            Ok(_) => {
                if !as_json {
                    println!("{}: valid", file.display());
                }
                report.push(
                    json!({ "file": file.display().to_string(), "valid": true, "diagnostics": [] }),
                );
            }
            Err(diagnostics) => {
                invalid = true;
                if !as_json {
                    eprint!("{diagnostics}");
                }
                let list: Vec<_> = diagnostics
                    .iter()
                    .map(|d| {
                        json!({
                            "file": d.file, "line": d.line, "col": d.col,
                            "message": d.message, "hint": d.hint,
                        })
                    })
                    .collect();
                report.push(json!({ "file": file.display().to_string(), "valid": false, "diagnostics": list }));
            }
        }
    }
    if as_json {
        println!("{}", serde_json::Value::Array(report));
    }
    if invalid { EXIT_CONFIG } else { EXIT_OK }
}
