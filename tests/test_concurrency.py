"""Concurrency on every platform: one model shared by 8 threads, models of
the three platforms interleaved across threads in one process, and a model
closed while other threads are still calling it."""

import concurrent.futures
import threading
import time

import numpy as np
import pytest

import neuropods_native
from helpers import load, package_tf_addition
from neuropods.packagers import create_python_neuropod

THREADS = 8
CALLS = 150
SPEC_IN = [{"name": "x", "dtype": "float32", "shape": ("n",)}, {"name": "y", "dtype": "float32", "shape": ("n",)}]
SPEC_OUT = [{"name": "out", "dtype": "float32", "shape": ("n",)}]


@pytest.fixture(scope="module")
def tensorflow_addition(tmp_path_factory):
    return package_tf_addition(tmp_path_factory.mktemp("tf") / "addition", SPEC_IN, SPEC_OUT, "addition")


@pytest.fixture(scope="module")
def python_addition(tmp_path_factory):
    root = tmp_path_factory.mktemp("py")
    (root / "src" / "adder").mkdir(parents=True)
    (root / "src" / "adder" / "__init__.py").write_text(
        "def get_model(data_root):\n    return lambda x, y: {'out': x + y}\n"
    )
    create_python_neuropod(
        root / "addition", "addition", data_paths=[],
        code_path_spec=[{"python_root": str(root / "src"), "dirs_to_package": ["adder"]}],
        entrypoint_package="adder", entrypoint="get_model", input_spec=SPEC_IN, output_spec=SPEC_OUT,
    )
    return str(root / "addition")


@pytest.fixture
def packages(addition_package, tensorflow_addition, python_addition):
    return {"torchscript": addition_package, "tensorflow": tensorflow_addition, "python": python_addition}


def call_checked(model, thread: int, i: int):
    """One call with inputs unique to (thread, i); the wrong answer if any."""
    n = 1 + (thread * 7 + i) % 13
    x = np.arange(n, dtype=np.float32) + thread * 1000
    y = np.full(n, i, np.float32)
    out = model.infer({"x": x, "y": y})["out"]
    if out.shape != (n,) or not np.array_equal(out, x + y):
        return (thread, i, out)
    return None


def run_threads(work):
    barrier = threading.Barrier(THREADS)

    def start(t):
        barrier.wait()
        return work(t)

    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        return [bad for found in pool.map(start, range(THREADS)) for bad in found]


@pytest.mark.parametrize("platform", ["torchscript", "tensorflow", "python"])
def test_one_model_shared_by_8_threads(packages, platform):
    with load(packages[platform]) as model:
        wrong = run_threads(lambda t: [b for i in range(CALLS) if (b := call_checked(model, t, i))])
    assert wrong == []


def test_three_platforms_interleaved_across_threads(packages):
    models = [load(path) for path in packages.values()]
    try:
        wrong = run_threads(
            lambda t: [b for i in range(CALLS) if (b := call_checked(models[(t + i) % 3], t, i))]
        )
    finally:
        for model in models:
            model.close()
    assert wrong == []


@pytest.mark.parametrize("platform", ["torchscript", "tensorflow", "python"])
def test_close_while_other_threads_infer(packages, platform):
    # Raise one Neuropods error first: the first one of a process used to
    # deadlock when raised under contention (test_subprocesses covers that
    # in a fresh process, with a timeout); should it come back, this
    # in-process test must not hang the whole suite.
    with pytest.raises(neuropods_native.SerializationError):
        neuropods_native.deserialize(b"")
    model = load(packages[platform])
    started = threading.Barrier(5)
    problems = []

    def work():
        x = np.ones(100, np.float32)
        started.wait()
        deadline = time.perf_counter() + 30
        while time.perf_counter() < deadline:
            try:
                out = model.infer({"x": x, "y": x})["out"]
            except neuropods_native.ModelClosedError:
                return
            if not np.array_equal(out, x * 2):
                problems.append(out)
        problems.append("never saw the model closed")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    started.wait()
    time.sleep(0.01)
    model.close()
    for thread in threads:
        thread.join()
    assert problems == []
