//! Raw spec → validated, typed [`Workflow`]. Every problem of the file and
//! its imports is collected before returning; nothing here does I/O.
//!
//! Steps: read the main file and its imports from [`Sources`]; check the
//! header, inputs and defaults; check each template and task where it is
//! written, then apply `extends`; look up `needs`, refuse cycles and order
//! the tasks; compile the expressions of each task knowing what is upstream
//! of it; compile the outputs.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::catalog::ExecutorCatalog;
use super::diag::{Diagnostic, Diagnostics, Files, Hints, Pos, Report};
use super::expr::{Context, Expr, Inputs, ItemRule};
use super::model::{InputSpec, Need, Task, TaskIdx, Template, ValueType, Workflow};
use super::parse::{self, describe};
use super::raw::{self, Spanned};
use super::sources::{Sources, resolve_import};
use super::task::{Checker, Partial, PartialRetry, Templates};
use super::template::{self, Single};
use super::yaml::{self, Kind, Node, to_value};
use crate::value::Value;

/// Compiles the main file of `sources`, with `uses` checked against
/// `catalog`.
pub(crate) fn compile(
    sources: &Sources,
    catalog: &dyn ExecutorCatalog,
) -> Result<Workflow, Diagnostics> {
    let main = sources.main();
    let text = match sources.get(main) {
        Some(Ok(text)) => text,
        Some(Err(reason)) => return Err(unreadable(main, reason)),
        None => return Err(unreadable(main, "it is not among the given sources")),
    };
    let hints = Hints::default();
    let mut c = Compiler {
        sources,
        catalog,
        files: Files::default(),
        report: Report::default(),
        hints: &hints,
    };
    let id = c.files.add(main, text);
    let Some(root) = yaml::parse(id, text, &mut c.report) else {
        return Err(c.report.finish(&c.files.names));
    };
    let raw = parse::workflow(&root, &mut c.report);
    if !root.is_null() && !matches!(root.kind, Kind::Map(_)) {
        return Err(c.report.finish(&c.files.names));
    }
    let workflow = c.workflow(&root, &raw);
    if c.report.is_empty() {
        Ok(workflow)
    } else {
        Err(c.report.finish(&c.files.names))
    }
}

fn unreadable(file: &str, reason: &str) -> Diagnostics {
    Diagnostics(vec![Diagnostic {
        file: file.to_string(),
        line: 0,
        col: 0,
        message: format!("cannot read the workflow file: {reason}"),
        hint: None,
    }])
}

/// A file may import one that imports another… this many deep: loading
/// imports recurses once per level.
pub(crate) const MAX_IMPORT_DEPTH: usize = 32;

/// A template definition and the file it came from.
struct TemplateDef {
    name: Spanned<String>,
    task: raw::Task,
}

struct Compiler<'s> {
    sources: &'s Sources,
    catalog: &'s dyn ExecutorCatalog,
    files: Files<'s>,
    report: Report,
    /// The budget of "did you mean" hints for names of tasks and inputs.
    hints: &'s Hints,
}

