//! The model registry over HTTP: register versions (the body is the
//! artifact), list and read models and versions, move aliases, delete
//! versions, download artifacts.
//!
//! Registry calls that touch the disk (and reading a model's signature) run
//! on blocking threads. The upload has its own body limit,
//! [`ApiState::max_model_bytes`](super::ApiState::max_model_bytes), larger
//! than the one of the other endpoints.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use crate::registry::{
    DEFAULT_FORMAT, ModelRef, RegistryError, VersionRef, check_format, check_meta, check_name,
};

/// Largest model artifact accepted by default: 512 MiB.
pub const DEFAULT_MAX_MODEL_BYTES: usize = 512 * 1024 * 1024;

/// `POST /api/v1/models/{name}/versions?format=onnx&meta=K=V…`: the body is
/// the artifact; answers 201 with the new version.
pub(crate) async fn register(
    State(shared): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let name = params(name)?;
    check_name(&name).map_err(|e| registry_error(e.into()))?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text().to_lowercase()))?;
    let (format, meta) = upload_options(&query)?;
    let limit = shared.state.max_model_bytes;
    let bytes = read_limited(body, &headers, limit).await?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "the request body is empty: send the model file's bytes (application/octet-stream)",
        ));
    }
    let registry = shared.state.registry.clone();
    let version = blocking(move || {
        let signature = crate::inference::read_signature(&bytes).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("cannot read the model's signature: {e}"),
            )
        })?;
        registry
            .register(&name, &bytes, &format, meta, signature)
            .map_err(registry_error)
    })
    .await?;
    let location = format!(
        "/api/v1/models/{}/versions/{}",
        version.name, version.version
    );
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(version),
    )
        .into_response())
}

/// `format` (default `onnx`) and the `meta=K=V` pairs of an upload's query.
fn upload_options(
    query: &[(String, String)],
) -> Result<(String, BTreeMap<String, String>), ApiError> {
    let mut format = None;
    let mut meta = BTreeMap::new();
    for (key, value) in query {
        match key.as_str() {
            "format" if format.is_some() => {
                return Err(ApiError::bad_request("\"format\" is given more than once"));
            }
            "format" => format = Some(check_format(value).map_err(|e| registry_error(e.into()))?),
            "meta" => {
                let Some((k, v)) = value.split_once('=') else {
                    return Err(ApiError::bad_request(format!(
                        "meta \"{value}\" is not KEY=VALUE"
                    )));
                };
                if meta.insert(k.to_owned(), v.to_owned()).is_some() {
                    return Err(ApiError::bad_request(format!(
                        "metadata key \"{k}\" is given more than once"
                    )));
                }
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter \"{other}\"; expected format or meta"
                )));
            }
        }
    }
    check_meta(&meta).map_err(|e| registry_error(RegistryError::Meta(e)))?;
    Ok((format.unwrap_or_else(|| DEFAULT_FORMAT.to_owned()), meta))
}

/// The whole body, or 413 as soon as it is known to exceed `limit`.
async fn read_limited(body: Body, headers: &HeaderMap, limit: usize) -> Result<Vec<u8>, ApiError> {
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    let mut bytes = Vec::with_capacity(announced.map_or(0, |n| n as usize));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        if bytes.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body is larger than the limit of {limit} bytes"),
    )
    .with("limit_bytes", limit)
}

/// `GET /api/v1/models`: every model, by name.
pub(crate) async fn list(State(shared): State<AppState>) -> Response {
    Json(shared.state.registry.list()).into_response()
}

/// `GET /api/v1/models/{name}`: a model with its versions and aliases.
pub(crate) async fn show(
    State(shared): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let name = params(name)?;
    let info = shared.state.registry.show(&name).map_err(registry_error)?;
    Ok(Json(info).into_response())
}

/// `GET /api/v1/models/{name}/versions/{version}`: a version by number,
/// alias or `latest`.
pub(crate) async fn version(
    State(shared): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let reference = reference(params(path)?)?;
    let version = shared
        .state
        .registry
        .resolve(&reference)
        .map_err(registry_error)?;
    Ok(Json(version).into_response())
}

/// `GET /api/v1/models/{name}/versions/{version}/artifact`: the artifact's
/// bytes, checked against its checksum.
pub(crate) async fn artifact(
    State(shared): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let reference = reference(params(path)?)?;
    let registry = shared.state.registry.clone();
    let version = registry.resolve(&reference).map_err(registry_error)?;
    let checksum = version.checksum.clone();
    let bytes = blocking(move || registry.artifact(&checksum).map_err(registry_error)).await?;
    let file = format!("{}-{}.{}", version.name, version.version, version.format);
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::ETAG, format!("\"sha256:{}\"", version.checksum)),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file}\""),
            ),
        ],
        bytes,
    )
        .into_response())
}

/// Body of `PUT /api/v1/models/{name}/aliases/{alias}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AliasRequest {
    /// The version the alias is to point at.
    version: u32,
}

/// `PUT /api/v1/models/{name}/aliases/{alias}` with `{"version": N}`:
/// creates or moves the alias; answers the alias record.
pub(crate) async fn set_alias(
    State(shared): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (name, alias) = params(path)?;
    let body = body.map_err(|e| ApiError::new(e.status(), e.body_text().to_lowercase()))?;
    let request: AliasRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?;
    let registry = shared.state.registry.clone();
    let alias = blocking(move || {
        registry
            .set_alias(&name, &alias, request.version)
            .map_err(registry_error)
    })
    .await?;
    Ok(Json(alias).into_response())
}

