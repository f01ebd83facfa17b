//! The model registry: named models, their immutable numbered versions, and
//! aliases (`production`, `staging`, …) that point at versions and move.
//!
//! A version records its artifact's SHA-256 (the artifact itself is stored
//! once per content, under `data_dir/artifacts/sha256/<hex>`), size,
//! format, signature, metadata, and who registered it when. Users name
//! versions with a [`ModelRef`]: `NAME` (the highest version), `NAME@3`,
//! `NAME@production`. A version cannot be deleted while an alias points at
//! it or this node deploys it.
//!
//! Every record carries the node that wrote it and a hybrid logical
//! [`Stamp`]; [`Catalog`] (pure) merges records from any node into the same
//! state whatever their order, which is what anti-entropy builds on. On a
//! node in a replicated log, writes go through the log instead and take
//! effect when applied, in log order (see [`replicated`]).
//!
//! This module owns the registry's records (in their own sled database,
//! `data_dir/registry`) and artifacts; it does not read models (the caller
//! passes the [`Signature`]), serve HTTP or talk to other nodes.

mod artifacts;
mod cache;
mod catalog;
mod clock;
mod deployment;
mod model;
mod replicated;
mod sled;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::{info, warn};

use self::artifacts::Artifacts;
use self::cache::Fetched;
pub use self::cache::{ArtifactSource, DEFAULT_CACHE_BYTES};
pub use self::catalog::{Catalog, Merged, ModelInfo, ModelSummary, Renumbered};
pub use self::clock::Clock;
pub use self::deployment::{DeployRequest, MAX_REPLICAS};
pub use self::model::{
    Alias, Canary, DEFAULT_FORMAT, Deletion, Deployment, DeploymentSpec, FormatError, LATEST,
    MAX_META_KEY_LEN, MAX_NAME_LEN, ModelRef, ModelVersion, NameError, NameKind, Record, RefError,
    Stamp, VersionId, VersionRef, check_alias, check_format, check_meta, check_name, is_checksum,
    sha256_hex,
};
pub use self::replicated::RecordLog;
use self::sled::RecordStore;
use crate::inference::Signature;

