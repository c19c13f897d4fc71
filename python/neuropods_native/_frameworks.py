"""Tells the core where frameworks installed elsewhere on ``sys.path`` are.

The core finds a framework already loaded in the process (torch imported),
and backend libraries find one installed beside the wheel (their rpath
points at ``site-packages/torch/lib``). A framework in another ``sys.path``
entry (``pip install --target``, a user site, ``PYTHONPATH``) is found by
neither: this module locates it the way ``import`` would, without importing
it, and sets the variable the core reads for it. Worker processes inherit
the variable. A variable the user set is left alone.
"""

import importlib.util
import os

# The variable the core reads -> (the framework's top-level package, the
# folder of its shared libraries inside that package).
_FRAMEWORK_DIRS = {
    "NEUROPODS_LIBTORCH_DIR": ("torch", "lib"),
    "NEUROPODS_TENSORFLOW_DIR": ("tensorflow", ""),
    "NEUROPODS_ONNXRUNTIME_DIR": ("onnxruntime", "capi"),
}


def point_core_at_frameworks() -> None:
    """Sets ``NEUROPODS_*_DIR`` for each framework that is importable from
    somewhere other than this package's own site-packages folder."""
    own_site = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    for variable, (package, lib) in _FRAMEWORK_DIRS.items():
        if variable in os.environ:
            continue
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            continue
        if spec is None or spec.origin is None:
            continue
        package_dir = os.path.dirname(os.path.realpath(spec.origin))
        if os.path.dirname(package_dir) == own_site:
            continue
        lib_dir = os.path.join(package_dir, lib) if lib else package_dir
        if os.path.isdir(lib_dir):
            os.environ[variable] = lib_dir
