//! Writing deployment records: deploy, roll back, undeploy. Each write is a
//! new [`Deployment`] record, stamped and merged like any other record, so
//! it reaches every node the way versions and aliases do; which node runs
//! which replica is not recorded anywhere but computed by every node (see
//! `serving::placement`).

use std::collections::BTreeMap;

use tracing::info;

use super::model::{Canary, Deployment, DeploymentSpec, ModelRef, Record, VersionId, VersionRef};
use super::{Registry, RegistryError, check_name, now_ms};

/// Most replicas a deployment may ask for.
pub const MAX_REPLICAS: u32 = 1024;

/// What `deploy` is asked to do, before the references are resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployRequest {
    /// The primary version: a number, an alias or `latest`.
    pub version: VersionRef,
    /// Replicas of the primary, at least 1.
    pub replicas: u32,
    /// Most requests a replica batches, at least 1. Default 32.
    pub max_batch: u32,
    /// Longest an idle replica waits for more requests, in ms. Default 0.
    pub max_wait_ms: u64,
    /// A canary: a reference to another version of the same model and the
    /// percent of requests it takes.
    pub canary: Option<(ModelRef, u8)>,
    /// Labels a node must carry to hold a replica.
    pub placement: BTreeMap<String, String>,
}

impl DeployRequest {
    /// `replicas` replicas of `version`, default batching, no canary, no
    /// placement labels.
    pub fn new(version: VersionRef, replicas: u32) -> DeployRequest {
        DeployRequest {
            version,
            replicas,
            max_batch: 32,
            max_wait_ms: 0,
            canary: None,
            placement: BTreeMap::new(),
        }
    }
}

impl Registry {
    /// Deploys `name` as `request` says, replacing its deployment (which
    /// becomes the one a rollback returns to). Returns the new record.
    ///
    /// # Errors
    /// [`RegistryError::InvalidDeployment`] for zero or too many replicas, a
    /// batch of zero, a percent over 100, a canary of another model or
    /// equal to the primary; the errors of resolving a reference (unknown
    /// model, version or alias); a storage failure.
    pub fn deploy(&self, name: &str, request: &DeployRequest) -> Result<Deployment, RegistryError> {
        check_name(name)?;
        let invalid = |why: String| Err(RegistryError::InvalidDeployment(why));
        if request.replicas == 0 {
            return invalid("replicas must be at least 1".into());
        }
        if request.replicas > MAX_REPLICAS {
            return invalid(format!("replicas must be at most {MAX_REPLICAS}"));
        }
        if request.max_batch == 0 {
            return invalid("max_batch must be at least 1".into());
        }
        for (k, v) in &request.placement {
            if k.is_empty() || v.is_empty() {
                return invalid(format!(
                    "placement label {k:?}={v:?} needs a key and a value"
                ));
            }
        }
        let record = self.write(|state| self.deploy_record(state, name, request))?;
        let record = deployment(record)?;
        let primary_version = record.spec.as_ref().map_or(0, |s| s.primary_version);
        info!(
            model = %name,
            version = primary_version,
            replicas = request.replicas,
            generation = record.generation,
            "Model deployed."
        );
        Ok(record)
    }

