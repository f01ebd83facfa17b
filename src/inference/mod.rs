//! In-process model inference: ONNX models run with tract.
//!
//! A model's [`Signature`] names its input and output tensors with their
//! element types and shapes; a `None` dimension is free (usually the batch
//! dimension). The registry records the signature read from the artifact
//! when a version is registered ([`read_signature`]); the executor loads the
//! artifact once ([`Model::load`]) and checks every request against the
//! signature before running the model ([`Model::infer`],
//! [`Model::infer_batch`]).
//!
//! This module owns the ONNX runtime (only it imports `tract_onnx`), the
//! conversions between [`crate::value::Tensor`] and tract tensors, and the
//! rules that turn a request [`Value`](crate::value::Value) into model inputs.
//! It does not fetch artifacts, cache models or decide batch sizes: the
//! registry and the executor do.
//!
//! # Requests
//!
//! A request is a map from input name to value; a model with one input also
//! takes the value alone. An input value is either
//!
//! - a [`Tensor`](crate::value::Tensor), whose element type must be the
//!   input's exactly (no casts), or
//! - a nested list of numbers or bools (what JSON gives): the nesting is the
//!   shape and must be rectangular, and the items are converted to the
//!   input's element type (an integer fits any numeric type it is in range
//!   of; a float fits a float type, or an integer type when it has no
//!   fraction; bools fit only `bool`). A list one level shallower than the
//!   input whose first dimension is free (or 1) is one row: for an input
//!   `float32 [N, 4]`, `[5.1, 3.5, 1.4, 0.2]` means `[[5.1, 3.5, 1.4, 0.2]]`.
//!
//! The response maps every output name to a tensor.
//!
//! # Batching
//!
//! A model is *batchable* when every input and every output has the same
//! free first dimension (the batch dimension). [`Model::infer_batch`] then
//! stacks the rows of many requests along it, runs the model once and
//! splits the outputs back. A model whose first dimension is fixed (usually
//! at 1) is unbatched: requests run one at a time.

mod convert;
mod error;
mod model;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::value::DType;

pub use error::InferenceError;
pub use model::{Model, read_signature};

/// One named tensor a model takes or gives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, bincode::Encode, bincode::Decode)]
pub struct TensorSpec {
    /// The tensor's name in the model graph.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Dimensions, outermost first; `None` is a free dimension.
    pub shape: Vec<Option<usize>>,
}

/// What a model takes and gives.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, bincode::Encode, bincode::Decode,
)]
pub struct Signature {
    /// Inputs, in the model's order.
    pub inputs: Vec<TensorSpec>,
    /// Outputs, in the model's order.
    pub outputs: Vec<TensorSpec>,
}

impl TensorSpec {
    /// The element type and shape as users read them: `float32 [N, 4]`.
    ///
    /// A free first dimension shows as `N`, any other free one as `?`.
    pub fn describe(&self) -> String {
        let dims: Vec<String> = self
            .shape
            .iter()
            .enumerate()
            .map(|(axis, d)| match (axis, d) {
                (_, Some(n)) => n.to_string(),
                (0, None) => "N".to_string(),
                (_, None) => "?".to_string(),
            })
            .collect();
        format!("{} [{}]", dtype_name(self.dtype), dims.join(", "))
    }
}

impl fmt::Display for TensorSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.name, self.describe())
    }
}

impl Signature {
    /// The input called `name`.
    pub fn input(&self, name: &str) -> Option<&TensorSpec> {
        self.inputs.iter().find(|s| s.name == name)
    }

    /// The output called `name`.
    pub fn output(&self, name: &str) -> Option<&TensorSpec> {
        self.outputs.iter().find(|s| s.name == name)
    }
}

impl fmt::Display for Signature {
    /// `(`float_input`: float32 [N, 4]) -> (`label`: int64 [N], …)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |specs: &[TensorSpec]| {
            specs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        write!(f, "({}) -> ({})", list(&self.inputs), list(&self.outputs))
    }
}

/// The ONNX name of an element type (`float32`, `int64`, …), as messages
/// show it.
pub fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "float32",
        DType::F64 => "float64",
        DType::I32 => "int32",
        DType::I64 => "int64",
        DType::U8 => "uint8",
        DType::Bool => "bool",
    }
}

/// A tensor's element type and shape as users read them: `float32 [1, 5]`.
fn describe_tensor(dtype: DType, shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(ToString::to_string).collect();
    format!("{} [{}]", dtype_name(dtype), dims.join(", "))
}
