//! Expression text → syntax tree. Names are still text here; resolving them
//! against the workflow is [`super::resolve`]'s job.
//!
//! ```text
//! expr    := and ("||" and)*
//! and     := cmp ("&&" cmp)*
//! cmp     := unary (("==" | "!=" | "<" | "<=" | ">" | ">=") unary)?
//! unary   := "!" unary | postfix
//! postfix := primary ("." NAME | "[" expr "]")*
//! primary := NUMBER | STRING | "true" | "false" | "null"
//!          | "[" (expr ("," expr)* ","?)? "]" | "(" expr ")"
//!          | NAME "(" (expr ("," expr)*)? ")" | NAME
//! ```
//!
//! Names are `[A-Za-z_][A-Za-z0-9_-]*` (a dash is part of a name, as in
//! GitHub Actions, so `tasks.my-task.outputs` reads task `my-task`; there is
//! no arithmetic). Strings are 'single quoted' (`''` is a quote) or "double
//! quoted" (with `\"`, `\\`, `\n`, `\t` escapes).

use crate::value::Value;

/// Nesting deeper than this is refused: parsing and evaluation recurse.
const MAX_DEPTH: usize = 64;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

/// A syntax tree node and the byte range of its text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ast {
    pub(crate) kind: AstKind,
    /// Byte offset where the node starts in the expression text.
    pub(crate) start: usize,
    /// Byte offset just past the node.
    pub(crate) end: usize,
}

/// What a syntax tree node is.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum AstKind {
    /// A literal: null, bool, number or string.
    Lit(Value),
    /// A bare name: `inputs`, `tasks`, `item`, `index`, or a mistake.
    Name(String),
    /// `base.name` or `base["name"]`; the offset is where the name is.
    Field(Box<Ast>, String, usize),
    /// `base[expr]` with anything but a string literal inside.
    Index(Box<Ast>, Box<Ast>),
    /// `name(args…)`.
    Call(String, Vec<Ast>),
    /// `[a, b, …]`.
    List(Vec<Ast>),
    /// `!x`.
    Not(Box<Ast>),
    /// `a && b`.
    And(Box<Ast>, Box<Ast>),
    /// `a || b`.
    Or(Box<Ast>, Box<Ast>),
    /// `a OP b`.
    Cmp(CmpOp, Box<Ast>, Box<Ast>),
}

/// A syntax error at a byte offset of the expression text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub(crate) at: usize,
    pub(crate) message: String,
    pub(crate) hint: Option<String>,
}

impl SyntaxError {
    fn new(at: usize, message: impl Into<String>) -> Self {
        SyntaxError {
            at,
            message: message.into(),
            hint: None,
        }
    }

    fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// Parses one expression.
pub(crate) fn parse(text: &str) -> Result<Ast, SyntaxError> {
    let tokens = lex(text)?;
    let mut p = Parser {
        tokens,
        next: 0,
        depth: 0,
    };
    if p.peek().tok == Tok::End {
        return Err(SyntaxError::new(0, "empty expression")
            .hint("write something to evaluate, e.g. ${{ inputs.name }}"));
    }
    let ast = p.expr()?;
    let t = p.peek();
    if t.tok != Tok::End {
        return Err(SyntaxError::new(
            t.start,
            format!("unexpected {} after the expression", t.tok.describe()),
        )
        .hint("combine conditions with && or ||"));
    }
    Ok(ast)
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Name(String),
    Int(i64),
    Float(f64),
    Str(String),
    Dot,
    Comma,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Cmp(CmpOp),
    And,
    Or,
    Not,
    End,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Name(n) => format!("name \"{n}\""),
            Tok::Int(i) => format!("number {i}"),
            Tok::Float(f) => format!("number {f}"),
            Tok::Str(_) => "a string".into(),
            Tok::Dot => "\".\"".into(),
            Tok::Comma => "\",\"".into(),
            Tok::LParen => "\"(\"".into(),
            Tok::RParen => "\")\"".into(),
            Tok::LBracket => "\"[\"".into(),
            Tok::RBracket => "\"]\"".into(),
            Tok::Cmp(op) => format!("\"{}\"", op.as_str()),
            Tok::And => "\"&&\"".into(),
            Tok::Or => "\"||\"".into(),
            Tok::Not => "\"!\"".into(),
            Tok::End => "the end of the expression".into(),
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    start: usize,
    end: usize,
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn lex(text: &str) -> Result<Vec<Token>, SyntaxError> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let c = text[i..].chars().next().unwrap_or(' ');
        let start = i;
        if c.is_whitespace() {
            i += c.len_utf8();
            continue;
        }
        let two = text.get(i..i + 2).unwrap_or("");
        let (tok, len) = match (c, two) {
            (_, "==") => (Tok::Cmp(CmpOp::Eq), 2),
            (_, "!=") => (Tok::Cmp(CmpOp::Ne), 2),
            (_, "<=") => (Tok::Cmp(CmpOp::Le), 2),
            (_, ">=") => (Tok::Cmp(CmpOp::Ge), 2),
            (_, "&&") => (Tok::And, 2),
            (_, "||") => (Tok::Or, 2),
            ('<', _) => (Tok::Cmp(CmpOp::Lt), 1),
            ('>', _) => (Tok::Cmp(CmpOp::Gt), 1),
            ('!', _) => (Tok::Not, 1),
            ('.', _) if !bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => (Tok::Dot, 1),
            (',', _) => (Tok::Comma, 1),
            ('(', _) => (Tok::LParen, 1),
            (')', _) => (Tok::RParen, 1),
            ('[', _) => (Tok::LBracket, 1),
            (']', _) => (Tok::RBracket, 1),
            ('=', _) => {
                return Err(SyntaxError::new(i, "unexpected \"=\"").hint("compare with =="));
            }
            ('&', _) => return Err(SyntaxError::new(i, "unexpected \"&\"").hint("use && for and")),
            ('|', _) => return Err(SyntaxError::new(i, "unexpected \"|\"").hint("use || for or")),
            ('\'' | '"', _) => {
                let (s, len) = lex_string(text, i, c)?;
                (Tok::Str(s), len)
            }
            _ if c.is_ascii_digit()
                || c == '.'
                || (c == '-'
                    && bytes
                        .get(i + 1)
                        .is_some_and(|b| b.is_ascii_digit() || *b == b'.')) =>
            {
                lex_number(text, i)?
            }
            _ if is_name_start(c) => {
                let len = text[i..]
                    .find(|c: char| !is_name_char(c))
                    .unwrap_or(text.len() - i);
                (Tok::Name(text[i..i + len].to_string()), len)
            }
            _ => {
                let err = SyntaxError::new(i, format!("unexpected character \"{c}\""));
                return Err(match c {
                    '+' | '-' | '*' | '/' | '%' => {
                        err.hint("expressions have no arithmetic; compute it in a task")
                    }
                    '}' | '{' => err.hint("an expression ends with }}"),
                    _ => err,
                });
            }
        };
        i += len;
        tokens.push(Token { tok, start, end: i });
    }
    tokens.push(Token {
        tok: Tok::End,
        start: text.len(),
        end: text.len(),
    });
    Ok(tokens)
}

/// A quoted string starting at `start`; returns its value and length.
fn lex_string(text: &str, start: usize, quote: char) -> Result<(String, usize), SyntaxError> {
    let mut out = String::new();
    let mut chars = text[start + 1..].char_indices().peekable();
    while let Some((j, c)) = chars.next() {
        let at = start + 1 + j;
        if c == quote {
            // 'it''s' is how a single-quoted string holds a quote.
            if quote == '\'' && chars.peek().is_some_and(|(_, n)| *n == '\'') {
                chars.next();
                out.push('\'');
                continue;
            }
            return Ok((out, at + 1 - start));
        }
        if c == '\\' && quote == '"' {
            match chars.next() {
                Some((_, '"')) => out.push('"'),
                Some((_, '\\')) => out.push('\\'),
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, other)) => {
                    return Err(
                        SyntaxError::new(at, format!("unknown escape \"\\{other}\""))
                            .hint("escapes are \\\", \\\\, \\n and \\t"),
                    );
                }
                None => break,
            }
            continue;
        }
        out.push(c);
    }
    Err(SyntaxError::new(start, "unclosed string").hint(format!("end the string with {quote}")))
}