/// `DELETE /api/v1/models/{name}/versions/{version}`: deletes a version by
/// number; answers what it was. 409 while an alias points at it or it is
/// deployed.
pub(crate) async fn delete(
    State(shared): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let (name, version) = params(path)?;
    check_name(&name).map_err(|e| registry_error(e.into()))?;
    let number = match VersionRef::parse(&version).map_err(|e| registry_error(e.into()))? {
        VersionRef::Number(n) => n,
        _ => {
            return Err(ApiError::bad_request(format!(
                "versions are deleted by number, not by alias: got \"{version}\""
            )));
        }
    };
    let registry = shared.state.registry.clone();
    let deleted = blocking(move || registry.delete(&name, number).map_err(registry_error)).await?;
    Ok(Json(deleted).into_response())
}

/// `NAME` and `VERSION` of a path as a reference, or 400.
fn reference((name, version): (String, String)) -> Result<ModelRef, ApiError> {
    check_name(&name).map_err(|e| registry_error(e.into()))?;
    let version = VersionRef::parse(&version).map_err(|e| registry_error(e.into()))?;
    Ok(ModelRef { name, version })
}

/// A path's parameters, or 400 (e.g. percent-encoding that is not UTF-8).
pub(crate) fn params<T>(path: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    path.map(|Path(p)| p)
        .map_err(|e| ApiError::bad_request(e.body_text().to_lowercase()))
}

/// Runs registry work on a blocking thread.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("the registry failed: {e}")))?
}

/// The answer to a registry error: 400 for what the request got wrong, 404
/// for what does not exist, 409 for what is in use, 500 for this node's
/// failures, 503 when the replicated log cannot commit a write now. Carries `model` and `version` when the error names them.
pub(crate) fn registry_error(e: RegistryError) -> ApiError {
    use RegistryError as E;
    let status = match &e {
        E::Name(_)
        | E::Ref(_)
        | E::Format(_)
        | E::Meta(_)
        | E::EmptyArtifact
        | E::BadChecksum(_)
        | E::InvalidDeployment(_) => StatusCode::BAD_REQUEST,
        E::UnknownModel(_)
        | E::UnknownVersion { .. }
        | E::DeletedVersion { .. }
        | E::NoVersions(_)
        | E::UnknownAlias { .. }
        | E::AliasToDeleted { .. }
        | E::AliasTargetUnknown { .. }
        | E::ArtifactMissing(_)
        | E::UnknownVersionId { .. }
        | E::NotDeployed(_) => StatusCode::NOT_FOUND,
        E::Aliased { .. }
        | E::Deployed { .. }
        | E::NumbersExhausted(_)
        | E::NoPreviousDeployment(_)
        | E::DeploymentChanged { .. } => StatusCode::CONFLICT,
        E::CorruptArtifact { .. } | E::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
        E::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    let mut error = ApiError::new(status, e.to_string());
    match e {
        E::UnknownModel(name)
        | E::NoVersions(name)
        | E::NumbersExhausted(name)
        | E::NotDeployed(name)
        | E::NoPreviousDeployment(name)
        | E::DeploymentChanged { name, .. } => {
            error = error.with("model", name);
        }
        E::UnknownVersion { name, version }
        | E::DeletedVersion { name, version }
        | E::Deployed { name, version } => {
            error = error.with("model", name).with("version", version);
        }
        E::Aliased {
            name,
            version,
            aliases,
        } => {
            error = error
                .with("model", name)
                .with("version", version)
                .with("aliases", aliases);
        }
        E::UnknownAlias { name, alias }
        | E::AliasToDeleted { name, alias, .. }
        | E::AliasTargetUnknown { name, alias, .. } => {
            error = error.with("model", name).with("alias", alias);
        }
        E::ArtifactMissing(checksum) | E::CorruptArtifact { checksum, .. } => {
            error = error.with("checksum", checksum);
        }
        _ => {}
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(query: &[(&str, &str)]) -> Result<(String, BTreeMap<String, String>), ApiError> {
        let query: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        upload_options(&query)
    }

    #[test]
    fn upload_options_read_format_and_meta() {
        let (format, meta) = options(&[]).unwrap();
        assert_eq!(format, "onnx");
        assert!(meta.is_empty());
        let (_, meta) = options(&[
            ("format", "onnx"),
            ("meta", "owner=ml"),
            ("meta", "note=a=b"),
        ])
        .unwrap();
        assert_eq!(meta["owner"], "ml");
        assert_eq!(meta["note"], "a=b");
        for bad in [
            &[("format", "pt")][..],
            &[("format", "onnx"), ("format", "onnx")],
            &[("meta", "novalue")],
            &[("meta", "k=1"), ("meta", "k=2")],
            &[("meta", "=v")],
            &[("tag", "x")],
        ] {
            let e = options(bad).unwrap_err();
            assert_eq!(
                e.into_response().status(),
                StatusCode::BAD_REQUEST,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn registry_errors_get_their_status() {
        let status = |e: RegistryError| registry_error(e).into_response().status();
        assert_eq!(
            status(RegistryError::UnknownModel("m".into())),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status(RegistryError::Aliased {
                name: "m".into(),
                version: 1,
                aliases: vec!["production".into()]
            }),
            StatusCode::CONFLICT
        );
        assert_eq!(
            status(RegistryError::CorruptArtifact {
                checksum: "c".into(),
                actual: "d".into()
            }),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            status(RegistryError::EmptyArtifact),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(RegistryError::Unavailable("no quorum".into())),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
