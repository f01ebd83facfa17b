//! The iris classifier in `models/` run in process: every reference case
//! that onnxruntime answered (see `scripts/make_iris_model.py`) must get the
//! same label and probabilities, one at a time and as one batch; bad
//! requests and bad artifacts must be clear errors, never panics.

use symphony::executor::TaskError;
use symphony::inference::{InferenceError, Model, read_signature};
use symphony::value::{DType, Map, Tensor, Value};

const MODEL: &[u8] = include_bytes!("../models/iris.onnx");
const REFERENCE: &str = include_str!("../models/iris_reference.json");

struct Case {
    scaled: Vec<f32>,
    label: i64,
    probabilities: Vec<f32>,
}

fn cases() -> Vec<Case> {
    let reference: serde_json::Value = serde_json::from_str(REFERENCE).unwrap();
    let floats = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    let cases: Vec<Case> = reference["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            scaled: floats(&c["scaled"]),
            label: c["label_index"].as_i64().unwrap(),
            probabilities: floats(&c["probabilities"]),
        })
        .collect();
    assert!(cases.len() >= 20, "reference has {} cases", cases.len());
    cases
}

fn f32_tensor(shape: Vec<usize>, values: &[f32]) -> Tensor {
    Tensor {
        dtype: DType::F32,
        shape,
        data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

fn request(input: Value) -> Value {
    let mut map = Map::new();
    map.insert("float_input".into(), input);
    Value::Map(map)
}

/// The response's labels and probability rows.
fn read(response: &Value) -> (Vec<i64>, Vec<Vec<f32>>) {
    let Some(Value::Tensor(label)) = response.get("label") else {
        panic!("no label tensor in {response}");
    };
    let Some(Value::Tensor(probs)) = response.get("probabilities") else {
        panic!("no probabilities tensor in {response}");
    };
    assert_eq!(label.dtype, DType::I64);
    assert_eq!(probs.dtype, DType::F32);
    assert_eq!(probs.shape, vec![label.shape[0], 3]);
    let labels = label
        .data
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let probs: Vec<f32> = probs
        .data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (labels, probs.chunks(3).map(<[f32]>::to_vec).collect())
}

fn assert_matches(case: &Case, label: i64, probs: &[f32]) {
    assert_eq!(label, case.label, "label for {:?}", case.scaled);
    for (got, want) in probs.iter().zip(&case.probabilities) {
        assert!(
            (got - want).abs() <= 1e-4,
            "probabilities for {:?}: got {probs:?}, want {:?}",
            case.scaled,
            case.probabilities
        );
    }
}

fn input_error(model: &Model, req: &Value) -> String {
    let e = model.infer(req).unwrap_err();
    assert!(e.is_input_error(), "{e:?} should be an input error");
    assert_eq!(e.clone().into_task_error().class, "input");
    e.to_string()
}

#[test]
fn signature_is_read_from_the_artifact() {
    let sig = read_signature(MODEL).unwrap();
    assert_eq!(
        sig.to_string(),
        "(`float_input`: float32 [N, 4]) -> (`label`: int64 [N], `probabilities`: float32 [N, 3])"
    );
    assert_eq!(sig.inputs[0].shape, vec![None, Some(4)]);
    let model = Model::load(MODEL).unwrap();
    assert_eq!(model.signature(), &sig);
    assert!(model.batchable());
}

#[test]
fn every_reference_case_matches_onnxruntime_one_at_a_time() {
    let model = Model::load(MODEL).unwrap();
    for case in cases() {
        let req = request(Value::Tensor(f32_tensor(vec![1, 4], &case.scaled)));
        let (labels, probs) = read(&model.infer(&req).unwrap());
        assert_eq!(labels.len(), 1);
        assert_matches(&case, labels[0], &probs[0]);
    }
}

#[test]
fn every_reference_case_matches_onnxruntime_in_one_batch() {
    let model = Model::load(MODEL).unwrap();
    let cases = cases();
    let requests = cases
        .iter()
        .map(|c| request(Value::Tensor(f32_tensor(vec![1, 4], &c.scaled))))
        .collect();
    let answers = model.infer_batch(requests);
    assert_eq!(answers.len(), cases.len());
    for (case, answer) in cases.iter().zip(&answers) {
        let (labels, probs) = read(answer.as_ref().unwrap());
        assert_eq!(labels.len(), 1);
        assert_matches(case, labels[0], &probs[0]);
    }
}

#[test]
fn a_batch_mixes_multi_row_requests_and_bad_ones() {
    let model = Model::load(MODEL).unwrap();
    let cases = cases();
    let two_rows: Vec<f32> = cases[..2].iter().flat_map(|c| c.scaled.clone()).collect();
    let requests = vec![
        request(Value::Tensor(f32_tensor(vec![2, 4], &two_rows))),
        request(Value::Tensor(f32_tensor(vec![1, 5], &[0.0; 5]))),
        request(Value::Tensor(f32_tensor(vec![1, 4], &cases[2].scaled))),
        Value::from("not a request"),
    ];
    let answers = model.infer_batch(requests);
    assert_eq!(answers.len(), 4);

    let (labels, probs) = read(answers[0].as_ref().unwrap());
    assert_eq!(labels.len(), 2);
    assert_matches(&cases[0], labels[0], &probs[0]);
    assert_matches(&cases[1], labels[1], &probs[1]);

    let e: &TaskError = answers[1].as_ref().unwrap_err();
    assert_eq!(e.class, "input");
    assert_eq!(
        e.message,
        "input `float_input`: expected float32 [N, 4], got float32 [1, 5]"
    );
    assert!(!e.retryable);

    let (labels, probs) = read(answers[2].as_ref().unwrap());
    assert_matches(&cases[2], labels[0], &probs[0]);

    assert_eq!(answers[3].as_ref().unwrap_err().class, "input");
}

#[test]
fn json_lists_are_accepted_for_the_single_input() {
    let model = Model::load(MODEL).unwrap();
    let case = &cases()[0];
    let row = || {
        Value::List(
            case.scaled
                .iter()
                .map(|&v| Value::Float(f64::from(v)))
                .collect(),
        )
    };
    let forms = [
        request(Value::List(vec![row()])), // {"float_input": [[…]]}
        request(row()),                    // {"float_input": […]}: one row
        Value::List(vec![row()]),          // the lone input, unnamed
    ];
    for req in forms {
        let (labels, probs) = read(&model.infer(&req).unwrap());
        assert_matches(case, labels[0], &probs[0]);
    }
    let json: serde_json::Value =
        serde_json::from_str(r#"{"float_input": [[5.1, 3.5, 1.4, 0.2], [6, 3, 5, 2]]}"#).unwrap();
    let (labels, _) = read(&model.infer(&Value::from_json(json)).unwrap());
    assert_eq!(labels.len(), 2);
}

#[test]
fn bad_requests_are_clear_input_errors() {
    let model = Model::load(MODEL).unwrap();

    let wide = request(Value::Tensor(f32_tensor(vec![1, 5], &[0.0; 5])));
    assert_eq!(
        input_error(&model, &wide),
        "input `float_input`: expected float32 [N, 4], got float32 [1, 5]"
    );

    let ints = request(Value::Tensor(Tensor {
        dtype: DType::I64,
        shape: vec![1, 4],
        data: vec![0; 32],
    }));
    assert_eq!(
        input_error(&model, &ints),
        "input `float_input`: expected float32 [N, 4], got int64 [1, 4]"
    );

    let flat = request(Value::Tensor(f32_tensor(vec![4], &[0.0; 4])));
    assert_eq!(
        input_error(&model, &flat),
        "input `float_input`: expected float32 [N, 4], got float32 [4]"
    );

    assert_eq!(
        input_error(&model, &Value::Map(Map::new())),
        "missing input `float_input`; the model takes `float_input`: float32 [N, 4]"
    );

    let mut misnamed = Map::new();
    misnamed.insert("features".into(), Value::List(vec![]));
    assert_eq!(
        input_error(&model, &Value::Map(misnamed)),
        "unknown input `features`; the model takes `float_input`: float32 [N, 4]"
    );

    let mut short = f32_tensor(vec![1, 4], &[0.0; 4]);
    short.data.truncate(13);
    assert_eq!(
        input_error(&model, &request(Value::Tensor(short))),
        "input `float_input`: tensor data is 13 bytes, but float32 [1, 4] needs 16"
    );

    let empty = request(Value::Tensor(f32_tensor(vec![0, 4], &[])));
    assert_eq!(
        input_error(&model, &empty),
        "input `float_input`: expected at least one row, got float32 [0, 4]"
    );

    let words = request(Value::List(vec![Value::List(vec![Value::from("a"); 4])]));
    assert_eq!(
        input_error(&model, &words),
        "input `float_input`: item [0][0]: expected a number, got string"
    );
}

#[test]
fn garbage_is_a_load_error_not_a_panic() {
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    for bytes in [
        &b""[..],
        b"not a model",
        &garbage,
        &MODEL[..MODEL.len() / 2],
    ] {
        let e = Model::load(bytes).unwrap_err();
        assert!(matches!(e, InferenceError::Load(_)), "{e:?}");
        assert_eq!(e.class(), "model");
        let t: TaskError = e.into();
        assert_eq!(t.class, "model");
        assert!(
            t.message.starts_with("cannot load model: "),
            "{}",
            t.message
        );
        assert!(read_signature(bytes).is_err());
    }
}
