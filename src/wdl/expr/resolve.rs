//! Syntax tree → [`Node`]: names resolved against the workflow, every
//! problem collected. Also infers what it can of the value's type, to catch
//! comparisons and fan-outs over inputs of the wrong declared type.

use super::syntax::{Ast, AstKind, CmpOp};
use super::{Func, Node, Step};
use crate::value::Value;
use crate::wdl::diag::{Hints, did_you_mean};
use crate::wdl::model::{InputSpec, TaskIdx, ValueType};
use std::collections::HashMap;

/// Everything an expression may refer to, seen from where it is written.
pub(crate) struct Context<'c> {
    /// Who reads, for messages: `task "b"`, `output "x"`.
    pub(crate) who: &'c str,
    /// The declared inputs.
    pub(crate) inputs: &'c Inputs<'c>,
    /// Every task id (for suggestions).
    pub(crate) task_ids: &'c [&'c str],
    /// Index of a task id.
    pub(crate) task_index: &'c dyn Fn(&str) -> Option<TaskIdx>,
    /// The reading task's id and whether a task is upstream of it; `None`
    /// for run outputs, which may read any task.
    pub(crate) reader: Option<(&'c str, &'c dyn Fn(TaskIdx) -> bool)>,
    /// Whether `item` and `index` may be read here.
    pub(crate) items: ItemRule<'c>,
    /// The budget of "did you mean" hints for task and input names.
    pub(crate) hints: &'c Hints,
}

/// The declared inputs, in order and by name.
pub(crate) struct Inputs<'c> {
    list: &'c [InputSpec],
    by_name: HashMap<&'c str, &'c InputSpec>,
}

impl<'c> Inputs<'c> {
    pub(crate) fn new(list: &'c [InputSpec]) -> Self {
        let by_name = list.iter().map(|i| (i.name.as_str(), i)).collect();
        Inputs { list, by_name }
    }

    fn get(&self, name: &str) -> Option<&'c InputSpec> {
        self.by_name.get(name).copied()
    }

    fn names(&self) -> impl Iterator<Item = &'c str> {
        self.list.iter().map(|i| i.name.as_str())
    }
}

/// Whether `item` and `index` may be read.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ItemRule<'c> {
    /// Inside the `with` of a `for_each` task.
    Allowed,
    /// Not here; the text says why (`it has no for_each`).
    Forbidden(&'c str),
}

/// A problem in an expression, at a byte offset of its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExprProblem {
    pub(crate) at: usize,
    pub(crate) message: String,
    pub(crate) hint: Option<String>,
}

/// Resolves `ast` (parsed from `text`).
pub(crate) fn resolve(
    text: &str,
    ast: &Ast,
    ctx: &Context<'_>,
) -> Result<(Node, ValueType), Vec<ExprProblem>> {
    let mut r = Resolver {
        text,
        ctx,
        problems: Vec::new(),
    };
    let out = r.node(ast);
    if r.problems.is_empty() {
        Ok(out)
    } else {
        Err(r.problems)
    }
}

struct Resolver<'r, 'c> {
    text: &'r str,
    ctx: &'r Context<'c>,
    problems: Vec<ExprProblem>,
}

