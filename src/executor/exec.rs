//! The `exec` executor: runs a subprocess, never through a shell.
//!
//! `with` fields:
//!
//! - `command` (required): the argument vector, a non-empty list. Strings
//!   are taken as they are; numbers and booleans (which YAML makes of `1`
//!   or `true`) are rendered as text.
//! - `stdin`: a string or bytes are written as they are; any other value
//!   (null included) is written as JSON text. Without it, stdin is
//!   `/dev/null`.
//! - `env`: a map of variables added to the node's environment (strings,
//!   numbers or booleans).
//! - `cwd`: the working directory; it must exist.
//!
//! The command also sees `SYMPHONY_RUN_ID`, `SYMPHONY_TASK_ID`,
//! `SYMPHONY_ATTEMPT`, `SYMPHONY_IDEMPOTENCY_KEY` and, for a `for_each`
//! item, `SYMPHONY_ITEM_INDEX`; `env` cannot override them.
//!
//! Output: stdout parsed as JSON when it is valid JSON, else the text with
//! one trailing newline removed (bytes when it is not UTF-8; null when it is
//! empty). A non-zero exit fails the attempt with class `exit` (retryable)
//! and the last 2 KiB of stderr.
//!
//! On Unix the command leads its own process group, and the whole group is
//! killed (`SIGKILL`) when the attempt is dropped (timeout, cancellation)
//! and also as soon as the command itself exits, so that a task leaves no
//! background processes behind and its pipes close. A process that leaves
//! the group (`setsid`) while holding stdout or stderr open keeps the
//! attempt waiting until it closes them or the attempt times out.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use super::fields::{fields, missing, scalar_text, wrong};
use super::{AttemptContext, Executor, ExecutorConfig, TaskError, output_value};
use crate::value::{Map, Value};

/// How much of stderr a failure message keeps (its end).
const STDERR_TAIL: usize = 2 * 1024;

/// The `exec` executor (see the module documentation for its fields).
#[derive(Debug, Clone)]
pub struct Exec {
    allow: Option<Arc<[String]>>,
    max_stdout: usize,
}

impl Exec {
    /// An `exec` executor with `config`'s allowlist
    /// ([`ExecutorConfig::exec_allow`]) and stdout limit
    /// ([`ExecutorConfig::max_output_bytes`]).
    pub fn new(config: &ExecutorConfig) -> Exec {
        Exec {
            allow: config.exec_allow.as_deref().map(Arc::from),
            max_stdout: config.max_output_bytes,
        }
    }

    /// Whether the allowlist lets `program` (a command's argv\[0\]) run: it
    /// does when there is no list, or when the list holds `program` as
    /// written or its file name.
    pub fn allows(&self, program: &str) -> bool {
        let Some(allow) = &self.allow else {
            return true;
        };
        let file_name = Path::new(program).file_name().and_then(|n| n.to_str());
        allow
            .iter()
            .any(|entry| entry == program || Some(entry.as_str()) == file_name)
    }
}

/// A parsed `with`.
#[derive(Debug)]
struct Spec {
    argv: Vec<String>,
    stdin: Option<Vec<u8>>,
    env: Vec<(String, String)>,
    cwd: Option<String>,
}

fn parse(input: &Value) -> Result<Spec, TaskError> {
    let with = fields("exec", input, &["command", "stdin", "env", "cwd"])?;
    const ARGV: &str = "a non-empty list of strings, such as [\"echo\", \"hello\"]";
    let argv = match with.get("command") {
        None => return Err(missing("command", ARGV)),
        Some(Value::List(items)) if !items.is_empty() => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                scalar_text(item).ok_or_else(|| wrong(&format!("command[{i}]"), "a string", item))
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(other) => return Err(wrong("command", ARGV, other)),
    };
    if argv[0].is_empty() {
        return Err(wrong("command[0]", "a program name", &Value::from("")));
    }
    let stdin = with.get("stdin").map(|value| match value {
        Value::String(s) => s.clone().into_bytes(),
        Value::Bytes(b) => b.clone(),
        other => other.to_json().to_string().into_bytes(),
    });
    let env = match with.get("env") {
        None => Vec::new(),
        Some(Value::Map(vars)) => env_vars(vars)?,
        Some(other) => return Err(wrong("env", "a map of strings", other)),
    };
    let cwd = match with.get("cwd") {
        None => None,
        Some(Value::String(dir)) if !dir.is_empty() => Some(dir.clone()),
        Some(other) => return Err(wrong("cwd", "a directory path", other)),
    };
    Ok(Spec {
        argv,
        stdin,
        env,
        cwd,
    })
}

