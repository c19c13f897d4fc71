//! What a request can fail with, and how each protocol reports it. Core
//! errors are sorted once here: the caller's fault (400/INVALID_ARGUMENT),
//! an unknown model (404/NOT_FOUND), or the model's or server's (500/INTERNAL).

use neuropods_core::spec::Direction;
use neuropods_core::Error;

/// Which side is at fault, as the protocols tell it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// Malformed or wrong request: bad JSON or framing, unknown tensor,
    /// wrong dtype or shape.
    BadRequest,
    /// No such model or version.
    NotFound,
    /// The request body is over the server's limit.
    TooLarge,
    /// The request body did not arrive in time.
    Timeout,
    /// The model failed, or the server is shutting down.
    Internal,
}

/// A failed request, with a message that names the culprit.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    /// Who is at fault.
    pub kind: FailureKind,
    /// What went wrong.
    pub message: String,
}

/// Longest message sent back: names and values a client sent are echoed
/// in messages, and a gRPC status travels in a header that clients cap.
const MAX_MESSAGE: usize = 2000;

fn capped(message: impl Into<String>) -> String {
    neuropods_core::shortened(&message.into(), MAX_MESSAGE)
}

impl RequestError {
    /// The caller's fault.
    pub fn bad_request(message: impl Into<String>) -> Self {
        RequestError {
            kind: FailureKind::BadRequest,
            message: capped(message),
        }
    }

    /// No such model (or version).
    pub fn not_found(message: impl Into<String>) -> Self {
        RequestError {
            kind: FailureKind::NotFound,
            message: capped(message),
        }
    }

    /// The server's or the model's fault.
    pub fn internal(message: impl Into<String>) -> Self {
        RequestError {
            kind: FailureKind::Internal,
            message: capped(message),
        }
    }

    /// A core error from loading inputs into tensors or running a model:
    /// tensors that do not fit the spec are the caller's fault, the rest
    /// (backend, worker, out of memory, bugs) the server's.
    pub fn from_core(model: &str, error: Error) -> Self {
        match error {
            Error::Spec(ref spec) if spec.direction() == Direction::Output => {
                RequestError::internal(format!("model '{model}' broke its own spec: {error}"))
            }
            Error::Spec(_) | Error::InvalidInput(_) => {
                RequestError::bad_request(format!("model '{model}': {error}"))
            }
            other => RequestError::internal(format!("model '{model}': {other}")),
        }
    }

    /// The HTTP status for this failure.
    pub fn http_status(&self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        match self.kind {
            FailureKind::BadRequest => StatusCode::BAD_REQUEST,
            FailureKind::NotFound => StatusCode::NOT_FOUND,
            FailureKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            FailureKind::Timeout => StatusCode::REQUEST_TIMEOUT,
            FailureKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The gRPC status for this failure.
    pub fn grpc_status(&self) -> tonic::Status {
        let code = match self.kind {
            FailureKind::BadRequest => tonic::Code::InvalidArgument,
            FailureKind::NotFound => tonic::Code::NotFound,
            FailureKind::TooLarge => tonic::Code::ResourceExhausted,
            FailureKind::Timeout => tonic::Code::DeadlineExceeded,
            FailureKind::Internal => tonic::Code::Internal,
        };
        tonic::Status::new(code, self.message.clone())
    }

    /// The label this failure is counted under in the metrics.
    pub fn metric_label(&self) -> &'static str {
        match self.kind {
            FailureKind::BadRequest
            | FailureKind::NotFound
            | FailureKind::TooLarge
            | FailureKind::Timeout => "client",
            FailureKind::Internal => "server",
        }
    }
}
