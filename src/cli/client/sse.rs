//! Server-sent events: a parser of the `text/event-stream` format and a
//! reader over a response body.

use super::{ClientError, root_cause};

/// One server-sent event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct SseEvent {
    /// `id:`, when given.
    pub(super) id: Option<String>,
    /// `event:` (`message` when not given).
    pub(super) event: String,
    /// `data:` lines, joined by newlines.
    pub(super) data: String,
}

/// Splits a byte stream into server-sent events (the WHATWG format: fields
/// up to a blank line; `:` starts a comment, such as a keep-alive).
#[derive(Debug, Default)]
pub(super) struct SseParser {
    buf: Vec<u8>,
    current: SseEvent,
    has_data: bool,
}

impl SseParser {
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete event in what was pushed so far.
    pub(crate) fn next_event(&mut self) -> Option<SseEvent> {
        while let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
            let mut line: Vec<u8> = self.buf.drain(..=end).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line);
            if line.is_empty() {
                let event = std::mem::take(&mut self.current);
                let had_data = std::mem::take(&mut self.has_data);
                if had_data || !event.event.is_empty() {
                    return Some(SseEvent {
                        event: if event.event.is_empty() {
                            "message".into()
                        } else {
                            event.event
                        },
                        ..event
                    });
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (&*line, ""),
            };
            match field {
                "id" => self.current.id = Some(value.to_owned()),
                "event" => self.current.event = value.to_owned(),
                "data" => {
                    if self.has_data {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                    self.has_data = true;
                }
                _ => {}
            }
        }
        None
    }
}

/// Server-sent events from a response body, read chunk by chunk.
pub(super) struct SseReader {
    response: reqwest::Response,
    parser: SseParser,
}

impl SseReader {
    pub(crate) fn new(response: reqwest::Response) -> SseReader {
        SseReader {
            response,
            parser: SseParser::default(),
        }
    }

    /// The next event, or `None` when the stream ended.
    ///
    /// Cancel safe: what was read stays in the parser.
    pub(crate) async fn next(&mut self) -> Result<Option<SseEvent>, ClientError> {
        loop {
            if let Some(event) = self.parser.next_event() {
                return Ok(Some(event));
            }
            match self.response.chunk().await {
                Ok(Some(bytes)) => self.parser.push(&bytes),
                Ok(None) => return Ok(None),
                Err(e) => {
                    return Err(ClientError::Unreachable {
                        server: self.response.url().origin().ascii_serialization(),
                        reason: root_cause(&e),
                    });
                }
            }
        }
    }
}
