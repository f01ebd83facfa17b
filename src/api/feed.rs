//! `GET /api/v1/events`: the journal events of every run on this node as
//! server-sent events, live, resumable.
//!
//! Each event's `id` is its position on the node's event bus
//! (`<epoch>-<n>`, see [`crate::engine::bus`]). A client that reconnects
//! with `Last-Event-ID` (or `?since=`) gets exactly the events after that
//! one, as long as the bus still holds them; when it does not (the client
//! was away for more than the backlog, or the node restarted), the stream
//! starts with a `resync` event and goes on with what the bus holds, so the
//! client knows to read the state again.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};
use tracing::debug;

use super::AppState;
use super::error::ApiError;
use crate::engine::bus::EventId;
use crate::engine::{Engine, RunEvent};

/// Query of `GET /api/v1/events`.
#[derive(Debug, Deserialize)]
pub(crate) struct FeedQuery {
    /// Start after this event id (what `Last-Event-ID` says, for a first
    /// connection); `Last-Event-ID` wins when both are given.
    since: Option<String>,
}

/// Answers with the event stream of every run.
pub(crate) async fn stream(
    State(shared): State<AppState>,
    query: Result<Query<FeedQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text().to_lowercase()))?;
    let after = match header_id(&headers) {
        Some(id) => Some(parse_id(id, "Last-Event-ID")?),
        None => match query.since.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(id) => Some(parse_id(id, "since")?),
        },
    };
    let engine = shared.state.engine.clone();
    let follow = engine.follow(after);
    let feed = Feed {
        engine,
        live: follow.live,
        backlog: follow.backlog.into(),
        last: follow.position,
        resync: follow.missed,
        closing: shared.closing.subscribe(),
    };
    let mut response = Sse::new(feed.into_stream())
        .keep_alive(KeepAlive::default())
        .into_response();
    // Keeps reverse proxies such as nginx from buffering the stream.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

fn header_id(headers: &HeaderMap) -> Option<&str> {
    let text = headers.get("last-event-id")?.to_str().unwrap_or("").trim();
    (!text.is_empty()).then_some(text)
}

fn parse_id(text: &str, what: &str) -> Result<EventId, ApiError> {
    text.parse()
        .map_err(|e| ApiError::bad_request(format!("{what}: {e}")))
}

/// One client's stream.
struct Feed {
    engine: Engine,
    live: broadcast::Receiver<Arc<RunEvent>>,
    /// Events to send before reading the live channel.
    backlog: VecDeque<Arc<RunEvent>>,
    /// The newest event sent, or the bus's position when the client
    /// connected if that is newer.
    last: EventId,
    /// Whether to tell the client it missed events before the next one.
    resync: bool,
    closing: watch::Receiver<bool>,
}

impl Feed {
    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> + Send {
        futures::stream::unfold(self, |mut feed| async move {
            let event = feed.next_event().await?;
            Some((Ok(event), feed))
        })
    }

    /// The next event to send, or `None` when the server is shutting down.
    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if self.resync {
                self.resync = false;
                return Some(resync_event(self.engine.event_epoch()));
            }
            if let Some(event) = self.backlog.pop_front() {
                // The first backlog predates `last` (the position when the
                // client connected); a refill after a lag follows it.
                self.last = self.last.max(event.id);
                return Some(sse_event(&event));
            }
            let received = tokio::select! {
                _ = self.closing.wait_for(|closing| *closing) => return None,
                received = self.live.recv() => received,
            };
            match received {
                // After a refill the channel replays what the backlog had.
                Ok(event) if event.id <= self.last => {}
                Ok(event) => {
                    self.last = event.id;
                    return Some(sse_event(&event));
                }
                Err(RecvError::Lagged(missed)) => {
                    debug!(missed, "All-runs event stream lagged; reading the backlog.");
                    let (backlog, gone) = self.engine.events_since(self.last);
                    self.backlog = backlog.into();
                    self.resync = gone;
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

/// `id: <epoch>-<n>`, `event: <kind>`, `data:` the journal event as JSON
/// with `run_id`, `seq` (its position in the run's journal) and `at_ms`
/// (when it was published).
fn sse_event(event: &RunEvent) -> Event {
    let mut data = serde_json::to_value(&event.event)
        .unwrap_or_else(|e| json!({ "type": event.event.kind(), "error": e.to_string() }));
    if let Some(fields) = data.as_object_mut() {
        fields.insert("run_id".into(), json!(&*event.run_id));
        fields.insert("seq".into(), json!(event.seq));
        fields.insert("at_ms".into(), json!(event.at_ms));
    }
    Event::default()
        .id(event.id.to_string())
        .event(event.event.kind())
        .data(data.to_string())
}

/// Tells the client that events between its position and the next one are
/// gone: it should read the state it shows again.
fn resync_event(epoch: u64) -> Event {
    let data = json!({
        "type": "resync",
        "epoch": epoch,
        "reason": "events after the given id are no longer held by this node \
                   (it restarted, or the client was away too long); read the state again",
    });
    Event::default().event("resync").data(data.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_wins_and_ids_are_checked() {
        let mut h = HeaderMap::new();
        assert_eq!(header_id(&h), None);
        h.insert("last-event-id", HeaderValue::from_static(" "));
        assert_eq!(header_id(&h), None);
        h.insert("last-event-id", HeaderValue::from_static("1-2"));
        assert_eq!(header_id(&h), Some("1-2"));
        assert!(parse_id("1-2", "since").is_ok());
        assert!(parse_id("7", "since").is_err());
    }
}
