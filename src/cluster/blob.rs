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
use super::nemesis::Nemesis;
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
pub(crate) const CHUNK_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// What fetches from peers go through.
    nemesis: Arc<Nemesis>,
    /// Oldest first; evicted from the front beyond `CACHE_BYTES`.
    held: Mutex<VecDeque<Held>>,
}

impl Blobs {
    /// An empty cache for node `me`.
    pub fn new(me: &str) -> Blobs {
        Blobs {
            me: me.to_owned(),
            nemesis: Arc::new(Nemesis::default()),
            held: Mutex::new(VecDeque::new()),
        }
    }

    /// The same cache, fetching from peers through `nemesis`.
    pub fn with_nemesis(mut self, nemesis: Arc<Nemesis>) -> Blobs {
        self.nemesis = nemesis;
        self
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
                bincode::encode_to_vec(&value, crate::codec::config()).expect("values encode"),
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
                let bytes = fetch(&blob, &self.nemesis).await?;
                if keep {
                    self.keep(blob.hash, Arc::new(bytes.clone()));
                }
                bytes
            }
        };
        if blob.raw {
            return Ok(Value::Bytes(bytes));
        }
        bincode::decode_from_slice(&bytes, crate::codec::config())
            .map(|(v, _)| v)
            .map_err(|e| format!("blob does not decode: {e}"))
    }
}

/// The size of a value's encoding, without encoding it.
fn encoded_len(value: &Value) -> usize {
    let mut size = bincode::enc::write::SizeWriter::default();
    bincode::encode_into_writer(value, &mut size, crate::codec::config()).expect("values encode");
    size.bytes_written
}

/// Fetches a whole blob from its holder, `PARALLEL` chunks in flight, and
/// checks its hash.
async fn fetch(blob: &BlobRef, nemesis: &Nemesis) -> Result<Vec<u8>, String> {
    let agent = agent_of(&blob.holder)
        .ok_or_else(|| format!("node {} holding the value is unreachable", blob.holder))?;
    let plan = ChunkPlan::new(blob.size, None);
    let data = fetch_chunks(&plan, |offset, len, _attempt| {
        let agent = agent.clone();
        let req = ChunkRequest {
            hash: blob.hash,
            offset,
            len,
        };
        async move {
            nemesis.admit(&blob.holder).await?;
            ractor::call_t!(
                agent,
                AgentMsg::Fetch,
                CHUNK_TIMEOUT.as_millis() as u64,
                Wire::new(req)
            )
            .map_err(|e| format!("fetching a chunk failed: {e}"))?
            .0
        }
    })
    .await
    .map_err(|e| e.to_string())?;
    let hash: [u8; 32] = blake3::hash(&data).into();
    if hash != blob.hash {
        return Err("the fetched value does not match its hash".into());
    }
    metrics::counter!("symphony_blob_bytes_total", "direction" => "received")
        .increment(data.len() as u64);
    Ok(data)
}

/// How to fetch one content-addressed object in chunks: its size, and
/// optionally the BLAKE3 hash of every [`CHUNK`]-sized piece (a manifest),
/// against which each chunk is checked as it arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkPlan {
    /// Size of the object in bytes.
    pub size: u64,
    /// BLAKE3 of each chunk, in order; `None`: chunks are not checked one by
    /// one (the caller checks the whole).
    pub hashes: Option<Vec<[u8; 32]>>,
    /// Times one chunk is asked for before the fetch gives up (a chunk that
    /// fails its check or does not arrive is asked for again).
    pub attempts: u32,
}

impl ChunkPlan {
    /// A plan for `size` bytes, checked against `hashes` when given; with
    /// hashes a chunk is tried [`CHUNK_ATTEMPTS`] times, without them once.
    pub fn new(size: u64, hashes: Option<Vec<[u8; 32]>>) -> ChunkPlan {
        let attempts = if hashes.is_some() { CHUNK_ATTEMPTS } else { 1 };
        ChunkPlan {
            size,
            hashes,
            attempts,
        }
    }

