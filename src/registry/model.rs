//! The registry's records and the rules for what users type: model names,
//! alias names, references (`NAME`, `NAME@3`, `NAME@production`), formats
//! and checksums. Pure: no I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::inference::Signature;

/// Longest model or alias name, in characters.
pub const MAX_NAME_LEN: usize = 64;

/// The alias every model has without setting it: its highest version.
pub const LATEST: &str = "latest";

/// The only artifact format accepted for now, and the default.
pub const DEFAULT_FORMAT: &str = "onnx";

/// Longest metadata key, in bytes.
pub const MAX_META_KEY_LEN: usize = 128;

/// A hybrid logical clock reading: the writer's wall clock in milliseconds,
/// and a counter that orders what happens within one millisecond (or while
/// the wall clock lags behind a stamp seen from another node).
///
/// Stamps from one node only ever grow; together with the node's name they
/// identify a record and order concurrent writes the same way on every
/// node.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    Encode,
    Decode,
)]
pub struct Stamp {
    /// Milliseconds since the Unix epoch (at least; see [`Clock`](super::Clock)).
    pub wall_ms: u64,
    /// Orders stamps with the same `wall_ms`.
    pub logical: u32,
}

impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.wall_ms, self.logical)
    }
}

/// What identifies a registration on every node, whatever number it ends
/// up with: when and where it was written. Ordered by stamp, then node.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Encode, Decode,
)]
pub struct VersionId {
    /// The registration's stamp.
    pub stamp: Stamp,
    /// The node that registered it.
    pub node: String,
}

impl fmt::Display for VersionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.stamp, self.node)
    }
}

/// One immutable version of a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct ModelVersion {
    /// The model's name.
    pub name: String,
    /// The version's number now: 1, 2, 3 … Equal to `registered_as` unless
    /// another node took that number concurrently (see
    /// [`Catalog::merge`](super::Catalog::merge)).
    pub version: u32,
    /// The number the version was registered under.
    pub registered_as: u32,
    /// Hex SHA-256 of the artifact: its address in the artifact store.
    pub checksum: String,
    /// The artifact's size in bytes.
    pub size: u64,
    /// The artifact's format (`onnx`).
    pub format: String,
    /// The model's inputs and outputs, read from the artifact.
    pub signature: Signature,
    /// What the user attached (`--meta K=V`).
    pub meta: BTreeMap<String, String>,
    /// When it was registered, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// The node that registered it.
    pub created_by: String,
    /// The registration's stamp on `created_by`'s clock.
    pub stamp: Stamp,
}

impl ModelVersion {
    /// The registration's identity.
    pub fn id(&self) -> VersionId {
        VersionId {
            stamp: self.stamp,
            node: self.created_by.clone(),
        }
    }
}

/// A name that points at one version of a model and can be moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct Alias {
    /// The model's name.
    pub name: String,
    /// The alias (`production`, `staging`, …).
    pub alias: String,
    /// The number of the version it points at (kept current when that
    /// version is renumbered).
    pub version: u32,
    /// The version it points at, by identity, so it keeps pointing at the
    /// same artifact when that version is renumbered.
    pub target: VersionId,
    /// When it was set, on `by`'s clock: the latest (stamp, by) wins.
    pub stamp: Stamp,
    /// The node that set it.
    pub by: String,
}

/// The record that a version was deleted (a tombstone: its number is never
/// given again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct Deletion {
    /// The model's name.
    pub name: String,
    /// The deleted version, by identity.
    pub target: VersionId,
    /// Its number when it was deleted (for messages).
    pub version: u32,
    /// When it was deleted, on `by`'s clock.
    pub stamp: Stamp,
    /// The node that deleted it.
    pub by: String,
}

/// How a model is deployed: which version serves it on how many replicas,
/// how they batch, an optional canary and where they may run. Every node
/// computes where the replicas go from this and its membership view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct DeploymentSpec {
    /// The version serving the traffic the canary does not take, by identity.
    pub primary: VersionId,
    /// Its number (kept current when it is renumbered).
    pub primary_version: u32,
    /// Replicas of the primary, each on its own node.
    pub replicas: u32,
    /// Most requests a replica runs as one batch.
    pub max_batch: u32,
    /// Longest an idle replica waits for more requests, in milliseconds.
    pub max_wait_ms: u64,
    /// A second version taking a share of the requests.
    pub canary: Option<Canary>,
    /// Labels a node must carry to hold a replica.
    pub placement: BTreeMap<String, String>,
}

impl DeploymentSpec {
    /// The versions this deployment serves: the primary, then the canary.
    pub fn targets(&self) -> impl Iterator<Item = &VersionId> {
        std::iter::once(&self.primary).chain(self.canary.as_ref().map(|c| &c.target))
    }
}

