//! Helpers shared by the integration tests.

#![allow(dead_code, unreachable_pub)]

pub mod node;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A `Command` for the built `symphony` binary, with logs quiet.
pub fn symphony() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_symphony"));
    cmd.env_remove("SYMPHONY_DATA_DIR")
        .env("SYMPHONY_LOG", "warn");
    cmd
}

/// Runs `symphony ARGS` in `dir` and returns its output.
pub fn run_in(dir: &Path, args: &[&str]) -> Output {
    symphony()
        .current_dir(dir)
        .args(args)
        .output()
        .expect("symphony runs")
}

/// Parses stdout as exactly one JSON document.
pub fn json(out: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}):\n{text}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Polls `cond` until it holds or `deadline` passes; panics with `what` then.
pub fn wait_until(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The repository root (where Cargo.toml is).
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}
