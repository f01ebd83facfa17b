//! Walks the YAML tree into the raw structs, reporting every structural
//! problem on the way: unknown and duplicate keys, wrong types, unknown
//! keywords, invalid names. Nothing here knows about other tasks, files or
//! expressions; that is [`super::compile`]'s job.

use std::collections::HashMap;

use super::diag::{Pos, Report, did_you_mean, suggest_or_list};
use super::model::{Backoff, Durability, NeedCondition, ValueType};
use super::raw::{
    Any, Defaults, DetailedNeed, DurationText, Entries, Input, InputSpec, Need, Placement, Retry,
    Spanned, Task, Workflow,
};
use super::yaml::{Kind, Node, Style};
use crate::value::Value;

/// Keys of the top level.
pub(crate) const WORKFLOW_KEYS: &[&str] = &[
    "version",
    "name",
    "description",
    "durability",
    "deadline",
    "import",
    "inputs",
    "defaults",
    "templates",
    "tasks",
    "outputs",
];
/// Top-level keys an imported file may hold.
pub(crate) const LIBRARY_KEYS: &[&str] = &["version", "description", "import", "templates"];
/// Keys of a task or template.
pub(crate) const TASK_KEYS: &[&str] = &[
    "uses",
    "with",
    "needs",
    "when",
    "for_each",
    "max_parallel",
    "timeout",
    "retry",
    "extends",
    "placement",
];
/// Keys of `retry`.
pub(crate) const RETRY_KEYS: &[&str] =
    &["max_attempts", "backoff", "initial", "max", "non_retryable"];
/// Keys of `defaults`.
pub(crate) const DEFAULTS_KEYS: &[&str] = &["timeout", "retry"];
/// Keys of the full form of an input.
pub(crate) const INPUT_KEYS: &[&str] = &["type", "default", "description"];
/// Keys of `{task, if}` in `needs`.
pub(crate) const NEED_KEYS: &[&str] = &["task", "if"];
/// Keys of `placement`.
pub(crate) const PLACEMENT_KEYS: &[&str] = &["labels"];

/// An enum written as one of a few words.
pub(crate) trait Keyword: Sized + Copy + 'static {
    /// Every word and its value.
    const WORDS: &'static [(&'static str, Self)];
}

impl Keyword for Durability {
    const WORDS: &'static [(&'static str, Self)] = &[
        ("none", Durability::None),
        ("local", Durability::Local),
        ("replicated", Durability::Replicated),
    ];
}

impl Keyword for ValueType {
    const WORDS: &'static [(&'static str, Self)] = &[
        ("any", ValueType::Any),
        ("string", ValueType::String),
        ("int", ValueType::Int),
        ("float", ValueType::Float),
        ("number", ValueType::Number),
        ("bool", ValueType::Bool),
        ("list", ValueType::List),
        ("map", ValueType::Map),
        ("bytes", ValueType::Bytes),
        ("tensor", ValueType::Tensor),
    ];
}

impl Keyword for Backoff {
    const WORDS: &'static [(&'static str, Self)] = &[
        ("exponential", Backoff::Exponential),
        ("fixed", Backoff::Fixed),
    ];
}

impl Keyword for NeedCondition {
    const WORDS: &'static [(&'static str, Self)] = &[
        ("succeeded", NeedCondition::Succeeded),
        ("always", NeedCondition::Always),
    ];
}

/// Whether `name` can be a task id, input, template or output name (so
/// that `tasks.NAME.outputs` and `inputs.NAME` can read it).
pub(crate) fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// How a node's kind reads in a message: `a list`, `an int`, …
pub(crate) fn describe(node: &Node) -> &'static str {
    match &node.kind {
        Kind::Seq(_) => "a list",
        Kind::Map(_) => "a mapping",
        Kind::Scalar(s) => match s.resolve() {
            Value::Null => "nothing",
            Value::Bool(_) => "a bool",
            Value::Int(_) => "an int",
            Value::Float(_) => "a float",
            _ => "a string",
        },
    }
}

/// Parses the main workflow file.
pub(crate) fn workflow(node: &Node, report: &mut Report) -> Workflow {
    Walker { report }.file(node, WORKFLOW_KEYS, "the workflow")
}