/// The canary of a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct Canary {
    /// The canary version, by identity.
    pub target: VersionId,
    /// Its number (kept current when it is renumbered).
    pub version: u32,
    /// Percent of the deployment's requests it takes, 0 to 100.
    pub percent: u8,
}

/// The record of a model's deployment: last writer wins by (stamp, by),
/// like an alias. `spec: None` means undeployed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct Deployment {
    /// The model's name.
    pub name: String,
    /// Counts the writes to this model's deployment (1 for the first).
    pub generation: u64,
    /// What is deployed now; `None` after an undeploy.
    pub spec: Option<DeploymentSpec>,
    /// What was deployed before this write: what a rollback returns to.
    pub previous: Option<DeploymentSpec>,
    /// When it was written, on `by`'s clock: the latest (stamp, by) wins.
    pub stamp: Stamp,
    /// The node that wrote it.
    pub by: String,
}

/// Everything one node tells another about the registry: the unit of
/// replication and of [`Catalog::merge`](super::Catalog::merge).
///
/// Variants are only ever added, never renamed, so mixed versions of nodes
/// keep understanding each other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// A version was registered.
    Version(ModelVersion),
    /// An alias was set or moved.
    Alias(Alias),
    /// A version was deleted.
    Deletion(Deletion),
    /// A model was deployed, redeployed, rolled back or undeployed.
    Deployment(Deployment),
}

impl Record {
    /// The model the record is about.
    pub fn model(&self) -> &str {
        match self {
            Record::Version(v) => &v.name,
            Record::Alias(a) => &a.name,
            Record::Deletion(d) => &d.name,
            Record::Deployment(d) => &d.name,
        }
    }

    /// When the record was written.
    pub fn stamp(&self) -> Stamp {
        match self {
            Record::Version(v) => v.stamp,
            Record::Alias(a) => a.stamp,
            Record::Deletion(d) => d.stamp,
            Record::Deployment(d) => d.stamp,
        }
    }
}

/// Which version of a model a reference means.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum VersionRef {
    /// The highest version that is not deleted (`NAME`, `NAME@latest`).
    Latest,
    /// A version by number (`NAME@3`).
    Number(u32),
    /// The version an alias points at (`NAME@production`).
    Alias(String),
}

impl VersionRef {
    /// Parses what follows the `@`: a number, `latest` or an alias name.
    ///
    /// # Errors
    /// When it is empty, 0, too large or not a valid alias name.
    pub fn parse(text: &str) -> Result<VersionRef, RefError> {
        if text.is_empty() {
            return Err(RefError::EmptyVersion);
        }
        if text == LATEST {
            return Ok(VersionRef::Latest);
        }
        if text.bytes().all(|b| b.is_ascii_digit()) {
            return match text.parse::<u32>() {
                Ok(0) => Err(RefError::VersionZero),
                Ok(n) => Ok(VersionRef::Number(n)),
                Err(_) => Err(RefError::VersionTooLarge(text.to_owned())),
            };
        }
        check_alias(text)?;
        Ok(VersionRef::Alias(text.to_owned()))
    }
}

impl fmt::Display for VersionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionRef::Latest => f.write_str(LATEST),
            VersionRef::Number(n) => write!(f, "{n}"),
            VersionRef::Alias(a) => f.write_str(a),
        }
    }
}

/// `NAME`, `NAME@VERSION` or `NAME@ALIAS`: a version of a model as users
/// name it. `NAME` alone is `NAME@latest`, the highest version that is not
/// deleted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelRef {
    /// The model's name.
    pub name: String,
    /// Which of its versions.
    pub version: VersionRef,
}

impl ModelRef {
    /// Parses `NAME`, `NAME@3`, `NAME@production` or `NAME@latest`.
    ///
    /// # Errors
    /// When the name or what follows `@` breaks the naming rules; the error
    /// says which rule.
    pub fn parse(text: &str) -> Result<ModelRef, RefError> {
        if text.is_empty() {
            return Err(RefError::Empty);
        }
        let (name, version) = match text.split_once('@') {
            None => (text, VersionRef::Latest),
            Some((_, rest)) if rest.contains('@') => {
                return Err(RefError::TwoAts(text.to_owned()));
            }
            Some((name, rest)) => (name, VersionRef::parse(rest)?),
        };
        check_name(name)?;
        Ok(ModelRef {
            name: name.to_owned(),
            version,
        })
    }
}

impl FromStr for ModelRef {
    type Err = RefError;

    fn from_str(s: &str) -> Result<ModelRef, RefError> {
        ModelRef::parse(s)
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.version {
            VersionRef::Latest => f.write_str(&self.name),
            other => write!(f, "{}@{other}", self.name),
        }
    }
}

