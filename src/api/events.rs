//! `GET /api/v1/runs/{id}/events`: a run's journal events as server-sent
//! events, history first, then live, in sequence order without duplicates.
//!
//! The engine publishes an event on its bus before the journal writer has
//! stored it, so the two sources race: the feed subscribes before reading
//! the journal, drops what it already sent, and when a live event arrives
//! ahead of the next expected sequence number (the gap is still on its way
//! to the journal, or the bus lagged) it reads the journal again until the
//! gap is filled. A run that keeps no journal (`durability: none`) cannot
//! fill gaps; its stream moves on after [`GAP_WAIT`].

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, watch};
use tracing::debug;

use super::AppState;
use super::error::ApiError;
use crate::engine::{Engine, JournalEvent, RunEvent};
use crate::store::StoreError;

/// How long a gap in sequence numbers may wait for the journal to fill it.
const GAP_WAIT: Duration = Duration::from_secs(1);
/// How often the journal is read again while a gap is open.
const GAP_POLL: Duration = Duration::from_millis(25);
/// How long a quiet stream waits before checking whether its run is over
/// (a run that ends without a final event, e.g. when its actor fails).
const IDLE_CHECK: Duration = Duration::from_secs(5);

/// Answers with the event stream of a run; 404 when the run is unknown,
/// 204 when it is over and there is nothing (more) to send, so a
/// reconnecting `EventSource` stops.
pub(crate) async fn stream(
    State(shared): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = super::error::run_id(id)?;
    let after = last_event_id(&headers)?;
    let engine = shared.state.engine.clone();
    // Subscribe first: whatever is published from now on is caught, and
    // what was published before is in the journal (or soon will be).
    let live = engine.subscribe();
    // A run actor knows it is over before its last events are durable, and
    // stops only once they are: so look at the run before reading the
    // journal, which is complete if the actor had stopped by then.
    let info = engine.run_info(&id).await?;
    let finished = info.as_ref().is_some_and(|i| i.status.is_final());
    let stopped = finished && engine.live(&id).await.is_none();
    let history = read_history(&engine, &id).await?;
    if history.is_empty() && info.is_none() {
        return Err(ApiError::unknown_run(&id));
    }
    let published = engine.published(&id).into_iter().collect();
    let complete = stopped || history.iter().any(|(_, event)| is_final(event));
    let mut feed = Feed {
        engine,
        run_id: id,
        live,
        closing: shared.closing.subscribe(),
        pending: BTreeMap::new(),
        published,
        next: after.map_or(0, |seq| seq.saturating_add(1)),
        journaled: !history.is_empty(),
        young: info.as_ref().is_some_and(|i| is_young(i.created_ms)),
        settled: complete,
        ending: finished && !complete,
        gap_since: None,
        last_refill: None,
        done: false,
    };
    feed.absorb(history);
    if feed.settled && feed.pending.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let mut response = Sse::new(feed.into_stream())
        .keep_alive(KeepAlive::default())
        .into_response();
    // Keeps reverse proxies such as nginx from buffering the stream.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// Whether a run submitted at `created_ms` is younger than [`GAP_WAIT`].
fn is_young(created_ms: u64) -> bool {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    now_ms.saturating_sub(u128::from(created_ms)) < GAP_WAIT.as_millis()
}

/// The sequence number in `Last-Event-ID`, if any.
fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        ApiError::bad_request(format!(
            "Last-Event-ID must be an event id (a sequence number), not \"{text}\""
        ))
    })
}

async fn read_history(engine: &Engine, id: &str) -> Result<Vec<(u64, JournalEvent)>, ApiError> {
    let engine = engine.clone();
    let id = id.to_owned();
    tokio::task::spawn_blocking(move || engine.history(&id))
        .await
        .map_err(|e| ApiError::internal(format!("reading the journal failed: {e}")))?
        .map_err(ApiError::from)
}

/// The state of one client's stream.
struct Feed {
    engine: Engine,
    run_id: String,
    live: broadcast::Receiver<Arc<RunEvent>>,
    closing: watch::Receiver<bool>,
    /// Events received but not sent yet, by sequence number.
    pending: BTreeMap<u64, JournalEvent>,
    /// When events were published, by sequence number, as far as known
    /// (live events, and the run's events the bus still held at the start).
    published: HashMap<u64, u64>,
    /// The sequence number to send next.
    next: u64,
    /// Whether the run has a journal to fill gaps from.
    journaled: bool,
    /// Whether the run is so new that its journal may not be written yet
    /// (until a first gap is skipped).
    young: bool,
    /// Whether the run is over: what is pending is all there will be.
    settled: bool,
    /// Whether the run is over but its actor has not stopped yet, so its
    /// last events may still be on their way to the journal.
    ending: bool,
    /// Since when the first pending event waits for an earlier one.
    gap_since: Option<Instant>,
    /// When the journal was last read to fill a gap.
    last_refill: Option<Instant>,
    /// A final event was sent, or the server is shutting down.
    done: bool,
}

impl Feed {
    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> + Send {
        futures::stream::unfold(self, |mut feed| async move {
            let event = feed.next_event().await?;
            Some((Ok(event), feed))
        })
    }

