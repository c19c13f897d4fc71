"""Packaging is atomic: a packager interrupted while it writes (Ctrl-C, a
kill) leaves nothing at the target path, never a partial package that
would load. Interrupts are real (a SIGINT or SIGKILL sent to the packaging
process) and land at a chosen point of the write: a trace hook counts the
calls of the function doing the writing and sends the signal on the n-th."""

import os
import signal
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

import neuropods_native
from neuropods.loader import load_neuropod
from neuropods.packagers import create_python_neuropod

SPEC = [{"name": "x", "dtype": "float32", "shape": (None,)}]

# Packages a python model with a 1 MiB data file (128 chunks of zipfile's
# 8 KiB copy loop), sending `SIGNAL` to itself on the `NTH` call of
# `FUNCTION` (module, qualified name). Run in the test process or a child.
PACKAGER = """
import os, signal, sys, zipfile
from neuropods.packagers import _common, create_python_neuropod

def interrupt_on_call(code, nth, signum):
    calls = 0

    def trace(frame, event, arg):
        nonlocal calls
        if event == "call" and frame.f_code is code:
            calls += 1
            if calls == nth:
                signal.raise_signal(signum)

    sys.settrace(trace)


def package(workdir, target, as_zip, function, nth, signum):
    code_root = os.path.join(workdir, "src")
    os.makedirs(os.path.join(code_root, "model"), exist_ok=True)
    with open(os.path.join(code_root, "model", "__init__.py"), "w") as f:
        f.write("def get_model(data_root):\\n    return lambda x: {'x': x}\\n")
    data = os.path.join(workdir, "weights.bin")
    with open(data, "wb") as f:
        f.write(os.urandom(1 << 20))
    interrupt_on_call(function, nth, signum)
    try:
        create_python_neuropod(
            target, "interrupted", data_paths=[{"path": data, "packaged_name": "weights.bin"}],
            code_path_spec=[{"python_root": code_root}], entrypoint_package="model", entrypoint="get_model",
            input_spec=[{"name": "x", "dtype": "float32", "shape": (None,)}],
            output_spec=[{"name": "x", "dtype": "float32", "shape": (None,)}],
            package_as_zip=as_zip,
        )
    finally:
        sys.settrace(None)
"""

# Where each kind of package is being written when the signal comes: the
# 50th chunk of the data file going into the zip; the folder's backend
# config, after code and data were copied in.
WRITING = {
    True: ("zipfile._ZipWriteFile.write.__code__", 50),
    False: ("_common.write_backend_config.__code__", 1),
}


def _packager():
    namespace = {}
    exec(compile(PACKAGER, "packager", "exec"), namespace)
    return namespace


def _leftovers(folder):
    return sorted(n for n in os.listdir(folder) if n.startswith(".neuropod-"))


@pytest.mark.parametrize("as_zip", [True, False])
def test_ctrl_c_while_writing_leaves_nothing(tmp_path, as_zip):
    workdir, out = tmp_path / "work", tmp_path / "out"
    workdir.mkdir()
    out.mkdir()
    target = out / ("model.zip" if as_zip else "model")
    packager = _packager()
    function, nth = WRITING[as_zip]
    code = eval(function, packager)
    with pytest.raises(KeyboardInterrupt):
        packager["package"](str(workdir), str(target), as_zip, code, nth, signal.SIGINT)
    assert os.listdir(out) == [], "an interrupted packager left files behind"
    with pytest.raises(neuropods_native.PackageNotFoundError):
        load_neuropod(target)
    # Nothing blocks the next attempt, which makes a complete package.
    packager["package"](str(workdir), str(target), as_zip, code, 0, signal.SIGINT)
    with load_neuropod(target) as model:
        np.testing.assert_array_equal(model.infer({"x": np.arange(3, dtype=np.float32)})["x"], [0, 1, 2])
    if as_zip:
        assert "0/data/weights.bin" in zipfile.ZipFile(target).namelist()


@pytest.mark.parametrize("as_zip", [True, False])
def test_killed_while_writing_leaves_no_package(tmp_path, as_zip):
    workdir, out = tmp_path / "work", tmp_path / "out"
    workdir.mkdir()
    out.mkdir()
    target = out / ("model.zip" if as_zip else "model")
    function, nth = WRITING[as_zip]
    child = PACKAGER + textwrap.dedent(
        f"""
        package({str(workdir)!r}, {str(target)!r}, {as_zip}, {function}, {nth}, signal.SIGKILL)
        print("not killed")
        """
    )
    result = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=300)
    assert result.returncode == -signal.SIGKILL, (result.returncode, result.stdout, result.stderr[-3000:])
    assert not target.exists()
    with pytest.raises(neuropods_native.PackageNotFoundError):
        load_neuropod(target)
    # The kill came mid-write: the half-written package is in the temporary
    # folder beside the target (a killed process cannot remove it).
    (work,) = _leftovers(out)
    if as_zip:
        partial = out / work / "package.zip"
        assert 0 < partial.stat().st_size < 1 << 20
    else:
        partial = out / work / "package"
        assert (partial / "0" / "data" / "weights.bin").is_file()
        assert not (partial / "0" / "config.json").exists()
