//! [`RunStore`] on sled, with group commit.
//!
//! One writer thread owns every write. It takes whatever batches are waiting,
//! writes them all, flushes once (one fsync for many events), then completes
//! them in order. Readers go straight to sled.
//!
//! Layout: tree `journal`, key `run_id 0x00 first_seq(u64 BE)`, value one
//! appended batch: its events, each as a little-endian u32 length and the
//! encoded event (one key per batch, not per event: sled inserts are the
//! writer's main cost); tree `runs`, key `run_id`, value the encoded
//! [`RunSummary`].

use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use super::{
    AppendBatch, Durable, RunStore, RunSummary, StoreError, decode_summary, encode_summary,
};

/// Most batches the writer folds into one flush.
const MAX_GROUP: usize = 4096;

/// Run journals in a sled database.
#[derive(Debug)]
pub struct SledStore {
    journal: sled::Tree,
    runs: sled::Tree,
    writer: Option<mpsc::Sender<(AppendBatch, Durable)>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Drop for SledStore {
    /// Lets the writer finish what is queued and release the database, so
    /// the directory can be opened again as soon as this returns.
    fn drop(&mut self) {
        self.writer.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl SledStore {
    /// Opens (or creates) the database in `dir`.
    ///
    /// # Errors
    /// When the directory cannot be opened, for example because another
    /// process holds it.
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|e| open_error(dir, e))?;
        let journal = db.open_tree("journal").map_err(io)?;
        let runs = db.open_tree("runs").map_err(io)?;
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            db,
            journal: journal.clone(),
            runs: runs.clone(),
        };
        let thread = thread::Builder::new()
            .name("symphony-journal".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Io(e.to_string()))?;
        Ok(SledStore {
            journal,
            runs,
            writer: Some(tx),
            thread: Some(thread),
        })
    }
}

fn open_error(dir: &Path, e: sled::Error) -> StoreError {
    let text = e.to_string();
    if text.contains("lock") || text.contains("WouldBlock") {
        StoreError::Io(format!(
            "data dir {} is in use by another symphony process",
            dir.display()
        ))
    } else {
        StoreError::Io(format!("cannot open data dir {}: {text}", dir.display()))
    }
}

fn io(e: sled::Error) -> StoreError {
    StoreError::Io(e.to_string())
}

fn journal_key(run: &str, seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(run.len() + 9);
    key.extend_from_slice(run.as_bytes());
    key.push(0);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

impl RunStore for SledStore {
    fn append(&self, batch: AppendBatch, done: Durable) {
        let Some(writer) = &self.writer else {
            return done(Err(StoreError::Closed));
        };
        if let Err(mpsc::SendError((_, done))) = writer.send((batch, done)) {
            done(Err(StoreError::Closed));
        }
    }

    fn journal(&self, run: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut prefix = run.as_bytes().to_vec();
        prefix.push(0);
        let mut events = Vec::new();
        for record in self.journal.scan_prefix(prefix).values() {
            split_record(&record.map_err(io)?, &mut events)?;
        }
        Ok(events)
    }

    fn summary(&self, run: &str) -> Result<Option<RunSummary>, StoreError> {
        match self.runs.get(run.as_bytes()).map_err(io)? {
            Some(bytes) => decode_summary(&bytes).map(Some),
            None => Ok(None),
        }
    }

    fn summaries(&self) -> Result<Vec<RunSummary>, StoreError> {
        let mut all = self
            .runs
            .iter()
            .values()
            .map(|v| decode_summary(&v.map_err(io)?))
            .collect::<Result<Vec<_>, _>>()?;
        all.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        Ok(all)
    }
}

/// One journal record from a batch of encoded events.
fn join_record(events: &[Vec<u8>]) -> Vec<u8> {
    let len = events.iter().map(|e| e.len() + 4).sum();
    let mut record = Vec::with_capacity(len);
    for event in events {
        record.extend_from_slice(&(event.len() as u32).to_le_bytes());
        record.extend_from_slice(event);
    }
    record
}

/// The events of one journal record, appended to `out`.
fn split_record(mut record: &[u8], out: &mut Vec<Vec<u8>>) -> Result<(), StoreError> {
    while !record.is_empty() {
        let (len, rest) = record
            .split_first_chunk::<4>()
            .ok_or_else(|| StoreError::Corrupt("truncated journal record".into()))?;
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return Err(StoreError::Corrupt("truncated journal record".into()));
        }
        out.push(rest[..len].to_vec());
        record = &rest[len..];
    }
    Ok(())
}

