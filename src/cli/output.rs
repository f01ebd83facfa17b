//! What commands print: human text by default, one JSON document with
//! `--json`.

use std::collections::BTreeMap;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use super::{EXIT_CANCELLED, EXIT_FAILED, EXIT_OK};
use crate::engine::RunOutcome;
use crate::store::{RunStatus, RunSummary};

/// Prints a run's outcome.
pub(crate) fn outcome(outcome: &RunOutcome, as_json: bool) {
    if as_json {
        let tasks: BTreeMap<&str, serde_json::Value> = outcome
            .tasks
            .iter()
            .map(|t| {
                let mut v = json!({ "status": t.status, "attempts": t.attempts });
                if let Some(items) = t.items {
                    v["items"] = json!(items);
                }
                if let Some(e) = &t.error {
                    v["error"] = json!(e);
                }
                (t.id.as_str(), v)
            })
            .collect();
        let mut doc = json!({
            "run_id": outcome.run_id,
            "status": outcome.status,
            "outputs": outcome.outputs.to_json(),
            "tasks": tasks,
        });
        if let Some(e) = &outcome.error {
            doc["error"] = json!(e);
        }
        println!("{doc}");
        return;
    }
    println!(
        "run {}  {}  {}",
        outcome.run_id, outcome.workflow, outcome.status
    );
    for t in &outcome.tasks {
        let items = t.items.map(|n| format!("  {n} items")).unwrap_or_default();
        let attempts = if t.attempts == 1 {
            "attempt"
        } else {
            "attempts"
        };
        println!(
            "  {:<24} {:<10} {} {attempts}{items}",
            t.id,
            t.status.as_str(),
            t.attempts
        );
        if let Some(e) = &t.error {
            println!("      {e}");
        }
    }
    if let Some(e) = &outcome.error {
        println!("error: {e}");
    }
    let has_outputs = outcome
        .outputs
        .as_map()
        .map_or(!outcome.outputs.is_null(), |m| !m.is_empty());
    if has_outputs {
        let pretty = serde_json::to_string_pretty(&outcome.outputs.to_json()).unwrap_or_default();
        println!("outputs:\n{pretty}");
    }
}

/// Prints run summaries.
pub(crate) fn runs(all: &[RunSummary], as_json: bool) {
    if as_json {
        println!(
            "{}",
            serde_json::to_string(all).unwrap_or_else(|_| "[]".into())
        );
        return;
    }
    println!("{:<28} {:<24} {:<10} STARTED", "RUN", "WORKFLOW", "STATUS");
    for r in all {
        let started = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(r.created_ms),
        );
        println!(
            "{:<28} {:<24} {:<10} {started}",
            r.id,
            r.workflow,
            r.status.as_str()
        );
    }
}

/// The exit code of a command that followed a run to its end.
pub(crate) fn exit_code(status: RunStatus) -> u8 {
    match status {
        RunStatus::Succeeded => EXIT_OK,
        RunStatus::Cancelled => EXIT_CANCELLED,
        RunStatus::Failed | RunStatus::Running => EXIT_FAILED,
    }
}

/// The live progress line of `run`, `resume`, `submit --wait` and `watch`.
pub(crate) fn progress_bar(run_id: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix} [{elapsed}] {msg}")
            .expect("valid template"),
    );
    bar.set_prefix(format!("run {run_id}"));
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}