impl Compiler<'_> {
    fn checker(&mut self) -> Checker<'_, '_> {
        Checker {
            files: &self.files,
            report: &mut self.report,
            catalog: self.catalog,
        }
    }

    fn workflow(&mut self, root: &Node, raw: &raw::Workflow) -> Workflow {
        self.version(root, raw.version.as_ref(), 0);
        let name = match &raw.name {
            Some(n) if n.value.trim().is_empty() => {
                self.report
                    .error(n.pos, "\"name\" in the workflow must not be empty");
                String::new()
            }
            Some(n) => n.value.clone(),
            None => {
                if root.get("name").is_none() {
                    self.report.error_hint(
                        Pos::file_start(0),
                        "missing \"name\": every workflow needs one",
                        Some("add a line such as \"name: my-workflow\"".into()),
                    );
                }
                String::new()
            }
        };
        let deadline = raw
            .deadline
            .as_ref()
            .and_then(|d| self.checker().duration(d, "deadline", "the workflow"));
        let inputs = self.inputs(raw);
        let (timeout, retry) = self.defaults(raw);
        let mut templates = self.templates(raw);
        let by_name = Inputs::new(&inputs);
        let tasks = self.tasks(root, raw, &by_name, &mut templates, timeout, &retry);
        let outputs = self.outputs(raw, &by_name, &tasks);
        Workflow {
            name,
            description: raw.description.as_ref().map(|d| d.value.clone()),
            durability: raw.durability.as_ref().map(|d| d.value).unwrap_or_default(),
            inputs,
            tasks: tasks.tasks,
            outputs,
            deadline,
        }
    }

    /// `version` must be 1 (and be there) in every file.
    fn version(&mut self, root: &Node, version: Option<&Spanned<i64>>, file: u32) {
        match version {
            Some(v) if v.value != 1 => self.report.error_hint(
                v.pos,
                format!("unsupported version {}", v.value),
                Some("this symphony reads workflow files of version 1".into()),
            ),
            Some(_) => {}
            None if root.get("version").is_none() => self.report.error_hint(
                Pos::file_start(file),
                "missing \"version\"",
                Some("start the file with \"version: 1\"".into()),
            ),
            None => {}
        }
    }

    fn inputs(&mut self, raw: &raw::Workflow) -> Vec<InputSpec> {
        let Some(entries) = &raw.inputs else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (name, input) in &entries.0 {
            let spec = match input {
                raw::Input::Type(t) => InputSpec {
                    name: name.value.clone(),
                    ty: t.value,
                    default: None,
                    description: None,
                },
                raw::Input::Spec(s) => {
                    let ty = s.ty.as_ref().map_or(ValueType::Any, |t| t.value);
                    InputSpec {
                        name: name.value.clone(),
                        ty,
                        default: s
                            .default
                            .as_ref()
                            .and_then(|d| self.input_default(&name.value, ty, &d.0)),
                        description: s.description.as_ref().map(|d| d.value.clone()),
                    }
                }
            };
            out.push(spec);
        }
        out
    }

    fn input_default(&mut self, name: &str, ty: ValueType, node: &Node) -> Option<Value> {
        if contains_expression(node) {
            self.report.error_hint(
                node.pos,
                format!("the default of input \"{name}\" holds an expression"),
                Some("defaults are plain values; expressions are not evaluated there".into()),
            );
            return None;
        }
        let value = to_value(node);
        match (&value, ty) {
            // `default: null` makes an input optional, whatever its type.
            (Value::Null, _) => Some(value),
            (Value::Int(i), ValueType::Float) => Some(Value::Float(*i as f64)),
            (v, ty) if ty.accepts(v) => Some(value),
            (v, ty) => {
                self.report.error(
                    node.pos,
                    format!(
                        "the default of input \"{name}\" is {}, but the input is declared as {}",
                        a_value(v),
                        ty.as_str()
                    ),
                );
                None
            }
        }
    }

    fn defaults(&mut self, raw: &raw::Workflow) -> (Option<Duration>, PartialRetry) {
        let Some(d) = &raw.defaults else {
            return (None, PartialRetry::default());
        };
        let mut checker = self.checker();
        let timeout = d
            .timeout
            .as_ref()
            .and_then(|t| checker.duration(t, "timeout", "defaults"));
        let retry = d
            .retry
            .as_ref()
            .map(|r| checker.retry(r, "the retry of defaults"))
            .unwrap_or_default();
        (timeout, retry)
    }

    /// Templates of the main file and of every file it imports.
    fn templates(&mut self, raw: &raw::Workflow) -> Templates {
        let mut defs: Vec<TemplateDef> = raw
            .templates
            .iter()
            .flat_map(|t| t.0.iter())
            .map(|(name, task)| TemplateDef {
                name: name.clone(),
                task: task.clone(),
            })
            .collect();
        let main = self.sources.main().to_string();
        let mut loaded = HashSet::from([main.clone()]);
        let mut stack = vec![main.clone()];
        let imports = raw.import.clone().unwrap_or_default();
        self.imports(&main, &imports, &mut stack, &mut loaded, &mut defs);

        let mut partials: Vec<(String, Partial)> = Vec::new();
        let mut first: HashMap<String, Pos> = HashMap::new();
        for def in defs {
            let name = def.name.value.clone();
            if let Some(at) = first.get(&name) {
                let file = self
                    .files
                    .names
                    .get(at.file as usize)
                    .cloned()
                    .unwrap_or_default();
                self.report.error_hint(
                    def.name.pos,
                    format!("template \"{name}\" is defined twice"),
                    Some(format!(
                        "it is first defined at {file}:{}:{}",
                        at.line, at.col
                    )),
                );
                continue;
            }
            first.insert(name.clone(), def.name.pos);
            let partial = self
                .checker()
                .partial(&def.task, &format!("template \"{name}\""));
            partials.push((name, partial));
        }
        let mut templates = Templates::new(partials);
        templates.check_all(&mut self.report);
        templates
    }

    /// Loads the files `importer` imports, depth first, collecting their
    /// templates. `stack` is the chain of files being imported (to report
    /// cycles); `loaded` every file already read.
    fn imports(
        &mut self,
        importer: &str,
        imports: &[Spanned<String>],
        stack: &mut Vec<String>,
        loaded: &mut HashSet<String>,
        defs: &mut Vec<TemplateDef>,
    ) {
        for entry in imports {
            if stack.len() > MAX_IMPORT_DEPTH {
                self.report.error_hint(
                    entry.pos,
                    format!("imports nested more than {MAX_IMPORT_DEPTH} files deep"),
                    Some("import the shared files from the main file directly".into()),
                );
                return;
            }
            let path = resolve_import(importer, &entry.value);
            if let Some(i) = stack.iter().position(|p| *p == path) {
                let mut cycle: Vec<&str> = stack[i..].iter().map(String::as_str).collect();
                cycle.push(&path);
                self.report.error_hint(
                    entry.pos,
                    format!("imports form a cycle: {}", cycle.join(" -> ")),
                    Some("move the shared templates into a file that imports neither".into()),
                );
                continue;
            }
            if !loaded.insert(path.clone()) {
                continue;
            }
            let text = match self.sources.get(&path) {
                Some(Ok(text)) => text,
                Some(Err(reason)) => {
                    self.report.error(
                        entry.pos,
                        format!("cannot read imported file \"{}\": {reason}", entry.value),
                    );
                    continue;
                }
                None => {
                    self.report.error_hint(
                        entry.pos,
                        format!(
                            "cannot read imported file \"{}\": it is not among the given sources",
                            entry.value
                        ),
                        Some("only `load` reads files; pass every file in `Sources`".into()),
                    );
                    continue;
                }
            };
            let id = self.files.add(&path, text);
            let Some(root) = yaml::parse(id, text, &mut self.report) else {
                continue;
            };
            let lib = parse::library(&root, &mut self.report);
            self.version(&root, lib.version.as_ref(), id);
            defs.extend(
                lib.templates
                    .iter()
                    .flat_map(|t| t.0.iter())
                    .map(|(name, task)| TemplateDef {
                        name: name.clone(),
                        task: task.clone(),
                    }),
            );
            stack.push(path.clone());
            let next = lib.import.clone().unwrap_or_default();
            self.imports(&path, &next, stack, loaded, defs);
            stack.pop();
        }
    }

    fn tasks(
        &mut self,
        root: &Node,
        raw: &raw::Workflow,
        inputs: &Inputs<'_>,
        templates: &mut Templates,
        timeout: Option<Duration>,
        retry: &PartialRetry,
    ) -> CompiledTasks {
        let entries: &[(Spanned<String>, raw::Task)] =
            raw.tasks.as_ref().map_or(&[], |t| t.0.as_slice());
        if entries.is_empty() && !self.report_has_task_problem(root) {
            self.report.error_hint(
                root.key_pos("tasks").unwrap_or(Pos::file_start(0)),
                "the workflow has no tasks",
                Some("add one under tasks:, e.g. \"hello: { uses: builtin/echo }\"".into()),
            );
        }
        let ids: Vec<&str> = entries.iter().map(|(n, _)| n.value.as_str()).collect();
        let index: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();

        // Each task's fields, with templates and defaults applied.
        let nodes = task_nodes(root);
        let mut partials = Vec::with_capacity(entries.len());
        for (name, task) in entries {
            let who = format!("task \"{}\"", name.value);
            let own = self.checker().partial(task, &who);
            let (mut p, complete) = templates.apply(own, &who, &mut self.report);
            p.timeout = p.timeout.or(timeout);
            p.retry = std::mem::take(&mut p.retry).over(retry.clone());
            if p.uses.is_none()
                && complete
                && !has_key(nodes.get(name.value.as_str()).copied(), "uses")
            {
                let hint = if task.extends.as_ref().is_some_and(|e| !e.is_empty()) {
                    "set it here or in a template it extends, e.g. uses: builtin/echo"
                } else {
                    "name an executor, e.g. uses: builtin/echo"
                };
                self.report.error_hint(
                    name.pos,
                    format!("{who} has no \"uses\""),
                    Some(hint.into()),
                );
            }
            partials.push(p);
        }

        // The graph, in file order first.
        let mut needs: Vec<Vec<usize>> = vec![Vec::new(); entries.len()];
        let mut need_pos: Vec<Vec<Pos>> = vec![Vec::new(); entries.len()];
        for (t, p) in partials.iter().enumerate() {
            for n in p.needs.iter().flatten() {
                let Some(&up) = index.get(n.task.value.as_str()) else {
                    let hint = self.hints.did_you_mean(&n.task.value, ids.iter().copied());
                    self.report.error_hint(
                        n.task.pos,
                        format!(
                            "task \"{}\" needs \"{}\", which does not exist",
                            ids[t], n.task.value
                        ),
                        hint,
                    );
                    continue;
                };
                if needs[t].contains(&up) {
                    self.report.error(
                        n.task.pos,
                        format!("task \"{}\" needs \"{}\" more than once", ids[t], ids[up]),
                    );
                    continue;
                }
                needs[t].push(up);
                need_pos[t].push(n.task.pos);
            }
        }
        let order = match super::graph::order(&needs) {
            Ok(order) => order,
            Err(stuck) => {
                for cycle in super::graph::cycles(&needs, &stuck) {
                    let (a, b) = (cycle[0], cycle[1 % cycle.len()]);
                    let at = needs[a]
                        .iter()
                        .position(|&u| u == b)
                        .map(|i| need_pos[a][i]);
                    self.report.error_hint(
                        at.unwrap_or(entries[a].0.pos),
                        format!("needs form a cycle: {}", cycle_text(&cycle, &ids)),
                        Some("a task cannot need itself, directly or through other tasks".into()),
                    );
                }
                (0..entries.len()).collect()
            }
        };
        let mut final_of = vec![0; entries.len()];
        for (f, &p) in order.iter().enumerate() {
            final_of[p] = f;
        }

        // Expressions, knowing what is upstream of each task.
        let task_index = |id: &str| index.get(id).map(|&p| final_of[p]);
        let hints = self.hints;
        let mut compiled: Vec<Option<Task>> = vec![None; entries.len()];
        for (p, partial) in partials.into_iter().enumerate() {
            // Only tasks whose expressions read other tasks need this.
            let up = std::cell::OnceCell::new();
            let upstream = |f: TaskIdx| {
                let up = up.get_or_init(|| super::graph::upstream(&needs, p));
                order.get(f).is_some_and(|&q| up[q])
            };
            let id = ids[p];
            let who = format!("task \"{id}\"");
            let ctx = |items| Context {
                who: &who,
                inputs,
                task_ids: &ids,
                task_index: &task_index,
                reader: Some((id, &upstream)),
                items,
                hints,
            };
            let fans_out = partial.for_each.is_some();
            let with = self.with(
                partial.with.as_ref(),
                &ctx(if fans_out {
                    ItemRule::Allowed
                } else {
                    ItemRule::Forbidden("it has no for_each")
                }),
            );
            let when = partial.when.as_ref().and_then(|n| {
                self.when(
                    n,
                    &who,
                    &ctx(ItemRule::Forbidden(if fans_out {
                        "\"when\" is evaluated once, before the fan-out"
                    } else {
                        "it has no for_each"
                    })),
                )
            });
            let for_each = partial.for_each.as_ref().and_then(|n| {
                self.for_each(
                    n,
                    &who,
                    &ctx(ItemRule::Forbidden(
                        "\"for_each\" is evaluated before there are items",
                    )),
                )
            });
            let conditions = partial
                .needs
                .iter()
                .flatten()
                .filter_map(|n| index.get(n.task.value.as_str()).map(|&u| (u, n.condition)));
            let mut task_needs: Vec<Need> = Vec::new();
            for (u, condition) in conditions {
                if !task_needs.iter().any(|n| n.task == final_of[u]) {
                    task_needs.push(Need {
                        task: final_of[u],
                        condition,
                    });
                }
            }
            compiled[final_of[p]] = Some(Task {
                id: id.to_string(),
                uses: partial.uses.map(|u| u.value).unwrap_or_default(),
                with,
                needs: task_needs,
                when,
                for_each,
                max_parallel: partial.max_parallel,
                timeout: partial.timeout,
                retry: partial.retry.policy(),
                placement: partial.placement,
            });
        }
        CompiledTasks {
            tasks: compiled.into_iter().flatten().collect(),
            ids: ids.iter().map(|s| s.to_string()).collect(),
            index: index
                .iter()
                .map(|(id, &p)| (id.to_string(), final_of[p]))
                .collect(),
        }
    }

    /// Whether `tasks` is present but was already reported as mistyped.
    fn report_has_task_problem(&self, root: &Node) -> bool {
        root.get("tasks")
            .is_some_and(|n| !n.is_null() && !matches!(n.kind, Kind::Map(_)))
    }

    fn with(&mut self, node: Option<&Node>, ctx: &Context<'_>) -> Template {
        match node {
            Some(n) if !n.is_null() => template::template(n, ctx, &self.files, &mut self.report),
            _ => Template::Value(Value::Map(Default::default())),
        }
    }

    fn when(&mut self, node: &Node, who: &str, ctx: &Context<'_>) -> Option<Expr> {
        match template::expression(node, true, ctx, &self.files, &mut self.report) {
            Single::Expr(e, _) => Some(e),
            Single::Value(Value::Bool(b)) => Some(Expr::literal(Value::Bool(b))),
            Single::Value(_) => {
                self.report.error_hint(
                    node.pos,
                    format!(
                        "\"when\" in {who} must be a condition, found {}",
                        describe(node)
                    ),
                    Some("write e.g. when: ${{ tasks.score.outputs.negative > 0.5 }}".into()),
                );
                None
            }
            Single::Mixed => {
                self.report.error_hint(
                    node.pos,
                    format!("\"when\" in {who} must be a single expression"),
                    Some("join conditions inside one ${{ }} with && or ||".into()),
                );
                None
            }
            Single::Failed => None,
        }
    }

    fn for_each(&mut self, node: &Node, who: &str, ctx: &Context<'_>) -> Option<Template> {
        if let Kind::Seq(_) = node.kind {
            return Some(template::template(node, ctx, &self.files, &mut self.report));
        }
        match template::expression(node, false, ctx, &self.files, &mut self.report) {
            Single::Expr(e, ty) => {
                if matches!(ty, ValueType::Any | ValueType::List) {
                    return Some(Template::Expr(e));
                }
                self.report.error_hint(
                    node.pos,
                    format!(
                        "{who} runs for_each over {}, which is {}, not a list",
                        e.text(),
                        super::expr::article(ty)
                    ),
                    Some("for_each needs a list: declare the input with type: list".into()),
                );
                None
            }
            Single::Value(v) => {
                let hint = match &v {
                    Value::String(s) => Some(format!("to read a value, write ${{{{ {s} }}}}")),
                    _ => None,
                };
                self.report.error_hint(
                    node.pos,
                    format!(
                        "\"for_each\" in {who} must be a list or an expression giving one, found {}",
                        describe(node)
                    ),
                    hint,
                );
                None
            }
            Single::Mixed => {
                self.report.error_hint(
                    node.pos,
                    format!("\"for_each\" in {who} must be a single ${{{{ }}}} expression"),
                    Some("text around an expression makes a string, not a list".into()),
                );
                None
            }
            Single::Failed => None,
        }
    }

    fn outputs(
        &mut self,
        raw: &raw::Workflow,
        inputs: &Inputs<'_>,
        tasks: &CompiledTasks,
    ) -> Vec<(String, Template)> {
        let Some(outputs) = &raw.outputs else {
            return Vec::new();
        };
        let ids: Vec<&str> = tasks.ids.iter().map(String::as_str).collect();
        let task_index = |id: &str| tasks.index.get(id).copied();
        let mut out = Vec::new();
        for (name, value) in &outputs.0 {
            let who = format!("output \"{}\"", name.value);
            template::check_syntax(&value.0, &who, &self.files, &mut self.report);
            let ctx = Context {
                who: &who,
                inputs,
                task_ids: &ids,
                task_index: &task_index,
                reader: None,
                items: ItemRule::Forbidden("item and index exist only inside a for_each task"),
                hints: self.hints,
            };
            let t = template::template(&value.0, &ctx, &self.files, &mut self.report);
            out.push((name.value.clone(), t));
        }
        out
    }
}