/// One access step, before resolution.
enum RawStep<'a> {
    Field(&'a str, usize),
    Index(&'a Ast),
}

/// Roots every expression may start from.
const ROOTS: &[&str] = &["inputs", "tasks", "item", "index"];

impl Resolver<'_, '_> {
    fn problem(&mut self, at: usize, message: String, hint: Option<String>) {
        self.problems.push(ExprProblem { at, message, hint });
    }

    fn source(&self, ast: &Ast) -> &str {
        self.text.get(ast.start..ast.end).unwrap_or("").trim()
    }

    fn node(&mut self, ast: &Ast) -> (Node, ValueType) {
        match &ast.kind {
            AstKind::Lit(v) => (Node::Lit(v.clone()), type_of(v)),
            AstKind::Name(_) | AstKind::Field(..) | AstKind::Index(..) => self.path(ast),
            AstKind::List(items) => {
                let items: Vec<Node> = items.iter().map(|a| self.node(a).0).collect();
                (Node::List(items.into()), ValueType::List)
            }
            AstKind::Not(x) => (Node::Not(Box::new(self.node(x).0)), ValueType::Bool),
            AstKind::And(l, r) => {
                let (l, r) = (self.node(l).0, self.node(r).0);
                (Node::And(Box::new(l), Box::new(r)), ValueType::Bool)
            }
            AstKind::Or(l, r) => {
                let (l, r) = (self.node(l).0, self.node(r).0);
                (Node::Or(Box::new(l), Box::new(r)), ValueType::Bool)
            }
            AstKind::Cmp(op, l, r) => {
                let (ln, lt) = self.node(l);
                let (rn, rt) = self.node(r);
                self.check_order(*op, (l, lt), (r, rt));
                (Node::Cmp(*op, Box::new(ln), Box::new(rn)), ValueType::Bool)
            }
            AstKind::Call(name, args) => self.call(ast, name, args),
        }
    }

    /// `<` and friends need two numbers or two strings.
    fn check_order(&mut self, op: CmpOp, l: (&Ast, ValueType), r: (&Ast, ValueType)) {
        if matches!(op, CmpOp::Eq | CmpOp::Ne) {
            return;
        }
        let class = |t: ValueType| match t {
            ValueType::Any => None,
            ValueType::Int | ValueType::Float | ValueType::Number => Some("number"),
            ValueType::String => Some("string"),
            _ => Some("other"),
        };
        let (Some(lc), Some(rc)) = (class(l.1), class(r.1)) else {
            return;
        };
        if lc == rc && lc != "other" {
            return;
        }
        let message = format!(
            "{} compares {} ({}) with {} ({}) using \"{}\"",
            self.ctx.who,
            self.source(l.0),
            article(l.1),
            self.source(r.0),
            article(r.1),
            op.as_str()
        );
        self.problem(
            l.0.start,
            message,
            Some("\"<\", \"<=\", \">\" and \">=\" compare two numbers or two strings".into()),
        );
    }

    fn call(&mut self, ast: &Ast, name: &str, args: &[Ast]) -> (Node, ValueType) {
        let resolved: Vec<(Node, ValueType)> = args.iter().map(|a| self.node(a)).collect();
        let Some(&(_, func, min, max)) = Func::ALL.iter().find(|(n, ..)| *n == name) else {
            let hint = did_you_mean(name, Func::ALL.iter().map(|(n, ..)| *n))
                .or_else(|| Some("functions are length, contains, default and range".into()));
            self.problem(
                ast.start,
                format!("unknown function \"{name}\" in {}", self.ctx.who),
                hint,
            );
            return (Node::Lit(Value::Null), ValueType::Any);
        };
        if args.len() < min || args.len() > max {
            let expected = if min == max {
                format!("{min} argument{}", if min == 1 { "" } else { "s" })
            } else {
                format!("{min} or {max} arguments")
            };
            self.problem(
                ast.start,
                format!(
                    "{name}() in {} takes {expected}, found {}",
                    self.ctx.who,
                    args.len()
                ),
                None,
            );
        }
        let arg_type = |i: usize| resolved.get(i).map_or(ValueType::Any, |(_, t)| *t);
        let ty = match func {
            Func::Length => {
                if matches!(
                    arg_type(0),
                    ValueType::Int | ValueType::Float | ValueType::Number | ValueType::Bool
                ) {
                    self.problem(
                        args[0].start,
                        format!(
                            "{} calls length() on {}, which is {}",
                            self.ctx.who,
                            self.source(&args[0]),
                            article(arg_type(0))
                        ),
                        Some("length() takes a string, list, map or bytes".into()),
                    );
                }
                ValueType::Int
            }
            Func::Contains => ValueType::Bool,
            Func::Default if arg_type(0) == arg_type(1) => arg_type(0),
            Func::Default => ValueType::Any,
            Func::Range => ValueType::List,
        };
        let nodes: Vec<Node> = resolved.into_iter().map(|(n, _)| n).collect();
        (Node::Call(func, nodes.into()), ty)
    }

    /// A chain of accesses: resolved from its root.
    fn path(&mut self, ast: &Ast) -> (Node, ValueType) {
        let mut steps: Vec<RawStep<'_>> = Vec::new();
        let mut root = ast;
        loop {
            match &root.kind {
                AstKind::Field(base, name, at) => {
                    steps.push(RawStep::Field(name, *at));
                    root = base;
                }
                AstKind::Index(base, index) => {
                    steps.push(RawStep::Index(index));
                    root = base;
                }
                _ => break,
            }
        }
        steps.reverse();
        let AstKind::Name(name) = &root.kind else {
            let (base, _) = self.node(root);
            let steps = self.steps(&steps);
            return (Node::Get(Box::new(base), steps), ValueType::Any);
        };
        match name.as_str() {
            "inputs" => self.input(root, &steps),
            "tasks" => self.task(root, &steps),
            "item" | "index" => self.item(root, name, &steps),
            _ => {
                self.unknown_name(root, name);
                (Node::Lit(Value::Null), ValueType::Any)
            }
        }
    }

    fn steps(&mut self, steps: &[RawStep<'_>]) -> Box<[Step]> {
        steps
            .iter()
            .map(|s| match s {
                RawStep::Field(name, _) => Step::Field((*name).into()),
                RawStep::Index(ast) => match &ast.kind {
                    AstKind::Lit(Value::Int(i)) => Step::Index(*i),
                    _ => Step::Dyn(Box::new(self.node(ast).0)),
                },
            })
            .collect()
    }

    fn unknown_name(&mut self, at: &Ast, name: &str) {
        let hint = if self.ctx.inputs.get(name).is_some() {
            Some(format!("inputs are read as inputs.{name}"))
        } else if (self.ctx.task_index)(name).is_some() {
            Some(format!("task outputs are read as tasks.{name}.outputs"))
        } else {
            did_you_mean(name, ROOTS.iter().copied())
                .or_else(|| Some("expressions start from inputs, tasks, item or index".into()))
        };
        self.problem(
            at.start,
            format!("unknown name \"{name}\" in {}", self.ctx.who),
            hint,
        );
    }

    fn input(&mut self, root: &Ast, steps: &[RawStep<'_>]) -> (Node, ValueType) {
        let Some(RawStep::Field(name, at)) = steps.first() else {
            self.problem(
                root.start,
                format!(
                    "\"inputs\" in {} must be followed by an input name",
                    self.ctx.who
                ),
                Some("write e.g. inputs.reviews".into()),
            );
            return (Node::Lit(Value::Null), ValueType::Any);
        };
        let Some(spec) = self.ctx.inputs.get(name) else {
            let hint = (self.ctx.hints)
                .did_you_mean(name, self.ctx.inputs.names())
                .or_else(|| Some(format!("declare it under inputs: {name}: {{ type: any }}")));
            self.problem(
                *at,
                format!(
                    "{} reads inputs.{name}, but there is no input \"{name}\"",
                    self.ctx.who
                ),
                hint,
            );
            return (Node::Lit(Value::Null), ValueType::Any);
        };
        let ty = spec.ty;
        if let Some(RawStep::Field(field, at)) = steps.get(1) {
            if is_scalar(ty) {
                self.problem(
                    *at,
                    format!(
                        "{} reads inputs.{name}.{field}, but input \"{name}\" is declared as {}, which has no fields",
                        self.ctx.who,
                        ty.as_str()
                    ),
                    None,
                );
            }
        }
        let rest = self.steps(&steps[1..]);
        let ty = if rest.is_empty() { ty } else { ValueType::Any };
        (Node::Input((*name).into(), rest), ty)
    }

    fn task(&mut self, root: &Ast, steps: &[RawStep<'_>]) -> (Node, ValueType) {
        let Some(RawStep::Field(id, at)) = steps.first() else {
            self.problem(
                root.start,
                format!(
                    "\"tasks\" in {} must be followed by a task id",
                    self.ctx.who
                ),
                Some("write e.g. tasks.clean.outputs".into()),
            );
            return (Node::Lit(Value::Null), ValueType::Any);
        };
        let who = self.ctx.who;
        let Some(idx) = (self.ctx.task_index)(id) else {
            let hint = (self.ctx.hints).did_you_mean(id, self.ctx.task_ids.iter().copied());
            self.problem(
                *at,
                format!("{who} reads tasks.{id}.outputs, but there is no task \"{id}\""),
                hint,
            );
            return (Node::Lit(Value::Null), ValueType::Any);
        };
        match steps.get(1) {
            Some(RawStep::Field("outputs", _)) => {}
            other => {
                let (at, found) = match other {
                    Some(RawStep::Field(f, at)) => (*at, format!("\"{f}\"")),
                    Some(RawStep::Index(a)) => (a.start, "an index".to_string()),
                    None => (root.start, "nothing".to_string()),
                };
                self.problem(
                    at,
                    format!("expected \"outputs\" after tasks.{id} in {who}, found {found}"),
                    Some(format!("a task's result is read as tasks.{id}.outputs")),
                );
                return (Node::Lit(Value::Null), ValueType::Any);
            }
        }
        if let Some((reader, upstream)) = self.ctx.reader {
            if reader == *id {
                self.problem(
                    *at,
                    format!("{who} reads its own outputs (tasks.{id}.outputs)"),
                    Some("a task can read only the outputs of tasks it needs".into()),
                );
            } else if !upstream(idx) {
                self.problem(
                    *at,
                    format!(
                        "{who} reads tasks.{id}.outputs, but \"{id}\" is not upstream of \"{reader}\""
                    ),
                    Some(format!("add \"{id}\" to the needs of task \"{reader}\"")),
                );
            }
        }
        (Node::Task(idx, self.steps(&steps[2..])), ValueType::Any)
    }

    fn item(&mut self, root: &Ast, name: &str, steps: &[RawStep<'_>]) -> (Node, ValueType) {
        if let ItemRule::Forbidden(why) = self.ctx.items {
            self.problem(
                root.start,
                format!("{} reads {name}, but {why}", self.ctx.who),
                Some("item and index exist only in the \"with\" of a task with for_each".into()),
            );
        }
        if name == "item" {
            let steps = self.steps(steps);
            return (Node::Item(steps), ValueType::Any);
        }
        if let Some(RawStep::Field(field, at)) = steps.first() {
            self.problem(
                *at,
                format!("{} reads index.{field}, but index is an int", self.ctx.who),
                None,
            );
        }
        if steps.is_empty() {
            (Node::Index, ValueType::Int)
        } else {
            (
                Node::Get(Box::new(Node::Index), self.steps(steps)),
                ValueType::Any,
            )
        }
    }
}

fn is_scalar(t: ValueType) -> bool {
    matches!(
        t,
        ValueType::String
            | ValueType::Int
            | ValueType::Float
            | ValueType::Number
            | ValueType::Bool
            | ValueType::Bytes
    )
}

fn type_of(v: &Value) -> ValueType {
    match v {
        Value::Null => ValueType::Any,
        Value::Bool(_) => ValueType::Bool,
        Value::Int(_) => ValueType::Int,
        Value::Float(_) => ValueType::Float,
        Value::String(_) => ValueType::String,
        Value::Bytes(_) => ValueType::Bytes,
        Value::List(_) => ValueType::List,
        Value::Map(_) => ValueType::Map,
        Value::Tensor(_) => ValueType::Tensor,
    }
}

/// `a string`, `an int`, …
pub(crate) fn article(t: ValueType) -> String {
    let word = t.as_str();
    let an = matches!(
        word.as_bytes().first(),
        Some(b'a' | b'e' | b'i' | b'o' | b'u')
    );
    format!("{} {word}", if an { "an" } else { "a" })
}
