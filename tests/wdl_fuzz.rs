//! The compiler never panics: arbitrary text, structurally generated
//! workflow documents and mutated valid files all give `Ok` or `Err`.
//! When they compile, the result keeps its promises (tasks in topological
//! order, needs in range).

use proptest::prelude::*;
use serde_yaml::{Mapping, Value as Yaml};
use symphony::wdl;

const EXECUTORS: [&str; 7] = [
    "builtin/noop",
    "builtin/echo",
    "builtin/sleep",
    "builtin/fail",
    "builtin/sum",
    "exec",
    "http",
];

/// Every key of the language, and a few near misses.
const KEYS: &[&str] = &[
    "version",
    "name",
    "description",
    "durability",
    "deadline",
    "import",
    "inputs",
    "defaults",
    "templates",
    "tasks",
    "outputs",
    "uses",
    "with",
    "needs",
    "when",
    "for_each",
    "max_parallel",
    "timeout",
    "retry",
    "extends",
    "placement",
    "labels",
    "max_attempts",
    "backoff",
    "initial",
    "max",
    "non_retryable",
    "type",
    "default",
    "task",
    "if",
    "a",
    "b",
    "c",
    "need",
    "$bytes",
];

/// Pieces expressions are made of.
const TOKENS: &[&str] = &[
    "inputs", "tasks", "a", "b", "c", "outputs", "item", "index", ".", "[", "]", "(", ")", ",",
    "0", "-1", "1.5", "'x'", "\"y\"", "==", "!=", "<", ">=", "&&", "||", "!", "length", "contains",
    "default", "range", "null", "true", "${{", "}}", "'",
];

const WORDS: &[&str] = &[
    "1",
    "0",
    "-3",
    "30s",
    "1m 30s",
    "bogus",
    "builtin/echo",
    "exec",
    "http",
    "list",
    "string",
    "int",
    "any",
    "always",
    "succeeded",
    "fixed",
    "exponential",
    "local",
    "none",
    "a",
    "b",
    "c",
    "",
];

fn expression() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop::sample::select(TOKENS), 0..8),
        any::<bool>(),
    )
        .prop_map(|(tokens, wrap)| {
            let body = tokens.join(" ");
            if wrap {
                format!("${{{{ {body} }}}}")
            } else {
                body
            }
        })
}

fn scalar() -> impl Strategy<Value = Yaml> {
    prop_oneof![
        Just(Yaml::Null),
        any::<bool>().prop_map(Yaml::Bool),
        any::<i64>().prop_map(|i| Yaml::Number(i.into())),
        (-1e6f64..1e6).prop_map(|f| Yaml::Number(f.into())),
        prop::sample::select(WORDS).prop_map(|w| Yaml::String(w.into())),
        expression().prop_map(Yaml::String),
        "[a-z_ ${}.'\"-]{0,12}".prop_map(Yaml::String),
    ]
}

/// A YAML document whose keys mostly come from the language.
fn document() -> impl Strategy<Value = Yaml> {
    let leaf = scalar();
    leaf.prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Yaml::Sequence),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|pairs| {
                let mut m = Mapping::new();
                for (k, v) in pairs {
                    m.insert(Yaml::String(k.into()), v);
                }
                Yaml::Mapping(m)
            }),
        ]
    })
}

/// A task: keys of tasks, values of any shape.
fn task_document() -> impl Strategy<Value = Yaml> {
    prop::collection::vec((prop::sample::select(&KEYS[11..21]), document()), 0..6).prop_map(
        |pairs| {
            let mut m = Mapping::new();
            for (k, v) in pairs {
                m.insert(Yaml::String(k.into()), v);
            }
            Yaml::Mapping(m)
        },
    )
}

/// A top-level mapping that usually gets past the first checks.
fn workflow_document() -> impl Strategy<Value = String> {
    (
        prop::collection::vec((prop::sample::select(&KEYS[..11]), document()), 0..4),
        prop::collection::vec((prop::sample::select(&KEYS[31..34]), task_document()), 0..4),
        any::<bool>(),
    )
        .prop_map(|(top, tasks, header)| {
            let mut m = Mapping::new();
            if header {
                m.insert("version".into(), 1.into());
                m.insert("name".into(), "fuzz".into());
            }
            for (k, v) in top {
                m.insert(Yaml::String(k.into()), v);
            }
            let mut t = Mapping::new();
            for (k, v) in tasks {
                t.insert(Yaml::String(k.into()), v);
            }
            m.insert("tasks".into(), Yaml::Mapping(t));
            serde_yaml::to_string(&Yaml::Mapping(m)).unwrap_or_default()
        })
}

const VALID: &str = include_str!("fixtures/wdl/valid/fan_out.yaml");

/// A valid file with a few bytes deleted, replaced or inserted.
fn mutated() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (
            0..VALID.len(),
            0u8..3,
            prop::sample::select(b" :-[]{}'\"\n$#&*|>!a1".as_slice()),
        ),
        1..6,
    )
    .prop_map(|edits| {
        let mut bytes = VALID.as_bytes().to_vec();
        for (at, op, b) in edits {
            let at = at.min(bytes.len().saturating_sub(1));
            match op {
                0 if !bytes.is_empty() => {
                    bytes.remove(at);
                }
                1 if !bytes.is_empty() => bytes[at] = b,
                _ => bytes.insert(at, b),
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

fn cases() -> u32 {
    std::env::var("WDL_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200)
}

fn check(text: &str) {
    match wdl::compile_str("fuzz.yaml", text, &EXECUTORS) {
        Ok(wf) => {
            for (i, task) in wf.tasks.iter().enumerate() {
                for need in &task.needs {
                    assert!(need.task < i, "task {} needs a later task", task.id);
                }
            }
        }
        Err(diags) => {
            assert!(!diags.is_empty());
            let text = diags.render();
            assert!(text.contains("error: "));
        }
    }
}

proptest! {
    // WDL_FUZZ_CASES=100000 for a longer hunt.
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "[a-z:\\-\\[\\]{}\"' \n\t#&*!|>$.,0-9]{0,200}") {
        check(&text);
    }

    #[test]
    fn arbitrary_unicode_never_panics(text in any::<String>()) {
        check(&text);
    }

    #[test]
    fn generated_documents_never_panic(doc in document()) {
        check(&serde_yaml::to_string(&doc).unwrap_or_default());
    }

    #[test]
    fn generated_workflows_never_panic(text in workflow_document()) {
        check(&text);
    }

    #[test]
    fn mutated_valid_files_never_panic(text in mutated()) {
        check(&text);
    }
}

#[test]
fn pathological_inputs_are_errors() {
    let deep = format!(
        "version: 1\nname: x\ntasks: {}{}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    check(&deep);
    let deep_expr = format!(
        "version: 1\nname: x\ntasks:\n  a:\n    uses: exec\n    with: \"${{{{ {}1{} }}}}\"\n",
        "(".repeat(10_000),
        ")".repeat(10_000)
    );
    assert!(wdl::compile_str("x.yaml", &deep_expr, &EXECUTORS).is_err());
    let nots = format!(
        "version: 1\nname: x\ntasks:\n  a:\n    uses: exec\n    when: {}true\n",
        "!".repeat(10_000)
    );
    assert!(wdl::compile_str("x.yaml", &nots, &EXECUTORS).is_err());
    check("\u{feff}version: 1");
    check("{");
    check("---\n...\n");
    check("? [a]\n: b\n");
    check(
        "version: 1\nname: x\ntasks:\n  a:\n    uses: exec\n    with: \"${{ '\u{e9}' < 'é' }}\"\n",
    );
}
