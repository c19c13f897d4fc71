"""Out-of-process execution (`use_ope=True`): every platform gives what it
gives in-process; real faults (a segfault, `os._exit`, SIGKILL and SIGSTOP
of the worker, death while loading) fail one call with WorkerError and the
next call runs on a new worker; a closed model or a killed caller leaves no
worker and no shared memory; inputs allocated in shared memory and outputs
reach the other side without a copy."""

import os
import signal
import statistics
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import numpy as np
import pytest
import torch

import models_for_tests as M
from neuropods.loader import load_neuropod
from neuropods_native import errors
from helpers import (
    ADD_INPUT_SPEC,
    ADD_OUTPUT_SPEC,
    STRING_KIND,
    make_venv,
    package_tf_addition,
    python_package,
    spec,
)





def until(condition, within=5.0):
    """Whether `condition()` holds within `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def process_gone(pid, within=5.0):
    """Whether process `pid` ends (or is a zombie, holding nothing) within
    `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def ts_addition(make_package):
    return make_package("ope_addition", M.AdditionModel(), ADD_INPUT_SPEC, ADD_OUTPUT_SPEC)


@pytest.fixture(scope="module")
def tf_addition(tmp_path_factory):
    return package_tf_addition(tmp_path_factory.mktemp("ope_tf") / "addition")


@pytest.fixture(scope="module")
def py_addition(tmp_path_factory):
    code = """
        def get_model(data_root):
            def add(x, y):
                if x.size and x[0] == -1:
                    raise ValueError("the model refuses -1")
                return {"out": x + y}
            return add
    """
    return python_package(tmp_path_factory.mktemp("ope_py"), "py_addition", code, ADD_INPUT_SPEC, ADD_OUTPUT_SPEC)


# A python model that fails as its first input asks: x[0] == 1 segfaults,
# 2 calls os._exit(3), 3 sleeps (to be killed or stopped from outside);
# 4 is slow (3 s, longer than a hung worker is given) and then answers;
# anything else returns x * 2. It writes a line to stderr first.
FAULTY = """
    import ctypes, os, sys, time

    def get_model(data_root):
        def run(x):
            action = int(x[0]) if x.size else 0
            if action in (1, 2, 3):
                print(f"fault {action} coming", file=sys.stderr, flush=True)
            if action == 1:
                ctypes.string_at(0)
            if action == 2:
                os._exit(3)
            if action == 3:
                time.sleep(60)
            if action == 4:
                time.sleep(3)
            return {"out": x * 2}
        return run
"""


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    return python_package(tmp_path_factory.mktemp("ope_faulty"), "faulty", FAULTY)


def add_inputs():
    return {"x": np.array([1.0, 2.0, 3.0], np.float32), "y": np.array([0.5, 0.25, -1.0], np.float32)}


@pytest.mark.parametrize("platform", ["torchscript", "tensorflow", "python"])
def test_a_model_in_a_worker_is_the_same_model(platform, ts_addition, tf_addition, py_addition):
    path = {"torchscript": ts_addition, "tensorflow": tf_addition, "python": py_addition}[platform]
    with load_neuropod(path) as here, load_neuropod(path, use_ope=True) as there:
        assert there.worker_pid not in (None, os.getpid())
        assert (there.name, there.platform, there.inputs, there.outputs) == (
            here.name, here.platform, here.inputs, here.outputs)
        expected = here.infer(add_inputs())
        got = there.infer(add_inputs())
        assert got.keys() == expected.keys()
        np.testing.assert_array_equal(got["out"], expected["out"])
        assert got["out"].dtype == np.float32 and not got["out"].flags.writeable
        # Spec violations are found in the caller, with the same error.
        for bad in (
            {"x": np.zeros(3, np.float64), "y": np.zeros(3, np.float32)},
            {"x": np.zeros(3, np.float32), "y": np.zeros(4, np.float32)},
            {**add_inputs(), "z": np.zeros(1, np.float32)},
        ):
            with pytest.raises(errors.SpecError) as in_process:
                here.infer(bad)
            with pytest.raises(type(in_process.value)) as out_of_process:
                there.infer(bad)
            assert str(out_of_process.value) == str(in_process.value)


def test_a_backend_error_crosses_with_its_message_and_traceback(py_addition, ts_addition):
    refused = {"x": np.array([-1.0], np.float32), "y": np.zeros(1, np.float32)}
    with load_neuropod(py_addition) as here, load_neuropod(py_addition, use_ope=True) as there:
        with pytest.raises(errors.BackendError) as in_process:
            here.infer(refused)
        with pytest.raises(errors.BackendError) as out_of_process:
            there.infer(refused)
        assert str(out_of_process.value) == str(in_process.value)
        # The message is the exception's own line; the traceback crosses
        # beside it, as the error's detail (for logs, not for clients).
        assert "the model refuses -1" in str(out_of_process.value)
        assert "Traceback" not in str(out_of_process.value)
        assert out_of_process.value.detail == in_process.value.detail
        assert "Traceback" in out_of_process.value.detail and "the model refuses -1" in out_of_process.value.detail
        # The worker is still good after an error.
        pid = there.worker_pid
        np.testing.assert_array_equal(there.infer(add_inputs())["out"], here.infer(add_inputs())["out"])
        assert there.worker_pid == pid
    # An error of another kind crosses as that kind.
    with load_neuropod(ts_addition, use_ope=True) as there:
        with pytest.raises(errors.InvalidInputError, match="missing input 'y': the model's forward requires it"):
            there.infer({"x": np.zeros(2, np.float32)})


def test_strings_cross_both_ways(tmp_path):
    code = """
        import numpy as np

        def get_model(data_root):
            return lambda words: {"upper": np.array([w.upper() for w in words.tolist()], dtype=object)}
    """
    path = python_package(tmp_path, "upper", code, [spec("words", "string", (None,))], [spec("upper", "string", (None,))])
    words = np.array(["héllo", "", "wörld" * 100], dtype=object)
    with load_neuropod(path) as here, load_neuropod(path, use_ope=True) as there:
        got = there.infer({"words": words})["upper"]
        assert got.dtype.kind == STRING_KIND
        assert got.tolist() == here.infer({"words": words})["upper"].tolist() == [w.upper() for w in words]


def test_more_tensors_than_one_message_carries_is_a_clear_error(tmp_path):
    names = [f"input_number_{i}" for i in range(6000)]
    code = "def get_model(data_root):\n    return lambda **inputs: {'out': inputs['input_number_0']}\n"
    path = python_package(tmp_path, "wide", code, [spec(n, "float32", (None,)) for n in names])
    x = np.ones(2, np.float32)
    with load_neuropod(path, use_ope=True) as model:
        pid = model.worker_pid
        for _ in range(3):
            with pytest.raises(errors.InvalidInputError, match="too many tensors for one call to a worker"):
                model.infer({n: x for n in names})
        # Nothing was sent, nothing is lost: the worker and its memory serve on.
        np.testing.assert_array_equal(model.infer({names[0]: x})["out"], x)
        assert model.worker_pid == pid


def test_more_new_allocated_inputs_than_one_message_carries_are_refused_before_sending(tmp_path):
    # Each new allocate()d array sends its descriptor once; one message
    # carries at most 253 (SCM_MAX_FD).
    names = [f"a{i}" for i in range(300)]
    code = "def get_model(data_root):\n    return lambda **inputs: {'out': sum(inputs.values())}\n"
    path = python_package(tmp_path, "many", code, [spec(n, "float32", (2,)) for n in names])
    with load_neuropod(path, use_ope=True) as model:
        pid = model.worker_pid
        arrays = {n: model.allocate(n, [2]) for n in names}
        for a in arrays.values():
            a[:] = 1
        with pytest.raises(errors.InvalidInputError, match="too many tensors for one call to a worker"):
            model.infer(arrays)
        # In two calls the descriptors travel apart; then all are the
        # worker's, and one call takes all 300.
        first = dict(list(arrays.items())[:150])
        np.testing.assert_array_equal(model.infer(first)["out"], [150, 150])
        np.testing.assert_array_equal(model.infer(dict(list(arrays.items())[150:]))["out"], [150, 150])
        np.testing.assert_array_equal(model.infer(arrays)["out"], [300, 300])
        assert model.worker_pid == pid


def test_a_zip_package_is_extracted_by_the_caller_and_run_by_the_worker(make_package):
    path = make_package("ope_zip", M.AdditionModel(), ADD_INPUT_SPEC, ADD_OUTPUT_SPEC, package_as_zip=True)
    with load_neuropod(path, use_ope=True) as model:
        inputs = add_inputs()
        np.testing.assert_array_equal(model.infer(inputs)["out"], inputs["x"] + inputs["y"])


@pytest.mark.parametrize(
    "fault, expected",
    [
        ("segfault", "killed by signal 11 (SIGSEGV)"),
        ("exit", "exited with status 3"),
        ("sigkill", "killed by signal 9 (SIGKILL)"),
        ("sigstop", "stopped answering"),
    ],
)
def test_a_dying_or_hung_worker_fails_one_call_and_the_next_starts_another(faulty, fault, expected):
    action = {"segfault": 1, "exit": 2, "sigkill": 3, "sigstop": 3}[fault]
    with load_neuropod(faulty, use_ope=True) as model:
        first = model.worker_pid
        if fault in ("sigkill", "sigstop"):
            sig = signal.SIGKILL if fault == "sigkill" else signal.SIGSTOP
            threading.Timer(0.5, os.kill, (first, sig)).start()
        started = time.monotonic()
        with pytest.raises(errors.WorkerError) as failure:
            model.infer({"x": np.array([action], np.float32)})
        waited = time.monotonic() - started
        message = str(failure.value)
        assert expected in message and f"process {first}" in message and "'faulty'" in message, message
        if fault != "sigstop":
            # A stopped worker cannot write; the others said what was coming.
            assert f"fault {action} coming" in message, message
        # A hung worker is found by its heartbeat (2 s), not by a long wait.
        assert waited < 10, waited
        assert process_gone(first)
        assert model.worker_pid is None
        np.testing.assert_array_equal(model.infer({"x": np.array([5.0], np.float32)})["out"], [10.0])
        assert model.worker_pid not in (None, first)


def test_a_worker_that_died_between_calls_is_replaced_before_the_next(faulty):
    # As the OOM killer does: the worker dies while no call is in flight.
    # Nothing of the next call reached it, so that call runs, on a new one.
    with load_neuropod(faulty, use_ope=True) as model:
        first = model.worker_pid
        np.testing.assert_array_equal(model.infer({"x": np.array([5.0], np.float32)})["out"], [10.0])
        os.kill(first, signal.SIGKILL)
        # Until it has fully ended (its last thread too): a worker dying
        # while a call is sent fails that call, which may have reached it.
        assert until(lambda: os.waitid(os.P_PID, first, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None)
        np.testing.assert_array_equal(model.infer({"x": np.array([6.0], np.float32)})["out"], [12.0])
        assert model.worker_pid not in (None, first)


def test_a_slow_worker_is_waited_for(faulty):
    # Busy for longer than a hung worker is given: its heartbeat goes on.
    with load_neuropod(faulty, use_ope=True) as model:
        pid = model.worker_pid
        np.testing.assert_array_equal(model.infer({"x": np.array([4.0], np.float32)})["out"], [8.0])
        assert model.worker_pid == pid


def test_a_worker_that_dies_while_loading_is_a_worker_error(tmp_path):
    code = """
        import os, sys

        def get_model(data_root):
            print("giving up while loading", file=sys.stderr, flush=True)
            os._exit(7)
    """
    path = python_package(tmp_path, "dies_loading", code)
    with pytest.raises(errors.WorkerError, match=r"(?s)exited with status 7 during load.*giving up while loading"):
        load_neuropod(path, use_ope=True)


def test_a_load_error_in_the_worker_is_the_in_process_error(tmp_path):
    code = "def get_model(data_root):\n    raise RuntimeError('no weights here')\n"
    path = python_package(tmp_path, "refuses_loading", code)
    with pytest.raises(errors.NeuropodError) as in_process:
        load_neuropod(path)
    with pytest.raises(type(in_process.value)) as out_of_process:
        load_neuropod(path, use_ope=True)
    assert str(out_of_process.value) == str(in_process.value)


def test_closing_the_model_ends_its_worker(ts_addition):
    model = load_neuropod(ts_addition, use_ope=True)
    pid = model.worker_pid
    model.infer(add_inputs())
    model.close()
    assert process_gone(pid, within=2)
    with pytest.raises(errors.ModelClosedError):
        model.infer(add_inputs())


def shared_memory_files():
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


@pytest.mark.parametrize("busy", [False, True], ids=["idle", "busy"])
def test_a_killed_caller_leaves_no_worker_and_no_shared_memory(faulty, busy, private_tempdir):
    before = shared_memory_files()
    script = textwrap.dedent(f"""
        import sys, numpy as np
        from neuropods.loader import load_neuropod
        model = load_neuropod({faulty!r}, use_ope=True)
        model.infer({{"x": np.full(1 << 20, 7, np.float32)}})
        print(model.worker_pid, flush=True)
        # Busy: the worker is inside a call (sleeping) when the caller dies.
        model.infer({{"x": np.array([3 if {busy} else 0], np.float32)}})
        sys.stdin.read()
    """)
    with subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as caller:
        try:
            line = caller.stdout.readline()
            if not line.strip().isdigit():
                caller.wait(timeout=30)
                pytest.fail(f"the caller ended early: {caller.returncode} {caller.stderr.read()[-3000:]}")
            worker = int(line)
            time.sleep(0.3)
            assert not process_gone(worker, within=0)
        finally:
            caller.kill()
            caller.wait(timeout=10)
    assert caller.returncode == -signal.SIGKILL
    assert process_gone(worker, within=5), f"worker {worker} outlived its caller"
    assert shared_memory_files() == before
    assert os.listdir(private_tempdir) == []


def test_many_threads_share_one_worker(ts_addition):
    with load_neuropod(ts_addition, use_ope=True) as model:
        failures = []

        def calls(seed):
            rng = np.random.default_rng(seed)
            for _ in range(40):
                n = int(rng.integers(1, 2000))
                x, y = rng.random(n, np.float32), rng.random(n, np.float32)
                out = model.infer({"x": x, "y": y})["out"]
                if not np.array_equal(out, x + y):
                    failures.append(seed)

        threads = [threading.Thread(target=calls, args=(seed,)) for seed in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert failures == []


SPINNER = """
    import time

    def get_model(data_root):
        def spin(x):
            end = time.perf_counter() + float(x[0])
            while time.perf_counter() < end:
                pass
            return {"out": x}
        return spin
"""


def gil_wait_ms(model, spin_seconds=1.5):
    """Median time this thread waits to run Python again after a 1 ms sleep,
    while `model` spins in pure Python (in another thread's call)."""
    call = threading.Thread(target=model.infer, args=({"x": np.array([spin_seconds], np.float32)},))
    call.start()
    time.sleep(0.2)
    delays = []
    end = time.perf_counter() + spin_seconds - 0.5
    while time.perf_counter() < end:
        start = time.perf_counter()
        time.sleep(0.001)
        delays.append(time.perf_counter() - start - 0.001)
    call.join()
    return 1000 * statistics.median(delays)


def test_a_model_spinning_in_its_worker_does_not_hold_the_callers_gil(tmp_path):
    path = python_package(tmp_path, "spinner", SPINNER)
    previous = sys.getswitchinterval()
    # A thread holding the GIL gives it up only every 50 ms now.
    sys.setswitchinterval(0.05)
    try:
        with load_neuropod(path) as here:
            in_process = gil_wait_ms(here)
        with load_neuropod(path, use_ope=True) as there:
            out_of_process = gil_wait_ms(there)
    finally:
        sys.setswitchinterval(previous)
    # In-process the spinning model holds the GIL: this thread waits for
    # the switch interval. Through OPE nothing holds it.
    assert in_process > 10, in_process
    assert out_of_process < 5, out_of_process


def test_outputs_are_views_that_outlive_the_model_and_its_worker(ts_addition):
    model = load_neuropod(ts_addition, use_ope=True)
    x = np.arange(1 << 16, dtype=np.float32)
    out = model.infer({"x": x, "y": x})["out"]
    pid = model.worker_pid
    model.close()
    assert process_gone(pid)
    np.testing.assert_array_equal(out, 2 * x)
    assert not out.flags.owndata and not out.flags.writeable


class Accumulator(torch.nn.Module):
    """Adds its input to a 2 MiB state and returns the state itself."""

    def __init__(self):
        super().__init__()
        self.register_buffer("state", torch.zeros(1 << 19))

    def forward(self, x: torch.Tensor):
        self.state.add_(x)
        return {"out": self.state}


@pytest.mark.parametrize("use_ope", [False, True], ids=["in_process", "ope"])
def test_a_large_output_is_the_frameworks_own_memory_not_a_copy(make_package, use_ope):
    # In a worker, libtorch allocates large tensors in shared memory, and an
    # output is sent where it is: the caller's array is the model's state,
    # as it is in-process, and sees the next call's update.
    path = make_package("accumulator", Accumulator(), [spec("x", "float32", (1,))], [spec("out", "float32", (1 << 19,))])
    with load_neuropod(path, use_ope=use_ope) as model:
        first = model.infer({"x": np.ones(1, np.float32)})["out"]
        assert first[0] == 1 and first[-1] == 1
        model.infer({"x": np.ones(1, np.float32)})
        assert first[0] == 2 and first[-1] == 2


KEEPER = """
    def get_model(data_root):
        kept = []

        def run(x):
            # Keeps its first input (a view of what the caller sent) and
            # returns that: a copy would not see the caller's later writes.
            if not kept:
                kept.append(x)
            return {"out": kept[0] + 0}
        return run
"""


@pytest.mark.parametrize("use_ope", [False, True], ids=["in_process", "ope"])
def test_an_allocated_input_is_shared_not_copied(tmp_path, use_ope):
    path = python_package(tmp_path, "keeper", KEEPER)
    with load_neuropod(path, use_ope=use_ope) as model:
        shared = model.allocate("x", [4])
        assert shared.dtype == np.float32 and shared.flags.writeable and not shared.any()
        shared[:] = 1
        np.testing.assert_array_equal(model.infer({"x": shared})["out"], [1, 1, 1, 1])
        shared[:] = 5
        # The model reads what it kept from the first call: the same memory.
        np.testing.assert_array_equal(model.infer({"x": np.zeros(4, np.float32)})["out"], [5, 5, 5, 5])


def test_allocate_checks_the_spec(ts_addition, tmp_path):
    with load_neuropod(ts_addition, use_ope=True) as model:
        with pytest.raises(errors.UnknownTensorError, match="'z'"):
            model.allocate("z", [3])
        with pytest.raises(errors.DTypeError, match="float32"):
            model.allocate("x", [3], np.int64)
        assert model.allocate("y", [2, 0]).shape == (2, 0)
    path = python_package(tmp_path, "strings", "def get_model(r):\n    return lambda s: {'s': s}\n",
                          [spec("s", "string", (None,))], [spec("s", "string", (None,))])
    with load_neuropod(path, use_ope=True) as model:
        with pytest.raises(errors.InvalidInputError, match="only numeric"):
            model.allocate("s", [2])


def test_the_worker_sees_only_the_chosen_gpu(tmp_path):
    code = """
        import os
        import numpy as np

        def get_model(data_root):
            return lambda x: {"devices": np.array([os.environ.get("CUDA_VISIBLE_DEVICES", "unset")], dtype=object)}
    """
    path = python_package(tmp_path, "devices", code, output_spec=[spec("devices", "string", (1,))])
    x = {"x": np.zeros(1, np.float32)}
    with load_neuropod(path, use_ope=True) as model:
        assert model.infer(x)["devices"].tolist() == [""]
    with load_neuropod(path, use_ope=True, visible_gpu=0) as model:
        assert model.infer(x)["devices"].tolist() == ["0"]


def test_option_errors(ts_addition):
    with pytest.raises(errors.InvalidOptionError, match="use_ope=True"):
        load_neuropod(ts_addition, ope_python=sys.executable)
    with pytest.raises(errors.InvalidOptionError, match="ope_python"):
        load_neuropod(ts_addition, use_ope=True, ope_python=3)


def worker_threads(path, intra_op_threads):
    """Threads of the worker after one call of the model at `path`."""
    with load_neuropod(path, use_ope=True, intra_op_threads=intra_op_threads) as model:
        model.infer({"x": np.ones((256, 512), np.float32)})
        return len(os.listdir(f"/proc/{model.worker_pid}/task"))


class Gram(torch.nn.Module):
    def forward(self, x: torch.Tensor):
        return {"out": x @ x.t()}


def test_thread_options_reach_the_worker(make_package):
    path = make_package("ope_gram", Gram(), [spec("x", "float32", (None, 512))], [spec("out", "float32", (None, None))])
    # libtorch's intra-op pool is OpenMP: 4 threads in it means 3 more
    # threads in the worker than with 1 (none).
    assert worker_threads(path, 4) - worker_threads(path, 1) >= 3


@pytest.mark.slow
def test_models_with_conflicting_requirements_run_side_by_side_in_their_venvs(tmp_path_factory, tmp_path):
    code = """
        import numpy as np
        import six

        def get_model(data_root):
            return lambda x: {"version": np.array([six.__version__], dtype=object)}
    """
    versions = ("1.16.0", "1.15.0")
    pythons, paths = {}, {}
    for version in versions:
        folder = tmp_path_factory.mktemp(f"six_{version}") / "venv"
        pythons[version] = make_venv(folder, [f"numpy=={np.__version__}", f"six=={version}"])
        paths[version] = python_package(
            tmp_path, f"six_{version.replace('.', '_')}", code,
            output_spec=[spec("version", "string", (1,))], requirements=f"six=={version}\n",
        )
    x = {"x": np.zeros(1, np.float32)}
    models = [load_neuropod(paths[v], use_ope=True, ope_python=pythons[v]) for v in versions]
    try:
        for _ in range(2):
            assert [m.infer(x)["version"].tolist() for m in models] == [[v] for v in versions]
    finally:
        for m in models:
            m.close()
    # The caller's own environment meets neither, in-process or in a worker.
    for options in ({}, {"use_ope": True}):
        with pytest.raises(errors.RequirementsError, match="six"):
            load_neuropod(paths[versions[0]], **options)


def test_a_forked_child_gets_a_worker_of_its_own(ts_addition):
    with load_neuropod(ts_addition, use_ope=True) as model:
        parents = model.worker_pid
        inputs = add_inputs()
        model.infer(inputs)
        read, write = os.pipe()
        with warnings.catch_warnings():
            # Python 3.12 warns about fork in a process with threads (this
            # one has the worker's stderr reader); the child calls only the
            # model, which is what the test is about.
            warnings.simplefilter("ignore", DeprecationWarning)
            child = os.fork()
        if child == 0:
            # The inherited model must not talk to (or kill) the parent's
            # worker: the child's first call starts its own.
            status = 1
            try:
                out = model.infer(inputs)["out"]
                ok = np.array_equal(out, inputs["x"] + inputs["y"]) and model.worker_pid not in (None, parents)
                os.write(write, str(model.worker_pid).encode())
                model.close()
                status = 0 if ok else 1
            finally:
                os._exit(status)
        os.close(write)
        _, status = os.waitpid(child, 0)
        childs = int(os.read(read, 100) or 0)
        os.close(read)
        assert os.waitstatus_to_exitcode(status) == 0
        assert childs not in (0, parents) and process_gone(childs)
        # The parent's worker is untouched.
        assert model.worker_pid == parents
        np.testing.assert_array_equal(model.infer(inputs)["out"], inputs["x"] + inputs["y"])


STATEFUL = """
    import numpy as np

    def get_model(data_root):
        state = np.zeros(2, np.float32)

        def run(x):
            # Returns its own array, which it changes on the next call.
            state[:] += x
            return {"out": state}
        return run
"""


@pytest.mark.parametrize("use_ope", [False, True], ids=["in_process", "ope"])
def test_an_array_a_python_model_keeps_and_changes_is_not_the_callers_output(tmp_path, use_ope):
    path = python_package(tmp_path, "stateful", STATEFUL)
    with load_neuropod(path, use_ope=use_ope) as model:
        first = model.infer({"x": np.ones(2, np.float32)})["out"]
        second = model.infer({"x": np.ones(2, np.float32)})["out"]
    np.testing.assert_array_equal(second, [2, 2])
    # The first output is what the model returned then, not its array now.
    np.testing.assert_array_equal(first, [1, 1])


def mapping_permissions(address):
    """The permissions ("r--p", "rw-s", ...) of this process's mapping that
    holds `address`, from /proc/self/maps."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            span, perms = line.split()[:2]
            start, end = (int(a, 16) for a in span.split("-"))
            if start <= address < end:
                return perms
    raise AssertionError(f"no mapping holds {address:#x}")


def test_a_workers_outputs_are_mapped_read_only_by_the_caller(tmp_path):
    path = python_package(tmp_path, "big_out", "def get_model(data_root):\n    return lambda x: {'out': x * 2}\n")
    with load_neuropod(path, use_ope=True) as model:
        # Large enough to travel in shared memory, not in the message.
        out = model.infer({"x": np.ones(1 << 20, np.float32)})["out"]
    np.testing.assert_array_equal(out[:3], [2, 2, 2])
    # Shared (the worker's segment) and not writable here: nothing in the
    # caller can change the bytes the worker lent, whatever it runs.
    assert mapping_permissions(out.ctypes.data) == "r--s"
