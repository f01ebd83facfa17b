//! In-process inference on the iris classifier (`models/iris.onnx`), at the
//! model: no HTTP, no engine. Release build:
//!
//! ```text
//! cargo bench --bench inference               # every scenario
//! cargo bench --bench inference -- throughput # one scenario
//! ```
//!
//! Scenarios:
//! - `load`: `Model::load` from bytes in memory plus the first inference
//!   (which builds the batch-1 plan), median (and min/max) over 20 loads;
//!   target ≤ 100 ms.
//! - `throughput`: rows/s through `Model::infer` with one row per call
//!   (batch 1), one call carrying a `[32, 4]` tensor, and `Model::infer_batch`
//!   stacking 32 one-row requests (how the executor batches; the requests
//!   are built outside the timing, since the executor owns them already);
//!   median of 3 runs each; target: batch 32 ≥ 3× batch 1.
//! - `plans`: the same model run straight on tract, with the plan optimized
//!   once with a symbolic batch dimension (what `Model` does) and with a plan
//!   optimized for each concrete batch size, to see whether caching a plan
//!   per batch size would pay.
//!
//! Each figure prints one JSON line:
//! `{"system":"symphony","metric":…,"value":…,"unit":…}`.

use std::time::{Duration, Instant};

use symphony::inference::Model;
use symphony::value::{DType, Map, Tensor, Value};
use tract_onnx::prelude::*;

/// The binary's allocator, so the figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MODEL: &[u8] = include_bytes!("../models/iris.onnx");
const REFERENCE: &str = include_str!("../models/iris_reference.json");

/// How long each throughput loop runs.
const SPAN: Duration = Duration::from_millis(1500);

fn report(metric: &str, value: f64, unit: &str, extra: &str) {
    println!(
        "{{\"system\":\"symphony\",\"metric\":\"{metric}\",\"value\":{value:.1},\"unit\":\"{unit}\"{extra}}}"
    );
}

/// The reference cases' scaled rows.
fn rows() -> Vec<[f32; 4]> {
    let reference: serde_json::Value = serde_json::from_str(REFERENCE).unwrap();
    reference["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let v: Vec<f32> = c["scaled"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            [v[0], v[1], v[2], v[3]]
        })
        .collect()
}

/// `{"float_input": <float32 [n, 4]>}` from the first `n` rows (cycled).
fn request(rows: &[[f32; 4]], n: usize) -> Value {
    let data = rows
        .iter()
        .cycle()
        .take(n)
        .flatten()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let mut map = Map::new();
    map.insert(
        "float_input".into(),
        Value::Tensor(Tensor {
            dtype: DType::F32,
            shape: vec![n, 4],
            data,
        }),
    );
    Value::Map(map)
}

/// Calls `f` (which handles `rows_per_call` rows) for `SPAN`; rows/s.
fn rows_per_sec(rows_per_call: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..100 {
        f();
    }
    let started = Instant::now();
    let mut calls = 0u64;
    while started.elapsed() < SPAN {
        for _ in 0..64 {
            f();
        }
        calls += 64;
    }
    (calls as f64 * rows_per_call as f64) / started.elapsed().as_secs_f64()
}

/// Median of 3 runs of `measure`.
fn median3(mut measure: impl FnMut() -> f64) -> f64 {
    median((0..3).map(|_| measure()).collect()).0
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn load() {
    let req = request(&rows(), 1);
    let mut load_only = Vec::new();
    let mut total = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let model = Model::load(MODEL).unwrap();
        let loaded = started.elapsed();
        model.infer(&req).unwrap();
        total.push(started.elapsed().as_secs_f64() * 1e3);
        load_only.push(loaded.as_secs_f64() * 1e3);
    }
    let (t, lo, hi) = median(total);
    report(
        "load_first_inference",
        t,
        "ms",
        &format!(",\"min\":{lo:.2},\"max\":{hi:.2},\"loads\":20,\"target_ms\":100"),
    );
    report("load_only", median(load_only).0, "ms", "");
}

fn throughput() {
    let rows = rows();
    let model = Model::load(MODEL).unwrap();
    let one = request(&rows, 1);
    let b1 = median3(|| {
        rows_per_sec(1, || {
            model.infer(&one).unwrap();
        })
    });
    report("infer_batch1", b1, "rows/s", "");

    let tensor32 = request(&rows, 32);
    let t32 = median3(|| {
        rows_per_sec(32, || {
            model.infer(&tensor32).unwrap();
        })
    });
    report(
        "infer_tensor32",
        t32,
        "rows/s",
        &format!(",\"vs_batch1\":{:.1}", t32 / b1),
    );

    let singles: Vec<Value> = (0..32)
        .map(|i| request(&rows[i % rows.len()..], 1))
        .collect();
    let s32 = median3(|| {
        // Requests are built 1,000 batches at a time, outside the clock.
        let mut busy = Duration::ZERO;
        let mut calls = 0u64;
        while busy < SPAN {
            let batches: Vec<Vec<Value>> = (0..1000).map(|_| singles.clone()).collect();
            let started = Instant::now();
            for batch in batches {
                for answer in model.infer_batch(batch) {
                    answer.unwrap();
                }
            }
            busy += started.elapsed();
            calls += 1000;
        }
        calls as f64 * 32.0 / busy.as_secs_f64()
    });
    report(
        "infer_batch32",
        s32,
        "rows/s",
        &format!(",\"vs_batch1\":{:.1},\"target_ratio\":3", s32 / b1),
    );
}

/// Tract alone: one symbolic plan against a plan per concrete batch size.
fn plans() {
    let rows = rows();
    let mut model = tract_onnx::onnx().model_for_read(&mut &*MODEL).unwrap();
    let n = model.sym("N");
    model
        .set_input_fact(0, f32::fact([n.to_dim(), 4.to_dim()]).into())
        .unwrap();
    let typed = model.into_typed().unwrap();
    let symbolic = typed
        .clone()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    for batch in [1usize, 32] {
        let data: Vec<f32> = rows.iter().cycle().take(batch).flatten().copied().collect();
        let input = tract_ndarray::Array2::from_shape_vec((batch, 4), data)
            .unwrap()
            .into_tensor()
            .into_tvalue();
        let concrete = typed
            .concretize_dims(&SymbolValues::default().with(&n, batch as i64))
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap();
        let sym = rows_per_sec(batch, || {
            symbolic.run(tvec!(input.clone())).unwrap();
        });
        let conc = rows_per_sec(batch, || {
            concrete.run(tvec!(input.clone())).unwrap();
        });
        report(&format!("tract_symbolic_batch{batch}"), sym, "rows/s", "");
        report(
            &format!("tract_concrete_batch{batch}"),
            conc,
            "rows/s",
            &format!(",\"vs_symbolic\":{:.2}", conc / sym),
        );
    }
}

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    if wanted("load") {
        load();
    }
    if wanted("throughput") {
        throughput();
    }
    if wanted("plans") {
        plans();
    }
}
