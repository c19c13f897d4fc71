"""The `neuropods` command, run as users run it: the installed console
script and `python -m neuropods`, in subprocesses, with real packages."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import models_for_tests as M
from helpers import ADD_INPUT_SPEC, ADD_OUTPUT_SPEC, spec

CONSOLE_SCRIPT = os.path.join(os.path.dirname(sys.executable), "neuropods")


def neuropods(*args, timeout=120):
    """Runs `python -m neuropods ARGS`; returns the completed process."""
    return subprocess.run(
        [sys.executable, "-m", "neuropods", *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def addition(make_package):
    return make_package("cli_addition", M.AdditionModel(), ADD_INPUT_SPEC, ADD_OUTPUT_SPEC)


@pytest.fixture(scope="module")
def addition_zip(make_package):
    return make_package("cli_addition_zip", M.AdditionModel(), ADD_INPUT_SPEC, ADD_OUTPUT_SPEC, package_as_zip=True)


def test_the_console_script_is_installed_and_has_help():
    assert os.path.isfile(CONSOLE_SCRIPT), CONSOLE_SCRIPT
    result = subprocess.run([CONSOLE_SCRIPT, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for command in ("inspect", "infer", "bench", "serve", "batch"):
        assert command in result.stdout
        sub = neuropods(command, "--help")
        assert sub.returncode == 0 and "usage: neuropods " + command in sub.stdout


@pytest.mark.parametrize("as_zip", [False, True], ids=["folder", "zip"])
def test_inspect_describes_a_package(addition, addition_zip, as_zip):
    path = addition_zip if as_zip else addition
    result = neuropods("inspect", path, "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert (info["name"], info["platform"]) == ("cli_addition_zip" if as_zip else "cli_addition", "torchscript")
    assert info["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["num_inputs"]},
                              {"name": "y", "dtype": "float32", "shape": ["num_inputs"]}]
    assert info["outputs"] == [{"name": "out", "dtype": "float32", "shape": [None]}]
    files = {f["path"]: f["size"] for f in info["files"]}
    assert {"config.json", "manifest.json", "0/data/model.pt"} <= files.keys() and all(files.values())
    assert info["manifest"] == {"status": "ok", "detail": ""}
    assert info["test_data"] is False
    text = neuropods("inspect", path)
    assert text.returncode == 0
    assert "test data: no" in text.stdout
    assert "x: float32 ('num_inputs',)" in text.stdout and "manifest:  ok" in text.stdout


def test_inspect_says_a_package_carries_test_data(addition_package):
    result = neuropods("inspect", addition_package, "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["test_data"] is True
    assert "test_data/test_input_data.bin" in {f["path"] for f in info["files"]}
    assert "test data: yes" in neuropods("inspect", addition_package).stdout


def test_inspect_reports_a_tampered_manifest(addition, tmp_path):
    copy = tmp_path / "tampered"
    shutil.copytree(addition, copy)
    (copy / "0" / "data" / "model.pt").write_bytes(b"not the model")
    info = json.loads(neuropods("inspect", copy, "--json").stdout)
    assert info["manifest"]["status"] == "mismatch" and "sha256 mismatch" in info["manifest"]["detail"]


def test_inspect_refuses_a_fifo_listed_in_the_manifest_without_opening_it(addition, tmp_path):
    # Hashing a named pipe for the manifest check would wait forever.
    path = shutil.copytree(addition, tmp_path / "package")
    os.mkfifo(path / "0" / "data" / "pipe")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"]["0/data/pipe"] = "0" * 64
    (path / "manifest.json").write_text(json.dumps(manifest))
    result = neuropods("inspect", path, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"neuropods inspect: PackageError: invalid neuropod package {path}: "
        "0/data/pipe is a FIFO (named pipe): a package holds only files and folders"
    )


@pytest.mark.parametrize("use_ope", [False, True], ids=["in_process", "ope"])
def test_infer_runs_one_call_from_files(addition, tmp_path, use_ope):
    x, y = np.arange(5, dtype=np.float32), np.full(5, 0.5, np.float32)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "in.npz", y=y)
    flags = ["--use-ope"] if use_ope else []
    printed = neuropods("infer", addition, "--input", f"x={tmp_path / 'x.npy'}", "--input-npz", tmp_path / "in.npz", *flags)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.strip() == "out: float32 (5,) [0.5, 1.5, 2.5, 3.5, 4.5]"
    out = tmp_path / "out"  # written as named, without ".npz" added
    written = neuropods("infer", addition, "--input", f"x={tmp_path / 'x.npy'}", "--input", f"y={tmp_path / 'x.npy'}",
                        "--output", out, *flags)
    assert written.returncode == 0, written.stderr
    assert written.stdout.strip() == f"wrote 1 outputs to {out}" and not (tmp_path / "out.npz").exists()
    with np.load(out) as outputs:
        np.testing.assert_array_equal(outputs["out"], x + x)


def test_strings_are_written_as_plain_arrays(make_package, tmp_path):
    path = make_package("cli_upper", M.UpperModel(), [spec("words", "string", (None,))], [spec("upper", "string", (None,))])
    np.save(tmp_path / "words.npy", np.array(["ab", "c"]))
    out = tmp_path / "out.npz"
    result = neuropods("infer", path, "--input", f"words={tmp_path / 'words.npy'}", "--output", out)
    assert result.returncode == 0, result.stderr
    with np.load(out, allow_pickle=False) as outputs:
        assert outputs["upper"].tolist() == ["AB", "C"]


@pytest.mark.parametrize(
    "args, expected",
    [
        (["inspect", "/nonexistent/package"], "PackageNotFoundError: neuropod package not found: /nonexistent/package"),
        (["infer", "{addition}", "--input", "z={x}"], "UnknownTensorError: input 'z' is not in the spec"),
        (["infer", "{addition}", "--input", "x{x}"], "ValueError: --input takes NAME=FILE.npy"),
        (["infer", "{addition}"], "ValueError: no inputs"),
        (["infer", "{addition}", "--input-npz", "{x}"], "ValueError: --input-npz {x} holds one array (a .npy file)"),
    ],
)
def test_errors_are_one_line_and_exit_1(addition, tmp_path, args, expected):
    np.save(tmp_path / "x.npy", np.zeros(2, np.float32))
    args = [a.format(addition=addition, x=tmp_path / "x.npy") for a in args]
    expected = expected.format(x=tmp_path / "x.npy")
    result = neuropods(*args)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"neuropods {args[0]}: ") and expected in lines[0], result.stderr
    verbose = neuropods("--verbose", *args)
    assert verbose.returncode == 1 and "Traceback (most recent call last)" in verbose.stderr


@pytest.mark.parametrize(
    "args, expected",
    [
        (["bench", "{addition}", "--threads", "0"], "argument --threads: 0 is out of range: takes an integer at least 1"),
        (["bench", "{addition}", "--duration", "nan"], "argument --duration: nan is not a number of seconds above 0"),
        (["serve", "{addition}", "--max-batch-size", "-1"], "argument --max-batch-size: -1 is out of range"),
        (["serve", "{addition}", "--http-port", "99999"], "argument --http-port: 99999 is out of range: takes an integer from 0 to 65535"),
        (["batch", "{addition}", "--input", "a", "--output", "b", "--concurrency", "0"], "argument --concurrency: 0 is out of range"),
    ],
)
def test_an_option_out_of_range_is_refused_naming_it(addition, args, expected):
    result = neuropods(*[a.format(addition=addition) for a in args], timeout=30)
    assert result.returncode == 2  # argparse's usage error, before anything runs
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"neuropods {args[0]}: error: {expected}"), result.stderr


def test_version():
    from neuropods import __version__

    result = neuropods("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"neuropods {__version__}"


def test_bench_stops_on_time_with_hundreds_of_threads(addition):
    # Each thread stops itself at the deadline: the main thread, waiting
    # for the GIL among 200 callers, took 8 s to end a 1 s run before.
    result = neuropods("bench", addition, "--duration", "1", "--threads", "200", "--json", "--no-progress")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["threads"] == 200 and report["calls"] > 0
    assert report["seconds"] < 3, report


@pytest.mark.parametrize("use_ope", [False, True], ids=["in_process", "ope"])
def test_bench_measures_latency_and_throughput(addition, use_ope):
    flags = ["--use-ope"] if use_ope else []
    result = neuropods("bench", addition, "--duration", "0.5", "--threads", "2", "--batch", "3", "--json", *flags)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["model"] == "cli_addition" and report["threads"] == 2 and report["batch"] == 3
    assert report["use_ope"] is use_ope
    assert report["calls"] > 0 and report["calls_per_second"] > 0
    lat = report["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
    # The progress bar went to stderr, not into the JSON.
    assert "calls" in result.stderr
    text = neuropods("bench", addition, "--duration", "0.3", "--no-progress")
    assert text.returncode == 0 and "calls/s" in text.stdout and "p99" in text.stdout and text.stderr == ""


def test_bench_makes_inputs_from_the_spec():
    from neuropods.bench import random_inputs

    specs = [
        {"name": "a", "dtype": "float32", "shape": ["batch", 3]},
        {"name": "b", "dtype": "int64", "shape": ["batch", "other", None]},
        {"name": "c", "dtype": "string", "shape": ["other"]},
        {"name": "d", "dtype": "bool", "shape": [2]},
    ]
    inputs = random_inputs(specs, batch=4)
    assert {k: v.shape for k, v in inputs.items()} == {"a": (4, 3), "b": (4, 1, 1), "c": (1,), "d": (2,)}
    assert (inputs["a"].dtype, inputs["b"].dtype, inputs["d"].dtype) == (np.float32, np.int64, np.bool_)
    assert isinstance(inputs["c"][0], str)
