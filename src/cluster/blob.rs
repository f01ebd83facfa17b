//! Large values between nodes: content-addressed blobs, fetched in chunks.
//!
//! ractor_cluster kills a whole link on a frame over its inbound limit
//! (16 MiB), so a value whose encoding exceeds [`INLINE_MAX`] never travels
//! inline: the sending node keeps its bytes under their BLAKE3 hash (fast enough
//! not to be the bottleneck of a transfer, unlike SHA-256 at ~400 MB/s) and sends a
//! [`BlobRef`]; the node that needs the value fetches it in [`CHUNK`]-sized
//! pieces from the holder's agent, [`PARALLEL`] in flight, checks the hash,
//! and caches it.
//!
//! Bytes are the common large value (files, tensors' raw data, model
//! artifacts), so a `Value::Bytes` blob holds the bytes themselves rather
//! than their encoding: packing moves the vector into the cache and
//! unpacking a fetched result moves it into the value, with no 100 MB copy
//! on either side. Chunks travel as raw bytes too ([`ChunkBytes`]), not
//! through bincode.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bincode::{Decode, Encode};
use futures::StreamExt;
use ractor::BytesConvertable;

use super::agent::{AgentMsg, agent_of};
use super::wire::Wire;
use crate::value::Value;

/// Largest encoded value sent inline: 1 MiB.
pub const INLINE_MAX: usize = 1 << 20;
/// Bytes per fetched chunk: 1 MiB. Far under the 16 MiB frame limit, and
/// small enough that the allocator reuses chunk buffers: with 4–8 MiB chunks
/// most of a transfer's time went to the kernel zeroing fresh pages.
pub const CHUNK: usize = 1 << 20;
/// Bytes of blobs a node keeps (held for peers, and fetched): 1 GiB.
const CACHE_BYTES: usize = 1 << 30;
/// Chunks fetched at once.
const PARALLEL: usize = 8;
/// How long one chunk may take.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(30);

/// A value held by another node.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct BlobRef {
    /// BLAKE3 hash of the blob's bytes.
    pub hash: [u8; 32],
    /// Size of the blob in bytes.
    pub size: u64,
    /// The node holding it.
    pub holder: String,
    /// The blob is a `Value::Bytes`'s bytes, not an encoded value.
    pub raw: bool,
}

/// A value on the wire.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub enum Payload {
    /// Small enough to travel in the message.
    Inline(Value),
    /// Fetch it from the holder.
    Blob(BlobRef),
}

/// A request for part of a blob.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct ChunkRequest {
    /// The blob.
    pub hash: [u8; 32],
    /// First byte.
    pub offset: u64,
    /// Bytes wanted.
    pub len: u32,
}

/// Part of a blob, or why not; on the wire, the bytes followed by one tag
/// byte (0: the bytes are the chunk, 1: they are an error message), so a
/// megabyte is neither encoded nor copied to be decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkBytes(pub Result<Vec<u8>, String>);

impl BytesConvertable for ChunkBytes {
    fn into_bytes(self) -> Vec<u8> {
        let (mut bytes, tag) = match self.0 {
            Ok(data) => (data, 0),
            Err(why) => (why.into_bytes(), 1),
        };
        bytes.push(tag);
        bytes
    }

    fn from_bytes(mut bytes: Vec<u8>) -> Self {
        ChunkBytes(match bytes.pop() {
            Some(0) => Ok(bytes),
            Some(1) => Err(String::from_utf8_lossy(&bytes).into_owned()),
            _ => {
                metrics::counter!("symphony_wire_decode_errors_total").increment(1);
                Err("undecodable chunk".to_owned())
            }
        })
    }
}

/// A blob's hash and bytes.
type Held = ([u8; 32], Arc<Vec<u8>>);

/// The node's blob cache, shared by its agent and placement.
#[derive(Debug)]
pub struct Blobs {
    me: String,
    /// Oldest first; evicted from the front beyond `CACHE_BYTES`.
    held: Mutex<VecDeque<Held>>,
}

impl Blobs {
    /// An empty cache for node `me`.
    pub fn new(me: &str) -> Blobs {
        Blobs {
            me: me.to_owned(),
            held: Mutex::new(VecDeque::new()),
        }
    }

