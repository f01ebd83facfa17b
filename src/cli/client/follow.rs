//! Following a run to its end: the event stream, progress on stderr, the
//! outcome printed like `symphony run`.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::ProgressBar;
use serde_json::Value as Json;

use super::documents::{outcome_json, outcome_of, run_status};
use super::sse::SseReader;
use super::{Api, ClientError, MAX_RECONNECTS, PROGRESS_EVERY};
use crate::cli::{EXIT_CANCELLED, output};
use crate::store::RunStatus;

/// Follows a run's event stream to its end, showing progress on stderr, then
/// prints its outcome like `symphony run` and returns the exit code.
/// Ctrl-C stops watching (the run goes on) and exits 130.
pub(super) async fn follow(api: &Api, run_id: &str, as_json: bool) -> u8 {
    let info = match api.run(run_id).await {
        Ok(info) => info,
        Err(e) => return e.report(),
    };
    let names: Vec<String> = info
        .get("tasks")
        .and_then(Json::as_array)
        .map(|tasks| {
            tasks
                .iter()
                .map(|t| t.get("id").and_then(Json::as_str).unwrap_or("?").to_owned())
                .collect()
        })
        .unwrap_or_default();
    let bar = std::io::stderr()
        .is_terminal()
        .then(|| output::progress_bar(run_id));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let ticker = bar
        .clone()
        .map(|bar| tokio::spawn(tick_progress(api.clone(), run_id.to_owned(), bar, stopped)));
    let streamed = tokio::select! {
        r = stream_events(api, run_id, &names, bar.is_none()) => r,
        _ = tokio::signal::ctrl_c() => {
            let _ = stop.send(true);
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            eprintln!("stopped watching run {run_id}; it goes on (`symphony cancel {run_id}` stops it)");
            return EXIT_CANCELLED;
        }
    };
    let _ = stop.send(true);
    if let Some(ticker) = ticker {
        let _ = ticker.await;
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if let Err(e) = streamed {
        return e.report();
    }
    let info = match api.run(run_id).await {
        Ok(info) => info,
        Err(e) => return e.report(),
    };
    let outcome = match outcome_of(&info) {
        Ok(o) => o,
        Err(e) => return e.report(),
    };
    if as_json {
        println!("{}", outcome_json(&info));
    } else {
        output::outcome(&outcome, false);
    }
    output::exit_code(outcome.status)
}

/// Reads the event stream until the run's final event, reconnecting (from
/// the last event seen) when the stream breaks before it.
pub(super) async fn stream_events(
    api: &Api,
    run_id: &str,
    names: &[String],
    print_lines: bool,
) -> Result<(), ClientError> {
    let mut last: Option<u64> = None;
    let mut failures = 0u32;
    loop {
        let ended = match api.events(run_id, last).await {
            Ok(None) => return Ok(()),
            Ok(Some(response)) => {
                failures = 0;
                let mut reader = SseReader::new(response);
                loop {
                    match reader.next().await {
                        Ok(Some(event)) => {
                            if let Some(seq) = event.id.as_deref().and_then(|s| s.parse().ok()) {
                                last = Some(seq);
                            }
                            let data: Json =
                                serde_json::from_str(&event.data).unwrap_or(Json::Null);
                            if print_lines {
                                eprintln!("{}", describe(last, &event.event, &data, names));
                            }
                            if is_final(&event.event, &data) {
                                return Ok(());
                            }
                        }
                        Ok(None) => break Ok(()),
                        Err(e) => break Err(e),
                    }
                }
            }
            Err(e) => Err(e),
        };
        // The stream ended before the final event: the run may be over
        // anyway (its final event went missing), or the link broke.
        match api.run(run_id).await {
            Ok(info) if run_status(&info).is_some_and(RunStatus::is_final) => return Ok(()),
            Ok(_) => {}
            Err(e @ (ClientError::NotFound(_) | ClientError::Unauthorized { .. })) => {
                return Err(e);
            }
            Err(e) => {
                failures += 1;
                if failures > MAX_RECONNECTS {
                    return Err(e);
                }
            }
        }
        if let Err(e) = ended {
            failures += 1;
            if failures > MAX_RECONNECTS {
                return Err(e);
            }
        }
        // At least a little: a stream that keeps ending at once must not spin.
        let backoff = Duration::from_millis(100 * u64::from(failures.clamp(1, 20)));
        tokio::time::sleep(backoff).await;
    }
}

pub(super) fn is_final(kind: &str, data: &Json) -> bool {
    let kind = data.get("type").and_then(Json::as_str).unwrap_or(kind);
    matches!(kind, "run_succeeded" | "run_failed" | "run_cancelled")
}

/// One line for one event: sequence number, kind, and what it says.
pub(super) fn describe(seq: Option<u64>, kind: &str, data: &Json, names: &[String]) -> String {
    let kind = data.get("type").and_then(Json::as_str).unwrap_or(kind);
    let task_name = |index: Option<u64>| -> String {
        index
            .and_then(|i| names.get(usize::try_from(i).ok()?))
            .cloned()
            .unwrap_or_else(|| format!("#{}", index.unwrap_or(0)))
    };
    let key = || {
        let key = data.get("key");
        let task = task_name(key.and_then(|k| k.get("task")).and_then(Json::as_u64));
        match key.and_then(|k| k.get("item")).and_then(Json::as_u64) {
            Some(item) => format!("{task}[{item}]"),
            None => task,
        }
    };
    let attempt = data.get("attempt").and_then(Json::as_u64).unwrap_or(0);
    let text = |field: &str| {
        data.get(field)
            .and_then(Json::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let what = match kind {
        "run_submitted" => format!("run submitted (workflow {})", text("workflow")),
        "task_expanded" => format!(
            "{} expanded into {} items",
            task_name(data.get("task").and_then(Json::as_u64)),
            data.get("items").and_then(Json::as_u64).unwrap_or(0)
        ),
        "task_scheduled" => format!("{} attempt {attempt} scheduled on {}", key(), text("node")),
        "task_succeeded" => format!("{} attempt {attempt} succeeded", key()),
        "task_failed" => {
            let error = data.get("error");
            let class = error
                .and_then(|e| e.get("class"))
                .and_then(Json::as_str)
                .unwrap_or("");
            let message = error
                .and_then(|e| e.get("message"))
                .and_then(Json::as_str)
                .unwrap_or("");
            let retry = if data.get("will_retry").and_then(Json::as_bool) == Some(true) {
                " (will retry)"
            } else {
                ""
            };
            format!(
                "{} attempt {attempt} failed: {class}: {message}{retry}",
                key()
            )
        }
        "task_skipped" => format!(
            "{} skipped: {}",
            task_name(data.get("task").and_then(Json::as_u64)),
            text("reason")
        ),
        "run_succeeded" => "run succeeded".into(),
        "run_failed" => format!("run failed: {}", text("reason")),
        "run_cancelled" => format!("run cancelled: {}", text("reason")),
        other => format!("{other} {data}"),
    };
    match seq {
        Some(seq) => format!("{seq:>5} {kind:<15} {what}"),
        None => format!("      {kind:<15} {what}"),
    }
}

/// Keeps the progress line current until told to stop.
pub(super) async fn tick_progress(
    api: Api,
    run_id: String,
    bar: ProgressBar,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if let Ok(info) = api.run(&run_id).await {
            if let Some(p) = info.get("progress") {
                bar.set_message(progress_text(p));
            }
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(PROGRESS_EVERY) => {}
        }
    }
}

pub(super) fn progress_text(p: &Json) -> String {
    let n = |field: &str| p.get(field).and_then(Json::as_u64).unwrap_or(0);
    format!(
        "tasks {}/{}  running {}  failed {}  retries {}  attempts ok {}",
        n("finished"),
        n("tasks"),
        n("running"),
        n("failed"),
        n("retries"),
        n("attempts_succeeded")
    )
}
