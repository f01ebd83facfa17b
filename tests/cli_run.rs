//! `symphony run` end to end through the binary: outputs, JSON shape, exit
//! codes, Ctrl-C, retries, skips, fan-out.

mod support;

use std::process::Stdio;
use std::time::Duration;

use support::{json, run_in, symphony, wait_until};

fn write(dir: &std::path::Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn a_workflow_runs_and_prints_one_json_object() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "wf.yaml",
        r#"
version: 1
name: basics
durability: none
inputs:
  xs: { type: list }
  who: { type: string, default: you }
tasks:
  fan:
    uses: builtin/echo
    for_each: ${{ inputs.xs }}
    with: { i: "${{ index }}", x: "${{ item }}" }
  total:
    uses: builtin/sum
    with: { values: "${{ inputs.xs }}" }
  big:
    needs: [total]
    when: ${{ tasks.total.outputs > 100 }}
    uses: builtin/noop
  after_big:
    needs: [big]
    uses: builtin/noop
  always:
    needs: [{ task: big, if: always }]
    uses: builtin/echo
    with: { hi: "hi ${{ inputs.who }}" }
outputs:
  fan: ${{ tasks.fan.outputs }}
  total: ${{ tasks.total.outputs }}
  hi: ${{ tasks.always.outputs.hi }}
"#,
    );
    let out = run_in(
        dir.path(),
        &["run", "wf.yaml", "--json", "-i", "xs=[1, 2, 3]"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = json(&out);
    assert_eq!(doc["status"], "succeeded");
    assert!(doc["run_id"].as_str().is_some_and(|s| s.len() == 26));
    assert_eq!(doc["outputs"]["total"], 6);
    assert_eq!(doc["outputs"]["hi"], "hi you");
    assert_eq!(
        doc["outputs"]["fan"],
        serde_json::json!([{"i": 0, "x": 1}, {"i": 1, "x": 2}, {"i": 2, "x": 3}])
    );
    assert_eq!(doc["tasks"]["big"]["status"], "skipped");
    assert_eq!(doc["tasks"]["after_big"]["status"], "skipped");
    assert_eq!(doc["tasks"]["always"]["status"], "succeeded");
    assert_eq!(doc["tasks"]["fan"]["attempts"], 3);
    assert_eq!(doc["tasks"]["total"]["attempts"], 1);
}

#[test]
fn retries_reach_the_executor_with_growing_attempt_numbers() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "wf.yaml",
        r#"
version: 1
name: retry
durability: none
tasks:
  flaky:
    uses: builtin/fail
    with: { times: 2, class: transient }
    retry: { max_attempts: 3, initial: 10ms, max: 50ms }
outputs:
  attempts: ${{ tasks.flaky.outputs.attempts }}
"#,
    );
    let out = run_in(dir.path(), &["run", "wf.yaml", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let doc = json(&out);
    assert_eq!(doc["outputs"]["attempts"], 3);
    assert_eq!(doc["tasks"]["flaky"]["attempts"], 3);
}

#[test]
fn a_failed_run_exits_1_and_names_the_task() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "wf.yaml",
        r#"
version: 1
name: fails
durability: none
tasks:
  bad:
    uses: exec
    with: { command: [sh, -c, "echo oops >&2; exit 3"] }
  next:
    needs: [bad]
    uses: builtin/noop
"#,
    );
    let out = run_in(dir.path(), &["run", "wf.yaml", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let doc = json(&out);
    assert_eq!(doc["status"], "failed");
    assert_eq!(doc["tasks"]["bad"]["status"], "failed");
    assert_eq!(doc["tasks"]["next"]["status"], "skipped");
    let error = doc["error"].as_str().unwrap();
    assert!(error.contains("task \"bad\" failed"), "{error}");
    assert!(
        error.contains("oops"),
        "stderr tail is in the error: {error}"
    );
}

#[test]
fn invalid_workflows_and_inputs_exit_78() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "bad.yaml",
        "version: 1\nname: bad\ntasks:\n  a:\n    uses: builtin/noop\n    nedds: [b]\n",
    );
    let out = run_in(dir.path(), &["run", "bad.yaml"]);
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml:6:5"), "{err}");
    assert!(err.contains("did you mean \"needs\""), "{err}");
    assert!(out.stdout.is_empty());

    write(
        dir.path(),
        "typed.yaml",
        "version: 1\nname: typed\ndurability: none\ninputs:\n  n: { type: int }\ntasks:\n  a:\n    uses: builtin/noop\n",
    );
    let missing = run_in(dir.path(), &["run", "typed.yaml"]);
    assert_eq!(missing.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("\"n\""));
    let wrong = run_in(dir.path(), &["run", "typed.yaml", "-i", "n=abc"]);
    assert_eq!(wrong.status.code(), Some(78));

    write(
        dir.path(),
        "repl.yaml",
        "version: 1\nname: repl\ndurability: replicated\ntasks:\n  a:\n    uses: builtin/noop\n",
    );
    let repl = run_in(dir.path(), &["run", "repl.yaml"]);
    assert_eq!(repl.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&repl.stderr).contains("replicated"));
}

