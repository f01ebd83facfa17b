//! Expressions `${{ … }}`: parser and evaluator. (Placeholder until the
//! expression language lands.)

use crate::value::Value;

use super::model::TaskIdx;

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

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    /// Literal value (placeholder).
    pub literal: Value,
}

/// An expression failed at run time.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(pub String);

impl Expr {
    /// Evaluates the expression.
    ///
    /// # Errors
    /// When a reference is missing or an operator meets the wrong types.
    pub fn eval(&self, _scope: &dyn Scope) -> Result<Value, EvalError> {
        Ok(self.literal.clone())
    }
}