/// A registry operation failed. The variants map to HTTP statuses: the
/// `Invalid…`-like ones to 400, the `Unknown…` ones to 404, `Aliased`,
/// `Deployed` and `DeploymentChanged` to 409, the storage ones to 500,
/// `Unavailable` to 503.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// A model or alias name breaks the naming rules.
    #[error(transparent)]
    Name(#[from] NameError),
    /// A reference cannot be parsed.
    #[error(transparent)]
    Ref(#[from] RefError),
    /// A format other than `onnx`.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// Metadata breaks the rules of [`check_meta`].
    #[error("invalid metadata: {0}")]
    Meta(String),
    /// Registering zero bytes.
    #[error("the model artifact is empty")]
    EmptyArtifact,
    /// No such model.
    #[error("model \"{0}\" not found")]
    UnknownModel(String),
    /// No such version.
    #[error("model \"{name}\" has no version {version}")]
    UnknownVersion {
        /// The model.
        name: String,
        /// The version asked for.
        version: u32,
    },
    /// The version was deleted.
    #[error("version {version} of model \"{name}\" was deleted")]
    DeletedVersion {
        /// The model.
        name: String,
        /// The version asked for.
        version: u32,
    },
    /// Every version of the model was deleted.
    #[error("model \"{0}\" has no versions left")]
    NoVersions(String),
    /// No such alias.
    #[error("model \"{name}\" has no alias \"{alias}\"")]
    UnknownAlias {
        /// The model.
        name: String,
        /// The alias asked for.
        alias: String,
    },
    /// The alias points at a version deleted on another node at the same
    /// time as the alias was set.
    #[error("alias \"{alias}\" of model \"{name}\" points at version {version}, which was deleted")]
    AliasToDeleted {
        /// The model.
        name: String,
        /// The alias.
        alias: String,
        /// The version it points at.
        version: u32,
    },
    /// The alias points at a version this node has not received yet.
    #[error(
        "alias \"{alias}\" of model \"{name}\" points at version {version}, which this node has not received yet"
    )]
    AliasTargetUnknown {
        /// The model.
        name: String,
        /// The alias.
        alias: String,
        /// The version it points at.
        version: u32,
    },
    /// Deleting a version an alias points at.
    #[error(
        "version {version} of model \"{name}\" is still aliased as {}; move the alias first (symphony models alias {name} ALIAS VERSION)",
        .aliases.join(", ")
    )]
    Aliased {
        /// The model.
        name: String,
        /// The version.
        version: u32,
        /// The aliases pointing at it.
        aliases: Vec<String>,
    },
    /// Deleting a version the model's deployment serves.
    #[error(
        "version {version} of model \"{name}\" is deployed; deploy another version or undeploy it first (symphony models undeploy {name})"
    )]
    Deployed {
        /// The model.
        name: String,
        /// The version.
        version: u32,
    },
    /// A deployment names a version (by identity) this node does not know.
    #[error("model \"{name}\" has no version {id} on this node")]
    UnknownVersionId {
        /// The model.
        name: String,
        /// The version's identity.
        id: String,
    },
    /// Rolling back or undeploying a model that is not deployed.
    #[error("model \"{0}\" is not deployed")]
    NotDeployed(String),
    /// Rolling back a deployment that has nothing before it.
    #[error("model \"{0}\" has no previous deployment to roll back to")]
    NoPreviousDeployment(String),
    /// A deployment request that cannot be carried out as asked.
    #[error("invalid deployment: {0}")]
    InvalidDeployment(String),
    /// The model used up every version number.
    #[error("model \"{0}\" has no version numbers left")]
    NumbersExhausted(String),
    /// Not a hex SHA-256.
    #[error("\"{0}\" is not a sha256 checksum (64 lower-case hex digits)")]
    BadChecksum(String),
    /// No artifact with this checksum on this node.
    #[error("artifact sha256:{0} is not on this node")]
    ArtifactMissing(String),
    /// The stored artifact does not hash to its checksum.
    #[error("artifact sha256:{checksum} is corrupt: its content hashes to {actual}")]
    CorruptArtifact {
        /// What it should hash to.
        checksum: String,
        /// What it hashes to.
        actual: String,
    },
    /// The registry's database or artifact directory failed.
    #[error("registry storage error: {0}")]
    Storage(String),
    /// A deployment write made from a generation that another write
    /// replaced first (through the replicated log).
    #[error(
        "the deployment of model \"{name}\" changed while this write was made (it is at generation {generation} now); read it again and retry"
    )]
    DeploymentChanged {
        /// The model.
        name: String,
        /// The deployment's generation now.
        generation: u64,
    },
    /// The write cannot be committed now: the replicated log has no leader
    /// with a quorum within reach (reads still answer from this node).
    #[error(
        "the model registry cannot take writes on this node now: {0}; reads still answer from this node's copy"
    )]
    Unavailable(String),
}

/// The model registry of one node: a cheap handle, shared by clones.
///
/// Methods block on disk I/O (a flush per write, artifact files); async
/// callers run them on a blocking thread.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    /// This node's name: recorded as the writer of every record.
    node: String,
    state: Mutex<State>,
    /// `None` in memory.
    records: Option<RecordStore>,
    artifacts: Artifacts,
    /// Artifacts fetched from other nodes (see [`cache`]).
    fetched: Fetched,
    /// The replicated log writes go through, on a node that takes part in
    /// one (see [`replicated`]); set once.
    log: OnceLock<Arc<dyn RecordLog>>,
    /// What applying this node's own log entries decided, by log index,
    /// until the writer picks it up.
    decided: Mutex<BTreeMap<u64, Result<Record, RegistryError>>>,
}

