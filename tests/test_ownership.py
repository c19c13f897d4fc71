"""Memory ownership across the backend ABI, allocations sized by data, and
exceptions that must reach the caller as themselves.

Models here keep their inputs past the call (a history, a module attribute,
a TF variable) while the caller frees its arrays and reuses the memory.
Each runs in a fresh process, so that a use after free that crashes is a
failed test, not a dead test runner.
"""

import os
import signal
import subprocess
import sys
import textwrap
import threading
from typing import List

import numpy as np
import pytest
import torch

import neuropods_native
from neuropods.loader import load_neuropod
from neuropods.packagers import (
    create_python_neuropod,
    create_tensorflow_neuropod,
    create_torchscript_neuropod,
)
from neuropods_native import deserialize, serialize
from helpers import script, write_tree

# 512 KiB of float32 per call, as in the report of the defect.
N = 131072
CALLS = 200


def python_package(tmp_path, name, body, input_spec, output_spec):
    """A python-platform package whose model is `body` (the source of a
    class `Model(data_root)`)."""
    code = write_tree(tmp_path / f"{name}_src", {f"{name}/__init__.py": "", f"{name}/main.py": body})
    path = tmp_path / name
    create_python_neuropod(
        path, name, data_paths=[],
        code_path_spec=[{"python_root": code, "dirs_to_package": [""]}],
        entrypoint_package=f"{name}.main", entrypoint="Model",
        input_spec=input_spec, output_spec=output_spec,
    )
    return str(path)


X_SPEC = [{"name": "x", "dtype": "float32", "shape": (None,)}]


def run_script(code, timeout=300):
    """Runs `code` in a fresh interpreter; a crash shows as a return code."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=timeout,
    )


# The caller's side of every keeping test: call i passes an array full of i,
# frees it, and fills fresh arrays of the same size (which take the freed
# memory when nothing keeps it alive) with -7. `check(model)` then reads
# back what the model kept.
KEEPING_CALLER = f"""
    import gc, json, sys
    import numpy as np
    from neuropods.loader import load_neuropod

    N, CALLS = {N}, {CALLS}

    def aligned(n):
        # 64-byte aligned, so that TF feeds it in place instead of copying.
        raw = np.empty(n * 4 + 64, np.uint8)
        start = -raw.ctypes.data % 64
        return raw[start:start + n * 4].view(np.float32)

    reuse = []
    with load_neuropod(sys.argv[1]) as model:
        for i in range(CALLS):
            x = aligned(N)
            x[:] = i
            model.infer({{"x": x}})
            del x
            gc.collect()
            reuse.append(np.full(N, -7.0, np.float32))
        seen = check(model)
    print(json.dumps(seen))
"""


def run_keeping_caller(package, check):
    code = textwrap.dedent(check) + textwrap.dedent(KEEPING_CALLER)
    result = subprocess.run(
        [sys.executable, "-c", code, package], capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, f"the caller died ({result.returncode}): {result.stderr[-3000:]}"
    import json

    return json.loads(result.stdout.strip().splitlines()[-1])


# The keeping models below answer an empty input with the sums of every
# input they kept (this one included), any other with nothing.
SUMS_CHECK = """
    def check(model):
        return model.infer({"x": np.zeros(0, np.float32)})["sums"].tolist()
