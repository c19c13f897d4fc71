"""Models in forked children. A fork copies memory but only the calling
thread, so frameworks whose thread pools the parent started would wait for
threads that do not exist. TorchScript runs in the child (its backend runs ops
single-threaded on the forking thread); TensorFlow is refused with
UnsafeAfterForkError unless no TF model ever had a pool (inter_op_threads=0
and intra_op_threads=1); python models run.

Each case runs in a fresh process (the parent) that forks a real child. The
child reports through a pipe and is killed by SIGALRM if it hangs, so a hang
fails the test instead of blocking the runner."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import subprocess
import sys
import textwrap
from typing import Dict

import numpy as np
import pytest
import tensorflow as tf
import torch

from neuropods.packagers import create_python_neuropod, create_tensorflow_neuropod

# A child that has not answered after this many seconds hangs (a run here
# takes milliseconds).
CHILD_ALARM_S = 30

SPEC_IN = [{"name": "x", "dtype": "float32", "shape": ("n", "n")}, {"name": "y", "dtype": "float32", "shape": ("n", "n")}]
SPEC_OUT = [{"name": "out", "dtype": "float32", "shape": ("n",)}]


class MatMul(torch.nn.Module):
    """Big enough inputs (600x600) make libtorch run OpenMP threads."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {"out": (x @ y).sum(dim=0)}


def matmul_graph_def():
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, None], name="x")
        y = tf.compat.v1.placeholder(tf.float32, [None, None], name="y")
        tf.reduce_sum(tf.matmul(x, y), axis=0, name="out")
    return g.as_graph_def()


@pytest.fixture(scope="module")
def packages(make_package, tmp_path_factory):
    root = tmp_path_factory.mktemp("fork")
    tf_path = str(root / "tf_matmul")
    create_tensorflow_neuropod(
        neuropod_path=tf_path, model_name="tf_matmul", input_spec=SPEC_IN, output_spec=SPEC_OUT,
        node_name_mapping={"x": "x:0", "y": "y:0", "out": "out:0"}, graph_def=matmul_graph_def(),
    )
    code = root / "src" / "mm"
    code.mkdir(parents=True)
    (code / "__init__.py").write_text("")
    (code / "entry.py").write_text(
        "import numpy as np\n\ndef get(root):\n    return lambda x, y: {'out': (x @ y).sum(axis=0)}\n"
    )
    py_path = str(root / "py_matmul")
    create_python_neuropod(
        py_path, "py_matmul", data_paths=[], code_path_spec=[{"python_root": str(root / "src"), "dirs_to_package": ["mm"]}],
        entrypoint_package="mm.entry", entrypoint="get", input_spec=SPEC_IN, output_spec=SPEC_OUT,
    )
    return {
        "torchscript": make_package("torch_matmul", MatMul(), SPEC_IN, SPEC_OUT),
        "tensorflow": tf_path,
        "python": py_path,
    }


PARENT = """
    import os, signal, sys
    import numpy as np
    import neuropods_native
    from neuropods.loader import load_neuropod

    package, parent_options, parent_runs, child_options = {args!r}

    def run(model):
        n = 600
        x = np.full((n, n), 0.5, np.float32)
        y = np.eye(n, dtype=np.float32)
        np.testing.assert_allclose(model.infer({{"x": x, "y": y}})["out"], np.full(n, n * 0.5), rtol=1e-5)

    model = load_neuropod(package, **parent_options) if parent_options is not None else None
    if parent_runs:
        run(model)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        # The default action of SIGALRM ends the process even inside C code.
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm({alarm})
        try:
            # None: run the parent's model; else load one here (after the fork).
            run(model if child_options is None else load_neuropod(package, **child_options))
            answer = "ok"
        except neuropods_native.NeuropodError as e:
            answer = type(e).__name__ + ": " + str(e)
        os.write(write_end, answer.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as answers:
        answer = answers.read().decode()
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        answer = "child killed by signal %d (a hang)" % os.WTERMSIG(status)
    if model is not None:
        run(model)  # the parent's model still runs in the parent
    print(answer)
"""


def run_fork_case(package, parent_options, parent_runs, child_options):
    """The child's answer: 'ok', or the error class and message it got."""
    script = textwrap.dedent(
        PARENT.format(args=(package, parent_options, parent_runs, child_options), alarm=CHILD_ALARM_S)
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=CHILD_ALARM_S * 4
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


SAFE_TF = {"inter_op_threads": 0, "intra_op_threads": 1}


@pytest.mark.parametrize(
    "platform, parent_options, parent_runs, child_options",
    [
        # libgomp's pool of the forking thread is lost: hung before the fix.
        ("torchscript", {}, True, None),
        # ... also for a model the child loads itself (the pool is per thread).
        ("torchscript", {}, True, {}),
        ("torchscript", {}, False, None),
        ("torchscript", {"intra_op_threads": 1}, True, None),
        # TF with no pool anywhere: ops run on the calling thread.
        ("tensorflow", SAFE_TF, True, None),
        ("tensorflow", SAFE_TF, True, SAFE_TF),
        # No TF session before the fork: the child is like a fresh process.
        ("tensorflow", None, False, {}),
        ("python", {}, True, None),
        ("python", {}, True, {}),
    ],
)
def test_supported_after_fork(packages, platform, parent_options, parent_runs, child_options):
    assert run_fork_case(packages[platform], parent_options, parent_runs, child_options) == "ok"


@pytest.mark.parametrize(
    "parent_options, parent_runs, child_options",
    [
        # Default options: TF's inter-op pool. Hangs even without a run.
        ({}, False, None),
        ({}, True, None),
        # The pools are process-wide: a model loaded in the child hangs too.
        ({}, True, {}),
        ({}, True, SAFE_TF),
        # Only the inter-op pool avoided: ops big enough to split hang.
        ({"inter_op_threads": 0}, True, None),
        # A parent without pools, a child model with them (they exist).
        (SAFE_TF, True, {}),
    ],
)
def test_tensorflow_refused_after_fork(packages, parent_options, parent_runs, child_options):
    answer = run_fork_case(packages["tensorflow"], parent_options, parent_runs, child_options)
    assert answer.startswith("UnsafeAfterForkError: tensorflow model cannot run in process "), answer
    assert "forked from process" in answer and "post_fork" in answer
    assert "inter_op_threads=0 and intra_op_threads=1" in answer


def test_unsafe_after_fork_error_is_a_neuropod_error():
    import neuropods_native

    assert issubclass(neuropods_native.UnsafeAfterForkError, neuropods_native.NeuropodError)
    assert issubclass(neuropods_native.UnsafeAfterForkError, RuntimeError)
