//! Evaluation: runs once per attempt and per fan-out item.
//!
//! Values are borrowed from the scope ([`Cow::Borrowed`]) while a path is
//! walked and copied once at the end; a failed lookup is a cheap [`Fault`]
//! that becomes a message only if it escapes `default(…)`.

use std::borrow::Cow;
use std::cmp::Ordering;

use super::syntax::CmpOp;
use super::{EvalError, Func, Node, Scope, Step};
use crate::value::Value;

/// `range()` refuses to build longer lists.
const MAX_RANGE: i64 = 1_000_000;

/// Why evaluation stopped.
pub(super) enum Fault<'a> {
    /// A lookup found nothing: `default(…)` turns this into its fallback.
    Missing(Missing<'a>),
    /// Anything else.
    Error(EvalError),
}

/// What a failed lookup was looking for.
pub(super) enum Missing<'a> {
    Input(&'a str),
    Task,
    Item,
    Index,
    Field {
        name: Cow<'a, str>,
        on: &'static str,
    },
    Element {
        index: i64,
        on: &'static str,
        len: usize,
    },
}

impl Fault<'_> {
    /// The message users see, naming the expression.
    pub(super) fn into_error(self, text: &str) -> EvalError {
        let detail = match self {
            Fault::Error(e) => e.0,
            Fault::Missing(m) => match m {
                Missing::Input(name) => format!("input \"{name}\" has no value"),
                Missing::Task => "the task's outputs are not available".into(),
                Missing::Item => "item is only available in a for_each task".into(),
                Missing::Index => "index is only available in a for_each task".into(),
                Missing::Field { name, on: "map" } => format!("no field \"{name}\" in the map"),
                Missing::Field { name, on } => {
                    format!("cannot read field \"{name}\" of {}", a(on))
                }
                Missing::Element {
                    index,
                    on: "list",
                    len,
                } => {
                    format!("index {index} is out of range for a list of {len}")
                }
                Missing::Element { index, on, .. } => {
                    format!("cannot index {} with {index}", a(on))
                }
            },
        };
        EvalError(format!("{detail}, in ${{{{ {text} }}}}"))
    }
}

/// `null`, `a list`, `an int`.
fn a(type_name: &str) -> String {
    match type_name {
        "null" => "null".into(),
        "int" => "an int".into(),
        other => format!("a {other}"),
    }
}

fn error<'a, T>(message: String) -> Result<T, Fault<'a>> {
    Err(Fault::Error(EvalError(message)))
}

/// Evaluates `node`.
pub(super) fn eval<'a>(node: &'a Node, scope: &'a dyn Scope) -> Result<Cow<'a, Value>, Fault<'a>> {
    match node {
        Node::Lit(v) => Ok(Cow::Borrowed(v)),
        Node::Input(name, steps) => {
            let v = scope
                .input(name)
                .ok_or(Fault::Missing(Missing::Input(name)))?;
            walk(Cow::Borrowed(v), steps, scope)
        }
        Node::Task(idx, steps) => {
            let v = scope
                .task_outputs(*idx)
                .ok_or(Fault::Missing(Missing::Task))?;
            walk(Cow::Borrowed(v), steps, scope)
        }
        Node::Item(steps) => {
            let v = scope.item().ok_or(Fault::Missing(Missing::Item))?;
            walk(Cow::Borrowed(v), steps, scope)
        }
        Node::Index => {
            let i = scope.index().ok_or(Fault::Missing(Missing::Index))?;
            Ok(Cow::Owned(Value::Int(i64::try_from(i).unwrap_or(i64::MAX))))
        }
        Node::Get(base, steps) => walk(eval(base, scope)?, steps, scope),
        Node::List(items) => items
            .iter()
            .map(|n| eval(n, scope).map(Cow::into_owned))
            .collect::<Result<Vec<_>, _>>()
            .map(|l| Cow::Owned(Value::List(l))),
        Node::Not(x) => Ok(boolean(!eval(x, scope)?.truthy())),
        Node::And(l, r) => Ok(boolean(
            eval(l, scope)?.truthy() && eval(r, scope)?.truthy(),
        )),
        Node::Or(l, r) => Ok(boolean(
            eval(l, scope)?.truthy() || eval(r, scope)?.truthy(),
        )),
        Node::Cmp(op, l, r) => {
            let (l, r) = (eval(l, scope)?, eval(r, scope)?);
            compare(*op, &l, &r).map(boolean)
        }
        Node::Call(func, args) => call(*func, args, scope),
    }
}

