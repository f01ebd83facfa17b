//! The JSON Schema of workflow files, derived from the raw structs.

use super::raw;

/// The JSON Schema (draft 2020-12) of a workflow file, for editors:
/// `symphony schema > workflow.schema.json`.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(raw::Workflow)).unwrap_or(serde_json::Value::Null)
}
