//! openraft's storage, in sled: the log (flushed in group commits before
//! openraft hears it is durable) and the state machine (the pure
//! [`Machine`] plus the journals of replicated runs).
//!
//! One sled database, three trees: `raft_log` (entries by index), `raft_meta`
//! (vote, committed, last purged), `raft_sm` (run records, journal events
//! by append: one key per append, its events in order,
//! the last applied log id and membership). The state machine's writes are
//! not flushed on their own: a flush of the log flushes them too, and after
//! a crash openraft applies again from the last applied id that did reach
//! the disk, which is written in the same atomic batch as what it covers.

// openraft's traits return its `StorageError` (large, by its design); the
// helpers here return what the trait methods return.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, OnceLock, RwLock};

use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{
    Entry, EntryPayload, LogId, LogState, OptionalSend, RaftLogReader, RaftSnapshotBuilder,
    Snapshot, SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use tokio::sync::{broadcast, mpsc};

use super::state::{Command, Machine, Outcome, RunRecord};
use super::{NodeId, TypeConfig};
use crate::registry::Record;

type StorageResult<T> = Result<T, StorageError<NodeId>>;

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).expect("raft values encode")
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|e| e.to_string())
}

fn read_err(e: impl ToString) -> StorageError<NodeId> {
    StorageIOError::read(&std::io::Error::other(e.to_string())).into()
}

fn write_err(e: impl ToString) -> StorageError<NodeId> {
    StorageIOError::write(&std::io::Error::other(e.to_string())).into()
}

/// Opens (or creates) the database of the log and state machine in `dir`.
/// Its writes reach the disk by the log's own group commits, so sled's
/// periodic background flush is off: it would only compete with them.
///
/// # Errors
/// When the directory cannot be opened, e.g. another process holds it.
pub fn open_db(dir: &std::path::Path) -> Result<sled::Db, String> {
    sled::Config::new()
        .path(dir)
        .mode(sled::Mode::HighThroughput)
        .flush_every_ms(None)
        .open()
        .map_err(|e| {
            format!(
                "cannot open the replicated log's data in {}: {e}",
                dir.display()
            )
        })
}

/// Opens the raft trees of `db`.
pub fn open(db: &sled::Db) -> Result<(LogStore, StateMachine), String> {
    let tree = |name: &str| db.open_tree(name).map_err(|e| e.to_string());
    let log = LogStore::new(db.clone(), tree("raft_log")?, tree("raft_meta")?);
    let machine = StateMachine::load(tree("raft_sm")?)?;
    Ok((log, machine))
}

// ---------------------------------------------------------------- the log

/// The Raft log in sled; clones share the trees.
#[derive(Debug, Clone)]
pub struct LogStore {
    log: sled::Tree,
    meta: sled::Tree,
    flusher: mpsc::UnboundedSender<LogFlushed<TypeConfig>>,
}

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const PURGED: &[u8] = b"purged";

impl LogStore {
    fn new(db: sled::Db, log: sled::Tree, meta: sled::Tree) -> LogStore {
        let (flusher, mut pending) = mpsc::unbounded_channel::<LogFlushed<TypeConfig>>();
        // Group commit: one fsync covers every append queued while the
        // previous one ran.
        tokio::spawn(async move {
            while let Some(first) = pending.recv().await {
                let mut waiting = vec![first];
                while let Ok(next) = pending.try_recv() {
                    waiting.push(next);
                }
                let started = std::time::Instant::now();
                let result = db
                    .flush_async()
                    .await
                    .map(|_| ())
                    .map_err(std::io::Error::other);
                metrics::histogram!("symphony_raft_flush_seconds")
                    .record(started.elapsed().as_secs_f64());
                for callback in waiting {
                    let result = match &result {
                        Ok(()) => Ok(()),
                        Err(e) => Err(std::io::Error::other(e.to_string())),
                    };
                    callback.log_io_completed(result);
                }
            }
        });
        LogStore { log, meta, flusher }
    }