fn boolean<'a>(b: bool) -> Cow<'a, Value> {
    Cow::Owned(Value::Bool(b))
}

fn call<'a>(
    func: Func,
    args: &'a [Node],
    scope: &'a dyn Scope,
) -> Result<Cow<'a, Value>, Fault<'a>> {
    let arg = |i: usize| match args.get(i) {
        Some(n) => eval(n, scope),
        None => Ok(Cow::Owned(Value::Null)),
    };
    match func {
        Func::Default => match arg(0) {
            Ok(v) if !matches!(*v, Value::Null) => Ok(v),
            Ok(_) | Err(Fault::Missing(_)) => arg(1),
            Err(e) => Err(e),
        },
        Func::Length => {
            let v = arg(0)?;
            let n = match &*v {
                Value::String(s) => s.chars().count(),
                Value::List(l) => l.len(),
                Value::Map(m) => m.len(),
                Value::Bytes(b) => b.len(),
                other => {
                    return error(format!(
                        "length() needs a string, list, map or bytes, found {}",
                        other.type_name()
                    ));
                }
            };
            Ok(Cow::Owned(Value::Int(i64::try_from(n).unwrap_or(i64::MAX))))
        }
        Func::Contains => {
            let (hay, needle) = (arg(0)?, arg(1)?);
            let found = match (&*hay, &*needle) {
                (Value::List(l), n) => l.iter().any(|x| loose_eq(x, n)),
                (Value::String(h), Value::String(n)) => h.contains(n.as_str()),
                (Value::Map(m), Value::String(k)) => m.contains_key(k),
                (Value::Null, _) => false,
                (h @ (Value::String(_) | Value::Map(_)), n) => {
                    return error(format!(
                        "contains() on a {} looks for a string, found {}",
                        h.type_name(),
                        n.type_name()
                    ));
                }
                (h, _) => {
                    return error(format!(
                        "contains() looks in a list, string or map, found {}",
                        h.type_name()
                    ));
                }
            };
            Ok(boolean(found))
        }
        Func::Range => {
            let bound = |v: &Value| match v {
                Value::Int(i) => Ok(*i),
                other => error(format!("range() needs ints, found {}", other.type_name())),
            };
            let (start, end) = if args.len() == 2 {
                (bound(&*arg(0)?)?, bound(&*arg(1)?)?)
            } else {
                (0, bound(&*arg(0)?)?)
            };
            if end.saturating_sub(start) > MAX_RANGE {
                return error(format!("range() makes at most {MAX_RANGE} items"));
            }
            Ok(Cow::Owned(Value::List(
                (start..end).map(Value::Int).collect(),
            )))
        }
    }
}

/// Follows `steps` from `base`, borrowing while the base is borrowed.
fn walk<'a>(
    mut cur: Cow<'a, Value>,
    steps: &'a [Step],
    scope: &'a dyn Scope,
) -> Result<Cow<'a, Value>, Fault<'a>> {
    for step in steps {
        let key = match step {
            Step::Field(name) => Key::Field(Cow::Borrowed(name)),
            Step::Index(i) => Key::Index(*i),
            Step::Dyn(node) => match eval(node, scope)?.into_owned() {
                Value::String(s) => Key::Field(Cow::Owned(s)),
                Value::Int(i) => Key::Index(i),
                other => {
                    return error(format!(
                        "cannot index with {}: use a string or an int",
                        other.type_name()
                    ));
                }
            },
        };
        cur = match cur {
            Cow::Borrowed(v) => Cow::Borrowed(lookup(v, &key).ok_or_else(|| missing(v, key))?),
            Cow::Owned(v) => {
                let on = (v.type_name(), len_of(&v));
                Cow::Owned(take(v, &key).ok_or_else(|| missing_of(on, key))?)
            }
        };
    }
    Ok(cur)
}

