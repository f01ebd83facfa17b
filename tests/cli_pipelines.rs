//! `symphony pipelines` end to end: a real `symphony node` as a child
//! process, the iris model registered with `symphony models`, the example
//! pipeline registered, listed, shown, invoked and deleted through the
//! binary; a node's pipelines folder; the bound on invocations (exit 75).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::Duration;

use serde_json::json;
use support::node::{Node, clean_symphony, free_port};
use support::{json, repo, wait_until};

/// Runs `symphony ARGS` in `dir` against `node` (adds `--server`).
fn client(dir: &Path, node: &Node, args: &[&str]) -> Output {
    clean_symphony()
        .current_dir(dir)
        .args(args)
        .args(["--server", &node.url])
        .output()
        .expect("symphony runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn in_repo(path: &str) -> String {
    repo().join(path).to_str().expect("utf-8 path").to_owned()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_iris_pipeline_is_registered_invoked_and_deleted() {
    let node = Node::healthy("serving", "");
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();

    let model = in_repo("models/iris.onnx");
    let out = client(
        dir,
        &node,
        &["models", "register", "iris", "--file", &model],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = client(dir, &node, &["models", "alias", "iris", "production", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let example = in_repo("examples/pipelines/iris.yaml");
    let out = client(dir, &node, &["pipelines", "register", &example]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "iris\n");
    assert!(
        stderr(&out).contains("registered pipeline iris (3 tasks)"),
        "{}",
        stderr(&out)
    );

    let out = client(dir, &node, &["pipelines", "list", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let list = json(&out);
    let iris = list
        .as_array()
        .and_then(|l| l.iter().find(|p| p["name"] == "iris"))
        .unwrap_or_else(|| panic!("iris is listed: {list}"));
    assert_eq!(iris["inputs"], json!(["features"]));
    assert_eq!(iris["invoke"], "/api/v1/pipelines/iris/invoke");

    let out = client(dir, &node, &["pipelines", "list"]);
    let table = stdout(&out);
    assert!(
        table.starts_with("NAME  INPUTS    OUTPUTS               DESCRIPTION\n"),
        "{table}"
    );
    assert!(
        table.contains("iris  features  label, probabilities  Classify an iris"),
        "{table}"
    );

    let out = client(dir, &node, &["pipelines", "show", "iris"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("pipeline iris\n"), "{text}");
    assert!(text.contains("classify (model/iris@production)"), "{text}");
    let out = client(dir, &node, &["pipelines", "show", "iris", "--json"]);
    assert_eq!(json(&out)["tasks"][1]["uses"], "model/iris@production");

    // The first reference case: setosa.
    let out = client(
        dir,
        &node,
        &[
            "pipelines",
            "invoke",
            "iris",
            "-i",
            "features=[5.1,3.5,1.4,0.2]",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).lines().count(),
        1,
        "one line: {}",
        stdout(&out)
    );
    let outputs = json(&out);
    assert_eq!(outputs["label"], "setosa", "{outputs}");
    let probabilities = outputs["probabilities"][0].as_array().expect("[[p, p, p]]");
    assert_eq!(probabilities.len(), 3, "{outputs}");
    assert!(probabilities[0].as_f64().unwrap() > 0.9, "{outputs}");

    // Without --json: the same document, indented; inputs as one JSON
    // object; tensors as base64 on request.
    let out = client(
        dir,
        &node,
        &[
            "pipelines",
            "invoke",
            "iris",
            "--input-json",
            r#"{"features": [[6.7, 3.0, 5.2, 2.3]]}"#,
            "--tensors",
            "base64",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).lines().count() > 1, "{}", stdout(&out));
    let outputs = json(&out);
    assert_eq!(outputs["label"], "virginica", "{outputs}");
    let tensor = &outputs["probabilities"]["$tensor"];
    assert_eq!(tensor["dtype"], "f32", "{outputs}");
    assert_eq!(tensor["shape"], json!([1, 3]), "{outputs}");
    assert!(tensor["data"].is_string(), "{outputs}");

    // Inputs the pipeline does not take, or of the wrong type: exit 78 with
    // the node's reasons.
    let out = client(
        dir,
        &node,
        &["pipelines", "invoke", "iris", "-i", "feature=[1,2,3,4]"],
    );
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("unknown input \"feature\""),
        "{}",
        stderr(&out)
    );
    let out = client(
        dir,
        &node,
        &["pipelines", "invoke", "iris", "-i", "features=[1,2,3]"],
    );
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("expected 3 numbers"),
        "{}",
        stderr(&out)
    );
    let out = client(
        dir,
        &node,
        &["pipelines", "invoke", "iris", "--input-json", "[1]"],
    );
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(stderr(&out).contains("--input-json"), "{}", stderr(&out));

    // Gone after delete: show, invoke and delete say so and exit 1.
    let out = client(dir, &node, &["pipelines", "delete", "iris"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "deleted pipeline iris\n");
    let out = client(dir, &node, &["pipelines", "show", "iris"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "error: no pipeline named \"iris\"\n");
    assert!(out.stdout.is_empty());
    let out = client(
        dir,
        &node,
        &["pipelines", "invoke", "iris", "-i", "features=[1,2,3,4]"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let out = client(dir, &node, &["pipelines", "delete", "iris", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let out = client(dir, &node, &["pipelines", "list", "--json"]);
    assert_eq!(json(&out), json!([]));
}

#[test]
fn imports_are_sent_and_bad_files_exit_78() {
    let node = Node::healthy("registrar", "");
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();

    // templates.yaml imports lib/common.yaml: it goes along.
    let out = client(
        dir,
        &node,
        &["pipelines", "register", &in_repo("examples/templates.yaml")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = client(dir, &node, &["pipelines", "invoke", "templates", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let outputs = json(&out);
    assert_eq!(outputs["done"]["attempts"], 3, "{outputs}");
    assert_eq!(outputs["done"]["hello"]["loud"], true, "{outputs}");

    // Caught here, before sending: file:line:col.
    write(
        dir,
        "bad.yaml",
        "version: 1\nname: bad\ndurability: none\ntasks:\n  a:\n    usess: builtin/noop\n",
    );
    let out = client(dir, &node, &["pipelines", "register", "bad.yaml"]);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(stderr(&out).contains("bad.yaml:6:5"), "{}", stderr(&out));
    assert!(out.stdout.is_empty());

    // Caught by the node: a pipeline has no journal.
    write(
        dir,
        "durable.yaml",
        "version: 1\nname: durable\ndurability: local\ntasks:\n  a: { uses: builtin/noop }\n",
    );
    let out = client(dir, &node, &["pipelines", "register", "durable.yaml"]);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("durability: none"),
        "{}",
        stderr(&out)
    );

    // A model the node does not have.
    write(
        dir,
        "model.yaml",
        "version: 1\nname: m\ndurability: none\ntasks:\n  a: { uses: model/nothing@production }\n",
    );
    let out = client(dir, &node, &["pipelines", "register", "model.yaml"]);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(stderr(&out).contains("model.yaml:"), "{}", stderr(&out));

    let out = client(dir, &node, &["pipelines", "list", "--json"]);
    let names: Vec<_> = json(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("templates")]);
}

#[test]
fn a_pipelines_folder_is_registered_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(repo().join("examples/fan-out.yaml")).unwrap();
    write(dir.path(), "served/fan-out.yaml", &example);
    let mut node = Node::start_in(dir.path(), "foldered", "pipelines: served");
    node.wait_healthy();

    let out = client(dir.path(), &node, &["pipelines", "list", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json(&out)[0]["name"], "fan-out", "{}", stdout(&out));
    let out = client(
        dir.path(),
        &node,
        &[
            "pipelines",
            "invoke",
            "fan-out",
            "-i",
            "items=[1, 2, 3]",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json(&out)["total"], 6);
}

/// `symphony pipelines invoke slow` in the background.
fn invoke_slow(dir: &Path, node: &Node) -> Child {
    clean_symphony()
        .current_dir(dir)
        .args(["pipelines", "invoke", "slow", "--server", &node.url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("symphony runs")
}

#[test]
fn over_the_bound_invoke_exits_75() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "served/slow.yaml",
        "version: 1\nname: slow\ndurability: none\ntasks:\n  wait: { uses: builtin/sleep, with: { duration: 60s } }\n",
    );
    write(
        dir.path(),
        "served/quick.yaml",
        "version: 1\nname: quick\ndurability: none\ntasks:\n  a: { uses: builtin/noop }\n",
    );
    let mut node = Node::start_in(
        dir.path(),
        "bounded",
        "pipelines: served\nmax_invocations: 1",
    );
    node.wait_healthy();

    // While `slow` holds the one place, `quick` is refused. Until `slow`
    // has it, `quick` may take it (and succeed) or make `slow` be refused
    // (then it starts again).
    let mut slow = invoke_slow(dir.path(), &node);
    let mut refused = None;
    wait_until(
        "an invocation to be refused",
        Duration::from_secs(20),
        || {
            if slow.try_wait().expect("child status").is_some() {
                slow = invoke_slow(dir.path(), &node);
            }
            let out = client(dir.path(), &node, &["pipelines", "invoke", "quick"]);
            let busy = out.status.code() == Some(75);
            if busy {
                refused = Some(out);
            }
            busy
        },
    );
    let _ = slow.kill();
    let _ = slow.wait();
    let out = refused.expect("a refused invocation");
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!("error: the server at {} is busy: ", node.url)),
        "{err}"
    );
    assert!(err.contains("try again in 1s"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn an_unreachable_server_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{}", free_port());
    let example = in_repo("examples/fan-out.yaml");
    for args in [
        vec!["pipelines", "list"],
        vec!["pipelines", "show", "x"],
        vec!["pipelines", "delete", "x"],
        vec!["pipelines", "invoke", "x", "-i", "a=1"],
        vec!["pipelines", "register", &example],
    ] {
        let out = clean_symphony()
            .current_dir(dir.path())
            .args(&args)
            .env("SYMPHONY_SERVER", &url)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&out).contains(&format!("cannot reach the server at {url}")),
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}