    /// The record deploying `name` as `request` says writes, checked
    /// against `state`.
    fn deploy_record(
        &self,
        state: &mut super::State,
        name: &str,
        request: &DeployRequest,
    ) -> Result<Record, RegistryError> {
        let invalid = |why: String| Err(RegistryError::InvalidDeployment(why));
        let primary = state.catalog.resolve(&ModelRef {
            name: name.to_owned(),
            version: request.version.clone(),
        })?;
        let (primary_id, primary_version) = (primary.id(), primary.version);
        let canary = match &request.canary {
            None => None,
            Some((reference, percent)) => {
                if reference.name != name {
                    return invalid(format!(
                        "the canary {reference} is a version of model \"{}\", not of \"{name}\"",
                        reference.name
                    ));
                }
                if *percent > 100 {
                    return invalid(format!("percent must be 0 to 100, got {percent}"));
                }
                let version = state.catalog.resolve(reference)?;
                if version.id() == primary_id {
                    return invalid(format!(
                        "the canary {reference} is version {}, the version deployed as primary",
                        version.version
                    ));
                }
                Some(Canary {
                    target: version.id(),
                    version: version.version,
                    percent: *percent,
                })
            }
        };
        let spec = DeploymentSpec {
            primary: primary_id,
            primary_version,
            replicas: request.replicas,
            max_batch: request.max_batch,
            max_wait_ms: request.max_wait_ms,
            canary,
            placement: request.placement.clone(),
        };
        let current = state.catalog.deployment(name).cloned();
        Ok(Record::Deployment(Deployment {
            name: name.to_owned(),
            generation: current.as_ref().map_or(1, |d| d.generation + 1),
            previous: current.and_then(|d| d.spec),
            spec: Some(spec),
            stamp: state.clock.tick(now_ms()),
            by: self.inner.node.clone(),
        }))
    }

    /// Returns `name` to its previous deployment: writes a new record whose
    /// spec is the previous one (and whose previous is the current one, so
    /// a second rollback undoes the first).
    ///
    /// # Errors
    /// [`RegistryError::NotDeployed`] and
    /// [`RegistryError::NoPreviousDeployment`]; a version of the previous
    /// deployment deleted since; a storage failure.
    pub fn rollback(&self, name: &str) -> Result<Deployment, RegistryError> {
        check_name(name)?;
        let record = self.write(|state| {
            let current = state
                .catalog
                .deployment(name)
                .cloned()
                .ok_or_else(|| RegistryError::NotDeployed(name.to_owned()))?;
            let previous = current
                .previous
                .clone()
                .ok_or_else(|| RegistryError::NoPreviousDeployment(name.to_owned()))?;
            for id in previous.targets() {
                state.catalog.version_by_id(name, id)?;
            }
            Ok(Record::Deployment(Deployment {
                name: name.to_owned(),
                generation: current.generation + 1,
                spec: Some(previous),
                previous: current.spec,
                stamp: state.clock.tick(now_ms()),
                by: self.inner.node.clone(),
            }))
        })?;
        let record = deployment(record)?;
        info!(model = %name, generation = record.generation, "Model deployment rolled back.");
        Ok(record)
    }

    /// Undeploys `name`: its replicas stop everywhere and its versions can
    /// be deleted again. A rollback afterwards redeploys what was deployed.
    ///
    /// # Errors
    /// [`RegistryError::NotDeployed`]; a storage failure.
    pub fn undeploy(&self, name: &str) -> Result<Deployment, RegistryError> {
        check_name(name)?;
        let record = self.write(|state| {
            let current = state
                .catalog
                .deployment(name)
                .cloned()
                .filter(|d| d.spec.is_some())
                .ok_or_else(|| RegistryError::NotDeployed(name.to_owned()))?;
            Ok(Record::Deployment(Deployment {
                name: name.to_owned(),
                generation: current.generation + 1,
                spec: None,
                previous: current.spec,
                stamp: state.clock.tick(now_ms()),
                by: self.inner.node.clone(),
            }))
        })?;
        let record = deployment(record)?;
        info!(model = %name, generation = record.generation, "Model undeployed.");
        Ok(record)
    }

    /// The deployment record of `name` (an undeploy included), if it was
    /// ever deployed.
    pub fn deployment(&self, name: &str) -> Option<Deployment> {
        self.lock().catalog.deployment(name).cloned()
    }

    /// Every model deployed now, with its deployment.
    pub fn deployments(&self) -> Vec<(String, DeploymentSpec)> {
        self.lock()
            .catalog
            .deployments()
            .map(|(name, spec)| (name.to_owned(), spec.clone()))
            .collect()
    }

    /// The live version of `name` with identity `id`.
    ///
    /// # Errors
    /// When this node does not know it or it was deleted.
    pub fn version_by_id(
        &self,
        name: &str,
        id: &VersionId,
    ) -> Result<super::ModelVersion, RegistryError> {
        self.lock().catalog.version_by_id(name, id).cloned()
    }
}

