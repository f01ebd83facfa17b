use std::path::Path;

use super::documents::outcome_json;
use super::follow::{describe, is_final};
use super::sse::SseParser;
use super::submit::relative_to;
use super::*;
use crate::engine::TaskStatus;

#[test]
fn sse_events_split_across_chunks() {
    let stream = b": keep-alive\n\nid: 0\nevent: run_submitted\ndata: {\"type\":\"run_submitted\"}\n\nid: 1\r\nevent: task_scheduled\r\ndata: a\r\ndata: b\r\n\r\n";
    for split in 1..stream.len() {
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        for chunk in stream.chunks(split) {
            parser.push(chunk);
            while let Some(e) = parser.next_event() {
                events.push(e);
            }
        }
        assert_eq!(events.len(), 2, "chunks of {split}");
        assert_eq!(events[0].id.as_deref(), Some("0"));
        assert_eq!(events[0].event, "run_submitted");
        assert_eq!(events[0].data, "{\"type\":\"run_submitted\"}");
        assert_eq!(events[1].event, "task_scheduled");
        assert_eq!(events[1].data, "a\nb");
    }
}

#[test]
fn imports_are_sent_relative_to_the_main_file() {
    assert_eq!(
        relative_to("examples/lib/t.yaml", Path::new("examples")),
        "lib/t.yaml"
    );
    assert_eq!(
        relative_to("shared/t.yaml", Path::new("dir")),
        "../shared/t.yaml"
    );
    assert_eq!(relative_to("wf.yaml", Path::new("")), "wf.yaml");
    assert_eq!(
        relative_to("/tmp/x/wf.yaml", Path::new("/tmp/x")),
        "wf.yaml"
    );
}

#[test]
fn events_read_as_one_line() {
    let names = vec!["clean".to_owned(), "score".to_owned()];
    let e = json!({"type": "task_failed", "key": {"task": 1, "item": 3}, "attempt": 2,
        "error": {"class": "timeout", "message": "took too long", "retryable": true}, "will_retry": true});
    let line = describe(Some(7), "task_failed", &e, &names);
    assert!(
        line.contains("score[3] attempt 2 failed: timeout: took too long (will retry)"),
        "{line}"
    );
    assert!(is_final(
        "run_failed",
        &json!({"type": "run_failed", "reason": "x"})
    ));
    assert!(!is_final("task_failed", &e));
}

#[test]
fn run_documents_become_outcomes() {
    let info = json!({
        "run_id": "r1", "workflow": "w", "status": "failed", "outputs": null,
        "error": "task \"b\" failed",
        "tasks": [{"id": "a", "status": "succeeded", "attempts": 1, "items": 2},
                  {"id": "b", "status": "failed", "attempts": 3, "error": "boom"}],
        "progress": {"tasks": 2, "finished": 2, "failed": 1, "running": 0, "attempts_succeeded": 2, "retries": 2},
        "created_ms": 1
    });
    let o = outcome_of(&info).unwrap();
    assert_eq!(o.status, RunStatus::Failed);
    assert_eq!(o.tasks[1].status, TaskStatus::Failed);
    let doc = outcome_json(&info);
    assert_eq!(
        doc["tasks"]["a"],
        json!({"status": "succeeded", "attempts": 1, "items": 2})
    );
    assert_eq!(doc["tasks"]["b"]["error"], "boom");
    assert_eq!(doc["error"], "task \"b\" failed");
    assert!(doc.get("progress").is_none());
}

#[test]
fn cluster_tables_align() {
    let view = json!({"node": "node1", "joined": true, "members": [
        {"name": "node1", "addr": "127.0.0.1:7401", "state": "up", "labels": {}, "slots": 256, "load": 0},
        {"name": "node3", "addr": "127.0.0.1:7403", "state": "suspect", "labels": {"gpu": "true"}, "slots": 8, "load": 3},
    ]});
    let table = cluster_table(&view);
    assert!(
        table.starts_with("cluster as seen by node1 (joined)\nNAME "),
        "{table}"
    );
    assert!(
        table.contains("node3  127.0.0.1:7403  suspect  3/8         gpu=true"),
        "{table}"
    );
}

#[test]
fn servers_need_a_scheme_or_get_http() {
    assert_eq!(
        Api::new("127.0.0.1:8081", None).unwrap().base,
        "http://127.0.0.1:8081"
    );
    assert_eq!(
        Api::new("https://x.example/", Some(" ")).unwrap().token,
        None
    );
    assert!(Api::new("ftp://x", None).is_err());
    assert_eq!(segment("01J/../x"), "01J%2F..%2Fx");
}