/// The tasks in their final order, and how ids map to indices.
struct CompiledTasks {
    tasks: Vec<Task>,
    ids: Vec<String>,
    index: HashMap<String, TaskIdx>,
}

/// Whether task `id` of the main file wrote `key` (even with a wrong type),
/// or is not a mapping at all: either way, its absence is already reported.
/// `a -> b -> c -> a`; a long cycle names its first and last few tasks
/// and counts the rest.
fn cycle_text(cycle: &[usize], ids: &[&str]) -> String {
    const HEAD: usize = 6;
    const TAIL: usize = 2;
    let name = |t: &usize| ids[*t];
    let mut names: Vec<String> = Vec::new();
    if cycle.len() <= HEAD + TAIL + 1 {
        names.extend(cycle.iter().map(|t| name(t).to_string()));
    } else {
        names.extend(cycle[..HEAD].iter().map(|t| name(t).to_string()));
        names.push(format!("({} more)", cycle.len() - HEAD - TAIL));
        names.extend(
            cycle[cycle.len() - TAIL..]
                .iter()
                .map(|t| name(t).to_string()),
        );
    }
    names.push(name(&cycle[0]).to_string());
    names.join(" -> ")
}

fn has_key(task: Option<&Node>, key: &str) -> bool {
    task.is_some_and(|t| t.get(key).is_some() || !(t.is_null() || matches!(t.kind, Kind::Map(_))))
}

