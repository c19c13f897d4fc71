"""Fixtures: real TorchScript models, packaged once per session.

Every package is made with `create_torchscript_neuropod` from a module
scripted here; tests compare what Neuropods returns with what torch itself
computes.
"""

import itertools
import os
import signal
import tempfile
import warnings
from typing import Callable

import numpy as np
import pytest
import torch

import models_for_tests as M
from neuropods.packagers import create_torchscript_neuropod

from helpers import ADD_INPUT_SPEC, ADD_OUTPUT_SPEC, script, spec

# A runner may start the suite with SIGINT ignored (a background job of a
# shell without job control, as `cmd &` in a script): Python then never
# raises KeyboardInterrupt, and every child it starts inherits the ignored
# signal. The Ctrl-C tests send real SIGINTs, so the suite restores Python's
# own handler (children then start with the default disposition).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Hypothesis keeps a cache (unicode tables) in ./.hypothesis by default; keep
# it out of the repository. (Only tests/test_serialization.py uses it; the
# GPU machine's environment may lack it.)
try:
    from hypothesis import configuration as hypothesis_configuration
except ImportError:
    pass
else:
    hypothesis_configuration.set_hypothesis_home_dir(
        os.path.join(tempfile.gettempdir(), "neuropods-tests-hypothesis")
    )


