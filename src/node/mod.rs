//! A Symphony node: its configuration, and (once the cluster layer lands)
//! the process that joins the cluster, runs the engine and serves the API.

pub mod config;

pub use self::config::NodeConfig;

// TEMPORARY STUB, to be replaced by the cluster layer: keeps the build green
// until the real node lands. `symphony node` reports this error and exits 1;
// the end-to-end client tests fail on it on purpose.
/// Runs a node until it is stopped.
///
/// # Errors
/// Always, for now: the node is not built yet.
pub async fn run(config: NodeConfig) -> Result<(), String> {
    let _ = config;
    Err("not built yet".into())
}