/// The nodes of the main file's tasks by id (the first of duplicates), so
/// looking one up does not scan them all.
fn task_nodes(root: &Node) -> HashMap<&str, &Node> {
    let mut nodes = HashMap::new();
    if let Some(Node {
        kind: Kind::Map(entries),
        ..
    }) = root.get("tasks")
    {
        for (k, v) in entries {
            nodes.entry(k.key_text()).or_insert(v);
        }
    }
    nodes
}

fn contains_expression(node: &Node) -> bool {
    match &node.kind {
        Kind::Scalar(s) => s.text.contains("${{"),
        Kind::Seq(items) => items.iter().any(contains_expression),
        Kind::Map(entries) => entries.iter().any(|(_, v)| contains_expression(v)),
    }
}

/// `a string`, `an int`, `null` for a value.
fn a_value(v: &Value) -> String {
    match v.type_name() {
        "null" => "null".into(),
        "int" => "an int".into(),
        other => format!("a {other}"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::wdl::model::{Backoff, NeedCondition, RetryPolicy, Scope};

    const EXECUTORS: [&str; 4] = ["builtin/echo", "builtin/noop", "http", "model/*"];

    fn ok(text: &str) -> Workflow {
        compile(&Sources::new("t.yaml", text), &EXECUTORS)
            .unwrap_or_else(|d| panic!("does not compile:\n{d}"))
    }

    fn errors(text: &str) -> Vec<String> {
        compile(&Sources::new("t.yaml", text), &EXECUTORS)
            .expect_err("compiles")
            .iter()
            .map(|d| d.message.clone())
            .collect()
    }

    struct Run {
        inputs: BTreeMap<String, Value>,
        outputs: Vec<Value>,
        item: Option<Value>,
    }

    impl Scope for Run {
        fn input(&self, name: &str) -> Option<&Value> {
            self.inputs.get(name)
        }
        fn task_outputs(&self, task: TaskIdx) -> Option<&Value> {
            self.outputs.get(task)
        }
        fn item(&self) -> Option<&Value> {
            self.item.as_ref()
        }
        fn index(&self) -> Option<usize> {
            self.item.as_ref().map(|_| 0)
        }
    }

    #[test]
    fn tasks_come_in_topological_order_with_resolved_needs() {
        let wf = ok(
            "version: 1\nname: x\ntasks:\n  c:\n    uses: builtin/echo\n    needs: [b, {task: a, if: always}]\n  b:\n    uses: builtin/echo\n    needs: [a]\n  a:\n    uses: builtin/echo\n  d:\n    uses: builtin/noop\n",
        );
        let ids: Vec<&str> = wf.tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c", "d"]);
        let c = &wf.tasks[2];
        assert_eq!(c.needs[0].task, 1);
        assert_eq!(c.needs[1].task, 0);
        assert_eq!(c.needs[1].condition, NeedCondition::Always);
        assert_eq!(c.with, Template::Value(Value::Map(Default::default())));
    }

    #[test]
    fn retry_merges_field_by_field_and_with_key_by_key() {
        let wf = ok(r#"
version: 1
name: x
defaults:
  timeout: 1m
  retry: { max_attempts: 3, initial: 1s }
templates:
  base:
    uses: http
    timeout: 5s
    retry: { backoff: fixed, max: 20s }
    with: { method: GET, url: "http://a" }
    placement: { labels: { gpu: true, zone: a } }
tasks:
  t:
    extends: base
    retry: { max: 30s, non_retryable: [bad_input] }
    with: { url: "http://b", body: 1 }
    placement: { labels: { zone: b } }
  u:
    uses: builtin/echo
"#);
        let t = &wf.tasks[0];
        assert_eq!(t.uses, "http");
        assert_eq!(t.timeout, Some(Duration::from_secs(5)));
        assert_eq!(t.retry.max_attempts, 3);
        assert_eq!(t.retry.backoff, Backoff::Fixed);
        assert_eq!(t.retry.initial, Duration::from_secs(1));
        assert_eq!(t.retry.max, Duration::from_secs(30));
        assert_eq!(t.retry.non_retryable, ["bad_input"]);
        let with = t.with.eval(&run()).unwrap();
        assert_eq!(with.get("method"), Some(&Value::from("GET")));
        assert_eq!(with.get("url"), Some(&Value::from("http://b")));
        assert_eq!(with.get("body"), Some(&Value::Int(1)));
        assert_eq!(t.placement["gpu"], "true");
        assert_eq!(t.placement["zone"], "b");
        // Defaults alone: the built-in policy under them.
        let u = &wf.tasks[1];
        assert_eq!(u.timeout, Some(Duration::from_secs(60)));
        assert_eq!(u.retry.max, RetryPolicy::default().max);
    }

    fn run() -> Run {
        let mut inputs = BTreeMap::new();
        inputs.insert("xs".into(), Value::List(vec![Value::Int(1), Value::Int(2)]));
        inputs.insert("who".into(), Value::from("ada"));
        Run {
            inputs,
            outputs: vec![Value::from("first"), Value::Null],
            item: Some(Value::Int(7)),
        }
    }

    #[test]
    fn templates_keep_types_or_interpolate() {
        let wf = ok(r#"
version: 1
name: x
inputs:
  xs: list
  who: { type: string, default: bob }
tasks:
  a:
    uses: builtin/echo
  b:
    uses: builtin/echo
    needs: [a]
    for_each: ${{ inputs.xs }}
    when: tasks.a.outputs == 'first'
    with:
      typed: ${{ item }}
      text: "hi ${{ inputs.who }} #${{ index }}: ${{ item }}"
      list: ["${{ tasks.a.outputs }}", 2]
outputs:
  out: ${{ tasks.b.outputs }}
  msg: "done: ${{ inputs.who }}"
"#);
        let b = &wf.tasks[1];
        let with = b.with.eval(&run()).unwrap();
        assert_eq!(with.get("typed"), Some(&Value::Int(7)));
        assert_eq!(with.get("text"), Some(&Value::from("hi ada #0: 7")));
        assert_eq!(
            with.get("list"),
            Some(&Value::List(vec![Value::from("first"), Value::Int(2)]))
        );
        assert!(b.when.as_ref().unwrap().eval_bool(&run()).unwrap());
        let fan = b.for_each.as_ref().unwrap().eval(&run()).unwrap();
        assert_eq!(fan, Value::List(vec![Value::Int(1), Value::Int(2)]));
        assert_eq!(wf.outputs[0].0, "out");
        assert_eq!(
            wf.outputs[1].1.eval(&run()).unwrap(),
            Value::from("done: ada")
        );
        assert_eq!(wf.inputs[1].default, Some(Value::from("bob")));
    }

    #[test]
    fn when_accepts_bools_and_bare_expressions() {
        let wf = ok(
            "version: 1\nname: x\ntasks:\n  a:\n    uses: builtin/echo\n    when: false\n  b:\n    uses: builtin/echo\n    when: ${{ true && !false }}\n  c:\n    uses: model/sentiment@production\n",
        );
        assert!(
            !wf.tasks[0]
                .when
                .as_ref()
                .unwrap()
                .eval_bool(&run())
                .unwrap()
        );
        assert!(
            wf.tasks[1]
                .when
                .as_ref()
                .unwrap()
                .eval_bool(&run())
                .unwrap()
        );
    }

    #[test]
    fn imports_are_read_from_sources_only() {
        let main = "version: 1\nname: x\nimport: [lib/t.yaml]\ntasks:\n  a:\n    extends: echo\n";
        let errs = errors(main);
        assert_eq!(
            errs,
            [
                "cannot read imported file \"lib/t.yaml\": it is not among the given sources",
                "task \"a\" extends \"echo\", which is not a template",
            ]
        );
        let mut sources = Sources::new("dir/main.yaml", main);
        sources.insert(
            "dir/lib/t.yaml",
            "version: 1\ntemplates:\n  echo: { uses: builtin/echo }\n",
        );
        let wf = compile(&sources, &EXECUTORS).unwrap();
        assert_eq!(wf.tasks[0].uses, "builtin/echo");
    }

    /// The limit is on the chain, whatever order the templates come in:
    /// defined root first they resolve without recursing, last first they
    /// recurse once per link.
    #[test]
    fn extends_chains_are_limited_in_either_order() {
        let chain = |n: usize, reversed: bool| {
            let mut lines: Vec<String> = (1..n)
                .map(|i| format!("  t{i}: {{extends: t{}}}\n", i - 1))
                .collect();
            lines.insert(0, "  t0: {uses: builtin/noop}\n".into());
            if reversed {
                lines.reverse();
            }
            format!(
                "version: 1\nname: x\ntemplates:\n{}tasks:\n  a: {{extends: t{}}}\n",
                lines.concat(),
                n - 1
            )
        };
        for reversed in [false, true] {
            ok(&chain(crate::wdl::task::MAX_EXTENDS, reversed));
            let errors = errors(&chain(100, reversed));
            assert!(!errors.is_empty());
            assert!(
                errors
                    .iter()
                    .all(|e| e == "extends chains more than 32 templates"),
                "{errors:?}"
            );
        }
    }

    #[test]
    fn problems_in_unused_templates_are_reported_once() {
        let errs = errors(
            "version: 1\nname: x\ntemplates:\n  t:\n    uses: nope\n    timeout: 3x\n    with: ${{ 1 = }}\ntasks:\n  a: { extends: t }\n  b: { extends: t }\n",
        );
        assert_eq!(errs.len(), 3, "{errs:?}");
    }

    #[test]
    fn the_workflow_is_send_sync_and_static() {
        fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
        assert_send_sync::<Workflow>();
    }
}
