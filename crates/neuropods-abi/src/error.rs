//! The one error type of the core. Each variant names the culprit (a tensor,
//! a config field, a path) and, where it helps, what was expected and found.

use std::path::PathBuf;

use crate::spec::SpecError;

/// At most `max_chars` characters of `text`, then "..." if it was longer:
/// for names and values that untrusted input (a blob, a request) puts into
/// messages, so that it cannot make a huge one.
pub fn shortened(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}...", text.get(..cut).unwrap_or_default()),
        None => text.to_string(),
    }
}

/// Result with the core's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in Neuropods.
///
/// Not `#[non_exhaustive]`: the mappings of errors (the wire, the ABI) match
/// every variant, so that a new one fails to compile until each says what
/// it is.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The package path does not exist.
    #[error("neuropod package not found: {}", path.display())]
    PackageNotFound {
        /// The path that was asked for.
        path: PathBuf,
    },
    /// A config file is not valid JSON or a field in it is wrong.
    #[error("invalid config {file}: {field}: {reason}")]
    InvalidConfig {
        /// Which file (`config.json`, `0/config.json`).
        file: String,
        /// JSON path of the offending field, e.g. `input_spec[1].dtype`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The package is malformed or unsafe (bad zip entry, hash mismatch...).
    #[error("invalid neuropod package {}: {reason}", path.display())]
    InvalidPackage {
        /// The package.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A tensor does not match the model's spec.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A tensor or argument given to the API is malformed (not a spec issue).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A load option has a value it cannot take.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// The backend library for a platform was not found next to Neuropods.
    #[error("no backend library for platform `{platform}`: looked for {library} in {searched}")]
    BackendNotFound {
        /// Platform of the model.
        platform: String,
        /// File name of the backend library.
        library: String,
        /// Directories searched, joined for display.
        searched: String,
    },
    /// The framework a backend needs is not installed or cannot be loaded.
    #[error("platform `{platform}` needs {framework}: {hint} ({detail})")]
    FrameworkNotFound {
        /// Platform of the model.
        platform: String,
        /// The framework that is missing.
        framework: String,
        /// What to install.
        hint: String,
        /// The loader's own message.
        detail: String,
    },
    /// The framework found is not a version this backend or this model
    /// supports (libtorch other than the one the backend was built with,
    /// TensorFlow outside the backend's range, or outside the model's
    /// `platform_version_semver`).
    #[error("platform `{platform}`: {detail}")]
    FrameworkVersion {
        /// Platform of the model.
        platform: String,
        /// Both versions, and what to install.
        detail: String,
    },
    /// A python model's requirements are not installed in the interpreter
    /// running it (nothing is installed at load time).
    #[error("the model's requirements are not met by this Python environment: {0}")]
    RequirementsNotMet(String),
    /// The framework failed while loading or running the model.
    #[error("{platform} backend: {message}")]
    Backend {
        /// Platform of the model.
        platform: String,
        /// The framework's message, safe to show a client (the exception's
        /// own line, not its stack).
        message: String,
        /// What only a log should show: the model's traceback, the
        /// interpreter's stack with the packager's paths. Empty if none.
        detail: String,
    },
    /// A model cannot run in this process: it is a fork of the process that
    /// started the framework's thread pools, whose threads a fork does not
    /// copy (the call would wait for them forever).
    #[error(
        "{platform} model cannot run in process {pid}: it was forked from process {pools_pid}, \
         where {platform}'s thread pools were started, and those threads do not exist in a fork. \
         Load models after fork (e.g. in gunicorn's post_fork hook, not with --preload){safe_setting}"
    )]
    UnsafeAfterFork {
        /// Platform of the model.
        platform: String,
        /// This process.
        pid: u32,
        /// The ancestor that started the thread pools.
        pools_pid: u32,
        /// A setting under which the platform does run after fork, if any.
        safe_setting: String,
    },
    /// Bytes given to `deserialize` are not a valid serialized tensor.
    #[error("cannot deserialize: {0}")]
    Serialization(String),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The call was interrupted (Ctrl-C reached a python model as
    /// `KeyboardInterrupt`); Python callers get `KeyboardInterrupt` back.
    #[error("interrupted: {0}")]
    Interrupted(String),
    /// A python model raised `SystemExit`; the message is its code or text.
    /// Python callers get `SystemExit` back, with that code.
    #[error("the model asked to exit: {0}")]
    Exit(String),
    /// Memory ran out, or a result would not fit in memory (e.g. a string
    /// tensor as fixed-width unicode): the call fails, the process lives.
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    /// A model's worker process (out-of-process execution) died, hung or
    /// could not be started; the caller lives on, and the next call starts
    /// a new worker.
    #[error("model '{model}': {detail}")]
    Worker {
        /// The model's name.
        model: String,
        /// What happened: the exit status or signal, and the last lines
        /// the worker wrote to stderr.
        detail: String,
    },
    /// A bug: a panic was caught, or an invariant broke.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The kind of an [`Error`]: the one table from which every other form of
/// an error is derived. The codes that cross the backend ABI and the
/// worker wire are these discriminants; the Python exception classes and
/// the server's HTTP and gRPC statuses are each an exhaustive `match` on
/// the kind, so a new kind fails to compile until every mapping says what
/// it is. Codes are never reused.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// [`Error::PackageNotFound`].
    PackageNotFound = 1,
    /// [`Error::InvalidConfig`].
    InvalidConfig = 2,
    /// [`Error::InvalidPackage`].
    InvalidPackage = 3,
    /// [`SpecError::UnknownTensor`].
    UnknownTensor = 4,
    /// [`SpecError::DTypeMismatch`].
    DTypeMismatch = 5,
    /// A shape that does not fit the spec: its rank, a dim, or a symbol.
    ShapeMismatch = 6,
    /// [`Error::InvalidInput`].
    InvalidInput = 7,
    /// [`Error::InvalidOption`].
    InvalidOption = 8,
    /// [`Error::BackendNotFound`].
    BackendNotFound = 9,
    /// [`Error::FrameworkNotFound`].
    FrameworkNotFound = 10,
    /// [`Error::FrameworkVersion`].
    FrameworkVersion = 11,
    /// [`Error::RequirementsNotMet`].
    RequirementsNotMet = 12,
    /// [`Error::Backend`].
    Backend = 13,
    /// [`Error::UnsafeAfterFork`].
    UnsafeAfterFork = 14,
    /// [`Error::Serialization`].
    Serialization = 15,
    /// [`Error::Io`].
    Io = 16,
    /// [`Error::Interrupted`].
    Interrupted = 17,
    /// [`Error::Exit`].
    Exit = 18,
    /// [`Error::OutOfMemory`].
    OutOfMemory = 19,
    /// [`Error::Worker`].
    Worker = 20,
    /// [`Error::Internal`].
    Internal = 21,
}

