"""One TorchScript backend per torch release: the build matching the installed
torch is the one opened, and a torch no build was made for is a clear error
before any backend library is opened.

scripts/test-matrix.sh runs this file in one venv per supported torch, and
sets NEUROPODS_TEST_UNSUPPORTED_TORCH to a folder holding a torch release no
build was made for (scripts/lib/unsupported-torch.sh: `--no-deps --target`);
scripts/test.sh, which downloads nothing beyond the main job's, leaves it
unset, and those tests skip there.
"""

import json
import os
import re

import pytest
import torch

import neuropods
from helpers import ADD_INPUT_SPEC, ADD_OUTPUT_SPEC, clean_env, run_python

SUPPORTED_RELEASES = ["2.11", "2.12", "2.13"]
# Where the package under test is installed: a venv's site-packages, or a
# `pip install --target` folder on PYTHONPATH (scripts/gpu-tests.sh).
NEUROPODS_SITE = os.path.dirname(os.path.dirname(neuropods.__file__))
UNSUPPORTED_TORCH = os.environ.get("NEUROPODS_TEST_UNSUPPORTED_TORCH")

# Loads the package in argv[1], runs it unless the load fails, and prints a
# JSON line: the error (class and message) if any, and the TorchScript backend
# libraries mapped into the process afterwards.
LOAD_AND_REPORT = """
import json, sys
import numpy as np
{prelude}
from neuropods.loader import load_neuropod
report = {{"error": None}}
try:
    with load_neuropod(sys.argv[1]{load_options}) as model:
        out = model.infer({{"x": np.ones(3, np.float32), "y": np.ones(3, np.float32)}})["out"]
        report["out"] = out.tolist()
except Exception as e:
    report["error"] = [type(e).__name__, str(e)]
with open("/proc/self/maps") as maps:
    report["backends"] = sorted({{line.split("/")[-1].strip() for line in maps if "libneuropods_torchscript" in line}})
print(json.dumps(report))
"""


def load_in_fresh_process(package, prelude="", load_options="", python_path=(), **env):
    """Runs LOAD_AND_REPORT in a fresh interpreter that finds only the
    package under test and, first, the folders in `python_path`; `env` adds
    variables."""
    code = LOAD_AND_REPORT.format(prelude=prelude, load_options=load_options)
    env = clean_env(PYTHONPATH=os.pathsep.join([*python_path, NEUROPODS_SITE]), **env)
    result = run_python(f"import sys; sys.argv[1:] = [{package!r}]\n{code}", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def release_of(version):
    return ".".join(version.split(".")[:2])


@pytest.mark.parametrize("import_torch_first", [False, True], ids=["torch-not-imported", "torch-imported"])
def test_the_build_for_the_installed_torch_is_the_one_opened(addition_package, import_torch_first):
    report = load_in_fresh_process(addition_package, prelude="import torch" if import_torch_first else "")
    assert report["error"] is None, report
    assert report["out"] == [2.0, 2.0, 2.0]
    assert report["backends"] == [f"libneuropods_torchscript-torch{release_of(torch.__version__)}.so"]


def test_the_installed_torch_is_a_supported_release():
    # What the matrix installs; a new torch release needs a build first.
    assert release_of(torch.__version__) in SUPPORTED_RELEASES, torch.__version__


@pytest.mark.skipif(not UNSUPPORTED_TORCH, reason="NEUROPODS_TEST_UNSUPPORTED_TORCH is not set")
def test_a_torch_without_a_build_is_a_clear_error_and_nothing_is_opened(addition_package):
    version_py = os.path.join(UNSUPPORTED_TORCH, "torch", "version.py")
    with open(version_py) as f:
        version = re.search(r"__version__\s*=\s*'([^']+)'", f.read()).group(1)
    assert release_of(version) not in SUPPORTED_RELEASES
    # Found the way users reach such a torch: first on sys.path.
    report = load_in_fresh_process(addition_package, python_path=[UNSUPPORTED_TORCH])
    assert report["error"] is not None, report
    kind, message = report["error"]
    assert kind == "FrameworkNotFoundError", report
    assert f"torch {version} is installed" in message, message
    assert os.path.join(UNSUPPORTED_TORCH, "torch", "lib") in message, message
    assert "torch " + ", ".join(SUPPORTED_RELEASES) + " only" in message, message
    assert f"pip install 'torch=={SUPPORTED_RELEASES[-1]}.*'" in message, message
    assert report["backends"] == []


@pytest.mark.skipif(not UNSUPPORTED_TORCH, reason="NEUROPODS_TEST_UNSUPPORTED_TORCH is not set")
def test_a_libtorch_folder_the_user_names_wins_over_sys_path(addition_package):
    # The unsupported torch is first on sys.path, but the user points the
    # core at this environment's torch: that one is used.
    lib_dir = os.path.join(os.path.dirname(torch.__file__), "lib")
    report = load_in_fresh_process(
        addition_package, python_path=[UNSUPPORTED_TORCH], NEUROPODS_LIBTORCH_DIR=lib_dir
    )
    assert report["error"] is None, report
    assert report["out"] == [2.0, 2.0, 2.0]
    assert report["backends"] == [f"libneuropods_torchscript-torch{release_of(torch.__version__)}.so"]


class AdditionOnTheGpu(torch.nn.Module):
    def forward(self, x, y):
        assert x.is_cuda and y.is_cuda
        return {"out": x + y}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_build_for_the_installed_torch_runs_on_the_gpu(make_package):
    package = make_package("addition_on_gpu", AdditionOnTheGpu(), ADD_INPUT_SPEC, ADD_OUTPUT_SPEC)
    # torch is not imported in that process: the core finds it, picks the
    # build, and opens libtorch's CUDA library for visible_gpu.
    report = load_in_fresh_process(package, load_options=", visible_gpu=0")
    assert report["error"] is None, report
    assert report["out"] == [2.0, 2.0, 2.0]
    assert report["backends"] == [f"libneuropods_torchscript-torch{release_of(torch.__version__)}.so"]