/// A model reference that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    /// Nothing at all.
    #[error("a model reference must not be empty; expected NAME, NAME@VERSION or NAME@ALIAS")]
    Empty,
    /// `NAME@`.
    #[error("nothing after '@': expected a version number, an alias or \"latest\"")]
    EmptyVersion,
    /// `NAME@0`.
    #[error("there is no version 0: versions are numbered from 1")]
    VersionZero,
    /// `NAME@99999999999`.
    #[error("version {0} is too large")]
    VersionTooLarge(String),
    /// `a@b@c`.
    #[error("\"{0}\" has more than one '@'; expected NAME, NAME@VERSION or NAME@ALIAS")]
    TwoAts(String),
    /// The name or the alias breaks the naming rules.
    #[error(transparent)]
    Name(#[from] NameError),
}

/// What kind of name a [`NameError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// A model's name.
    Model,
    /// An alias.
    Alias,
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameKind::Model => "model name",
            NameKind::Alias => "alias",
        })
    }
}

/// A model or alias name that breaks the naming rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} \"{name}\": {reason}")]
pub struct NameError {
    /// Model name or alias.
    pub kind: NameKind,
    /// The name as given.
    pub name: String,
    /// Which rule it breaks, and what would do.
    pub reason: String,
}

/// The rule every model and alias name follows, as said in errors.
const NAME_RULE: &str = "use lower-case letters, digits, '-' and '_', starting with a letter or digit, at most 64 characters";

fn check(kind: NameKind, name: &str) -> Result<(), NameError> {
    let error = |reason: String| NameError {
        kind,
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(error(format!("it is empty; {NAME_RULE}")));
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Err(error(format!(
            "it is longer than {MAX_NAME_LEN} characters"
        )));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
    {
        let hint = if bad.is_ascii_uppercase() {
            format!("; did you mean \"{}\"?", name.to_ascii_lowercase())
        } else {
            String::new()
        };
        return Err(error(format!("{bad:?} is not allowed; {NAME_RULE}{hint}")));
    }
    if name.starts_with(['-', '_']) {
        return Err(error(format!(
            "it must start with a lower-case letter or a digit; {NAME_RULE}"
        )));
    }
    Ok(())
}

/// Checks a model name: `[a-z0-9][a-z0-9_-]*`, at most 64 characters.
///
/// # Errors
/// A [`NameError`] saying which rule the name breaks.
pub fn check_name(name: &str) -> Result<(), NameError> {
    check(NameKind::Model, name)
}

/// Checks an alias: the rules of model names, and it must not be a number
/// (that would read as a version) nor `latest` (every model has it).
///
/// # Errors
/// A [`NameError`] saying which rule the alias breaks.
pub fn check_alias(alias: &str) -> Result<(), NameError> {
    check(NameKind::Alias, alias)?;
    let error = |reason: &str| NameError {
        kind: NameKind::Alias,
        name: alias.to_owned(),
        reason: reason.to_owned(),
    };
    if alias.bytes().all(|b| b.is_ascii_digit()) {
        return Err(error(
            "a number would read as a version; use a name such as \"production\"",
        ));
    }
    if alias == LATEST {
        return Err(error(
            "\"latest\" is reserved: it always means the highest version",
        ));
    }
    Ok(())
}

/// The format as stored: `onnx` (any case) is the only one accepted.
///
/// # Errors
/// [`FormatError`] for anything else.
pub fn check_format(format: &str) -> Result<String, FormatError> {
    let format = format.trim().to_ascii_lowercase();
    if format == DEFAULT_FORMAT {
        Ok(format)
    } else {
        Err(FormatError(format))
    }
}

/// An artifact format the registry does not take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported model format \"{0}\": only \"onnx\" is accepted")]
pub struct FormatError(pub String);

/// Checks metadata: keys are non-empty, at most 128 bytes, without `=` or
/// control characters; values have no control characters but tabs and
/// newlines.
///
/// # Errors
/// The first problem, naming the key.
pub fn check_meta(meta: &BTreeMap<String, String>) -> Result<(), String> {
    for (key, value) in meta {
        if key.trim().is_empty() {
            return Err("metadata keys must not be empty".into());
        }
        if key.len() > MAX_META_KEY_LEN {
            return Err(format!(
                "metadata key \"{key}\" is longer than {MAX_META_KEY_LEN} bytes"
            ));
        }
        if key.contains('=') || key.chars().any(char::is_control) {
            return Err(format!(
                "metadata key {key:?} must not hold '=' or control characters"
            ));
        }
        if value
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            return Err(format!(
                "the value of metadata key \"{key}\" must not hold control characters"
            ));
        }
    }
    Ok(())
}

