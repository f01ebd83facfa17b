//! Large values between nodes: content-addressed blobs, fetched in chunks.
//!
//! ractor_cluster kills a whole link on a frame over its inbound limit
//! (16 MiB), so a value whose encoding exceeds [`INLINE_MAX`] never travels
//! inline: the sending node keeps its bytes under their BLAKE3 hash (fast enough
//! not to be the bottleneck of a transfer, unlike SHA-256 at ~400 MB/s) and sends a
//! [`BlobRef`]; the node that needs the value fetches it in [`CHUNK`]-sized
//! pieces from the holder's agent, checks the hash, and caches it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bincode::{Decode, Encode};

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
    /// BLAKE3 hash of the encoded value.
    pub hash: [u8; 32],
    /// Encoded size in bytes.
    pub size: u64,
    /// The node holding it.
    pub holder: String,
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

/// Part of a blob, or why not.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct Chunk {
    /// The bytes.
    pub data: Result<Vec<u8>, String>,
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
        let bytes =
            bincode::encode_to_vec(&value, bincode::config::standard()).expect("values encode");
        if bytes.len() <= INLINE_MAX {
            return Payload::Inline(value);
        }
        let hash: [u8; 32] = blake3::hash(&bytes).into();
        let size = bytes.len() as u64;
        self.keep(hash, Arc::new(bytes));
        Payload::Blob(BlobRef {
            hash,
            size,
            holder: self.me.clone(),
        })
    }

    /// Serves part of a blob held here.
    pub fn chunk(&self, req: &ChunkRequest) -> Chunk {
        let data = match self.get(&req.hash) {
            None => Err("no such blob here".to_owned()),
            Some(bytes) => {
                let start = (req.offset as usize).min(bytes.len());
                let end = start.saturating_add(req.len as usize).min(bytes.len());
                metrics::counter!("symphony_blob_bytes_total", "direction" => "sent")
                    .increment((end - start) as u64);
                Ok(bytes[start..end].to_vec())
            }
        };
        Chunk { data }
    }

    /// The value of a payload, fetching it from its holder if need be.
    ///
    /// # Errors
    /// When the holder is unreachable, a chunk does not arrive, or the bytes
    /// do not match their hash.
    pub async fn unpack(&self, payload: Payload) -> Result<Value, String> {
        let blob = match payload {
            Payload::Inline(v) => return Ok(v),
            Payload::Blob(blob) => blob,
        };
        let bytes = match self.get(&blob.hash) {
            Some(bytes) => bytes,
            None => {
                let bytes = Arc::new(fetch(&blob).await?);
                self.keep(blob.hash, Arc::clone(&bytes));
                bytes
            }
        };
        bincode::decode_from_slice(&bytes, bincode::config::standard())
            .map(|(v, _)| v)
            .map_err(|e| format!("blob does not decode: {e}"))
    }
}

/// Fetches a whole blob from its holder, `PARALLEL` chunks at a time, and
/// checks its hash.
async fn fetch(blob: &BlobRef) -> Result<Vec<u8>, String> {
    let agent = agent_of(&blob.holder)
        .ok_or_else(|| format!("node {} holding the value is unreachable", blob.holder))?;
    let size = blob.size as usize;
    // Filled in order (chunks of a group are joined in order), never zeroed
    // first: touching 100 MB twice shows in the transfer rate.
    let mut data = Vec::with_capacity(size);
    let offsets: Vec<usize> = (0..size).step_by(CHUNK).collect();
    for group in offsets.chunks(PARALLEL) {
        let calls = group.iter().map(|&offset| {
            let agent = agent.clone();
            let req = ChunkRequest {
                hash: blob.hash,
                offset: offset as u64,
                len: CHUNK.min(size - offset) as u32,
            };
            async move {
                let reply = ractor::call_t!(
                    agent,
                    AgentMsg::Fetch,
                    CHUNK_TIMEOUT.as_millis() as u64,
                    Wire::new(req)
                )
                .map_err(|e| format!("fetching a chunk failed: {e}"))?;
                let chunk = reply.0?;
                chunk.data.map(|d| (offset, d))
            }
        });
        for part in futures::future::join_all(calls).await {
            let (offset, bytes) = part?;
            if offset != data.len() || offset + bytes.len() > size {
                return Err("a chunk does not fit the blob".into());
            }
            data.extend_from_slice(&bytes);
        }
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
        assert_eq!(first.data.unwrap().len(), 10);
        let past = blobs.chunk(&ChunkRequest {
            hash: blob.hash,
            offset: blob.size + 5,
            len: 10,
        });
        assert!(past.data.unwrap().is_empty());
        assert!(
            blobs
                .chunk(&ChunkRequest {
                    hash: [0; 32],
                    offset: 0,
                    len: 1
                })
                .data
                .is_err()
        );
    }
}
