//! The chaos toolkit: `symphony chaos run` starts a local cluster of
//! `symphony node` processes with the nemesis enabled, submits runs whose
//! tasks record their side effects, injects faults on a seeded schedule
//! (kill, pause, partition, delay), heals, and checks the recorded history
//! against the invariants of [`checker`].
//!
//! The checker and the schedule are pure; [`runner`] does the processes
//! and the HTTP.

pub mod checker;
pub mod history;
pub mod runner;
pub mod schedule;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

pub use self::checker::{Violation, check};
pub use self::history::History;
pub use self::runner::{Durability, Options, Outcome};
pub use self::schedule::FaultKind;

/// The environment variable through which a node tells the side-effect
/// recorder its name (set by the chaos runner on every node it starts;
/// `exec` commands inherit the node's environment).
pub const NODE_VAR: &str = "SYMPHONY_CHAOS_NODE";

/// What `symphony chaos record` does, inside an `exec` task: waits
/// `work`, then appends `run task attempt node` to `file` in one `O_APPEND`
/// write (so lines of concurrent attempts never interleave).
///
/// # Errors
/// When the executor's variables are missing or the file cannot be
/// written.
pub fn record(file: &Path, work: Duration) -> Result<(), String> {
    let var = |name: &str| {
        std::env::var(name).map_err(|_| {
            format!("{name} is not set: `symphony chaos record` runs inside an exec task")
        })
    };
    let (run, task, attempt) = (
        var("SYMPHONY_RUN_ID")?,
        var("SYMPHONY_TASK_ID")?,
        var("SYMPHONY_ATTEMPT")?,
    );
    let node = std::env::var(NODE_VAR).unwrap_or_else(|_| "?".to_owned());
    std::thread::sleep(work);
    let line = history::SideEffect::line(&run, &task, &attempt, &node);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .map_err(|e| format!("cannot open {}: {e}", file.display()))?;
    f.write_all(line.as_bytes())
        .map_err(|e| format!("cannot write to {}: {e}", file.display()))
}
