//! The registry's metadata as a pure value: every version, deletion and
//! alias record, the numbers versions have, and which versions this node
//! deploys. No I/O and no clock: [`Registry`](super::Registry) persists the
//! records and stamps them; replication ships them and calls
//! [`Catalog::merge`].
//!
//! # Merging
//!
//! The state is a function of the *set* of records merged, whatever their
//! order and however often each arrives, so every node that has seen the
//! same records shows the same registry:
//!
//! - A version record is immutable and identified by its [`VersionId`]
//!   (stamp, node). Versions take the numbers they were registered under,
//!   in (stamp, node) order; one whose number an earlier version already
//!   holds (two nodes registered "version 3" concurrently) is renumbered to
//!   the smallest number above it that no other record asks for. The
//!   renumbering is reported in [`Merged::renumbered`].
//! - A deletion is a tombstone: the version stays out of sight and its
//!   number is never given again.
//! - An alias is last-writer-wins by (stamp, node); it points at a version
//!   by identity, so it follows that version when it is renumbered.
//! - A deployment is last-writer-wins by (stamp, node), like an alias; it
//!   points at its versions by identity. An undeploy is a deployment record
//!   without a spec, so it wins over older deployments the same way. The
//!   versions a deployment serves cannot be deleted.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::RegistryError;
use super::model::{
    Alias, Deletion, Deployment, DeploymentSpec, ModelRef, ModelVersion, Record, Stamp, VersionId,
    VersionRef,
};

/// Every model this node knows of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    models: BTreeMap<String, Model>,
}

/// What is known about one model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Model {
    /// Every registration, deleted or not, in (stamp, node) order; each
    /// one's `version` is its number now.
    versions: BTreeMap<VersionId, ModelVersion>,
    /// Deleted versions, by identity.
    deleted: BTreeMap<VersionId, Deletion>,
    /// Number → version, deleted ones included (numbers are not reused).
    numbers: BTreeMap<u32, VersionId>,
    /// The winning record of each alias; its `version` kept current.
    aliases: BTreeMap<String, Alias>,
    /// The winning deployment record; its version numbers kept current.
    deployment: Option<Deployment>,
}

/// What merging a record did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Merged {
    /// Whether the state changed (false: the record was known or lost).
    pub changed: bool,
    /// Versions whose number changed because of the record.
    pub renumbered: Vec<Renumbered>,
}

/// A version that lost its number to a concurrent registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renumbered {
    /// The model.
    pub name: String,
    /// The version, by identity.
    pub id: VersionId,
    /// Its artifact.
    pub checksum: String,
    /// Its number before.
    pub from: u32,
    /// Its number now.
    pub to: u32,
}

/// One line of `GET /api/v1/models`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSummary {
    /// The model's name.
    pub name: String,
    /// How many versions it has (deleted ones not counted).
    pub versions: usize,
    /// Its highest version, if it has any.
    pub latest: Option<u32>,
    /// Alias → version number.
    pub aliases: BTreeMap<String, u32>,
    /// When its newest version was registered, ms since the Unix epoch.
    pub updated_ms: Option<u64>,
}

/// A model with its versions and aliases: `GET /api/v1/models/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The model's name.
    pub name: String,
    /// Its versions, by number, deleted ones left out.
    pub versions: Vec<ModelVersion>,
    /// Its aliases, by name.
    pub aliases: Vec<Alias>,
    /// The numbers of the versions its deployment serves (primary, then
    /// canary); empty when it is not deployed.
    pub deployed: Vec<u32>,
    /// Its deployment, when it is deployed.
    pub deployment: Option<DeploymentSpec>,
}

impl Catalog {
    /// An empty catalog.
    pub fn new() -> Catalog {
        Catalog::default()
    }

    /// Merges one record, from this node or another. Deterministic and
    /// idempotent; the resulting state does not depend on the order records
    /// arrive in (see the module documentation for the rules).
    pub fn merge(&mut self, record: Record) -> Merged {
        match record {
            Record::Version(version) => self.merge_version(version),
            Record::Alias(alias) => self.merge_alias(alias),
            Record::Deletion(deletion) => self.merge_deletion(deletion),
            Record::Deployment(deployment) => self.merge_deployment(deployment),
        }
    }

    fn merge_deployment(&mut self, mut deployment: Deployment) -> Merged {
        let model = self.models.entry(deployment.name.clone()).or_default();
        if let Some(current) = &model.deployment {
            if (current.stamp, &current.by) >= (deployment.stamp, &deployment.by) {
                return Merged::default();
            }
        }
        model.renumber_deployment(&mut deployment);
        model.deployment = Some(deployment);
        Merged {
            changed: true,
            renumbered: Vec::new(),
        }
    }

