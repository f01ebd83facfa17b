//! A loaded ONNX model: its signature, its optimized tract plan, and the
//! rules that turn requests into inputs and outputs into responses.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, PoisonError, RwLock};

use tract_onnx::prelude::{
    Framework, InferenceFact, InferenceModelExt, IntoTValue, OutletId, SimpleState, Symbol,
    SymbolValues, TDim, TValue, TVec, TractError, TypedModel, TypedSimplePlan,
};
use tract_onnx::tract_hir::infer::Factoid;

use super::convert::{
    byte_len, data_len_message, dtype_of, from_tract, tensor_from_list, to_tract,
};
use super::{InferenceError, Signature, TensorSpec, describe_tensor};
use crate::executor::TaskError;
use crate::value::{Map, Tensor, Value};

/// An ONNX model ready to run: cheap to clone and to share between threads.
///
/// Load it once with [`Model::load`], then call [`Model::infer`] or
/// [`Model::infer_batch`] from any number of threads; each call runs the
/// model on the calling thread.
#[derive(Clone)]
pub struct Model {
    inner: Arc<Inner>,
}

type Plan = TypedSimplePlan<TypedModel>;

/// How many batch sizes get a plan of their own, besides the symbolic one.
///
/// A plan optimized for a concrete batch size runs the iris model 2–3×
/// faster at batch 1 and 1.2× at batch 32 than the plan with a symbolic
/// batch (`cargo bench --bench inference -- plans`), but each plan holds its
/// own packed weights, so only the first few sizes a model sees get one.
const CONCRETE_PLANS: usize = 8;

struct Inner {
    signature: Signature,
    /// Optimized with the batch dimension left symbolic: serves every batch
    /// size, and the only plan of an unbatched model.
    plan: Arc<Plan>,
    /// Set when every input and output shares one free first dimension.
    batch: Option<Batch>,
}

/// What a batchable model needs to build a plan for one batch size.
struct Batch {
    /// The symbol heading every input and output shape.
    symbol: Symbol,
    /// The typed model, before optimization, to concretize.
    model: TypedModel,
    /// Plans built so far, by batch size; at most [`CONCRETE_PLANS`].
    plans: RwLock<HashMap<usize, Arc<Plan>>>,
}

impl Batch {
    /// The plan for `rows` rows, built on first use while there is room.
    fn plan(&self, rows: usize) -> Option<Arc<Plan>> {
        let cached = |plans: &HashMap<usize, Arc<Plan>>| plans.get(&rows).cloned();
        let read = self.plans.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(plan) = cached(&read) {
            return Some(plan);
        }
        if read.len() >= CONCRETE_PLANS {
            return None;
        }
        drop(read);
        // Built outside the lock: requests of other sizes keep running. Two
        // threads may build the same plan; the first one stored wins.
        let plan = concrete_plan(&self.model, &self.symbol, rows)?;
        let mut plans = self.plans.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(plan) = cached(&plans) {
            return Some(plan);
        }
        if plans.len() >= CONCRETE_PLANS {
            return None;
        }
        plans.insert(rows, Arc::clone(&plan));
        Some(plan)
    }
}

/// `model` optimized for `rows` rows; `None` (and the symbolic plan serves)
/// when tract cannot do it.
fn concrete_plan(model: &TypedModel, symbol: &Symbol, rows: usize) -> Option<Arc<Plan>> {
    let rows_i64 = i64::try_from(rows).ok()?;
    let built = guard(InferenceError::Load, || {
        model
            .concretize_dims(&SymbolValues::default().with(symbol, rows_i64))
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| InferenceError::Load(format!("{e:#}")))
    });
    match built {
        Ok(plan) => Some(Arc::new(plan)),
        Err(e) => {
            tracing::debug!(rows, error = %e, "No plan for this batch size; the symbolic plan serves.");
            None
        }
    }
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model")
            .field("signature", &self.inner.signature.to_string())
            .field("batchable", &self.batchable())
            .finish_non_exhaustive()
    }
}