/// Whether `checksum` looks like a hex SHA-256 (64 lower-case hex digits),
/// so it can name a file.
pub fn is_checksum(checksum: &str) -> bool {
    checksum.len() == 64
        && checksum
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse() {
        let r = ModelRef::parse("iris").unwrap();
        assert_eq!(r.name, "iris");
        assert_eq!(r.version, VersionRef::Latest);
        assert_eq!(
            ModelRef::parse("iris@3").unwrap().version,
            VersionRef::Number(3)
        );
        assert_eq!(
            ModelRef::parse("iris@production").unwrap().version,
            VersionRef::Alias("production".into())
        );
        assert_eq!(
            ModelRef::parse("iris@latest").unwrap().version,
            VersionRef::Latest
        );
        assert_eq!(
            ModelRef::parse("resnet-50_v2@v2").unwrap().version,
            VersionRef::Alias("v2".into())
        );
        for text in ["iris", "iris@3", "iris@production"] {
            assert_eq!(ModelRef::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(ModelRef::parse("iris@latest").unwrap().to_string(), "iris");
    }

    #[test]
    fn bad_references_say_what_is_wrong() {
        let err = |text: &str| ModelRef::parse(text).unwrap_err().to_string();
        assert!(err("").contains("must not be empty"), "{}", err(""));
        assert!(err("iris@").contains("nothing after '@'"));
        assert!(err("iris@0").contains("numbered from 1"));
        assert!(err("iris@99999999999").contains("too large"));
        assert!(err("a@b@c").contains("more than one '@'"));
        assert!(
            err("@3").contains("invalid model name \"\""),
            "{}",
            err("@3")
        );
        let upper = err("Iris@3");
        assert!(upper.contains("invalid model name \"Iris\""), "{upper}");
        assert!(upper.contains("did you mean \"iris\"?"), "{upper}");
        assert!(err("iris@Prod").contains("invalid alias \"Prod\""));
        assert!(err("iris@pro d").contains("' ' is not allowed"));
    }

    #[test]
    fn names_follow_the_rules() {
        for good in ["iris", "0", "a-b_c", &"x".repeat(MAX_NAME_LEN)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-iris",
            "_iris",
            "Iris",
            "iris.onnx",
            "ir is",
            "iris/1",
            "é",
            &"x".repeat(MAX_NAME_LEN + 1),
        ] {
            let e = check_name(bad).unwrap_err();
            assert_eq!(e.kind, NameKind::Model, "{bad}");
            assert!(e.to_string().starts_with("invalid model name"), "{e}");
        }
        assert!(check_alias("production").is_ok());
        assert!(check_alias("v2").is_ok());
        assert!(check_alias("12").unwrap_err().reason.contains("version"));
        assert!(
            check_alias("latest")
                .unwrap_err()
                .reason
                .contains("reserved")
        );
    }

    #[test]
    fn only_onnx_is_accepted() {
        assert_eq!(check_format("onnx").unwrap(), "onnx");
        assert_eq!(check_format(" ONNX ").unwrap(), "onnx");
        assert_eq!(
            check_format("pt").unwrap_err().to_string(),
            "unsupported model format \"pt\": only \"onnx\" is accepted"
        );
    }

    #[test]
    fn metadata_is_checked() {
        let meta = |k: &str, v: &str| BTreeMap::from([(k.to_owned(), v.to_owned())]);
        assert!(check_meta(&meta("owner", "ml team\nsecond line")).is_ok());
        assert!(check_meta(&meta("", "x")).is_err());
        assert!(check_meta(&meta("a=b", "x")).is_err());
        assert!(check_meta(&meta("k", "bell\u{7}")).is_err());
        assert!(check_meta(&meta(&"k".repeat(129), "x")).is_err());
    }

    #[test]
    fn checksums_are_hex_sha256() {
        let sum = sha256_hex(b"abc");
        assert_eq!(
            sum,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(is_checksum(&sum));
        assert!(!is_checksum(&sum.to_uppercase()));
        assert!(!is_checksum("../../etc/passwd"));
        assert!(!is_checksum(&sum[1..]));
    }

    #[test]
    fn stamps_order_by_time_then_counter() {
        let a = Stamp {
            wall_ms: 5,
            logical: 9,
        };
        let b = Stamp {
            wall_ms: 6,
            logical: 0,
        };
        assert!(a < b);
        let id = |s: Stamp, n: &str| VersionId {
            stamp: s,
            node: n.into(),
        };
        assert!(id(a, "z") < id(b, "a"));
        assert!(id(a, "a") < id(a, "b"));
    }
}