@pytest.fixture
def private_tempdir(tmp_path, monkeypatch):
    """Points TMPDIR (read by the Rust core when it extracts a zip, by
    subprocesses and by tempfile) at a fresh folder, so that counting
    neuropod-* folders is not disturbed by other processes."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", None)
    assert tempfile.gettempdir() == str(folder)
    return folder


@pytest.fixture(scope="session")
def packages_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("packages")


@pytest.fixture(scope="session")
def make_package(packages_dir) -> Callable[..., str]:
    """make_package(name, module, input_spec, output_spec, **packager_kwargs)
    scripts `module` (unless already scripted) and packages it under a fresh
    path; returns the path as a str."""
    counter = itertools.count()

    def make(
        name: str,
        module: torch.nn.Module,
        input_spec,
        output_spec,
        *,
        package_as_zip: bool = False,
        **kwargs,
    ) -> str:
        scripted = module if isinstance(module, torch.jit.ScriptModule) else script(module)
        suffix = ".zip" if package_as_zip else ""
        path = os.path.join(str(packages_dir), f"{name}-{next(counter)}{suffix}")
        with warnings.catch_warnings():
            # The packager calls torch.jit.save, deprecated in torch 2.13.
            warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=DeprecationWarning)
            create_torchscript_neuropod(
                path,
                name,
                module=scripted,
                input_spec=input_spec,
                output_spec=output_spec,
                package_as_zip=package_as_zip,
                **kwargs,
            )
        return path

    return make


def _add_test_data():
    x = np.arange(5, dtype=np.float32)
    y = np.arange(5, dtype=np.float32) * 10
    return {"x": x, "y": y}, {"out": x + y}


@pytest.fixture(scope="session")
def addition_package(make_package) -> str:
    test_input, expected = _add_test_data()
    return make_package(
        "addition_model",
        M.AdditionModel(),
        ADD_INPUT_SPEC,
        ADD_OUTPUT_SPEC,
        test_input_data=test_input,
        test_expected_out=expected,
    )


@pytest.fixture(scope="session")
def addition_zip_package(make_package) -> str:
    test_input, expected = _add_test_data()
    return make_package(
        "addition_model_zip",
        M.AdditionModel(),
        ADD_INPUT_SPEC,
        ADD_OUTPUT_SPEC,
        package_as_zip=True,
        test_input_data=test_input,
        test_expected_out=expected,
    )


@pytest.fixture(scope="session")
def addition_model(addition_package):
    """One loaded addition model shared by the tests that only run it."""
    from neuropods.loader import load_neuropod

    model = load_neuropod(addition_package)
    yield model
    model.close()


@pytest.fixture(scope="session")
def mlp_module():
    return M.make_mlp(seed=1234)


@pytest.fixture(scope="session")
def mlp_package(make_package, mlp_module) -> str:
    return make_package(
        "mlp",
        M.DictWrapper(mlp_module),
        [spec("x", "float32", ("batch_size", 8))],
        [spec("out", "float32", ("batch_size", 4))],
    )


@pytest.fixture(scope="session")
def mlp64_module():
    return M.make_mlp(seed=99, dtype=torch.float64)


@pytest.fixture(scope="session")
def mlp64_package(make_package, mlp64_module) -> str:
    return make_package(
        "mlp64",
        M.DictWrapper(mlp64_module),
        [spec("x", np.float64, ("batch_size", 8))],
        [spec("out", np.float64, ("batch_size", 4))],
    )


@pytest.fixture(scope="session")
def int64_package(make_package) -> str:
    return make_package(
        "int64_model",
        M.Int64Model(),
        [spec("a", "int64", ("n",)), spec("b", "int64", ("n",))],
        [spec("out", "int64", ("n",)), spec("total", "int64", ("n",))],
    )


@pytest.fixture(scope="session")
def bool_package(make_package) -> str:
    return make_package(
        "bool_model",
        M.BoolModel(),
        [spec("a", "bool", ("rows", "cols")), spec("b", bool, ("rows", "cols"))],
        [spec("and_not", "bool", ("rows", "cols")), spec("any", "bool", ("rows",))],
    )


@pytest.fixture(scope="session")
def half_package(make_package) -> str:
    return make_package(
        "half_model",
        M.HalfModel(),
        [spec("x", "float16", (None, 3))],
        [spec("out", np.float16, (None, 3))],
    )


@pytest.fixture(scope="session")
def strings_package(make_package) -> str:
    return make_package(
        "upper",
        M.UpperModel(),
        [spec("words", "string", ("n",))],
        [spec("upper", "string", ("n",))],
        test_input_data={"words": np.array(["ab", "c"])},
        test_expected_out={"upper": np.array(["AB", "C"])},
    )


@pytest.fixture(scope="session")
def concat_package(make_package) -> str:
    return make_package(
        "concat",
        M.ConcatModel(),
        [spec("left", str, ("n",)), spec("right", "string", ("n",))],
        [spec("joined", "string", ("n",)), spec("lengths", "int64", ("n",))],
    )


@pytest.fixture(scope="session")
def dict_tensor_package(make_package) -> str:
    return make_package(
        "dict_tensor",
        M.DictTensorModel(),
        [spec("a", "float32", ("n",)), spec("b", "float32", ("n",)), spec("c", "float32", (None, None))],
        [spec("out", "float32", ("n",))],
    )


@pytest.fixture(scope="session")
def dict_string_package(make_package) -> str:
    return make_package(
        "dict_string",
        M.DictStringModel(),
        [spec("first", "string", ("n",)), spec("last", "string", ("n",))],
        [spec("names", "string", ("n",))],
    )


@pytest.fixture(scope="session")
def dict_union_package(make_package) -> str:
    return make_package(
        "dict_union",
        M.DictUnionModel(),
        [spec("values", "float32", (None, 2)), spec("labels", "string", (None,))],
        [spec("scaled", "float32", (None, 2)), spec("tagged", "string", (None,))],
    )


@pytest.fixture(scope="session")
def identity_package(make_package) -> str:
    return make_package(
        "identity",
        M.IdentityModel(),
        [spec("x", "float32", ("n",))],
        [spec("same", "float32", ("n",)), spec("tail", "float32", (None,))],
    )


@pytest.fixture(scope="session")
def scale_package(make_package) -> str:
    return make_package(
        "scale",
        M.ScaleModel(),
        [spec("x", "float32", (None, 3))],
        [spec("y", "float32", (None, 3))],
    )