"""


def expected_sums():
    return [float(i) * N for i in range(CALLS)] + [0.0]


def test_python_model_keeping_inputs_keeps_their_memory(tmp_path):
    package = python_package(
        tmp_path, "keeper",
        """
        import numpy as np

        class Model:
            def __init__(self, data_root):
                self.kept = []

            def __call__(self, x):
                self.kept.append(x)
                if x.size:
                    return {"sums": np.zeros(0)}
                return {"sums": np.array([k.sum(dtype=np.float64) for k in self.kept])}
        """,
        X_SPEC, [{"name": "sums", "dtype": "float64", "shape": (None,)}],
    )
    assert run_keeping_caller(package, SUMS_CHECK) == expected_sums()


class KeepingModule(torch.nn.Module):
    kept: List[torch.Tensor]

    def __init__(self):
        super().__init__()
        self.kept = []

    def forward(self, x):
        self.kept.append(x)
        if x.numel() > 0:
            return {"sums": torch.zeros(0, dtype=torch.float64)}
        return {"sums": torch.stack([k.sum(dtype=torch.float64) for k in self.kept])}


def test_torchscript_module_keeping_inputs_keeps_their_memory(tmp_path):
    path = tmp_path / "keeper"
    create_torchscript_neuropod(
        neuropod_path=path, model_name="keeper", module=script(KeepingModule()),
        input_spec=X_SPEC, output_spec=[{"name": "sums", "dtype": "float64", "shape": (None,)}],
    )
    assert run_keeping_caller(str(path), SUMS_CHECK) == expected_sums()


def test_tensorflow_variable_holding_the_last_input(tmp_path):
    # A resource variable assigned the fed tensor may take its buffer
    # instead of copying it; the next call reads it back.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    class Last(tf.Module):
        def __init__(self):
            self.v = tf.Variable(tf.zeros([0]), shape=tf.TensorShape([None]))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def __call__(self, x):
            previous = tf.identity(self.v.read_value())
            with tf.control_dependencies([previous]):
                self.v.assign(x)
            return {"previous": previous}

    path = tmp_path / "last"
    create_tensorflow_neuropod(
        neuropod_path=path, model_name="last", trackable_obj=Last(),
        input_spec=X_SPEC, output_spec=[{"name": "previous", "dtype": "float32", "shape": (None,)}],
    )
    check = f"""
        def check(model):
            previous = model.infer({{"x": np.zeros({N}, np.float32)}})["previous"]
            return sorted(set(previous.tolist()))
    """
    assert run_keeping_caller(str(path), check) == [float(CALLS - 1)]


def test_outputs_and_kept_inputs_outlive_the_model(tmp_path):
    # The python model returns one of its own arrays and keeps the input;
    # both stay valid after close, in the same process.
    package = python_package(
        tmp_path, "echo",
        """
        class Model:
            def __init__(self, data_root):
                self.kept = []

            def __call__(self, x):
                self.kept.append(x)
                return {"y": x * 2}
        """,
        X_SPEC, [{"name": "y", "dtype": "float32", "shape": (None,)}],
    )
    x = np.arange(10, dtype=np.float32)
    with load_neuropod(package) as model:
        y = model.infer({"x": x})["y"]
    del model
    np.testing.assert_array_equal(y, np.arange(10, dtype=np.float32) * 2)


# ------------------------------------------------- allocations sized by data

# One 1 MB string and 99,999 short ones: about 2 MiB as UTF-8, but 400 GB
# as fixed-width unicode (count x longest x 4 bytes).
LOPSIDED_STRINGS = """
    import numpy as np
    strings = np.empty(100_000, dtype=object)
    strings[:] = "ab"
    strings[0] = "x" * 1_000_000
"""


def test_deserializing_lopsided_strings_does_not_abort():
    result = run_script(LOPSIDED_STRINGS + """
    from neuropods_native import deserialize, serialize
    blob = serialize(strings)
    print(len(blob))
    out = deserialize(blob)
    assert out.shape == (100_000,), out.shape
    assert out[0] == "x" * 1_000_000 and out[1] == "ab" and out[-1] == "ab"
    print(out.dtype.kind, out.nbytes)
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    blob_size, (kind, nbytes) = result.stdout.split("\n")[0], result.stdout.split("\n")[1].split()
    assert int(blob_size) < 3 * 2**20
    if int(np.__version__.split(".")[0]) >= 2:
        # Variable-width strings: 16 bytes a string in the array itself.
        assert kind == "T" and int(nbytes) <= 16 * 100_000


def test_model_returning_lopsided_strings_does_not_abort(tmp_path):
    package = python_package(
        tmp_path, "lopsided",
        textwrap.dedent(LOPSIDED_STRINGS) + textwrap.dedent("""
        class Model:
            def __init__(self, data_root):
                pass

            def __call__(self, x):
                return {"words": strings}
        """),
        X_SPEC, [{"name": "words", "dtype": "string", "shape": (None,)}],
    )
    result = run_script(f"""
    import numpy as np
    from neuropods.loader import load_neuropod
    with load_neuropod({package!r}) as model:
        words = model.infer({{"x": np.zeros(1, np.float32)}})["words"]
    assert words.shape == (100_000,) and len(words[0]) == 1_000_000 and words[1] == "ab"
    print("ok")
    """)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]