/// Parses an imported file: only [`LIBRARY_KEYS`] are allowed.
pub(crate) fn library(node: &Node, report: &mut Report) -> Workflow {
    Walker { report }.file(node, LIBRARY_KEYS, "the imported file")
}

/// The `import` entries of a file, read leniently (no problems reported):
/// what [`super::load`] needs to find the files to read.
pub(crate) fn imports(node: &Node) -> Vec<String> {
    let Kind::Map(entries) = &node.kind else {
        return Vec::new();
    };
    entries
        .iter()
        .filter(|(k, _)| k.key_text() == "import")
        .flat_map(|(_, v)| match &v.kind {
            Kind::Seq(items) => items.iter().collect::<Vec<_>>(),
            _ => Vec::new(),
        })
        .filter_map(|n| n.as_scalar().map(|s| s.text.clone()))
        .collect()
}

/// The keys of a mapping that passed the checks, with their values.
struct Fields<'n> {
    found: Vec<(&'n str, &'n Node)>,
}

impl<'n> Fields<'n> {
    fn get(&self, key: &str) -> Option<&'n Node> {
        self.found.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }
}

struct Walker<'r> {
    report: &'r mut Report,
}

impl Walker<'_> {
    fn file(&mut self, node: &Node, allowed: &[&str], what: &str) -> Workflow {
        if !node.is_null() && !matches!(node.kind, Kind::Map(_)) {
            self.report.error(
                node.pos,
                format!(
                    "a workflow file must be a mapping of keys, found {}",
                    describe(node)
                ),
            );
            return Workflow::default();
        }
        let Some(f) = self.fields(node, WORKFLOW_KEYS, what) else {
            return Workflow::default();
        };
        for (key, value) in &f.found {
            if !allowed.contains(key) {
                self.report.error_hint(
                    node.key_pos(key).unwrap_or(value.pos),
                    format!("\"{key}\" is not allowed in an imported file"),
                    Some(format!(
                        "an imported file may only hold {}",
                        allowed.join(", ")
                    )),
                );
            }
        }
        let f = Fields {
            found: f
                .found
                .into_iter()
                .filter(|(k, _)| allowed.contains(k))
                .collect(),
        };
        Workflow {
            version: f.get("version").and_then(|n| self.int(n, "version", what)),
            name: f.get("name").and_then(|n| self.string(n, "name", what)),
            description: f
                .get("description")
                .and_then(|n| self.string(n, "description", what)),
            durability: f
                .get("durability")
                .and_then(|n| self.keyword(n, "durability", what)),
            deadline: f
                .get("deadline")
                .and_then(|n| self.duration(n, "deadline", what)),
            import: f
                .get("import")
                .and_then(|n| self.string_list(n, "import", what)),
            inputs: f.get("inputs").and_then(|n| {
                self.entries(n, "inputs", what, "input", |w, name, v| {
                    w.input(v, &format!("input \"{}\"", name.value))
                })
            }),
            defaults: f.get("defaults").and_then(|n| self.defaults(n)),
            templates: f.get("templates").and_then(|n| {
                self.entries(n, "templates", what, "template", |w, name, v| {
                    Some(w.task(v, &format!("template \"{}\"", name.value)))
                })
            }),
            tasks: f.get("tasks").and_then(|n| {
                self.entries(n, "tasks", what, "task id", |w, name, v| {
                    Some(w.task(v, &format!("task \"{}\"", name.value)))
                })
            }),
            outputs: f.get("outputs").and_then(|n| {
                self.entries(n, "outputs", what, "output", |w, name, v| {
                    Some(w.any(v, &format!("output \"{}\"", name.value)))
                })
            }),
        }
    }

    fn input(&mut self, node: &Node, what: &str) -> Option<Input> {
        match &node.kind {
            Kind::Scalar(_) if node.is_null() => {
                self.report.error_hint(
                    node.pos,
                    format!("{what} has no type"),
                    Some(format!("write a type keyword: {}", words::<ValueType>())),
                );
                None
            }
            Kind::Scalar(_) => self.keyword_value(node, what, "type").map(Input::Type),
            Kind::Map(_) => {
                let f = self.fields(node, INPUT_KEYS, what)?;
                Some(Input::Spec(InputSpec {
                    ty: f.get("type").and_then(|n| self.keyword(n, "type", what)),
                    default: f
                        .get("default")
                        .map(|n| self.any(n, &format!("the default of {what}"))),
                    description: f
                        .get("description")
                        .and_then(|n| self.string(n, "description", what)),
                }))
            }
            Kind::Seq(_) => {
                self.report.error_hint(
                    node.pos,
                    format!("{what} must be a type keyword or a mapping, found a list"),
                    Some("write e.g. `reviews: list` or `reviews: { type: list }`".into()),
                );
                None
            }
        }
    }

    fn defaults(&mut self, node: &Node) -> Option<Defaults> {
        let what = "defaults";
        let f = self.fields(node, DEFAULTS_KEYS, what)?;
        Some(Defaults {
            timeout: f
                .get("timeout")
                .and_then(|n| self.duration(n, "timeout", what)),
            retry: f
                .get("retry")
                .and_then(|n| self.retry(n, "the retry of defaults")),
        })
    }

    fn retry(&mut self, node: &Node, what: &str) -> Option<Retry> {
        let f = self.fields(node, RETRY_KEYS, what)?;
        Some(Retry {
            max_attempts: f
                .get("max_attempts")
                .and_then(|n| self.int(n, "max_attempts", what)),
            backoff: f
                .get("backoff")
                .and_then(|n| self.keyword(n, "backoff", what)),
            initial: f
                .get("initial")
                .and_then(|n| self.duration(n, "initial", what)),
            max: f.get("max").and_then(|n| self.duration(n, "max", what)),
            non_retryable: f
                .get("non_retryable")
                .and_then(|n| self.string_list(n, "non_retryable", what)),
        })
    }

    fn task(&mut self, node: &Node, what: &str) -> Task {
        let Some(f) = self.fields(node, TASK_KEYS, what) else {
            return Task::default();
        };
        Task {
            uses: f.get("uses").and_then(|n| self.string(n, "uses", what)),
            with: f
                .get("with")
                .map(|n| self.any(n, &format!("\"with\" of {what}"))),
            needs: f.get("needs").and_then(|n| self.needs(n, what)),
            when: f
                .get("when")
                .map(|n| self.any(n, &format!("\"when\" of {what}"))),
            for_each: f
                .get("for_each")
                .map(|n| self.any(n, &format!("\"for_each\" of {what}"))),
            max_parallel: f
                .get("max_parallel")
                .and_then(|n| self.int(n, "max_parallel", what)),
            timeout: f
                .get("timeout")
                .and_then(|n| self.duration(n, "timeout", what)),
            retry: f
                .get("retry")
                .and_then(|n| self.retry(n, &format!("the retry of {what}"))),
            extends: f.get("extends").and_then(|n| match &n.kind {
                Kind::Scalar(_) => self.string(n, "extends", what).map(|s| vec![s]),
                _ => self.string_list(n, "extends", what),
            }),
            placement: f.get("placement").and_then(|n| self.placement(n, what)),
        }
    }

    fn needs(&mut self, node: &Node, what: &str) -> Option<Vec<Need>> {
        let Kind::Seq(items) = &node.kind else {
            let hint = node
                .as_scalar()
                .map(|s| format!("write a list: needs: [{}]", s.text));
            self.report.error_hint(
                node.pos,
                format!(
                    "\"needs\" in {what} must be a list, found {}",
                    describe(node)
                ),
                hint,
            );
            return None;
        };
        let mut needs = Vec::new();
        for item in items {
            match &item.kind {
                Kind::Scalar(_) => {
                    if let Some(s) = self.string(item, "needs", what) {
                        needs.push(Need::Task(s));
                    }
                }
                Kind::Map(_) => {
                    let Some(f) = self.fields(item, NEED_KEYS, &format!("a need of {what}")) else {
                        continue;
                    };
                    let condition = f.get("if").and_then(|n| self.keyword(n, "if", what));
                    match f.get("task") {
                        Some(t) => {
                            if let Some(task) = self.string(t, "task", what) {
                                needs.push(Need::Detailed(DetailedNeed { task, condition }));
                            }
                        }
                        None => self.report.error_hint(
                            item.pos,
                            format!("an entry of \"needs\" in {what} has no \"task\""),
                            Some("write {task: ID, if: always}".into()),
                        ),
                    }
                }
                Kind::Seq(_) => self.report.error_hint(
                    item.pos,
                    format!("entries of \"needs\" in {what} must be task ids, found a list"),
                    Some("write needs: [a, b] or needs: [{task: a, if: always}]".into()),
                ),
            }
        }
        Some(needs)
    }

    fn placement(&mut self, node: &Node, what: &str) -> Option<Placement> {
        let inner = format!("the placement of {what}");
        let f = self.fields(node, PLACEMENT_KEYS, &inner)?;
        let labels = f.get("labels").and_then(|n| {
            self.entries(n, "labels", &inner, "", |w, name, v| match &v.kind {
                Kind::Scalar(s) => Some(Spanned {
                    value: s.text.clone(),
                    pos: v.pos,
                }),
                _ => {
                    w.report.error(
                        v.pos,
                        format!(
                            "label \"{}\" in {inner} must be a string, found {}",
                            name.value,
                            describe(v)
                        ),
                    );
                    None
                }
            })
        });
        Some(Placement { labels })
    }

    /// A value kept as written; duplicate keys anywhere inside are reported.
    fn any(&mut self, node: &Node, what: &str) -> Any {
        self.duplicates(node, what);
        Any(node.clone())
    }

    fn duplicates(&mut self, node: &Node, what: &str) {
        match &node.kind {
            Kind::Scalar(_) => {}
            Kind::Seq(items) => {
                for item in items {
                    self.duplicates(item, what);
                }
            }
            Kind::Map(entries) => {
                let mut first: HashMap<&str, Pos> = HashMap::with_capacity(entries.len());
                for (k, v) in entries {
                    let key = k.key_text();
                    if let Some(first) = first.get(key) {
                        self.report.error_hint(
                            k.pos,
                            format!("duplicate key \"{key}\" in {what}"),
                            Some(format!(
                                "\"{key}\" is first set at line {}; keep one",
                                first.line
                            )),
                        );
                    } else {
                        first.insert(key, k.pos);
                    }
                    self.duplicates(v, what);
                }
            }
        }
    }

    /// The fields of a mapping node; reports unknown and duplicate keys.
    /// A null node is an empty mapping; anything else is reported.
    fn fields<'n>(&mut self, node: &'n Node, keys: &[&str], what: &str) -> Option<Fields<'n>> {
        if node.is_null() {
            return Some(Fields { found: Vec::new() });
        }
        let Kind::Map(entries) = &node.kind else {
            self.report.error(
                node.pos,
                format!("{what} must be a mapping, found {}", describe(node)),
            );
            return None;
        };
        let mut found: Vec<(&'n str, &'n Node)> = Vec::new();
        let mut first_pos: Vec<Pos> = Vec::new();
        for (k, v) in entries {
            let key = k.key_text();
            if !keys.contains(&key) {
                let hint = did_you_mean(key, keys.iter().copied())
                    .or_else(|| Some(format!("expected one of: {}", keys.join(", "))));
                self.report
                    .error_hint(k.pos, format!("unknown key \"{key}\" in {what}"), hint);
                continue;
            }
            if let Some(i) = found.iter().position(|(f, _)| *f == key) {
                let first = first_pos[i];
                self.report.error_hint(
                    k.pos,
                    format!("duplicate key \"{key}\" in {what}"),
                    Some(format!(
                        "\"{key}\" is first set at line {}; keep one",
                        first.line
                    )),
                );
                continue;
            }
            found.push((key, v));
            first_pos.push(k.pos);
        }
        Some(Fields { found })
    }

    /// A mapping from names to `T`; reports duplicate and invalid names.
    /// `name_kind` (e.g. `task id`) names the keys in messages; empty when
    /// any key is fine.
    fn entries<T>(
        &mut self,
        node: &Node,
        key: &str,
        what: &str,
        name_kind: &str,
        mut each: impl FnMut(&mut Self, &Spanned<String>, &Node) -> Option<T>,
    ) -> Option<Entries<T>> {
        if node.is_null() {
            return Some(Entries::default());
        }
        let Kind::Map(pairs) = &node.kind else {
            self.report.error(
                node.pos,
                format!(
                    "\"{key}\" in {what} must be a mapping, found {}",
                    describe(node)
                ),
            );
            return None;
        };
        let mut out: Vec<(Spanned<String>, T)> = Vec::new();
        let mut seen: HashMap<&str, Pos> = HashMap::with_capacity(pairs.len());
        for (k, v) in pairs {
            let name = k.key_text();
            if let Some(first) = seen.get(name) {
                self.report.error_hint(
                    k.pos,
                    format!("duplicate key \"{name}\" in \"{key}\""),
                    Some(format!(
                        "\"{name}\" is first defined at line {}; names must be unique",
                        first.line
                    )),
                );
                continue;
            }
            seen.insert(name, k.pos);
            if !name_kind.is_empty() && !is_name(name) {
                self.report.error_hint(
                    k.pos,
                    format!("{name_kind} \"{name}\" is not a valid name"),
                    Some(
                        "use letters, digits, \"_\" and \"-\", starting with a letter or \"_\""
                            .into(),
                    ),
                );
                continue;
            }
            let name = Spanned {
                value: name.to_string(),
                pos: k.pos,
            };
            if let Some(value) = each(self, &name, v) {
                out.push((name, value));
            }
        }
        Some(Entries(out))
    }

    fn wrong_type(&mut self, node: &Node, key: &str, what: &str, expected: &str) {
        let hint = match node.as_scalar() {
            Some(s) if s.style == Style::Plain && !node.is_null() && expected == "a string" => {
                Some(format!("quote it: \"{}\"", s.text))
            }
            _ => None,
        };
        self.report.error_hint(
            node.pos,
            format!(
                "\"{key}\" in {what} must be {expected}, found {}",
                describe(node)
            ),
            hint,
        );
    }

    fn string(&mut self, node: &Node, key: &str, what: &str) -> Option<Spanned<String>> {
        match node.as_scalar().map(|s| s.resolve()) {
            Some(Value::String(value)) => Some(Spanned {
                value,
                pos: node.pos,
            }),
            _ => {
                self.wrong_type(node, key, what, "a string");
                None
            }
        }
    }

    fn int(&mut self, node: &Node, key: &str, what: &str) -> Option<Spanned<i64>> {
        match node.as_scalar().map(|s| s.resolve()) {
            Some(Value::Int(value)) => Some(Spanned {
                value,
                pos: node.pos,
            }),
            _ => {
                self.wrong_type(node, key, what, "an integer");
                None
            }
        }
    }

    fn duration(&mut self, node: &Node, key: &str, what: &str) -> Option<Spanned<DurationText>> {
        match node.as_scalar().map(|s| s.resolve()) {
            Some(Value::String(value)) => Some(Spanned {
                value: DurationText(value),
                pos: node.pos,
            }),
            Some(Value::Int(n)) => {
                self.report.error_hint(
                    node.pos,
                    format!("\"{key}\" in {what} must be a duration, found the number {n}"),
                    Some(format!("add a unit, e.g. \"{n}s\" or \"{n}ms\"")),
                );
                None
            }
            _ => {
                self.wrong_type(node, key, what, "a duration such as \"30s\"");
                None
            }
        }
    }

    fn string_list(&mut self, node: &Node, key: &str, what: &str) -> Option<Vec<Spanned<String>>> {
        let Kind::Seq(items) = &node.kind else {
            self.wrong_type(node, key, what, "a list");
            return None;
        };
        Some(
            items
                .iter()
                .filter_map(|item| self.string(item, key, what))
                .collect(),
        )
    }

    fn keyword<K: Keyword>(&mut self, node: &Node, key: &str, what: &str) -> Option<Spanned<K>> {
        self.keyword_value(node, &format!("\"{key}\" in {what}"), key)
    }

    /// `subject` names the field in messages (`"backoff" in …`).
    fn keyword_value<K: Keyword>(
        &mut self,
        node: &Node,
        subject: &str,
        key: &str,
    ) -> Option<Spanned<K>> {
        let text = match node.as_scalar().map(|s| s.resolve()) {
            Some(Value::String(t)) => t,
            _ => {
                self.report.error_hint(
                    node.pos,
                    format!(
                        "{subject} must be one of {}, found {}",
                        words::<K>(),
                        describe(node)
                    ),
                    None,
                );
                return None;
            }
        };
        if let Some((_, value)) = K::WORDS.iter().find(|(w, _)| *w == text) {
            return Some(Spanned {
                value: *value,
                pos: node.pos,
            });
        }
        let hint = suggest_or_list(&text, K::WORDS.iter().map(|(w, _)| *w), "expected one of");
        let noun = if key == "type" { "type" } else { "value" };
        self.report.error_hint(
            node.pos,
            format!("unknown {noun} \"{text}\" for {subject}"),
            hint,
        );
        None
    }
}

