"""Extraction folders of zip packages belong to the process that made them:
a forked child never removes its parent's (it closes its copy of the model,
or exits), and folders left by a killed process are removed by the next zip
load, while those of live processes stay."""

import os
import signal
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest

from helpers import load, neuropod_tempdirs, run_add

# Seconds a child gets to close a model and exit: far above what it needs, so
# that only a hang reaches it.
CHILD_TIMEOUT = 60


pytestmark = pytest.mark.usefixtures("private_tempdir")


def _folder_of(before):
    """The one extraction folder made since `before`, as a full path."""
    new = sorted(set(neuropod_tempdirs()) - set(before))
    assert len(new) == 1, new
    return os.path.join(tempfile.gettempdir(), new[0])


def _wait_exit_code(pid):
    """The exit code of a forked child; fails (and kills it) if it hangs."""
    import time

    deadline = time.monotonic() + CHILD_TIMEOUT
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(f"forked child {pid} did not exit within {CHILD_TIMEOUT} s")


def _fork(child):
    """Runs `child()` in a forked child that exits with os._exit (0 when
    child returns, 1 when it raises); returns the exit code."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            child()
            code = 0
        finally:
            os._exit(code)
    return _wait_exit_code(pid)


@pytest.mark.parametrize("how", ["close", "del"])
def test_forked_child_that_drops_the_model_keeps_the_parents_folder(addition_zip_package, how):
    before = neuropod_tempdirs()
    model = load(addition_zip_package)
    folder = _folder_of(before)
    run_add(model)

    def child():
        nonlocal model
        if how == "close":
            model.close()
        else:
            import gc

            del model
            gc.collect()

    assert _fork(child) == 0
    assert os.path.isfile(os.path.join(folder, "package", "config.json"))
    run_add(model)
    model.close()
    assert not os.path.exists(folder)


PARENT_AND_CHILD = """
    import os, sys
    import numpy as np
    from neuropods.loader import load_neuropod

    model = load_neuropod({package!r})
    (folder,) = [n for n in os.listdir(os.environ["TMPDIR"]) if n.startswith("neuropod-")]
    folder = os.path.join(os.environ["TMPDIR"], folder)
    pid = os.fork()
    if pid == 0:
        # The child leaves through the normal exit path: SystemExit unwinds
        # the with block (which closes the model), then the interpreter
        # finalizes.
        with model:
            sys.exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, status
    assert os.path.isfile(os.path.join(folder, "package", "config.json")), "child removed the folder"
    x = np.arange(3, dtype=np.float32)
    np.testing.assert_array_equal(model.infer({{"x": x, "y": x}})["out"], x * 2)
    model.close()
    assert not os.path.exists(folder), "parent left its folder"
    print("ok")
"""


def test_forked_child_that_exits_normally_keeps_the_parents_folder(addition_zip_package):
    script = textwrap.dedent(PARENT_AND_CHILD.format(package=addition_zip_package))
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=CHILD_TIMEOUT * 2
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    assert neuropod_tempdirs() == []


HOLDER = """
    import os, sys
    from neuropods.loader import load_neuropod

    model = load_neuropod({package!r})
    if {fork}:
        # A child that loads nothing and outlives its parent: it shares the
        # parent's lock on the folder.
        if os.fork() == 0:
            sys.stdin.read()
            os._exit(0)
    print("loaded", flush=True)
    sys.stdin.read()  # until the test closes stdin (or kills us)
    model.close()
"""


def _start_holder(package, fork=False):
    """A real process that loads `package` and holds it until its stdin is
    closed; returns it once it has loaded."""
    before = neuropod_tempdirs()
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HOLDER.format(package=package, fork=fork))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "loaded"
    return proc, _folder_of(before)


def test_folder_of_a_killed_process_is_removed_by_the_next_load(addition_zip_package):
    killed, killed_folder = _start_holder(addition_zip_package)
    live, live_folder = _start_holder(addition_zip_package)
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=CHILD_TIMEOUT)
        # Nothing cleans up after SIGKILL ...
        assert os.path.isdir(killed_folder)
        before = neuropod_tempdirs()
        # ... until the next zip load, which leaves the live process's folder.
        with load(addition_zip_package) as model:
            run_add(model)
            assert not os.path.exists(killed_folder)
            assert os.path.isfile(os.path.join(live_folder, "package", "config.json"))
            assert len(neuropod_tempdirs()) == len(before)  # one gone, ours made
    finally:
        live.stdin.close()
        assert live.wait(timeout=CHILD_TIMEOUT) == 0
        if killed.poll() is None:
            killed.kill()
        for proc in (killed, live):
            proc.stdout.close()
            proc.stdin.close()
    assert neuropod_tempdirs() == []


def test_folder_stays_while_a_forked_child_of_its_killed_owner_lives(addition_zip_package):
    owner, folder = _start_holder(addition_zip_package, fork=True)
    owner.send_signal(signal.SIGKILL)
    owner.wait(timeout=CHILD_TIMEOUT)
    # The orphaned child still holds the lock (inherited with the descriptor).
    with load(addition_zip_package):
        assert os.path.isdir(folder)
    # Closing the pipe's write end ends the child's read; then the lock is free.
    owner.stdin.close()
    owner.stdout.close()
    import time

    deadline = time.monotonic() + CHILD_TIMEOUT
    while os.path.isdir(folder) and time.monotonic() < deadline:
        with load(addition_zip_package):
            pass
        time.sleep(0.1)
    assert not os.path.exists(folder)


def test_only_neuropod_folders_with_a_free_lock_are_swept(addition_zip_package, private_tempdir):
    # A folder named like ours but without a lock file (being created, or
    # someone else's), and a folder of another name with one: both stay.
    lockless = private_tempdir / "neuropod-nolock"
    lockless.mkdir()
    other = private_tempdir / "other-stale"
    other.mkdir()
    (other / "owner.lock").write_bytes(b"")
    link = private_tempdir / "neuropod-link"
    target = private_tempdir / "target"
    target.mkdir()
    (target / "owner.lock").write_bytes(b"")
    link.symlink_to(target)
    with load(addition_zip_package):
        pass
    assert lockless.is_dir() and other.is_dir() and link.is_symlink() and target.is_dir()
