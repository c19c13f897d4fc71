"""Python-platform packages: code and data written by the tests, packaged
with create_python_neuropod / create_pytorch_neuropod, and run through the
same API (and the same checks) as the other platforms."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import neuropods_native
from neuropods.loader import load_neuropod
from neuropods.packagers import create_python_neuropod, create_pytorch_neuropod
from helpers import assert_backend_config_error, write_tree

XY_SPEC = [{"name": "x", "dtype": "float32", "shape": ("n",)}, {"name": "y", "dtype": "float32", "shape": ("n",)}]
OUT_SPEC = [{"name": "out", "dtype": "float32", "shape": ("n",)}]


def scaler_code(root, package="scaler", body="helper.scale(x + y, self.factor)"):
    """A package whose entrypoint reads a data file and imports a helper
    module relatively."""
    return write_tree(
        root,
        {
            f"{package}/__init__.py": "",
            f"{package}/helper.py": """
                import numpy as np

                def scale(values, factor):
                    return (values * factor).astype(np.float32)
            """,
            f"{package}/main.py": f"""
                import os
                from . import helper

                class Model:
                    def __init__(self, data_root):
                        with open(os.path.join(data_root, "factor.txt")) as f:
                            self.factor = float(f.read())

                    def __call__(self, x, y):
                        return {{"out": {body}}}

                def get_model(data_root):
                    return Model(data_root)
            """,
        },
    )


def package_scaler(tmp_path, name="scaler_pkg", factor="3", package="scaler", **kwargs):
    kwargs.setdefault("package_as_zip", False)  # a folder: tests edit its files
    code = scaler_code(tmp_path / f"{name}_src", package=package, **kwargs.pop("code", {}))
    data = tmp_path / f"{name}_factor.txt"
    data.write_text(factor)
    path = tmp_path / name
    create_python_neuropod(
        path, name,
        data_paths=[{"path": str(data), "packaged_name": "factor.txt"}],
        code_path_spec=[{"python_root": code, "dirs_to_package": [""]}],
        entrypoint_package=f"{package}.main", entrypoint="get_model",
        input_spec=XY_SPEC, output_spec=OUT_SPEC, **kwargs,
    )
    return path


@pytest.mark.parametrize("as_zip", [False, True])
def test_data_file_and_relative_import(tmp_path, as_zip):
    x = np.arange(4, dtype=np.float32)
    path = package_scaler(
        tmp_path, package_as_zip=as_zip,
        test_input_data={"x": x, "y": x}, test_expected_out={"out": 6 * x},
    )
    with load_neuropod(path) as model:
        assert model.platform == "python"
        np.testing.assert_array_equal(model.infer({"x": x, "y": np.ones(4, np.float32)})["out"], 3 * (x + 1))
    if not as_zip:
        assert (path / "0" / "data" / "factor.txt").read_text() == "3"
        assert (path / "0" / "code" / "scaler" / "helper.py").is_file()


def test_two_versions_of_one_package_side_by_side(tmp_path):
    v1 = package_scaler(tmp_path, name="v1", factor="2")
    v2 = package_scaler(tmp_path, name="v2", factor="5", code={"body": "helper.scale(x - y, -self.factor)"})
    x, y = np.full(3, 4, np.float32), np.ones(3, np.float32)
    with load_neuropod(v1) as one, load_neuropod(v2) as two:
        for _ in range(2):
            np.testing.assert_array_equal(one.infer({"x": x, "y": y})["out"], 2 * (x + y))
            np.testing.assert_array_equal(two.infer({"x": x, "y": y})["out"], -5 * (x - y))
        # Neither took the plain name: user code importing `scaler` is unaffected.
        assert "scaler" not in sys.modules and "scaler.main" not in sys.modules
    assert not [name for name in sys.modules if name.startswith("_neuropod_") and "v1" in name]


class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, 2)

    def forward(self, features):
        return torch.tanh(self.linear(features))


def test_pytorch_module_returning_tensors(tmp_path):
    torch.manual_seed(0)
    net = TinyNet().eval()
    weights = tmp_path / "weights.pt"
    torch.save(net.state_dict(), weights)
    code = write_tree(
        tmp_path / "src",
        {
            "tinynet/__init__.py": "",
            "tinynet/net.py": """
                import torch

                class TinyNet(torch.nn.Module):
                    def __init__(self):
                        super().__init__()
                        self.linear = torch.nn.Linear(3, 2)

                    def forward(self, features):
                        return torch.tanh(self.linear(features))
            """,
            "tinynet/entry.py": """
                import os
                import torch
                from .net import TinyNet

                def get_model(data_root):
                    net = TinyNet()
                    net.load_state_dict(torch.load(os.path.join(data_root, "weights.pt")))
                    net.eval()

                    def run(features):
                        with torch.no_grad():
                            return {"scores": net(torch.from_numpy(features))}
                    return run
            """,
        },
    )
    features = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(features)).numpy()
    create_pytorch_neuropod(
        tmp_path / "torch_pkg", "tinynet",
        data_paths=[{"path": str(weights), "packaged_name": "weights.pt"}],
        code_path_spec=[{"python_root": code, "dirs_to_package": ["tinynet"]}],
        entrypoint_package="tinynet.entry", entrypoint="get_model",
        input_spec=[{"name": "features", "dtype": "float32", "shape": ("batch", 3)}],
        output_spec=[{"name": "scores", "dtype": "float32", "shape": ("batch", 2)}],
        test_input_data={"features": features}, test_expected_out={"scores": expected},
    )
    with load_neuropod(tmp_path / "torch_pkg") as model:
        out = model.infer({"features": features})["scores"]
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_spec_is_checked_on_the_way_in_and_out(tmp_path):
    path = package_scaler(tmp_path, code={"body": "(x + y).astype('float64')"})
    x = np.ones(2, np.float32)
    with load_neuropod(path) as model:
        with pytest.raises(neuropods_native.DTypeError, match="'x'"):
            model.infer({"x": x.astype(np.int32), "y": x})
        with pytest.raises(neuropods_native.ShapeError):
            model.infer({"x": x, "y": np.ones(3, np.float32)})
        with pytest.raises(neuropods_native.DTypeError, match="'out'"):
            model.infer({"x": x, "y": x})


def test_model_errors_name_the_code(tmp_path):
    path = package_scaler(tmp_path, code={"body": "helper.missing_function(x)"})
    with load_neuropod(path) as model:
        with pytest.raises(neuropods_native.BackendError) as info:
            model.infer({"x": np.ones(1, np.float32), "y": np.ones(1, np.float32)})
    # The message is the exception's own line, for anyone; the traceback,
    # naming the package's file, is the detail, for logs and for Python's
    # own printing of an uncaught error (a note).
    message, detail = str(info.value), info.value.detail
    assert message.startswith("python backend: AttributeError:") and "missing_function" in message, message
    assert "Traceback" not in message and "main.py" not in message, message
    assert detail.startswith("Traceback (most recent call last):") and "main.py" in detail, detail
    assert detail in getattr(info.value, "__notes__", [detail])


@pytest.mark.parametrize(
    "body, fragment",
    [
        ("None", "expected a numpy array"),
        ("object()", "expected a numpy array"),
    ],
)
def test_bad_outputs_are_backend_errors(tmp_path, body, fragment):
    path = package_scaler(tmp_path, code={"body": body})
    with load_neuropod(path) as model:
        with pytest.raises(neuropods_native.BackendError, match=fragment):
            model.infer({"x": np.ones(1, np.float32), "y": np.ones(1, np.float32)})


def test_a_model_returning_a_non_dict_is_a_backend_error(tmp_path):
    code = write_tree(tmp_path / "src", {"m/__init__.py": "", "m/e.py": "def get(root):\n    return lambda x, y: x\n"})
    create_python_neuropod(
        tmp_path / "p", "p", data_paths=[], code_path_spec=[{"python_root": code, "dirs_to_package": [""]}],
        entrypoint_package="m.e", entrypoint="get", input_spec=XY_SPEC, output_spec=OUT_SPEC,
    )
    with load_neuropod(tmp_path / "p") as model:
        with pytest.raises(neuropods_native.BackendError, match="expected a dict"):
            model.infer({"x": np.ones(1, np.float32), "y": np.ones(1, np.float32)})


def test_unmet_requirements_are_listed_and_nothing_is_installed(tmp_path):
    installed = np.__version__
    path = package_scaler(
        tmp_path, requirements=f"numpy=={installed}\nnumpy==0.0.1\nnot-a-real-package-xyz==2.0\n",
    )
    assert (path / "0" / "requirements.lock").read_text().startswith(f"numpy=={installed}\n")
    with pytest.raises(neuropods_native.RequirementsError) as info:
        load_neuropod(path)
    message = str(info.value)
    assert f"numpy==0.0.1 (installed: {installed})" in message
    assert "not-a-real-package-xyz==2.0 (not installed)" in message
    assert f"numpy=={installed} " not in message
    assert isinstance(info.value, ImportError)


def test_packager_refusals(tmp_path):
    code = scaler_code(tmp_path / "src")
    common = dict(
        data_paths=[], code_path_spec=[{"python_root": code, "dirs_to_package": [""]}],
        entrypoint_package="scaler.main", entrypoint="get_model", input_spec=XY_SPEC, output_spec=OUT_SPEC,
    )
    with pytest.raises(neuropods_native.ConfigError, match=r"requirements.lock: line 2: 'numpy>=>1'"):
        create_python_neuropod(tmp_path / "a", "a", requirements="numpy\nnumpy>=>1\n", **common)
    with pytest.raises(ValueError, match="packaged_name"):
        create_python_neuropod(tmp_path / "b", "b", **{**common, "data_paths": [{"path": code, "packaged_name": "../x"}]})
    with pytest.raises(ValueError, match="python_root"):
        create_python_neuropod(tmp_path / "c", "c", **{**common, "code_path_spec": [{"python_root": str(tmp_path / "nope")}]})
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_missing_entrypoint_is_reported_at_load(tmp_path):
    code = scaler_code(tmp_path / "src")
    (tmp_path / "src" / "scaler" / "__pycache__").mkdir()
    (tmp_path / "src" / "scaler" / "__pycache__" / "junk.pyc").write_bytes(b"\0")
    create_python_neuropod(
        tmp_path / "p", "p", data_paths=[], code_path_spec=[{"python_root": code, "dirs_to_package": [""]}],
        entrypoint_package="scaler.main", entrypoint="no_such_function", input_spec=XY_SPEC, output_spec=OUT_SPEC,
    )
    assert not (tmp_path / "p" / "0" / "code" / "scaler" / "__pycache__").exists()
    with pytest.raises(neuropods_native.BackendError, match="no_such_function"):
        load_neuropod(tmp_path / "p")
    assert not [n for n in sys.modules if n.startswith("_neuropod_") and n.endswith("_p")]


def test_inputs_reach_the_model_as_if_called_directly(tmp_path):
    # The model gets the caller's memory, writable (no copy), and may keep
    # it; read-only arrays were copied on the way in and stay untouched.
    code = write_tree(
        tmp_path / "src",
        {
            "keeper/__init__.py": "",
            "keeper/main.py": """
                kept = []

                def get_model(data_root):
                    def run(x, y):
                        x += 1  # in place, as it could when called directly
                        kept.append(x)
                        return {"out": x + y}
                    return run
            """,
        },
    )
    create_python_neuropod(
        tmp_path / "p", "keeper", data_paths=[], code_path_spec=[{"python_root": code, "dirs_to_package": [""]}],
        entrypoint_package="keeper.main", entrypoint="get_model", input_spec=XY_SPEC, output_spec=OUT_SPEC,
    )
    x = np.zeros(3, np.float32)
    y = np.full(3, 10, np.float32)
    frozen = np.zeros(3, np.float32)
    frozen.flags.writeable = False
    with load_neuropod(tmp_path / "p") as model:
        out = model.infer({"x": x, "y": y})["out"]
        out_frozen = model.infer({"x": frozen, "y": y})["out"]
        [entry] = [m for n, m in sys.modules.items() if n.startswith("_neuropod_") and n.endswith(".keeper.main")]
        kept = entry.kept
    np.testing.assert_array_equal(x, 1)
    np.testing.assert_array_equal(out, 11)
    np.testing.assert_array_equal(frozen, 0)
    np.testing.assert_array_equal(out_frozen, 11)
    x[:] = 5  # the kept input is the caller's memory, alive after close
    np.testing.assert_array_equal(kept[0], 5)
    np.testing.assert_array_equal(kept[1], 1)


def test_zip_load_close_cycles_leave_no_importer_cache_entries(tmp_path, monkeypatch):
    # Each load of a zip extracts it to a new folder, and importing the
    # package's code caches an importer per code folder: unloading (on
    # close, and when the load fails) must forget them, or they pile up.
    extract_root = tmp_path / "extracted"
    extract_root.mkdir()
    monkeypatch.setenv("TMPDIR", str(extract_root))
    good = package_scaler(tmp_path, name="cycled", package_as_zip=True)
    failing = tmp_path / "failing"
    create_python_neuropod(
        failing, "failing", data_paths=[],
        code_path_spec=[{"python_root": scaler_code(tmp_path / "failing_src"), "dirs_to_package": [""]}],
        entrypoint_package="scaler.main", entrypoint="no_such_function",
        input_spec=XY_SPEC, output_spec=OUT_SPEC, package_as_zip=True,
    )
    x = np.ones(2, np.float32)

    def extraction_entries():
        return [p for p in sys.path_importer_cache if isinstance(p, str) and p.startswith(str(extract_root))]

    def cycle():
        with load_neuropod(good) as model:
            model.infer({"x": x, "y": x})
            # Two code folders (the root and scaler/) are cached while loaded.
            assert len(extraction_entries()) == 2, extraction_entries()
        with pytest.raises(neuropods_native.BackendError, match="no_such_function"):
            load_neuropod(failing)

    cycle()  # first-time imports (numpy's, the helper's) happen once
    importers, modules = len(sys.path_importer_cache), len(sys.modules)
    for _ in range(20):
        cycle()
    assert extraction_entries() == []
    assert len(sys.path_importer_cache) == importers
    assert len(sys.modules) == modules
    assert not [n for n in sys.modules if n.startswith("_neuropod_") and n.endswith(("_cycled", "_failing"))]


PY_CONFIG_CASES = {
    # id: (change to 0/config.json, "field: reason" the error names)
    "entrypoint_not_string": (lambda c: {**c, "entrypoint": 5}, "entrypoint: expected a string, got a number"),
    "entrypoint_missing": (lambda c: {"entrypoint_package": c["entrypoint_package"]}, "entrypoint: missing"),
    "entrypoint_package_empty": (lambda c: {**c, "entrypoint_package": ""}, "entrypoint_package: must not be empty"),
    "unknown_field": (lambda c: {**c, "python_root": "src"},
                      "python_root: unknown field (known: entrypoint_package, entrypoint)"),
    "not_an_object": (lambda c: [c], "<document>: expected a JSON object with entrypoint_package and entrypoint, "
                                     "got a list"),
}


@pytest.mark.parametrize("case", list(PY_CONFIG_CASES))
def test_wrong_fields_in_the_backend_config_are_config_errors(tmp_path, case):
    change, expected = PY_CONFIG_CASES[case]
    assert_backend_config_error(package_scaler(tmp_path), change, expected, "python")


@pytest.mark.parametrize(
    "signature, inputs, expected",
    [
        ("def add(x, y)", {"x": 1}, "missing input 'y': the python model requires it"),
        ("def add(x, *, y)", {"y": 1}, "missing input 'x': the python model requires it"),
        # A default, or **kwargs taking anything: nothing is required.
        ("def add(x, y=2.0)", {"x": 1}, None),
        ("def add(**inputs)", {"x": 1}, None),
    ],
)
def test_a_missing_required_argument_is_invalid_input_naming_it(tmp_path, signature, inputs, expected):
    from helpers import python_package, spec

    code = f"""
        def get_model(data_root):
            {signature}:
                return {{"out": __import__("numpy").ones(2, "float32")}}
            return add
    """
    in_spec = [spec("x", "float32", (None,)), spec("y", "float32", (None,))]
    path = python_package(tmp_path, "add", code, in_spec, [spec("out", "float32", (None,))])
    arrays = {name: np.full(2, value, np.float32) for name, value in inputs.items()}
    with load_neuropod(path) as model:
        if expected is None:
            assert model.infer(arrays)["out"].shape == (2,)
        else:
            with pytest.raises(neuropods_native.InvalidInputError, match=expected):
                model.infer(arrays)


def test_the_cli_says_what_a_python_model_raised_in_one_line(tmp_path):
    path = package_scaler(tmp_path, code={"body": "helper.refuse(x)"})
    (path / "0" / "code" / "scaler" / "helper.py").write_text(
        "def refuse(x):\n    raise ValueError('the model refuses these inputs')\n"
    )
    np.save(tmp_path / "x.npy", np.ones(2, np.float32))
    command = [sys.executable, "-m", "neuropods", "infer", str(path), "--input", f"x={tmp_path / 'x.npy'}",
               "--input", f"y={tmp_path / 'x.npy'}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    # Before: "neuropods infer: BackendError: Traceback (most recent call last):".
    assert result.stderr.splitlines() == [
        "neuropods infer: BackendError: python backend: ValueError: the model refuses these inputs"
    ], result.stderr
    # --verbose prints the model's traceback too (the error's note).
    verbose = subprocess.run([*command[:3], "--verbose", *command[3:]], capture_output=True, text=True, timeout=120)
    assert verbose.returncode == 1 and 'helper.py", line 2, in refuse' in verbose.stderr, verbose.stderr
