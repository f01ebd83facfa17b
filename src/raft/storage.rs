//! openraft's storage: the log in an append-only file ([`LogFile`], made
//! durable in group commits before openraft hears it is), the rest in sled.
//!
//! The sled database has two trees: `raft_meta` (vote, committed, last
//! purged) and `raft_sm`, the state machine (run records, journal events
//! by append: one key per append, its events in order, the last applied
//! log id and membership). The state machine's writes reach the disk by
//! sled's periodic flush: after a crash openraft applies again from the
//! last applied id that did reach the disk, which is written in the same
//! atomic batch as what it covers, and the log keeps those entries (it is
//! purged only after the database is flushed).

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
use tokio::sync::broadcast;

use super::log_file::{self, LogFile};
use super::state::{Command, Machine, Outcome, RunRecord};
use super::{NodeId, TypeConfig};
use crate::registry::Record;

type StorageResult<T> = Result<T, StorageError<NodeId>>;

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, crate::codec::config()).expect("raft values encode")
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    bincode::serde::decode_from_slice(bytes, crate::codec::config())
        .map(|(v, _)| v)
        .map_err(|e| e.to_string())
}

fn read_err(e: impl ToString) -> StorageError<NodeId> {
    StorageIOError::read(&std::io::Error::other(e.to_string())).into()
}

fn write_err(e: impl ToString) -> StorageError<NodeId> {
    StorageIOError::write(&std::io::Error::other(e.to_string())).into()
}

/// How often sled writes the state machine to disk.
const SM_FLUSH_EVERY_MS: u64 = 500;

/// Opens (or creates) the log and state machine kept in `dir`: the sled
/// database there and the log file `raft.log` in it.
///
/// # Errors
/// When the directory cannot be opened (e.g. another process holds it) or
/// the log is damaged.
pub fn open(dir: &std::path::Path) -> Result<(LogStore, StateMachine), String> {
    let db = sled::Config::new()
        .path(dir)
        .mode(sled::Mode::HighThroughput)
        .flush_every_ms(Some(SM_FLUSH_EVERY_MS))
        .open()
        .map_err(|e| {
            format!(
                "cannot open the replicated log's data in {}: {e}",
                dir.display()
            )
        })?;
    let tree = |name: &str| db.open_tree(name).map_err(|e| e.to_string());
    let meta = tree("raft_meta")?;
    let purged: Option<LogId<NodeId>> = read_meta(&meta, PURGED)?;
    let file = LogFile::open(
        &dir.join("raft.log"),
        purged.map(|p| p.index),
        log_file::RECENT_BYTES,
    )?;
    move_sled_log(&db, &file)?;
    let machine = StateMachine::load(tree("raft_sm")?)?;
    Ok((LogStore { db, meta, file }, machine))
}

/// Moves the entries of a log kept in sled (before the log file) into the
/// file, once.
fn move_sled_log(db: &sled::Db, file: &LogFile) -> Result<(), String> {
    const OLD: &str = "raft_log";
    if !db.tree_names().iter().any(|n| n.as_ref() == OLD.as_bytes()) {
        return Ok(());
    }
    let old = db.open_tree(OLD).map_err(|e| e.to_string())?;
    if file.last().is_none() {
        let mut entries = Vec::new();
        for item in old.iter().values() {
            entries.push(decode::<Entry<TypeConfig>>(
                &item.map_err(|e| e.to_string())?,
            )?);
        }
        file.append(entries).map_err(|e| e.to_string())?;
        file.sync().map_err(|e| e.to_string())?;
    }
    db.drop_tree(OLD).map_err(|e| e.to_string())?;
    db.flush().map_err(|e| e.to_string())?;
    Ok(())
}

// ---------------------------------------------------------------- the log

/// The Raft log (a file) and its metadata (in sled); clones share them.
#[derive(Debug, Clone)]
pub struct LogStore {
    db: sled::Db,
    meta: sled::Tree,
    file: LogFile,
}

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const PURGED: &[u8] = b"purged";

/// The value under `key` in the log's metadata.
fn read_meta<T: serde::de::DeserializeOwned>(
    meta: &sled::Tree,
    key: &[u8],
) -> Result<Option<T>, String> {
    match meta.get(key).map_err(|e| e.to_string())? {
        None => Ok(None),
        Some(bytes) => decode(&bytes).map(Some),
    }
}

impl LogStore {
    fn meta_get<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> StorageResult<Option<T>> {
        read_meta(&self.meta, key).map_err(read_err)
    }

