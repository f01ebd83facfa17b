//! The Workflow Definition Language: YAML → raw spec → validated, typed DAG.
//!
//! Pure: nothing here does I/O except [`load`], which reads the file and its
//! imports before handing the text to [`compile`].

pub mod expr;
pub mod model;

pub use model::*;
