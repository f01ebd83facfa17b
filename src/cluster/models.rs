//! The model registry across the cluster: records spread by anti-entropy
//! over heartbeats, artifacts fetched on demand from the nodes that hold
//! them.
//!
//! Every ping carries a digest of the sender's registry records and the
//! checksums of the artifacts it holds. A node whose digest differs from a
//! peer's sends that peer all its records (in batches, at most once a
//! second for the same pair of digests); merging is order-independent and
//! idempotent ([`Catalog::merge`](crate::registry::Catalog::merge)), so two
//! nodes that hear each other converge within a few heartbeats, whatever
//! happened while they did not. A node whose registry writes go through
//! the replicated log takes no part: the log alone brings it every record.
//!
//! A node missing an artifact asks a holder (an up member that advertises
//! it) for its manifest, the BLAKE3 hash of every 1 MiB chunk, then fetches
//! the chunks through [`fetch_chunks`], spread over the holders; a chunk
//! that fails its check is refused and fetched again, and the registry
//! checks the whole against its SHA-256 before keeping it.
//!
//! This module owns the cluster's side of the registry; the records, the
//! cache and the checks are the registry's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bincode::{Decode, Encode};
use futures::future::BoxFuture;
use tracing::{debug, info, warn};

use super::agent::{AgentMsg, agent_of};
use super::blob::{CHUNK, CHUNK_TIMEOUT, ChunkBytes, ChunkPlan, ChunkRequest, fetch_chunks};
use super::nemesis::Nemesis;
use super::view::ClusterView;
use super::wire::{Heartbeat, Wire};
use crate::registry::{ArtifactSource, Record, Registry, is_checksum};

/// Records per sync message: keeps every frame far under the 16 MiB limit.
const SYNC_BATCH: usize = 200;
/// How long to wait before sending the same records to the same peer again.
const RESYNC_AFTER: Duration = Duration::from_secs(1);
/// How long a fetch waits for a holder of the artifact to be heard of.
const HOLDER_WAIT: Duration = Duration::from_secs(2);
/// How long a holder may take to answer for a manifest (it reads and hashes
/// the whole artifact).
const MANIFEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Asks a holder for the manifest of an artifact.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct ManifestRequest {
    /// The artifact's SHA-256.
    pub checksum: [u8; 32],
}

/// What a fetcher needs to fetch and check an artifact chunk by chunk.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Manifest {
    /// The artifact's size in bytes.
    pub size: u64,
    /// BLAKE3 of each 1 MiB chunk, in order.
    pub chunks: Vec<[u8; 32]>,
}

/// The answer to a [`ManifestRequest`]: the manifest, or why not.
pub type ManifestReply = Wire<Result<Manifest, String>>;

/// The registry of one node as its cluster sees it: what its heartbeats
/// say, what it sends and merges, what it serves to peers.
#[derive(Debug)]
pub struct ClusterRegistry {
    registry: Registry,
    me: String,
    /// Chaos: chunk replies still to corrupt (a testing aid).
    corrupt_chunks: AtomicU32,
    /// Per peer: (our digest, theirs) when we last sent records, and when.
    sent: Mutex<HashMap<String, (u64, u64, Instant)>>,
    /// What records sent to peers go through.
    nemesis: Arc<Nemesis>,
}

impl ClusterRegistry {
    /// The cluster's side of `registry` on node `me`; the first
    /// `corrupt_chunks` artifact chunks it serves are corrupted on purpose
    /// (0 in production).
    pub fn new(registry: Registry, me: &str, corrupt_chunks: u32) -> ClusterRegistry {
        ClusterRegistry {
            registry,
            me: me.to_owned(),
            corrupt_chunks: AtomicU32::new(corrupt_chunks),
            sent: Mutex::new(HashMap::new()),
            nemesis: Arc::new(Nemesis::default()),
        }
    }

    /// The same, sending records to peers through `nemesis`.
    pub fn with_nemesis(mut self, nemesis: Arc<Nemesis>) -> ClusterRegistry {
        self.nemesis = nemesis;
        self
    }

    /// The registry's digest and the artifacts held here, for a ping.
    pub fn advertised(&self) -> (u64, Vec<[u8; 32]>) {
        let held = self
            .registry
            .held_artifacts()
            .iter()
            .filter_map(|hex| checksum_bytes(hex))
            .collect();
        (self.registry.digest(), held)
    }

