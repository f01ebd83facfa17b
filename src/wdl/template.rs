//! YAML values that may hold `${{ … }}` → [`Template`]s and [`Expr`]s, with
//! each expression problem placed where the expression is in the file.
//!
//! Syntax is checked once where a value is written ([`check_syntax`]), so a
//! template used by ten tasks reports a typo once; names are resolved for
//! every task that ends up with the value ([`template`], [`expression`]),
//! since what is upstream depends on the task.

use super::diag::{Files, Pos, Report};
use super::expr::{self, Context, Expr, ExprProblem};
use super::model::{Segment, Template, ValueType};
use super::yaml::{Kind, Node, to_value};
use crate::value::Value;

const OPEN: &str = "${{";
const CLOSE: &str = "}}";

/// Part of a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece<'t> {
    /// Literal text.
    Text(&'t str),
    /// The text between `${{` and `}}`, and the byte where it starts.
    Expr(&'t str, usize),
}

/// An expression that does not end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Unclosed {
    /// Byte of its `${{`.
    open: usize,
    /// The quote of a string still open at the end, if any.
    quote: Option<char>,
}

/// Splits a string into text and expressions.
fn split(s: &str) -> Result<Vec<Piece<'_>>, Unclosed> {
    let mut pieces = Vec::new();
    let mut rest = 0;
    while let Some(found) = s[rest..].find(OPEN) {
        let open = rest + found;
        if open > rest {
            pieces.push(Piece::Text(&s[rest..open]));
        }
        let inner = open + OPEN.len();
        let close = find_close(&s[inner..]).map_err(|quote| Unclosed { open, quote })?;
        pieces.push(Piece::Expr(&s[inner..inner + close], inner));
        rest = inner + close + CLOSE.len();
    }
    if rest < s.len() {
        pieces.push(Piece::Text(&s[rest..]));
    }
    Ok(pieces)
}

/// Byte of the `}}` that ends an expression, skipping quoted strings; when
/// there is none, the quote of a string left open.
fn find_close(s: &str) -> Result<usize, Option<char>> {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' && q == '"' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None if c == '\'' || c == '"' => quote = Some(c),
            None if s[i..].starts_with(CLOSE) => return Ok(i),
            None => {}
        }
    }
    Err(quote)
}

/// Where byte `at` of the expression `inner` (found at byte `start` of the
/// scalar's value) is in the file. Found by searching the file from the
/// scalar on, since quoting and folding move text around; the scalar's own
/// position when the search fails.
fn locate(
    files: &Files<'_>,
    node: &Node,
    value: &str,
    inner: &str,
    start: usize,
    at: usize,
) -> Pos {
    let Some(text) = files.texts.get(node.pos.file as usize) else {
        return node.pos;
    };
    if inner.trim().is_empty() {
        return node.pos;
    }
    let from = files.byte_of(node.pos);
    let nth = value[..start].matches(inner).count();
    let found = text[from..].match_indices(inner).nth(nth).map(|(i, _)| i);
    match found {
        Some(i) => files.pos_at(node.pos.file, from + i + at.min(inner.len())),
        None => node.pos,
    }
}

/// The string value of a scalar that holds `${{`, if this node is one.
fn expr_string(node: &Node) -> Option<&str> {
    match &node.kind {
        Kind::Scalar(s) if s.text.contains(OPEN) => Some(&s.text),
        _ => None,
    }
}

/// Reports the syntax problems of every expression in `node`; `what` names
/// the field (`"with" of task "a"`).
pub(crate) fn check_syntax(node: &Node, what: &str, files: &Files<'_>, report: &mut Report) {
    match &node.kind {
        Kind::Scalar(_) => {
            let Some(value) = expr_string(node) else {
                return;
            };
            let pieces = match split(value) {
                Ok(p) => p,
                Err(Unclosed { open, quote }) => {
                    let pos = locate(files, node, value, OPEN, open, 0);
                    let (message, hint) = match quote {
                        Some(q) => (
                            format!("unclosed string in an expression in {what}"),
                            format!("end the string with {q} before }}}}"),
                        ),
                        None => (
                            format!("unclosed \"${{{{\" in {what}"),
                            "end the expression with }}".to_string(),
                        ),
                    };
                    report.error_hint(pos, message, Some(hint));
                    return;
                }
            };
            for piece in pieces {
                if let Piece::Expr(inner, start) = piece {
                    check_one(node, value, inner, start, what, files, report);
                }
            }
        }
        Kind::Seq(items) => {
            for item in items {
                check_syntax(item, what, files, report);
            }
        }
        Kind::Map(entries) => {
            for (_, v) in entries {
                check_syntax(v, what, files, report);
            }
        }
    }
}

/// Reports the syntax problems of a condition (`when`), which may be written
/// without `${{ }}`.
pub(crate) fn check_condition_syntax(
    node: &Node,
    what: &str,
    files: &Files<'_>,
    report: &mut Report,
) {
    match &node.kind {
        Kind::Scalar(s) if s.text.contains(OPEN) => check_syntax(node, what, files, report),
        Kind::Scalar(s) if matches!(to_value(node), Value::String(_)) => {
            check_one(node, &s.text, &s.text, 0, what, files, report);
        }
        _ => {}
    }
}