fn env_vars(vars: &Map) -> Result<Vec<(String, String)>, TaskError> {
    vars.iter()
        .map(|(name, value)| {
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(TaskError::bad_input(format!(
                    "field \"env\": \"{name}\" is not a valid variable name"
                )));
            }
            let text = scalar_text(value)
                .ok_or_else(|| wrong(&format!("env.{name}"), "a string", value))?;
            Ok((name.clone(), text))
        })
        .collect()
}

#[async_trait]
impl Executor for Exec {
    /// Runs the command to completion.
    ///
    /// Cancellation: dropping the future kills the command's process group
    /// (on Unix; elsewhere the command itself) and the child is reaped in
    /// the background by tokio.
    async fn execute(&self, ctx: &AttemptContext, input: Value) -> Result<Value, TaskError> {
        let spec = parse(&input)?;
        drop(input);
        let program = spec.argv[0].as_str();
        if !self.allows(program) {
            return Err(TaskError::fatal(
                "forbidden",
                format!("command \"{program}\" is not in this node's exec allowlist"),
            ));
        }
        if let Some(dir) = &spec.cwd {
            match tokio::fs::metadata(dir).await {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    return Err(TaskError::fatal(
                        "spawn",
                        format!("working directory \"{dir}\" is not a directory"),
                    ));
                }
                Err(e) => {
                    return Err(TaskError::fatal(
                        "spawn",
                        format!("working directory \"{dir}\" is not usable: {e}"),
                    ));
                }
            }
        }

        let mut child = command(ctx, &spec)
            .spawn()
            .map_err(|e| spawn_error(program, &e))?;
        // Declared after `child` so that it is dropped first: the group is
        // killed while its leader is still unreaped.
        let mut group = ProcessGroup::of(&child);
        // The attempt's span carries node, run, task and attempt.
        tracing::debug!(pid = child.id(), "Spawned command.");

        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let feed = async {
            if let (Some(mut pipe), Some(bytes)) = (stdin, &spec.stdin) {
                // A command that exits without reading its input breaks the
                // pipe; its exit status tells the story, not this error.
                let _ = pipe.write_all(bytes).await;
            }
            Ok(())
        };
        let exited = async {
            let status = child.wait().await.map_err(|e| {
                TaskError::retryable("io", format!("waiting for \"{program}\" failed: {e}"))
            });
            group.kill();
            status
        };
        let ((), status, stdout, (stderr, stderr_cut)) = tokio::try_join!(
            feed,
            exited,
            read_capped(stdout, self.max_stdout),
            read_tail(stderr, STDERR_TAIL),
        )?;
        if !status.success() {
            return Err(exit_error(program, status, &stderr, stderr_cut));
        }
        Ok(parse_output(stdout))
    }
}