    /// The BLAKE3 hash of every [`CHUNK`]-sized piece of `bytes`: what a
    /// holder puts in a manifest.
    pub fn hashes_of(bytes: &[u8]) -> Vec<[u8; 32]> {
        bytes
            .chunks(CHUNK)
            .map(|c| blake3::hash(c).into())
            .collect()
    }

    fn chunks(&self) -> u64 {
        self.size.div_ceil(CHUNK as u64)
    }
}

/// Times a chunk checked against a manifest is asked for before a fetch
/// gives up.
pub const CHUNK_ATTEMPTS: u32 = 5;

/// A chunked fetch failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkFetchError {
    /// The object does not fit in memory (or in `usize`).
    #[error("no memory for {0} bytes")]
    TooLarge(u64),
    /// The manifest does not describe an object of this size.
    #[error("the manifest lists {listed} chunks for {size} bytes, which take {needed}")]
    BadManifest {
        /// Size of the object.
        size: u64,
        /// Chunks in the manifest.
        listed: usize,
        /// Chunks the size takes.
        needed: u64,
    },
    /// A chunk did not arrive, every time it was asked for.
    #[error(
        "chunk {index} (bytes from {offset}) could not be fetched after {attempts} attempts: {last}"
    )]
    Unavailable {
        /// Its number.
        index: u64,
        /// Its first byte.
        offset: u64,
        /// How often it was asked for.
        attempts: u32,
        /// The last error.
        last: String,
    },
    /// A chunk failed its check every time it was asked for.
    #[error("chunk {index} (bytes from {offset}) was corrupt in each of {attempts} attempts")]
    Corrupt {
        /// Its number.
        index: u64,
        /// Its first byte.
        offset: u64,
        /// How often it was asked for.
        attempts: u32,
    },
    /// A chunk came back with the wrong length.
    #[error("chunk {index} has {got} bytes, expected {want}")]
    WrongLength {
        /// Its number.
        index: u64,
        /// Bytes received.
        got: usize,
        /// Bytes expected.
        want: usize,
    },
}

