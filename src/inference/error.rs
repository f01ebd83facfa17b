//! What can go wrong loading or running a model.

use crate::executor::TaskError;

/// Why a model could not be loaded or a request could not be answered.
///
/// Errors about the request (the `input` class) name the input and say what
/// was expected and what came; errors about the model (the `model` class)
/// carry tract's explanation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InferenceError {
    /// The artifact is not a model tract can load: not ONNX, an operator
    /// tract lacks, shapes that do not agree.
    #[error("cannot load model: {0}")]
    Load(String),
    /// The model loads but uses something Symphony cannot feed or read: an
    /// element type outside [`DType`](crate::value::DType), an input of
    /// unknown rank.
    #[error("unsupported model: {0}")]
    Unsupported(String),
    /// The request lacks one of the model's inputs.
    #[error("missing input `{name}`; the model takes {expected}")]
    MissingInput {
        /// The input's name.
        name: String,
        /// Every input the model takes, with its type.
        expected: String,
    },
    /// The request names an input the model does not have.
    #[error("unknown input `{name}`; the model takes {expected}")]
    UnknownInput {
        /// The name in the request.
        name: String,
        /// Every input the model takes, with its type.
        expected: String,
    },
    /// An input does not fit its spec: element type, rank, a fixed
    /// dimension, data length, list contents.
    #[error("input `{name}`: {message}")]
    BadInput {
        /// The input's name.
        name: String,
        /// What was expected and what came.
        message: String,
    },
    /// The request as a whole is wrong: not a map, or its inputs disagree
    /// on the batch size.
    #[error("{0}")]
    BadRequest(String),
    /// The model failed while running.
    #[error("inference failed: {0}")]
    Run(String),
}

impl InferenceError {
    /// Whether the request is at fault (rather than the model).
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            InferenceError::MissingInput { .. }
                | InferenceError::UnknownInput { .. }
                | InferenceError::BadInput { .. }
                | InferenceError::BadRequest(_)
        )
    }

    /// The task error class: `input` for a bad request, `model` otherwise.
    pub fn class(&self) -> &'static str {
        if self.is_input_error() {
            "input"
        } else {
            "model"
        }
    }

    /// The task error this becomes; neither kind is retryable, since the
    /// same request against the same model fails the same way.
    pub fn into_task_error(self) -> TaskError {
        TaskError::fatal(self.class(), self.to_string())
    }

    pub(super) fn bad_input(name: &str, message: impl Into<String>) -> Self {
        InferenceError::BadInput {
            name: name.to_string(),
            message: message.into(),
        }
    }
}

impl From<InferenceError> for TaskError {
    fn from(e: InferenceError) -> Self {
        e.into_task_error()
    }
}