impl ErrorKind {
    /// Every kind, in code order.
    pub const ALL: [ErrorKind; 21] = [
        Self::PackageNotFound,
        Self::InvalidConfig,
        Self::InvalidPackage,
        Self::UnknownTensor,
        Self::DTypeMismatch,
        Self::ShapeMismatch,
        Self::InvalidInput,
        Self::InvalidOption,
        Self::BackendNotFound,
        Self::FrameworkNotFound,
        Self::FrameworkVersion,
        Self::RequirementsNotMet,
        Self::Backend,
        Self::UnsafeAfterFork,
        Self::Serialization,
        Self::Io,
        Self::Interrupted,
        Self::Exit,
        Self::OutOfMemory,
        Self::Worker,
        Self::Internal,
    ];

    /// The code that crosses the ABI and the wire.
    pub const fn code(self) -> u32 {
        self as u32
    }
}

/// A code no kind has (from a peer built against another table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown error kind {0}")]
pub struct UnknownErrorKind(pub u32);

impl TryFrom<u32> for ErrorKind {
    type Error = UnknownErrorKind;

    fn try_from(code: u32) -> std::result::Result<Self, UnknownErrorKind> {
        // ALL is in code order from 1, which the test below checks.
        code.checked_sub(1)
            .and_then(|i| Self::ALL.get(i as usize))
            .copied()
            .ok_or(UnknownErrorKind(code))
    }
}

