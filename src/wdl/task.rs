//! Tasks and templates before and after `extends`.
//!
//! Each definition (task, template, `defaults`) is checked once where it is
//! written, into a [`Partial`]: durations parsed, numbers bounded, `uses`
//! looked up, expression syntax checked. Partials then merge: templates in
//! `extends` order are the base, the task's own fields win, `with` and
//! placement labels merge key by key, and `retry` field by field.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::catalog::ExecutorCatalog;
use super::diag::{Files, Hints, Pos, Report, suggest_or_list};
use super::model::{Backoff, NeedCondition, RetryPolicy};
use super::raw::{self, DurationText, Spanned};
use super::template;
use super::yaml::{Kind, Node};

/// An entry of `needs`, its id not yet looked up.
#[derive(Debug, Clone)]
pub(crate) struct NeedRef {
    pub(crate) task: Spanned<String>,
    pub(crate) condition: NeedCondition,
}

/// A task or template with its own fields checked; `None` is "not set here".
#[derive(Debug, Clone, Default)]
pub(crate) struct Partial {
    pub(crate) uses: Option<Spanned<String>>,
    pub(crate) with: Option<Node>,
    pub(crate) needs: Option<Vec<NeedRef>>,
    pub(crate) when: Option<Node>,
    pub(crate) for_each: Option<Node>,
    pub(crate) max_parallel: Option<u32>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) retry: PartialRetry,
    pub(crate) placement: BTreeMap<String, String>,
    pub(crate) extends: Vec<Spanned<String>>,
}

/// A retry policy's fields that are set.
#[derive(Debug, Clone, Default)]
pub(crate) struct PartialRetry {
    max_attempts: Option<u32>,
    backoff: Option<Backoff>,
    initial: Option<Duration>,
    max: Option<Duration>,
    non_retryable: Option<Vec<String>>,
}

impl PartialRetry {
    /// `self` over `base`: fields set in `self` win.
    pub(crate) fn over(self, base: PartialRetry) -> PartialRetry {
        PartialRetry {
            max_attempts: self.max_attempts.or(base.max_attempts),
            backoff: self.backoff.or(base.backoff),
            initial: self.initial.or(base.initial),
            max: self.max.or(base.max),
            non_retryable: self.non_retryable.or(base.non_retryable),
        }
    }

    /// The built-in policy with these fields over it.
    pub(crate) fn policy(&self) -> RetryPolicy {
        let d = RetryPolicy::default();
        RetryPolicy {
            max_attempts: self.max_attempts.unwrap_or(d.max_attempts),
            backoff: self.backoff.unwrap_or(d.backoff),
            initial: self.initial.unwrap_or(d.initial),
            max: self.max.unwrap_or(d.max),
            non_retryable: self.non_retryable.clone().unwrap_or(d.non_retryable),
        }
    }
}

/// `over` on top of `base`.
pub(crate) fn merge(base: Partial, over: Partial) -> Partial {
    let mut placement = base.placement;
    placement.extend(over.placement);
    Partial {
        uses: over.uses.or(base.uses),
        with: merge_with(base.with, over.with),
        needs: over.needs.or(base.needs),
        when: over.when.or(base.when),
        for_each: over.for_each.or(base.for_each),
        max_parallel: over.max_parallel.or(base.max_parallel),
        timeout: over.timeout.or(base.timeout),
        retry: over.retry.over(base.retry),
        placement,
        extends: Vec::new(),
    }
}

/// Two mappings merge key by key (keys of `over` win, in place); otherwise
/// `over` replaces `base`.
fn merge_with(base: Option<Node>, over: Option<Node>) -> Option<Node> {
    match (base, over) {
        (
            Some(Node {
                kind: Kind::Map(mut entries),
                ..
            }),
            Some(Node {
                kind: Kind::Map(top),
                pos,
            }),
        ) => {
            for (k, v) in top {
                match entries
                    .iter_mut()
                    .find(|(bk, _)| bk.key_text() == k.key_text())
                {
                    Some(slot) => *slot = (k, v),
                    None => entries.push((k, v)),
                }
            }
            Some(Node {
                pos,
                kind: Kind::Map(entries),
            })
        }
        (base, over) => over.or(base),
    }
}

