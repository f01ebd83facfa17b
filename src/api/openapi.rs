//! `GET /api/v1/openapi.json`: the OpenAPI 3 document of this API.
//!
//! The document is maintained by hand in `openapi.json` beside this file; a
//! test checks that it lists exactly the routes of the router, and that
//! every `$ref` in it resolves.

use std::sync::OnceLock;

use axum::Json;
use serde_json::Value;

/// The document's text, as maintained.
const SOURCE: &str = include_str!("openapi.json");

/// The document with this build's version filled in.
pub(crate) fn openapi() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        // A test parses the file, so this cannot fail in a tested build.
        let mut doc: Value = serde_json::from_str(SOURCE).unwrap_or_else(
            |e| serde_json::json!({ "error": format!("the OpenAPI document is invalid: {e}") }),
        );
        if let Some(info) = doc.get_mut("info").and_then(Value::as_object_mut) {
            info.insert("version".into(), env!("CARGO_PKG_VERSION").into());
        }
        doc
    })
}

/// Serves [`openapi`].
pub(crate) async fn document() -> Json<&'static Value> {
    Json(openapi())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every `(METHOD, path)` the document describes.
    fn operations(doc: &Value) -> BTreeSet<(String, String)> {
        let mut ops = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths is an object") {
            for method in item.as_object().expect("a path item is an object").keys() {
                ops.insert((method.to_uppercase(), path.clone()));
            }
        }
        ops
    }

    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("$ref", Value::String(r)) => out.push(r),
                        _ => refs(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn the_document_parses_and_carries_the_version() {
        let doc: Value = serde_json::from_str(SOURCE).expect("openapi.json is JSON");
        assert_eq!(doc["openapi"], "3.0.3");
        assert_eq!(openapi()["info"]["version"], env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn the_document_lists_exactly_the_routes() {
        let documented = operations(openapi());
        let routed: BTreeSet<_> = super::super::endpoints()
            .into_iter()
            .map(|(m, p)| (m.to_owned(), p.to_owned()))
            .collect();
        let missing: Vec<_> = routed.difference(&documented).collect();
        let extra: Vec<_> = documented.difference(&routed).collect();
        assert!(
            missing.is_empty(),
            "routes missing from openapi.json: {missing:?}"
        );
        assert!(
            extra.is_empty(),
            "openapi.json describes routes that do not exist: {extra:?}"
        );
    }

    #[test]
    fn every_reference_resolves() {
        let doc = openapi();
        let mut all = Vec::new();
        refs(doc, &mut all);
        assert!(!all.is_empty());
        for r in all {
            let pointer = r.strip_prefix('#').expect("local reference");
            assert!(doc.pointer(pointer).is_some(), "dangling reference {r}");
        }
    }
}
