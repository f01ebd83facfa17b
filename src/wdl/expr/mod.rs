//! Expressions `${{ … }}`: parsed and checked at compile time, evaluated for
//! every attempt (every item of a fan-out), so evaluation is the hot path.
//!
//! - [`syntax`]: text → syntax tree (names still text).
//! - [`resolve`]: syntax tree → [`Expr`], names resolved against the
//!   workflow (task ids become indices), with every problem reported.
//! - [`eval`]: evaluation against a [`Scope`], borrowing from the scope until
//!   the result is returned; no string formatting unless something fails.

mod eval;
mod resolve;
mod syntax;

use std::sync::Arc;

use crate::value::Value;

use super::model::TaskIdx;

pub(crate) use resolve::{Context, ExprProblem, Inputs, ItemRule, article};
pub(crate) use syntax::SyntaxError;

/// What an expression can read.
pub trait Scope {
    /// A workflow input (already defaulted).
    fn input(&self, name: &str) -> Option<&Value>;
    /// Outputs of a finished upstream task (`Null` when skipped or failed).
    fn task_outputs(&self, task: TaskIdx) -> Option<&Value>;
    /// The current `for_each` item.
    fn item(&self) -> Option<&Value>;
    /// The current `for_each` index.
    fn index(&self) -> Option<usize>;
}

/// A compiled expression: names resolved, ready to evaluate.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    node: Node,
    /// The expression as written (inside `${{ }}`), for messages.
    text: Arc<str>,
}

/// An expression failed at run time.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(pub String);

impl Expr {
    /// An expression that always gives `value`.
    pub fn literal(value: Value) -> Expr {
        let text = value.to_string().into();
        Expr {
            node: Node::Lit(value),
            text,
        }
    }

    /// The expression as written, without `${{ }}`.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Evaluates the expression.
    ///
    /// # Errors
    /// When a field or index is missing (outside `default(…)`), or an
    /// operator or function meets values of the wrong type.
    pub fn eval(&self, scope: &dyn Scope) -> Result<Value, EvalError> {
        eval::eval(&self.node, scope)
            .map(std::borrow::Cow::into_owned)
            .map_err(|fault| fault.into_error(&self.text))
    }

    /// Evaluates the expression as a condition (`when`): its truthiness
    /// (null, false, 0, "" and empty collections are false), without copying
    /// the value.
    ///
    /// # Errors
    /// As [`Expr::eval`].
    pub fn eval_bool(&self, scope: &dyn Scope) -> Result<bool, EvalError> {
        eval::eval(&self.node, scope)
            .map(|v| v.truthy())
            .map_err(|fault| fault.into_error(&self.text))
    }

    /// Parses `text` and resolves its names against `ctx`; also returns the
    /// type the value is known to have ([`super::ValueType::Any`] when
    /// unknown).
    pub(crate) fn compile(
        text: &str,
        ctx: &Context<'_>,
    ) -> Result<(Expr, super::model::ValueType), Vec<ExprProblem>> {
        let ast = syntax::parse(text).map_err(|e| {
            vec![ExprProblem {
                at: e.at,
                message: format!("invalid expression: {}", e.message),
                hint: e.hint,
            }]
        })?;
        let (node, ty) = resolve::resolve(text, &ast, ctx)?;
        Ok((
            Expr {
                node,
                text: text.into(),
            },
            ty,
        ))
    }
}

/// Checks only the syntax of `text`.
pub(crate) fn check_syntax(text: &str) -> Result<(), SyntaxError> {
    syntax::parse(text).map(|_| ())
}

/// A resolved expression node.
#[derive(Debug, Clone, PartialEq)]
enum Node {
    /// A literal.
    Lit(Value),
    /// `inputs.NAME…`.
    Input(Box<str>, Box<[Step]>),
    /// `tasks.ID.outputs…`.
    Task(TaskIdx, Box<[Step]>),
    /// `item…`.
    Item(Box<[Step]>),
    /// `index`.
    Index,
    /// Access into a computed value: `[1, 2][0]`, `default(a, b).c`.
    Get(Box<Node>, Box<[Step]>),
    /// `[a, b]`.
    List(Box<[Node]>),
    /// `!x`.
    Not(Box<Node>),
    /// `a && b`.
    And(Box<Node>, Box<Node>),
    /// `a || b`.
    Or(Box<Node>, Box<Node>),
    /// `a OP b`.
    Cmp(syntax::CmpOp, Box<Node>, Box<Node>),
    /// A function call.
    Call(Func, Box<[Node]>),
}

/// One step of a path.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// `.name` or `["name"]`.
    Field(Box<str>),
    /// `[3]` (negative counts from the end).
    Index(i64),
    /// `[expr]`: a string reads a field, an int an element.
    Dyn(Box<Node>),
}

/// The functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Func {
    /// `length(x)`: characters of a string, items of a list or map, bytes.
    Length,
    /// `contains(haystack, needle)`: list member, substring or map key.
    Contains,
    /// `default(x, fallback)`: `fallback` when `x` is null or missing.
    Default,
    /// `range(n)` or `range(start, end)`: the ints in `[start, end)`.
    Range,
}

impl Func {
    /// Name and accepted argument counts.
    const ALL: &'static [(&'static str, Func, usize, usize)] = &[
        ("length", Func::Length, 1, 1),
        ("contains", Func::Contains, 2, 2),
        ("default", Func::Default, 2, 2),
        ("range", Func::Range, 1, 2),
    ];
}

#[cfg(test)]
mod tests;
