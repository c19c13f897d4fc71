"""The Python half of the python backend: importing a package's code under a
private name, checking its requirements, and calling the model.

Executed by the backend as a private module (it is not importable as
``neuropods``: a Rust program's interpreter may not have Neuropods
installed).
"""

import importlib
import importlib.machinery
import importlib.metadata
import inspect
import itertools
import os
import re
import sys
import types

_ids = itertools.count()


# A comment starts at '#' at the line start or after whitespace (pip's
# rule), so a URL's fragment (`name @ https://...#sha256=...`) is kept.
_COMMENT = re.compile(r"(^|\s)#.*$")


def _packaging():
    """The ``requirements`` and ``version`` modules of ``packaging`` in this
    interpreter, else of pip's vendored copy: the interpreter running a
    model may be an embedded one with a minimal environment."""
    for base in ("packaging", "pip._vendor.packaging"):
        try:
            requirements = importlib.import_module(base + ".requirements")
            version = importlib.import_module(base + ".version")
        except ImportError:
            continue
        return requirements, version
    raise ImportError(
        f"packaging (not installed in {sys.executable}, which runs the model; checking "
        "0/requirements.lock needs it, or pip, which vendors it: pip install packaging)"
    )


class RequirementLineError(ValueError):
    """A line of requirements text that is not a PEP 508 requirement; args are
    (field, reason), e.g. ("line 2", "'numpy>=>1': expected ...")."""

    def __str__(self):
        return ": ".join(self.args)


def parse_requirements(text):
    """[(line, Requirement)] of the PEP 508 lines of pip-style requirements
    text (comments and blank lines allowed); raises RequirementLineError
    naming the first malformed line."""
    requirements, _ = _packaging()
    parsed = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = _COMMENT.sub("", raw).strip()
        if not line:
            continue
        try:
            parsed.append((line, requirements.Requirement(line)))
        except requirements.InvalidRequirement as e:
            reason = str(e).splitlines()[0]
            raise RequirementLineError(f"line {number}", f"{raw.strip()!r}: {reason}") from None
    return parsed


def _unmet(shown, requirement, version):
    """Why the installed distribution does not meet ``requirement`` (its
    marker aside), or None."""
    try:
        installed = importlib.metadata.version(requirement.name)
    except importlib.metadata.PackageNotFoundError:
        return f"{shown} (not installed)"
    # prereleases=True: a pin on a pre-release (or an installed one) is
    # what the package asked for; `==2.13.0` is met by `2.13.0+cpu`.
    if requirement.specifier and not requirement.specifier.contains(installed, prereleases=True):
        try:
            version.Version(installed)
        except version.InvalidVersion:
            return f"{shown} (installed: {installed}, not a PEP 440 version)"
        return f"{shown} (installed: {installed})"
    return None


def _unmet_extras(requirement, version):
    """Why the installed distribution's own requirements for the extras
    asked for are not met (one level deep: extras may name each other), or
    None."""
    for wanted in sorted(requirement.extras):
        for dependency in importlib.metadata.requires(requirement.name) or []:
            try:
                needed = type(requirement)(dependency)
            except ValueError:
                continue  # the installed distribution's metadata, not the package's fault
            marker = needed.marker
            # A line of this extra: its marker holds with it, not without.
            if marker is None or marker.evaluate({"extra": ""}) or not marker.evaluate({"extra": wanted}):
                continue
            needed.marker = None  # shown without it
            why = _unmet(str(needed), needed, version)
            if why is not None:
                return f"extra '{wanted}' needs {why}"
    return None


def unmet_requirements(text):
    """The requirements the running environment does not satisfy, each with
    what is installed instead. A line whose marker does not hold here is
    skipped; ``name @ url`` lines check only that ``name`` is installed."""
    _, version = _packaging()
    unmet = []
    for line, requirement in parse_requirements(text):
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        why = _unmet(line, requirement, version)
        if why is None:
            extras = _unmet_extras(requirement, version)
            why = None if extras is None else f"{line} ({extras})"
        if why is not None:
            unmet.append(why)
    return unmet


def required_arguments(model):
    """The keyword arguments ``model`` cannot be called without (no
    default), for the caller to name one left out before the call; none when
    its signature cannot be read."""
    try:
        parameters = inspect.signature(model).parameters.values()
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in parameters if p.kind in kinds and p.default is inspect.Parameter.empty]


def load(model_name, code_dir, data_dir, entrypoint_package, entrypoint):
    """Imports ``entrypoint_package`` from ``code_dir`` under a fresh private
    top-level name and returns (prefix, entrypoint(data_dir), its required
    arguments)."""
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
        return prefix, model, required_arguments(model)
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
