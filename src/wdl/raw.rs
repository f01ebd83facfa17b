//! The workflow file as written: structs named like its YAML keys, holding
//! no logic. [`super::parse`] fills them from the YAML tree; the JSON Schema
//! ([`super::json_schema`]) is derived from them, so their doc comments are
//! what editors show.
//!
//! Values keep the position they were written at ([`Spanned`]); values that
//! may hold expressions stay YAML trees ([`Any`]) until the compiler knows
//! the task graph.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

use super::diag::Pos;
use super::model::{Backoff, Durability, NeedCondition, ValueType};
use super::yaml::Node;

/// A value and the position it was written at.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Spanned<T> {
    pub(crate) value: T,
    pub(crate) pos: Pos,
}

impl<T: JsonSchema> JsonSchema for Spanned<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }
    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
}

/// A mapping from names to `T`, in file order, with the names' positions.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entries<T>(pub(crate) Vec<(Spanned<String>, T)>);

impl<T> Default for Entries<T> {
    fn default() -> Self {
        Entries(Vec::new())
    }
}

impl<T: JsonSchema> JsonSchema for Entries<T> {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        format!("Entries_of_{}", T::schema_name()).into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let value = generator.subschema_for::<T>();
        json_schema!({
            "type": "object",
            "propertyNames": { "pattern": NAME_PATTERN },
            "additionalProperties": value,
        })
    }
}

/// What task ids, input, template and output names look like.
pub(crate) const NAME_PATTERN: &str = "^[A-Za-z_][A-Za-z0-9_-]*$";

/// Any YAML value; strings in it may hold `${{ … }}` expressions.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Any(pub(crate) Node);

impl JsonSchema for Any {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "Any".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!(true)
    }
}

/// A duration such as `30s`, `500ms`, `1m 30s` or `2h`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DurationText(pub(crate) String);

impl JsonSchema for DurationText {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A duration: a number and a unit, e.g. \"30s\", \"500ms\", \"1m 30s\", \"2h\".",
            "examples": ["30s", "500ms", "1m 30s"],
        })
    }
}

/// One name or a list of names.
#[derive(Debug, Clone, PartialEq, JsonSchema)]
#[schemars(untagged)]
#[allow(dead_code)] // only its schema is used: the parser always fills `Vec`
pub(crate) enum OneOrMany {
    /// A single name.
    One(String),
    /// Names, applied in order.
    Many(Vec<String>),
}

/// A workflow file (the main file; an imported file may only hold
/// `version`, `description`, `import` and `templates`).
#[derive(Debug, Clone, Default, PartialEq, JsonSchema)]
#[schemars(deny_unknown_fields, title = "Symphony workflow")]
pub(crate) struct Workflow {
    /// Language version; must be 1.
    #[schemars(required, range(min = 1, max = 1))]
    pub(crate) version: Option<Spanned<i64>>,
    /// Workflow name.
    #[schemars(required)]
    pub(crate) name: Option<Spanned<String>>,
    /// What the workflow does.
    pub(crate) description: Option<Spanned<String>>,
    /// Where a run's journal lives: `none` (memory), `local` (default) or
    /// `replicated`.
    pub(crate) durability: Option<Spanned<Durability>>,
    /// Deadline of a whole run.
    pub(crate) deadline: Option<Spanned<DurationText>>,
    /// Other files whose templates become available here, relative to this
    /// file.
    pub(crate) import: Option<Vec<Spanned<String>>>,
    /// Inputs: a type keyword (`name: string`) or `{type, default,
    /// description}`. An input without a default is required.
    pub(crate) inputs: Option<Entries<Input>>,
    /// Settings every task starts from.
    pub(crate) defaults: Option<Defaults>,
    /// Named partial tasks that tasks (and templates) `extends`.
    pub(crate) templates: Option<Entries<Task>>,
    /// The tasks, by id.
    pub(crate) tasks: Option<Entries<Task>>,
    /// Run outputs: values that may hold expressions reading any task.
    pub(crate) outputs: Option<Entries<Any>>,
}

