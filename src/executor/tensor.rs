//! Small numeric stages around a model: `builtin/normalize` scales features
//! before it, `builtin/label` names its predictions after it.
//!
//! | `uses` | `with` | output |
//! |---|---|---|
//! | `builtin/normalize` | `values` (row, rows or tensor), `mean`, `scale` (one number per column) | float32 tensor `[rows, columns]` of `(x - mean) / scale` |
//! | `builtin/label` | `index` (integer, list or tensor of class indices), `labels` (names) | the name, or a list of names for several rows |

use async_trait::async_trait;

use super::fields::{fields, missing, wrong};
use super::{AttemptContext, Executor, TaskError};
use crate::value::{DType, Tensor, Value};

/// `builtin/normalize`: standard scaling, `(x - mean) / scale` per column.
#[derive(Debug, Clone, Copy, Default)]
pub struct Normalize;

/// `builtin/label`: class indices to class names.
#[derive(Debug, Clone, Copy, Default)]
pub struct Label;

#[async_trait]
impl Executor for Normalize {
    async fn execute(&self, _ctx: &AttemptContext, input: Value) -> Result<Value, TaskError> {
        let with = fields("builtin/normalize", &input, &["values", "mean", "scale"])?;
        let get = |field: &str, what: &str| with.get(field).ok_or_else(|| missing(field, what));
        let (rows, width) = matrix(get("values", "a row, rows or a tensor of numbers")?)
            .map_err(|got| wrong("values", "a row, rows or a 2-D tensor of numbers", got))?;
        let mean = numbers(get("mean", "one number per column")?)
            .ok_or_else(|| wrong("mean", "a list of numbers", &with["mean"]))?;
        let scale = numbers(get("scale", "one number per column")?)
            .ok_or_else(|| wrong("scale", "a list of numbers", &with["scale"]))?;
        for (field, list) in [("mean", &mean), ("scale", &scale)] {
            if list.len() != width {
                return Err(TaskError::bad_input(format!(
                    "field \"{field}\": expected {width} numbers (one per column), got {}",
                    list.len()
                )));
            }
        }
        if let Some(column) = scale.iter().position(|s| *s == 0.0) {
            return Err(TaskError::bad_input(format!(
                "field \"scale\": column {column} is zero"
            )));
        }
        let mut data = Vec::with_capacity(rows.len() * 4);
        for (i, x) in rows.iter().enumerate() {
            let column = i % width;
            let scaled = ((x - mean[column]) / scale[column]) as f32;
            data.extend_from_slice(&scaled.to_le_bytes());
        }
        Ok(Value::Tensor(Tensor {
            dtype: DType::F32,
            shape: vec![rows.len() / width.max(1), width],
            data,
        }))
    }
}

#[async_trait]
impl Executor for Label {
    async fn execute(&self, _ctx: &AttemptContext, input: Value) -> Result<Value, TaskError> {
        let with = fields("builtin/label", &input, &["index", "labels"])?;
        let index = with
            .get("index")
            .ok_or_else(|| missing("index", "class indices"))?;
        let labels = match with.get("labels") {
            Some(Value::List(labels)) => labels,
            Some(other) => return Err(wrong("labels", "a list of names", other)),
            None => return Err(missing("labels", "a list of names")),
        };
        let (indices, single) = match index {
            Value::Int(i) => (vec![*i as f64], true),
            other => (
                matrix(other).map(|(values, _)| values).map_err(|got| {
                    wrong("index", "an integer, a list or a tensor of integers", got)
                })?,
                false,
            ),
        };
        let mut names = Vec::with_capacity(indices.len());
        for i in indices {
            let name = (i >= 0.0 && i.fract() == 0.0)
                .then(|| labels.get(i as usize))
                .flatten()
                .ok_or_else(|| {
                    TaskError::bad_input(format!(
                        "field \"index\": class {i} is not one of the {} labels",
                        labels.len()
                    ))
                })?;
            names.push(name.clone());
        }
        Ok(if single || names.len() == 1 {
            names.pop().unwrap_or(Value::Null)
        } else {
            Value::List(names)
        })
    }
}

/// Numbers of a flat list.
fn numbers(value: &Value) -> Option<Vec<f64>> {
    value.as_list()?.iter().map(Value::as_f64).collect()
}

