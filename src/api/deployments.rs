//! Model deployments over HTTP: deploy (`PUT`), read (`GET`) and undeploy
//! (`DELETE`) `/api/v1/models/{name}/deployment`, and
//! `POST /api/v1/models/{name}/rollback`.
//!
//! Every write is a registry record (replicated like versions and aliases);
//! the answer is the deployment as this node sees it, with where its
//! replicas run and how many requests this node routed to each version.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use super::models::{blocking, params, registry_error};
use crate::registry::{DeployRequest, ModelRef, RegistryError, VersionRef, check_name};
use crate::serving::{BatchConfig, ModelHost};

/// Body of `PUT /api/v1/models/{name}/deployment`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployBody {
    /// The primary: a version number, an alias or `latest`.
    version: VersionField,
    /// Replicas of the primary. Default 1.
    replicas: Option<u64>,
    /// Most requests a replica batches. Default 32.
    max_batch: Option<u64>,
    /// Longest an idle replica waits for more requests (`5ms`). Default 0.
    max_wait: Option<String>,
    /// A canary, `NAME@REF` of the same model.
    canary: Option<String>,
    /// The canary's percent of the requests, 0 to 100.
    percent: Option<u64>,
    /// Labels a node must carry to hold a replica.
    #[serde(default)]
    placement: BTreeMap<String, String>,
}

/// A version given as a number or as text.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum VersionField {
    Number(u64),
    Text(String),
}

/// The request in `body`, checked, or 400 saying what is wrong.
fn deploy_request(name: &str, body: &[u8]) -> Result<DeployRequest, ApiError> {
    let body: DeployBody = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?;
    let invalid = |why: String| registry_error(RegistryError::InvalidDeployment(why));
    let text = match body.version {
        VersionField::Number(n) => n.to_string(),
        VersionField::Text(t) => t,
    };
    let version = VersionRef::parse(&text).map_err(|e| registry_error(e.into()))?;
    let replicas = body.replicas.unwrap_or(1);
    let max_batch = body
        .max_batch
        .unwrap_or(BatchConfig::default().max_batch as u64);
    let max_wait_ms = match &body.max_wait {
        None => 0,
        Some(text) => humantime::parse_duration(text)
            .map_err(|e| {
                invalid(format!(
                    "max_wait \"{text}\" is not a duration such as 5ms: {e}"
                ))
            })?
            .as_millis()
            .min(u128::from(u64::MAX)) as u64,
    };
    let canary = match (body.canary, body.percent) {
        (None, None) => None,
        (None, Some(_)) => return Err(invalid("percent needs a canary".into())),
        (Some(_), None) => {
            return Err(invalid("a canary needs a percent (0 to 100)".into()));
        }
        (Some(_), Some(p)) if p > 100 => {
            return Err(invalid(format!("percent must be 0 to 100, got {p}")));
        }
        (Some(text), Some(p)) => {
            let reference = ModelRef::parse(&text).map_err(|e| registry_error(e.into()))?;
            if reference.name != name {
                return Err(invalid(format!(
                    "the canary {text} is a version of model \"{}\", not of \"{name}\"",
                    reference.name
                )));
            }
            Some((reference, p as u8))
        }
    };
    Ok(DeployRequest {
        version,
        replicas: u32::try_from(replicas).unwrap_or(u32::MAX),
        max_batch: u32::try_from(max_batch).unwrap_or(u32::MAX),
        max_wait_ms,
        canary,
        placement: body.placement,
    })
}

/// The deployment of `name` as this node sees it, as JSON.
fn status(shared: &AppState, name: &str) -> Result<Response, ApiError> {
    let host = host(shared);
    let status = host.deployment_status(name).map_err(registry_error)?;
    Ok(Json(status).into_response())
}

/// The node's model host, or one over its registry that counts nothing.
fn host(shared: &AppState) -> ModelHost {
    shared
        .state
        .models
        .clone()
        .unwrap_or_else(|| ModelHost::new(shared.state.registry.clone(), BatchConfig::default()))
}

/// `PUT /api/v1/models/{name}/deployment`: deploys (or redeploys) the model;
/// answers the deployment.
pub(crate) async fn deploy(
    State(shared): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let name = params(name)?;
    check_name(&name).map_err(|e| registry_error(e.into()))?;
    let body = body.map_err(|e| ApiError::new(e.status(), e.body_text().to_lowercase()))?;
    let request = deploy_request(&name, &body)?;
    let registry = shared.state.registry.clone();
    let model = name.clone();
    blocking(move || registry.deploy(&model, &request).map_err(registry_error)).await?;
    changed(&shared);
    status(&shared, &name)
}

/// `GET /api/v1/models/{name}/deployment`: the deployment, where its
/// replicas run, and requests this node routed per version; 404 when the
/// model never was deployed.
pub(crate) async fn show(
    State(shared): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let name = params(name)?;
    status(&shared, &name)
}

/// `DELETE /api/v1/models/{name}/deployment`: undeploys the model; answers
/// the (undeployed) deployment. 404 when it is not deployed.
pub(crate) async fn undeploy(
    State(shared): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let name = params(name)?;
    let registry = shared.state.registry.clone();
    let model = name.clone();
    blocking(move || registry.undeploy(&model).map_err(registry_error)).await?;
    changed(&shared);
    status(&shared, &name)
}

/// `POST /api/v1/models/{name}/rollback`: returns to the previous
/// deployment; answers the deployment. 404 when it is not deployed, 409
/// when there is nothing to return to.
pub(crate) async fn rollback(
    State(shared): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let name = params(name)?;
    let registry = shared.state.registry.clone();
    let model = name.clone();
    blocking(move || registry.rollback(&model).map_err(registry_error)).await?;
    changed(&shared);
    status(&shared, &name)
}

fn changed(shared: &AppState) {
    if let Some(host) = &shared.state.models {
        host.deployments_changed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: &str) -> Result<DeployRequest, String> {
        deploy_request("iris", body.as_bytes()).map_err(|e| {
            let response = e.into_response();
            response.status().to_string()
        })
    }

    #[test]
    fn deploy_bodies_are_read_and_checked() {
        let r = request(r#"{"version": 2, "replicas": 3, "max_wait": "5ms", "canary": "iris@production", "percent": 20, "placement": {"gpu": "true"}}"#).unwrap();
        assert_eq!(r.version, VersionRef::Number(2));
        assert_eq!((r.replicas, r.max_wait_ms, r.max_batch), (3, 5, 32));
        let (canary, percent) = r.canary.unwrap();
        assert_eq!(
            (canary.to_string().as_str(), percent),
            ("iris@production", 20)
        );
        assert_eq!(r.placement["gpu"], "true");
        let r = request(r#"{"version": "latest"}"#).unwrap();
        assert_eq!((r.version, r.replicas), (VersionRef::Latest, 1));
        for bad in [
            r#"{"version": 1, "canary": "iris@2", "percent": 101}"#,
            r#"{"version": 1, "canary": "rose@2", "percent": 10}"#,
            r#"{"version": 1, "percent": 10}"#,
            r#"{"version": 1, "canary": "iris@2"}"#,
            r#"{"version": 1, "max_wait": "soon"}"#,
            r#"{"version": 0}"#,
            r#"{"version": 1, "replica": 2}"#,
            r#"{"replicas": 2}"#,
        ] {
            assert!(request(bad).unwrap_err().starts_with("400"), "{bad}");
        }
    }
}