/// Reads a model's signature without preparing it to run: parses the ONNX
/// artifact and infers its types and shapes, but skips optimization.
///
/// # Errors
///
/// [`InferenceError::Load`] when `bytes` are not a model tract can load,
/// [`InferenceError::Unsupported`] when an input or output has an element
/// type Symphony's tensors lack or an input has no fixed rank.
pub fn read_signature(bytes: &[u8]) -> Result<Signature, InferenceError> {
    Ok(analyse(bytes)?.signature)
}

impl Model {
    /// Loads an ONNX model from its bytes and builds an optimized plan.
    ///
    /// Free input dimensions become symbols: every input's free first
    /// dimension the same one (the batch), any other its own. The plan is
    /// optimized with them symbolic, so one plan serves every batch size; a
    /// batchable model also builds, on first use, a faster plan for each of
    /// the first few batch sizes it runs.
    ///
    /// # Errors
    ///
    /// As [`read_signature`], and [`InferenceError::Load`] when tract cannot
    /// optimize the model. A model that makes tract panic is an error too.
    pub fn load(bytes: &[u8]) -> Result<Model, InferenceError> {
        let Analysed {
            model,
            signature,
            batch_symbol,
        } = analyse(bytes)?;
        let batch = batch_symbol.map(|symbol| Batch {
            symbol,
            model: model.clone(),
            plans: RwLock::default(),
        });
        let plan = guard(InferenceError::Load, || {
            model
                .into_optimized()
                .and_then(|m| m.into_runnable())
                .map_err(|e| InferenceError::Load(format!("{e:#}")))
        })?;
        Ok(Model {
            inner: Arc::new(Inner {
                signature,
                plan: Arc::new(plan),
                batch,
            }),
        })
    }

    /// What the model takes and gives.
    pub fn signature(&self) -> &Signature {
        &self.inner.signature
    }

    /// Whether [`Model::infer_batch`] runs many requests at once: every
    /// input and output has the same free first dimension.
    pub fn batchable(&self) -> bool {
        self.inner.batch.is_some()
    }

    /// Runs the model on one request and returns a map from every output
    /// name to its tensor.
    ///
    /// The request is a map from input name to a tensor or a nested list of
    /// numbers; a model with one input also takes the value alone. See the
    /// [module documentation](super) for the conversion rules.
    ///
    /// # Errors
    ///
    /// An input error (missing or unknown input, wrong element type, rank
    /// or fixed dimension, data that does not fill the shape), naming the
    /// input with what was expected and what came; or
    /// [`InferenceError::Run`] when the model fails.
    pub fn infer(&self, request: &Value) -> Result<Value, InferenceError> {
        let inputs = self.prepare(request)?;
        let outputs = self.run(&inputs)?;
        Ok(self.response(outputs))
    }