/// A row, a list of equal rows or a tensor of rank 1 or 2, as its numbers
/// row-major and the row width; the offending value when it is none.
fn matrix(value: &Value) -> Result<(Vec<f64>, usize), &Value> {
    match value {
        Value::Tensor(t) => tensor_numbers(t)
            .filter(|_| t.shape.len() <= 2)
            .map(|v| (v, t.shape.last().copied().unwrap_or(1)))
            .ok_or(value),
        Value::List(items) if items.iter().all(|i| matches!(i, Value::List(_))) => {
            let width = items
                .first()
                .and_then(Value::as_list)
                .map_or(0, <[Value]>::len);
            let mut out = Vec::with_capacity(items.len() * width);
            for row in items {
                let row = numbers(row).filter(|r| r.len() == width).ok_or(value)?;
                out.extend(row);
            }
            Ok((out, width))
        }
        Value::List(_) => numbers(value).map(|v| (v.clone(), v.len())).ok_or(value),
        _ => Err(value),
    }
}

/// A tensor's elements as floats, when its data fills its shape.
fn tensor_numbers(t: &Tensor) -> Option<Vec<f64>> {
    let count: usize = t.shape.iter().product();
    if t.data.len() != count * t.dtype.size() {
        return None;
    }
    let chunks = t.data.chunks_exact(t.dtype.size());
    Some(match t.dtype {
        DType::F32 => chunks
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        DType::F64 => chunks
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        DType::I32 => chunks
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        DType::I64 => chunks
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        DType::U8 | DType::Bool => chunks.map(|c| c[0] as f64).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> AttemptContext {
        AttemptContext {
            run_id: "r".into(),
            task_id: "t".into(),
            item: None,
            attempt: 1,
            idempotency_key: "r/t".into(),
            uses: "builtin/normalize".into(),
        }
    }

    fn with(pairs: &[(&str, serde_json::Value)]) -> Value {
        Value::from_json(serde_json::Value::Object(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        ))
    }

    #[tokio::test]
    async fn normalize_scales_each_column_into_a_float32_tensor() {
        let input = with(&[
            ("values", serde_json::json!([1.0, 10.0])),
            ("mean", serde_json::json!([1.0, 0.0])),
            ("scale", serde_json::json!([2.0, 5.0])),
        ]);
        let Value::Tensor(t) = Normalize.execute(&ctx(), input).await.unwrap() else {
            panic!("a tensor");
        };
        assert_eq!((t.dtype, t.shape.clone()), (DType::F32, vec![1, 2]));
        assert_eq!(tensor_numbers(&t).unwrap(), vec![0.0, 2.0]);
    }

    #[tokio::test]
    async fn normalize_names_what_does_not_fit() {
        let wrong_width = with(&[
            ("values", serde_json::json!([[1, 2], [3, 4]])),
            ("mean", serde_json::json!([0, 0, 0])),
            ("scale", serde_json::json!([1, 1])),
        ]);
        let e = Normalize.execute(&ctx(), wrong_width).await.unwrap_err();
        assert!(e.message.contains("\"mean\": expected 2 numbers"), "{e}");
        let ragged = with(&[
            ("values", serde_json::json!([[1, 2], [3]])),
            ("mean", serde_json::json!([0, 0])),
            ("scale", serde_json::json!([1, 1])),
        ]);
        let e = Normalize.execute(&ctx(), ragged).await.unwrap_err();
        assert_eq!(e.class, "input");
    }

    #[tokio::test]
    async fn label_names_one_or_many_indices_and_refuses_unknown_ones() {
        let labels = serde_json::json!(["a", "b", "c"]);
        let one = with(&[("index", serde_json::json!(2)), ("labels", labels.clone())]);
        assert_eq!(Label.execute(&ctx(), one).await.unwrap(), Value::from("c"));
        let tensor = Value::Tensor(Tensor {
            dtype: DType::I64,
            shape: vec![2],
            data: [1i64, 0].iter().flat_map(|i| i.to_le_bytes()).collect(),
        });
        let mut many = with(&[("labels", labels.clone())]);
        if let Value::Map(m) = &mut many {
            m.insert("index".into(), tensor);
        }
        assert_eq!(
            Label.execute(&ctx(), many).await.unwrap(),
            Value::List(vec!["b".into(), "a".into()])
        );
        let out_of_range = with(&[("index", serde_json::json!(3)), ("labels", labels)]);
        let e = Label.execute(&ctx(), out_of_range).await.unwrap_err();
        assert!(
            e.message.contains("class 3 is not one of the 3 labels"),
            "{e}"
        );
    }
}
