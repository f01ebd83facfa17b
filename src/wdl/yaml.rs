//! A YAML document as a tree that remembers where everything was written.
//!
//! Built from the events of `yaml-rust2`'s parser rather than a ready-made
//! tree because the language needs three things those trees drop: every key
//! of a mapping including duplicates (to report each one), the position of
//! every key and value, and whether a scalar was quoted (`"1"` is a string,
//! `1` an int). Anchors, aliases, tags and multi-document streams are
//! reported as unsupported; templates and `extends` are the way to reuse.

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use super::diag::{Pos, Report};
use crate::value::{Map, Value};

/// Mappings and sequences nested deeper than this are refused, whatever the
/// style (flow brackets, indentation, compact `- ` and `? ` entries all
/// count alike): the tree is walked (and dropped) recursively.
pub(crate) const MAX_DEPTH: usize = 64;

/// A YAML node and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    /// Where the node starts (for a quoted scalar, its opening quote).
    pub(crate) pos: Pos,
    /// What the node is.
    pub(crate) kind: Kind,
}

/// The three kinds of YAML node.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    /// A scalar, as written (not yet resolved to a type).
    Scalar(Scalar),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in file order, duplicates kept. Keys are scalars.
    Map(Vec<(Node, Node)>),
}

/// A scalar's text and how it was written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Scalar {
    /// The text after YAML unquoting and folding.
    pub(crate) text: String,
    /// How it was written.
    pub(crate) style: Style,
}

/// How a scalar was written: only plain scalars can be null, bools or numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    /// Unquoted.
    Plain,
    /// Single or double quoted.
    Quoted,
    /// A `|` or `>` block.
    Block,
}

impl Node {
    /// The scalar, when this node is one.
    pub(crate) fn as_scalar(&self) -> Option<&Scalar> {
        match &self.kind {
            Kind::Scalar(s) => Some(s),
            _ => None,
        }
    }

    /// The text of a scalar key (empty for anything else).
    pub(crate) fn key_text(&self) -> &str {
        self.as_scalar().map_or("", |s| s.text.as_str())
    }

    /// The value of `key` when this is a mapping that has it.
    pub(crate) fn get(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            Kind::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.key_text() == key)
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// Where `key` is written when this is a mapping that has it.
    pub(crate) fn key_pos(&self, key: &str) -> Option<Pos> {
        match &self.kind {
            Kind::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.key_text() == key)
                .map(|(k, _)| k.pos),
            _ => None,
        }
    }

    /// Whether this is a plain null (`~`, `null`, or nothing at all).
    pub(crate) fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar(s) if s.style == Style::Plain
            && matches!(s.text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// An empty plain scalar (what YAML makes of `key:` with no value).
    pub(crate) fn null_at(pos: Pos) -> Node {
        Node {
            pos,
            kind: Kind::Scalar(Scalar {
                text: String::new(),
                style: Style::Plain,
            }),
        }
    }
}

impl Scalar {
    /// The value YAML 1.2's core schema gives this scalar: only plain
    /// scalars become null, bools or numbers (`yes` and `no` stay strings).
    pub(crate) fn resolve(&self) -> Value {
        if self.style != Style::Plain {
            return Value::String(self.text.clone());
        }
        resolve_plain(&self.text).unwrap_or_else(|| Value::String(self.text.clone()))
    }
}

/// Null, bool, int or float for a plain scalar that is one.
fn resolve_plain(text: &str) -> Option<Value> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Some(Value::Null),
        "true" | "True" | "TRUE" => return Some(Value::Bool(true)),
        "false" | "False" | "FALSE" => return Some(Value::Bool(false)),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Some(Value::Float(f64::INFINITY));
        }
        "-.inf" | "-.Inf" | "-.INF" => return Some(Value::Float(f64::NEG_INFINITY)),
        ".nan" | ".NaN" | ".NAN" => return Some(Value::Float(f64::NAN)),
        _ => {}
    }
    if let Some(hex) = text.strip_prefix("0x") {
        return i64::from_str_radix(hex, 16).ok().map(Value::Int);
    }
    if let Some(oct) = text.strip_prefix("0o") {
        return i64::from_str_radix(oct, 8).ok().map(Value::Int);
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return Some(text.parse::<i64>().map_or_else(
            |_| Value::Float(text.parse().unwrap_or(f64::NAN)),
            Value::Int,
        ));
    }
    // Rust's float syntax is wider than YAML's ("inf", "nan", "1_0"): only
    // digits, one dot and an exponent pass.
    let looks_numeric = digits.bytes().any(|b| b.is_ascii_digit())
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
        && digits.starts_with(|c: char| c.is_ascii_digit() || c == '.');
    if looks_numeric {
        return text.parse::<f64>().ok().map(Value::Float);
    }
    None
}