    /// A peer's ping arrived: when its registry differs from ours, send it
    /// our records (it merges them; its own records come back the same way
    /// when it hears our ping).
    pub fn heard(&self, ping: &Heartbeat) {
        // A registry in a replicated log gets records only through the log.
        if ping.from == self.me || self.registry.is_replicated() {
            return;
        }
        let ours = self.registry.digest();
        if ours == ping.registry_digest {
            return;
        }
        {
            let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((o, t, at)) = sent.get(&ping.from) {
                if (*o, *t) == (ours, ping.registry_digest) && at.elapsed() < RESYNC_AFTER {
                    return;
                }
            }
            sent.insert(
                ping.from.clone(),
                (ours, ping.registry_digest, Instant::now()),
            );
        }
        let Some(peer) = agent_of(&ping.from) else {
            return;
        };
        let records = self.registry.records();
        debug!(peer = %ping.from, records = records.len(), "Sending registry records to a peer that differs.");
        for batch in records.chunks(SYNC_BATCH) {
            let msg = AgentMsg::RegistrySync(Wire::new(batch.to_vec()));
            let _ = self.nemesis.cast(&ping.from, &peer, msg);
        }
    }

    /// Merges records a peer sent, off the caller's thread (every new
    /// record is flushed to disk).
    pub fn merge(&self, records: Vec<Record>) {
        let registry = self.registry.clone();
        tokio::task::spawn_blocking(move || {
            let mut changed = 0;
            for record in records {
                match registry.merge(record) {
                    Ok(merged) if merged.changed => changed += 1,
                    Ok(_) => {}
                    Err(e) => {
                        metrics::counter!("symphony_registry_sync_errors_total").increment(1);
                        warn!(error = %e, "Refused a registry record from a peer.");
                    }
                }
            }
            if changed > 0 {
                info!(records = changed, "Merged registry records from a peer.");
            }
        });
    }

    /// The manifest of an artifact held here (reads and checks it whole).
    ///
    /// # Errors
    /// When it is not here or is corrupt.
    pub async fn manifest(&self, req: Result<ManifestRequest, String>) -> ManifestReply {
        let registry = self.registry.clone();
        let result = async move {
            let checksum = to_hex(&req?.checksum);
            tokio::task::spawn_blocking(move || {
                let bytes = registry.artifact(&checksum).map_err(|e| e.to_string())?;
                Ok(Manifest {
                    size: bytes.len() as u64,
                    chunks: ChunkPlan::hashes_of(&bytes),
                })
            })
            .await
            .map_err(|e| format!("reading the artifact failed: {e}"))?
        };
        Wire::new(result.await)
    }

    /// A chunk of an artifact held here (corrupted while chaos says so).
    pub async fn chunk(&self, req: Result<ChunkRequest, String>) -> ChunkBytes {
        let req = match req {
            Ok(req) => req,
            Err(e) => return ChunkBytes(Err(e)),
        };
        let registry = self.registry.clone();
        let checksum = to_hex(&req.hash);
        let len = (req.len as usize).min(CHUNK);
        let read = tokio::task::spawn_blocking(move || {
            registry
                .artifact_range(&checksum, req.offset, len)
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| format!("reading the artifact failed: {e}"))
        .and_then(|r| r);
        let read = read.map(|mut bytes| {
            let corrupt = self
                .corrupt_chunks
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok();
            if corrupt && !bytes.is_empty() {
                warn!(
                    offset = req.offset,
                    "Chaos: corrupting an artifact chunk on purpose."
                );
                bytes[0] ^= 0xff;
            }
            metrics::counter!("symphony_artifact_bytes_total", "direction" => "sent")
                .increment(bytes.len() as u64);
            bytes
        });
        ChunkBytes(read)
    }
}

/// Fetches artifacts from the members of the cluster that hold them: the
/// registry's [`ArtifactSource`] on a node in a cluster.
#[derive(Debug, Clone)]
pub struct ClusterArtifacts {
    me: String,
    view: ClusterView,
}

impl ClusterArtifacts {
    /// Fetches for node `me`, finding holders in `view`.
    pub fn new(me: &str, view: ClusterView) -> ClusterArtifacts {
        ClusterArtifacts {
            me: me.to_owned(),
            view,
        }
    }

