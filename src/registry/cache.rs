//! The node-local cache of artifacts fetched from other nodes, and how a
//! node gets an artifact it does not hold.
//!
//! Artifacts registered on this node are the originals, under
//! `artifacts/sha256/`, and are never evicted. Artifacts fetched from a peer
//! (through the [`ArtifactSource`] the cluster attaches) are verified
//! against their SHA-256 and kept under `artifacts/cache/sha256/` up to a
//! size cap; beyond it the least recently used are deleted. Recency lives in
//! memory and is rebuilt from the files' modification times at start (every
//! use touches the file).
//!
//! This module owns the cache and the registry's side of fetching; how
//! chunks travel between nodes is the cluster's business.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use futures::future::BoxFuture;
use tracing::{info, warn};

use super::artifacts::Artifacts;
use super::model::{Record, sha256_hex};
use super::{Registry, RegistryError};

/// Default size cap of the artifact cache: 2 GiB.
pub const DEFAULT_CACHE_BYTES: u64 = 2 << 30;

/// Where a node gets artifacts it does not hold: in a cluster, the nodes
/// that hold them.
pub trait ArtifactSource: Send + Sync + fmt::Debug {
    /// Fetches the artifact with hex SHA-256 `checksum`. The registry
    /// checks the bytes against the checksum before it keeps or uses them.
    ///
    /// # Errors
    /// When no node holds it or every holder failed, in words for the user.
    fn fetch<'a>(&'a self, checksum: &'a str) -> BoxFuture<'a, Result<Vec<u8>, String>>;
}

/// Recency bookkeeping of the cache: pure, no I/O.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Lru {
    /// Checksum → (size, last use).
    entries: HashMap<String, (u64, u64)>,
    /// The next use's number.
    clock: u64,
    /// Bytes of every entry.
    bytes: u64,
}

impl Lru {
    /// Adds (or refreshes) an entry, as used now.
    pub(crate) fn insert(&mut self, checksum: &str, size: u64) {
        self.remove(checksum);
        self.clock += 1;
        self.entries.insert(checksum.to_owned(), (size, self.clock));
        self.bytes += size;
    }

    /// Marks an entry as used now; false when there is none.
    pub(crate) fn touch(&mut self, checksum: &str) -> bool {
        self.clock += 1;
        match self.entries.get_mut(checksum) {
            Some((_, used)) => {
                *used = self.clock;
                true
            }
            None => false,
        }
    }

    /// Forgets an entry; its size if it was there.
    pub(crate) fn remove(&mut self, checksum: &str) -> Option<u64> {
        let (size, _) = self.entries.remove(checksum)?;
        self.bytes -= size;
        Some(size)
    }

    /// The entries to evict, least recently used first, so that what is
    /// left fits in `cap` bytes.
    pub(crate) fn victims(&self, cap: u64) -> Vec<String> {
        let mut by_age: Vec<(&String, &(u64, u64))> = self.entries.iter().collect();
        by_age.sort_by_key(|(_, (_, used))| *used);
        let mut bytes = self.bytes;
        let mut out = Vec::new();
        for (checksum, (size, _)) in by_age {
            if bytes <= cap {
                break;
            }
            bytes -= size;
            out.push(checksum.clone());
        }
        out
    }

    /// Bytes held.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Every checksum held.
    pub(crate) fn checksums(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }
}

/// The cache of fetched artifacts, and the source to fetch from.
pub(crate) struct Fetched {
    store: Artifacts,
    cap: AtomicU64,
    lru: Mutex<Lru>,
    source: OnceLock<Arc<dyn ArtifactSource>>,
}

impl fmt::Debug for Fetched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fetched")
            .field("store", &self.store)
            .field("cap", &self.cap)
            .field("bytes", &self.lock().bytes())
            .finish_non_exhaustive()
    }
}

impl Fetched {
    /// The cache under `dir/sha256/`, its recency rebuilt from the files'
    /// modification times.
    pub(crate) fn open(dir: &Path) -> Result<Fetched, RegistryError> {
        let store = Artifacts::open(dir)?;
        let mut files = store.list();
        files.sort_by_key(|(_, _, at)| *at);
        let mut lru = Lru::default();
        for (checksum, size, _) in files {
            lru.insert(&checksum, size);
        }
        Ok(Fetched::with(store, lru))
    }

    /// A cache in memory.
    pub(crate) fn memory() -> Fetched {
        Fetched::with(Artifacts::memory(), Lru::default())
    }