/// The value a YAML tree stands for, strings taken literally. A mapping
/// with the single key `$bytes` or `$tensor` is read as bytes or a tensor,
/// as in the JSON form of [`Value`].
pub(crate) fn to_value(node: &Node) -> Value {
    match &node.kind {
        Kind::Scalar(s) => s.resolve(),
        Kind::Seq(items) => Value::List(items.iter().map(to_value).collect()),
        Kind::Map(entries) => {
            let map: Map = entries
                .iter()
                .map(|(k, v)| (k.key_text().to_string(), to_value(v)))
                .collect();
            let tagged = map.len() == 1 && map.keys().all(|k| k == "$bytes" || k == "$tensor");
            if tagged {
                let value = Value::Map(map);
                match Value::from_json(value.to_json()) {
                    v @ (Value::Bytes(_) | Value::Tensor(_)) => v,
                    _ => value,
                }
            } else {
                Value::Map(map)
            }
        }
    }
}

/// Parses `text` (file `file`) into a tree. Problems go to `report`; `None`
/// when the text is not valid YAML. An empty document gives an empty mapping.
pub(crate) fn parse(file: u32, text: &str, report: &mut Report) -> Option<Node> {
    let mut builder = Builder {
        file,
        report,
        stack: Vec::new(),
        root: None,
        documents: 0,
        refused: false,
        stopped: false,
    };
    // The parser is pulled event by event instead of through `Parser::load`,
    // which recurses once per level of nesting with no limit: a 200 KB file
    // of `- - - …` overflows the stack there before any event reaches the
    // builder. Pulled, nesting is only the builder's stack, and the builder
    // stops at `MAX_DEPTH` without reading the rest of the text.
    let mut parser = Parser::new_from_str(text);
    while !builder.stopped {
        match parser.next_token() {
            Ok((Event::StreamEnd, _)) => break,
            Ok((event, mark)) => builder.on_event(event, mark),
            Err(e) => {
                let pos = builder.pos(*e.marker());
                let info = e.info().to_string();
                report_scan_error(builder.report, pos, &info);
                return None;
            }
        }
    }
    // Without the aliased values the tree would raise confusing problems
    // ("task b has no uses"): the refusals are reported alone.
    if builder.refused || (builder.stopped && builder.root.is_none()) {
        return None;
    }
    Some(
        builder
            .root
            .take()
            .unwrap_or_else(|| Node::null_at(Pos::file_start(file))),
    )
}

fn report_scan_error(report: &mut Report, pos: Pos, info: &str) {
    // The scanner counts flow levels in a byte and, looking ahead for
    // keys, can reach 256 `[` before the builder sees the 65th.
    if info.contains("recursion limit exceeded") {
        report.error(
            pos,
            format!("yaml nested more than {MAX_DEPTH} levels deep"),
        );
        return;
    }
    let hint = if info.contains("tab") {
        Some("indent with spaces; YAML does not allow tabs for indentation".to_string())
    } else if info.contains("mapping values are not allowed") {
        Some("quote a value that contains \": \", or check the indentation".to_string())
    } else {
        None
    };
    report.error_hint(pos, format!("invalid yaml: {info}"), hint);
}

/// A collection being built.
enum Frame {
    Seq {
        pos: Pos,
        items: Vec<Node>,
    },
    Map {
        pos: Pos,
        entries: Vec<(Node, Node)>,
        /// `Some(None)`: a key that is not a scalar was seen; its value is
        /// dropped.
        key: Option<Option<Node>>,
    },
}

