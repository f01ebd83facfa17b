use std::collections::BTreeMap;

use super::*;
use crate::wdl::diag::Hints;
use crate::wdl::model::{InputSpec, ValueType};

struct TestScope {
    inputs: BTreeMap<String, Value>,
    outputs: Vec<Option<Value>>,
    item: Option<Value>,
    index: Option<usize>,
}

impl Scope for TestScope {
    fn input(&self, name: &str) -> Option<&Value> {
        self.inputs.get(name)
    }
    fn task_outputs(&self, task: TaskIdx) -> Option<&Value> {
        self.outputs.get(task).and_then(Option::as_ref)
    }
    fn item(&self) -> Option<&Value> {
        self.item.as_ref()
    }
    fn index(&self) -> Option<usize> {
        self.index
    }
}

fn json(text: &str) -> Value {
    Value::from_json(serde_json::from_str(text).unwrap())
}

fn scope() -> TestScope {
    let mut inputs = BTreeMap::new();
    inputs.insert("name".into(), Value::from("ada"));
    inputs.insert("n".into(), Value::Int(3));
    inputs.insert(
        "cfg".into(),
        json(r#"{"threshold": 0.5, "tags": ["a", "b"]}"#),
    );
    TestScope {
        inputs,
        outputs: vec![
            Some(json(
                r#"{"negative": 0.75, "scores": [1, 2, 3], "label": "bad"}"#,
            )),
            Some(Value::Null),
        ],
        item: Some(json(r#"{"text": "hello", "id": 7}"#)),
        index: Some(4),
    }
}

fn input(name: &str, ty: ValueType) -> InputSpec {
    InputSpec {
        name: name.into(),
        ty,
        default: None,
        description: None,
    }
}

fn inputs() -> Vec<InputSpec> {
    vec![
        input("name", ValueType::String),
        input("n", ValueType::Int),
        input("cfg", ValueType::Map),
        input("list", ValueType::List),
    ]
}

const TASKS: &[&str] = &["score", "skipped", "later"];

fn task_index(id: &str) -> Option<TaskIdx> {
    TASKS.iter().position(|t| *t == id)
}

/// Compiles as if read by a for_each task "reader" that needs score and
/// skipped.
fn compile(text: &str) -> Result<Expr, Vec<String>> {
    let inputs = inputs();
    let inputs = Inputs::new(&inputs);
    let hints = Hints::default();
    let upstream = |i: TaskIdx| i < 2;
    let ctx = Context {
        who: "task \"reader\"",
        inputs: &inputs,
        task_ids: TASKS,
        task_index: &task_index,
        reader: Some(("reader", &upstream)),
        items: ItemRule::Allowed,
        hints: &hints,
    };
    Expr::compile(text, &ctx)
        .map(|(e, _)| e)
        .map_err(|ps| ps.into_iter().map(|p| p.message).collect())
}

fn eval(text: &str) -> Result<Value, String> {
    let e = compile(text).unwrap_or_else(|e| panic!("{text}: {e:?}"));
    e.eval(&scope()).map_err(|e| e.0)
}

fn ok(text: &str) -> Value {
    eval(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

#[test]
fn reads_inputs_outputs_and_items() {
    assert_eq!(ok("inputs.name"), Value::from("ada"));
    assert_eq!(ok("inputs['name']"), Value::from("ada"));
    assert_eq!(ok("tasks.score.outputs.negative"), Value::Float(0.75));
    assert_eq!(ok("tasks.score.outputs.scores[0]"), Value::Int(1));
    assert_eq!(ok("tasks.score.outputs.scores[-1]"), Value::Int(3));
    assert_eq!(ok("tasks.score.outputs[\"label\"]"), Value::from("bad"));
    assert_eq!(ok("item.text"), Value::from("hello"));
    assert_eq!(ok("index"), Value::Int(4));
}

#[test]
fn dynamic_index() {
    assert_eq!(
        ok("tasks.score.outputs.scores[length(inputs.cfg)]"),
        Value::Int(3)
    );
    assert_eq!(
        ok("default(tasks.score.outputs[inputs.name], 'none')"),
        Value::from("none")
    );
    assert!(eval("item[true]").is_err());
}

#[test]
fn literals_and_lists() {
    assert_eq!(ok("[1, 'a', null, true][1]"), Value::from("a"));
    assert_eq!(ok("-2.5"), Value::Float(-2.5));
    assert_eq!(
        ok("[inputs.n, item.id]"),
        Value::List(vec![Value::Int(3), Value::Int(7)])
    );
}

#[test]
fn comparisons() {
    assert_eq!(ok("tasks.score.outputs.negative > 0.5"), Value::Bool(true));
    assert_eq!(ok("inputs.n >= 3.0"), Value::Bool(true));
    assert_eq!(ok("1 == 1.0"), Value::Bool(true));
    assert_eq!(ok("1 == '1'"), Value::Bool(false));
    assert_eq!(ok("null == null"), Value::Bool(true));
    assert_eq!(ok("'abc' < 'abd'"), Value::Bool(true));
    assert_eq!(ok("[1, 2] == [1.0, 2]"), Value::Bool(true));
    assert_eq!(ok("inputs.name != 'bob'"), Value::Bool(true));
    let err = eval("item.text < 3").unwrap_err();
    assert_eq!(
        err,
        "cannot compare string with int using \"<\", in ${{ item.text < 3 }}"
    );
}

#[test]
fn logic_is_short_circuit_and_boolean() {
    assert_eq!(ok("inputs.n && inputs.name"), Value::Bool(true));
    assert_eq!(ok("!inputs.n"), Value::Bool(false));
    assert_eq!(ok("false || ''"), Value::Bool(false));
    // The right side would fail; it is never evaluated.
    assert_eq!(ok("false && item.missing"), Value::Bool(false));
    assert_eq!(ok("true || item.missing"), Value::Bool(true));
}

#[test]
fn functions() {
    assert_eq!(ok("length(inputs.name)"), Value::Int(3));
    assert_eq!(ok("length(tasks.score.outputs.scores)"), Value::Int(3));
    assert_eq!(ok("length(inputs.cfg)"), Value::Int(2));
    assert_eq!(ok("contains(inputs.cfg.tags, 'b')"), Value::Bool(true));
    assert_eq!(
        ok("contains(tasks.score.outputs.scores, 2.0)"),
        Value::Bool(true)
    );
    assert_eq!(ok("contains(inputs.name, 'da')"), Value::Bool(true));
    assert_eq!(ok("contains(inputs.cfg, 'threshold')"), Value::Bool(true));
    assert_eq!(
        ok("contains(tasks.skipped.outputs, 'x')"),
        Value::Bool(false)
    );
    assert_eq!(
        ok("range(3)"),
        Value::List(vec![Value::Int(0), Value::Int(1), Value::Int(2)])
    );
    assert_eq!(ok("length(range(2, 5))"), Value::Int(3));
    assert!(
        eval("length(item.id)")
            .unwrap_err()
            .starts_with("length() needs")
    );
    assert!(eval("contains(item.id, 1)").is_err());
    assert!(eval("range(10000000)").is_err());
}

#[test]
fn default_catches_missing_fields_and_null_only() {
    assert_eq!(ok("default(item.nope, 'x')"), Value::from("x"));
    assert_eq!(ok("default(item.text, 'x')"), Value::from("hello"));
    assert_eq!(ok("default(tasks.skipped.outputs.a.b, 0)"), Value::Int(0));
    assert_eq!(
        ok("default(tasks.score.outputs.scores[9], -1)"),
        Value::Int(-1)
    );
    assert_eq!(ok("default(null, [])"), Value::List(vec![]));
    // A type error is not a missing value: it still fails.
    assert!(eval("default(item.text < 1, 0)").is_err());
}

#[test]
fn missing_fields_fail_outside_default() {
    assert_eq!(
        eval("item.nope").unwrap_err(),
        "no field \"nope\" in the map, in ${{ item.nope }}"
    );
    assert_eq!(
        eval("tasks.skipped.outputs.a").unwrap_err(),
        "cannot read field \"a\" of null, in ${{ tasks.skipped.outputs.a }}"
    );
    assert_eq!(
        eval("tasks.score.outputs.scores[3]").unwrap_err(),
        "index 3 is out of range for a list of 3, in ${{ tasks.score.outputs.scores[3] }}"
    );
}

#[test]
fn eval_bool_is_truthiness() {
    let e = compile("tasks.score.outputs.scores").unwrap();
    assert!(e.eval_bool(&scope()).unwrap());
    let e = compile("tasks.skipped.outputs").unwrap();
    assert!(!e.eval_bool(&scope()).unwrap());
}

fn problems(text: &str) -> Vec<String> {
    compile(text).expect_err(text)
}

#[test]
fn resolution_problems_name_the_reader() {
    assert_eq!(
        problems("inputs.nmae"),
        vec!["task \"reader\" reads inputs.nmae, but there is no input \"nmae\""]
    );
    assert_eq!(
        problems("tasks.scroe.outputs"),
        vec!["task \"reader\" reads tasks.scroe.outputs, but there is no task \"scroe\""]
    );
    assert_eq!(
        problems("tasks.later.outputs"),
        vec![
            "task \"reader\" reads tasks.later.outputs, but \"later\" is not upstream of \"reader\""
        ]
    );
    assert_eq!(
        problems("tasks.score.output"),
        vec!["expected \"outputs\" after tasks.score in task \"reader\", found \"output\""]
    );
    assert_eq!(
        problems("foo"),
        vec!["unknown name \"foo\" in task \"reader\""]
    );
    assert_eq!(
        problems("lenght(item)"),
        vec!["unknown function \"lenght\" in task \"reader\""]
    );
    assert_eq!(
        problems("contains(item)"),
        vec!["contains() in task \"reader\" takes 2 arguments, found 1"]
    );
    assert_eq!(
        problems("inputs.name < 3"),
        vec!["task \"reader\" compares inputs.name (a string) with 3 (an int) using \"<\""]
    );
    assert_eq!(
        problems("inputs.name.first"),
        vec![
            "task \"reader\" reads inputs.name.first, but input \"name\" is declared as string, which has no fields"
        ]
    );
    // Every problem is reported, not just the first.
    assert_eq!(problems("inputs.a == tasks.b.outputs").len(), 2);
}

#[test]
fn item_is_refused_where_there_is_no_fan_out() {
    let inputs = inputs();
    let inputs = Inputs::new(&inputs);
    let hints = Hints::default();
    let ctx = Context {
        who: "output \"x\"",
        inputs: &inputs,
        task_ids: TASKS,
        task_index: &task_index,
        reader: None,
        items: ItemRule::Forbidden("item and index exist only inside a for_each task"),
        hints: &hints,
    };
    let err = Expr::compile("item.a", &ctx).unwrap_err();
    assert_eq!(
        err[0].message,
        "output \"x\" reads item, but item and index exist only inside a for_each task"
    );
    // Outputs may read any task.
    assert!(Expr::compile("tasks.later.outputs", &ctx).is_ok());
}

#[test]
fn syntax_errors_are_prefixed() {
    let p = compile("a ==").unwrap_err();
    assert_eq!(
        p,
        vec!["invalid expression: expected a value, found the end of the expression"]
    );
}

#[test]
fn static_types() {
    let inputs = inputs();
    let inputs = Inputs::new(&inputs);
    let hints = Hints::default();
    let ctx = Context {
        who: "x",
        inputs: &inputs,
        task_ids: TASKS,
        task_index: &task_index,
        reader: None,
        items: ItemRule::Allowed,
        hints: &hints,
    };
    let ty = |t: &str| Expr::compile(t, &ctx).unwrap().1;
    assert_eq!(ty("inputs.list"), ValueType::List);
    assert_eq!(ty("inputs.name"), ValueType::String);
    assert_eq!(ty("inputs.cfg.a"), ValueType::Any);
    assert_eq!(ty("range(2)"), ValueType::List);
    assert_eq!(ty("1 < 2"), ValueType::Bool);
}

#[test]
fn a_large_fan_out_evaluates_quickly() {
    let e = compile("item.text").unwrap();
    let mut s = scope();
    let start = std::time::Instant::now();
    for i in 0..100_000 {
        s.index = Some(i);
        assert_eq!(e.eval(&s).unwrap().type_name(), "string");
    }
    // Generous even for a debug build on a slow machine.
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
}