    fn with(store: Artifacts, lru: Lru) -> Fetched {
        let fetched = Fetched {
            store,
            cap: AtomicU64::new(DEFAULT_CACHE_BYTES),
            lru: Mutex::new(lru),
            source: OnceLock::new(),
        };
        fetched.evict();
        fetched
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        self.lru.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A cached artifact, checked; a corrupt copy is deleted and reported
    /// missing (it is fetched again).
    pub(crate) fn get(&self, checksum: &str) -> Result<Vec<u8>, RegistryError> {
        match self.store.get(checksum) {
            Ok(bytes) => {
                self.lock().touch(checksum);
                self.store.touch(checksum);
                Ok(bytes)
            }
            Err(RegistryError::CorruptArtifact { actual, .. }) => {
                warn!(checksum = %checksum, actual = %actual, "Deleted a corrupt cached artifact.");
                self.forget(checksum);
                Err(RegistryError::ArtifactMissing(checksum.to_owned()))
            }
            Err(e) => Err(e),
        }
    }

    /// Keeps `bytes`, already checked against `checksum`, evicting the least
    /// recently used others beyond the cap. An artifact larger than the
    /// whole cap is not kept.
    pub(crate) fn put(&self, checksum: &str, bytes: &[u8]) -> Result<(), RegistryError> {
        let size = bytes.len() as u64;
        let cap = self.cap.load(Ordering::Relaxed);
        if size > cap {
            warn!(checksum = %checksum, size, cap, "Artifact larger than the model cache; not cached.");
            return Ok(());
        }
        self.store.put(checksum, bytes)?;
        self.lock().insert(checksum, size);
        self.evict();
        Ok(())
    }

    fn forget(&self, checksum: &str) {
        let _ = self.store.remove(checksum);
        self.lock().remove(checksum);
        self.publish();
    }

    /// Deletes the least recently used artifacts beyond the cap.
    fn evict(&self) {
        let cap = self.cap.load(Ordering::Relaxed);
        let victims = {
            let mut lru = self.lock();
            let victims = lru.victims(cap);
            for v in &victims {
                lru.remove(v);
            }
            victims
        };
        for checksum in victims {
            if let Err(e) = self.store.remove(&checksum) {
                warn!(checksum = %checksum, error = %e, "Could not delete an evicted artifact.");
            }
            metrics::counter!("symphony_model_cache_evictions_total").increment(1);
            info!(checksum = %checksum, "Evicted an artifact from the model cache.");
        }
        self.publish();
    }

    fn publish(&self) {
        metrics::gauge!("symphony_model_cache_bytes").set(self.lock().bytes() as f64);
    }

    /// Whether `checksum` is cached.
    pub(crate) fn contains(&self, checksum: &str) -> bool {
        self.lock().entries.contains_key(checksum)
    }

    /// Up to `len` bytes of a cached artifact from `offset`, unchecked.
    pub(crate) fn read_range(
        &self,
        checksum: &str,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, RegistryError> {
        self.store.read_range(checksum, offset, len)
    }
}

impl Registry {
    /// Sets the size cap of the cache of fetched artifacts (default
    /// [`DEFAULT_CACHE_BYTES`]), evicting what no longer fits.
    pub fn set_cache_limit(&self, bytes: u64) {
        self.inner.fetched.cap.store(bytes, Ordering::Relaxed);
        self.inner.fetched.evict();
    }

    /// Bytes in the cache of fetched artifacts.
    pub fn cached_bytes(&self) -> u64 {
        self.inner.fetched.lock().bytes()
    }

    /// Whether artifact `checksum` is in the cache of fetched artifacts
    /// (not among this node's originals).
    pub fn is_cached(&self, checksum: &str) -> bool {
        self.inner.fetched.contains(checksum)
    }

    /// Where [`Registry::obtain_artifact`] fetches artifacts this node does
    /// not hold. Set once (later calls are ignored).
    pub fn attach_source(&self, source: Arc<dyn ArtifactSource>) {
        let _ = self.inner.fetched.source.set(source);
    }

    /// The checksums of every artifact this node holds, originals and
    /// cached, sorted.
    pub fn held_artifacts(&self) -> Vec<String> {
        let mut held: Vec<String> = self
            .inner
            .artifacts
            .list()
            .into_iter()
            .map(|(checksum, _, _)| checksum)
            .chain(self.inner.fetched.lock().checksums())
            .collect();
        held.sort_unstable();
        held.dedup();
        held
    }

    /// A digest of every record: two nodes with the same digest hold the
    /// same registry (what heartbeats compare).
    pub fn digest(&self) -> u64 {
        digest(&self.records())
    }

    /// Up to `len` bytes of artifact `checksum` from `offset`, original or
    /// cached, unchecked (for serving chunks to a peer, who checks them).
    ///
    /// # Errors
    /// [`RegistryError::ArtifactMissing`] when this node does not hold it,
    /// or a storage failure.
    pub fn artifact_range(
        &self,
        checksum: &str,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, RegistryError> {
        match self.inner.artifacts.read_range(checksum, offset, len) {
            Err(RegistryError::ArtifactMissing(_)) => {
                self.inner.fetched.read_range(checksum, offset, len)
            }
            other => other,
        }
    }

    /// The artifact `checksum`: this node's copy (a cache hit), or else one
    /// fetched from a node that holds it (a miss), checked against the
    /// checksum and cached. Runs its disk I/O on blocking threads.
    ///
    /// Cancelling it abandons the fetch; nothing half-fetched is kept.
    ///
    /// # Errors
    /// [`RegistryError::ArtifactMissing`] when this node does not hold it
    /// and has nowhere to fetch it from; [`RegistryError::Storage`] when the
    /// fetch failed (every holder, or the bytes did not match) or the disk
    /// did; [`RegistryError::CorruptArtifact`] for a corrupt original.
    pub async fn obtain_artifact(&self, checksum: &str) -> Result<Vec<u8>, RegistryError> {
        let (registry, sum) = (self.clone(), checksum.to_owned());
        match blocking(move || registry.artifact(&sum)).await {
            Ok(bytes) => {
                metrics::counter!("symphony_model_cache_hits_total").increment(1);
                return Ok(bytes);
            }
            Err(RegistryError::ArtifactMissing(_)) => {}
            Err(e) => return Err(e),
        }
        metrics::counter!("symphony_model_cache_misses_total").increment(1);
        let Some(source) = self.inner.fetched.source.get() else {
            return Err(RegistryError::ArtifactMissing(checksum.to_owned()));
        };
        let bytes = source
            .fetch(checksum)
            .await
            .map_err(|why| unavailable(checksum, &why))?;
        let (registry, sum) = (self.clone(), checksum.to_owned());
        blocking(move || {
            let actual = sha256_hex(&bytes);
            if actual != sum {
                let why = format!("the bytes fetched hash to {actual}");
                return Err(unavailable(&sum, &why));
            }
            registry.inner.fetched.put(&sum, &bytes)?;
            info!(checksum = %sum, size = bytes.len(), "Artifact fetched from another node.");
            Ok(bytes)
        })
        .await
    }
}

/// An artifact that could not be fetched.
fn unavailable(checksum: &str, why: &str) -> RegistryError {
    RegistryError::Storage(format!(
        "artifact sha256:{checksum} is not on this node and could not be fetched: {why}"
    ))
}

/// Runs `f` on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RegistryError> + Send + 'static,
) -> Result<T, RegistryError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RegistryError::Storage(format!("an artifact read failed: {e}")))?
}