impl Error {
    /// Its kind in the one table ([`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::PackageNotFound { .. } => ErrorKind::PackageNotFound,
            Error::InvalidConfig { .. } => ErrorKind::InvalidConfig,
            Error::InvalidPackage { .. } => ErrorKind::InvalidPackage,
            Error::Spec(SpecError::UnknownTensor { .. }) => ErrorKind::UnknownTensor,
            Error::Spec(SpecError::DTypeMismatch { .. }) => ErrorKind::DTypeMismatch,
            Error::Spec(
                SpecError::RankMismatch { .. }
                | SpecError::DimMismatch { .. }
                | SpecError::SymbolMismatch { .. },
            ) => ErrorKind::ShapeMismatch,
            Error::InvalidInput(_) => ErrorKind::InvalidInput,
            Error::InvalidOption(_) => ErrorKind::InvalidOption,
            Error::BackendNotFound { .. } => ErrorKind::BackendNotFound,
            Error::FrameworkNotFound { .. } => ErrorKind::FrameworkNotFound,
            Error::FrameworkVersion { .. } => ErrorKind::FrameworkVersion,
            Error::RequirementsNotMet(_) => ErrorKind::RequirementsNotMet,
            Error::Backend { .. } => ErrorKind::Backend,
            Error::UnsafeAfterFork { .. } => ErrorKind::UnsafeAfterFork,
            Error::Serialization(_) => ErrorKind::Serialization,
            Error::Io { .. } => ErrorKind::Io,
            Error::Interrupted(_) => ErrorKind::Interrupted,
            Error::Exit(_) => ErrorKind::Exit,
            Error::OutOfMemory(_) => ErrorKind::OutOfMemory,
            Error::Worker { .. } => ErrorKind::Worker,
            Error::Internal(_) => ErrorKind::Internal,
        }
    }

    /// The error of a backend whose framework failed, with `message` for
    /// a client and `detail` for a log (empty if none). The platform is
    /// left for the core to add when the error crosses the ABI.
    pub fn backend(message: impl std::fmt::Display, detail: impl Into<String>) -> Self {
        Error::Backend {
            platform: String::new(),
            message: message.to_string(),
            detail: detail.into(),
        }
    }

    /// [`Error::backend`] with no detail: the framework's failure in its
    /// own words, e.g. `.map_err(Error::framework)`.
    pub fn framework(message: impl std::fmt::Display) -> Self {
        Self::backend(message, "")
    }

    /// What only a log should show (a model's traceback), if any: the
    /// message ([`Display`](std::fmt::Display)) is what a client sees.
    pub fn detail(&self) -> Option<&str> {
        match self {
            Error::Backend { detail, .. } if !detail.is_empty() => Some(detail),
            _ => None,
        }
    }

    /// [`Error::Io`] on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// [`Error::InvalidConfig`]: `field` of `file` is wrong, for `reason`.
    pub fn config(file: &str, field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidConfig {
            file: file.to_string(),
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Turns a caught panic payload into [`Error::Internal`].
    pub fn from_panic(payload: Box<dyn std::any::Any + Send>) -> Self {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic payload".to_string());
        Error::Internal(format!("panic: {message}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_decodes_from_its_code_and_no_other_code_does() {
        for kind in ErrorKind::ALL {
            assert_eq!(ErrorKind::try_from(kind.code()), Ok(kind));
        }
        let past = ErrorKind::ALL.len() as u32 + 1;
        for code in [0, past, u32::MAX] {
            assert_eq!(ErrorKind::try_from(code), Err(UnknownErrorKind(code)));
        }
    }
}
