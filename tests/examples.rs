//! Every example workflow validates, and the quickstart runs.

mod support;

use support::{json, repo, symphony};

#[test]
fn every_example_validates() {
    let mut files: Vec<_> = std::fs::read_dir(repo().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "a quickstart and at least four more");
    let out = symphony().arg("validate").args(&files).output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_quickstart_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = symphony()
        .current_dir(dir.path())
        .arg("run")
        .arg(repo().join("examples/quickstart.yaml"))
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = json(&out);
    assert_eq!(doc["status"], "succeeded");
    assert_eq!(doc["outputs"]["total"], 62);
    assert_eq!(doc["outputs"]["greeting"], "hello, world");
    assert_eq!(doc["outputs"]["flaky_attempts"], 2);
    assert!(dir.path().join(".symphony").exists(), "default data dir");
}

#[test]
fn every_runnable_example_succeeds() {
    for name in ["fan-out", "conditional", "exec", "templates"] {
        let dir = tempfile::tempdir().unwrap();
        let out = symphony()
            .current_dir(dir.path())
            .arg("run")
            .arg(repo().join(format!("examples/{name}.yaml")))
            .arg("--json")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
