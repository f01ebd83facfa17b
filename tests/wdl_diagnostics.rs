//! Golden diagnostics for the workflow language.
//!
//! Every `tests/fixtures/wdl/invalid/NAME.yaml` is loaded (with its imports)
//! and its diagnostics compared with `NAME.expected`, byte for byte. Run with
//! `UPDATE_GOLDEN=1` to rewrite the expected files, then review the diff.
//! Every `tests/fixtures/wdl/valid/*.yaml` must compile. Files in `lib/`
//! subfolders are only imported.

use std::path::{Path, PathBuf};

use symphony::value::Value;
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

/// The `.yaml` files directly in `dir`, relative to the crate, sorted.
fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn invalid_files_report_the_expected_diagnostics() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    let files = yaml_files("tests/fixtures/wdl/invalid");
    assert!(files.len() >= 15, "at least 15 golden cases");
    for file in files {
        let expected_path = file.with_extension("expected");
        let actual = match wdl::load(&file, &EXECUTORS) {
            Ok(_) => "(compiled without error)\n".to_string(),
            Err(d) => d.render(),
        };
        if update {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if actual != expected {
            failures.push(format!(
                "{}\n--- expected\n{expected}--- actual\n{actual}",
                file.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden file(s) differ (UPDATE_GOLDEN=1 rewrites them):\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_diagnostic_has_a_position_in_a_named_file() {
    for file in yaml_files("tests/fixtures/wdl/invalid") {
        let Err(diags) = wdl::load(&file, &EXECUTORS) else {
            panic!("{} compiled", file.display());
        };
        assert!(!diags.is_empty());
        for d in &diags {
            assert!(d.file.starts_with("tests/fixtures/wdl/invalid/"), "{d}");
            assert!(d.line >= 1 && d.col >= 1, "{d}");
            // Errors in lower case, without a trailing period.
            assert!(!d.message.starts_with(char::is_uppercase), "{d}");
            assert!(!d.message.ends_with('.'), "{d}");
        }
    }
}

#[test]
fn an_unreadable_file_is_a_diagnostic_without_a_position() {
    let err = wdl::load(Path::new("tests/fixtures/wdl/nope.yaml"), &EXECUTORS).unwrap_err();
    assert_eq!(
        err.render(),
        "tests/fixtures/wdl/nope.yaml: error: cannot read the workflow file: file not found\n"
    );
}

#[test]
fn valid_files_compile() {
    let files = yaml_files("tests/fixtures/wdl/valid");
    assert!(files.len() >= 3);
    for file in files {
        if let Err(d) = wdl::load(&file, &EXECUTORS) {
            panic!("{} does not compile:\n{d}", file.display());
        }
    }
}

#[test]
fn imports_templates_and_extends_come_together() {
    let wf = wdl::load(
        Path::new("tests/fixtures/wdl/valid/with_imports.yaml"),
        &EXECUTORS,
    )
    .unwrap();
    let fetch = &wf.tasks[wf.task_index("fetch").unwrap()];
    // From the imported template `http-call`, the task's own fields on top.
    assert_eq!(fetch.uses, "http");
    assert_eq!(fetch.retry.max_attempts, 5);
    assert_eq!(fetch.retry.backoff, wdl::Backoff::Fixed);
    assert_eq!(fetch.timeout, Some(std::time::Duration::from_secs(20)));
    // `with` maps merge key by key: the task's url wins, the template's
    // method stays.
    let wdl::Template::Value(Value::Map(with)) = &fetch.with else {
        panic!("with is {:?}", fetch.with);
    };
    assert_eq!(with["method"], Value::from("GET"));
    assert_eq!(with["url"], Value::from("http://127.0.0.1:9000/items"));
    assert!(with.contains_key("headers"));
    assert_eq!(fetch.retry.non_retryable, ["bad_input"]);
    let show = &wf.tasks[wf.task_index("show").unwrap()];
    assert_eq!(show.uses, "builtin/echo");
    assert!(wf.task_index("fetch") < wf.task_index("show"));
}