fn command(ctx: &AttemptContext, spec: &Spec) -> Command {
    let mut cmd = Command::new(&spec.argv[0]);
    cmd.args(&spec.argv[1..])
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .env("SYMPHONY_RUN_ID", &ctx.run_id)
        .env("SYMPHONY_TASK_ID", &ctx.task_id)
        .env("SYMPHONY_ATTEMPT", ctx.attempt.to_string())
        .env("SYMPHONY_IDEMPOTENCY_KEY", &ctx.idempotency_key)
        .stdin(if spec.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    match ctx.item {
        Some(index) => cmd.env("SYMPHONY_ITEM_INDEX", index.to_string()),
        None => cmd.env_remove("SYMPHONY_ITEM_INDEX"),
    };
    if let Some(dir) = &spec.cwd {
        cmd.current_dir(dir);
    }
    #[cfg(unix)]
    cmd.process_group(0);
    cmd
}

fn spawn_error(program: &str, e: &std::io::Error) -> TaskError {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::NotFound if program.contains('/') => TaskError::fatal(
            "spawn",
            format!(
                "command \"{program}\" not found (no such file, or its interpreter is missing)"
            ),
        ),
        ErrorKind::NotFound => {
            TaskError::fatal("spawn", format!("command \"{program}\" not found on PATH"))
        }
        ErrorKind::PermissionDenied | ErrorKind::InvalidInput => {
            TaskError::fatal("spawn", format!("cannot run \"{program}\": {e}"))
        }
        // Out of processes, memory or file descriptors: may pass.
        _ => TaskError::retryable("spawn", format!("cannot run \"{program}\": {e}")),
    }
}

/// Reads all of `pipe`, failing once it holds more than `cap` bytes.
async fn read_capped(pipe: impl AsyncRead + Unpin, cap: usize) -> Result<Vec<u8>, TaskError> {
    let mut out = Vec::new();
    let limit = u64::try_from(cap).unwrap_or(u64::MAX).saturating_add(1);
    pipe.take(limit)
        .read_to_end(&mut out)
        .await
        .map_err(|e| TaskError::retryable("io", format!("reading stdout failed: {e}")))?;
    if out.len() > cap {
        return Err(TaskError::fatal(
            "output_too_large",
            format!("stdout exceeded the limit of {cap} bytes"),
        ));
    }
    Ok(out)
}

/// Reads all of `pipe`, keeping its last `keep` bytes; also says whether
/// anything was dropped from the front.
async fn read_tail(
    mut pipe: impl AsyncRead + Unpin,
    keep: usize,
) -> Result<(Vec<u8>, bool), TaskError> {
    let mut tail = Vec::with_capacity(2 * keep);
    let mut cut = false;
    let mut chunk = vec![0_u8; 8 * 1024];
    loop {
        let n = pipe
            .read(&mut chunk)
            .await
            .map_err(|e| TaskError::retryable("io", format!("reading stderr failed: {e}")))?;
        if n == 0 {
            break;
        }
        tail.extend_from_slice(&chunk[..n]);
        if tail.len() > 2 * keep {
            tail.drain(..tail.len() - keep);
            cut = true;
        }
    }
    if tail.len() > keep {
        tail.drain(..tail.len() - keep);
        cut = true;
    }
    Ok((tail, cut))
}

fn exit_error(program: &str, status: ExitStatus, stderr: &[u8], cut: bool) -> TaskError {
    let how = match status.code() {
        Some(code) => format!("exited with code {code}"),
        None => signal_text(status),
    };
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim_end();
    let message = if text.is_empty() {
        format!("command \"{program}\" {how} (stderr empty)")
    } else if cut {
        format!("command \"{program}\" {how}; stderr ends: …{text}")
    } else {
        format!("command \"{program}\" {how}; stderr: {text}")
    };
    TaskError::retryable("exit", message)
}

#[cfg(unix)]
fn signal_text(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status.signal() {
        Some(number) => match nix::sys::signal::Signal::try_from(number) {
            Ok(signal) => format!("was killed by signal {number} ({})", signal.as_str()),
            Err(_) => format!("was killed by signal {number}"),
        },
        None => format!("ended with {status}"),
    }
}

#[cfg(not(unix))]
fn signal_text(status: ExitStatus) -> String {
    format!("ended with {status}")
}

/// Stdout as a value: one trailing newline removed, then as [`output_value`].
fn parse_output(mut stdout: Vec<u8>) -> Value {
    if stdout.last() == Some(&b'\n') {
        stdout.pop();
        if stdout.last() == Some(&b'\r') {
            stdout.pop();
        }
    }
    output_value(stdout)
}