    fn merge_version(&mut self, mut version: ModelVersion) -> Merged {
        let model = self.models.entry(version.name.clone()).or_default();
        let id = version.id();
        if model.versions.contains_key(&id) {
            return Merged::default();
        }
        version.version = version.registered_as;
        model.versions.insert(id, version);
        Merged {
            changed: true,
            renumbered: model.number(),
        }
    }

    fn merge_alias(&mut self, mut alias: Alias) -> Merged {
        let model = self.models.entry(alias.name.clone()).or_default();
        if let Some(current) = model.aliases.get(&alias.alias) {
            if (current.stamp, &current.by) >= (alias.stamp, &alias.by) {
                return Merged::default();
            }
        }
        if let Some(target) = model.versions.get(&alias.target) {
            alias.version = target.version;
        }
        model.aliases.insert(alias.alias.clone(), alias);
        Merged {
            changed: true,
            renumbered: Vec::new(),
        }
    }

    fn merge_deletion(&mut self, deletion: Deletion) -> Merged {
        let model = self.models.entry(deletion.name.clone()).or_default();
        if model.deleted.contains_key(&deletion.target) {
            return Merged::default();
        }
        model.deleted.insert(deletion.target.clone(), deletion);
        Merged {
            changed: true,
            renumbered: Vec::new(),
        }
    }

    /// The number the next version of `name` registered here takes: one
    /// above every number it ever had (deleted versions included).
    ///
    /// # Errors
    /// When the model has used up every number (u32).
    pub fn next_number(&self, name: &str) -> Result<u32, RegistryError> {
        let Some(model) = self.models.get(name) else {
            return Ok(1);
        };
        let highest = model
            .versions
            .values()
            .map(|v| v.version.max(v.registered_as))
            .max()
            .unwrap_or(0);
        highest
            .checked_add(1)
            .ok_or_else(|| RegistryError::NumbersExhausted(name.to_owned()))
    }

    /// The version a reference means.
    ///
    /// # Errors
    /// When the model, version or alias does not exist, or the version was
    /// deleted.
    pub fn resolve(&self, reference: &ModelRef) -> Result<&ModelVersion, RegistryError> {
        let name = &reference.name;
        let model = self.model(name)?;
        match &reference.version {
            VersionRef::Latest => model
                .live()
                .last()
                .ok_or_else(|| RegistryError::NoVersions(name.clone())),
            VersionRef::Number(n) => model.live_version(name, *n),
            VersionRef::Alias(alias) => {
                let a = model
                    .aliases
                    .get(alias)
                    .ok_or_else(|| RegistryError::UnknownAlias {
                        name: name.clone(),
                        alias: alias.clone(),
                    })?;
                if model.deleted.contains_key(&a.target) {
                    return Err(RegistryError::AliasToDeleted {
                        name: name.clone(),
                        alias: alias.clone(),
                        version: a.version,
                    });
                }
                model
                    .versions
                    .get(&a.target)
                    .ok_or_else(|| RegistryError::AliasTargetUnknown {
                        name: name.clone(),
                        alias: alias.clone(),
                        version: a.version,
                    })
            }
        }
    }

    /// Version `number` of `name`, unless it was deleted.
    ///
    /// # Errors
    /// When the model or version does not exist or the version was deleted.
    pub fn version(&self, name: &str, number: u32) -> Result<&ModelVersion, RegistryError> {
        self.model(name)?.live_version(name, number)
    }

    /// Checks that version `number` of `name` may be deleted: it exists, no
    /// alias points at it and its model's deployment does not serve it.
    /// Returns it.
    ///
    /// # Errors
    /// [`RegistryError::Aliased`] and [`RegistryError::Deployed`] when it is
    /// in use; the errors of [`Catalog::version`] otherwise.
    pub fn check_delete(&self, name: &str, number: u32) -> Result<&ModelVersion, RegistryError> {
        let model = self.model(name)?;
        let version = model.live_version(name, number)?;
        let id = version.id();
        let aliases: Vec<String> = model
            .aliases
            .values()
            .filter(|a| a.target == id)
            .map(|a| a.alias.clone())
            .collect();
        if !aliases.is_empty() {
            return Err(RegistryError::Aliased {
                name: name.to_owned(),
                version: number,
                aliases,
            });
        }
        if model
            .deployed_spec()
            .is_some_and(|d| d.targets().any(|t| *t == id))
        {
            return Err(RegistryError::Deployed {
                name: name.to_owned(),
                version: number,
            });
        }
        Ok(version)
    }

