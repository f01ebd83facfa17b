//! The model registry on the replicated log: the two adapters a node wires
//! between [`Registry`] and [`Replication`], so that neither knows the
//! other. Writes go into the log as `Command::Registry` entries
//! ([`RegistryLog`]); committed entries come back to the registry when the
//! state machine applies them ([`RegistryApplier`]).

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use futures::future::BoxFuture;

use crate::raft::Replication;
use crate::raft::state::Command;
use crate::raft::storage::RegistryApplier;
use crate::registry::{Record, RecordLog, Registry};

/// How long a registry write waits for the log to commit it, and then for
/// this node to apply it (each).
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// The registry's way into the log. Attached to the registry before the
/// cluster starts (so no record is merged outside the log), bound to the
/// log once it runs; writes before that are refused as unavailable.
#[derive(Debug, Default)]
pub(crate) struct RegistryLog {
    replication: OnceLock<Weak<Replication>>,
}

impl RegistryLog {
    /// Binds the log (once).
    pub(crate) fn bind(&self, replication: &Arc<Replication>) {
        let _ = self.replication.set(Arc::downgrade(replication));
    }

    fn replication(&self) -> Result<Arc<Replication>, String> {
        self.replication
            .get()
            .and_then(Weak::upgrade)
            .ok_or_else(|| "the replicated log is not running on this node".to_owned())
    }
}

/// Commits `command` and waits until this node applied it.
async fn commit_here(replication: Arc<Replication>, command: Command) -> Result<u64, String> {
    let (index, _) = replication
        .write(command, WRITE_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    replication
        .wait_applied(index, WRITE_TIMEOUT)
        .await
        .map_err(|e| {
            format!("log entry {index} was committed but not applied here in time: {e}")
        })?;
    Ok(index)
}

impl RecordLog for RegistryLog {
    fn catch_up(&self) -> BoxFuture<'static, Result<(), String>> {
        let replication = self.replication();
        Box::pin(async move {
            // An empty entry through the leader: once it is applied here,
            // so is everything committed before it.
            commit_here(replication?, Command::Batch(Vec::new()))
                .await
                .map(|_| ())
        })
    }

    fn commit(&self, record: Record) -> BoxFuture<'static, Result<u64, String>> {
        let replication = self.replication();
        Box::pin(async move { commit_here(replication?, Command::Registry(record)).await })
    }
}

/// The state machine's way into the registry.
#[derive(Debug)]
pub(crate) struct ApplyToRegistry(pub(crate) Registry);

impl RegistryApplier for ApplyToRegistry {
    fn apply(&self, index: u64, records: &[Record]) -> Result<(), String> {
        self.0
            .apply_committed(index, records)
            .map_err(|e| e.to_string())
    }
}
