"""Helpers shared by the test modules (imported by name: tests/ is on sys.path)."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from typing import Any, Dict, Optional

import numpy as np
import pytest
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NEUROPODS_HOME = os.environ.get("NEUROPODS_HOME", os.path.expanduser("~/.cache/neuropods"))
TORCH_DIR = os.path.dirname(torch.__file__)


# String outputs are numpy's variable-width StringDType on numpy >= 2
# (kind "T"), fixed-width unicode (kind "U") before.
STRING_KIND = "T" if int(np.__version__.split(".")[0]) >= 2 else "U"


def spec(name: str, dtype: Any, shape: tuple) -> Dict[str, Any]:
    return {"name": name, "dtype": dtype, "shape": shape}


ADD_INPUT_SPEC = [
    spec("x", "float32", ("num_inputs",)),
    spec("y", "float32", ("num_inputs",)),
]
ADD_OUTPUT_SPEC = [spec("out", "float32", (None,))]


def load(path, **options):
    from neuropods.loader import load_neuropod

    return load_neuropod(path, **options)


def package_tf_addition(path, input_spec=ADD_INPUT_SPEC, output_spec=ADD_OUTPUT_SPEC, model_name="tf_addition") -> str:
    """A frozen TF graph computing out = x + y, packaged at `path`."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from neuropods.packagers import create_tensorflow_neuropod

    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None], name="x")
        y = tf.compat.v1.placeholder(tf.float32, [None], name="y")
        tf.add(x, y, name="out")
    create_tensorflow_neuropod(
        neuropod_path=path, model_name=model_name, input_spec=input_spec, output_spec=output_spec,
        node_name_mapping={"x": "x:0", "y": "y:0", "out": "out:0"}, graph_def=graph.as_graph_def(),
        package_as_zip=False,
    )
    return str(path)


def copy_package(src: str, dst: str) -> str:
    if os.path.isdir(src):
        shutil.copytree(src, dst)
    else:
        shutil.copy(src, dst)
    return dst


def torch_out(module: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """What torch itself computes for `module(x)`."""
    with torch.no_grad():
        return module(torch.from_numpy(np.array(x, order="C"))).numpy()


def neuropod_tempdirs():
    """The extraction folders of zip packages currently in the temp dir."""
    import tempfile

    root = tempfile.gettempdir()
    return sorted(
        name
        for name in os.listdir(root)
        if name.startswith("neuropod-") and os.path.isdir(os.path.join(root, name))
    )


def find_infer_example() -> Optional[str]:
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(NEUROPODS_HOME, "target"))
    path = os.path.join(target, "release", "examples", "infer")
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


def script(module: torch.nn.Module) -> torch.jit.ScriptModule:
    """torch.jit.script, without torch 2.13's deprecation warning for it (the
    suite turns warnings into errors; TorchScript is what Neuropods runs)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r".*torch\.jit\.(script|save|trace).* deprecated", category=DeprecationWarning
        )
        return torch.jit.script(module)


def jit_save(module: torch.jit.ScriptModule, path: str) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=DeprecationWarning)
        torch.jit.save(module, path)


def write_tree(root, files):
    """Writes {relative path: text} under root; returns root as a str."""
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return str(root)


X_SPEC = [spec("x", "float32", (None,))]
OUT_SPEC = [spec("out", "float32", (None,))]


def python_package(tmp_path, name, code, input_spec=X_SPEC, output_spec=OUT_SPEC, **kwargs):
    """A python-platform package whose `m/__init__.py` is `code` (which
    defines get_model(data_root)); a folder unless `package_as_zip=True`
    (tracebacks then name files at the same path in and out of process)."""
    from neuropods.packagers import create_python_neuropod

    kwargs.setdefault("package_as_zip", False)
    root = write_tree(tmp_path / f"{name}_src", {"m/__init__.py": code})
    path = tmp_path / name
    create_python_neuropod(
        path, name,
        data_paths=[],
        code_path_spec=[{"python_root": root, "dirs_to_package": [""]}],
        entrypoint_package="m", entrypoint="get_model",
        input_spec=input_spec, output_spec=output_spec, **kwargs,
    )
    return str(path)


def run_add(model):
    """Runs an addition model (inputs x, y; output out) and checks it."""
    x = np.array([1.0, 2.0, 3.0], np.float32)
    y = np.array([0.5, 0.25, -1.0], np.float32)
    np.testing.assert_array_equal(model.infer({"x": x, "y": y})["out"], x + y)


def assert_backend_config_error(path, change, expected, platform):
    """Loading the package at `path` with its 0/config.json passed through
    `change` is a ConfigError naming `expected` (field: reason); with the
    file as written, it loads."""
    import neuropods_native

    backend_config = path / "0" / "config.json"
    original = json.loads(backend_config.read_text())
    backend_config.write_text(json.dumps(change(original)))
    try:
        load(path)
    except neuropods_native.ConfigError as e:
        assert isinstance(e, ValueError)
        assert f"invalid config 0/config.json: {expected}" in str(e), str(e)
    else:
        raise AssertionError("no ConfigError")
    # That field was the only thing wrong: the package as written loads.
    backend_config.write_text(json.dumps(original))
    with load(path) as model:
        assert model.platform == platform


# Variables that would let a subprocess find a framework or another Python.
FRAMEWORK_ENV = (
    "LIBTORCH",
    "NEUROPODS_LIBTORCH_DIR",
    "NEUROPODS_TENSORFLOW_DIR",
    "NEUROPODS_ONNXRUNTIME_DIR",
    "ORT_DYLIB_PATH",
    "NEUROPODS_PYTHON",
    "NEUROPODS_BACKEND_DIR",
    "LD_LIBRARY_PATH",
    "LD_PRELOAD",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "VIRTUAL_ENV",
)


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in FRAMEWORK_ENV}
    env.update(extra)
    return env


def make_venv(folder, packages):
    """A plain venv at `folder` (no system site-packages, so no framework
    is visible) with `packages` installed; returns its python. uv installs
    them where it sits beside this Python (the dev venv: from the cache the
    venv was installed from, so nothing it has is downloaded again), else
    pip. Skips the test when they cannot be installed (no index, no cache)."""
    env = clean_env()
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, env=env, timeout=120)
    python = str(folder / "bin" / "python")
    uv = shutil.which("uv", path=os.path.dirname(sys.executable))
    if uv:
        command = [uv, "pip", "install", "-q", "--python", python, *packages]
    else:
        command = [python, "-m", "pip", "install", "--disable-pip-version-check", "-q", *packages]
    install = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    if install.returncode != 0:
        pytest.skip(f"could not install {packages} into a fresh venv: {install.stderr[-2000:]}")
    return python


def run_python(code, python=sys.executable, timeout=120, env=None):
    """Runs `code` (dedented) in a fresh interpreter, with a clean
    environment unless `env` is given; returns the CompletedProcess."""
    return subprocess.run(
        [python, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env if env is not None else clean_env(),
    )
