"""The Python half of the python backend: importing a package's code under a
private name, checking its requirements, and calling the model.

Executed by the backend as a private module (it is not importable as
``neuropods``: a Rust program's interpreter may not have Neuropods
installed).
"""

import importlib
import importlib.machinery
import importlib.metadata
import itertools
import os
import re
import sys
import types

_ids = itertools.count()


def _normalize(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_requirements(text):
    """[(line, name, version or None)] of ``name==version`` / ``name`` lines;
    raises ValueError naming the first other line."""
    parsed = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:==\s*([^\s=<>!~;,]+))?", line)
        if match is None:
            raise ValueError(
                f"requirements line {number} {raw.strip()!r}: expected 'name==version' or 'name'"
            )
        parsed.append((line, match.group(1), match.group(2)))
    return parsed


def unmet_requirements(text):
    """The requirements the running environment does not satisfy, each with
    what is installed instead."""
    unmet = []
    for line, name, version in parse_requirements(text):
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            unmet.append(f"{line} (not installed)")
            continue
        if version is not None and installed != version:
            unmet.append(f"{line} (installed: {installed})")
    return unmet


def load(model_name, code_dir, data_dir, entrypoint_package, entrypoint):
    """Imports ``entrypoint_package`` from ``code_dir`` under a fresh private
    top-level name and returns (prefix, entrypoint(data_dir))."""
    safe_name = re.sub(r"\W", "_", model_name)
    prefix = f"_neuropod_{next(_ids)}_{safe_name}"
    root = types.ModuleType(prefix)
    root.__path__ = [code_dir]
    root.__package__ = prefix
    root.__spec__ = importlib.machinery.ModuleSpec(prefix, None, is_package=True)
    root.__spec__.submodule_search_locations = [code_dir]
    sys.modules[prefix] = root
    try:
        module = importlib.import_module(f"{prefix}.{entrypoint_package}")
        factory = getattr(module, entrypoint, None)
        if factory is None:
            raise AttributeError(f"module '{entrypoint_package}' has no entrypoint '{entrypoint}'")
        model = factory(data_dir)
        if not callable(model):
            raise TypeError(
                f"{entrypoint_package}.{entrypoint}(data_root) returned {type(model).__name__}, "
                "which is not callable"
            )
        return prefix, model
    except BaseException:
        unload(prefix)
        raise


def unload(prefix):
    """Forgets the modules imported for one package, and the importers cached
    for its code folders (each zip load extracts to a new folder, so they
    would pile up in ``sys.path_importer_cache``)."""
    root = sys.modules.get(prefix)
    folders = [f for f in getattr(root, "__path__", []) if isinstance(f, str)]
    for name in [n for n in sys.modules if n == prefix or n.startswith(prefix + ".")]:
        del sys.modules[name]
    for path in list(sys.path_importer_cache):
        if isinstance(path, str) and any(path == f or path.startswith(f + os.sep) for f in folders):
            del sys.path_importer_cache[path]


def _as_array(name, value):
    import numpy as np

    # torch tensors (and anything else with .detach/.cpu/.numpy) convert
    # without importing torch here.
    if hasattr(value, "detach") and hasattr(value, "numpy"):
        value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray):
        if isinstance(value, (int, float, bool, str, bytes, list, tuple, np.generic)):
            value = np.asarray(value)
        else:
            raise TypeError(f"output '{name}' is {type(value).__name__}, expected a numpy array")
    return value


def call(model, inputs):
    """Calls the model with the inputs as keyword arguments; returns its
    outputs as a dict of numpy arrays."""
    outputs = model(**inputs)
    if not isinstance(outputs, dict):
        raise TypeError(f"the model returned {type(outputs).__name__}, expected a dict of arrays")
    result = {}
    for name, value in outputs.items():
        if not isinstance(name, str):
            raise TypeError(f"the model returned an output named {name!r}, expected str names")
        result[name] = _as_array(name, value)
    return result
