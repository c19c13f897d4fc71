"""Native bindings of Neuropods: the Rust core, from Python.

``Neuropod(path, visible_gpu=None, *, intra_op_threads=None, ...)`` loads a
package and runs it;
``serialize``/``deserialize`` read and write the core's tensor format;
``inspect(path)`` describes a package without loading its model;
``serve(paths, ...)`` serves packages over the Open Inference Protocol
until SIGINT/SIGTERM (``neuropods serve``), with ``serve_defaults()`` for
every option not given.
"""

from . import _frameworks, errors
from ._native import (
    Neuropod,
    __version__,
    check_config,
    check_requirements,
    deserialize,
    inspect,
    serialize,
    serve,
    serve_defaults,
    write_manifest,
)
from .errors import *  # noqa: F401,F403  (exception classes are part of the API)

# Before any model is loaded: frameworks installed in another sys.path entry
# than this package are found through the environment.
_frameworks.point_core_at_frameworks()

__all__ = [
    "Neuropod",
    "serialize",
    "deserialize",
    "check_config",
    "check_requirements",
    "write_manifest",
    "inspect",
    "serve",
    "serve_defaults",
    "__version__",
    *errors.__all__,
]
