//! A `durability: local` run survives SIGKILL of the process: `resume`
//! continues it, succeeded tasks do not run again, the interrupted attempt
//! runs again with a new attempt number. Proven by a side-effect file that
//! every `exec` task appends to.

mod support;

use std::process::Stdio;
use std::time::Duration;

use support::{json, run_in, symphony, wait_until};

const WORKFLOW: &str = r#"
version: 1
name: crash
durability: local
inputs:
  log: { type: string }
tasks:
  one:
    uses: exec
    with:
      command: [sh, -c, 'echo "one $SYMPHONY_ATTEMPT" >> "$LOG"']
      env: { LOG: "${{ inputs.log }}" }
  two:
    needs: [one]
    uses: exec
    with:
      command: [sh, -c, 'echo "two $SYMPHONY_ATTEMPT" >> "$LOG"']
      env: { LOG: "${{ inputs.log }}" }
  three:
    needs: [two]
    uses: exec
    with:
      # The first attempt hangs so the test can kill the process under it.
      command: [sh, -c, 'echo $$ > "$LOG.pid"; echo "three $SYMPHONY_ATTEMPT $SYMPHONY_IDEMPOTENCY_KEY" >> "$LOG"; if [ "$SYMPHONY_ATTEMPT" = 1 ]; then sleep 120; fi']
      env: { LOG: "${{ inputs.log }}" }
  four:
    needs: [three]
    uses: exec
    with:
      command: [sh, -c, 'echo "four $SYMPHONY_ATTEMPT" >> "$LOG"; echo 4']
      env: { LOG: "${{ inputs.log }}" }
outputs:
  four: ${{ tasks.four.outputs }}
"#;

#[test]
fn sigkill_then_resume_runs_no_succeeded_task_twice() {
    let dir = tempfile::tempdir().unwrap();
    let wf = dir.path().join("crash.yaml");
    std::fs::write(&wf, WORKFLOW).unwrap();
    let log = dir.path().join("side-effects.log");
    let data = dir.path().join("data");

    let mut child = symphony()
        .current_dir(dir.path())
        .args(["run", "crash.yaml", "--json", "--data-dir", "data", "-i"])
        .arg(format!("log={}", log.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until("task three to start", Duration::from_secs(30), || {
        read_log().contains("three 1")
    });
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // The hanging shell of attempt 1 lives in its own process group; end it.
    if let Ok(pid) = std::fs::read_to_string(format!("{}.pid", log.display())) {
        let _ = std::process::Command::new("kill").arg(pid.trim()).status();
    }

    let runs = json(&run_in(
        dir.path(),
        &["runs", "--data-dir", "data", "--json"],
    ));
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["status"], "running");
    let run_id = runs[0]["id"].as_str().unwrap().to_owned();

    let out = run_in(
        dir.path(),
        &[
            "resume",
            &run_id,
            "--data-dir",
            data.to_str().unwrap(),
            "--json",
        ],
    );
    assert!(
        out.status.success(),
        "resume failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = json(&out);
    assert_eq!(doc["run_id"], run_id.as_str());
    assert_eq!(doc["status"], "succeeded");
    assert_eq!(doc["outputs"]["four"], 4);
    assert_eq!(doc["tasks"]["one"]["attempts"], 1);
    assert_eq!(doc["tasks"]["two"]["attempts"], 1);
    assert_eq!(doc["tasks"]["three"]["attempts"], 2);

    let lines: Vec<String> = read_log().lines().map(str::to_owned).collect();
    let key = format!("{run_id}/three");
    assert_eq!(
        lines,
        vec![
            "one 1".to_owned(),
            "two 1".to_owned(),
            format!("three 1 {key}"),
            format!("three 2 {key}"),
            "four 1".to_owned(),
        ],
        "succeeded tasks ran once; the interrupted one again with a new attempt and the same key"
    );

    let runs = json(&run_in(
        dir.path(),
        &["runs", "--data-dir", "data", "--json"],
    ));
    assert_eq!(runs[0]["status"], "succeeded");
    // Resuming a finished run is refused clearly.
    let again = run_in(dir.path(), &["resume", &run_id, "--data-dir", "data"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already finished"));
}
