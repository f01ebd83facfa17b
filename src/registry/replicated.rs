//! The registry on a node that takes part in a replicated log (Raft): its
//! writes are committed through the log and take effect on every node when
//! the entry is applied, in log order, so the registry is strongly
//! consistent.
//!
//! A write goes like this on the node that takes it:
//!
//! 1. [`RecordLog::catch_up`]: the node applies everything committed so far,
//!    so the request is checked against the latest state (an alias set on
//!    one node to a version registered on another a moment before works);
//! 2. the request is checked and turned into a [`Record`] as without a log;
//! 3. [`RecordLog::commit`] commits it and returns once this node applied it;
//! 4. applying ([`Registry::apply_committed`], on every node) decides, with
//!    [`Catalog::admit`](super::Catalog::admit): numbers are given out in log
//!    order, and a record that an earlier entry made wrong (an alias to a
//!    version deleted meanwhile) is refused the same way on every node;
//! 5. the writer answers with what applying decided.
//!
//! Without quorum step 1 or 3 fails and the write is refused with
//! [`RegistryError::Unavailable`]; reads answer from this node's state. The
//! registry knows nothing of Raft: the node wires a [`RecordLog`] in with
//! [`Registry::attach_log`], and the log's state machine calls
//! [`Registry::apply_committed`] for every committed record.

use std::fmt;

use futures::future::BoxFuture;
use tracing::{info, warn};

use super::model::Record;
use super::{Registry, RegistryError, State, check_name};

/// Decisions kept for writers that gave up waiting (bounded).
const KEPT_DECISIONS: usize = 1024;

/// The replicated log a registry commits its writes through.
pub trait RecordLog: Send + Sync + fmt::Debug {
    /// Completes once this node has applied everything committed before the
    /// call (a read barrier through the leader).
    ///
    /// # Errors
    /// Why the log cannot say (no leader with a quorum within reach).
    fn catch_up(&self) -> BoxFuture<'static, Result<(), String>>;

    /// Commits `record` and completes, with the entry's index, once this
    /// node has applied it.
    ///
    /// # Errors
    /// Why it could not be committed or applied in time.
    fn commit(&self, record: Record) -> BoxFuture<'static, Result<u64, String>>;
}

impl Registry {
    /// Makes this registry commit its writes through `log` from now on, and
    /// stops it merging records from anywhere else. Set once: later calls
    /// are ignored. Returns whether it was set.
    pub fn attach_log(&self, log: std::sync::Arc<dyn RecordLog>) -> bool {
        self.inner.log.set(log).is_ok()
    }

    /// Whether writes go through a replicated log.
    pub fn is_replicated(&self) -> bool {
        self.inner.log.get().is_some()
    }

    /// The index of the last log entry this registry applied (0: none).
    pub fn log_applied(&self) -> u64 {
        self.lock().log_applied
    }

    /// Applies `records`, the registry records of the log entry at `index`,
    /// in order: decides whether and how each takes effect (see
    /// [`Catalog::admit`](super::Catalog::admit)), merges it, and stores
    /// what changed with the index in one batch. Entries at or below the
    /// last index applied (applied again after a restart) are skipped, so
    /// each entry takes effect once.
    ///
    /// # Errors
    /// When storage fails: the entry must not count as applied (Raft stops
    /// on this node; a restart reloads what reached the disk and applies the
    /// entry again).
    pub fn apply_committed(&self, index: u64, records: &[Record]) -> Result<(), RegistryError> {
        let mut state = self.lock();
        if index <= state.log_applied {
            return Ok(());
        }
        let mut stored = Vec::new();
        let mut mine = None;
        for record in records {
            let writer = writer(record).to_owned();
            let decided = check_name(record.model())
                .map_err(RegistryError::from)
                .and_then(|()| state.catalog.admit(record.clone()));
            match &decided {
                Ok(record) => {
                    state.clock.observe(record.stamp());
                    if state.catalog.is_new(record) {
                        state.catalog.merge(record.clone());
                        stored.push(record.clone());
                    }
                }
                Err(e) => info!(
                    index,
                    writer = %writer,
                    error = %e,
                    "A registry write was refused when its log entry was applied."
                ),
            }
            if writer == self.inner.node {
                mine = Some(decided);
            }
        }
        if let Some(store) = &self.inner.records {
            store.put_applied(&stored, index)?;
        }
        state.log_applied = index;
        drop(state);
        if let Some(decided) = mine {
            let mut kept = self
                .inner
                .decided
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            kept.insert(index, decided);
            while kept.len() > KEPT_DECISIONS {
                kept.pop_first();
            }
        }
        Ok(())
    }