    /// Whether merging `record` would change anything (a version or
    /// deletion not seen before, an alias write newer than the current
    /// one). Lets the caller store only what is new, before merging it.
    pub fn is_new(&self, record: &Record) -> bool {
        let Some(model) = self.models.get(record.model()) else {
            return true;
        };
        match record {
            Record::Version(v) => !model.versions.contains_key(&v.id()),
            Record::Deletion(d) => !model.deleted.contains_key(&d.target),
            Record::Alias(a) => model
                .aliases
                .get(&a.alias)
                .is_none_or(|current| (current.stamp, &current.by) < (a.stamp, &a.by)),
            Record::Deployment(d) => model
                .deployment
                .as_ref()
                .is_none_or(|current| (current.stamp, &current.by) < (d.stamp, &d.by)),
        }
    }

    /// The winning deployment record of `name` (an undeploy included), if
    /// it ever was deployed.
    pub fn deployment(&self, name: &str) -> Option<&Deployment> {
        self.models.get(name)?.deployment.as_ref()
    }

    /// Every model that is deployed now, with its deployment.
    pub fn deployments(&self) -> impl Iterator<Item = (&str, &DeploymentSpec)> {
        self.models
            .iter()
            .filter_map(|(name, m)| Some((name.as_str(), m.deployed_spec()?)))
    }

    /// The live (not deleted) version of `name` with identity `id`.
    ///
    /// # Errors
    /// When no such version is known here, or it was deleted.
    pub fn version_by_id(
        &self,
        name: &str,
        id: &VersionId,
    ) -> Result<&ModelVersion, RegistryError> {
        let model = self.model(name)?;
        let version = model
            .versions
            .get(id)
            .ok_or_else(|| RegistryError::UnknownVersionId {
                name: name.to_owned(),
                id: id.to_string(),
            })?;
        if model.deleted.contains_key(id) {
            return Err(RegistryError::DeletedVersion {
                name: name.to_owned(),
                version: version.version,
            });
        }
        Ok(version)
    }

    /// Every model, by name.
    pub fn summaries(&self) -> Vec<ModelSummary> {
        self.models
            .iter()
            .filter(|(_, m)| !m.versions.is_empty() || !m.aliases.is_empty())
            .map(|(name, model)| {
                let live: Vec<&ModelVersion> = model.live().collect();
                ModelSummary {
                    name: name.clone(),
                    versions: live.len(),
                    latest: live.last().map(|v| v.version),
                    aliases: model
                        .aliases
                        .values()
                        .map(|a| (a.alias.clone(), a.version))
                        .collect(),
                    updated_ms: live.iter().map(|v| v.created_ms).max(),
                }
            })
            .collect()
    }

    /// One model with its live versions and its aliases.
    ///
    /// # Errors
    /// When no such model is known.
    pub fn info(&self, name: &str) -> Result<ModelInfo, RegistryError> {
        let model = self.model(name)?;
        Ok(ModelInfo {
            name: name.to_owned(),
            versions: model.live().cloned().collect(),
            aliases: model.aliases.values().cloned().collect(),
            deployed: model.deployed_numbers(),
            deployment: model.deployed_spec().cloned(),
        })
    }

    /// Every record, for sending to another node (a full snapshot):
    /// versions (deleted ones too, as their numbers stay taken), deletions
    /// and aliases.
    pub fn records(&self) -> Vec<Record> {
        let mut out = Vec::new();
        for model in self.models.values() {
            out.extend(model.versions.values().cloned().map(Record::Version));
            out.extend(model.deleted.values().cloned().map(Record::Deletion));
            out.extend(model.aliases.values().cloned().map(Record::Alias));
            out.extend(model.deployment.iter().cloned().map(Record::Deployment));
        }
        out
    }

    /// The greatest stamp of any record (what a clock must start after).
    pub fn max_stamp(&self) -> Stamp {
        self.records()
            .iter()
            .map(Record::stamp)
            .max()
            .unwrap_or_default()
    }