    async fn fetch_from_holders(&self, checksum: &str) -> Result<Vec<u8>, String> {
        let hash = checksum_bytes(checksum)
            .ok_or_else(|| format!("\"{checksum}\" is not a sha256 checksum"))?;
        // A record can arrive before the heartbeat that names the holders
        // of its artifact: give them a few heartbeats to be heard of.
        let deadline = Instant::now() + HOLDER_WAIT;
        let holders = loop {
            let holders: Vec<_> = self
                .view
                .holders(checksum)
                .into_iter()
                .filter(|h| *h != self.me)
                .filter_map(|h| agent_of(&h).map(|a| (h, a)))
                .collect();
            if !holders.is_empty() || Instant::now() >= deadline {
                break holders;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if holders.is_empty() {
            return Err("no reachable node holds it".to_owned());
        }
        let mut failures = Vec::new();
        let mut manifest = None;
        let nemesis = self.view.nemesis();
        for (name, agent) in &holders {
            if let Err(e) = nemesis.admit(name).await {
                failures.push(e);
                continue;
            }
            let asked = ractor::call_t!(
                agent,
                AgentMsg::ArtifactManifest,
                MANIFEST_TIMEOUT.as_millis() as u64,
                Wire::new(ManifestRequest { checksum: hash })
            );
            match asked
                .map_err(|e| e.to_string())
                .and_then(|w| w.0.and_then(|r| r))
            {
                Ok(m) => {
                    manifest = Some(m);
                    break;
                }
                Err(e) => failures.push(format!("{name}: {e}")),
            }
        }
        let Some(manifest) = manifest else {
            return Err(format!(
                "no holder sent its manifest ({})",
                failures.join("; ")
            ));
        };
        let plan = ChunkPlan::new(manifest.size, Some(manifest.chunks));
        let holders = &holders;
        let data = fetch_chunks(&plan, |offset, len, attempt| {
            // Chunks spread over the holders; a retry asks the next one.
            let index = (offset / CHUNK as u64 + u64::from(attempt)) as usize % holders.len();
            let (name, agent) = holders[index].clone();
            async move {
                nemesis.admit(&name).await?;
                let req = ChunkRequest { hash, offset, len };
                ractor::call_t!(
                    agent,
                    AgentMsg::ArtifactChunk,
                    CHUNK_TIMEOUT.as_millis() as u64,
                    Wire::new(req)
                )
                .map_err(|e| format!("{name}: {e}"))?
                .0
                .map_err(|e| format!("{name}: {e}"))
            }
        })
        .await
        .map_err(|e| e.to_string())?;
        metrics::counter!("symphony_artifact_bytes_total", "direction" => "received")
            .increment(data.len() as u64);
        Ok(data)
    }
}

impl ArtifactSource for ClusterArtifacts {
    fn fetch<'a>(&'a self, checksum: &'a str) -> BoxFuture<'a, Result<Vec<u8>, String>> {
        Box::pin(self.fetch_from_holders(checksum))
    }
}

/// Hex SHA-256 → its 32 bytes.
fn checksum_bytes(hex: &str) -> Option<[u8; 32]> {
    if !is_checksum(hex) {
        return None;
    }
    let mut out = [0; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// 32 bytes → lower-case hex.
pub(crate) fn to_hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_round_trip_between_hex_and_bytes() {
        let hex = crate::registry::sha256_hex(b"x");
        let bytes = checksum_bytes(&hex).unwrap();
        assert_eq!(to_hex(&bytes), hex);
        assert_eq!(checksum_bytes("abc"), None);
    }

    #[tokio::test]
    async fn a_holder_serves_manifests_and_chunks_and_chaos_corrupts_the_first_ones() {
        let registry = Registry::in_memory("a");
        let bytes: Vec<u8> = (0..CHUNK + 10).map(|i| i as u8).collect();
        let hex = registry.put_artifact(&bytes).unwrap();
        let hash = checksum_bytes(&hex).unwrap();
        let holder = ClusterRegistry::new(registry, "a", 1);
        let manifest = holder
            .manifest(Ok(ManifestRequest { checksum: hash }))
            .await
            .0
            .unwrap()
            .unwrap();
        assert_eq!(manifest.size, bytes.len() as u64);
        assert_eq!(manifest.chunks, ChunkPlan::hashes_of(&bytes));
        let plan = ChunkPlan::new(manifest.size, Some(manifest.chunks));
        let holder = &holder;
        let data = fetch_chunks(&plan, |offset, len, _| async move {
            holder.chunk(Ok(ChunkRequest { hash, offset, len })).await.0
        })
        .await
        .unwrap();
        assert_eq!(data, bytes);
        assert_eq!(holder.corrupt_chunks.load(Ordering::Relaxed), 0);
        let missing = holder
            .manifest(Ok(ManifestRequest { checksum: [0; 32] }))
            .await;
        assert!(missing.0.unwrap().unwrap_err().contains("not on this node"));
    }
}