/// Checks definitions where they are written.
pub(crate) struct Checker<'a, 's> {
    pub(crate) files: &'a Files<'s>,
    pub(crate) report: &'a mut Report,
    pub(crate) catalog: &'a dyn ExecutorCatalog,
}

const DURATION_HINT: &str = "write a number and a unit, e.g. \"30s\", \"500ms\" or \"1m 30s\"";

impl Checker<'_, '_> {
    /// A duration; `key` and `what` name it in messages.
    pub(crate) fn duration(
        &mut self,
        text: &Spanned<DurationText>,
        key: &str,
        what: &str,
    ) -> Option<Duration> {
        let raw = text.value.0.as_str();
        match humantime::parse_duration(raw) {
            Ok(d) => Some(d),
            Err(e) => {
                let (why, hint) = match e {
                    humantime::DurationError::UnknownUnit { unit, value, .. } if unit.is_empty() => {
                        (
                            "it has no unit".to_string(),
                            format!("add a unit, e.g. \"{value}s\" or \"{value}ms\""),
                        )
                    }
                    humantime::DurationError::UnknownUnit { unit, .. } => (
                        format!("unknown unit \"{unit}\""),
                        "units are ms, s, m, h and d (and longer spellings such as sec, min, hours)"
                            .into(),
                    ),
                    humantime::DurationError::Empty => ("it is empty".into(), DURATION_HINT.into()),
                    humantime::DurationError::NumberExpected(at) => (
                        format!("expected a number at \"{}\"", raw.get(at..).unwrap_or(raw)),
                        DURATION_HINT.into(),
                    ),
                    humantime::DurationError::InvalidCharacter(at) => (
                        format!(
                            "unexpected character \"{}\"",
                            raw.get(at..).and_then(|r| r.chars().next()).unwrap_or(' ')
                        ),
                        DURATION_HINT.into(),
                    ),
                    other => (other.to_string(), DURATION_HINT.into()),
                };
                self.report.error_hint(
                    text.pos,
                    format!("invalid duration \"{raw}\" for \"{key}\" in {what}: {why}"),
                    Some(hint),
                );
                None
            }
        }
    }

    /// A count that must be at least 1.
    fn positive(&mut self, n: &Spanned<i64>, key: &str, what: &str) -> Option<u32> {
        match u32::try_from(n.value) {
            Ok(v) if v >= 1 => Some(v),
            _ => {
                let hint = if key == "max_attempts" {
                    "1 means a single attempt with no retry"
                } else {
                    "leave it out for no limit"
                };
                self.report.error_hint(
                    n.pos,
                    format!("\"{key}\" in {what} must be at least 1, found {}", n.value),
                    Some(hint.into()),
                );
                None
            }
        }
    }

    /// A retry policy's own fields.
    pub(crate) fn retry(&mut self, raw: &raw::Retry, what: &str) -> PartialRetry {
        PartialRetry {
            max_attempts: raw
                .max_attempts
                .as_ref()
                .and_then(|n| self.positive(n, "max_attempts", what)),
            backoff: raw.backoff.as_ref().map(|b| b.value),
            initial: raw
                .initial
                .as_ref()
                .and_then(|d| self.duration(d, "initial", what)),
            max: raw.max.as_ref().and_then(|d| self.duration(d, "max", what)),
            non_retryable: raw
                .non_retryable
                .as_ref()
                .map(|l| l.iter().map(|s| s.value.clone()).collect()),
        }
    }