    fn keep(&self, hash: [u8; 32], bytes: Arc<Vec<u8>>) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held.iter().any(|(h, _)| *h == hash) {
            return;
        }
        held.push_back((hash, bytes));
        let mut total: usize = held.iter().map(|(_, b)| b.len()).sum();
        while total > CACHE_BYTES && held.len() > 1 {
            if let Some((_, b)) = held.pop_front() {
                total -= b.len();
            }
        }
    }

    fn get(&self, hash: &[u8; 32]) -> Option<Arc<Vec<u8>>> {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.iter()
            .find(|(h, _)| h == hash)
            .map(|(_, b)| Arc::clone(b))
    }

    /// A value ready to send: inline when small, else kept here as a blob.
    pub fn pack(&self, value: Value) -> Payload {
        let (bytes, raw) = match value {
            Value::Bytes(bytes) if bytes.len() > INLINE_MAX => (bytes, true),
            Value::Bytes(_) => return Payload::Inline(value),
            value if encoded_len(&value) <= INLINE_MAX => return Payload::Inline(value),
            value => (
                bincode::encode_to_vec(&value, bincode::config::standard()).expect("values encode"),
                false,
            ),
        };
        let hash: [u8; 32] = blake3::hash(&bytes).into();
        let size = bytes.len() as u64;
        self.keep(hash, Arc::new(bytes));
        Payload::Blob(BlobRef {
            hash,
            size,
            holder: self.me.clone(),
            raw,
        })
    }

    /// Serves part of a blob held here.
    pub fn chunk(&self, req: &ChunkRequest) -> ChunkBytes {
        let data = match self.get(&req.hash) {
            None => Err("no such blob here".to_owned()),
            Some(bytes) => {
                let start = (req.offset as usize).min(bytes.len());
                let end = start.saturating_add(req.len as usize).min(bytes.len());
                metrics::counter!("symphony_blob_bytes_total", "direction" => "sent")
                    .increment((end - start) as u64);
                // Room for the tag byte: no reallocation on the way out.
                let mut chunk = Vec::with_capacity(end - start + 1);
                chunk.extend_from_slice(&bytes[start..end]);
                Ok(chunk)
            }
        };
        ChunkBytes(data)
    }

    /// The value of a payload, fetching it from its holder if need be.
    ///
    /// `keep` caches a fetched blob here for the next task that needs it
    /// (an input); a result going into its run is not kept, so its bytes
    /// move into the value instead of being copied out of the cache.
    ///
    /// # Errors
    /// When the holder is unreachable, a chunk does not arrive, or the bytes
    /// do not match their hash.
    pub async fn unpack(&self, payload: Payload, keep: bool) -> Result<Value, String> {
        let blob = match payload {
            Payload::Inline(v) => return Ok(v),
            Payload::Blob(blob) => blob,
        };
        let bytes = match self.get(&blob.hash) {
            Some(held) => Arc::unwrap_or_clone(held),
            None => {
                let bytes = fetch(&blob).await?;
                if keep {
                    self.keep(blob.hash, Arc::new(bytes.clone()));
                }
                bytes
            }
        };
        if blob.raw {
            return Ok(Value::Bytes(bytes));
        }
        bincode::decode_from_slice(&bytes, bincode::config::standard())
            .map(|(v, _)| v)
            .map_err(|e| format!("blob does not decode: {e}"))
    }
}

/// The size of a value's encoding, without encoding it.
fn encoded_len(value: &Value) -> usize {
    let mut size = bincode::enc::write::SizeWriter::default();
    bincode::encode_into_writer(value, &mut size, bincode::config::standard())
        .expect("values encode");
    size.bytes_written
}

