//! The JSON Schema of workflow files, derived from the raw structs.

use super::raw;

use serde_json::Value as Json;

/// The JSON Schema (draft 2020-12) of a workflow file, for editors:
/// `symphony schema > workflow.schema.json`.
pub fn json_schema() -> Json {
    let mut schema =
        serde_json::to_value(schemars::schema_for!(raw::Workflow)).unwrap_or(Json::Null);
    forbid_null(&mut schema);
    schema
}

/// Optional keys are left out, not set to null: the `null` that schemars
/// adds for every `Option` field is taken back out.
fn forbid_null(schema: &mut Json) {
    match schema {
        Json::Object(obj) => {
            if let Some(Json::Array(types)) = obj.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types.remove(0);
                    obj.insert("type".into(), only);
                }
            }
            if let Some(Json::Array(any)) = obj.get_mut("anyOf") {
                any.retain(|s| {
                    s.get("type").is_none_or(|t| t != "null")
                        || s.as_object().is_some_and(|o| o.len() > 1)
                });
                if any.len() == 1 {
                    if let Some(Json::Object(only)) = any.pop() {
                        obj.remove("anyOf");
                        for (k, v) in only {
                            obj.entry(k).or_insert(v);
                        }
                    }
                }
            }
            for v in obj.values_mut() {
                forbid_null(v);
            }
        }
        Json::Array(items) => items.iter_mut().for_each(forbid_null),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wdl::parse;

    fn keys(schema: &serde_json::Value) -> Vec<String> {
        let mut keys: Vec<String> = schema["properties"]
            .as_object()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        keys.sort();
        keys
    }

    fn sorted(list: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn the_schema_knows_the_keys_the_parser_knows() {
        let schema = json_schema();
        assert!(!schema.to_string().contains("\"null\""), "{schema:#}");
        let defs = &schema["$defs"];
        assert_eq!(keys(&schema), sorted(parse::WORKFLOW_KEYS));
        assert_eq!(keys(&defs["Task"]), sorted(parse::TASK_KEYS));
        assert_eq!(keys(&defs["Retry"]), sorted(parse::RETRY_KEYS));
        assert_eq!(keys(&defs["Defaults"]), sorted(parse::DEFAULTS_KEYS));
        assert_eq!(keys(&defs["InputSpec"]), sorted(parse::INPUT_KEYS));
        assert_eq!(keys(&defs["DetailedNeed"]), sorted(parse::NEED_KEYS));
        assert_eq!(keys(&defs["Placement"]), sorted(parse::PLACEMENT_KEYS));
        assert_eq!(schema["required"], serde_json::json!(["version", "name"]));
        assert_eq!(schema["additionalProperties"], serde_json::json!(false));
        assert!(defs["Task"].get("required").is_none());
        assert_eq!(schema["properties"]["defaults"]["$ref"], "#/$defs/Defaults");
    }
}
