//! The registry's records on disk: a sled database of its own (the node's
//! run store keeps its handle to itself), the only code of the registry that
//! names sled.
//!
//! Layout: tree `records`, key `kind name 0x00 suffix`, value the encoded
//! [`Record`]: kind `v` (version) and `d` (deletion) with the version's
//! identity as suffix (stamp as big-endian `wall_ms`, `logical`, then the
//! node), kind `a` (alias) with the alias as suffix, only the winning record
//! kept, and kind `p` (deployment) with nothing after the name, only the
//! winning record kept; key `!log-applied` holds the index of the last
//! replicated log entry applied (nodes in a Raft log). Every write is flushed before it returns: registry
//! writes are rare and must survive a crash. (A tree `deployed` that older
//! versions wrote is no longer read: deployments are records now.)

use std::path::Path;

use super::RegistryError;
use super::model::{Record, VersionId};

/// The registry's sled database.
#[derive(Debug)]
pub(crate) struct RecordStore {
    db: sled::Db,
    records: sled::Tree,
}

/// Everything a [`RecordStore`] holds.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    /// Every stored record.
    pub(crate) records: Vec<Record>,
    /// The index of the last replicated log entry applied (0: none).
    pub(crate) log_applied: u64,
}

/// The key of the last applied log index: no record's key starts with `!`.
const LOG_APPLIED: &[u8] = b"!log-applied";

impl RecordStore {
    /// Opens (or creates) the database in `dir`.
    pub(crate) fn open(dir: &Path) -> Result<RecordStore, RegistryError> {
        let db = sled::Config::new().path(dir).open().map_err(|e| {
            let text = e.to_string();
            if text.contains("lock") || text.contains("WouldBlock") {
                RegistryError::Storage(format!(
                    "registry {} is in use by another symphony process",
                    dir.display()
                ))
            } else {
                RegistryError::Storage(format!(
                    "cannot open the registry {}: {text}",
                    dir.display()
                ))
            }
        })?;
        let records = db.open_tree("records").map_err(io)?;
        Ok(RecordStore { db, records })
    }

    /// Reads everything back.
    pub(crate) fn load(&self) -> Result<Loaded, RegistryError> {
        let mut loaded = Loaded::default();
        for item in self.records.iter() {
            let (key, value) = item.map_err(io)?;
            if key.as_ref() == LOG_APPLIED {
                let bytes: [u8; 8] = value
                    .as_ref()
                    .try_into()
                    .map_err(|_| RegistryError::Storage("corrupt registry log index".to_owned()))?;
                loaded.log_applied = u64::from_be_bytes(bytes);
                continue;
            }
            loaded.records.push(decode(&value)?);
        }
        Ok(loaded)
    }

    /// Stores the records a replicated log entry changed together with the entry's index, in one atomic batch, and
    /// flushes: after a crash, entries up to the stored index are not
    /// applied again, and every later one is.
    pub(crate) fn put_applied(&self, records: &[Record], index: u64) -> Result<(), RegistryError> {
        let mut batch = sled::Batch::default();
        for record in records {
            batch.insert(key(record), encode(record));
        }
        batch.insert(LOG_APPLIED, index.to_be_bytes().to_vec());
        self.records.apply_batch(batch).map_err(io)?;
        self.db.flush().map_err(io)?;
        Ok(())
    }

    /// Stores a record (replacing an alias's previous record) and flushes.
    pub(crate) fn put(&self, record: &Record) -> Result<(), RegistryError> {
        self.records
            .insert(key(record), encode(record))
            .map_err(io)?;
        self.db.flush().map_err(io)?;
        Ok(())
    }
}

fn key(record: &Record) -> Vec<u8> {
    let (kind, name) = match record {
        Record::Version(v) => (b'v', &v.name),
        Record::Deletion(d) => (b'd', &d.name),
        Record::Alias(a) => (b'a', &a.name),
        Record::Deployment(d) => (b'p', &d.name),
    };
    let mut key = vec![kind];
    key.extend_from_slice(name.as_bytes());
    key.push(0);
    let id = |key: &mut Vec<u8>, id: &VersionId| {
        key.extend_from_slice(&id.stamp.wall_ms.to_be_bytes());
        key.extend_from_slice(&id.stamp.logical.to_be_bytes());
        key.extend_from_slice(id.node.as_bytes());
    };
    match record {
        Record::Version(v) => id(&mut key, &v.id()),
        Record::Deletion(d) => id(&mut key, &d.target),
        Record::Alias(a) => key.extend_from_slice(a.alias.as_bytes()),
        Record::Deployment(_) => {}
    }
    key
}

fn encode<T: bincode::Encode>(value: &T) -> Vec<u8> {
    bincode::encode_to_vec(value, crate::codec::config()).expect("registry record encodes")
}

fn decode<T: bincode::Decode<()>>(bytes: &[u8]) -> Result<T, RegistryError> {
    bincode::decode_from_slice(bytes, crate::codec::config())
        .map(|(value, _)| value)
        .map_err(|e| RegistryError::Storage(format!("corrupt registry record: {e}")))
}

fn io(e: sled::Error) -> RegistryError {
    RegistryError::Storage(e.to_string())
}