    /// [`Registry::write`] through `log`. Blocks the calling thread (a
    /// blocking thread of the runtime).
    pub(super) fn write_through(
        &self,
        log: &dyn RecordLog,
        prepare: impl FnOnce(&mut State) -> Result<Record, RegistryError>,
    ) -> Result<Record, RegistryError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            RegistryError::Unavailable("registry writes through the log need a runtime".into())
        })?;
        runtime
            .block_on(log.catch_up())
            .map_err(RegistryError::Unavailable)?;
        let record = prepare(&mut self.lock())?;
        let index = runtime
            .block_on(log.commit(record))
            .map_err(RegistryError::Unavailable)?;
        let decided = self
            .inner
            .decided
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&index);
        decided.unwrap_or_else(|| {
            warn!(index, "No decision for a registry write applied here.");
            Err(RegistryError::Storage(format!(
                "log entry {index} was applied without a decision for this node"
            )))
        })
    }
}

/// The node that wrote a record.
fn writer(record: &Record) -> &str {
    match record {
        Record::Version(v) => &v.created_by,
        Record::Alias(a) => &a.by,
        Record::Deletion(d) => &d.by,
        Record::Deployment(d) => &d.by,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::inference::Signature;
    use crate::registry::{DeployRequest, ModelRef, VersionRef};

    /// A log of one node's registries in memory: every committed record is
    /// applied to each of them, in order, at once.
    #[derive(Debug, Default)]
    struct MemoryLog {
        nodes: Mutex<Vec<Registry>>,
        next: Mutex<u64>,
        /// Refuse everything (no quorum).
        cut_off: std::sync::atomic::AtomicBool,
    }

    impl MemoryLog {
        fn append(&self, record: Record) -> u64 {
            let mut next = self.next.lock().unwrap();
            *next += 1;
            for node in self.nodes.lock().unwrap().iter() {
                node.apply_committed(*next, std::slice::from_ref(&record))
                    .unwrap();
            }
            *next
        }
    }

    /// One node's handle on the shared log.
    #[derive(Debug)]
    struct Handle(Arc<MemoryLog>);

    impl RecordLog for Handle {
        fn catch_up(&self) -> BoxFuture<'static, Result<(), String>> {
            let cut = self.0.cut_off.load(std::sync::atomic::Ordering::Relaxed);
            Box::pin(async move { if cut { Err("no quorum".into()) } else { Ok(()) } })
        }

        fn commit(&self, record: Record) -> BoxFuture<'static, Result<u64, String>> {
            let log = Arc::clone(&self.0);
            Box::pin(async move {
                if log.cut_off.load(std::sync::atomic::Ordering::Relaxed) {
                    return Err("no quorum".into());
                }
                Ok(log.append(record))
            })
        }
    }

    fn cluster(names: &[&str]) -> (Arc<MemoryLog>, Vec<Registry>) {
        let log = Arc::new(MemoryLog::default());
        let nodes: Vec<Registry> = names.iter().map(|n| Registry::in_memory(n)).collect();
        for node in &nodes {
            assert!(node.attach_log(Arc::new(Handle(Arc::clone(&log)))));
            log.nodes.lock().unwrap().push(node.clone());
        }
        (log, nodes)
    }

    fn register(
        r: &Registry,
        bytes: &[u8],
    ) -> Result<crate::registry::ModelVersion, RegistryError> {
        r.register("iris", bytes, "onnx", BTreeMap::new(), Signature::default())
    }

    /// Runs `f` on a blocking thread of a runtime, as the API does.
    fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        runtime.block_on(async { tokio::task::spawn_blocking(f).await.unwrap() })
    }

    #[test]
    fn writes_take_effect_on_every_node_in_log_order() {
        let (_, nodes) = cluster(&["a", "b", "c"]);
        let [a, b, c] = [nodes[0].clone(), nodes[1].clone(), nodes[2].clone()];
        blocking(move || {
            assert_eq!(register(&a, b"one").unwrap().version, 1);
            // b registers after a's entry was applied everywhere: number 2.
            assert_eq!(register(&b, b"two").unwrap().version, 2);
            b.set_alias("iris", "production", 1).unwrap();
            let seen = c
                .resolve(&ModelRef::parse("iris@production").unwrap())
                .unwrap();
            assert_eq!((seen.version, seen.created_by.as_str()), (1, "a"));
            assert_eq!(a.show("iris").unwrap(), c.show("iris").unwrap());
            // Anti-entropy merges nothing on a node in a log.
            let stray = Registry::in_memory("x");
            register(&stray, b"stray").unwrap();
            for record in stray.records() {
                assert!(!a.merge(record).unwrap().changed);
            }
            assert_eq!(a.list()[0].versions, 2);
        });
    }

    #[test]
    fn numbers_are_given_at_apply_and_stale_records_are_refused() {
        let (log, nodes) = cluster(&["a", "b"]);
        let (a, b) = (nodes[0].clone(), nodes[1].clone());
        blocking(move || {
            let v1 = register(&a, b"one").unwrap();
            // Two registrations prepared on the same state (both ask for 2)
            // get 2 and 3, in log order, on every node.
            let mut second = v1.clone();
            second.stamp.logical += 1;
            second.created_by = "b".into();
            second.version = 2;
            second.registered_as = 2;
            let mut third = second.clone();
            third.stamp.logical += 1;
            third.created_by = "a".into();
            log.append(Record::Version(second));
            log.append(Record::Version(third));
            for r in [&a, &b] {
                let numbers: Vec<(u32, String)> = r
                    .show("iris")
                    .unwrap()
                    .versions
                    .iter()
                    .map(|v| (v.version, v.created_by.clone()))
                    .collect();
                assert_eq!(
                    numbers,
                    vec![(1, "a".into()), (2, "b".into()), (3, "a".into())]
                );
            }
            // An alias to a version a concurrent delete removed is refused at
            // apply, on every node.
            let target = a.resolve(&ModelRef::parse("iris@2").unwrap()).unwrap().id();
            b.delete("iris", 2).unwrap();
            let late = crate::registry::Alias {
                name: "iris".into(),
                alias: "production".into(),
                version: 2,
                target,
                stamp: v1.stamp,
                by: "a".into(),
            };
            let index = log.append(Record::Alias(late));
            for r in [&a, &b] {
                assert!(r.show("iris").unwrap().aliases.is_empty());
                assert_eq!(r.log_applied(), index);
            }
            // A deployment prepared from a replaced generation is refused.
            a.deploy("iris", &DeployRequest::new(VersionRef::Number(1), 1))
                .unwrap();
            let stale = a.deployment("iris").unwrap();
            b.deploy("iris", &DeployRequest::new(VersionRef::Number(3), 1))
                .unwrap();
            log.append(Record::Deployment(stale));
            assert_eq!(a.show("iris").unwrap().deployed, vec![3]);
            assert_eq!(b.show("iris").unwrap().deployed, vec![3]);
        });
    }

    #[test]
    fn a_later_alias_move_wins_even_with_an_older_stamp() {
        let (log, nodes) = cluster(&["a", "b"]);
        let (a, b) = (nodes[0].clone(), nodes[1].clone());
        blocking(move || {
            let v1 = register(&a, b"one").unwrap();
            let v2 = register(&a, b"two").unwrap();
            a.set_alias("iris", "production", 2).unwrap();
            // b's clock lags far behind.
            let lagging = crate::registry::Alias {
                name: "iris".into(),
                alias: "production".into(),
                version: 1,
                target: v1.id(),
                stamp: crate::registry::Stamp::default(),
                by: "b".into(),
            };
            log.append(Record::Alias(lagging));
            for r in [&a, &b] {
                let now = r
                    .resolve(&ModelRef::parse("iris@production").unwrap())
                    .unwrap();
                assert_eq!(now.id(), v1.id(), "the later entry wins");
            }
            assert_ne!(v1.id(), v2.id());
        });
    }

    #[test]
    fn without_quorum_writes_fail_and_reads_answer() {
        let (log, nodes) = cluster(&["a"]);
        let a = nodes[0].clone();
        blocking(move || {
            register(&a, b"one").unwrap();
            log.cut_off
                .store(true, std::sync::atomic::Ordering::Relaxed);
            let e = a.set_alias("iris", "production", 1).unwrap_err();
            assert!(matches!(e, RegistryError::Unavailable(_)), "{e}");
            assert!(e.to_string().contains("no quorum"), "{e}");
            assert!(a.show("iris").unwrap().aliases.is_empty());
            assert_eq!(
                a.resolve(&ModelRef::parse("iris@1").unwrap())
                    .unwrap()
                    .version,
                1
            );
        });
    }

    #[test]
    fn entries_applied_before_a_restart_are_not_applied_again() {
        let dir = tempfile::tempdir().unwrap();
        let r = Registry::open(dir.path(), "a").unwrap();
        let version = |n: u32, logical: u32| {
            Record::Version(crate::registry::ModelVersion {
                name: "iris".into(),
                version: n,
                registered_as: n,
                checksum: crate::registry::sha256_hex(b"x"),
                size: 1,
                format: "onnx".into(),
                signature: Signature::default(),
                meta: BTreeMap::new(),
                created_ms: 1,
                created_by: "b".into(),
                stamp: crate::registry::Stamp {
                    wall_ms: 1,
                    logical,
                },
            })
        };
        r.apply_committed(1, &[version(1, 0)]).unwrap();
        drop(r);
        let r = Registry::open(dir.path(), "a").unwrap();
        assert_eq!(r.log_applied(), 1);
        // The same entry again (openraft applies again after a crash).
        r.apply_committed(1, &[version(1, 1)]).unwrap();
        r.apply_committed(2, &[version(1, 2)]).unwrap();
        let numbers: Vec<u32> = r
            .show("iris")
            .unwrap()
            .versions
            .iter()
            .map(|v| v.version)
            .collect();
        assert_eq!(numbers, vec![1, 2]);
    }
}