    fn meta_put<T: serde::Serialize>(&self, key: &[u8], value: &T) -> StorageResult<()> {
        self.meta.insert(key, encode(value)).map_err(write_err)?;
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let from = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let until = match range.end_bound() {
            Bound::Included(i) => i.saturating_add(1),
            Bound::Excluded(i) => *i,
            Bound::Unbounded => u64::MAX,
        };
        self.file.read(from, until).map_err(read_err)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged_log_id: Option<LogId<NodeId>> = self.meta_get(PURGED)?;
        // The file may still hold purged entries only (a crash between the
        // purge point's write and the file's emptying): the log ends at the
        // purge point then.
        let last_log_id = match (self.file.last(), last_purged_log_id) {
            (Some(last), Some(purged)) if last.index <= purged.index => Some(purged),
            (last, purged) => last.or(purged),
        };
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
        self.file.append(entries).map_err(write_err)?;
        self.file.when_durable(callback);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.file.truncate(log_id.index).map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        // The state machine that covers the purged entries (and the purge
        // point itself) reach the disk before the entries go.
        self.meta_put(PURGED, &log_id)?;
        self.db.flush_async().await.map_err(write_err)?;
        self.file.purge(log_id.index).map_err(write_err)
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
    /// The last snapshot built or installed here (kept in memory: the log is
    /// purged only up to a snapshot, and a restarted node builds a new one
    /// when a peer needs it).
    snapshot: std::sync::Mutex<Option<CurrentSnapshot>>,
}

type CurrentSnapshot = (SnapshotMeta<NodeId, openraft::BasicNode>, Vec<u8>);

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

    fn keep_snapshot(&self, meta: &SnapshotMeta<NodeId, openraft::BasicNode>, data: &[u8]) {
        *self.snapshot.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((meta.clone(), data.to_vec()));
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
                snapshot: std::sync::Mutex::new(None),
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
        let data = encode(&pairs);
        self.applied.keep_snapshot(&meta, &data);
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
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
        drop(inner);
        self.applied.keep_snapshot(meta, snapshot.get_ref());
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let current = self
            .applied
            .snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        Ok(current.as_ref().map(|(meta, data)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(data.clone())),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::testing::{StoreBuilder, Suite};

    /// Fresh storage in a directory of its own for each of openraft's
    /// storage tests.
    struct Fresh;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Fresh {
        async fn build(&self) -> StorageResult<(tempfile::TempDir, LogStore, StateMachine)> {
            let dir = tempfile::tempdir().map_err(write_err)?;
            let (log, machine) = open(dir.path()).map_err(write_err)?;
            Ok((dir, log, machine))
        }
    }

    #[test]
    fn passes_openraft_storage_suite() {
        Suite::test_all(Fresh).unwrap();
    }

    fn blank(index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    #[tokio::test]
    async fn a_purge_cut_short_by_a_crash_ends_the_log_at_the_purge_point() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (log, _) = open(dir.path()).unwrap();
            log.file.append((1..=5).map(blank)).unwrap();
            log.file.sync().unwrap();
            // The purge point reached the disk; the file was not emptied.
            log.meta_put(PURGED, &blank(7).log_id).unwrap();
            log.db.flush().unwrap();
        }
        let (mut log, _) = open(dir.path()).unwrap();
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(blank(7).log_id));
        assert_eq!(state.last_log_id, Some(blank(7).log_id));
        assert!(log.try_get_log_entries(..).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_purge_holds_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, _) = open(dir.path()).unwrap();
            log.file.append((1..=10).map(blank)).unwrap();
            log.purge(blank(4).log_id).await.unwrap();
        }
        let (mut log, _) = open(dir.path()).unwrap();
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(blank(4).log_id));
        assert_eq!(state.last_log_id, Some(blank(10).log_id));
        let left = log.try_get_log_entries(..).await.unwrap();
        assert_eq!(left, (5..=10).map(blank).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_log_kept_in_sled_moves_into_the_file() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            let old = db.open_tree("raft_log").unwrap();
            for i in 1..=5u64 {
                old.insert(i.to_be_bytes(), encode(&blank(i))).unwrap();
            }
            db.flush().unwrap();
        }
        let (mut log, _) = open(dir.path()).unwrap();
        assert_eq!(
            log.get_log_state().await.unwrap().last_log_id,
            Some(blank(5).log_id)
        );
        assert_eq!(
            log.try_get_log_entries(2..4).await.unwrap(),
            vec![blank(2), blank(3)]
        );
        drop(log);
        let (mut log, _) = open(dir.path()).unwrap();
        assert_eq!(
            log.try_get_log_entries(..).await.unwrap().len(),
            5,
            "moved once"
        );
    }
}