/// What the lock guards: the catalog and the clock stamping its writes.
#[derive(Debug)]
struct State {
    catalog: Catalog,
    clock: Clock,
    /// The index of the last replicated log entry applied (0: none).
    log_applied: u64,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("node", &self.inner.node)
            .field("durable", &self.inner.records.is_some())
            .field("artifacts", &self.inner.artifacts)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// Opens (or creates) the registry of the node `node` in `data_dir`:
    /// records in `data_dir/registry`, artifacts in `data_dir/artifacts`.
    ///
    /// # Errors
    /// When either cannot be opened or created (another process holds the
    /// database), or a stored record cannot be decoded.
    pub fn open(data_dir: &Path, node: &str) -> Result<Registry, RegistryError> {
        let records = RecordStore::open(&data_dir.join("registry"))?;
        let artifacts = Artifacts::open(&data_dir.join("artifacts"))?;
        let fetched = Fetched::open(&data_dir.join("artifacts").join("cache"))?;
        let loaded = records.load()?;
        let mut catalog = Catalog::new();
        for record in loaded.records {
            catalog.merge(record);
        }
        let mut clock = Clock::new();
        clock.observe(catalog.max_stamp());
        let registry = Registry::with(node, catalog, clock, Some(records), artifacts, fetched);
        registry.lock().log_applied = loaded.log_applied;
        Ok(registry)
    }

    /// A registry kept in memory only, for nodes without a data dir and
    /// for tests.
    pub fn in_memory(node: &str) -> Registry {
        Registry::with(
            node,
            Catalog::new(),
            Clock::new(),
            None,
            Artifacts::memory(),
            Fetched::memory(),
        )
    }

