"""One model shared by many threads, and the GIL released while it runs."""

import ctypes
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

import models_for_tests as M
from helpers import load, spec

THREADS = 8
CALLS = 200


def test_shared_mlp_many_threads(mlp_package, mlp_module):
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((1 + i % 5, 8)).astype(np.float32) for i in range(THREADS * 25)]
    with torch.no_grad():
        expected = [mlp_module(torch.from_numpy(x)).numpy() for x in inputs]
    with load(mlp_package) as model:
        with ThreadPoolExecutor(THREADS) as pool:
            outputs = list(pool.map(lambda x: model.infer({"x": x})["out"], inputs))
    for out, exp in zip(outputs, expected):
        np.testing.assert_allclose(out, exp, rtol=1e-5, atol=1e-6)


def test_string_model_many_threads(strings_package):
    with load(strings_package) as model:

        def work(t):
            for i in range(50):
                words = np.array([f"t{t}-i{i}-{k}" for k in range(1 + i % 4)])
                out = model.infer({"words": words})["upper"]
                if out.tolist() != [w.upper() for w in words.tolist()]:
                    return (t, i, out)
            return None

        with ThreadPoolExecutor(THREADS) as pool:
            assert list(pool.map(work, range(THREADS))) == [None] * THREADS


# ------------------------------------------------------------------ the GIL


CALL_SECONDS = 0.12
MARGIN = 0.04


@pytest.fixture(scope="module")
def slow_model(make_package):
    path = make_package(
        "slow",
        M.SlowModel(),
        [spec("x", "float32", ("n", "n")), spec("steps", "int64", ())],
        [spec("y", "float32", ("n", "n"))],
    )
    # One libtorch thread per call (libtorch's setting is process-wide and
    # shared with torch): fewer runnable threads when the machine is busy.
    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)
    model = load(path)
    x = np.random.default_rng(0).random((256, 256), dtype=np.float32) / 256
    # Calibrate: about CALL_SECONDS per call on this machine (long enough
    # that a busy machine's scheduling hiccups stay well inside MARGIN).
    model.infer({"x": x, "steps": np.array(5)})
    start = time.perf_counter()
    model.infer({"x": x, "steps": np.array(40)})
    per_step = (time.perf_counter() - start) / 40
    steps = int(min(4000, max(20, CALL_SECONDS / max(per_step, 1e-6))))
    yield model, x, steps
    model.close()
    torch.set_num_threads(threads_before)


def _main_thread_progress(call, threads, calls):
    """Runs `call` `calls` times in each of `threads` threads while this
    thread counts. Returns (samples inside calls, calls with a sample inside,
    number of calls, counter): a sample is a timestamp this thread took,
    "inside" means more than MARGIN after a call began and before it ended."""
    margin = MARGIN
    windows = []
    lock = threading.Lock()

    def worker():
        for _ in range(calls):
            t0 = time.perf_counter()
            call()
            t1 = time.perf_counter()
            with lock:
                windows.append((t0, t1))

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for w in workers:
        w.start()
    counter = 0
    samples = []
    last = 0.0
    while any(w.is_alive() for w in workers):
        counter += 1
        now = time.perf_counter()
        if now - last > 0.0005:
            samples.append(now)
            last = now
    for w in workers:
        w.join()
    inside = [s for s in samples if any(a + margin < s < b - margin for a, b in windows)]
    windows_hit = sum(1 for a, b in windows if any(a + margin < s < b - margin for s in samples))
    return len(inside), windows_hit, len(windows), counter