/// The digest of a record set in [`Catalog::records`](super::Catalog::records)
/// order (which depends only on the set).
fn digest(records: &[Record]) -> u64 {
    let mut hasher = blake3::Hasher::new();
    for record in records {
        let bytes = bincode::encode_to_vec(record, crate::codec::config())
            .expect("registry records encode");
        hasher.update(&(bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
    }
    let hash = hasher.finalize();
    let mut first = [0; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_go_first() {
        let mut lru = Lru::default();
        lru.insert("a", 40);
        lru.insert("b", 30);
        lru.insert("c", 20);
        assert_eq!(lru.bytes(), 90);
        assert!(lru.victims(90).is_empty());
        // "a" is the oldest, but was used since: "b" goes first.
        assert!(lru.touch("a"));
        assert!(!lru.touch("zzz"));
        assert_eq!(lru.victims(60), vec!["b"]);
        assert_eq!(lru.victims(40), vec!["b", "c"]);
        assert_eq!(lru.victims(0), vec!["b", "c", "a"]);
        lru.insert("b", 30);
        assert_eq!(lru.victims(60), vec!["c", "a"]);
        assert_eq!(lru.remove("c"), Some(20));
        assert_eq!(lru.bytes(), 70);
    }

    fn artifact(n: u8, size: usize) -> (String, Vec<u8>) {
        let bytes = vec![n; size];
        (sha256_hex(&bytes), bytes)
    }

    #[test]
    fn the_cache_evicts_on_disk_beyond_its_cap_and_remembers_recency() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Fetched::open(dir.path()).unwrap();
        cache.cap.store(250, Ordering::Relaxed);
        let (a, b, c) = (artifact(1, 100), artifact(2, 100), artifact(3, 100));
        cache.put(&a.0, &a.1).unwrap();
        cache.put(&b.0, &b.1).unwrap();
        assert_eq!(cache.get(&a.0).unwrap(), a.1, "a is now the most recent");
        cache.put(&c.0, &c.1).unwrap();
        assert!(cache.contains(&a.0) && cache.contains(&c.0));
        assert!(!cache.contains(&b.0), "b was the least recently used");
        assert!(matches!(
            cache.get(&b.0),
            Err(RegistryError::ArtifactMissing(_))
        ));
        assert_eq!(cache.lock().bytes(), 200);
        // Too large for the whole cache: not kept, nothing evicted.
        let big = artifact(4, 300);
        cache.put(&big.0, &big.1).unwrap();
        assert!(!cache.contains(&big.0));
        assert_eq!(cache.lock().bytes(), 200);

        // Reopened: recency from the files' times, cap applied again.
        let file_of = |sum: &str| dir.path().join("sha256").join(sum);
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        let f = std::fs::File::options()
            .append(true)
            .open(file_of(&c.0))
            .unwrap();
        f.set_modified(old).unwrap();
        drop(cache);
        let cache = Fetched::open(dir.path()).unwrap();
        assert_eq!(cache.lock().bytes(), 200);
        cache.cap.store(150, Ordering::Relaxed);
        cache.evict();
        assert!(cache.contains(&a.0));
        assert!(!cache.contains(&c.0), "c's file was the oldest");
        assert!(!file_of(&c.0).exists());

        // A corrupted copy is dropped, not served.
        std::fs::write(file_of(&a.0), b"garbage").unwrap();
        assert!(matches!(
            cache.get(&a.0),
            Err(RegistryError::ArtifactMissing(_))
        ));
        assert!(!cache.contains(&a.0));
    }

    #[derive(Debug)]
    struct Peer(Vec<u8>);

    impl ArtifactSource for Peer {
        fn fetch<'a>(&'a self, _checksum: &'a str) -> BoxFuture<'a, Result<Vec<u8>, String>> {
            Box::pin(async move { Ok(self.0.clone()) })
        }
    }

    #[tokio::test]
    async fn a_missing_artifact_is_fetched_checked_and_cached_but_never_evicts_originals() {
        let dir = tempfile::tempdir().unwrap();
        let r = Registry::open(dir.path(), "n1").unwrap();
        let (sum, bytes) = artifact(9, 64);
        assert!(matches!(
            r.obtain_artifact(&sum).await,
            Err(RegistryError::ArtifactMissing(_))
        ));
        let original = r.put_artifact(b"registered here").unwrap();
        r.attach_source(Arc::new(Peer(bytes.clone())));
        assert_eq!(r.obtain_artifact(&sum).await.unwrap(), bytes);
        assert!(r.is_cached(&sum));
        assert_eq!(r.artifact(&sum).unwrap(), bytes);
        assert_eq!(r.held_artifacts().len(), 2);
        r.set_cache_limit(0);
        assert!(!r.is_cached(&sum));
        assert_eq!(r.held_artifacts(), vec![original.clone()]);
        assert_eq!(
            r.obtain_artifact(&original).await.unwrap(),
            b"registered here"
        );

        // A source that sends other bytes is refused.
        let r = Registry::in_memory("n2");
        r.attach_source(Arc::new(Peer(b"not it".to_vec())));
        let e = r.obtain_artifact(&sum).await.unwrap_err();
        assert!(e.to_string().contains("hash to"), "{e}");
        assert!(!r.is_cached(&sum));
    }

    #[test]
    fn equal_record_sets_have_equal_digests() {
        let a = Registry::in_memory("a");
        let b = Registry::in_memory("b");
        assert_eq!(a.digest(), b.digest());
        a.register("iris", b"x", "onnx", Default::default(), Default::default())
            .unwrap();
        assert_ne!(a.digest(), b.digest());
        for record in a.records() {
            b.merge(record).unwrap();
        }
        assert_eq!(a.digest(), b.digest());
    }
}