    /// Decides whether `record`, committed through the replicated log, takes
    /// effect, and how. Every node applies the same records in the same
    /// order to the same catalog, so every node decides the same:
    ///
    /// - a version takes the next number of its model *now* (numbers are
    ///   given out in log order, never twice; `registered_as` is set to it);
    /// - an alias, a deletion and a deployment are checked against the
    ///   catalog now: an alias or deployment whose version was deleted by
    ///   an earlier entry, a deletion of a version an earlier entry aliased
    ///   or deployed, and a deployment written from a generation another
    ///   write already replaced are refused;
    /// - an alias or deployment whose stamp does not beat the current one
    ///   (the writer's clock lags) gets the stamp right after it, so the
    ///   later entry in the log wins, whatever the clocks say.
    ///
    /// A version already known is returned as it is (merging it changes
    /// nothing).
    ///
    /// # Errors
    /// Why the record is refused; the catalog is unchanged.
    pub fn admit(&self, record: Record) -> Result<Record, RegistryError> {
        let after = |current: Stamp| {
            let mut clock = super::Clock::new();
            clock.observe(current);
            clock.tick(0)
        };
        match record {
            Record::Version(mut v) => {
                let known = self
                    .models
                    .get(&v.name)
                    .is_some_and(|m| m.versions.contains_key(&v.id()));
                if !known {
                    v.version = self.next_number(&v.name)?;
                    v.registered_as = v.version;
                }
                Ok(Record::Version(v))
            }
            Record::Alias(mut a) => {
                a.version = self.version_by_id(&a.name, &a.target)?.version;
                let current = self
                    .models
                    .get(&a.name)
                    .and_then(|m| m.aliases.get(&a.alias));
                if let Some(current) = current {
                    if (current.stamp, &current.by) >= (a.stamp, &a.by) {
                        a.stamp = after(current.stamp);
                    }
                }
                Ok(Record::Alias(a))
            }
            Record::Deletion(mut d) => {
                let number = self.version_by_id(&d.name, &d.target)?.version;
                self.check_delete(&d.name, number)?;
                d.version = number;
                Ok(Record::Deletion(d))
            }
            Record::Deployment(mut d) => {
                if let Some(spec) = &d.spec {
                    for id in spec.targets() {
                        self.version_by_id(&d.name, id)?;
                    }
                }
                let current = self.deployment(&d.name);
                let generation = current.map_or(0, |c| c.generation);
                if d.generation != generation + 1 {
                    return Err(RegistryError::DeploymentChanged {
                        name: d.name,
                        generation,
                    });
                }
                if let Some(current) = current {
                    if (current.stamp, &current.by) >= (d.stamp, &d.by) {
                        d.stamp = after(current.stamp);
                    }
                }
                Ok(Record::Deployment(d))
            }
        }
    }

    fn model(&self, name: &str) -> Result<&Model, RegistryError> {
        self.models
            .get(name)
            .filter(|m| !m.versions.is_empty() || !m.aliases.is_empty())
            .ok_or_else(|| RegistryError::UnknownModel(name.to_owned()))
    }
}

impl Model {
    /// The versions not deleted, by number.
    fn live(&self) -> impl DoubleEndedIterator<Item = &ModelVersion> {
        self.numbers
            .values()
            .filter(|id| !self.deleted.contains_key(*id))
            .filter_map(|id| self.versions.get(id))
    }

    fn live_version(&self, name: &str, number: u32) -> Result<&ModelVersion, RegistryError> {
        let id = self
            .numbers
            .get(&number)
            .ok_or_else(|| RegistryError::UnknownVersion {
                name: name.to_owned(),
                version: number,
            })?;
        if self.deleted.contains_key(id) {
            return Err(RegistryError::DeletedVersion {
                name: name.to_owned(),
                version: number,
            });
        }
        self.versions
            .get(id)
            .ok_or_else(|| RegistryError::UnknownVersion {
                name: name.to_owned(),
                version: number,
            })
    }

    /// What is deployed now, if anything.
    fn deployed_spec(&self) -> Option<&DeploymentSpec> {
        self.deployment.as_ref()?.spec.as_ref()
    }

