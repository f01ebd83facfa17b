//! Prometheus metrics: the process-wide recorder and `GET /metrics`.

use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::warn;

use super::AppState;
use super::error::ApiError;

/// The content type of the Prometheus text format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How often histograms are drained into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Bucket bounds for every `*_seconds` histogram: 100 µs to 60 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Bucket bounds for `symphony_journal_batch_events` and
/// `symphony_model_batch_size`.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder once per process and returns its handle
/// (idempotent; a second call returns the same handle). `None` when another
/// metrics recorder was installed first. Histograms ending in `_seconds`
/// are exported as Prometheus histograms; a background thread runs the
/// recorder's upkeep every 5 seconds.
pub fn install_metrics() -> Option<PrometheusHandle> {
    HANDLE.get_or_init(install).clone()
}

fn install() -> Option<PrometheusHandle> {
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("symphony_journal_batch_events".into()),
                BATCH_BUCKETS,
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("symphony_model_batch_size".into()),
                BATCH_BUCKETS,
            )
        });
    let handle = match builder.and_then(PrometheusBuilder::install_recorder) {
        Ok(handle) => handle,
        Err(e) => {
            warn!(error = %e, "Cannot install the Prometheus recorder; /metrics is off.");
            return None;
        }
    };
    let upkeep = handle.clone();
    let spawned = std::thread::Builder::new()
        .name("symphony-metrics".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        warn!(error = %e, "Cannot start the metrics upkeep thread; histograms are drained on scrape.");
    }
    Some(handle)
}

/// `GET /metrics`: the Prometheus text format; 404 when this node exports
/// no metrics.
pub(crate) async fn render(State(shared): State<AppState>) -> Result<Response, ApiError> {
    let Some(handle) = shared.state.metrics.as_ref() else {
        return Err(ApiError::not_found("metrics are not enabled on this node"));
    };
    handle.run_upkeep();
    Ok(([(header::CONTENT_TYPE, TEXT_FORMAT)], handle.render()).into_response())
}
