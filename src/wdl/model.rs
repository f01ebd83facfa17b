//! The compiled, validated workflow: what the engine runs.
//!
//! Everything here is plain data produced by [`super::compile`]; task
//! references are indices into [`Workflow::tasks`], already checked.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::value::Value;

pub use super::expr::{EvalError, Expr, Scope};

/// Index of a task in [`Workflow::tasks`].
pub type TaskIdx = usize;

/// Where a run's journal lives.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// In memory only; lost with the process.
    None,
    /// Journal in the owner node's sled, group-committed.
    #[default]
    Local,
    /// Journal on a quorum of nodes (not built yet: refused at submission).
    Replicated,
}

impl Durability {
    /// The keyword used in workflow files.
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::None => "none",
            Durability::Local => "local",
            Durability::Replicated => "replicated",
        }
    }
}

/// A compiled workflow.
#[derive(Debug, Clone)]
pub struct Workflow {
    /// `name` from the file.
    pub name: String,
    /// `description`, if any.
    pub description: Option<String>,
    /// `durability`, default `local`.
    pub durability: Durability,
    /// Declared inputs, in file order.
    pub inputs: Vec<InputSpec>,
    /// Tasks in a topological order: every task comes after all it needs.
    pub tasks: Vec<Task>,
    /// Run outputs, in file order.
    pub outputs: Vec<(String, Template)>,
    /// Run deadline (`deadline` key), if any.
    pub deadline: Option<Duration>,
}

impl Workflow {
    /// Index of the task with this id.
    pub fn task_index(&self, id: &str) -> Option<TaskIdx> {
        self.tasks.iter().position(|t| t.id == id)
    }
}

/// A declared workflow input.
#[derive(Debug, Clone, PartialEq)]
pub struct InputSpec {
    /// Input name.
    pub name: String,
    /// Declared type.
    pub ty: ValueType,
    /// Default value; an input without one is required.
    pub default: Option<Value>,
    /// Human description.
    pub description: Option<String>,
}

/// Types an input can declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, schemars::JsonSchema)]
#[schemars(rename_all = "lowercase")]
pub enum ValueType {
    /// Anything.
    Any,
    /// `string`.
    String,
    /// `int`.
    Int,
    /// `float` (an int is accepted and widened).
    Float,
    /// `number`: int or float.
    Number,
    /// `bool`.
    Bool,
    /// `list`.
    List,
    /// `map`.
    Map,
    /// `bytes`.
    Bytes,
    /// `tensor`.
    Tensor,
}

impl ValueType {
    /// The keyword used in workflow files.
    pub fn as_str(self) -> &'static str {
        match self {
            ValueType::Any => "any",
            ValueType::String => "string",
            ValueType::Int => "int",
            ValueType::Float => "float",
            ValueType::Number => "number",
            ValueType::Bool => "bool",
            ValueType::List => "list",
            ValueType::Map => "map",
            ValueType::Bytes => "bytes",
            ValueType::Tensor => "tensor",
        }
    }

    /// Whether `value` is of this type.
    pub fn accepts(self, value: &Value) -> bool {
        matches!(
            (self, value),
            (ValueType::Any, _)
                | (ValueType::String, Value::String(_))
                | (ValueType::Int, Value::Int(_))
                | (
                    ValueType::Float | ValueType::Number,
                    Value::Int(_) | Value::Float(_)
                )
                | (ValueType::Bool, Value::Bool(_))
                | (ValueType::List, Value::List(_))
                | (ValueType::Map, Value::Map(_))
                | (ValueType::Bytes, Value::Bytes(_))
                | (ValueType::Tensor, Value::Tensor(_))
        )
    }
}

