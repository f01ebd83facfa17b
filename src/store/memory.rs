//! In-memory [`RunStore`]: tests, and runs that asked for no durability.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{AppendBatch, Durable, RunStore, RunSummary, StoreError};

/// Keeps everything in process memory; `append` completes at once.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    journals: BTreeMap<String, Vec<Vec<u8>>>,
    summaries: BTreeMap<String, RunSummary>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }
}

impl RunStore for MemoryStore {
    fn append(&self, batch: AppendBatch, done: Durable) {
        {
            let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            let journal = inner.journals.entry(batch.run.clone()).or_default();
            journal.truncate(batch.first_seq as usize);
            journal.extend(batch.events);
            if let Some(summary) = batch.summary {
                inner.summaries.insert(batch.run, summary);
            }
        }
        done(Ok(()));
    }

    fn journal(&self, run: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        Ok(inner.journals.get(run).cloned().unwrap_or_default())
    }

    fn summary(&self, run: &str) -> Result<Option<RunSummary>, StoreError> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        Ok(inner.summaries.get(run).cloned())
    }

    fn summaries(&self) -> Result<Vec<RunSummary>, StoreError> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = inner.summaries.values().cloned().collect();
        all.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        Ok(all)
    }
}
