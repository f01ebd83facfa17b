//! The Workflow Definition Language: YAML → raw spec → validated, typed DAG.
//!
//! Pure: nothing here does I/O except [`load`] (through [`Sources::read`]),
//! which reads the file and its imports before handing the text to
//! [`compile`]. The language is described in `docs/wdl.md`.
//!
//! Modules, in the order a file goes through them:
//! - `yaml`: text → YAML tree with positions (duplicates kept).
//! - `parse`: tree → `raw` structs (named like the YAML), reporting unknown
//!   keys, duplicates and wrong types.
//! - `task`, `template`, `graph`, `compile`: raw → [`Workflow`]: templates
//!   and `extends`, durations, executors, the task graph, expressions.
//! - [`expr`]: the `${{ … }}` language.
//! - `diag`: [`Diagnostics`]; `schema`: [`json_schema`]; `inputs`:
//!   [`check_inputs`].

mod catalog;
mod compile;
mod diag;
pub mod expr;
mod graph;
mod inputs;
mod load;
pub mod model;
mod parse;
mod raw;
mod schema;
mod sources;
mod task;
mod template;
mod yaml;

use std::path::Path;

pub use catalog::ExecutorCatalog;
pub use diag::{Diagnostic, Diagnostics};
pub use inputs::check_inputs;
pub use load::{MAX_SOURCE_BYTES, read_file};
pub use model::*;
pub use schema::json_schema;
pub use sources::Sources;

/// Compiles the main file of `sources` (and the files it imports, which
/// must be in `sources` too), checking `uses` against `executors`.
///
/// # Errors
/// Every problem found in the files, each with its position.
pub fn compile(
    sources: &Sources,
    executors: &dyn ExecutorCatalog,
) -> Result<Workflow, Diagnostics> {
    compile::compile(sources, executors)
}

/// Reads the workflow file at `path` and the files it imports, then
/// compiles it.
///
/// # Errors
/// Every problem found, including files that cannot be read.
pub fn load(path: &Path, executors: &dyn ExecutorCatalog) -> Result<Workflow, Diagnostics> {
    compile(&Sources::read(path), executors)
}

/// Compiles a workflow given as text (e.g. through the HTTP API); `name`
/// names it in diagnostics. Reads no file: an `import` is reported as
/// unreadable unless the file is given with [`compile`] and [`Sources`].
///
/// # Errors
/// Every problem found in the text.
pub fn compile_str(
    name: &str,
    text: &str,
    executors: &dyn ExecutorCatalog,
) -> Result<Workflow, Diagnostics> {
    compile(&Sources::new(name, text), executors)
}