def _blob(dtype_code, dims, payload=b""):
    """One serialized tensor, laid out as docs/serialization.md says."""
    import struct

    blob = b"NEUROPOD" + struct.pack("<HHI", 1, 0, 1)
    blob += struct.pack("<III", 0, dtype_code, len(dims))
    blob += b"".join(struct.pack("<Q", d) for d in dims)
    blob += struct.pack("<Q", len(payload))
    blob += b"\0" * (-len(blob) % 64)
    return blob + payload


@pytest.mark.parametrize(
    "dims, culprit",
    [
        ([0, 2**63], "too large"),
        ([0, 2**62, 2**62], "too large"),
        ([1] * 65, "rank 65"),
    ],
)
@pytest.mark.parametrize("dtype_code", [2, 13], ids=["float32", "string"])
def test_deserialize_shapes_beyond_memory_are_serialization_errors(dims, culprit, dtype_code):
    with pytest.raises(neuropods_native.SerializationError, match=culprit):
        deserialize(_blob(dtype_code, dims))


# --------------------------------------------------- exceptions as themselves


@pytest.mark.parametrize(
    "call, culprit",
    [
        (lambda model: model.infer({"x": np.array(["a\ud800"])}), "element 0"),
        (lambda model: model.infer({"x": np.array(["ok", "a\ud800"], dtype=object)}), "element 1 is a str"),
        (lambda model: model.infer({"\ud800": np.zeros(1, np.float32)}), "\\ud800"),
    ],
    ids=["unicode-array", "object-array", "input-name"],
)
def test_lone_surrogates_are_input_type_errors(addition_package, call, culprit):
    with load_neuropod(addition_package) as model:
        with pytest.raises(neuropods_native.InputTypeError) as info:
            call(model)
    assert type(info.value) is neuropods_native.InputTypeError
    assert culprit in str(info.value)


@pytest.mark.parametrize(
    "value",
    [np.array(["\ud800"]), {"\ud800": np.zeros(1)}, {"x": np.array(["a", "\udfff"], dtype=object)}],
    ids=["unicode-array", "key", "object-array"],
)
def test_serialize_lone_surrogates_is_input_type_error(value):
    with pytest.raises(neuropods_native.InputTypeError):
        serialize(value)


def raising_package(tmp_path, name, statement):
    return python_package(
        tmp_path, name,
        f"""
        import sys

        class Model:
            def __init__(self, data_root):
                pass

            def __call__(self, x):
                {statement}
        """,
        X_SPEC, [{"name": "y", "dtype": "float32", "shape": (None,)}],
    )


@pytest.mark.parametrize(
    "statement, expected, code",
    [
        ("raise KeyboardInterrupt", KeyboardInterrupt, None),
        ("sys.exit(3)", SystemExit, 3),
        ("sys.exit()", SystemExit, None),
        ("sys.exit('bye')", SystemExit, "bye"),
        ("raise MemoryError('too big')", MemoryError, None),
    ],
    ids=["KeyboardInterrupt", "exit-3", "exit-none", "exit-text", "MemoryError"],
)
def test_control_flow_exceptions_of_a_model_reach_the_caller(tmp_path, statement, expected, code):
    package = raising_package(tmp_path, "raiser", statement)
    with load_neuropod(package) as model:
        try:
            model.infer({"x": np.zeros(1, np.float32)})
        except Exception as e:  # what `except Exception` would swallow
            if expected is not MemoryError:
                pytest.fail(f"{statement} came back as {type(e).__name__}: {e}")
            assert isinstance(e, MemoryError) and isinstance(e, neuropods_native.NeuropodError)
            assert "too big" in str(e)
        except BaseException as e:
            assert type(e) is expected
            if expected is SystemExit:
                assert e.code == code
        else:
            pytest.fail("no exception")


def test_ctrl_c_during_a_python_model_interrupts_the_caller(tmp_path):
    # A real SIGINT, sent while the model spins in pure Python.
    package = raising_package(
        tmp_path, "spinner",
        "import time\n                end = time.time() + 30\n"
        "                while time.time() < end:\n                    pass\n"
        "                return {'y': x}",
    )
    result = run_script(f"""
    import numpy as np, os, signal, threading, time
    from neuropods.loader import load_neuropod
    with load_neuropod({package!r}) as model:
        threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
        start = time.time()
        try:
            model.infer({{"x": np.zeros(1, np.float32)}})
        except Exception as e:
            print("swallowed", type(e).__name__)
        except KeyboardInterrupt:
            print("interrupted after", round(time.time() - start))
    """, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "interrupted after" in result.stdout, result.stdout