    /// Runs many requests, each with one or more rows, and answers each.
    ///
    /// For a batchable model the valid requests are stacked along the batch
    /// dimension, run once, and the outputs split back; a request that fails
    /// validation gets its own error and does not hold up the others. Should
    /// the stacked run fail, each request runs alone so that one bad request
    /// cannot fail the rest. An unbatched model runs the requests one by one.
    pub fn infer_batch(&self, requests: Vec<Value>) -> Vec<Result<Value, TaskError>> {
        if !self.batchable() || requests.len() < 2 {
            return requests
                .iter()
                .map(|r| self.infer(r).map_err(TaskError::from))
                .collect();
        }
        let mut results: Vec<Option<Result<Value, TaskError>>> = vec![None; requests.len()];
        let mut ready = Vec::with_capacity(requests.len());
        for (ix, request) in requests.iter().enumerate() {
            match self.prepare(request) {
                Ok(inputs) => ready.push((ix, inputs)),
                Err(e) => results[ix] = Some(Err(e.into())),
            }
        }
        let stacked = if ready.len() > 1 {
            self.run_stacked(&ready).ok()
        } else {
            None
        };
        match stacked {
            Some(responses) => {
                for ((ix, _), response) in ready.iter().zip(responses) {
                    results[*ix] = Some(Ok(response));
                }
            }
            None => {
                for (ix, inputs) in &ready {
                    let answer = self.run(inputs).map(|outs| self.response(outs));
                    results[*ix] = Some(answer.map_err(TaskError::from));
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(TaskError::fatal("model", "request left unanswered"))))
            .collect()
    }

    /// Checks a request against the signature and returns its inputs in the
    /// model's order.
    fn prepare<'a>(&self, request: &'a Value) -> Result<Vec<Cow<'a, Tensor>>, InferenceError> {
        let specs = &self.inner.signature.inputs;
        let inputs = match request {
            Value::Map(map) => {
                if let Some(name) = map.keys().find(|k| !specs.iter().any(|s| &s.name == *k)) {
                    return Err(InferenceError::UnknownInput {
                        name: name.clone(),
                        expected: self.expected_inputs(),
                    });
                }
                specs
                    .iter()
                    .map(|spec| match map.get(&spec.name) {
                        Some(value) => input_tensor(spec, value),
                        None => Err(InferenceError::MissingInput {
                            name: spec.name.clone(),
                            expected: self.expected_inputs(),
                        }),
                    })
                    .collect::<Result<Vec<_>, _>>()?
            }
            lone if specs.len() == 1 => vec![input_tensor(&specs[0], lone)?],
            other => {
                return Err(InferenceError::BadRequest(format!(
                    "expected a map of inputs ({}), got {}",
                    self.expected_inputs(),
                    other.type_name()
                )));
            }
        };
        if self.batchable() {
            let rows = |t: &Tensor| t.shape[0];
            if let Some(k) = inputs.iter().position(|t| rows(t) != rows(&inputs[0])) {
                return Err(InferenceError::BadRequest(format!(
                    "inputs disagree on the batch size: `{}` has {} rows, `{}` has {}",
                    specs[0].name,
                    rows(&inputs[0]),
                    specs[k].name,
                    rows(&inputs[k])
                )));
            }
        }
        Ok(inputs)
    }

    /// Runs the plan on checked inputs (in the model's order).
    fn run(&self, inputs: &[Cow<'_, Tensor>]) -> Result<Vec<Tensor>, InferenceError> {
        let values = inputs
            .iter()
            .map(|t| to_tract(t).map(IntoTValue::into_tvalue))
            .collect::<Result<TVec<TValue>, _>>()
            .map_err(InferenceError::Run)?;
        let batch = match (&self.inner.batch, inputs.first()) {
            (Some(batch), Some(first)) => Some((batch, first.shape[0])),
            _ => None,
        };
        let plan = batch
            .and_then(|(batch, rows)| batch.plan(rows))
            .unwrap_or_else(|| Arc::clone(&self.inner.plan));
        let outputs = guard(InferenceError::Run, || {
            let failed = |e: TractError| InferenceError::Run(format!("{e:#}"));
            let mut state = SimpleState::new(&*plan).map_err(failed)?;
            // Told the batch size up front, tract need not work it out from
            // the inputs of the symbolic plan, which costs an error (and a
            // backtrace capture when RUST_BACKTRACE is set) per run; a
            // concrete plan has no symbol left and ignores it.
            if let Some((batch, Ok(rows))) = batch.map(|(b, rows)| (b, i64::try_from(rows))) {
                state
                    .session_state
                    .resolved_symbols
                    .set(&batch.symbol, rows);
            }
            state.run(values).map_err(failed)
        })?;
        outputs
            .iter()
            .map(|t| from_tract(t))
            .collect::<Result<_, _>>()
            .map_err(InferenceError::Run)
    }

    /// Stacks the requests' rows, runs once, and splits the outputs back
    /// into one response per request.
    fn run_stacked(
        &self,
        ready: &[(usize, Vec<Cow<'_, Tensor>>)],
    ) -> Result<Vec<Value>, InferenceError> {
        let rows: Vec<usize> = ready.iter().map(|(_, inputs)| inputs[0].shape[0]).collect();
        let total: usize = rows.iter().sum();
        let stacked = (0..self.inner.signature.inputs.len())
            .map(|j| {
                let parts: Vec<&Tensor> = ready.iter().map(|(_, inputs)| &*inputs[j]).collect();
                stack(&parts).map(Cow::Owned)
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| InferenceError::Run("nothing to stack".into()))?;
        let outputs = self.run(&stacked)?;
        let mut responses = vec![Map::new(); ready.len()];
        for (spec, output) in self.inner.signature.outputs.iter().zip(outputs) {
            if output.shape.first() != Some(&total) {
                return Err(InferenceError::Run(format!(
                    "output `{}` is {} for {total} input rows",
                    spec.name,
                    describe_tensor(output.dtype, &output.shape)
                )));
            }
            let row_bytes = output.data.len() / total;
            let mut offset = 0;
            for (response, &k) in responses.iter_mut().zip(&rows) {
                let mut shape = output.shape.clone();
                shape[0] = k;
                let data = output.data[offset..offset + k * row_bytes].to_vec();
                offset += k * row_bytes;
                let part = Tensor {
                    dtype: output.dtype,
                    shape,
                    data,
                };
                response.insert(spec.name.clone(), Value::Tensor(part));
            }
        }
        Ok(responses.into_iter().map(Value::Map).collect())
    }

    fn response(&self, outputs: Vec<Tensor>) -> Value {
        let specs = &self.inner.signature.outputs;
        Value::Map(
            specs
                .iter()
                .zip(outputs)
                .map(|(spec, t)| (spec.name.clone(), Value::Tensor(t)))
                .collect(),
        )
    }

    /// `` `a`: float32 [N, 4], `b`: int64 [N] ``.
    fn expected_inputs(&self) -> String {
        let specs = &self.inner.signature.inputs;
        specs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Concatenates checked tensors of the same element type and trailing
/// shape along their first dimension; `None` when there are none.
fn stack(parts: &[&Tensor]) -> Option<Tensor> {
    let first = parts.first()?;
    let mut shape = first.shape.clone();
    shape[0] = parts.iter().map(|t| t.shape[0]).sum();
    let mut data = Vec::with_capacity(parts.iter().map(|t| t.data.len()).sum());
    for t in parts {
        data.extend_from_slice(&t.data);
    }
    Some(Tensor {
        dtype: first.dtype,
        shape,
        data,
    })
}

/// Turns one request value into the input tensor for `spec`, checked.
fn input_tensor<'a>(
    spec: &TensorSpec,
    value: &'a Value,
) -> Result<Cow<'a, Tensor>, InferenceError> {
    let tensor = match value {
        Value::Tensor(t) => Cow::Borrowed(t),
        Value::List(_) | Value::Int(_) | Value::Float(_) | Value::Bool(_) => {
            let mut t = tensor_from_list(value, spec.dtype)
                .map_err(|m| InferenceError::bad_input(&spec.name, m))?;
            // A list one level shallower than the input is a single row.
            if t.shape.len() + 1 == spec.shape.len() && matches!(spec.shape[0], None | Some(1)) {
                t.shape.insert(0, 1);
            }
            Cow::Owned(t)
        }
        other => {
            return Err(InferenceError::bad_input(
                &spec.name,
                format!(
                    "expected {} as a tensor or a list of numbers, got {}",
                    spec.describe(),
                    other.type_name()
                ),
            ));
        }
    };
    check_tensor(spec, &tensor)?;
    Ok(tensor)
}

/// Checks element type, rank, fixed dimensions and data length.
fn check_tensor(spec: &TensorSpec, t: &Tensor) -> Result<(), InferenceError> {
    let fits = t.dtype == spec.dtype
        && t.shape.len() == spec.shape.len()
        && spec
            .shape
            .iter()
            .zip(&t.shape)
            .all(|(want, got)| want.is_none_or(|w| w == *got));
    if !fits {
        return Err(InferenceError::bad_input(
            &spec.name,
            format!(
                "expected {}, got {}",
                spec.describe(),
                describe_tensor(t.dtype, &t.shape)
            ),
        ));
    }
    if spec.shape.first() == Some(&None) && t.shape[0] == 0 {
        return Err(InferenceError::bad_input(
            &spec.name,
            format!(
                "expected at least one row, got {}",
                describe_tensor(t.dtype, &t.shape)
            ),
        ));
    }
    if byte_len(t.dtype, &t.shape) != Some(t.data.len()) {
        return Err(InferenceError::bad_input(&spec.name, data_len_message(t)));
    }
    Ok(())
}

/// A typed (not yet optimized) model and what was read from it.
struct Analysed {
    model: TypedModel,
    signature: Signature,
    /// The symbol heading every input and output shape, if one does.
    batch_symbol: Option<Symbol>,
}

/// Parses the artifact, gives free input dimensions symbols, and infers
/// every type and shape.
fn analyse(bytes: &[u8]) -> Result<Analysed, InferenceError> {
    guard(InferenceError::Load, || {
        let load = |e: tract_onnx::prelude::TractError| InferenceError::Load(format!("{e:#}"));
        let mut model = tract_onnx::onnx()
            .model_for_read(&mut &*bytes)
            .map_err(load)?;
        let batch = model.new_sym_with_prefix("batch");
        let sources = model.input_outlets().map_err(load)?.to_vec();
        for (ix, outlet) in sources.iter().enumerate() {
            let name = model.node(outlet.node).name.clone();
            let fact = model.input_fact(ix).map_err(load)?.clone();
            let dt = fact.datum_type.concretize().ok_or_else(|| {
                InferenceError::Unsupported(format!("input `{name}` has no element type"))
            })?;
            if fact.shape.is_open() {
                return Err(InferenceError::Unsupported(format!(
                    "input `{name}` has no fixed rank"
                )));
            }
            let dims: TVec<TDim> = fact
                .shape
                .dims()
                .enumerate()
                .map(|(axis, d)| match d.concretize() {
                    Some(d) => d,
                    None if axis == 0 => TDim::Sym(batch.clone()),
                    None => TDim::Sym(model.new_sym_with_prefix("dim")),
                })
                .collect();
            model
                .set_input_fact(ix, InferenceFact::dt_shape(dt, dims))
                .map_err(load)?;
        }
        let model = model.into_typed().map_err(load)?;

        let spec = |outlet: OutletId, name: String| -> Result<TensorSpec, InferenceError> {
            let fact = model.outlet_fact(outlet).map_err(load)?;
            let dtype = dtype_of(fact.datum_type).ok_or_else(|| {
                InferenceError::Unsupported(format!(
                    "`{name}` has {:?} elements; Symphony tensors are float32, float64, \
                     int32, int64, uint8 or bool",
                    fact.datum_type
                ))
            })?;
            let shape = fact
                .shape
                .iter()
                .map(|d| d.as_i64().and_then(|v| usize::try_from(v).ok()))
                .collect();
            Ok(TensorSpec { name, dtype, shape })
        };
        let inputs = model.input_outlets().map_err(load)?;
        let outputs = model.output_outlets().map_err(load)?;
        let signature = Signature {
            inputs: inputs
                .iter()
                .map(|&o| spec(o, model.node(o.node).name.clone()))
                .collect::<Result<_, _>>()?,
            outputs: outputs
                .iter()
                .map(|&o| {
                    let name = model
                        .outlet_label(o)
                        .map_or_else(|| model.node(o.node).name.clone(), str::to_string);
                    spec(o, name)
                })
                .collect::<Result<_, _>>()?,
        };

        // Batchable: one symbol heads every input and output shape.
        let mut heads = inputs.iter().chain(outputs).map(|&o| {
            model
                .outlet_fact(o)
                .ok()
                .and_then(|f| f.shape.first().cloned())
        });
        let first = heads.next().flatten();
        let batch_symbol = match &first {
            Some(TDim::Sym(symbol)) if heads.all(|h| h == first) => Some(symbol.clone()),
            _ => None,
        };
        Ok(Analysed {
            model,
            signature,
            batch_symbol,
        })
    })
}

/// Runs `f`, turning a panic inside tract into an error made by `wrap`.
fn guard<T>(
    wrap: fn(String) -> InferenceError,
    f: impl FnOnce() -> Result<T, InferenceError>,
) -> Result<T, InferenceError> {
    // The closures only read shared state (the plan) or own what they
    // build, so nothing is left half-updated by an unwind.
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        Err(wrap(format!("tract panicked: {what}")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::DType;

    /// Just enough of a protobuf writer to build small ONNX graphs.
    #[derive(Default)]
    struct Pb(Vec<u8>);

    impl Pb {
        fn varint(&mut self, mut v: u64) {
            loop {
                let byte = (v & 0x7f) as u8;
                v >>= 7;
                if v == 0 {
                    self.0.push(byte);
                    return;
                }
                self.0.push(byte | 0x80);
            }
        }

        fn int(mut self, field: u64, v: i64) -> Self {
            self.varint(field << 3);
            self.varint(v as u64);
            self
        }

        fn bytes(mut self, field: u64, b: &[u8]) -> Self {
            self.varint((field << 3) | 2);
            self.varint(b.len() as u64);
            self.0.extend_from_slice(b);
            self
        }

        fn str(self, field: u64, s: &str) -> Self {
            self.bytes(field, s.as_bytes())
        }

        fn msg(self, field: u64, m: Pb) -> Self {
            self.bytes(field, &m.0)
        }
    }

    // ONNX `TensorProto.DataType` values.
    const FLOAT: i64 = 1;
    const INT8: i64 = 3;
    const BOOL: i64 = 9;

    /// A `ValueInfoProto`; a `None` dimension is left unnamed, as skl2onnx does.
    fn tensor_info(name: &str, elem: i64, dims: &[Option<i64>]) -> Pb {
        let shape = dims.iter().fold(Pb::default(), |shape, d| {
            let dim = d.map_or_else(Pb::default, |v| Pb::default().int(1, v));
            shape.msg(1, dim)
        });
        let tensor = Pb::default().int(1, elem).msg(2, shape);
        Pb::default()
            .str(1, name)
            .msg(2, Pb::default().msg(1, tensor))
    }

    fn node(op: &str, inputs: &[&str], outputs: &[&str], attributes: Vec<Pb>) -> Pb {
        let n = inputs.iter().fold(Pb::default(), |n, i| n.str(1, i));
        let n = outputs.iter().fold(n, |n, o| n.str(2, o));
        let n = n.str(3, outputs[0]).str(4, op);
        attributes.into_iter().fold(n, |n, a| n.msg(5, a))
    }

    fn onnx(opset: i64, nodes: Vec<Pb>, inputs: Vec<Pb>, outputs: Vec<Pb>) -> Vec<u8> {
        let g = nodes.into_iter().fold(Pb::default(), |g, n| g.msg(1, n));
        let g = inputs
            .into_iter()
            .fold(g.str(2, "test"), |g, i| g.msg(11, i));
        let g = outputs.into_iter().fold(g, |g, o| g.msg(12, o));
        Pb::default()
            .int(1, 8)
            .msg(8, Pb::default().int(2, opset))
            .msg(7, g)
            .0
    }

    /// `y = x` for `x: float32 [1, 4]`: its batch dimension is fixed.
    fn unbatched() -> Model {
        let io = |n| tensor_info(n, FLOAT, &[Some(1), Some(4)]);
        Model::load(&onnx(
            17,
            vec![node("Identity", &["x"], &["y"], vec![])],
            vec![io("x")],
            vec![io("y")],
        ))
        .unwrap()
    }

    /// `sum = a + b` for two `float32 [N, 2]` inputs.
    fn pair() -> Model {
        let io = |n| tensor_info(n, FLOAT, &[None, Some(2)]);
        Model::load(&onnx(
            17,
            vec![node("Add", &["a", "b"], &["sum"], vec![])],
            vec![io("a"), io("b")],
            vec![io("sum")],
        ))
        .unwrap()
    }

    /// The column sums of `x: float32 [N, 3]`: the output has no batch
    /// dimension, so requests must not be stacked.
    fn column_sum() -> Model {
        let axes = Pb::default().str(1, "axes").int(8, 0).int(20, 7 /* INTS */);
        let keepdims = Pb::default()
            .str(1, "keepdims")
            .int(3, 0)
            .int(20, 2 /* INT */);
        Model::load(&onnx(
            11,
            vec![node("ReduceSum", &["x"], &["s"], vec![axes, keepdims])],
            vec![tensor_info("x", FLOAT, &[None, Some(3)])],
            vec![tensor_info("s", FLOAT, &[Some(3)])],
        ))
        .unwrap()
    }

    fn f32s(t: &Value) -> (Vec<usize>, Vec<f32>) {
        let Value::Tensor(t) = t else {
            panic!("not a tensor: {t}")
        };
        assert_eq!(t.dtype, DType::F32);
        let values = t
            .data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        (t.shape.clone(), values)
    }

    fn floats(rows: &[&[f64]]) -> Value {
        Value::List(
            rows.iter()
                .map(|r| Value::List(r.iter().map(|&v| Value::Float(v)).collect()))
                .collect(),
        )
    }

    fn map(entries: &[(&str, Value)]) -> Value {
        Value::Map(
            entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    }

    #[test]
    fn models_are_shared_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Model>();
    }

    #[test]
    fn a_fixed_batch_dimension_is_unbatched_and_a_flat_list_is_its_row() {
        let model = unbatched();
        assert!(!model.batchable());
        assert_eq!(model.signature().inputs[0].shape, vec![Some(1), Some(4)]);
        let out = model.infer(&floats(&[&[1.0, 2.0, 3.0, 4.0]])).unwrap();
        assert_eq!(f32s(&out.get("y").unwrap().clone()).1, [1.0, 2.0, 3.0, 4.0]);
        let flat = Value::List((1..=4).map(Value::Int).collect());
        let out = model.infer(&map(&[("x", flat)])).unwrap();
        assert_eq!(
            f32s(out.get("y").unwrap()),
            (vec![1, 4], vec![1.0, 2.0, 3.0, 4.0])
        );

        let two = map(&[("x", floats(&[&[0.0; 4], &[0.0; 4]]))]);
        assert_eq!(
            model.infer(&two).unwrap_err().to_string(),
            "input `x`: expected float32 [1, 4], got float32 [2, 4]"
        );
        let answers = model.infer_batch(vec![floats(&[&[1.0; 4]]), two, floats(&[&[3.0; 4]])]);
        assert_eq!(
            f32s(answers[0].as_ref().unwrap().get("y").unwrap()).1,
            [1.0; 4]
        );
        assert_eq!(answers[1].as_ref().unwrap_err().class, "input");
        assert_eq!(
            f32s(answers[2].as_ref().unwrap().get("y").unwrap()).1,
            [3.0; 4]
        );
    }

    #[test]
    fn multi_input_requests_are_checked_and_stacked_together() {
        let model = pair();
        assert!(model.batchable());
        let answers = model.infer_batch(vec![
            map(&[
                ("a", floats(&[&[1.0, 2.0]])),
                ("b", floats(&[&[10.0, 20.0]])),
            ]),
            map(&[
                ("a", floats(&[&[1.0, 1.0], &[2.0, 2.0]])),
                ("b", floats(&[&[0.5, 0.5], &[0.25, 0.25]])),
            ]),
            map(&[("a", floats(&[&[1.0, 1.0]]))]),
            map(&[("a", floats(&[&[3.0, 4.0]])), ("b", floats(&[&[5.0, 6.0]]))]),
        ]);
        let sum = |ix: usize| f32s(answers[ix].as_ref().unwrap().get("sum").unwrap());
        assert_eq!(sum(0), (vec![1, 2], vec![11.0, 22.0]));
        assert_eq!(sum(1), (vec![2, 2], vec![1.5, 1.5, 2.25, 2.25]));
        let missing = answers[2].as_ref().unwrap_err();
        assert_eq!(
            missing.message,
            "missing input `b`; the model takes `a`: float32 [N, 2], `b`: float32 [N, 2]"
        );
        assert_eq!(sum(3), (vec![1, 2], vec![8.0, 10.0]));

        let uneven = map(&[
            ("a", floats(&[&[1.0, 1.0], &[2.0, 2.0]])),
            ("b", floats(&[&[1.0, 1.0]])),
        ]);
        let e = model.infer(&uneven).unwrap_err();
        assert_eq!(
            e.to_string(),
            "inputs disagree on the batch size: `a` has 2 rows, `b` has 1"
        );
        assert_eq!(e.class(), "input");

        let e = model.infer(&floats(&[&[1.0, 1.0]])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "expected a map of inputs (`a`: float32 [N, 2], `b`: float32 [N, 2]), got list"
        );
    }

    #[test]
    fn plans_per_batch_size_are_capped_and_agree_with_the_symbolic_one() {
        let model = pair();
        for rows in 1..=CONCRETE_PLANS + 4 {
            let a: Vec<f64> = (0..rows * 2).map(|i| i as f64).collect();
            let b: Vec<f64> = (0..rows * 2).map(|i| 0.5 * i as f64).collect();
            let a: Vec<&[f64]> = a.chunks(2).collect();
            let b: Vec<&[f64]> = b.chunks(2).collect();
            let out = model
                .infer(&map(&[("a", floats(&a)), ("b", floats(&b))]))
                .unwrap();
            let want: Vec<f32> = (0..rows * 2).map(|i| 1.5 * i as f32).collect();
            assert_eq!(f32s(out.get("sum").unwrap()), (vec![rows, 2], want));
        }
        let batch = model.inner.batch.as_ref().unwrap();
        let plans = batch.plans.read().unwrap();
        assert_eq!(plans.len(), CONCRETE_PLANS);
        assert!((1..=CONCRETE_PLANS).all(|rows| plans.contains_key(&rows)));
    }

    #[test]
    fn an_output_without_the_batch_dimension_is_not_stacked() {
        let model = column_sum();
        assert!(!model.batchable());
        assert_eq!(model.signature().outputs[0].shape, vec![Some(3)]);
        let answers = model.infer_batch(vec![
            floats(&[&[1.0, 2.0, 3.0]]),
            floats(&[&[1.0, 1.0, 1.0], &[4.0, 5.0, 6.0]]),
        ]);
        let s = |ix: usize| f32s(answers[ix].as_ref().unwrap().get("s").unwrap()).1;
        assert_eq!(s(0), [1.0, 2.0, 3.0]);
        assert_eq!(s(1), [5.0, 6.0, 7.0]);
    }

    #[test]
    fn bool_tensors_go_in_and_come_out() {
        let io = |n| tensor_info(n, BOOL, &[None]);
        let model = Model::load(&onnx(
            17,
            vec![node("Not", &["x"], &["y"], vec![])],
            vec![io("x")],
            vec![io("y")],
        ))
        .unwrap();
        let out = model
            .infer(&Value::List(vec![Value::Bool(true), Value::Bool(false)]))
            .unwrap();
        let Some(Value::Tensor(y)) = out.get("y") else {
            panic!("{out}")
        };
        assert_eq!(
            (y.dtype, &y.shape, &y.data),
            (DType::Bool, &vec![2], &vec![0, 1])
        );
    }

    #[test]
    fn element_types_symphony_lacks_are_unsupported() {
        let io = |n| tensor_info(n, INT8, &[None]);
        let bytes = onnx(
            17,
            vec![node("Identity", &["x"], &["y"], vec![])],
            vec![io("x")],
            vec![io("y")],
        );
        let e = read_signature(&bytes).unwrap_err();
        assert!(matches!(e, InferenceError::Unsupported(_)), "{e:?}");
        assert!(e.to_string().contains("`x` has I8 elements"), "{e}");
        assert_eq!(e.into_task_error().class, "model");
    }

    #[test]
    fn values_that_are_not_tensors_or_numbers_are_refused() {
        let model = pair();
        let e = model
            .infer(&map(&[("a", Value::from("x")), ("b", Value::Null)]))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "input `a`: expected float32 [N, 2] as a tensor or a list of numbers, got string"
        );
    }
}
