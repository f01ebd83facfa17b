//! The `exec` executor against real subprocesses (`sh`, `cat`, `false`, …).
#![cfg(target_os = "linux")]

use std::path::Path;
use std::time::{Duration, Instant};

use symphony::executor::{AttemptContext, Exec, Executor, ExecutorConfig, TaskError};
use symphony::value::Value;

fn ctx() -> AttemptContext {
    AttemptContext {
        run_id: "run-7".into(),
        task_id: "shell".into(),
        item: None,
        attempt: 2,
        idempotency_key: "run-7/shell".into(),
        uses: "exec".into(),
    }
}

fn exec() -> Exec {
    Exec::new(&ExecutorConfig::default())
}

fn map(pairs: &[(&str, Value)]) -> Value {
    Value::Map(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    )
}

fn argv(args: &[&str]) -> Value {
    Value::List(args.iter().map(|a| Value::from(*a)).collect())
}

fn sh(script: &str) -> Value {
    map(&[("command", argv(&["sh", "-c", script]))])
}

async fn run(input: Value) -> Result<Value, TaskError> {
    exec().execute(&ctx(), input).await
}

/// Whether `pid` is a live process (a zombie counts as gone: it runs no
/// more and only waits for its parent to reap it).
fn alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z" | "X"))
}

