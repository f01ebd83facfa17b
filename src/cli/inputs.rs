//! Workflow inputs from the command line: `-i KEY=VALUE` and `--inputs FILE`.

use std::path::Path;

use crate::value::{Map, Value};
use crate::wdl::{ValueType, Workflow};

/// The input options of `run` and `submit`.
#[derive(Debug, Clone, clap::Args)]
pub struct InputArgs {
    /// An input, `KEY=VALUE` (repeatable). VALUE is parsed as YAML unless
    /// the input is declared `string`.
    #[arg(short = 'i', long = "input", value_name = "KEY=VALUE")]
    pub inputs: Vec<String>,
    /// A JSON file with an object of inputs (`-i` values override it).
    #[arg(long = "inputs", value_name = "FILE.json")]
    pub inputs_file: Option<std::path::PathBuf>,
}

impl InputArgs {
    /// The inputs these options give for `workflow`; see [`collect`].
    ///
    /// # Errors
    /// A message naming the bad argument or file.
    pub(crate) fn collect(&self, workflow: &Workflow) -> Result<Map, String> {
        collect(workflow, &self.inputs, self.inputs_file.as_deref())
    }
}

/// Collects inputs: the `--inputs` JSON file first, then each `-i` on top.
///
/// A `-i` value is taken as text when the input is declared `string`, else
/// parsed as YAML (so `3` is an int, `[1, 2]` a list, `true` a bool) and
/// kept as text when it does not parse.
///
/// # Errors
/// A message naming the bad argument or file.
pub(crate) fn collect(
    workflow: &Workflow,
    pairs: &[String],
    file: Option<&Path>,
) -> Result<Map, String> {
    let mut inputs = Map::new();
    if let Some(path) = file {
        let text = crate::wdl::read_file(path, crate::wdl::MAX_SOURCE_BYTES)
            .map_err(|e| format!("cannot read inputs file {}: {e}", path.display()))?;
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Map(m)) => inputs.extend(m),
            Ok(other) => {
                return Err(format!(
                    "inputs file {} must hold a JSON object, not a {}",
                    path.display(),
                    other.type_name()
                ));
            }
            Err(e) => return Err(format!("inputs file {}: {e}", path.display())),
        }
    }
    for pair in pairs {
        let Some((key, raw)) = pair.split_once('=') else {
            return Err(format!("-i {pair}: expected KEY=VALUE"));
        };
        let declared = workflow.inputs.iter().find(|i| i.name == key).map(|i| i.ty);
        let value = match declared {
            Some(ValueType::String) => Value::String(raw.to_owned()),
            _ => {
                serde_yaml::from_str::<Value>(raw).unwrap_or_else(|_| Value::String(raw.to_owned()))
            }
        };
        inputs.insert(key.to_owned(), value);
    }
    Ok(inputs)
}
