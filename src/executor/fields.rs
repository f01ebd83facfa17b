//! Reading an executor's `with` map.
//!
//! One place for the wording of bad-input errors, so that every executor
//! names the field, what it expected and what it got in the same way.

use super::TaskError;
use crate::value::{Map, Value};

/// The fields of a task that has no `with` at all.
static NO_FIELDS: Map = Map::new();

/// The `with` map of `input`, after checking that every key is one that
/// executor `kind` takes. A missing `with` (null) is an empty map.
pub(crate) fn fields<'a>(
    kind: &str,
    input: &'a Value,
    known: &[&str],
) -> Result<&'a Map, TaskError> {
    let map = match input {
        Value::Null => &NO_FIELDS,
        Value::Map(map) => map,
        other => {
            return Err(TaskError::bad_input(format!(
                "{kind} expects a map of fields in `with`, got {}",
                describe(other)
            )));
        }
    };
    if let Some(key) = map.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(TaskError::bad_input(format!(
            "unknown field \"{key}\" for {kind} (it takes {})",
            known.join(", ")
        )));
    }
    Ok(map)
}

/// A required field is absent; `what` describes what it should be.
pub(crate) fn missing(field: &str, what: &str) -> TaskError {
    TaskError::bad_input(format!("missing field \"{field}\" ({what})"))
}

/// A field has the wrong type or an impossible value.
pub(crate) fn wrong(field: &str, what: &str, got: &Value) -> TaskError {
    TaskError::bad_input(format!(
        "field \"{field}\": expected {what}, got {}",
        describe(got)
    ))
}

/// A scalar as text (strings as they are, numbers and booleans rendered), for
/// fields such as arguments, environment variables and headers, where YAML
/// readily turns `8080` or `true` into a number or a boolean.
pub(crate) fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Float(f) => Some(f.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A value's type, and for a scalar the value itself, shortened.
fn describe(value: &Value) -> String {
    const MAX: usize = 40;
    match value {
        Value::Null | Value::List(_) | Value::Map(_) | Value::Bytes(_) | Value::Tensor(_) => {
            value.type_name().to_owned()
        }
        scalar => {
            let text = scalar.to_json().to_string();
            if text.len() <= MAX {
                format!("{} {text}", scalar.type_name())
            } else {
                let cut = (0..=MAX)
                    .rev()
                    .find(|&i| text.is_char_boundary(i))
                    .unwrap_or(0);
                format!("{} {}…", scalar.type_name(), &text[..cut])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_is_no_fields() {
        assert!(fields("x", &Value::Null, &["a"]).unwrap().is_empty());
    }

    #[test]
    fn unknown_field_is_named_with_the_known_ones() {
        let mut map = Map::new();
        map.insert("comand".into(), Value::Null);
        let err = fields("exec", &Value::Map(map), &["command", "env"]).unwrap_err();
        assert_eq!(err.class, "input");
        assert!(!err.retryable);
        assert_eq!(
            err.message,
            "unknown field \"comand\" for exec (it takes command, env)"
        );
    }

    #[test]
    fn non_map_input_is_refused() {
        let err = fields("exec", &Value::from("ls"), &[]).unwrap_err();
        assert_eq!(
            err.message,
            "exec expects a map of fields in `with`, got string \"ls\""
        );
    }

    #[test]
    fn long_scalars_are_shortened() {
        let err = wrong("f", "an int", &Value::from("é".repeat(50)));
        assert!(err.message.ends_with('…'), "{}", err.message);
        assert!(err.message.chars().count() < 80, "{}", err.message);
    }
}