    /// A task's or template's own fields; `what` is `task "a"` or
    /// `template "t"`.
    pub(crate) fn partial(&mut self, raw: &raw::Task, what: &str) -> Partial {
        if let Some(uses) = &raw.uses {
            self.check_uses(uses, what);
        }
        for (key, node) in [("with", &raw.with), ("for_each", &raw.for_each)] {
            if let Some(node) = node {
                let field = format!("\"{key}\" of {what}");
                template::check_syntax(&node.0, &field, self.files, self.report);
            }
        }
        if let Some(node) = &raw.when {
            let field = format!("\"when\" of {what}");
            template::check_condition_syntax(&node.0, &field, self.files, self.report);
        }
        let timeout = raw
            .timeout
            .as_ref()
            .and_then(|d| self.duration(d, "timeout", what));
        if timeout == Some(Duration::ZERO) {
            if let Some(t) = &raw.timeout {
                self.report.error(
                    t.pos,
                    format!("\"timeout\" in {what} must be longer than zero"),
                );
            }
        }
        Partial {
            uses: raw.uses.clone(),
            with: raw.with.as_ref().map(|a| a.0.clone()),
            needs: raw.needs.as_ref().map(|needs| {
                needs
                    .iter()
                    .map(|n| match n {
                        raw::Need::Task(task) => NeedRef {
                            task: task.clone(),
                            condition: NeedCondition::Succeeded,
                        },
                        raw::Need::Detailed(d) => NeedRef {
                            task: d.task.clone(),
                            condition: d
                                .condition
                                .as_ref()
                                .map_or_else(NeedCondition::default, |c| c.value),
                        },
                    })
                    .collect()
            }),
            when: raw.when.as_ref().map(|a| a.0.clone()),
            for_each: raw.for_each.as_ref().map(|a| a.0.clone()),
            max_parallel: raw
                .max_parallel
                .as_ref()
                .and_then(|n| self.positive(n, "max_parallel", what)),
            timeout,
            retry: raw
                .retry
                .as_ref()
                .map(|r| self.retry(r, &format!("the retry of {what}")))
                .unwrap_or_default(),
            placement: raw
                .placement
                .as_ref()
                .and_then(|p| p.labels.as_ref())
                .map(|labels| {
                    labels
                        .0
                        .iter()
                        .map(|(k, v)| (k.value.clone(), v.value.clone()))
                        .collect()
                })
                .unwrap_or_default(),
            extends: raw.extends.clone().unwrap_or_default(),
        }
    }

    fn check_uses(&mut self, uses: &Spanned<String>, what: &str) {
        if self.catalog.knows(&uses.value) {
            return;
        }
        let names = self.catalog.names();
        let hint = suggest_or_list(
            &uses.value,
            names.iter().map(String::as_str),
            "known executors",
        );
        self.report.error_hint(
            uses.pos,
            format!(
                "{what} uses \"{}\", which is not a known executor",
                uses.value
            ),
            hint,
        );
    }
}

/// A template may extend one that extends another… this many deep (the
/// longest chain, whatever the order of definition: resolving recurses
/// once per link not yet resolved).
pub(crate) const MAX_EXTENDS: usize = 32;

/// Reports an `extends` chain longer than [`MAX_EXTENDS`] at `pos`.
fn too_long(report: &mut Report, pos: Pos) {
    report.error_hint(
        pos,
        format!("extends chains more than {MAX_EXTENDS} templates"),
        Some("extend several templates at once instead: extends: [a, b]".into()),
    );
}

/// The templates available to a workflow, resolved on demand.
pub(crate) struct Templates {
    defs: HashMap<String, Partial>,
    names: Vec<String>,
    resolved: HashMap<String, Option<Partial>>,
    /// The longest `extends` chain of each resolved template, itself
    /// included.
    chain: HashMap<String, usize>,
    hints: Hints,
}

impl Templates {
    /// Templates by name (already checked, names unique).
    pub(crate) fn new(defs: Vec<(String, Partial)>) -> Templates {
        let names = defs.iter().map(|(n, _)| n.clone()).collect();
        Templates {
            defs: defs.into_iter().collect(),
            names,
            resolved: HashMap::new(),
            chain: HashMap::new(),
            hints: Hints::default(),
        }
    }

