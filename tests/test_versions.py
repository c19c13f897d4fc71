"""Framework versions are checked, never assumed: config.json's
platform_version_semver (npm-style ranges, as the original Neuropod) is
enforced against the framework that runs the model (libtorch, TensorFlow,
the Python interpreter), and legacy TorchScript files are explained."""

import json
import os
import sys
import zipfile

import numpy as np
import pytest
import tensorflow as tf
import torch

import models_for_tests as M
import neuropods_native
from helpers import ADD_INPUT_SPEC, ADD_OUTPUT_SPEC, copy_package, load
from neuropods.packagers import create_python_neuropod, create_tensorflow_neuropod

TORCH_RELEASE = torch.__version__.split("+")[0]
MAJOR, MINOR, PATCH = (int(p) for p in TORCH_RELEASE.split("."))
X = np.arange(3, dtype=np.float32)


def _set_range(package, text):
    config = os.path.join(package, "config.json")
    with open(config) as f:
        data = json.load(f)
    data["platform_version_semver"] = text
    with open(config, "w") as f:
        json.dump(data, f)


@pytest.mark.parametrize(
    "included",
    [
        TORCH_RELEASE,
        f"={TORCH_RELEASE}",
        f"^{MAJOR}.{MINOR}",
        f"~{MAJOR}.{MINOR}.0",
        f"{MAJOR}.x",
        f">={MAJOR}.0 <{MAJOR + 1}",
        f"{MAJOR}.{MINOR}.0 - {MAJOR}.{MINOR + 1}.0",
        f"1.x || {TORCH_RELEASE}",
        "*",
    ],
)
def test_a_torchscript_package_whose_range_includes_the_installed_torch_loads(make_package, included):
    path = make_package("add", M.AdditionModel(), ADD_INPUT_SPEC, ADD_OUTPUT_SPEC, platform_version_semver=included)
    with load(path) as model:
        np.testing.assert_array_equal(model.infer({"x": X, "y": X})["out"], X * 2)


@pytest.mark.parametrize(
    "excluded",
    [
        f"<{TORCH_RELEASE}",
        f"> {TORCH_RELEASE}",
        f"1.4.0 - 1.6.0",
        f"^{MAJOR + 1}.0",
        f"~{MAJOR}.{MINOR + 1}",
        "1.x || >=3",
    ],
)
def test_a_torchscript_package_whose_range_excludes_the_installed_torch_is_refused(make_package, excluded):
    """The error names the range and the version of the libtorch really
    loaded (read from its torch package's version.py), local part dropped."""
    path = make_package("add", M.AdditionModel(), ADD_INPUT_SPEC, ADD_OUTPUT_SPEC, platform_version_semver=excluded)
    with pytest.raises(neuropods_native.FrameworkVersionError) as info:
        load(path)
    assert isinstance(info.value, neuropods_native.FrameworkNotFoundError)
    assert isinstance(info.value, ImportError)
    message = str(info.value)
    assert f'"{excluded}"' in message and f"libtorch {TORCH_RELEASE}" in message, message
    assert "platform_version_semver" in message, message


def test_an_invalid_range_is_a_config_error_naming_the_field(make_package, addition_package, tmp_path):
    with pytest.raises(neuropods_native.ConfigError, match=r"platform_version_semver.*'\^\^2'"):
        make_package("add", M.AdditionModel(), ADD_INPUT_SPEC, ADD_OUTPUT_SPEC, platform_version_semver="^^2")
    # A package written by hand is refused at load, the same way.
    path = copy_package(addition_package, str(tmp_path / "copy"))
    _set_range(path, "two point thirteen")
    with pytest.raises(neuropods_native.ConfigError, match="platform_version_semver.*'two point thirteen'"):
        load(path)


def test_a_tensorflow_package_is_checked_against_tensorflow(tmp_path):
    release = tf.__version__.split("+")[0]
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None], name="x")
        tf.identity(x, name="out")
    kwargs = dict(
        model_name="identity", graph_def=graph.as_graph_def(),
        node_name_mapping={"x": "x:0", "out": "out:0"},
        input_spec=[{"name": "x", "dtype": "float32", "shape": (None,)}],
        output_spec=[{"name": "out", "dtype": "float32", "shape": (None,)}],
    )
    create_tensorflow_neuropod(neuropod_path=tmp_path / "ok", platform_version_semver=f"^{release}", **kwargs)
    with load(tmp_path / "ok") as model:
        np.testing.assert_array_equal(model.infer({"x": X})["out"], X)
    create_tensorflow_neuropod(neuropod_path=tmp_path / "old", platform_version_semver="1.15.x", **kwargs)
    with pytest.raises(neuropods_native.FrameworkVersionError, match=rf'"1\.15\.x".*TensorFlow {release}'):
        load(tmp_path / "old")


def test_a_python_package_is_checked_against_the_interpreter(tmp_path):
    """As the original Neuropod's Python bridge: the range is of Python's version."""
    code = tmp_path / "src" / "echo"
    code.mkdir(parents=True)
    (code / "__init__.py").write_text("")
    (code / "main.py").write_text("def get_model(data_root):\n    return lambda x: {'out': x}\n")
    running = "{}.{}.{}".format(*sys.version_info[:3])
    kwargs = dict(
        data_paths=[], code_path_spec=[{"python_root": str(tmp_path / "src"), "dirs_to_package": [""]}],
        entrypoint_package="echo.main", entrypoint="get_model",
        input_spec=[{"name": "x", "dtype": "float32", "shape": (None,)}],
        output_spec=[{"name": "out", "dtype": "float32", "shape": (None,)}],
    )
    create_python_neuropod(tmp_path / "ok", "echo", platform_version_semver=f"~{running}", **kwargs)
    with load(tmp_path / "ok") as model:
        np.testing.assert_array_equal(model.infer({"x": X})["out"], X)
    create_python_neuropod(tmp_path / "py2", "echo", platform_version_semver="2.7.x", **kwargs)
    with pytest.raises(neuropods_native.FrameworkVersionError, match=rf'"2\.7\.x".*Python {running}'):
        load(tmp_path / "py2")


def test_a_legacy_torchscript_file_says_what_it_is_and_how_to_fix_it(addition_package, tmp_path):
    """PyTorch 1.0-1.3 wrote TorchScript as a zip with model.json (the module
    as JSON), code/ and tensors/, without data.pkl. torch 1.x cannot be
    installed here (no wheels for this Python), so the archive is written
    with that layout by hand; libtorch 2.x itself only says "Legacy model
    format is not supported on mobile"."""
    path = copy_package(addition_package, str(tmp_path / "legacy"))
    model_file = os.path.join(path, "0", "data", "model.pt")
    os.remove(model_file)
    with zipfile.ZipFile(model_file, "w") as archive:
        archive.writestr("addition/version", "1\n")
        archive.writestr(
            "addition/model.json",
            json.dumps({"protoVersion": "6", "mainModule": {"torchscriptArena": {"key": "code/addition.py"}, "name": "addition"}, "producerName": "pytorch", "producerVersion": "1.0"}),
        )
        archive.writestr("addition/code/addition.py", "op_version_set = 0\ndef forward(self, x, y):\n  return {\"out\": x + y}\n")
        archive.writestr("addition/tensors/0", b"")
    with pytest.raises(neuropods_native.PackageError) as info:
        load(path)
    message = str(info.value)
    assert "legacy format of PyTorch 1.0-1.3" in message, message
    assert "torch.jit.load" in message and "torch.jit.save" in message, message
    assert "mobile" not in message, message