/// The deployment record a deployment write took effect as.
fn deployment(record: Record) -> Result<Deployment, RegistryError> {
    match record {
        Record::Deployment(d) => Ok(d),
        other => Err(super::unexpected(&other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::Signature;

    fn registry() -> Registry {
        let r = Registry::in_memory("n1");
        for bytes in [b"one", b"two"] {
            r.register("iris", bytes, "onnx", BTreeMap::new(), Signature::default())
                .unwrap();
        }
        r
    }

    fn canary(text: &str, percent: u8) -> Option<(ModelRef, u8)> {
        Some((ModelRef::parse(text).unwrap(), percent))
    }

    #[test]
    fn bad_deployments_say_what_is_wrong() {
        let r = registry();
        let deploy = |req: DeployRequest| r.deploy("iris", &req).unwrap_err().to_string();
        let mut req = DeployRequest::new(VersionRef::Number(1), 0);
        assert!(deploy(req.clone()).contains("replicas must be at least 1"));
        req.replicas = 2;
        req.max_batch = 0;
        assert!(deploy(req.clone()).contains("max_batch"));
        req.max_batch = 8;
        req.canary = canary("iris@2", 101);
        assert!(deploy(req.clone()).contains("percent must be 0 to 100"));
        req.canary = canary("rose@1", 10);
        assert!(deploy(req.clone()).contains("not of \"iris\""));
        req.canary = canary("iris@1", 10);
        assert!(deploy(req.clone()).contains("deployed as primary"));
        req.canary = canary("iris@7", 10);
        assert!(matches!(
            r.deploy("iris", &req),
            Err(RegistryError::UnknownVersion { version: 7, .. })
        ));
        req.canary = None;
        req.version = VersionRef::Number(9);
        assert!(matches!(
            r.deploy("iris", &req),
            Err(RegistryError::UnknownVersion { version: 9, .. })
        ));
        assert!(matches!(
            r.deploy("rose", &DeployRequest::new(VersionRef::Latest, 1)),
            Err(RegistryError::UnknownModel(_))
        ));
        assert!(r.deployment("iris").is_none());
    }

    #[test]
    fn deploy_rollback_and_undeploy_write_new_records() {
        let r = registry();
        assert!(matches!(
            r.rollback("iris"),
            Err(RegistryError::NotDeployed(_))
        ));
        let first = r
            .deploy("iris", &DeployRequest::new(VersionRef::Number(1), 2))
            .unwrap();
        assert_eq!(first.generation, 1);
        assert!(matches!(
            r.rollback("iris"),
            Err(RegistryError::NoPreviousDeployment(_))
        ));
        let mut req = DeployRequest::new(VersionRef::Number(1), 3);
        req.canary = canary("iris@2", 20);
        let second = r.deploy("iris", &req).unwrap();
        assert_eq!(second.previous, first.spec);
        assert_eq!(r.show("iris").unwrap().deployed, vec![1, 2]);
        assert!(matches!(
            r.delete("iris", 2),
            Err(RegistryError::Deployed { version: 2, .. })
        ));
        let back = r.rollback("iris").unwrap();
        assert_eq!(back.spec, first.spec);
        assert_eq!(back.generation, 3);
        assert!(back.stamp > second.stamp);
        assert_eq!(r.show("iris").unwrap().deployed, vec![1]);
        r.delete("iris", 2).unwrap();
        // The rollback of the rollback would need version 2, now deleted.
        assert!(matches!(
            r.rollback("iris"),
            Err(RegistryError::DeletedVersion { version: 2, .. })
        ));
        let gone = r.undeploy("iris").unwrap();
        assert!(gone.spec.is_none());
        assert!(r.deployments().is_empty());
        assert!(matches!(
            r.undeploy("iris"),
            Err(RegistryError::NotDeployed(_))
        ));
        r.delete("iris", 1).unwrap();
    }
}