/// `a, b or c` for a keyword enum.
fn words<K: Keyword>() -> String {
    let words: Vec<&str> = K::WORDS.iter().map(|(w, _)| *w).collect();
    match words.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => words.join(""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wdl::yaml;

    fn parse(text: &str) -> (Workflow, Vec<String>) {
        let mut report = Report::default();
        let node = yaml::parse(0, text, &mut report).unwrap();
        let wf = workflow(&node, &mut report);
        let names = vec!["t.yaml".to_string()];
        let msgs = report
            .finish(&names)
            .iter()
            .map(|d| format!("{}:{} {}", d.line, d.col, d.message))
            .collect();
        (wf, msgs)
    }

    #[test]
    fn reads_a_full_task() {
        let (wf, msgs) = parse(
            "version: 1\nname: x\ntasks:\n  a:\n    uses: builtin/echo\n    needs: [b, {task: c, if: always}]\n    extends: base\n    retry: {max_attempts: 3, backoff: fixed}\n",
        );
        assert!(msgs.is_empty(), "{msgs:?}");
        let tasks = wf.tasks.unwrap();
        let (name, task) = &tasks.0[0];
        assert_eq!(name.value, "a");
        assert_eq!(task.needs.as_ref().unwrap().len(), 2);
        assert_eq!(task.extends.as_ref().unwrap()[0].value, "base");
        let retry = task.retry.as_ref().unwrap();
        assert_eq!(retry.backoff.as_ref().unwrap().value, Backoff::Fixed);
    }

    #[test]
    fn reports_unknown_duplicate_and_mistyped_keys() {
        let (_, msgs) = parse(
            "version: 1\nname: [x]\ntasks:\n  a:\n    uses: exec\n    need: [b]\n    uses: http\n    max_parallel: two\n",
        );
        assert_eq!(
            msgs,
            vec![
                "2:7 \"name\" in the workflow must be a string, found a list",
                "6:5 unknown key \"need\" in task \"a\"",
                "7:5 duplicate key \"uses\" in task \"a\"",
                "8:19 \"max_parallel\" in task \"a\" must be an integer, found a string",
            ]
        );
    }

    #[test]
    fn keywords_suggest_the_closest_word() {
        let (_, msgs) = parse("version: 1\nname: x\ndurability: locl\ninputs:\n  n: strng\n");
        assert_eq!(
            msgs,
            vec![
                "3:13 unknown value \"locl\" for \"durability\" in the workflow",
                "5:6 unknown type \"strng\" for input \"n\"",
            ]
        );
    }

    #[test]
    fn invalid_names_are_reported() {
        let (_, msgs) = parse("version: 1\nname: x\ntasks:\n  \"my task\": {uses: exec}\n");
        assert_eq!(msgs, vec!["4:3 task id \"my task\" is not a valid name"]);
    }

    #[test]
    fn names() {
        assert!(is_name("a"));
        assert!(is_name("_a-b_2"));
        assert!(!is_name("2a"));
        assert!(!is_name("a.b"));
        assert!(!is_name(""));
    }
}