    fn deployed_numbers(&self) -> Vec<u32> {
        self.deployed_spec()
            .map(|d| {
                std::iter::once(d.primary_version)
                    .chain(d.canary.as_ref().map(|c| c.version))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sets the version numbers in `deployment` from the versions it points
    /// at (they may have been renumbered).
    fn renumber_deployment(&self, deployment: &mut Deployment) {
        let number = |id: &VersionId| self.versions.get(id).map(|v| v.version);
        for spec in deployment
            .spec
            .iter_mut()
            .chain(deployment.previous.iter_mut())
        {
            if let Some(n) = number(&spec.primary) {
                spec.primary_version = n;
            }
            if let Some(canary) = &mut spec.canary {
                if let Some(n) = number(&canary.target) {
                    canary.version = n;
                }
            }
        }
    }

    /// Gives every version its number (the rules are in the module
    /// documentation), keeps the aliases' numbers current, and reports the
    /// versions whose number changed.
    fn number(&mut self) -> Vec<Renumbered> {
        let asked: BTreeSet<u32> = self.versions.values().map(|v| v.registered_as).collect();
        let mut taken: BTreeMap<u32, VersionId> = BTreeMap::new();
        let mut renumbered = Vec::new();
        for (id, version) in &mut self.versions {
            let mut number = version.registered_as;
            if taken.contains_key(&number) {
                number = number.saturating_add(1);
                while number < u32::MAX && (taken.contains_key(&number) || asked.contains(&number))
                {
                    number += 1;
                }
            }
            taken.insert(number, id.clone());
            if version.version != number {
                renumbered.push(Renumbered {
                    name: version.name.clone(),
                    id: id.clone(),
                    checksum: version.checksum.clone(),
                    from: version.version,
                    to: number,
                });
                version.version = number;
            }
        }
        self.numbers = taken;
        for alias in self.aliases.values_mut() {
            if let Some(target) = self.versions.get(&alias.target) {
                alias.version = target.version;
            }
        }
        if let Some(mut deployment) = self.deployment.take() {
            self.renumber_deployment(&mut deployment);
            self.deployment = Some(deployment);
        }
        renumbered
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::Signature;

    fn stamp(wall_ms: u64) -> Stamp {
        Stamp {
            wall_ms,
            logical: 0,
        }
    }

    fn version(name: &str, number: u32, checksum: &str, at: u64, node: &str) -> ModelVersion {
        ModelVersion {
            name: name.into(),
            version: number,
            registered_as: number,
            checksum: checksum.into(),
            size: 3,
            format: "onnx".into(),
            signature: Signature::default(),
            meta: BTreeMap::new(),
            created_ms: at,
            created_by: node.into(),
            stamp: stamp(at),
        }
    }

    fn alias(name: &str, alias: &str, target: &ModelVersion, at: u64, by: &str) -> Alias {
        Alias {
            name: name.into(),
            alias: alias.into(),
            version: target.version,
            target: target.id(),
            stamp: stamp(at),
            by: by.into(),
        }
    }

    fn deletion(target: &ModelVersion, at: u64, by: &str) -> Deletion {
        Deletion {
            name: target.name.clone(),
            target: target.id(),
            version: target.version,
            stamp: stamp(at),
            by: by.into(),
        }
    }

    fn spec(primary: &ModelVersion, canary: Option<(&ModelVersion, u8)>) -> DeploymentSpec {
        DeploymentSpec {
            primary: primary.id(),
            primary_version: primary.version,
            replicas: 2,
            max_batch: 32,
            max_wait_ms: 0,
            canary: canary.map(|(v, percent)| super::super::Canary {
                target: v.id(),
                version: v.version,
                percent,
            }),
            placement: BTreeMap::new(),
        }
    }

    fn deployment(name: &str, spec: Option<DeploymentSpec>, at: u64, by: &str) -> Deployment {
        Deployment {
            name: name.into(),
            generation: 1,
            spec,
            previous: None,
            stamp: stamp(at),
            by: by.into(),
        }
    }

    fn merged(records: &[Record]) -> Catalog {
        let mut catalog = Catalog::new();
        for r in records {
            catalog.merge(r.clone());
        }
        catalog
    }

    fn numbers(catalog: &Catalog, name: &str) -> Vec<(u32, String)> {
        catalog
            .info(name)
            .unwrap()
            .versions
            .into_iter()
            .map(|v| (v.version, v.checksum))
            .collect()
    }

    fn at(catalog: &Catalog, text: &str) -> Result<u32, RegistryError> {
        catalog
            .resolve(&ModelRef::parse(text).unwrap())
            .map(|v| v.version)
    }

    /// Every ordering of `items` (Heap's algorithm).
    fn permutations<T: Clone>(items: &[T]) -> Vec<Vec<T>> {
        fn go<T: Clone>(k: usize, items: &mut Vec<T>, out: &mut Vec<Vec<T>>) {
            if k <= 1 {
                out.push(items.clone());
                return;
            }
            for i in 0..k {
                go(k - 1, items, out);
                let j = if k % 2 == 0 { i } else { 0 };
                items.swap(j, k - 1);
            }
        }
        let mut out = Vec::new();
        go(items.len(), &mut items.to_vec(), &mut out);
        out
    }

    #[test]
    fn local_versions_are_numbered_in_turn() {
        let mut c = Catalog::new();
        assert_eq!(c.next_number("iris").unwrap(), 1);
        c.merge(Record::Version(version("iris", 1, "a", 10, "n1")));
        assert_eq!(c.next_number("iris").unwrap(), 2);
        c.merge(Record::Version(version("iris", 2, "b", 11, "n1")));
        assert_eq!(numbers(&c, "iris"), vec![(1, "a".into()), (2, "b".into())]);
        assert_eq!(at(&c, "iris").unwrap(), 2);
        assert_eq!(at(&c, "iris@1").unwrap(), 1);
        assert!(matches!(
            at(&c, "iris@3"),
            Err(RegistryError::UnknownVersion { version: 3, .. })
        ));
        assert!(matches!(
            at(&c, "rose"),
            Err(RegistryError::UnknownModel(_))
        ));
        assert!(matches!(
            at(&c, "iris@production"),
            Err(RegistryError::UnknownAlias { .. })
        ));
    }

    #[test]
    fn merging_twice_changes_nothing() {
        let v1 = version("iris", 1, "a", 10, "n1");
        let a = alias("iris", "production", &v1, 11, "n1");
        let d = deletion(&version("iris", 2, "b", 12, "n1"), 13, "n1");
        let records = [Record::Version(v1), Record::Alias(a), Record::Deletion(d)];
        let mut c = merged(&records);
        let once = c.clone();
        for r in &records {
            assert!(!c.is_new(r));
            assert_eq!(c.merge(r.clone()), Merged::default(), "{r:?}");
        }
        assert_eq!(c, once);
        // A whole snapshot merged again is a no-op too.
        for r in once.records() {
            assert!(!c.merge(r).changed);
        }
        assert_eq!(c, once);
    }

    #[test]
    fn a_number_taken_on_two_nodes_goes_to_the_earlier_registration() {
        // n1 and n2 both had versions 1 and 2, then both registered
        // "version 3" with different artifacts before hearing of each other.
        let base = [
            version("iris", 1, "a", 10, "n1"),
            version("iris", 2, "b", 20, "n1"),
        ];
        let on_n1 = version("iris", 3, "x", 30, "n1");
        let on_n2 = version("iris", 3, "y", 31, "n2");

        let mut n1 = merged(&base.clone().map(Record::Version));
        n1.merge(Record::Version(on_n1.clone()));
        let m = n1.merge(Record::Version(on_n2.clone()));
        assert!(m.changed);
        assert_eq!(
            m.renumbered,
            vec![Renumbered {
                name: "iris".into(),
                id: on_n2.id(),
                checksum: "y".into(),
                from: 3,
                to: 4,
            }]
        );

        let mut n2 = merged(&base.clone().map(Record::Version));
        n2.merge(Record::Version(on_n2.clone()));
        let a = alias("iris", "production", &on_n2, 32, "n2");
        n2.merge(Record::Alias(a.clone()));
        let m = n2.merge(Record::Version(on_n1.clone()));
        assert_eq!(m.renumbered.len(), 1);
        assert_eq!((m.renumbered[0].from, m.renumbered[0].to), (3, 4));
        n1.merge(Record::Alias(a));

        assert_eq!(n1, n2);
        assert_eq!(
            numbers(&n1, "iris"),
            vec![
                (1, "a".into()),
                (2, "b".into()),
                (3, "x".into()),
                (4, "y".into())
            ]
        );
        // The alias set on n2 to its own "version 3" follows that artifact.
        let production = n1
            .resolve(&ModelRef::parse("iris@production").unwrap())
            .unwrap();
        assert_eq!((production.version, &*production.checksum), (4, "y"));
        assert_eq!(n1.info("iris").unwrap().aliases[0].version, 4);
        // The next local registration comes after both.
        assert_eq!(n1.next_number("iris").unwrap(), 5);
    }

    #[test]
    fn equal_stamps_are_ordered_by_node() {
        let on_b = version("iris", 1, "b", 10, "b");
        let on_a = version("iris", 1, "a", 10, "a");
        let c = merged(&[Record::Version(on_b), Record::Version(on_a)]);
        assert_eq!(numbers(&c, "iris"), vec![(1, "a".into()), (2, "b".into())]);
    }

    #[test]
    fn a_renumbered_version_does_not_take_a_number_another_asked_for() {
        // "x" and "y" both asked for 3; "z" asked for 4 (it had not seen
        // "y"). "y" loses 3 and must not take 4 from "z".
        let x = version("m", 3, "x", 10, "n1");
        let y = version("m", 3, "y", 11, "n2");
        let z = version("m", 4, "z", 12, "n3");
        let c = merged(&[Record::Version(y), Record::Version(z), Record::Version(x)]);
        assert_eq!(
            numbers(&c, "m"),
            vec![(3, "x".into()), (4, "z".into()), (5, "y".into())]
        );
    }

    #[test]
    fn the_state_does_not_depend_on_the_order_records_arrive_in() {
        let v = [
            version("m", 1, "a", 10, "n1"),
            version("m", 1, "b", 10, "n2"),
            version("m", 2, "c", 12, "n1"),
            version("m", 2, "d", 11, "n3"),
        ];
        let records = vec![
            Record::Version(v[0].clone()),
            Record::Version(v[1].clone()),
            Record::Version(v[2].clone()),
            Record::Version(v[3].clone()),
            Record::Alias(alias("m", "production", &v[1], 20, "n2")),
            Record::Alias(alias("m", "production", &v[2], 20, "n3")),
            Record::Deletion(deletion(&v[0], 30, "n1")),
        ];
        let all = permutations(&records);
        assert_eq!(all.len(), 5040);
        let first = merged(&all[0]);
        for order in &all[1..] {
            assert_eq!(merged(order), first);
        }
        // Equal alias stamps: the greater node wins ("n3" set it to "c").
        let production = first
            .resolve(&ModelRef::parse("m@production").unwrap())
            .unwrap();
        assert_eq!(production.checksum, "c");
        // "a" keeps 1 and is deleted; "b" lost 1 to it.
        assert_eq!(
            numbers(&first, "m"),
            vec![(2, "d".into()), (3, "b".into()), (4, "c".into())]
        );
    }

    #[test]
    fn the_last_alias_write_wins() {
        let v1 = version("iris", 1, "a", 10, "n1");
        let v2 = version("iris", 2, "b", 11, "n1");
        let older = alias("iris", "production", &v1, 20, "n2");
        let newer = alias("iris", "production", &v2, 21, "n1");
        let mut c = merged(&[Record::Version(v1), Record::Version(v2)]);
        assert!(c.merge(Record::Alias(newer.clone())).changed);
        assert!(!c.merge(Record::Alias(older)).changed, "older write lost");
        assert!(!c.merge(Record::Alias(newer)).changed, "idempotent");
        assert_eq!(at(&c, "iris@production").unwrap(), 2);
    }

    #[test]
    fn deletion_is_refused_while_aliased_or_deployed() {
        let v1 = version("iris", 1, "a", 10, "n1");
        let v2 = version("iris", 2, "b", 11, "n1");
        let mut c = merged(&[Record::Version(v1.clone()), Record::Version(v2)]);
        c.merge(Record::Alias(alias("iris", "production", &v1, 20, "n1")));
        match c.check_delete("iris", 1) {
            Err(RegistryError::Aliased { aliases, .. }) => assert_eq!(aliases, ["production"]),
            other => panic!("{other:?}"),
        }
        let two = c.version("iris", 2).unwrap().clone();
        c.merge(Record::Alias(alias("iris", "production", &two, 21, "n1")));
        assert!(c.check_delete("iris", 1).is_ok());

        let one = c.version("iris", 1).unwrap().clone();
        c.merge(Record::Deployment(deployment(
            "iris",
            Some(spec(&one, None)),
            30,
            "n2",
        )));
        assert!(matches!(
            c.check_delete("iris", 1),
            Err(RegistryError::Deployed { version: 1, .. })
        ));
        assert_eq!(c.info("iris").unwrap().deployed, vec![1]);
        // A canary is deployed too.
        let canaried = spec(&two, Some((&one, 10)));
        c.merge(Record::Deployment(deployment(
            "iris",
            Some(canaried),
            31,
            "n1",
        )));
        assert!(matches!(
            c.check_delete("iris", 1),
            Err(RegistryError::Deployed { version: 1, .. })
        ));
        c.merge(Record::Deployment(deployment("iris", None, 32, "n1")));
        assert!(c.info("iris").unwrap().deployed.is_empty());
        assert!(c.check_delete("iris", 1).is_ok());
        assert!(matches!(
            c.check_delete("iris", 9),
            Err(RegistryError::UnknownVersion { .. })
        ));
    }

    #[test]
    fn deleted_versions_keep_their_numbers() {
        let v1 = version("iris", 1, "a", 10, "n1");
        let v2 = version("iris", 2, "b", 11, "n1");
        // The tombstone may arrive before the version it deletes.
        let c = merged(&[
            Record::Deletion(deletion(&v2, 12, "n1")),
            Record::Version(v1),
            Record::Version(v2),
        ]);
        assert_eq!(at(&c, "iris").unwrap(), 1, "latest skips deleted");
        assert!(matches!(
            at(&c, "iris@2"),
            Err(RegistryError::DeletedVersion { version: 2, .. })
        ));
        assert_eq!(c.next_number("iris").unwrap(), 3);
        assert_eq!(c.summaries()[0].versions, 1);
        assert_eq!(c.summaries()[0].latest, Some(1));
    }

    #[test]
    fn an_alias_to_a_deleted_version_says_so() {
        // Set on one node while another deleted the version.
        let v1 = version("iris", 1, "a", 10, "n1");
        let c = merged(&[
            Record::Version(v1.clone()),
            Record::Alias(alias("iris", "staging", &v1, 20, "n2")),
            Record::Deletion(deletion(&v1, 20, "n1")),
        ]);
        let e = at(&c, "iris@staging").unwrap_err();
        assert!(matches!(e, RegistryError::AliasToDeleted { .. }), "{e}");
        assert!(matches!(at(&c, "iris"), Err(RegistryError::NoVersions(_))));
    }

    #[test]
    fn the_last_deployment_write_wins_whatever_the_order() {
        let v = [
            version("m", 1, "a", 10, "n1"),
            version("m", 1, "b", 11, "n2"),
            version("m", 2, "c", 12, "n1"),
        ];
        let older = deployment("m", Some(spec(&v[0], None)), 20, "n1");
        let newer = deployment("m", Some(spec(&v[1], Some((&v[2], 20)))), 21, "n2");
        let undeploy_tied = deployment("m", None, 21, "n1");
        let records = vec![
            Record::Version(v[0].clone()),
            Record::Version(v[1].clone()),
            Record::Version(v[2].clone()),
            Record::Deployment(older.clone()),
            Record::Deployment(newer.clone()),
            Record::Deployment(undeploy_tied),
        ];
        let all = permutations(&records);
        let first = merged(&all[0]);
        for order in &all[1..] {
            assert_eq!(merged(order), first);
        }
        // Equal stamps: the greater node ("n2") wins.
        let won = first.deployment("m").unwrap();
        assert_eq!(won.by, "n2");
        let spec = won.spec.as_ref().unwrap();
        // "b" asked for 1 but lost it to "a": the deployment follows it to 3.
        assert_eq!(spec.primary, v[1].id());
        assert_eq!(spec.primary_version, 3);
        assert_eq!(spec.canary.as_ref().unwrap().version, 2);
        assert_eq!(first.info("m").unwrap().deployed, vec![3, 2]);
        assert_eq!(first.deployments().count(), 1);
        let mut c = first.clone();
        assert!(!c.is_new(&Record::Deployment(older.clone())));
        assert!(!c.merge(Record::Deployment(older)).changed);
        assert!(!c.merge(Record::Deployment(newer)).changed);
        assert_eq!(c, first);
        // A snapshot carries the deployment.
        let again = merged(&first.records());
        assert_eq!(again, first);
        assert_eq!(first.max_stamp(), stamp(21));
    }

    #[test]
    fn a_deployment_finds_its_versions_by_identity() {
        let v1 = version("iris", 1, "a", 10, "n1");
        let c = merged(&[
            Record::Version(v1.clone()),
            Record::Deletion(deletion(&version("iris", 2, "b", 11, "n1"), 12, "n1")),
        ]);
        assert_eq!(c.version_by_id("iris", &v1.id()).unwrap().checksum, "a");
        let gone = version("iris", 2, "b", 11, "n1").id();
        assert!(matches!(
            c.version_by_id("iris", &gone),
            Err(RegistryError::UnknownVersionId { .. })
        ));
        let c = merged(&[
            Record::Version(v1.clone()),
            Record::Deletion(deletion(&v1, 12, "n1")),
        ]);
        assert!(matches!(
            c.version_by_id("iris", &v1.id()),
            Err(RegistryError::DeletedVersion { .. })
        ));
        assert!(c.deployment("iris").is_none());
    }
}