struct Builder<'r> {
    file: u32,
    report: &'r mut Report,
    stack: Vec<Frame>,
    root: Option<Node>,
    documents: usize,
    /// An anchor, alias or tag was refused: the tree would be misleading.
    refused: bool,
    /// Set after a problem that makes the rest of the events meaningless.
    stopped: bool,
}

impl Builder<'_> {
    fn pos(&self, m: Marker) -> Pos {
        Pos {
            file: self.file,
            line: u32::try_from(m.line()).unwrap_or(u32::MAX),
            col: u32::try_from(m.col() + 1).unwrap_or(u32::MAX),
            offset: u32::try_from(m.index()).unwrap_or(u32::MAX),
        }
    }

    fn refuse_anchor_and_tag(&mut self, pos: Pos, anchor: usize, tagged: bool) {
        self.refused |= anchor != 0 || tagged;
        if anchor != 0 {
            self.report.error_hint(
                pos,
                "yaml anchors and aliases are not supported",
                Some("share settings with templates and extends instead".into()),
            );
        }
        if tagged {
            self.report.error_hint(
                pos,
                "yaml tags are not supported",
                Some("remove the tag; quote a value to make it a string".into()),
            );
        }
    }

    fn open(&mut self, frame: Frame, pos: Pos) {
        if self.stack.len() >= MAX_DEPTH {
            self.report.error(
                pos,
                format!("yaml nested more than {MAX_DEPTH} levels deep"),
            );
            self.stopped = true;
            return;
        }
        self.stack.push(frame);
    }

    fn push(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => {
                    if node.as_scalar().is_some() {
                        *key = Some(Some(node));
                    } else {
                        self.report
                            .error(node.pos, "mapping keys must be plain strings");
                        *key = Some(None);
                    }
                }
                Some(Some(k)) => entries.push((k, node)),
                Some(None) => {}
            },
        }
    }
}