/// A number starting at `start` (maybe with a leading `-`).
fn lex_number(text: &str, start: usize) -> Result<(Tok, usize), SyntaxError> {
    let rest = &text[start..];
    let mut len = usize::from(rest.starts_with('-'));
    let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
    len += digits(&rest[len..]);
    let mut float = false;
    if rest[len..].starts_with('.') && rest[len + 1..].starts_with(|c: char| c.is_ascii_digit()) {
        float = true;
        len += 1 + digits(&rest[len + 1..]);
    }
    if rest[len..].starts_with(['e', 'E']) {
        let sign = usize::from(rest[len + 1..].starts_with(['+', '-']));
        let exp = digits(&rest[len + 1 + sign..]);
        if exp > 0 {
            float = true;
            len += 1 + sign + exp;
        }
    }
    let word = &rest[..len];
    if rest[len..].starts_with(is_name_char) {
        return Err(
            SyntaxError::new(start, format!("invalid number \"{word}…\""))
                .hint("names start with a letter or \"_\""),
        );
    }
    let tok = if float {
        word.parse().map(Tok::Float).ok()
    } else {
        word.parse().map(Tok::Int).ok()
    };
    tok.map(|t| (t, len)).ok_or_else(|| {
        SyntaxError::new(start, format!("invalid number \"{word}\""))
            .hint("integers must fit in 64 bits")
    })
}