fn check_one(
    node: &Node,
    value: &str,
    inner: &str,
    start: usize,
    what: &str,
    files: &Files<'_>,
    report: &mut Report,
) {
    if let Err(e) = expr::check_syntax(inner) {
        let pos = locate(files, node, value, inner, start, e.at);
        report.error_hint(
            pos,
            format!("invalid expression in {what}: {}", e.message),
            e.hint,
        );
    }
}

/// Compiles one expression, reporting resolution problems. Syntax problems
/// were reported by [`check_syntax`]: `None` without a word.
fn compile_one(
    node: &Node,
    value: &str,
    inner: &str,
    start: usize,
    ctx: &Context<'_>,
    files: &Files<'_>,
    report: &mut Report,
) -> Option<(Expr, ValueType)> {
    expr::check_syntax(inner).ok()?;
    match Expr::compile(inner.trim(), ctx) {
        Ok(out) => Some(out),
        Err(problems) => {
            // Offsets are into the trimmed text.
            let lead = inner.len() - inner.trim_start().len();
            for ExprProblem { at, message, hint } in problems {
                let pos = locate(files, node, value, inner, start, lead + at);
                report.error_hint(pos, message, hint);
            }
            None
        }
    }
}

/// Compiles a value that may hold expressions anywhere inside.
pub(crate) fn template(
    node: &Node,
    ctx: &Context<'_>,
    files: &Files<'_>,
    report: &mut Report,
) -> Template {
    match &node.kind {
        Kind::Scalar(_) => match expr_string(node) {
            Some(value) => string_template(node, value, ctx, files, report),
            None => Template::Value(to_value(node)),
        },
        Kind::Seq(items) => {
            let items: Vec<Template> = items
                .iter()
                .map(|n| template(n, ctx, files, report))
                .collect();
            if items.iter().all(|t| matches!(t, Template::Value(_))) {
                Template::Value(to_value(node))
            } else {
                Template::List(items)
            }
        }
        Kind::Map(entries) => {
            let entries: Vec<(String, Template)> = entries
                .iter()
                .map(|(k, v)| (k.key_text().to_string(), template(v, ctx, files, report)))
                .collect();
            if entries.iter().all(|(_, t)| matches!(t, Template::Value(_))) {
                Template::Value(to_value(node))
            } else {
                Template::Map(entries)
            }
        }
    }
}

fn string_template(
    node: &Node,
    value: &str,
    ctx: &Context<'_>,
    files: &Files<'_>,
    report: &mut Report,
) -> Template {
    let Ok(pieces) = split(value) else {
        return Template::Value(Value::Null);
    };
    if let [Piece::Expr(inner, start)] = pieces.as_slice() {
        return compile_one(node, value, inner, *start, ctx, files, report)
            .map_or(Template::Value(Value::Null), |(e, _)| Template::Expr(e));
    }
    let segments = pieces
        .into_iter()
        .map(|p| match p {
            Piece::Text(t) => Segment::Text(t.to_string()),
            Piece::Expr(inner, start) => compile_one(node, value, inner, start, ctx, files, report)
                .map_or(Segment::Text(String::new()), |(e, _)| Segment::Expr(e)),
        })
        .collect();
    Template::Interpolate(segments)
}

/// What a single-expression field holds.
pub(crate) enum Single {
    /// Exactly one `${{ … }}` (or, for conditions, a bare expression).
    Expr(Expr, ValueType),
    /// No expression: a plain value.
    Value(Value),
    /// Text around or between expressions.
    Mixed,
    /// A problem already reported (syntax, names).
    Failed,
}

/// Compiles a field that holds one expression (`when`, `for_each`).
/// `bare` accepts a string without `${{ }}` as an expression.
pub(crate) fn expression(
    node: &Node,
    bare: bool,
    ctx: &Context<'_>,
    files: &Files<'_>,
    report: &mut Report,
) -> Single {
    let Kind::Scalar(s) = &node.kind else {
        return Single::Value(to_value(node));
    };
    if !s.text.contains(OPEN) {
        let value = to_value(node);
        if bare && matches!(value, Value::String(_)) {
            return match compile_one(node, &s.text, &s.text, 0, ctx, files, report) {
                Some((e, t)) => Single::Expr(e, t),
                None => Single::Failed,
            };
        }
        return Single::Value(value);
    }
    let Ok(pieces) = split(&s.text) else {
        return Single::Failed;
    };
    match pieces.as_slice() {
        [Piece::Expr(inner, start)] => {
            match compile_one(node, &s.text, inner, *start, ctx, files, report) {
                Some((e, t)) => Single::Expr(e, t),
                None => Single::Failed,
            }
        }
        _ => Single::Mixed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_finds_expressions_and_respects_quotes() {
        assert_eq!(
            split("a ${{ x }} b").unwrap(),
            vec![Piece::Text("a "), Piece::Expr(" x ", 5), Piece::Text(" b")]
        );
        assert_eq!(
            split("${{ '}}' }}").unwrap(),
            vec![Piece::Expr(" '}}' ", 3)]
        );
        assert_eq!(
            split("x ${{ a"),
            Err(Unclosed {
                open: 2,
                quote: None
            })
        );
        assert_eq!(
            split("${{ 'a }}"),
            Err(Unclosed {
                open: 0,
                quote: Some('\'')
            })
        );
        assert_eq!(
            split("no expressions").unwrap(),
            vec![Piece::Text("no expressions")]
        );
    }
}