struct Writer {
    db: sled::Db,
    journal: sled::Tree,
    runs: sled::Tree,
}

impl Writer {
    fn run(self, rx: mpsc::Receiver<(AppendBatch, Durable)>) {
        let mut group = Vec::new();
        while let Ok(first) = rx.recv() {
            group.push(first);
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(next) => group.push(next),
                    Err(_) => break,
                }
            }
            let result = self.commit(&group);
            for (_, done) in group.drain(..) {
                done(result.clone());
            }
        }
        // Every sender is gone: the store was dropped. Make the tail durable.
        let _ = self.db.flush();
    }

    fn commit(&self, group: &[(AppendBatch, Durable)]) -> Result<(), StoreError> {
        let started = Instant::now();
        let mut journal = sled::Batch::default();
        let mut runs = sled::Batch::default();
        let mut events = 0usize;
        for (batch, _) in group {
            if !batch.events.is_empty() {
                let key = journal_key(&batch.run, batch.first_seq);
                journal.insert(key, join_record(&batch.events));
            }
            events += batch.events.len();
            if let Some(summary) = &batch.summary {
                runs.insert(summary.id.as_bytes(), encode_summary(summary));
            }
        }
        self.journal.apply_batch(journal).map_err(io)?;
        self.runs.apply_batch(runs).map_err(io)?;
        self.db.flush().map_err(io)?;
        metrics::histogram!("symphony_journal_flush_seconds").record(started.elapsed());
        metrics::histogram!("symphony_journal_batch_events").record(events as f64);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::channel;

    use super::*;
    use crate::store::RunStatus;

    fn summary(id: &str, status: RunStatus) -> RunSummary {
        RunSummary {
            id: id.into(),
            workflow: "wf".into(),
            status,
            created_ms: 1,
            updated_ms: 2,
        }
    }

    #[test]
    fn a_truncated_record_is_reported_not_misread() {
        let record = join_record(&[vec![1, 2, 3], vec![4]]);
        let mut out = Vec::new();
        split_record(&record, &mut out).unwrap();
        assert_eq!(out, vec![vec![1, 2, 3], vec![4]]);
        for cut in (1..record.len()).filter(|&c| c != 7) {
            let mut out = Vec::new();
            assert!(
                split_record(&record[..cut], &mut out).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn appended_events_survive_reopen_in_order() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            let (tx, rx) = channel();
            for seq in 0..10u64 {
                let tx = tx.clone();
                store.append(
                    AppendBatch {
                        run: "r1".into(),
                        first_seq: seq * 2,
                        epoch: 0,
                        events: vec![vec![seq as u8], vec![seq as u8 + 100]],
                        summary: (seq == 0).then(|| summary("r1", RunStatus::Running)),
                    },
                    Box::new(move |r| tx.send(r.is_ok()).unwrap()),
                );
            }
            for _ in 0..10 {
                assert!(rx.recv().unwrap());
            }
        }
        let store = SledStore::open(dir.path()).unwrap();
        let journal = store.journal("r1").unwrap();
        assert_eq!(journal.len(), 20);
        assert_eq!(journal[0], vec![0]);
        assert_eq!(journal[1], vec![100]);
        assert_eq!(journal[19], vec![109]);
        assert!(
            store.journal("r").unwrap().is_empty(),
            "prefix must not leak"
        );
        assert_eq!(
            store.summaries().unwrap(),
            vec![summary("r1", RunStatus::Running)]
        );
    }
}