struct Parser {
    tokens: Vec<Token>,
    next: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        // `lex` always ends the list with `End`.
        &self.tokens[self.next.min(self.tokens.len() - 1)]
    }

    fn bump(&mut self) -> Token {
        let t = self.peek().clone();
        if self.next < self.tokens.len() - 1 {
            self.next += 1;
        }
        t
    }

    fn expect(&mut self, tok: Tok, context: &str) -> Result<Token, SyntaxError> {
        let t = self.peek();
        if t.tok == tok {
            return Ok(self.bump());
        }
        Err(SyntaxError::new(
            t.start,
            format!(
                "expected {} {context}, found {}",
                tok.describe(),
                t.tok.describe()
            ),
        ))
    }

    fn enter(&mut self, at: usize) -> Result<(), SyntaxError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(SyntaxError::new(
                at,
                format!("expression nested more than {MAX_DEPTH} levels deep"),
            ));
        }
        Ok(())
    }

    // A chain (`a || b || …`, `a.b.c…`, `a[0][1]…`) is parsed in a loop
    // but makes a tree as deep as it is long, which resolving, evaluating
    // and dropping walk recursively: each link counts as a level, like a
    // bracket, until the chain ends.

    fn expr(&mut self) -> Result<Ast, SyntaxError> {
        let at = self.peek().start;
        self.enter(at)?;
        let mut links = 0;
        let mut left = self.and()?;
        while self.peek().tok == Tok::Or {
            let at = self.bump().start;
            self.enter(at)?;
            links += 1;
            let right = self.and()?;
            left = binary(left, right, AstKind::Or);
        }
        self.depth -= 1 + links;
        Ok(left)
    }

    fn and(&mut self) -> Result<Ast, SyntaxError> {
        let mut links = 0;
        let mut left = self.cmp()?;
        while self.peek().tok == Tok::And {
            let at = self.bump().start;
            self.enter(at)?;
            links += 1;
            let right = self.cmp()?;
            left = binary(left, right, AstKind::And);
        }
        self.depth -= links;
        Ok(left)
    }

    fn cmp(&mut self) -> Result<Ast, SyntaxError> {
        let left = self.unary()?;
        let Tok::Cmp(op) = self.peek().tok else {
            return Ok(left);
        };
        self.bump();
        let right = self.unary()?;
        if let Tok::Cmp(_) = self.peek().tok {
            return Err(
                SyntaxError::new(self.peek().start, "comparisons cannot be chained")
                    .hint("join two comparisons with &&"),
            );
        }
        Ok(binary(left, right, |l, r| AstKind::Cmp(op, l, r)))
    }

    fn unary(&mut self) -> Result<Ast, SyntaxError> {
        if self.peek().tok == Tok::Not {
            let start = self.bump().start;
            self.enter(start)?;
            let inner = self.unary()?;
            self.depth -= 1;
            let end = inner.end;
            return Ok(Ast {
                kind: AstKind::Not(Box::new(inner)),
                start,
                end,
            });
        }
        self.postfix()
    }

    fn postfix(&mut self) -> Result<Ast, SyntaxError> {
        let mut links = 0;
        let mut base = self.primary()?;
        loop {
            if matches!(self.peek().tok, Tok::Dot | Tok::LBracket) {
                let at = self.peek().start;
                self.enter(at)?;
                links += 1;
            }
            match self.peek().tok {
                Tok::Dot => {
                    self.bump();
                    let t = self.bump();
                    let Tok::Name(name) = t.tok else {
                        return Err(SyntaxError::new(
                            t.start,
                            format!(
                                "expected a field name after \".\", found {}",
                                t.tok.describe()
                            ),
                        )
                        .hint("write [0] to index a list, [\"name\"] for any field name"));
                    };
                    let start = base.start;
                    base = Ast {
                        kind: AstKind::Field(Box::new(base), name, t.start),
                        start,
                        end: t.end,
                    };
                }
                Tok::LBracket => {
                    let open = self.bump().start;
                    let index = self.expr()?;
                    let close = self.expect(Tok::RBracket, "to close \"[\"")?;
                    let start = base.start;
                    let kind = match index.kind {
                        AstKind::Lit(Value::String(name)) => {
                            AstKind::Field(Box::new(base), name, open)
                        }
                        _ => AstKind::Index(Box::new(base), Box::new(index)),
                    };
                    base = Ast {
                        kind,
                        start,
                        end: close.end,
                    };
                }
                _ => {
                    self.depth -= links;
                    return Ok(base);
                }
            }
        }
    }

    fn primary(&mut self) -> Result<Ast, SyntaxError> {
        let t = self.bump();
        let lit = |v: Value| {
            Ok(Ast {
                kind: AstKind::Lit(v),
                start: t.start,
                end: t.end,
            })
        };
        match t.tok.clone() {
            Tok::Int(i) => lit(Value::Int(i)),
            Tok::Float(f) => lit(Value::Float(f)),
            Tok::Str(s) => lit(Value::String(s)),
            Tok::Name(n) if n == "true" => lit(Value::Bool(true)),
            Tok::Name(n) if n == "false" => lit(Value::Bool(false)),
            Tok::Name(n) if n == "null" => lit(Value::Null),
            Tok::Name(name) => {
                if self.peek().tok != Tok::LParen {
                    return Ok(Ast {
                        kind: AstKind::Name(name),
                        start: t.start,
                        end: t.end,
                    });
                }
                self.bump();
                let (args, end) = self.list_of(Tok::RParen, "to close the arguments")?;
                Ok(Ast {
                    kind: AstKind::Call(name, args),
                    start: t.start,
                    end,
                })
            }
            Tok::LParen => {
                let inner = self.expr()?;
                let close = self.expect(Tok::RParen, "to close \"(\"")?;
                Ok(Ast {
                    start: t.start,
                    end: close.end,
                    ..inner
                })
            }
            Tok::LBracket => {
                let (items, end) = self.list_of(Tok::RBracket, "to close the list")?;
                Ok(Ast {
                    kind: AstKind::List(items),
                    start: t.start,
                    end,
                })
            }
            other => Err(SyntaxError::new(
                t.start,
                format!("expected a value, found {}", other.describe()),
            )),
        }
    }

    /// Comma-separated expressions up to `close` (already past the opener).
    fn list_of(&mut self, close: Tok, context: &str) -> Result<(Vec<Ast>, usize), SyntaxError> {
        let mut items = Vec::new();
        loop {
            if self.peek().tok == close {
                return Ok((items, self.bump().end));
            }
            items.push(self.expr()?);
            if self.peek().tok == Tok::Comma {
                self.bump();
                continue;
            }
            let end = self.expect(close.clone(), context)?.end;
            return Ok((items, end));
        }
    }
}