/// Fetches an object of `plan.size` bytes in [`CHUNK`]-sized pieces,
/// [`PARALLEL`] in flight, through `fetch_chunk(offset, len, attempt)`
/// (`attempt` counts from 0 for each chunk, so a source can ask another
/// holder the next time). With hashes in the plan, a chunk that does not
/// match is refused, counted (`symphony_artifact_chunks_refused_total`)
/// and asked for again, up to `plan.attempts` times. The caller checks the
/// whole object's hash.
///
/// Cancelling the future drops the chunks in flight.
///
/// # Errors
/// See [`ChunkFetchError`].
pub async fn fetch_chunks<F, Fut>(
    plan: &ChunkPlan,
    fetch_chunk: F,
) -> Result<Vec<u8>, ChunkFetchError>
where
    F: Fn(u64, u32, u32) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<u8>, String>>,
{
    let size = usize::try_from(plan.size).map_err(|_| ChunkFetchError::TooLarge(plan.size))?;
    if let Some(hashes) = &plan.hashes {
        if hashes.len() as u64 != plan.chunks() {
            return Err(ChunkFetchError::BadManifest {
                size: plan.size,
                listed: hashes.len(),
                needed: plan.chunks(),
            });
        }
    }
    // Filled in order (the stream yields chunks in order), never zeroed
    // first: touching 100 MB twice shows in the transfer rate.
    let mut data = Vec::new();
    data.try_reserve_exact(size)
        .map_err(|_| ChunkFetchError::TooLarge(plan.size))?;
    let fetch_chunk = &fetch_chunk;
    let attempts = plan.attempts.max(1);
    let mut chunks = futures::stream::iter((0..size).step_by(CHUNK).enumerate())
        .map(|(index, offset)| {
            let len = CHUNK.min(size - offset);
            let expected = plan.hashes.as_ref().map(|h| h[index]);
            let (index, offset) = (index as u64, offset as u64);
            async move {
                let mut last = None;
                for attempt in 0..attempts {
                    match fetch_chunk(offset, len as u32, attempt).await {
                        Err(e) => last = Some(e),
                        Ok(bytes) if expected.is_none() => return Ok(bytes),
                        Ok(bytes) => {
                            let hash: [u8; 32] = blake3::hash(&bytes).into();
                            if bytes.len() == len && Some(hash) == expected {
                                return Ok(bytes);
                            }
                            metrics::counter!("symphony_artifact_chunks_refused_total")
                                .increment(1);
                            tracing::warn!(
                                chunk = index,
                                offset,
                                attempt,
                                "Refused a corrupt chunk; asking again."
                            );
                        }
                    }
                }
                Err(match last {
                    // Every failure was a failed check.
                    None => ChunkFetchError::Corrupt {
                        index,
                        offset,
                        attempts,
                    },
                    Some(last) => ChunkFetchError::Unavailable {
                        index,
                        offset,
                        attempts,
                        last,
                    },
                })
            }
        })
        .buffered(PARALLEL);
    let mut index = 0;
    while let Some(part) = chunks.next().await {
        let bytes = part?;
        let want = CHUNK.min(size - data.len());
        if bytes.len() != want {
            return Err(ChunkFetchError::WrongLength {
                index,
                got: bytes.len(),
                want,
            });
        }
        data.extend_from_slice(&bytes);
        index += 1;
    }
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

    /// An object of `size` bytes, not all alike.
    fn object(size: usize) -> Vec<u8> {
        (0..size).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[tokio::test]
    async fn a_corrupt_chunk_is_refused_and_fetched_again() {
        let bytes = object(2 * CHUNK + 100);
        let plan = ChunkPlan::new(bytes.len() as u64, Some(ChunkPlan::hashes_of(&bytes)));
        let corrupted = std::sync::atomic::AtomicU32::new(0);
        let data = fetch_chunks(&plan, |offset, len, attempt| {
            let mut chunk = bytes[offset as usize..offset as usize + len as usize].to_vec();
            if offset == CHUNK as u64 && attempt == 0 {
                chunk[3] ^= 0xff;
                corrupted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            async move { Ok(chunk) }
        })
        .await
        .unwrap();
        assert_eq!(data, bytes);
        assert_eq!(corrupted.into_inner(), 1);
    }

    #[tokio::test]
    async fn a_chunk_corrupt_every_time_fails_the_fetch_clearly() {
        let bytes = object(CHUNK + 1);
        let plan = ChunkPlan::new(bytes.len() as u64, Some(ChunkPlan::hashes_of(&bytes)));
        let asked = std::sync::atomic::AtomicU32::new(0);
        let e = fetch_chunks(&plan, |offset, len, _| {
            let mut chunk = bytes[offset as usize..offset as usize + len as usize].to_vec();
            if offset > 0 {
                chunk[0] ^= 1;
                asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            async move { Ok(chunk) }
        })
        .await
        .unwrap_err();
        assert_eq!(
            e,
            ChunkFetchError::Corrupt {
                index: 1,
                offset: CHUNK as u64,
                attempts: CHUNK_ATTEMPTS
            }
        );
        assert_eq!(asked.into_inner(), CHUNK_ATTEMPTS);
        assert!(
            e.to_string().contains("corrupt in each of 5 attempts"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn without_a_manifest_chunks_are_taken_as_they_come_and_errors_end_the_fetch() {
        let bytes = object(CHUNK / 2);
        let plan = ChunkPlan::new(bytes.len() as u64, None);
        let data = fetch_chunks(&plan, |o, l, _| {
            let chunk = bytes[o as usize..(o + u64::from(l)) as usize].to_vec();
            async move { Ok(chunk) }
        })
        .await
        .unwrap();
        assert_eq!(data, bytes);
        let e = fetch_chunks(&plan, |_, _, _| async { Err("holder gone".to_owned()) })
            .await
            .unwrap_err();
        assert!(e.to_string().contains("holder gone"), "{e}");
        let short = fetch_chunks(&plan, |_, _, _| async { Ok(vec![1]) }).await;
        assert!(matches!(short, Err(ChunkFetchError::WrongLength { .. })));
        let bad = ChunkPlan::new(10, Some(Vec::new()));
        let e = fetch_chunks(&bad, |_, _, _| async { Ok(Vec::new()) }).await;
        assert!(matches!(e, Err(ChunkFetchError::BadManifest { .. })));
    }
}