#[test]
fn ctrl_c_cancels_the_run_kills_its_subprocess_and_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "wf.yaml",
        r#"
version: 1
name: long
durability: local
tasks:
  hang:
    uses: exec
    with: { command: [sh, -c, 'echo $$ > hang.pid; exec sleep 120'] }
"#,
    );
    let child = symphony()
        .current_dir(dir.path())
        .args(["run", "wf.yaml", "--json", "--data-dir", "data"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid_file = dir.path().join("hang.pid");
    wait_until("the subprocess to start", Duration::from_secs(30), || {
        std::fs::read_to_string(&pid_file).is_ok_and(|s| s.ends_with('\n'))
    });
    let sub_pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_owned();
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    let doc = json(&out);
    assert_eq!(doc["status"], "cancelled");
    let proc_dir = format!("/proc/{sub_pid}");
    wait_until("the subprocess to die", Duration::from_secs(10), || {
        std::fs::read_to_string(format!("{proc_dir}/stat")).map_or(true, |s| s.contains(") Z "))
    });
    let runs = json(&run_in(
        dir.path(),
        &["runs", "--data-dir", "data", "--json"],
    ));
    assert_eq!(runs[0]["status"], "cancelled");
}

#[test]
fn a_task_timeout_stops_the_attempt() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "wf.yaml",
        r#"
version: 1
name: timeout
durability: none
tasks:
  slow:
    uses: builtin/sleep
    timeout: 100ms
    with: { duration: 30s }
"#,
    );
    let started = std::time::Instant::now();
    let out = run_in(dir.path(), &["run", "wf.yaml", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the sleep was cut short"
    );
    let doc = json(&out);
    assert!(
        doc["tasks"]["slow"]["error"]
            .as_str()
            .unwrap()
            .contains("timeout")
    );
}

#[test]
fn schema_prints_a_json_schema() {
    let out = symphony().arg("schema").output().unwrap();
    assert!(out.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = schema.to_string();
    for key in ["tasks", "needs", "for_each", "durability", "retry"] {
        assert!(text.contains(key), "schema mentions {key}");
    }
}

#[test]
fn bad_inputs_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "wf.yaml",
        "version: 1\nname: i\ndurability: none\ninputs:\n  n: { type: int, default: 1 }\ntasks:\n  a:\n    uses: builtin/noop\n",
    );
    write(dir.path(), "list.json", "[1, 2]");
    write(dir.path(), "broken.json", "{\"n\": ");
    let cases: [(&[&str], &str); 4] = [
        (&["-i", "n"], "expected KEY=VALUE"),
        (&["--inputs", "list.json"], "must hold a JSON object"),
        (&["--inputs", "broken.json"], "broken.json"),
        (&["--inputs", "missing.json"], "cannot read inputs file"),
    ];
    for (args, expected) in cases {
        let mut all = vec!["run", "wf.yaml"];
        all.extend_from_slice(args);
        let out = run_in(dir.path(), &all);
        assert_eq!(out.status.code(), Some(78), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    let unknown = run_in(dir.path(), &["run", "wf.yaml", "-i", "m=2"]);
    assert_eq!(unknown.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("\"m\""));
}

#[test]
fn json_logs_carry_the_attempt_span_and_completions_are_printed() {
    let dir = tempfile::tempdir().unwrap();
    let out = symphony()
        .current_dir(dir.path())
        .env("SYMPHONY_LOG", "symphony=debug")
        .args(["--log-format", "json", "run"])
        .arg(support::repo().join("examples/exec.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let spawned = lines
        .iter()
        .find(|l| l["fields"]["message"] == "Spawned command." && l["span"]["task"] == "count")
        .unwrap_or_else(|| panic!("no log line of task `count`'s attempt in {lines:?}"));
    let span = &spawned["span"];
    assert_eq!(span["name"], "attempt");
    assert_eq!(span["attempt"], 1);
    assert!(span["run"].as_str().is_some_and(|r| !r.is_empty()));
    assert!(span["node"].as_str().is_some_and(|n| !n.is_empty()));

    let completions = symphony().args(["completions", "bash"]).output().unwrap();
    assert!(completions.status.success());
    let script = String::from_utf8_lossy(&completions.stdout);
    assert!(script.contains("_symphony()") && script.contains("pipelines"));
    let bad = symphony().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
}