/// Kills a spawned command's process group, once: explicitly, or on drop.
#[derive(Debug)]
struct ProcessGroup {
    #[cfg(unix)]
    leader: Option<nix::unistd::Pid>,
}

impl ProcessGroup {
    fn of(child: &Child) -> ProcessGroup {
        #[cfg(unix)]
        {
            ProcessGroup {
                leader: child
                    .id()
                    .and_then(|id| i32::try_from(id).ok())
                    .map(nix::unistd::Pid::from_raw),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = child;
            ProcessGroup {}
        }
    }

    /// Sends `SIGKILL` to every process left in the group. Done once: after
    /// that the group id may be reused, so it is forgotten.
    fn kill(&mut self) {
        #[cfg(unix)]
        if let Some(leader) = self.leader.take() {
            // ESRCH (nobody left) is the common, harmless outcome.
            let _ = nix::sys::signal::killpg(leader, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(allow: Option<&[&str]>) -> Exec {
        Exec::new(&ExecutorConfig {
            exec_allow: allow.map(|a| a.iter().map(|s| (*s).to_owned()).collect()),
            ..ExecutorConfig::default()
        })
    }

    #[test]
    fn allowlist_matches_as_written_or_by_file_name() {
        let any = exec(None);
        assert!(any.allows("/bin/rm"));
        let some = exec(Some(&["python3", "/usr/bin/env"]));
        assert!(some.allows("python3"));
        assert!(some.allows("/usr/local/bin/python3"));
        assert!(some.allows("/usr/bin/env"));
        assert!(!some.allows("env"));
        assert!(!some.allows("/bin/env"));
        assert!(!some.allows("sh"));
        assert!(!exec(Some(&[])).allows("true"));
    }

    #[test]
    fn output_is_json_or_trimmed_text() {
        assert_eq!(
            parse_output(b"{\"a\": 1}\n".to_vec()).get("a"),
            Some(&Value::Int(1))
        );
        assert_eq!(parse_output(b"42".to_vec()), Value::Int(42));
        assert_eq!(parse_output(b"hello\n\n".to_vec()), Value::from("hello\n"));
        assert_eq!(parse_output(b"hi\r\n".to_vec()), Value::from("hi"));
        assert_eq!(parse_output(Vec::new()), Value::Null);
        assert_eq!(parse_output(vec![0xff, b'\n']), Value::Bytes(vec![0xff]));
    }

    #[test]
    fn bad_fields_are_named() {
        let cases: [(Value, &str); 6] = [
            (Value::Null, "missing field \"command\""),
            (
                map(&[("command", Value::from("ls -l"))]),
                "field \"command\": expected a non-empty list",
            ),
            (
                map(&[("command", Value::List(vec![]))]),
                "field \"command\": expected a non-empty list",
            ),
            (
                map(&[("command", Value::List(vec!["ls".into(), Value::Null]))]),
                "field \"command[1]\": expected a string, got null",
            ),
            (
                map(&[
                    ("command", Value::List(vec!["ls".into()])),
                    ("env", map(&[("A", Value::List(vec![]))])),
                ]),
                "field \"env.A\": expected a string, got list",
            ),
            (
                map(&[
                    ("command", Value::List(vec!["ls".into()])),
                    ("cwd", Value::Int(3)),
                ]),
                "field \"cwd\": expected a directory path, got int 3",
            ),
        ];
        for (input, start) in cases {
            let err = parse(&input).unwrap_err();
            assert_eq!(err.class, "input");
            assert!(err.message.starts_with(start), "{}", err.message);
        }
    }

    #[test]
    fn yaml_scalars_become_arguments() {
        let spec = parse(&map(&[(
            "command",
            Value::List(vec!["sleep".into(), 1.into(), true.into()]),
        )]))
        .unwrap();
        assert_eq!(spec.argv, ["sleep", "1", "true"]);
    }

    fn map(pairs: &[(&str, Value)]) -> Value {
        Value::Map(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        )
    }
}