    /// The next event to send, or `None` when the stream is over.
    ///
    /// Invariant: every key of `pending` is at least `next`.
    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if self.done {
                return None;
            }
            match self.pending.keys().next().copied() {
                None if self.settled => {
                    self.done = true;
                    return None;
                }
                None => self.wait(true).await,
                Some(first) if first == self.next || self.settled => return self.pop(),
                Some(_) => {
                    // A gap: the missing events are on their way to the
                    // journal, or the bus lagged.
                    let since = *self.gap_since.get_or_insert_with(Instant::now);
                    if self.last_refill.is_none_or(|t| t.elapsed() >= GAP_POLL) {
                        self.last_refill = Some(Instant::now());
                        if self.refill().await.is_err() {
                            self.done = true;
                            return None;
                        }
                        if self.pending.contains_key(&self.next) {
                            continue;
                        }
                    }
                    // A run without a journal cannot fill gaps, but a young
                    // run's journal may just not be written yet.
                    let patience = if self.journaled || self.young {
                        GAP_WAIT
                    } else {
                        Duration::ZERO
                    };
                    if since.elapsed() >= patience {
                        return self.pop();
                    }
                    self.wait(false).await;
                }
            }
        }
    }

    /// Sends the first pending event.
    fn pop(&mut self) -> Option<Event> {
        let (seq, event) = self.pending.pop_first()?;
        if seq > self.next {
            self.young = false;
            debug!(run = %self.run_id, from = self.next, to = seq, "Event stream skipped a gap.");
        }
        self.next = seq + 1;
        self.gap_since = None;
        if is_final(&event) {
            self.done = true;
        }
        Some(sse_event(seq, &event, self.published.remove(&seq)))
    }

    /// Waits for a live event: when `idle`, up to [`IDLE_CHECK`] (or
    /// [`GAP_POLL`] for an ending run) and then checks whether the run is
    /// over; else up to [`GAP_POLL`].
    async fn wait(&mut self, idle: bool) {
        let wait = if idle && !self.ending {
            IDLE_CHECK
        } else {
            GAP_POLL
        };
        let received = tokio::select! {
            _ = self.closing.wait_for(|closing| *closing) => {
                self.done = true;
                return;
            }
            received = tokio::time::timeout(wait, self.live.recv()) => received,
        };
        match received {
            Ok(Ok(event)) => self.offer(&event),
            Ok(Err(RecvError::Lagged(missed))) => {
                debug!(run = %self.run_id, missed, "Event stream lagged; reading the journal.");
                if self.refill().await.is_err() {
                    self.done = true;
                }
            }
            Ok(Err(RecvError::Closed)) => self.settle().await,
            Err(_) if idle => {
                if self.is_over().await {
                    self.settle().await;
                }
            }
            Err(_) => {}
        }
    }

    /// No more live events will come: take what the journal has and end
    /// once it is sent.
    async fn settle(&mut self) {
        self.settled = true;
        if self.refill().await.is_err() {
            self.done = true;
        }
    }

    /// Whether the run has ended (or vanished) without its final event
    /// reaching this stream.
    async fn is_over(&self) -> bool {
        if self.engine.live(&self.run_id).await.is_some() {
            return false;
        }
        match self.engine.run_info(&self.run_id).await {
            Ok(Some(info)) => info.status.is_final(),
            Ok(None) | Err(_) => true,
        }
    }

    fn offer(&mut self, event: &RunEvent) {
        if *event.run_id == *self.run_id && event.seq >= self.next {
            self.pending.insert(event.seq, event.event.clone());
            self.published.insert(event.seq, event.at_ms);
        }
    }

    /// Takes the live events already buffered, without waiting.
    fn drain_buffered(&mut self) {
        loop {
            match self.live.try_recv() {
                Ok(event) => self.offer(&event),
                Err(TryRecvError::Lagged(_)) => {}
                Err(TryRecvError::Empty | TryRecvError::Closed) => return,
            }
        }
    }

    /// Reads the journal again for events not sent yet.
    async fn refill(&mut self) -> Result<(), StoreError> {
        let engine = self.engine.clone();
        let id = self.run_id.clone();
        let history = tokio::task::spawn_blocking(move || engine.history(&id))
            .await
            .map_err(|e| StoreError::Io(e.to_string()))?;
        match history {
            Ok(history) => {
                self.journaled |= !history.is_empty();
                self.absorb(history);
                Ok(())
            }
            Err(e) => {
                debug!(run = %self.run_id, error = %e, "Event stream cannot read the journal.");
                Err(e)
            }
        }
    }

    /// Takes events read from the journal, then the live events already
    /// buffered: every journaled event was published before it was stored,
    /// so its bus copy (with its publication time) is taken before it is
    /// sent, whichever source won the race.
    fn absorb(&mut self, history: Vec<(u64, JournalEvent)>) {
        for (seq, event) in history {
            if seq >= self.next {
                self.pending.insert(seq, event);
            }
        }
        self.drain_buffered();
    }
}

/// Whether `event` ends its run (and so the stream).
fn is_final(event: &JournalEvent) -> bool {
    matches!(
        event,
        JournalEvent::RunSucceeded { .. }
            | JournalEvent::RunFailed { .. }
            | JournalEvent::RunCancelled { .. }
    )
}

/// `id: <seq>`, `event: <kind>`, `data: <event as JSON>`, with `at_ms`
/// (when it was published) when known.
fn sse_event(seq: u64, event: &JournalEvent, at_ms: Option<u64>) -> Event {
    let mut data = serde_json::to_value(event)
        .unwrap_or_else(|e| serde_json::json!({ "type": event.kind(), "error": e.to_string() }));
    if let (Some(at_ms), Some(fields)) = (at_ms, data.as_object_mut()) {
        fields.insert("at_ms".into(), at_ms.into());
    }
    Event::default()
        .id(seq.to_string())
        .event(event.kind())
        .data(data.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_event_id_is_a_sequence_number() {
        let mut h = HeaderMap::new();
        assert_eq!(last_event_id(&h).unwrap(), None);
        h.insert("last-event-id", HeaderValue::from_static(" 7 "));
        assert_eq!(last_event_id(&h).unwrap(), Some(7));
        h.insert("last-event-id", HeaderValue::from_static("x"));
        assert!(last_event_id(&h).is_err());
    }
}
