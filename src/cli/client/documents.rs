//! Reading the server's JSON documents: run status, outcomes, summaries,
//! and the cluster view as a table.

use serde_json::{Value as Json, json};

use super::ClientError;
use crate::engine::{RunOutcome, TaskReport, TaskStatus};
use crate::store::{RunStatus, RunSummary};
use crate::value::Value;

pub(super) fn run_status(info: &Json) -> Option<RunStatus> {
    RunStatus::parse(info.get("status")?.as_str()?)
}

pub(super) fn parse_task_status(s: &str) -> Option<TaskStatus> {
    [
        TaskStatus::Waiting,
        TaskStatus::Ready,
        TaskStatus::Running,
        TaskStatus::Succeeded,
        TaskStatus::Failed,
        TaskStatus::Skipped,
    ]
    .into_iter()
    .find(|status| status.as_str() == s)
}

/// A run document (`GET /api/v1/runs/{id}`) as the outcome `symphony run`
/// prints.
pub(super) fn outcome_of(info: &Json) -> Result<RunOutcome, ClientError> {
    let bad = || ClientError::Protocol(format!("unexpected run document: {info}"));
    let text = |field: &str| info.get(field).and_then(Json::as_str).map(str::to_owned);
    let mut tasks = Vec::new();
    for t in info.get("tasks").and_then(Json::as_array).ok_or_else(bad)? {
        tasks.push(TaskReport {
            id: t
                .get("id")
                .and_then(Json::as_str)
                .ok_or_else(bad)?
                .to_owned(),
            uses: t
                .get("uses")
                .and_then(Json::as_str)
                .unwrap_or_default()
                .to_owned(),
            needs: t
                .get("needs")
                .and_then(Json::as_array)
                .map(|needs| {
                    needs
                        .iter()
                        .filter_map(|n| n.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            status: t
                .get("status")
                .and_then(Json::as_str)
                .and_then(parse_task_status)
                .ok_or_else(bad)?,
            attempts: t
                .get("attempts")
                .and_then(Json::as_u64)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0),
            items: t
                .get("items")
                .and_then(Json::as_u64)
                .and_then(|n| usize::try_from(n).ok()),
            error: t.get("error").and_then(Json::as_str).map(str::to_owned),
        });
    }
    Ok(RunOutcome {
        run_id: text("run_id").ok_or_else(bad)?,
        workflow: text("workflow").unwrap_or_default(),
        status: run_status(info).ok_or_else(bad)?,
        outputs: Value::from_json(info.get("outputs").cloned().unwrap_or(Json::Null)),
        error: text("error"),
        tasks,
        dropped_results: 0,
    })
}

/// A run document in the shape `symphony run --json` prints: `{run_id,
/// status, outputs, tasks: {ID: {status, attempts, items?, error?}},
/// error?}`.
pub(super) fn outcome_json(info: &Json) -> Json {
    let mut tasks = serde_json::Map::new();
    for t in info
        .get("tasks")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        let Some(id) = t.get("id").and_then(Json::as_str) else {
            continue;
        };
        let mut entry = json!({
            "status": t.get("status").cloned().unwrap_or(Json::Null),
            "attempts": t.get("attempts").cloned().unwrap_or(json!(0)),
        });
        for field in ["items", "error"] {
            if let Some(v) = t.get(field).filter(|v| !v.is_null()) {
                entry[field] = v.clone();
            }
        }
        tasks.insert(id.to_owned(), entry);
    }
    let mut doc = json!({
        "run_id": info.get("run_id").cloned().unwrap_or(Json::Null),
        "status": info.get("status").cloned().unwrap_or(Json::Null),
        "outputs": info.get("outputs").cloned().unwrap_or(Json::Null),
        "tasks": tasks,
    });
    if let Some(e) = info.get("error").filter(|e| !e.is_null()) {
        doc["error"] = e.clone();
    }
    doc
}

pub(super) fn summaries_of(list: &Json) -> Result<Vec<RunSummary>, ClientError> {
    let bad = || ClientError::Protocol(format!("unexpected run list: {list}"));
    let mut out = Vec::new();
    for r in list.as_array().ok_or_else(bad)? {
        let n = |field: &str| r.get(field).and_then(Json::as_u64).unwrap_or(0);
        out.push(RunSummary {
            id: r
                .get("id")
                .and_then(Json::as_str)
                .ok_or_else(bad)?
                .to_owned(),
            workflow: r
                .get("workflow")
                .and_then(Json::as_str)
                .unwrap_or("")
                .to_owned(),
            status: r
                .get("status")
                .and_then(Json::as_str)
                .and_then(RunStatus::parse)
                .ok_or_else(bad)?,
            created_ms: n("created_ms"),
            updated_ms: n("updated_ms"),
        });
    }
    Ok(out)
}

/// `symphony cluster status` as a table: NAME ADDR STATE LOAD/SLOTS LABELS.
pub(super) fn cluster_table(view: &Json) -> String {
    let node = view.get("node").and_then(Json::as_str).unwrap_or("?");
    let joined = view.get("joined").and_then(Json::as_bool).unwrap_or(false);
    let mut rows = vec![[
        "NAME".to_owned(),
        "ADDR".into(),
        "STATE".into(),
        "LOAD/SLOTS".into(),
        "LABELS".into(),
    ]];
    for m in view
        .get("members")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        let text = |f: &str| m.get(f).and_then(Json::as_str).unwrap_or("?").to_owned();
        let n = |f: &str| m.get(f).and_then(Json::as_u64).unwrap_or(0);
        let labels = m
            .get("labels")
            .and_then(Json::as_object)
            .map(|l| {
                l.iter()
                    .map(|(k, v)| {
                        format!(
                            "{k}={}",
                            v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .filter(|l| !l.is_empty())
            .unwrap_or_else(|| "-".into());
        rows.push([
            text("name"),
            text("addr"),
            text("state"),
            format!("{}/{}", n("load"), n("slots")),
            labels,
        ]);
    }
    let widths: Vec<usize> = (0..4)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let state = if joined { "joined" } else { "not joined yet" };
    let mut out = format!("cluster as seen by {node} ({state})\n");
    for r in &rows {
        for (c, width) in widths.iter().enumerate() {
            out.push_str(&format!("{:<width$}  ", r[c]));
        }
        out.push_str(&r[4]);
        out.push('\n');
    }
    if let Some(raft) = view.get("raft").filter(|r| r.is_object()) {
        out.push_str(&raft_lines(raft));
    }
    out
}

/// The replicated log's lines of `symphony cluster status`.
pub(super) fn raft_lines(raft: &Json) -> String {
    let text = |f: &str| {
        raft.get(f)
            .and_then(Json::as_str)
            .unwrap_or("none")
            .to_owned()
    };
    let num = |f: &str| {
        raft.get(f)
            .and_then(Json::as_u64)
            .map_or_else(|| "-".to_owned(), |n| n.to_string())
    };
    let names = |f: &str| {
        let list: Vec<&str> = raft
            .get(f)
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .filter_map(Json::as_str)
            .collect();
        if list.is_empty() {
            "-".to_owned()
        } else {
            list.join(",")
        }
    };
    let mut out = format!(
        "replicated log: leader {}  term {}  this node {}  applied {}  last log {}\n  voters {}  learners {}\n",
        text("leader"),
        num("term"),
        text("role"),
        num("applied_index"),
        num("last_log_index"),
        names("voters"),
        names("learners"),
    );
    if let Some(lag) = raft
        .get("lag")
        .and_then(Json::as_object)
        .filter(|l| !l.is_empty())
    {
        let lags: Vec<String> = lag.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push_str(&format!(
            "  lag (entries behind the leader) {}\n",
            lags.join(" ")
        ));
    }
    if let Some(stalled) = raft.get("stalled").filter(|s| s.is_object()) {
        out.push_str(&format!(
            "  commits stalled for {} ms: {}\n",
            stalled.get("for_ms").and_then(Json::as_u64).unwrap_or(0),
            stalled.get("reason").and_then(Json::as_str).unwrap_or("?")
        ));
    }
    out
}