/// Fetches a whole blob from its holder, `PARALLEL` chunks in flight, and
/// checks its hash.
async fn fetch(blob: &BlobRef) -> Result<Vec<u8>, String> {
    let agent = agent_of(&blob.holder)
        .ok_or_else(|| format!("node {} holding the value is unreachable", blob.holder))?;
    let size = usize::try_from(blob.size).map_err(|_| "the blob is too large".to_owned())?;
    // Filled in order (the stream yields chunks in order), never zeroed
    // first: touching 100 MB twice shows in the transfer rate.
    let mut data = Vec::new();
    data.try_reserve_exact(size)
        .map_err(|_| format!("no memory for a blob of {size} bytes"))?;
    let mut chunks = futures::stream::iter((0..size).step_by(CHUNK))
        .map(|offset| {
            let agent = agent.clone();
            let req = ChunkRequest {
                hash: blob.hash,
                offset: offset as u64,
                len: CHUNK.min(size - offset) as u32,
            };
            async move {
                ractor::call_t!(
                    agent,
                    AgentMsg::Fetch,
                    CHUNK_TIMEOUT.as_millis() as u64,
                    Wire::new(req)
                )
                .map_err(|e| format!("fetching a chunk failed: {e}"))?
                .0
                .map(|bytes| (offset, bytes))
            }
        })
        .buffered(PARALLEL);
    while let Some(part) = chunks.next().await {
        let (offset, bytes) = part?;
        if offset != data.len() || offset + bytes.len() > size {
            return Err("a chunk does not fit the blob".into());
        }
        data.extend_from_slice(&bytes);
    }
    if data.len() != size {
        return Err("the blob arrived short".into());
    }
    let hash: [u8; 32] = blake3::hash(&data).into();
    if hash != blob.hash {
        return Err("the fetched value does not match its hash".into());
    }
    metrics::counter!("symphony_blob_bytes_total", "direction" => "received")
        .increment(size as u64);
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_values_travel_inline_and_large_ones_as_blobs_served_in_chunks() {
        let blobs = Blobs::new("me");
        assert!(matches!(
            blobs.pack(Value::from("small")),
            Payload::Inline(_)
        ));
        let big = Value::Bytes(vec![7; 3 * INLINE_MAX]);
        let Payload::Blob(blob) = blobs.pack(big) else {
            panic!("large values are blobs");
        };
        assert_eq!(blob.holder, "me");
        let first = blobs.chunk(&ChunkRequest {
            hash: blob.hash,
            offset: 0,
            len: 10,
        });
        assert_eq!(first.0.unwrap().len(), 10);
        let past = blobs.chunk(&ChunkRequest {
            hash: blob.hash,
            offset: blob.size + 5,
            len: 10,
        });
        assert!(past.0.unwrap().is_empty());
        assert!(
            blobs
                .chunk(&ChunkRequest {
                    hash: [0; 32],
                    offset: 0,
                    len: 1
                })
                .0
                .is_err()
        );
    }

    #[test]
    fn chunks_round_trip_as_raw_bytes_and_garbage_is_an_error() {
        let ok = ChunkBytes(Ok(vec![1, 2, 3]));
        assert_eq!(ChunkBytes::from_bytes(ok.clone().into_bytes()), ok);
        let err = ChunkBytes(Err("no such blob here".into()));
        assert_eq!(ChunkBytes::from_bytes(err.clone().into_bytes()), err);
        assert!(ChunkBytes::from_bytes(Vec::new()).0.is_err());
        assert!(ChunkBytes::from_bytes(vec![1, 2, 9]).0.is_err());
    }

    #[tokio::test]
    async fn bytes_blobs_hold_the_bytes_and_other_values_their_encoding() {
        let blobs = Blobs::new("me");
        let bytes = Value::Bytes((0..3 * INLINE_MAX).map(|i| i as u8).collect());
        let Payload::Blob(raw) = blobs.pack(bytes.clone()) else {
            panic!("large bytes are blobs");
        };
        assert!(raw.raw);
        assert_eq!(raw.size, 3 * INLINE_MAX as u64);
        let list = Value::List(vec![Value::from("x".repeat(1000)); 2000]);
        let Payload::Blob(encoded) = blobs.pack(list.clone()) else {
            panic!("large lists are blobs");
        };
        assert!(!encoded.raw);
        // Held here, so unpacking needs no peer.
        assert_eq!(
            blobs.unpack(Payload::Blob(raw), false).await.unwrap(),
            bytes
        );
        assert_eq!(
            blobs.unpack(Payload::Blob(encoded), false).await.unwrap(),
            list
        );
    }
}