impl Builder<'_> {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.stopped {
            return;
        }
        let pos = self.pos(mark);
        match ev {
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents > 1 {
                    self.report.error_hint(
                        pos,
                        "a workflow file holds a single yaml document",
                        Some("remove the second document (after \"---\")".into()),
                    );
                    self.stopped = true;
                }
            }
            Event::Alias(_) => {
                self.refuse_anchor_and_tag(pos, 1, false);
                self.push(Node::null_at(pos));
            }
            Event::Scalar(text, style, anchor, tag) => {
                self.refuse_anchor_and_tag(pos, anchor, tag.is_some());
                let style = match style {
                    TScalarStyle::Plain => Style::Plain,
                    TScalarStyle::SingleQuoted | TScalarStyle::DoubleQuoted => Style::Quoted,
                    TScalarStyle::Literal | TScalarStyle::Folded => Style::Block,
                };
                self.push(Node {
                    pos,
                    kind: Kind::Scalar(Scalar { text, style }),
                });
            }
            Event::SequenceStart(anchor, tag) => {
                self.refuse_anchor_and_tag(pos, anchor, tag.is_some());
                self.open(
                    Frame::Seq {
                        pos,
                        items: Vec::new(),
                    },
                    pos,
                );
            }
            Event::MappingStart(anchor, tag) => {
                self.refuse_anchor_and_tag(pos, anchor, tag.is_some());
                self.open(
                    Frame::Map {
                        pos,
                        entries: Vec::new(),
                        key: None,
                    },
                    pos,
                );
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let node = match self.stack.pop() {
                    Some(Frame::Seq { pos, items }) => Node {
                        pos,
                        kind: Kind::Seq(items),
                    },
                    Some(Frame::Map { pos, entries, .. }) => Node {
                        // A block mapping's start event points one character
                        // late; its first key is the better place.
                        pos: entries.first().map_or(pos, |(k, _)| k.pos),
                        kind: Kind::Map(entries),
                    },
                    None => return,
                };
                self.push(node);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(text: &str) -> (Option<Node>, Report) {
        let mut report = Report::default();
        let node = parse(0, text, &mut report);
        (node, report)
    }

    #[test]
    fn keeps_duplicates_positions_and_quoting() {
        let (node, report) = tree("a: 1\nb:\n  - \"x\"\na: 2\n");
        assert!(report.is_empty());
        let Kind::Map(entries) = node.unwrap().kind else {
            panic!("not a map")
        };
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[2].0.key_text(), "a");
        assert_eq!((entries[2].0.pos.line, entries[2].0.pos.col), (4, 1));
        let Kind::Seq(items) = &entries[1].1.kind else {
            panic!("not a seq")
        };
        assert_eq!(items[0].as_scalar().unwrap().style, Style::Quoted);
        assert_eq!((items[0].pos.line, items[0].pos.col), (3, 5));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let (node, report) = tree("a: [1, 2\n");
        assert!(node.is_none());
        assert_eq!(report.len(), 1);
    }

    #[test]
    fn anchors_and_second_documents_are_refused() {
        let (_, report) = tree("a: &x 1\nb: *x\n");
        assert_eq!(report.len(), 2);
        let (_, report) = tree("a: 1\n---\nb: 2\n");
        assert_eq!(report.len(), 1);
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = format!("a: {}{}", "[".repeat(200), "]".repeat(200));
        let (_, report) = tree(&text);
        assert!(!report.is_empty());
    }

    /// Nested far past the limit in each style the scanner knows, as a
    /// hostile file would be: each is refused with the limit's message at
    /// the 65th level, and no stack overflows on the way.
    #[test]
    fn nesting_is_refused_in_every_style_before_anything_recurses() {
        let indented = |item: &str| -> String {
            (0..2_000)
                .map(|i| format!("{}{item}\n", " ".repeat(i)))
                .collect()
        };
        let styles = [
            format!("x:\n{}1", "- ".repeat(1_000_000)),
            format!("x:\n{}1", "? ".repeat(1_000_000)),
            format!("x:\n{}", "- ? ".repeat(500_000)),
            format!("x: {}{}", "[".repeat(1_000_000), "]".repeat(1_000_000)),
            format!("x: {}", "{a: ".repeat(1_000_000)),
            indented("a:"),
            indented("-"),
        ];
        for text in &styles {
            let (node, report) = tree(text);
            assert!(node.is_none(), "{}", &text[..40]);
            let messages: Vec<String> = report
                .finish(&["f.yaml".to_string()])
                .iter()
                .map(ToString::to_string)
                .collect();
            assert_eq!(messages.len(), 1, "{messages:?}");
            assert!(
                messages[0].contains("nested more than 64 levels deep"),
                "{messages:?}"
            );
        }
    }

    #[test]
    fn nesting_up_to_the_limit_is_accepted() {
        let text = format!("x:\n{}1", "- ".repeat(MAX_DEPTH - 1));
        let (node, report) = tree(&text);
        assert!(report.is_empty());
        let mut depth = 0;
        let mut node = node.unwrap();
        while let Some(next) = match node.kind {
            Kind::Map(mut e) => Some(e.remove(0).1),
            Kind::Seq(mut i) => Some(i.remove(0)),
            Kind::Scalar(_) => None,
        } {
            depth += 1;
            node = next;
        }
        assert_eq!(depth, MAX_DEPTH);
    }

    #[test]
    fn plain_scalars_resolve_like_yaml_1_2() {
        let plain = |t: &str| {
            Scalar {
                text: t.into(),
                style: Style::Plain,
            }
            .resolve()
        };
        assert_eq!(plain("~"), Value::Null);
        assert_eq!(plain("true"), Value::Bool(true));
        assert_eq!(plain("yes"), Value::from("yes"));
        assert_eq!(plain("-12"), Value::Int(-12));
        assert_eq!(plain("0x1f"), Value::Int(31));
        assert_eq!(plain("1.5e3"), Value::Float(1500.0));
        assert_eq!(plain(".5"), Value::Float(0.5));
        assert_eq!(plain("inf"), Value::from("inf"));
        assert_eq!(plain("1.2.3"), Value::from("1.2.3"));
        assert_eq!(plain("30s"), Value::from("30s"));
        let quoted = Scalar {
            text: "1".into(),
            style: Style::Quoted,
        };
        assert_eq!(quoted.resolve(), Value::from("1"));
    }

    #[test]
    fn empty_text_is_an_empty_document() {
        let (node, report) = tree("");
        assert!(report.is_empty());
        assert!(node.unwrap().is_null());
    }
}
