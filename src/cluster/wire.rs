//! The wire codec: every payload that crosses nodes is bincode through
//! [`Wire`], and the structs it carries.
//!
//! ractor_cluster hands us a frame's bytes and wants a value back, with no
//! way to say "this is garbage". [`Wire`] keeps the decode error instead, so
//! the receiver logs it, counts it (`symphony_wire_decode_errors_total`) and
//! answers with an error where an answer is expected: never a panic, never a
//! silent hang. Structs here are only ever extended at the end, never
//! reordered, so mixed versions of nodes keep talking.

use bincode::{Decode, Encode};
use ractor::BytesConvertable;

use super::blob::Payload;
use crate::engine::TaskKey;
use crate::engine::remote::Assignment;
use crate::executor::TaskError;

/// A payload as it came off the wire: the value, or why it did not decode.
#[derive(Debug, Clone, PartialEq)]
pub struct Wire<T>(pub Result<T, String>);

impl<T> Wire<T> {
    /// Wraps a value to send.
    pub fn new(value: T) -> Self {
        Wire(Ok(value))
    }
}

impl<T: Encode + Decode<()>> BytesConvertable for Wire<T> {
    fn into_bytes(self) -> Vec<u8> {
        match self.0 {
            Ok(value) => {
                bincode::encode_to_vec(value, crate::codec::config()).expect("wire values encode")
            }
            // Forwarding a frame that never decoded: send nothing decodable.
            Err(_) => Vec::new(),
        }
    }

    fn from_bytes(bytes: Vec<u8>) -> Self {
        match bincode::decode_from_slice(&bytes, crate::codec::config()) {
            Ok((value, used)) if used == bytes.len() => Wire(Ok(value)),
            Ok(_) => Wire(Err(decode_error("trailing bytes after the message"))),
            Err(e) => Wire(Err(decode_error(&e.to_string()))),
        }
    }
}

fn decode_error(why: &str) -> String {
    metrics::counter!("symphony_wire_decode_errors_total").increment(1);
    tracing::warn!(error = why, "Dropped a frame that did not decode.");
    format!("undecodable frame: {why}")
}

/// A heartbeat, both ways: a ping carries the sender's state, the pong
/// echoes `seq` and `sent_us` so the pinger measures the round trip.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct Heartbeat {
    /// Sender's node name.
    pub from: String,
    /// Sequence number of the ping (echoed in the pong).
    pub seq: u64,
    /// Pinger's clock when sent, in µs (echoed in the pong).
    pub sent_us: u64,
    /// Sender's advertised cluster address.
    pub addr: String,
    /// Sender's labels.
    pub labels: Vec<(String, String)>,
    /// Sender's slots.
    pub slots: u32,
    /// Attempts running or queued on the sender.
    pub load: u32,
    /// Digest of the sender's model registry records (0 in a pong): a
    /// differing digest starts a registry sync.
    pub registry_digest: u64,
    /// SHA-256 of every model artifact the sender holds (empty in a pong).
    pub artifacts: Vec<[u8; 32]>,
}

/// The result of an assigned attempt, going home to the run's owner.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct Finished {
    /// The run.
    pub run_id: String,
    /// Which task or item.
    pub key: TaskKey,
    /// The attempt (fencing token).
    pub attempt: u32,
    /// Output (inline, or a blob to fetch) or error.
    pub result: Result<Payload, TaskError>,
    /// The node that ran it (where the acknowledgement goes).
    pub from: String,
    /// Delivery number on that node; the owner acknowledges it, and until
    /// then the worker sends the result again whenever it hears the owner.
    pub delivery: u64,
}

/// The owner got a result (see [`Finished::delivery`]).
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct Delivered {
    /// The acknowledged delivery number.
    pub delivery: u64,
}

/// An assignment on the wire: its input travels as a [`Payload`] (the
/// assignment's own `input` is null then).
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct Assigned {
    /// The assignment.
    pub assignment: Assignment,
    /// Its input.
    pub input: Payload,
}

/// Stop an assigned attempt (timeout, cancellation, sibling failure).
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct StopAttempt {
    /// The run.
    pub run_id: String,
    /// Which task or item.
    pub key: TaskKey,
    /// The attempt.
    pub attempt: u32,
}

/// A request for a model replica on another node: the version (so the
/// receiver needs no registry lookup) and the request.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct InferRequest {
    /// The version to run.
    pub version: crate::registry::ModelVersion,
    /// The request: a map of input name to tensor or nested list.
    pub request: crate::value::Value,
}

/// The answer to an [`InferRequest`].
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct Inferred {
    /// The model's outputs, or why not.
    pub result: Result<crate::value::Value, TaskError>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_truncated_frames_decode_to_errors_not_panics() {
        let good = Wire::new(StopAttempt {
            run_id: "r".into(),
            key: TaskKey::task(1),
            attempt: 2,
        })
        .into_bytes();
        let back = Wire::<StopAttempt>::from_bytes(good.clone());
        assert_eq!(back.0.unwrap().attempt, 2);
        for cut in 0..good.len() {
            assert!(
                Wire::<StopAttempt>::from_bytes(good[..cut].to_vec())
                    .0
                    .is_err()
            );
        }
        let mut long = good;
        long.push(0);
        assert!(Wire::<StopAttempt>::from_bytes(long).0.is_err());
        assert!(Wire::<Finished>::from_bytes(vec![0xff; 64]).0.is_err());
    }

    /// A peer's frame holding a value nested a million levels (`Ok`, then
    /// "a list of one" a million times), or claiming a list of 4 billion
    /// items: each decodes to an error, without recursing or allocating
    /// what the frame claims.
    #[test]
    fn hostile_frames_decode_to_errors() {
        let mut deep = vec![0u8];
        for _ in 0..1_000_000 {
            deep.extend([6, 1]);
        }
        deep.push(0);
        let err = Wire::<Inferred>::from_bytes(deep).0.unwrap_err();
        assert!(err.contains(crate::value::TOO_DEEP), "{err}");

        // `Ok`, a list, a length of u32::MAX in bincode's varint.
        let huge = vec![0u8, 6, 252, 0xff, 0xff, 0xff, 0xff];
        assert!(Wire::<Inferred>::from_bytes(huge).0.is_err());
    }
}

/// What a [`RaftRpc`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum RaftKind {
    /// openraft's `AppendEntries`.
    AppendEntries,
    /// openraft's `Vote`.
    Vote,
    /// openraft's `InstallSnapshot` (one chunk).
    InstallSnapshot,
    /// A command for the leader to commit (from a node that is not it).
    Write,
}

impl RaftKind {
    /// Its name, for metrics and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            RaftKind::AppendEntries => "append_entries",
            RaftKind::Vote => "vote",
            RaftKind::InstallSnapshot => "install_snapshot",
            RaftKind::Write => "write",
        }
    }
}

/// A Raft message between nodes. `body` is the openraft request (or the
/// command, for `Write`) in bincode's serde encoding: openraft's types are
/// serde types.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct RaftRpc {
    /// Sender's node name.
    pub from: String,
    /// What is asked.
    pub kind: RaftKind,
    /// The encoded request.
    pub body: Vec<u8>,
}

/// The answer to a [`RaftRpc`]: the encoded openraft response, or why
/// there is none.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct RaftReply(pub Result<Vec<u8>, String>);