def test_gil_released_during_inference(slow_model):
    """Two threads run ~120 ms calls while this thread counts; it must keep
    counting in the middle of the calls, unlike during a call of the same
    length that holds the GIL. Timing-based, so each side gets a few tries
    and only the comparison is asserted."""
    model, x, steps = slow_model
    expected = M.SlowModel()(torch.from_numpy(x), torch.tensor(steps))["y"].numpy()
    results = []

    def call():
        results.append(model.infer({"x": x, "steps": np.array(steps)})["y"])

    # Control: builtin sum over a range runs in C without releasing the GIL.
    n = 200_000
    start = time.perf_counter()
    sum(range(n))
    n = int(CALL_SECONDS / max((time.perf_counter() - start) / n, 1e-9))
    _, control_hit, control_total, _ = _main_thread_progress(lambda: sum(range(n)), threads=1, calls=3)
    control_rate = control_hit / control_total

    attempts = []
    for _ in range(3):
        inside, hit, total, counter = _main_thread_progress(call, threads=2, calls=3)
        attempts.append((inside, hit, total, counter))
        if hit >= 1 and hit / total > control_rate:
            break
    else:
        pytest.fail(f"this thread made no progress during inference: {attempts}, control {control_hit}/{control_total}")
    assert counter > 0
    assert len(results) == 6 * len(attempts)
    for r in results:
        np.testing.assert_allclose(r, expected, rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def handshake_package(make_package):
    return make_package(
        "handshake",
        M.HandshakeModel(),
        [spec("flag", "int32", (2,)), spec("limit", "int64", ())],
        [spec("polls", "int64", (1,))],
    )


def test_gil_released_handshake(handshake_package):
    """Deterministic: the model marks flag[1] when it starts (inputs are
    zero-copy numpy memory), then polls flag[0]. This thread waits for the
    mark and sets flag[0]. That only works if this thread runs Python while
    the model runs; with the GIL held it would see the mark only after the
    model gave up after `limit` polls."""
    limit = 5_000_000  # a few seconds of polling: only reached on failure
    with load(handshake_package) as model:
        flag = np.zeros(2, np.int32)
        result = {}
        worker = threading.Thread(target=lambda: result.update(model.infer({"flag": flag, "limit": np.array(limit)})))
        worker.start()
        counter = 0
        while flag[1] == 0 and worker.is_alive():
            counter += 1
        flag[0] = 1
        worker.join()
    assert flag[1] == 1, "the model never ran"
    assert result["polls"][0] < limit, f"this thread could not run while the model did (counted {counter})"


@pytest.mark.parametrize("which", ["folder", "zip"])
def test_concurrent_loads(addition_package, addition_zip_package, which):
    path = addition_package if which == "folder" else addition_zip_package

    def work(t):
        for i in range(4):
            with load(path) as model:
                x = np.full(3, t, np.float32)
                y = np.full(3, i, np.float32)
                out = model.infer({"x": x, "y": y})["out"]
                if out.tolist() != [float(t + i)] * 3:
                    return (t, i, out)
        return None

    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(work, range(6))) == [None] * 6


def openmp_threads_of_this_thread() -> int:
    """The calling thread's OpenMP thread count, as libtorch's parallel ops
    see it (torch.get_num_threads reports a process-wide value instead)."""
    with open("/proc/self/maps") as maps:
        [path] = {line.split()[-1] for line in maps if line.rstrip().endswith("/libgomp.so.1")}
    return ctypes.CDLL(path).omp_get_max_threads()


def test_intra_op_threads_hold_on_every_calling_thread(addition_package):
    # libtorch's intra-op pool is OpenMP, whose thread count is per thread:
    # set at load, it must still apply when another thread calls the model,
    # or concurrent callers oversubscribe the cores.
    def in_new_thread(fn):
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(fn).result()

    default = in_new_thread(openmp_threads_of_this_thread)
    wanted = default + 1
    model = load(addition_package, intra_op_threads=wanted)
    x = np.ones(3, np.float32)

    def call_then_ask():
        model.infer({"x": x, "y": x})
        return openmp_threads_of_this_thread()

    try:
        assert in_new_thread(openmp_threads_of_this_thread) == default  # the load alone did not reach it
        assert in_new_thread(call_then_ask) == wanted
    finally:
        model.close()
