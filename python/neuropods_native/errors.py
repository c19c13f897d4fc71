"""Exceptions raised by Neuropods. Every one is a ``NeuropodError``, and
also the builtin that fits, so ``except ValueError`` keeps working."""

__all__ = [
    "NeuropodError",
    "PackageNotFoundError",
    "ConfigError",
    "PackageError",
    "SpecError",
    "UnknownTensorError",
    "DTypeError",
    "ShapeError",
    "InvalidInputError",
    "InputTypeError",
    "InvalidOptionError",
    "SerializationError",
    "BackendNotFoundError",
    "FrameworkNotFoundError",
    "FrameworkVersionError",
    "RequirementsError",
    "BackendError",
    "ModelClosedError",
    "UnsafeAfterForkError",
    "WorkerError",
    "NeuropodIOError",
    "OutOfMemoryError",
    "InternalError",
]


class NeuropodError(Exception):
    """Base class of every Neuropods error.

    ``str(error)`` is the message, safe to show a client. ``detail`` is
    what only a log should show, or None: a python model's traceback, the
    TorchScript interpreter's stack with the packager's paths. It is also
    added as a note, so an uncaught error prints it below the message."""

    detail: "str | None" = None


class PackageNotFoundError(NeuropodError, FileNotFoundError):
    """The package path does not exist."""


class ConfigError(NeuropodError, ValueError):
    """config.json is invalid; the message names the field."""


class PackageError(NeuropodError, ValueError):
    """The package is malformed or unsafe (zip entries, manifest, model file)."""


class SpecError(NeuropodError, ValueError):
    """A tensor does not match the model's spec; the message names it."""


class UnknownTensorError(SpecError):
    """A tensor name that is not in the spec."""


class DTypeError(SpecError):
    """A tensor of the wrong dtype."""


class ShapeError(SpecError):
    """A tensor of the wrong rank or size, or a symbol bound twice."""


class InvalidInputError(NeuropodError, ValueError):
    """A tensor the backend cannot take (e.g. an unsupported dtype)."""


class InputTypeError(NeuropodError, TypeError):
    """An argument of the wrong Python type (not a dict, not an array...)."""


class InvalidOptionError(NeuropodError, ValueError):
    """An unknown or invalid load option."""


class SerializationError(NeuropodError, ValueError):
    """Bytes that are not a valid serialized tensor."""


class BackendNotFoundError(NeuropodError, ImportError):
    """The backend library for a platform is not installed."""


class FrameworkNotFoundError(BackendNotFoundError):
    """The framework a backend needs (e.g. torch) is missing."""


class FrameworkVersionError(FrameworkNotFoundError):
    """The framework installed is not a version the backend was built for or
    the model's ``platform_version_semver`` allows; the message names both
    versions and what to install."""


class RequirementsError(NeuropodError, ImportError):
    """A python model's requirements are missing or at other versions in the
    running environment; the message lists each. Nothing is installed."""


class BackendError(NeuropodError, RuntimeError):
    """The framework failed while loading or running the model."""


class ModelClosedError(NeuropodError, RuntimeError):
    """The model was closed."""


class UnsafeAfterForkError(NeuropodError, RuntimeError):
    """A model whose framework's thread pools do not survive ``fork`` was
    called (or loaded) in a forked process, where it would hang. The message
    names the platform, this process, the one that started the pools, and
    the safe pattern (load after fork)."""


class NeuropodIOError(NeuropodError, OSError):
    """A file could not be read or written."""


class OutOfMemoryError(NeuropodError, MemoryError):
    """Memory ran out, or a result would not fit in memory (e.g. strings as
    fixed-width unicode on numpy < 2). Also a ``MemoryError``, so handlers
    of running out of memory catch it."""


class InternalError(NeuropodError, RuntimeError):
    """A bug in Neuropods (a caught panic)."""


class WorkerError(NeuropodError):
    """The worker process of a model run out of process (``use_ope=True``)
    died, hung or could not start. The message names the exit status or
    signal and the last lines the worker wrote to stderr. The caller is
    unharmed: the next ``infer`` starts a new worker and loads the model
    again."""