enum Key<'a> {
    Field(Cow<'a, str>),
    Index(i64),
}

fn position(index: i64, len: usize) -> Option<usize> {
    let len = i64::try_from(len).ok()?;
    let i = if index < 0 { len + index } else { index };
    (0..len)
        .contains(&i)
        .then(|| usize::try_from(i).ok())
        .flatten()
}

fn lookup<'v>(v: &'v Value, key: &Key<'_>) -> Option<&'v Value> {
    match (v, key) {
        (Value::Map(m), Key::Field(name)) => m.get(name.as_ref()),
        (Value::List(l), Key::Index(i)) => l.get(position(*i, l.len())?),
        _ => None,
    }
}

fn take(v: Value, key: &Key<'_>) -> Option<Value> {
    match (v, key) {
        (Value::Map(mut m), Key::Field(name)) => m.remove(name.as_ref()),
        (Value::List(mut l), Key::Index(i)) => {
            let i = position(*i, l.len())?;
            Some(l.swap_remove(i))
        }
        _ => None,
    }
}

fn len_of(v: &Value) -> usize {
    match v {
        Value::List(l) => l.len(),
        _ => 0,
    }
}

fn missing<'a>(v: &Value, key: Key<'a>) -> Fault<'a> {
    missing_of((v.type_name(), len_of(v)), key)
}

fn missing_of<'a>((on, len): (&'static str, usize), key: Key<'a>) -> Fault<'a> {
    Fault::Missing(match key {
        Key::Field(name) => Missing::Field { name, on },
        Key::Index(index) => Missing::Element { index, on, len },
    })
}

/// `==`: numbers compare by value across int and float; values of
/// different types are unequal.
fn loose_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Int(x), Value::Float(y)) | (Value::Float(y), Value::Int(x)) => (*x as f64) == *y,
        (Value::List(x), Value::List(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| loose_eq(a, b))
        }
        (Value::Map(x), Value::Map(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((ka, va), (kb, vb))| ka == kb && loose_eq(va, vb))
        }
        _ => a == b,
    }
}

fn compare<'a>(op: CmpOp, a: &Value, b: &Value) -> Result<bool, Fault<'a>> {
    let ord = match op {
        CmpOp::Eq => return Ok(loose_eq(a, b)),
        CmpOp::Ne => return Ok(!loose_eq(a, b)),
        _ => order(op, a, b)?,
    };
    Ok(match op {
        CmpOp::Lt => ord == Ordering::Less,
        CmpOp::Le => ord != Ordering::Greater,
        CmpOp::Gt => ord == Ordering::Greater,
        _ => ord != Ordering::Less,
    })
}

fn order<'a>(op: CmpOp, a: &Value, b: &Value) -> Result<Ordering, Fault<'a>> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Ok(x.cmp(y)),
        (Value::String(x), Value::String(y)) => Ok(x.cmp(y)),
        (Value::Int(_) | Value::Float(_), Value::Int(_) | Value::Float(_)) => {
            let (x, y) = (
                a.as_f64().unwrap_or(f64::NAN),
                b.as_f64().unwrap_or(f64::NAN),
            );
            x.partial_cmp(&y)
                .map_or_else(|| error("cannot order NaN".into()), Ok)
        }
        _ => error(format!(
            "cannot compare {} with {} using \"{}\"",
            a.type_name(),
            b.type_name(),
            op.as_str()
        )),
    }
}