    fn meta_get<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> StorageResult<Option<T>> {
        match self.meta.get(key).map_err(read_err)? {
            None => Ok(None),
            Some(bytes) => decode(&bytes).map(Some).map_err(read_err),
        }
    }

    fn meta_put<T: serde::Serialize>(&self, key: &[u8], value: &T) -> StorageResult<()> {
        self.meta.insert(key, encode(value)).map_err(write_err)?;
        Ok(())
    }

    fn last_entry_id(&self) -> StorageResult<Option<LogId<NodeId>>> {
        match self.log.last().map_err(read_err)? {
            None => Ok(None),
            Some((_, bytes)) => {
                let entry: Entry<TypeConfig> = decode(&bytes).map_err(read_err)?;
                Ok(Some(entry.log_id))
            }
        }
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        let mut entries = Vec::new();
        for item in self.log.range(index_key(start)..) {
            let (key, bytes) = item.map_err(read_err)?;
            let index = u64::from_be_bytes(key.as_ref().try_into().map_err(read_err)?);
            if !range.contains(&index) {
                break;
            }
            entries.push(decode(&bytes).map_err(read_err)?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged_log_id = self.meta_get(PURGED)?;
        let last_log_id = self.last_entry_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        self.meta_put(VOTE, vote)?;
        // A vote must be on disk before it is answered.
        self.meta.flush_async().await.map_err(write_err)?;
        Ok(())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        self.meta_get(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        self.meta_put(COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(self.meta_get::<Option<LogId<NodeId>>>(COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            batch.insert(&index_key(entry.log_id.index), encode(&entry));
        }
        self.log.apply_batch(batch).map_err(write_err)?;
        if let Err(mpsc::error::SendError(callback)) = self.flusher.send(callback) {
            callback.log_io_completed(Err(std::io::Error::other("the log flusher stopped")));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let mut batch = sled::Batch::default();
        for item in self.log.range(index_key(log_id.index)..) {
            let (key, _) = item.map_err(read_err)?;
            batch.remove(key);
        }
        self.log.apply_batch(batch).map_err(write_err)?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.meta_put(PURGED, &log_id)?;
        let mut batch = sled::Batch::default();
        for item in self.log.range(..=index_key(log_id.index)) {
            let (key, _) = item.map_err(read_err)?;
            batch.remove(key);
        }
        self.log.apply_batch(batch).map_err(write_err)?;
        Ok(())
    }
}

// ------------------------------------------------------- the state machine

/// A change of a replicated run's owner, as applied on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerChange {
    /// The run.
    pub run: String,
    /// Its new owner.
    pub owner: String,
    /// The new epoch.
    pub epoch: u64,
}

/// Applies the model registry records of committed entries on this node.
/// The node sets one (the log knows nothing of the registry); every node
/// applies the same records in the same order.
pub trait RegistryApplier: Send + Sync + Debug {
    /// Applies `records`, the registry records of the entry committed at
    /// log `index`, in order. Called in log order, before the state machine
    /// records the entry as applied, and again after a crash for entries
    /// whose application did not reach the disk (the applier skips those it
    /// has already applied).
    ///
    /// # Errors
    /// When they cannot be applied (storage failed): Raft stops on this
    /// node.
    fn apply(&self, index: u64, records: &[Record]) -> Result<(), String>;
}

/// What the state machine holds, readable by the rest of the node.
#[derive(Debug)]
pub struct Applied {
    tree: sled::Tree,
    inner: RwLock<Inner>,
    owners: broadcast::Sender<OwnerChange>,
    /// Where registry records go (set once, before Raft starts).
    registry: OnceLock<Arc<dyn RegistryApplier>>,
}

#[derive(Debug, Default)]
struct Inner {
    machine: Machine,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, openraft::BasicNode>,
}

const APPLIED: &[u8] = b"m/applied";
const MEMBERSHIP: &[u8] = b"m/membership";
const RECORD: &[u8] = b"r/";
const JOURNAL: &[u8] = b"j/";

fn record_key(run: &str) -> Vec<u8> {
    [RECORD, run.as_bytes()].concat()
}

fn journal_prefix(run: &str) -> Vec<u8> {
    [JOURNAL, run.as_bytes(), b"/"].concat()
}

impl Applied {
    /// The record of one run.
    pub fn run(&self, run: &str) -> Option<RunRecord> {
        self.read().machine.run(run).cloned()
    }

    /// Every run's record.
    pub fn runs(&self) -> Vec<(String, RunRecord)> {
        self.read()
            .machine
            .runs()
            .map(|(k, v)| (k.to_owned(), v.clone()))
            .collect()
    }

    /// Unfinished runs owned by `node`, with their epochs.
    pub fn unfinished_of(&self, node: &str) -> Vec<(String, u64)> {
        self.read()
            .machine
            .unfinished_of(node)
            .map(|(r, e)| (r.to_owned(), e))
            .collect()
    }

    /// The committed journal of a run, in order.
    ///
    /// # Errors
    /// When sled fails.
    pub fn journal(&self, run: &str) -> Result<Vec<Vec<u8>>, String> {
        let mut events = Vec::new();
        for batch in self.tree.scan_prefix(journal_prefix(run)).values() {
            let batch = batch.map_err(|e| e.to_string())?;
            events.extend(decode::<Vec<Vec<u8>>>(&batch)?);
        }
        Ok(events)
    }

    /// The index of the last applied entry.
    pub fn last_applied(&self) -> Option<u64> {
        self.read().last_applied.map(|l| l.index)
    }

    /// Ownership changes as they are applied.
    pub fn owner_changes(&self) -> broadcast::Receiver<OwnerChange> {
        self.owners.subscribe()
    }

    /// Sends the registry records of entries applied from now on to
    /// `applier`. Set once; returns whether it was set.
    pub fn set_registry_applier(&self, applier: Arc<dyn RegistryApplier>) -> bool {
        self.registry.set(applier).is_ok()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// openraft's state machine; clones share [`Applied`].
#[derive(Debug, Clone)]
pub struct StateMachine {
    applied: Arc<Applied>,
}

impl StateMachine {
    fn load(tree: sled::Tree) -> Result<StateMachine, String> {
        let mut inner = Inner::default();
        if let Some(bytes) = tree.get(APPLIED).map_err(|e| e.to_string())? {
            inner.last_applied = decode(&bytes)?;
        }
        if let Some(bytes) = tree.get(MEMBERSHIP).map_err(|e| e.to_string())? {
            inner.membership = decode(&bytes)?;
        }
        let mut records = BTreeMap::new();
        for item in tree.scan_prefix(RECORD) {
            let (key, bytes) = item.map_err(|e| e.to_string())?;
            let run = String::from_utf8_lossy(&key[RECORD.len()..]).into_owned();
            records.insert(run, decode::<RunRecord>(&bytes)?);
        }
        inner.machine = Machine::from_records(records);
        Ok(StateMachine {
            applied: Arc::new(Applied {
                tree,
                inner: RwLock::new(inner),
                owners: broadcast::channel(1024).0,
                registry: OnceLock::new(),
            }),
        })
    }

    /// What the machine holds, for the rest of the node.
    pub fn applied(&self) -> Arc<Applied> {
        Arc::clone(&self.applied)
    }

    /// Writes what `command` changed into `batch` (after the pure machine
    /// accepted it).
    fn record(
        machine: &Machine,
        command: &Command,
        outcome: &Outcome,
        batch: &mut sled::Batch,
        changes: &mut Vec<OwnerChange>,
    ) {
        match (command, outcome) {
            (Command::Batch(commands), Outcome::Batch(outcomes)) => {
                for (c, o) in commands.iter().zip(outcomes) {
                    Self::record(machine, c, o, batch, changes);
                }
            }
            (Command::Own { run, node, epoch }, Outcome::Applied) => {
                if let Some(r) = machine.run(run) {
                    batch.insert(record_key(run), encode(r));
                }
                changes.push(OwnerChange {
                    run: run.clone(),
                    owner: node.clone(),
                    epoch: *epoch,
                });
            }
            (Command::Append(a), Outcome::Applied) => {
                // One key per append (its events in order, keyed by the
                // first one's number): sled's cost is per key.
                batch.insert(
                    [
                        journal_prefix(&a.run).as_slice(),
                        &a.first_seq.to_be_bytes(),
                    ]
                    .concat(),
                    encode(&a.events),
                );
                if let Some(r) = machine.run(&a.run) {
                    batch.insert(record_key(&a.run), encode(r));
                }
            }
            _ => {}
        }
    }
}

/// The registry records of `command`, in order.
fn registry_records(command: &Command, out: &mut Vec<Record>) {
    match command {
        Command::Registry(record) => out.push(record.clone()),
        Command::Batch(commands) => {
            for c in commands {
                registry_records(c, out);
            }
        }
        _ => {}
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let inner = self.applied.read();
        let mut pairs = Vec::new();
        for item in self.applied.tree.iter() {
            let (k, v) = item.map_err(read_err)?;
            pairs.push((k.to_vec(), v.to_vec()));
        }
        let last = inner.last_applied;
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: inner.membership.clone(),
            snapshot_id: format!(
                "{}-{}",
                last.map_or(0, |l| l.leader_id.term),
                last.map_or(0, |l| l.index)
            ),
        };
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(encode(&pairs))),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(
        Option<LogId<NodeId>>,
        StoredMembership<NodeId, openraft::BasicNode>,
    )> {
        let inner = self.applied.read();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Outcome>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let started = std::time::Instant::now();
        let mut outcomes = Vec::new();
        let mut batch = sled::Batch::default();
        let mut changes = Vec::new();
        let mut records = Vec::new();
        {
            let mut inner = self.applied.write();
            for entry in entries {
                inner.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => outcomes.push(Outcome::Applied),
                    EntryPayload::Normal(command) => {
                        let mut these = Vec::new();
                        registry_records(&command, &mut these);
                        if !these.is_empty() {
                            records.push((entry.log_id.index, these));
                        }
                        let outcome = inner.machine.apply(&command);
                        Self::record(&inner.machine, &command, &outcome, &mut batch, &mut changes);
                        outcomes.push(outcome);
                    }
                    EntryPayload::Membership(m) => {
                        inner.membership = StoredMembership::new(Some(entry.log_id), m);
                        batch.insert(MEMBERSHIP, encode(&inner.membership));
                        outcomes.push(Outcome::Applied);
                    }
                }
            }
            batch.insert(APPLIED, encode(&inner.last_applied));
            // The registry keeps what it applied itself, before the entries
            // count as applied here.
            if let Some(registry) = self.applied.registry.get() {
                for (index, these) in &records {
                    registry.apply(*index, these).map_err(write_err)?;
                }
            }
            self.applied.tree.apply_batch(batch).map_err(write_err)?;
        }
        for change in changes {
            let _ = self.applied.owners.send(change);
        }
        metrics::histogram!("symphony_raft_apply_seconds").record(started.elapsed().as_secs_f64());
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> StateMachine {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = decode(snapshot.get_ref()).map_err(read_err)?;
        let tree = &self.applied.tree;
        tree.clear().map_err(write_err)?;
        let mut batch = sled::Batch::default();
        for (k, v) in pairs {
            batch.insert(k, v);
        }
        tree.apply_batch(batch).map_err(write_err)?;
        let fresh = StateMachine::load(tree.clone()).map_err(read_err)?;
        let loaded = std::mem::take(&mut *fresh.applied.write());
        let mut inner = self.applied.write();
        *inner = loaded;
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        // Snapshots are built on demand; none is kept.
        Ok(None)
    }
}