/// A workflow input.
#[derive(Debug, Clone, PartialEq, JsonSchema)]
#[schemars(untagged)]
pub(crate) enum Input {
    /// Shorthand: just the type keyword.
    Type(Spanned<ValueType>),
    /// Full form.
    Spec(InputSpec),
}

/// The full form of an input.
#[derive(Debug, Clone, Default, PartialEq, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct InputSpec {
    /// Type of the value; default `any`.
    #[schemars(rename = "type")]
    pub(crate) ty: Option<Spanned<ValueType>>,
    /// Value used when the input is not given; without one the input is
    /// required.
    pub(crate) default: Option<Any>,
    /// What the input is for.
    pub(crate) description: Option<Spanned<String>>,
}

/// Settings every task starts from.
#[derive(Debug, Clone, Default, PartialEq, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct Defaults {
    /// Per-attempt timeout.
    pub(crate) timeout: Option<Spanned<DurationText>>,
    /// Retry policy; tasks override it field by field.
    pub(crate) retry: Option<Retry>,
}

/// A retry policy; every field is optional and overrides the one below it
/// (built-in → `defaults` → templates → task).
#[derive(Debug, Clone, Default, PartialEq, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct Retry {
    /// Total attempts including the first; at least 1 (built-in: 1).
    #[schemars(range(min = 1))]
    pub(crate) max_attempts: Option<Spanned<i64>>,
    /// `exponential` (default, with jitter) or `fixed`.
    pub(crate) backoff: Option<Spanned<Backoff>>,
    /// First delay (built-in: 200ms).
    pub(crate) initial: Option<Spanned<DurationText>>,
    /// Largest delay (built-in: 10s).
    pub(crate) max: Option<Spanned<DurationText>>,
    /// Error classes that are never retried.
    pub(crate) non_retryable: Option<Vec<Spanned<String>>>,
}

/// A task, or a template (a named partial task).
#[derive(Debug, Clone, Default, PartialEq, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct Task {
    /// Executor: `builtin/echo`, `exec`, `http`, `model/NAME@VERSION`, …
    pub(crate) uses: Option<Spanned<String>>,
    /// Arguments for the executor; strings may hold `${{ … }}`.
    pub(crate) with: Option<Any>,
    /// Upstream tasks: ids, or `{task: ID, if: always}`.
    pub(crate) needs: Option<Vec<Need>>,
    /// Condition: the task is skipped when it is false. With or without
    /// `${{ }}`.
    pub(crate) when: Option<Any>,
    /// Fan-out: a list, or an expression giving one; `item` and `index`
    /// are then available in `with`.
    pub(crate) for_each: Option<Any>,
    /// At most this many items in flight.
    #[schemars(range(min = 1))]
    pub(crate) max_parallel: Option<Spanned<i64>>,
    /// Per-attempt timeout.
    pub(crate) timeout: Option<Spanned<DurationText>>,
    /// Retry policy, merged field by field over the defaults.
    pub(crate) retry: Option<Retry>,
    /// Templates this task starts from, applied in order.
    #[schemars(with = "Option<OneOrMany>")]
    pub(crate) extends: Option<Vec<Spanned<String>>>,
    /// Where the task may run.
    pub(crate) placement: Option<Placement>,
}

/// An entry of `needs`.
#[derive(Debug, Clone, PartialEq, JsonSchema)]
#[schemars(untagged)]
pub(crate) enum Need {
    /// Just the task id: the upstream must succeed.
    Task(Spanned<String>),
    /// A task id and when the dependency is satisfied.
    Detailed(DetailedNeed),
}

/// `{task: ID, if: succeeded|always}`.
#[derive(Debug, Clone, PartialEq, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct DetailedNeed {
    /// The upstream task.
    pub(crate) task: Spanned<String>,
    /// `succeeded` (default) or `always`: run once the upstream reached any
    /// final state.
    #[schemars(rename = "if")]
    pub(crate) condition: Option<Spanned<NeedCondition>>,
}

/// Placement constraints.
#[derive(Debug, Clone, Default, PartialEq, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct Placement {
    /// Labels a node must carry, e.g. `{gpu: "true"}`.
    #[schemars(with = "Option<std::collections::BTreeMap<String, String>>")]
    pub(crate) labels: Option<Entries<Spanned<String>>>,
}