    /// Resolves every template once, so problems in templates no task
    /// uses are reported too.
    pub(crate) fn check_all(&mut self, report: &mut Report) {
        for name in self.names.clone() {
            let entry = Spanned {
                value: name,
                pos: Pos::default(),
            };
            self.resolve(&entry, "", report, &mut Vec::new());
        }
    }

    /// `partial` with the templates it extends applied; `who` names it.
    /// Also tells whether every template it names was found and accepted
    /// (if not, a missing field may well have been meant to come from one).
    pub(crate) fn apply(
        &mut self,
        partial: Partial,
        who: &str,
        report: &mut Report,
    ) -> (Partial, bool) {
        let names: Vec<String> = partial.extends.iter().map(|e| e.value.clone()).collect();
        let mut stack = Vec::new();
        let applied = self.apply_inner(partial, who, report, &mut stack);
        let complete = names
            .iter()
            .all(|n| self.defs.contains_key(n) && !self.is_refused(n));
        (applied, complete)
    }

    fn apply_inner(
        &mut self,
        partial: Partial,
        who: &str,
        report: &mut Report,
        stack: &mut Vec<String>,
    ) -> Partial {
        let mut base = Partial::default();
        for entry in &partial.extends {
            if let Some(t) = self.resolve(entry, who, report, stack) {
                base = merge(base, t);
            }
        }
        merge(base, partial)
    }

    /// Whether template `name` was refused (its problem is reported).
    fn is_refused(&self, name: &str) -> bool {
        matches!(self.resolved.get(name), Some(None))
    }

    fn resolve(
        &mut self,
        entry: &Spanned<String>,
        who: &str,
        report: &mut Report,
        stack: &mut Vec<String>,
    ) -> Option<Partial> {
        let name = &entry.value;
        if let Some(i) = stack.iter().position(|s| s == name) {
            let mut cycle: Vec<&str> = stack[i..].iter().map(String::as_str).collect();
            cycle.push(name);
            report.error_hint(
                entry.pos,
                format!("extends forms a cycle: {}", cycle.join(" -> ")),
                Some("a template cannot extend itself, directly or through others".into()),
            );
            return None;
        }
        if let Some(done) = self.resolved.get(name) {
            return done.clone();
        }
        if stack.len() >= MAX_EXTENDS {
            too_long(report, entry.pos);
            // Refused, and with it every template that extends it.
            self.resolved.insert(name.clone(), None);
            return None;
        }
        let Some(def) = self.defs.get(name).cloned() else {
            let hint = (self.hints)
                .did_you_mean(name, self.names.iter().map(String::as_str))
                .or_else(|| Some("define it under templates, or import the file that does".into()));
            report.error_hint(
                entry.pos,
                format!("{who} extends \"{name}\", which is not a template"),
                hint,
            );
            return None;
        };
        stack.push(name.clone());
        let parents = def.extends.clone();
        let out = self.apply_inner(def, &format!("template \"{name}\""), report, stack);
        stack.pop();
        let longest = parents
            .iter()
            .filter_map(|p| Some((self.chain.get(&p.value)?, p.pos)))
            .max_by_key(|(len, _)| **len);
        let chain = 1 + longest.map_or(0, |(len, _)| *len);
        if parents.iter().any(|p| self.is_refused(&p.value)) {
            // A template it extends was refused: that problem is reported.
            self.resolved.insert(name.clone(), None);
            return None;
        }
        if let Some((_, pos)) = longest.filter(|_| chain > MAX_EXTENDS) {
            too_long(report, pos);
            self.resolved.insert(name.clone(), None);
            return None;
        }
        self.chain.insert(name.clone(), chain);
        self.resolved.insert(name.clone(), Some(out.clone()));
        Some(out)
    }
}