fn binary(left: Ast, right: Ast, make: impl FnOnce(Box<Ast>, Box<Ast>) -> AstKind) -> Ast {
    let (start, end) = (left.start, right.end);
    Ast {
        kind: make(Box::new(left), Box::new(right)),
        start,
        end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(a: &Ast) -> String {
        match &a.kind {
            AstKind::Lit(v) => v.to_string(),
            AstKind::Name(n) => n.clone(),
            AstKind::Field(b, n, _) => format!("{}.{n}", shape(b)),
            AstKind::Index(b, i) => format!("{}[{}]", shape(b), shape(i)),
            AstKind::Call(f, args) => {
                let args: Vec<String> = args.iter().map(shape).collect();
                format!("{f}({})", args.join(", "))
            }
            AstKind::List(items) => {
                let items: Vec<String> = items.iter().map(shape).collect();
                format!("[{}]", items.join(", "))
            }
            AstKind::Not(x) => format!("!{}", shape(x)),
            AstKind::And(l, r) => format!("({} && {})", shape(l), shape(r)),
            AstKind::Or(l, r) => format!("({} || {})", shape(l), shape(r)),
            AstKind::Cmp(op, l, r) => format!("({} {} {})", shape(l), op.as_str(), shape(r)),
        }
    }

    fn ok(text: &str) -> String {
        shape(&parse(text).unwrap_or_else(|e| panic!("{text}: {e:?}")))
    }

    fn err(text: &str) -> (usize, String) {
        let e = parse(text).expect_err(text);
        (e.at, e.message)
    }

    #[test]
    fn precedence_and_access() {
        assert_eq!(ok("a || b && !c == d"), "(a || (b && (!c == d)))");
        assert_eq!(
            ok("tasks.my-task.outputs[\"x y\"][0].z"),
            "tasks.my-task.outputs.x y[0].z"
        );
        assert_eq!(ok("(a || b) && c"), "((a || b) && c)");
        assert_eq!(ok("inputs.x[inputs.i]"), "inputs.x[inputs.i]");
        assert_eq!(
            ok("default(x.y, [1, 'a', -2.5,])"),
            "default(x.y, [1, \"a\", -2.5])"
        );
        assert_eq!(ok("length([])"), "length([])");
    }

    #[test]
    fn literals() {
        assert_eq!(ok("'it''s'"), "\"it's\"");
        assert_eq!(ok(r#""say \"hi\"\n""#), r#""say \"hi\"\n""#);
        assert_eq!(ok("1e3"), "1000.0");
        assert_eq!(ok(".5"), "0.5");
        assert_eq!(ok("null"), "null");
        assert_eq!(ok("-7"), "-7");
    }

    #[test]
    fn errors_point_at_the_problem() {
        assert_eq!(err("a ="), (2, "unexpected \"=\"".into()));
        assert_eq!(
            err("a b"),
            (2, "unexpected name \"b\" after the expression".into())
        );
        assert_eq!(err("'abc"), (0, "unclosed string".into()));
        assert_eq!(
            err("f(a"),
            (
                3,
                "expected \")\" to close the arguments, found the end of the expression".into()
            )
        );
        assert_eq!(
            err("a < b < c"),
            (6, "comparisons cannot be chained".into())
        );
        assert_eq!(err(""), (0, "empty expression".into()));
        assert_eq!(err("a.1").0, 1);
        assert_eq!(
            err("99999999999999999999").1,
            "invalid number \"99999999999999999999\""
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let text = format!("{}a{}", "(".repeat(500), ")".repeat(500));
        assert!(parse(&text).is_err());
        let text = format!("{}a", "!".repeat(500));
        assert!(parse(&text).is_err());
    }

    #[test]
    fn long_chains_count_as_nesting() {
        let deep = "expression nested more than 64 levels deep";
        for chain in [
            format!("a{}", ".b".repeat(1_000_000)),
            format!("a{}", "[0]".repeat(1_000_000)),
            format!("a{}", " || a".repeat(1_000_000)),
            format!("a{}", " && a".repeat(1_000_000)),
        ] {
            let err = parse(&chain).unwrap_err();
            assert_eq!(err.message, deep, "{}", &chain[..20]);
        }
        // Chains that end give their levels back: many short ones are fine.
        let short = vec!["a.b.c || d[0][1] && e"; 500].join(" || ");
        assert!(
            parse(&format!("[{short}]")).is_err(),
            "500 links in one chain"
        );
        let lists = vec!["a.b.c || d[0][1] && e"; 500].join(", ");
        assert!(parse(&format!("[{lists}]")).is_ok());
    }
}