/// Polls `cond` until it holds, failing the test after `limit`.
async fn eventually(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The pid a script wrote to `file`, once it has written a whole line.
fn written_pid(file: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(file).ok()?;
    text.strip_suffix('\n')?.trim().parse().ok()
}

#[tokio::test]
async fn json_stdout_is_parsed() {
    let out = run(sh(r#"echo '{"scores": [1, 2.5], "ok": true}'"#))
        .await
        .unwrap();
    let expected = map(&[
        ("ok", true.into()),
        ("scores", Value::List(vec![1.into(), 2.5.into()])),
    ]);
    assert_eq!(out, expected);
}

#[tokio::test]
async fn text_stdout_loses_one_trailing_newline() {
    assert_eq!(run(sh("echo hello")).await, Ok(Value::from("hello")));
    assert_eq!(run(sh("printf 'a\\n\\n'")).await, Ok(Value::from("a\n")));
    assert_eq!(run(sh("true")).await, Ok(Value::Null));
}

#[tokio::test]
async fn stdin_is_text_or_json() {
    let text = map(&[("command", argv(&["cat"])), ("stdin", "plain words".into())]);
    assert_eq!(run(text).await, Ok(Value::from("plain words")));

    let doc = map(&[("n", 3.into()), ("tags", Value::List(vec!["a".into()]))]);
    let json = map(&[("command", argv(&["cat"])), ("stdin", doc.clone())]);
    assert_eq!(run(json).await, Ok(doc));
}

#[tokio::test]
async fn large_stdin_and_stdout_flow_together() {
    // More than a pipe buffer each way, so writing and reading must overlap.
    let big = "x".repeat(1 << 20);
    let input = map(&[("command", argv(&["cat"])), ("stdin", big.clone().into())]);
    assert_eq!(run(input).await, Ok(Value::from(big)));
}

#[tokio::test]
async fn no_stdin_means_an_empty_one() {
    assert_eq!(
        run(map(&[("command", argv(&["cat"]))])).await,
        Ok(Value::Null)
    );
}

#[tokio::test]
async fn environment_carries_the_attempt() {
    let script = r#"echo "$SYMPHONY_RUN_ID|$SYMPHONY_TASK_ID|$SYMPHONY_ATTEMPT|$SYMPHONY_IDEMPOTENCY_KEY|$SYMPHONY_ITEM_INDEX|$GREETING|$PORT""#;
    let input = map(&[
        ("command", argv(&["sh", "-c", script])),
        (
            "env",
            map(&[
                ("GREETING", "hi there".into()),
                ("PORT", 8080.into()),
                // Cannot forge the attempt.
                ("SYMPHONY_ATTEMPT", "99".into()),
            ]),
        ),
    ]);
    let mut ctx = ctx();
    ctx.item = Some(4);
    ctx.idempotency_key = "run-7/shell/4".into();
    let out = exec().execute(&ctx, input).await.unwrap();
    assert_eq!(
        out,
        Value::from("run-7|shell|2|run-7/shell/4|4|hi there|8080")
    );
}

#[tokio::test]
async fn item_index_is_absent_without_an_item() {
    let out = run(sh("echo \"${SYMPHONY_ITEM_INDEX-unset}\"")).await;
    assert_eq!(out, Ok(Value::from("unset")));
}

#[tokio::test]
async fn cwd_sets_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let input = map(&[
        ("command", argv(&["pwd"])),
        ("cwd", dir.path().to_str().unwrap().into()),
    ]);
    let out = run(input).await.unwrap();
    let printed = out.as_str().unwrap();
    assert_eq!(
        Path::new(printed).canonicalize().unwrap(),
        dir.path().canonicalize().unwrap()
    );

    let missing = map(&[("command", argv(&["pwd"])), ("cwd", "/no/such/dir".into())]);
    let err = run(missing).await.unwrap_err();
    assert_eq!((err.class.as_str(), err.retryable), ("spawn", false));
    assert!(err.message.contains("/no/such/dir"), "{}", err.message);
}

#[tokio::test]
async fn non_zero_exit_is_a_retryable_exit_error() {
    let err = run(map(&[("command", argv(&["false"]))]))
        .await
        .unwrap_err();
    assert_eq!(err.class, "exit");
    assert!(err.retryable);
    assert_eq!(
        err.message,
        "command \"false\" exited with code 1 (stderr empty)"
    );
}

#[tokio::test]
async fn exit_error_quotes_stderr() {
    let err = run(sh("echo 'model file missing' >&2; exit 3"))
        .await
        .unwrap_err();
    assert_eq!(
        err.message,
        "command \"sh\" exited with code 3; stderr: model file missing"
    );
}

#[tokio::test]
async fn exit_error_keeps_only_the_end_of_a_long_stderr() {
    let script = "i=0; while [ $i -lt 2000 ]; do echo \"line $i\" >&2; i=$((i+1)); done; exit 1";
    let err = run(sh(script)).await.unwrap_err();
    assert!(err.message.contains("stderr ends: …"), "{}", err.message);
    assert!(err.message.ends_with("line 1999"), "{}", err.message);
    assert!(!err.message.contains("line 0\n"));
    assert!(err.message.len() < 2 * 1024 + 100, "{}", err.message.len());
}

#[tokio::test]
async fn death_by_signal_is_named() {
    let err = run(sh("kill -9 $$")).await.unwrap_err();
    assert_eq!(err.class, "exit");
    assert!(
        err.message.contains("killed by signal 9 (SIGKILL)"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn allowlist_refuses_other_commands() {
    let exec = Exec::new(&ExecutorConfig {
        exec_allow: Some(vec!["sh".into(), "echo".into()]),
        ..ExecutorConfig::default()
    });
    let err = exec
        .execute(&ctx(), map(&[("command", argv(&["cat", "/etc/passwd"]))]))
        .await
        .unwrap_err();
    assert_eq!((err.class.as_str(), err.retryable), ("forbidden", false));
    assert!(err.message.contains("\"cat\""), "{}", err.message);

    // Allowed by file name, whatever the directory.
    let out = exec
        .execute(
            &ctx(),
            map(&[("command", argv(&["/bin/sh", "-c", "echo ok"]))]),
        )
        .await;
    assert_eq!(out, Ok(Value::from("ok")));
}

#[tokio::test]
async fn missing_command_is_a_spawn_error() {
    let err = run(map(&[("command", argv(&["symphony-no-such-tool", "x"]))]))
        .await
        .unwrap_err();
    assert_eq!((err.class.as_str(), err.retryable), ("spawn", false));
    assert_eq!(
        err.message,
        "command \"symphony-no-such-tool\" not found on PATH"
    );

    let err = run(map(&[("command", argv(&["/nowhere/tool"]))]))
        .await
        .unwrap_err();
    assert_eq!(err.class, "spawn");
    assert!(
        err.message
            .starts_with("command \"/nowhere/tool\" not found")
    );
}

#[tokio::test]
async fn bad_input_names_the_field() {
    let err = run(map(&[("command", "ls -l".into())])).await.unwrap_err();
    assert_eq!(err.class, "input");
    assert!(
        err.message.starts_with("field \"command\""),
        "{}",
        err.message
    );
    let err = run(map(&[("command", argv(&["ls"])), ("shell", true.into())]))
        .await
        .unwrap_err();
    assert!(
        err.message.starts_with("unknown field \"shell\""),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn endless_stdout_fails_as_too_large_and_stops_the_command() {
    let exec = Exec::new(&ExecutorConfig {
        max_output_bytes: 64 * 1024,
        ..ExecutorConfig::default()
    });
    let err = tokio::time::timeout(
        Duration::from_secs(20),
        exec.execute(&ctx(), map(&[("command", argv(&["yes"]))])),
    )
    .await
    .expect("the executor gave up on the endless output")
    .unwrap_err();
    assert_eq!(
        (err.class.as_str(), err.retryable),
        ("output_too_large", false)
    );
}

/// Runs `script` (which writes a pid to `$PID_FILE`) until that pid is
/// written, then drops the attempt and returns the pid.
async fn start_then_drop(script: &str) -> i32 {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pid");
    let input = map(&[
        ("command", argv(&["sh", "-c", script])),
        ("env", map(&[("PID_FILE", file.to_str().unwrap().into())])),
    ]);
    let exec = exec();
    let ctx = ctx();
    let attempt = exec.execute(&ctx, input);
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid = tokio::select! {
        res = attempt => panic!("the command ended early: {res:?}"),
        pid = async {
            loop {
                if let Some(pid) = written_pid(&file) {
                    break pid;
                }
                assert!(Instant::now() < deadline, "the script never wrote its pid");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        } => pid,
    };
    // `attempt` is dropped here, by the end of `select!`.
    assert!(pid > 0);
    pid
}

#[tokio::test]
async fn dropping_the_attempt_kills_the_command() {
    let pid = start_then_drop("echo $$ > \"$PID_FILE\"; exec sleep 30").await;
    eventually("the command to die", Duration::from_secs(5), || !alive(pid)).await;
}

#[tokio::test]
async fn dropping_the_attempt_kills_grandchildren() {
    let pid = start_then_drop("sleep 30 & echo $! > \"$PID_FILE\"; wait").await;
    eventually("the grandchild to die", Duration::from_secs(5), || {
        !alive(pid)
    })
    .await;
}

#[tokio::test]
async fn background_processes_do_not_outlive_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pid");
    let input = map(&[
        (
            "command",
            argv(&["sh", "-c", "sleep 30 & echo $! > \"$PID_FILE\"; echo done"]),
        ),
        ("env", map(&[("PID_FILE", file.to_str().unwrap().into())])),
    ]);
    // The background `sleep` holds stdout open: the attempt ends promptly
    // only because the group is killed when `sh` exits.
    let out = tokio::time::timeout(Duration::from_secs(20), run(input))
        .await
        .expect("the attempt waited for its background process");
    assert_eq!(out, Ok(Value::from("done")));
    let pid = written_pid(&file).expect("pid written");
    eventually(
        "the background process to die",
        Duration::from_secs(5),
        || !alive(pid),
    )
    .await;
}

#[tokio::test]
async fn yaml_numbers_are_arguments() {
    let input = map(&[(
        "command",
        Value::List(vec!["echo".into(), 1.into(), 2.5.into()]),
    )]);
    assert_eq!(run(input).await, Ok(Value::from("1 2.5")));
}