/// One compiled task.
#[derive(Debug, Clone)]
pub struct Task {
    /// Task id (its key under `tasks`).
    pub id: String,
    /// Executor reference, e.g. `builtin/echo`, `exec`, `http`.
    pub uses: String,
    /// Arguments, rendered per attempt (per item with `for_each`).
    pub with: Template,
    /// Upstream tasks.
    pub needs: Vec<Need>,
    /// Condition; false means the task is skipped.
    pub when: Option<Expr>,
    /// Fan-out: must evaluate to a list; one attempt chain per item.
    pub for_each: Option<Template>,
    /// At most this many items in flight (`None`: no limit but the engine's).
    pub max_parallel: Option<u32>,
    /// Per-attempt timeout.
    pub timeout: Option<Duration>,
    /// Retry policy (defaults already merged in).
    pub retry: RetryPolicy,
    /// Placement constraints (labels a node must carry).
    pub placement: BTreeMap<String, String>,
}

/// An edge to an upstream task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    /// The upstream task.
    pub task: TaskIdx,
    /// When the dependency counts as satisfied.
    pub condition: NeedCondition,
}

/// When a dependency is satisfied (`needs: [{task: a, if: always}]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, schemars::JsonSchema)]
#[schemars(rename_all = "lowercase")]
pub enum NeedCondition {
    /// Upstream succeeded (default); skipped or failed upstream skips this task.
    #[default]
    Succeeded,
    /// Upstream reached any final state: succeeded, skipped or failed.
    Always,
}

/// How delays between attempts grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, schemars::JsonSchema)]
#[schemars(rename_all = "lowercase")]
pub enum Backoff {
    /// The same delay every time (`initial`).
    Fixed,
    /// `initial * 2^(attempt-1)`, capped at `max`, with full jitter.
    #[default]
    Exponential,
}

/// Retry policy of a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts including the first (1 = no retry).
    pub max_attempts: u32,
    /// Growth of the delay.
    pub backoff: Backoff,
    /// First delay.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
    /// Error classes never retried.
    pub non_retryable: Vec<String>,
}

impl Default for RetryPolicy {
    /// One attempt, 200 ms initial and 10 s maximum backoff if raised.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 1,
            backoff: Backoff::Exponential,
            initial: Duration::from_millis(200),
            max: Duration::from_secs(10),
            non_retryable: Vec::new(),
        }
    }
}

/// A value that may contain expressions, evaluated against a [`Scope`].
#[derive(Debug, Clone, PartialEq)]
pub enum Template {
    /// No expressions inside.
    Value(Value),
    /// A string that is exactly one `${{ … }}`: keeps the value's type.
    Expr(Expr),
    /// A string mixing text and expressions: always a string.
    Interpolate(Vec<Segment>),
    /// A list with templates inside.
    List(Vec<Template>),
    /// A map with templates inside.
    Map(Vec<(String, Template)>),
}

/// Part of an interpolated string.
#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    /// Literal text.
    Text(String),
    /// An expression rendered as text.
    Expr(Expr),
}

impl Template {
    /// Evaluates the template.
    ///
    /// # Errors
    /// When an expression fails (missing field, wrong type), or the value
    /// it builds nests more than [`crate::value::MAX_DEPTH`] levels deep
    /// (a template around an output that is itself deep): such a value
    /// could be neither journaled nor sent, since nothing reads it back.
    pub fn eval(&self, scope: &dyn Scope) -> Result<Value, EvalError> {
        let value = self.build(scope)?;
        if value.depth() > crate::value::MAX_DEPTH {
            return Err(EvalError(crate::value::TOO_DEEP.to_string()));
        }
        Ok(value)
    }

    fn build(&self, scope: &dyn Scope) -> Result<Value, EvalError> {
        match self {
            Template::Value(v) => Ok(v.clone()),
            Template::Expr(e) => e.eval(scope),
            Template::Interpolate(parts) => {
                let mut out = String::new();
                for part in parts {
                    match part {
                        Segment::Text(t) => out.push_str(t),
                        Segment::Expr(e) => out.push_str(&e.eval(scope)?.to_text()),
                    }
                }
                Ok(Value::String(out))
            }
            Template::List(items) => items
                .iter()
                .map(|t| t.build(scope))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::List),
            Template::Map(entries) => entries
                .iter()
                .map(|(k, t)| Ok((k.clone(), t.build(scope)?)))
                .collect::<Result<crate::value::Map, _>>()
                .map(Value::Map),
        }
    }
}
