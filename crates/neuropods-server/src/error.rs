//! What a request can fail with, and how each protocol reports it. Core
//! errors are sorted once here: the caller's fault (400/INVALID_ARGUMENT),
//! an unknown model (404/NOT_FOUND), or the model's or server's (500/INTERNAL).

use neuropods_core::spec::Direction;
use neuropods_core::{Error, ErrorKind};

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

impl FailureKind {
    /// Who is at fault for an error of each kind of the core's one table,
    /// when it comes from reading a request's tensors or running a model
    /// (a spec error on an output is the model's: see
    /// [`RequestError::from_core`]).
    fn of(kind: ErrorKind) -> FailureKind {
        match kind {
            ErrorKind::UnknownTensor
            | ErrorKind::DTypeMismatch
            | ErrorKind::ShapeMismatch
            | ErrorKind::InvalidInput => FailureKind::BadRequest,
            // The served model's package, backend or framework, the worker
            // running it, or the server itself.
            ErrorKind::PackageNotFound
            | ErrorKind::InvalidConfig
            | ErrorKind::InvalidPackage
            | ErrorKind::InvalidOption
            | ErrorKind::BackendNotFound
            | ErrorKind::FrameworkNotFound
            | ErrorKind::FrameworkVersion
            | ErrorKind::RequirementsNotMet
            | ErrorKind::Backend
            | ErrorKind::UnsafeAfterFork
            | ErrorKind::Serialization
            | ErrorKind::Io
            | ErrorKind::Interrupted
            | ErrorKind::Exit
            | ErrorKind::OutOfMemory
            | ErrorKind::Worker
            | ErrorKind::Internal => FailureKind::Internal,
        }
    }
}

/// A failed request, with a message that names the culprit.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    /// Who is at fault.
    pub kind: FailureKind,
    /// What went wrong, as the client is told.
    pub message: String,
    /// What only the server's log shows (a model's traceback), if any.
    pub detail: Option<String>,
}

/// Longest message sent back: names and values a client sent are echoed
/// in messages, and a gRPC status travels in a header that clients cap.
const MAX_MESSAGE: usize = 2000;

fn capped(message: impl Into<String>) -> String {
    neuropods_core::shortened(&message.into(), MAX_MESSAGE)
}

impl RequestError {
    /// A failure of `kind` with nothing for the log beyond its message.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        RequestError {
            kind,
            message: capped(message),
            detail: None,
        }
    }

    /// The caller's fault.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(FailureKind::BadRequest, message)
    }

    /// No such model (or version).
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(FailureKind::NotFound, message)
    }

    /// The server's or the model's fault.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(FailureKind::Internal, message)
    }

    /// A core error from loading inputs into tensors or running a model:
    /// tensors that do not fit the spec are the caller's fault, the rest
    /// (backend, worker, out of memory, bugs) the server's. The client is
    /// told the message; the detail (a traceback) is kept for the log.
    pub fn from_core(model: &str, error: Error) -> Self {
        let output_broke_spec =
            matches!(&error, Error::Spec(spec) if spec.direction() == Direction::Output);
        let (kind, message) = if output_broke_spec {
            (
                FailureKind::Internal,
                format!("model '{model}' broke its own spec: {error}"),
            )
        } else {
            (
                FailureKind::of(error.kind()),
                format!("model '{model}': {error}"),
            )
        };
        RequestError {
            kind,
            message: capped(message),
            detail: error.detail().map(str::to_string),
        }
    }

    /// The message and, for a log, the detail below it.
    pub fn for_log(&self) -> String {
        match &self.detail {
            Some(detail) => format!("{}\n{detail}", self.message),
            None => self.message.clone(),
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