    fn with(
        node: &str,
        catalog: Catalog,
        clock: Clock,
        records: Option<RecordStore>,
        artifacts: Artifacts,
        fetched: Fetched,
    ) -> Registry {
        Registry {
            inner: Arc::new(Inner {
                node: node.to_owned(),
                state: Mutex::new(State {
                    catalog,
                    clock,
                    log_applied: 0,
                }),
                records,
                artifacts,
                fetched,
                log: OnceLock::new(),
                decided: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// This node's name, as recorded in what it writes.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// Registers `bytes` as the next version of `name`: stores the
    /// artifact (once per content), records the version and returns it.
    ///
    /// # Errors
    /// A bad name, format or metadata, an empty artifact, or a storage
    /// failure.
    pub fn register(
        &self,
        name: &str,
        bytes: &[u8],
        format: &str,
        meta: BTreeMap<String, String>,
        signature: Signature,
    ) -> Result<ModelVersion, RegistryError> {
        check_name(name)?;
        let format = check_format(format)?;
        check_meta(&meta).map_err(RegistryError::Meta)?;
        if bytes.is_empty() {
            return Err(RegistryError::EmptyArtifact);
        }
        let checksum = self.put_artifact(bytes)?;
        let record = self.write(|state| {
            let number = state.catalog.next_number(name)?;
            let created_ms = now_ms();
            Ok(Record::Version(ModelVersion {
                name: name.to_owned(),
                version: number,
                registered_as: number,
                checksum,
                size: bytes.len() as u64,
                format,
                signature,
                meta,
                created_ms,
                created_by: self.inner.node.clone(),
                stamp: state.clock.tick(created_ms),
            }))
        })?;
        let Record::Version(version) = record else {
            return Err(unexpected(&record));
        };
        info!(
            model = %name,
            version = version.version,
            checksum = %version.checksum,
            size = version.size,
            "Model version registered."
        );
        Ok(version)
    }

    /// Points `alias` of `name` at `version` (creating or moving it).
    ///
    /// # Errors
    /// A bad name or alias, a version that does not exist or was deleted,
    /// or a storage failure.
    pub fn set_alias(&self, name: &str, alias: &str, version: u32) -> Result<Alias, RegistryError> {
        check_name(name)?;
        check_alias(alias)?;
        let record = self.write(|state| {
            let target = state.catalog.version(name, version)?.id();
            Ok(Record::Alias(Alias {
                name: name.to_owned(),
                alias: alias.to_owned(),
                version,
                target,
                stamp: state.clock.tick(now_ms()),
                by: self.inner.node.clone(),
            }))
        })?;
        let Record::Alias(record) = record else {
            return Err(unexpected(&record));
        };
        info!(model = %name, alias = %alias, version, "Model alias set.");
        Ok(record)
    }

    /// The version `reference` means.
    ///
    /// # Errors
    /// When the model, version or alias does not exist, or the version was
    /// deleted.
    pub fn resolve(&self, reference: &ModelRef) -> Result<ModelVersion, RegistryError> {
        self.lock().catalog.resolve(reference).cloned()
    }

    /// Every model, by name.
    pub fn list(&self) -> Vec<ModelSummary> {
        self.lock().catalog.summaries()
    }

    /// One model: its versions, aliases and deployed versions.
    ///
    /// # Errors
    /// A bad name, or no such model.
    pub fn show(&self, name: &str) -> Result<ModelInfo, RegistryError> {
        check_name(name)?;
        self.lock().catalog.info(name)
    }

    /// Deletes version `version` of `name` and returns what it was. Its
    /// number is never given again. The artifact stays on disk (another
    /// version may share it).
    ///
    /// # Errors
    /// [`RegistryError::Aliased`] or [`RegistryError::Deployed`] while it
    /// is in use; a version that does not exist or was already deleted; a
    /// storage failure.
    pub fn delete(&self, name: &str, version: u32) -> Result<ModelVersion, RegistryError> {
        check_name(name)?;
        let mut deleted = None;
        self.write(|state| {
            let version = state.catalog.check_delete(name, version)?.clone();
            let record = Deletion {
                name: name.to_owned(),
                target: version.id(),
                version: version.version,
                stamp: state.clock.tick(now_ms()),
                by: self.inner.node.clone(),
            };
            deleted = Some(version);
            Ok(Record::Deletion(record))
        })?;
        info!(model = %name, version, "Model version deleted.");
        deleted.ok_or_else(|| RegistryError::Storage("a deletion without its version".into()))
    }

    /// Merges a record written by another node (see [`Catalog::merge`]):
    /// stores it if it is new, and logs versions it renumbers.
    ///
    /// # Errors
    /// A record with a bad model name, or a storage failure.
    /// On a node in a replicated log, records arrive only through the log:
    /// nothing is merged (see [`replicated`]).
    pub fn merge(&self, record: Record) -> Result<Merged, RegistryError> {
        check_name(record.model())?;
        if self.is_replicated() {
            return Ok(Merged::default());
        }
        let mut state = self.lock();
        state.clock.observe(record.stamp());
        self.commit(&mut state, record)
    }

    /// Every record, for sending to another node.
    pub fn records(&self) -> Vec<Record> {
        self.lock().catalog.records()
    }

    /// The artifact with hex SHA-256 `checksum`, checked against it: this
    /// node's original, else its cached copy (see
    /// [`Registry::obtain_artifact`] to fetch it from another node).
    ///
    /// # Errors
    /// [`RegistryError::ArtifactMissing`] when this node does not have it,
    /// [`RegistryError::CorruptArtifact`] when its content does not match,
    /// [`RegistryError::BadChecksum`] for a malformed checksum.
    pub fn artifact(&self, checksum: &str) -> Result<Vec<u8>, RegistryError> {
        match self.inner.artifacts.get(checksum) {
            Err(RegistryError::ArtifactMissing(_)) => self.inner.fetched.get(checksum),
            other => other,
        }
    }

    /// Whether this node has the artifact `checksum` (not checked).
    pub fn has_artifact(&self, checksum: &str) -> bool {
        self.inner.artifacts.contains(checksum) || self.inner.fetched.contains(checksum)
    }

    /// The file of artifact `checksum`, when artifacts are on disk (whether
    /// or not it exists; not checked).
    pub fn artifact_path(&self, checksum: &str) -> Option<PathBuf> {
        self.inner.artifacts.path(checksum)
    }

    /// Stores an artifact (e.g. fetched from another node) and returns its
    /// hex SHA-256.
    ///
    /// # Errors
    /// When writing it fails.
    pub fn put_artifact(&self, bytes: &[u8]) -> Result<String, RegistryError> {
        let checksum = sha256_hex(bytes);
        self.inner.artifacts.put(&checksum, bytes)?;
        Ok(checksum)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the catalog as consistent
        // as before it (every change is one merge), so go on.
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes the record `prepare` builds from the state take effect, and
    /// returns it as it took effect. On its own, the registry merges it at
    /// once, under the lock `prepare` ran under. On a node in a replicated
    /// log, it first catches up with the log (so `prepare` checks against
    /// everything committed before), then commits the record through the
    /// log and waits until this node applied it; applying may change the
    /// record (a version's number) or refuse it (see [`Catalog::admit`]).
    fn write(
        &self,
        prepare: impl FnOnce(&mut State) -> Result<Record, RegistryError>,
    ) -> Result<Record, RegistryError> {
        match self.inner.log.get() {
            None => {
                let mut state = self.lock();
                let record = prepare(&mut state)?;
                self.commit(&mut state, record.clone())?;
                Ok(record)
            }
            Some(log) => self.write_through(log.as_ref(), prepare),
        }
    }

    /// Stores `record` if it is new, then merges it: what is in memory is
    /// never ahead of what is on disk.
    fn commit(&self, state: &mut State, record: Record) -> Result<Merged, RegistryError> {
        if !state.catalog.is_new(&record) {
            return Ok(Merged::default());
        }
        if let Some(records) = &self.inner.records {
            records.put(&record)?;
        }
        let merged = state.catalog.merge(record);
        for r in &merged.renumbered {
            warn!(
                model = %r.name,
                from = r.from,
                to = r.to,
                checksum = %r.checksum,
                registered_by = %r.id.node,
                "Model version renumbered: another node registered the same number first."
            );
        }
        Ok(merged)
    }
}

/// A write answered with a record of another kind (a bug).
fn unexpected(record: &Record) -> RegistryError {
    RegistryError::Storage(format!(
        "a registry write of model \"{}\" took effect as an unexpected record",
        record.model()
    ))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(r: &Registry, name: &str, bytes: &[u8]) -> ModelVersion {
        r.register(
            name,
            bytes,
            "onnx",
            BTreeMap::from([("owner".to_owned(), "ml".to_owned())]),
            Signature::default(),
        )
        .unwrap()
    }

    fn resolve(r: &Registry, text: &str) -> Result<ModelVersion, RegistryError> {
        r.resolve(&ModelRef::parse(text).unwrap())
    }

    #[test]
    fn a_registry_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let (v1, v2) = {
            let r = Registry::open(dir.path(), "n1").unwrap();
            let v1 = register(&r, "iris", b"one");
            let v2 = register(&r, "iris", b"two");
            r.set_alias("iris", "production", 1).unwrap();
            r.deploy("iris", &DeployRequest::new(VersionRef::Number(2), 1))
                .unwrap();
            (v1, v2)
        };
        let r = Registry::open(dir.path(), "n1").unwrap();
        assert_eq!(resolve(&r, "iris@production").unwrap(), v1);
        assert_eq!(resolve(&r, "iris").unwrap(), v2);
        assert_eq!(r.show("iris").unwrap().deployed, vec![2]);
        assert_eq!(r.artifact(&v2.checksum).unwrap(), b"two");
        // The clock starts after what was stored.
        let v3 = register(&r, "iris", b"three");
        assert_eq!(v3.version, 3);
        assert!(v3.stamp > v2.stamp);
        r.set_alias("iris", "production", 2).unwrap();
        drop(r);
        let r = Registry::open(dir.path(), "n1").unwrap();
        assert_eq!(resolve(&r, "iris@production").unwrap(), v2);
    }

    #[test]
    fn registering_checks_its_inputs() {
        let r = Registry::in_memory("n1");
        let reg = |name: &str, bytes: &[u8], format: &str| {
            r.register(name, bytes, format, BTreeMap::new(), Signature::default())
        };
        assert!(matches!(
            reg("Iris", b"x", "onnx"),
            Err(RegistryError::Name(_))
        ));
        assert!(matches!(
            reg("iris", b"x", "pt"),
            Err(RegistryError::Format(_))
        ));
        assert!(matches!(
            reg("iris", b"", "onnx"),
            Err(RegistryError::EmptyArtifact)
        ));
        let bad_meta = BTreeMap::from([(String::new(), "x".to_owned())]);
        assert!(matches!(
            r.register("iris", b"x", "onnx", bad_meta, Signature::default()),
            Err(RegistryError::Meta(_))
        ));
        assert!(r.list().is_empty());
        let v = reg("iris", b"x", "ONNX").unwrap();
        assert_eq!((v.version, v.format.as_str(), v.size), (1, "onnx", 1));
        assert_eq!(v.created_by, "n1");
        assert_eq!(v.checksum, sha256_hex(b"x"));
    }

    #[test]
    fn aliases_move_and_guard_deletion() {
        let r = Registry::in_memory("n1");
        register(&r, "iris", b"one");
        register(&r, "iris", b"two");
        assert!(matches!(
            r.set_alias("iris", "production", 3),
            Err(RegistryError::UnknownVersion { version: 3, .. })
        ));
        assert!(matches!(
            r.set_alias("iris", "latest", 1),
            Err(RegistryError::Name(_))
        ));
        r.set_alias("iris", "production", 1).unwrap();
        let e = r.delete("iris", 1).unwrap_err();
        assert!(matches!(e, RegistryError::Aliased { .. }));
        assert!(e.to_string().contains("aliased as production"), "{e}");
        r.set_alias("iris", "production", 2).unwrap();
        assert_eq!(resolve(&r, "iris@production").unwrap().version, 2);
        assert_eq!(r.delete("iris", 1).unwrap().version, 1);
        assert!(matches!(
            resolve(&r, "iris@1"),
            Err(RegistryError::DeletedVersion { .. })
        ));
        assert!(matches!(
            r.delete("iris", 1),
            Err(RegistryError::DeletedVersion { .. })
        ));
        r.deploy("iris", &DeployRequest::new(VersionRef::Number(2), 1))
            .unwrap();
        r.set_alias("iris", "production", 2).unwrap();
        let summary = &r.list()[0];
        assert_eq!((summary.versions, summary.latest), (1, Some(2)));
        assert_eq!(register(&r, "iris", b"three").version, 3);
    }

    #[test]
    fn records_from_another_node_are_merged_once() {
        let a = Registry::in_memory("a");
        let b = Registry::in_memory("b");
        register(&a, "iris", b"from a");
        register(&b, "iris", b"from b");
        for record in b.records() {
            assert!(a.merge(record.clone()).unwrap().changed);
            assert!(!a.merge(record).unwrap().changed);
        }
        for record in a.records() {
            b.merge(record).unwrap();
        }
        assert_eq!(a.list(), b.list());
        assert_eq!(a.show("iris").unwrap(), b.show("iris").unwrap());
        // The clock moved past what it merged.
        let next = register(&a, "iris", b"again");
        assert_eq!(next.version, 3);
        assert!(b.records().iter().all(|r| r.stamp() < next.stamp));
    }
}
