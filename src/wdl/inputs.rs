//! Checking the inputs a run is submitted with against the workflow's
//! declarations.

use std::collections::{BTreeMap, HashSet};

use super::diag::{Hints, MAX_SHOWN};
use super::model::{ValueType, Workflow};
use crate::value::Value;

/// The inputs of a run: `given` checked against `wf.inputs`, defaults
/// filled in, ints widened for `float` inputs.
///
/// # Errors
/// Every problem, one message each, naming the input: a required input
/// missing, an input the workflow does not declare, a value of the wrong
/// type.
pub fn check_inputs(
    wf: &Workflow,
    given: &BTreeMap<String, Value>,
) -> Result<BTreeMap<String, Value>, Vec<String>> {
    let mut out = BTreeMap::new();
    let mut problems = Vec::new();
    let declared: HashSet<&str> = wf.inputs.iter().map(|i| i.name.as_str()).collect();
    let hints = Hints::default();
    for name in given.keys() {
        if !declared.contains(name.as_str()) {
            let mut message = format!("unknown input \"{name}\"");
            match hints.did_you_mean(name, wf.inputs.iter().map(|i| i.name.as_str())) {
                Some(hint) => message.push_str(&format!("; {hint}")),
                None if wf.inputs.is_empty() => {
                    message.push_str(&format!("; workflow \"{}\" takes no inputs", wf.name));
                }
                None => {}
            }
            problems.push(message);
        }
    }
    for spec in &wf.inputs {
        match (given.get(&spec.name), &spec.default) {
            (Some(v), _) => match (spec.ty, v) {
                (ValueType::Float, Value::Int(i)) => {
                    out.insert(spec.name.clone(), Value::Float(*i as f64));
                }
                (ty, v) if ty.accepts(v) => {
                    out.insert(spec.name.clone(), v.clone());
                }
                (ty, v) => problems.push(format!(
                    "input \"{}\" must be {}, found {}",
                    spec.name,
                    super::expr::article(ty),
                    v.type_name()
                )),
            },
            (None, Some(default)) => {
                out.insert(spec.name.clone(), default.clone());
            }
            (None, None) => problems.push(format!(
                "missing required input \"{}\" ({})",
                spec.name,
                spec.ty.as_str()
            )),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        if problems.len() > MAX_SHOWN {
            let more = problems.len() - MAX_SHOWN;
            problems.truncate(MAX_SHOWN);
            problems.push(format!("{more} more problems with the inputs not shown"));
        }
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wdl::compile_str;

    fn workflow() -> Workflow {
        let text = "version: 1\nname: w\ninputs:\n  reviews: list\n  threshold: { type: float, default: 0.5 }\n  label: { type: string, default: x }\n  extra: { type: map, default: null }\ntasks:\n  a: { uses: exec }\n";
        compile_str("w.yaml", text, &["exec"]).unwrap()
    }

    fn given(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn defaults_fill_in_and_ints_widen_to_floats() {
        let out = check_inputs(
            &workflow(),
            &given(&[
                ("reviews", Value::List(vec![])),
                ("threshold", Value::Int(1)),
            ]),
        )
        .unwrap();
        assert_eq!(out["threshold"], Value::Float(1.0));
        assert_eq!(out["label"], Value::from("x"));
        assert_eq!(out["extra"], Value::Null);
    }

    #[test]
    fn every_problem_is_reported_by_name() {
        let err = check_inputs(
            &workflow(),
            &given(&[("treshold", Value::Int(1)), ("label", Value::Int(2))]),
        )
        .unwrap_err();
        assert_eq!(
            err,
            [
                "unknown input \"treshold\"; did you mean \"threshold\"?",
                "missing required input \"reviews\" (list)",
                "input \"label\" must be a string, found int",
            ]
        );
    }
}
