"""`neuropods serve`: the Open Inference Protocol over HTTP and gRPC, tested
with tritonclient, the protocol's real client, and with raw HTTP where a
test needs a request no client would send. Servers run as users run them
(the console script, in a subprocess) on loopback ports picked by the
server; answers are checked against the same package run in-process."""

import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

import neuropods_native

import models_for_tests as M
from helpers import ADD_INPUT_SPEC, ADD_OUTPUT_SPEC, python_package, spec
from neuropods.loader import load_neuropod

CONSOLE_SCRIPT = os.path.join(os.path.dirname(sys.executable), "neuropods")
STARTUP_TIMEOUT = 120


class Server:
    """A `neuropods serve` process; its addresses come from the lines it
    prints once ready."""

    def __init__(self, packages, *args, env=None, max_files=None):
        command = [CONSOLE_SCRIPT, "serve", *map(str, packages), "--http-port", "0", "--grpc-port", "0", *args]
        # max_files: the server's file descriptor limit (soft and hard).
        limit = None if max_files is None else (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (max_files, max_files)))
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=limit
        )
        self.stderr_lines = []
        self.clients = []
        self.http = self.grpc = None
        ready = threading.Event()

        def read_stdout():
            for line in self.process.stdout:
                match = re.match(r"neuropods serve: (HTTP|gRPC) on (\S+)", line)
                if match:
                    setattr(self, match.group(1).lower(), match.group(2))
                if self.http and self.grpc:
                    ready.set()
            ready.set()

        def read_stderr():
            for line in self.process.stderr:
                self.stderr_lines.append(line)

        threading.Thread(target=read_stdout, daemon=True).start()
        threading.Thread(target=read_stderr, daemon=True).start()
        ready.wait(STARTUP_TIMEOUT)
        if not (self.http and self.grpc):
            self.stop()
            raise AssertionError(f"server did not start: {self.stderr}")

    @property
    def stderr(self):
        return "".join(self.stderr_lines)

    def client(self, protocol):
        """A tritonclient client, closed with the server (an unclosed
        socket is a ResourceWarning, which fails a test)."""
        if protocol == "http":
            client = httpclient.InferenceServerClient(self.http, network_timeout=60)
        else:
            client = grpcclient.InferenceServerClient(self.grpc)
        self.clients.append(client)
        return client

    def url(self, path):
        return f"http://{self.http}{path}"

    def stop(self, sig=signal.SIGTERM, timeout=60):
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def close(self):
        self.stop()
        for client in self.clients:
            client.close()
        self.process.stdout.close()
        self.process.stderr.close()


@pytest.fixture
def serve():
    """serve(packages, *flags) -> a running Server, stopped after the test."""
    servers = []

    def start(packages, *args, **kwargs):
        server = Server(packages, *args, **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def http_post(url, body, headers=None, timeout=60):
    """POSTs bytes; returns (status, headers, body) whatever the status."""
    request = urllib.request.Request(url, data=body, headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.headers, e.read()


def http_get(url, timeout=60):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.read()


# ---------------------------------------------------------------- packages

@pytest.fixture(scope="module")
def addition(make_package):
    return make_package("addition_model", M.AdditionModel(), ADD_INPUT_SPEC, ADD_OUTPUT_SPEC)


@pytest.fixture(scope="module")
def raising(make_package):
    return make_package("raising", M.RaisingModel(), [spec("x", "float32", ("n",))], [spec("y", "float32", ("n",))])


@pytest.fixture(scope="module")
def slow(make_package):
    return make_package(
        "slow", M.SlowModel(), [spec("x", "float32", (64, 64)), spec("steps", "int64", ())],
        [spec("y", "float32", (64, 64))],
    )


@pytest.fixture(scope="module")
def typed_packages(addition, int64_package, bool_package, strings_package, half_package, mlp_package):
    """Models with FP32, INT64 (two outputs), BOOL, BYTES and FP16 tensors."""
    return [addition, int64_package, bool_package, strings_package, half_package, mlp_package]


@pytest.fixture(scope="module")
def typed_server(typed_packages):
    server = Server(typed_packages)
    yield server
    server.close()


# One request per dtype family; model name -> inputs.
REQUESTS = {
    "addition_model": {"x": np.array([1, 2, 3, 4], np.float32), "y": np.array([0.5, -1, 2, 8], np.float32)},
    "int64_model": {"a": np.array([5, -7, 2**40], np.int64), "b": np.array([3, 9, -4], np.int64)},
    "bool_model": {"a": np.array([[True, False], [True, True]]), "b": np.array([[False, False], [True, False]])},
    "upper": {"words": np.array(["ab", "Straße", ""])},
    "half_model": {"x": np.array([[1.5, -2, 0.25], [3, 4, 5]], np.float16)},
    "mlp": {"x": np.linspace(-1, 1, 24, dtype=np.float32).reshape(3, 8)},
}

def datatype(array):
    return "BYTES" if array.dtype.kind in "UTSO" else np_to_triton_dtype(array.dtype)


def wire_array(array):
    """What tritonclient takes for a tensor: BYTES as an object array of bytes."""
    if array.dtype.kind in "UTSO":
        return np.array([s.encode() for s in array.ravel()], dtype=object).reshape(array.shape)
    return array


def client_infer(client, protocol, model, inputs, outputs=None, binary=True):
    module = httpclient if protocol == "http" else grpcclient
    wire = []
    for name, array in inputs.items():
        tensor = module.InferInput(name, list(array.shape), datatype(array))
        if protocol == "http":
            tensor.set_data_from_numpy(wire_array(array), binary_data=binary)
        else:
            tensor.set_data_from_numpy(wire_array(array))
        wire.append(tensor)
    requested = None
    if outputs is not None:
        if protocol == "http":
            requested = [httpclient.InferRequestedOutput(name, binary_data=binary) for name in outputs]
        else:
            requested = [grpcclient.InferRequestedOutput(name) for name in outputs]
    return client.infer(model, wire, outputs=requested)


def assert_same(got, expected, name):
    if expected.dtype.kind in "UTS":
        assert [g.decode() if isinstance(g, bytes) else g for g in got.ravel()] == list(expected.ravel()), name
        assert got.shape == expected.shape
    else:
        assert got.dtype == expected.dtype and got.shape == expected.shape, (name, got.dtype, got.shape)
        np.testing.assert_array_equal(got, expected, err_msg=name)


@pytest.fixture(scope="module")
def expected(typed_packages):
    """Each request's outputs, run in-process."""
    results = {}
    for path in typed_packages:
        with load_neuropod(path) as model:
            results[model.name] = model.infer(REQUESTS[model.name])
    return results


# ---------------------------------------------------------------- tests

def test_serve_has_help():
    result = subprocess.run([CONSOLE_SCRIPT, "serve", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for flag in ("--http-port", "--grpc-port", "--max-batch-size", "--max-queue-delay-us", "--instances",
                 "--use-ope", "--host"):
        assert flag in result.stdout
    # The defaults shown are the server's own (one source: its Default impls).
    defaults = neuropods_native.serve_defaults()
    assert defaults["http_port"] == 8000 and defaults["max_queue_delay_us"] == 500, defaults
    for name in ("http_port", "grpc_port", "max_queue_delay_us", "max_body_bytes", "idle_timeout_s"):
        assert f"(default {defaults[name]})" in " ".join(result.stdout.split()), name


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_health_and_metadata(typed_server, protocol):
    client = typed_server.client(protocol)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("upper") and client.is_model_ready("upper", "1")
    server = client.get_server_metadata()
    if protocol == "grpc":
        server = {"name": server.name, "extensions": list(server.extensions)}
    assert server["name"] == "neuropods" and "binary_tensor_data" in server["extensions"]

    def metadata(name, version=""):
        meta = client.get_model_metadata(name, version, as_json=True) if protocol == "grpc" else \
            client.get_model_metadata(name, version)
        tensors = lambda entries: [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in entries]
        return meta["versions"], meta["platform"], tensors(meta["inputs"]), tensors(meta["outputs"])

    assert metadata("int64_model") == (
        ["1"], "torchscript", [("a", "INT64", [-1]), ("b", "INT64", [-1])], [("out", "INT64", [-1]), ("total", "INT64", [-1])]
    )
    assert metadata("half_model", "1")[2:] == ([("x", "FP16", [-1, 3])], [("out", "FP16", [-1, 3])])
    assert metadata("bool_model")[2][0] == ("a", "BOOL", [-1, -1])
    assert metadata("upper")[2:] == ([("words", "BYTES", [-1])], [("upper", "BYTES", [-1])])
    with pytest.raises(InferenceServerException, match="no model named 'nope'"):
        client.get_model_metadata("nope")
    with pytest.raises(InferenceServerException, match="has no version '2'"):
        client.get_model_metadata("mlp", "2")


def test_rest_health_answers_protocol_json(typed_server):
    assert http_get(typed_server.url("/v2/health/live")) == (200, b'{"live":true}')
    assert http_get(typed_server.url("/v2/health/ready")) == (200, b'{"ready":true}')
    status, body = http_get(typed_server.url("/v2/models/upper/versions/1/ready"))
    assert status == 200 and json.loads(body) == {"name": "upper", "ready": True}
    status, body = http_get(typed_server.url("/v2/models/nope/ready"))
    assert status == 404 and "no model named 'nope'" in json.loads(body)["error"]
    status, body = http_get(typed_server.url("/v1/models"))
    assert status == 404 and "/v2" in json.loads(body)["error"]


@pytest.mark.parametrize(
    "protocol,binary", [("http", True), ("http", False), ("grpc", True)], ids=["http-binary", "http-json", "grpc"]
)
@pytest.mark.parametrize("model", sorted(REQUESTS))
def test_infer_matches_in_process(typed_server, expected, protocol, binary, model):
    client = typed_server.client(protocol)
    result = client_infer(client, protocol, model, REQUESTS[model], binary=binary)
    for name, want in expected[model].items():
        assert_same(result.as_numpy(name), want, name)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_requested_outputs_only_and_in_order(typed_server, expected, protocol):
    client = typed_server.client(protocol)
    result = client_infer(client, protocol, "int64_model", REQUESTS["int64_model"], outputs=["total"])
    assert result.as_numpy("out") is None
    assert_same(result.as_numpy("total"), expected["int64_model"]["total"], "total")
    response = result.get_response(as_json=True) if protocol == "grpc" else result.get_response()
    assert [o["name"] for o in response["outputs"]] == ["total"]
    result = client_infer(client, protocol, "int64_model", REQUESTS["int64_model"], outputs=["total", "out"])
    response = result.get_response(as_json=True) if protocol == "grpc" else result.get_response()
    assert [o["name"] for o in response["outputs"]] == ["total", "out"]
    with pytest.raises(InferenceServerException, match="has no output 'nope' \\(outputs: out, total\\)"):
        client_infer(client, protocol, "int64_model", REQUESTS["int64_model"], outputs=["nope"])


def test_rest_takes_what_other_clients_send(typed_server, expected):
    """MLServer-style nulls, an empty output list (all outputs), an
    output's binary_data false winning over binary_data_output, and a
    compressed body refused by name."""
    ints = REQUESTS["int64_model"]
    inputs = [{"name": n, "shape": [3], "datatype": "INT64", "parameters": None, "data": a.tolist()}
              for n, a in ints.items()]
    body = json.dumps({"id": None, "parameters": None, "inputs": inputs, "outputs": []}).encode()
    status, _, answer = http_post(typed_server.url("/v2/models/int64_model/infer"), body)
    assert status == 200, answer
    assert [o["name"] for o in json.loads(answer)["outputs"]] == ["out", "total"]
    body = json.dumps({"inputs": inputs, "parameters": {"binary_data_output": True},
                       "outputs": [{"name": "total", "parameters": {"binary_data": False}}, {"name": "out"}]}).encode()
    status, headers, answer = http_post(typed_server.url("/v2/models/int64_model/infer"), body)
    assert status == 200, answer
    header = json.loads(answer[:int(headers["Inference-Header-Content-Length"])])
    assert header["outputs"][0]["data"] == expected["int64_model"]["total"].tolist()
    assert header["outputs"][1]["parameters"] == {"binary_data_size": 24}
    status, _, answer = http_post(typed_server.url("/v2/models/int64_model/infer"), b"\x1f\x8b",
                                  {"Content-Encoding": "gzip"})
    assert status == 400 and "Content-Encoding \"gzip\" is not supported" in json.loads(answer)["error"]


def test_rest_json_takes_nested_data_and_mixed_binary_outputs(typed_server, expected):
    x = REQUESTS["mlp"]["x"]
    body = json.dumps({
        "id": "req-7",
        "inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.tolist()}],
        "outputs": [{"name": "out"}],
    }).encode()
    status, _, answer = http_post(typed_server.url("/v2/models/mlp/infer"), body)
    assert status == 200, answer
    answer = json.loads(answer)
    assert answer["id"] == "req-7" and answer["model_name"] == "mlp" and answer["model_version"] == "1"
    out = answer["outputs"][0]
    assert out["shape"] == [3, 4] and out["datatype"] == "FP32"
    np.testing.assert_array_equal(np.array(out["data"], np.float32).reshape(3, 4), expected["mlp"]["out"])

    # One output in binary, one in JSON: the header says which is which.
    ints = REQUESTS["int64_model"]
    body = json.dumps({
        "inputs": [{"name": n, "shape": [3], "datatype": "INT64", "data": a.tolist()} for n, a in ints.items()],
        "outputs": [{"name": "out", "parameters": {"binary_data": True}}, {"name": "total"}],
    }).encode()
    status, headers, answer = http_post(typed_server.url("/v2/models/int64_model/infer"), body)
    assert status == 200, answer
    length = int(headers["Inference-Header-Content-Length"])
    header = json.loads(answer[:length])
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 24}
    np.testing.assert_array_equal(np.frombuffer(answer[length:], np.int64), expected["int64_model"]["out"])
    assert header["outputs"][1]["data"] == expected["int64_model"]["total"].tolist()


def binary_request(inputs, header_extra=None):
    """A binary-extension request body and its header length."""
    header = {"inputs": [], **(header_extra or {})}
    raw = b""
    for name, array in inputs.items():
        data = array.tobytes()
        header["inputs"].append({"name": name, "shape": list(array.shape), "datatype": datatype(array),
                                 "parameters": {"binary_data_size": len(data)}})
        raw += data
    text = json.dumps(header).encode()
    return text + raw, len(text)


BAD_REST_REQUESTS = {
    # name: (body or (body, header length), status, words the error must have)
    "malformed json": (b'{"inputs": [', 400, "malformed inference request JSON"),
    "missing datatype": (b'{"inputs": [{"name": "x", "shape": [1], "data": [1]}]}', 400, "missing field `datatype`"),
    "unknown datatype": (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP8", "data": [1]}]}', 400,
                         "input 'x': datatype 'FP8'"),
    "negative dim": (b'{"inputs": [{"name": "x", "shape": [-2], "datatype": "FP32", "data": [1]}]}', 400,
                     "input 'x': shape [-2] has a negative dim"),
    "data count": (b'{"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2]}]}', 400,
                   "input 'x': shape holds 3 elements, data has 2"),
    "data past the count": (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [[1], [2]]}]}',
                            400, "input 'x': shape holds 1 elements, data has more"),
    "huge dim, no elements": (b'{"inputs": [{"name": "x", "shape": [4000000000, 0], "datatype": "FP32", "data": []}]}',
                              400, "input 'x': dim 0 of shape [4000000000, 0] is 4000000000, more than the 4096"),
    "no inputs": (b'{"inputs": []}', 400, "the request has no inputs"),
    "unsupported extension": (
        b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],'
        b' "outputs": [{"name": "out", "parameters": {"classification": 2}}]}', 400,
        "output 'out': parameter 'classification' is not supported"),
    "data type": (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": ["a"]}]}', 400,
                  "input 'x': element 0 is \"a\", not a FP32 value"),
    "int range": (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "INT8", "data": [300]}]}', 400,
                  "input 'x': element 0 is 300, not a INT8 value"),
    "no data": (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}', 400,
                "input 'x' has neither data nor binary_data_size"),
    "unknown tensor": (b'{"inputs": [{"name": "z", "shape": [1], "datatype": "FP32", "data": [1]}]}', 400,
                       "input 'z' is not in the spec"),
    "wrong dtype": (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "data": [1]}]}', 400,
                    "input 'x': expected dtype float32, got int32"),
    "wrong shape": (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]},'
                    b'{"name": "y", "shape": [2], "datatype": "FP32", "data": [1, 2]}]}', 400,
                    "symbol 'num_inputs' = 1"),
    "duplicate input": (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]},'
                        b'{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}', 400,
                        "input 'x' is given twice"),
    "header length past the body": ((b'{"inputs": []}', 500), 400, "Inference-Header-Content-Length is 500"),
    "binary size past the data": (
        (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]}'
         b"\0\0\0\0", None), 400, "binary_data_size is 8 but only 4 bytes"),
    "binary bytes left over": (
        (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}]}'
         b"\0\0\0\0\0", None), 400, "1 bytes of binary data are not claimed"),
    "binary size for dtype": (
        (b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 4}}]}'
         b"\0\0\0\0", None), 400, "input 'x': FP32 of shape [2] needs 8 bytes of data, got 4"),
    "bytes framing": (
        (b'{"inputs": [{"name": "w", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 6}}]}'
         b"\x09\0\0\0ab", None), 400, "input 'w': BYTES element 0 claims 9 bytes, 2 are left"),
    "bytes not utf-8": (
        (b'{"inputs": [{"name": "w", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 6}}]}'
         b"\x02\0\0\0\xff\xfe", None), 400, "input 'w': BYTES element 0 is not UTF-8"),
}


@pytest.fixture(scope="module")
def error_server(addition, raising):
    server = Server([addition, raising], "--max-body-bytes", "4096")
    yield server
    server.close()


@pytest.mark.parametrize("case", sorted(BAD_REST_REQUESTS))
def test_bad_rest_requests_name_the_culprit(error_server, case):
    body, status, words = BAD_REST_REQUESTS[case]
    headers = {}
    if isinstance(body, tuple):
        body, length = body
        length = len(body.split(b"}]}")[0]) + 3 if length is None else length
        headers["Inference-Header-Content-Length"] = str(length)
    got, _, answer = http_post(error_server.url("/v2/models/addition_model/infer"), body, headers)
    assert got == status, answer
    assert words in json.loads(answer)["error"]
    # The server keeps serving.
    x = np.ones(2, np.float32)
    result = client_infer(error_server.client("http"), "http", "addition_model", {"x": x, "y": x})
    np.testing.assert_array_equal(result.as_numpy("out"), x + x)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_error_classes_over_each_protocol(error_server, protocol):
    client = error_server.client(protocol)
    expect = {"bad": "400", "missing": "404", "backend": "500", "large": "413"} if protocol == "http" else {
        "bad": "StatusCode.INVALID_ARGUMENT", "missing": "StatusCode.NOT_FOUND", "backend": "StatusCode.INTERNAL",
        # tonic's answer to a message over the limit.
        "large": "StatusCode.OUT_OF_RANGE"}
    x = np.ones(3, np.float32)
    with pytest.raises(InferenceServerException) as e:
        client_infer(client, protocol, "addition_model", {"x": x, "y": np.ones(3, np.float64)})
    assert expect["bad"] in str(e.value.status()) and "input 'y': expected dtype float32, got float64" in str(e.value)
    # An input the model's forward requires, left out: the caller's mistake,
    # named, without libtorch's schema dump and C++ frames (it was a 500).
    with pytest.raises(InferenceServerException) as e:
        client_infer(client, protocol, "addition_model", {"x": x})
    assert expect["bad"] in str(e.value.status()), e.value
    assert "missing input 'y': the model's forward requires it" in str(e.value)
    assert "frame #" not in str(e.value) and ".so" not in str(e.value)
    with pytest.raises(InferenceServerException) as e:
        client_infer(client, protocol, "nope", {"x": x})
    assert expect["missing"] in str(e.value.status()) and "no model named 'nope'" in str(e.value)
    with pytest.raises(InferenceServerException) as e:
        client_infer(client, protocol, "raising", {"x": np.full(3, 50, np.float32)})
    assert expect["backend"] in str(e.value.status()) and "input sum exceeds the limit of 100" in str(e.value)
    # The client is told the exception's own line; the TorchScript stack,
    # with the packager's source paths, goes to the server's log only.
    assert "builtins.ValueError: input sum exceeds the limit of 100" in str(e.value), e.value
    assert "Traceback" not in str(e.value) and "models_for_tests.py" not in str(e.value), e.value
    deadline = time.monotonic() + 10
    while "Traceback of TorchScript" not in error_server.stderr and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "Traceback of TorchScript" in error_server.stderr and "models_for_tests.py" in error_server.stderr
    # The same failure again: logged with its message, the traceback once
    # per model (a model refusing many requests does not flood the log).
    with pytest.raises(InferenceServerException):
        client_infer(client, protocol, "raising", {"x": np.full(3, 60, np.float32)})
    while "(its traceback is logged above)" not in error_server.stderr and time.monotonic() < deadline + 10:
        time.sleep(0.05)
    assert "(its traceback is logged above)" in error_server.stderr, error_server.stderr
    assert error_server.stderr.count("Traceback of TorchScript, serialized code") == 1, error_server.stderr
    big = np.ones(4096, np.float32)
    with pytest.raises(InferenceServerException) as e:
        client_infer(client, protocol, "addition_model", {"x": big, "y": big})
    assert expect["large"] in str(e.value.status())
    assert ("over the server's limit of 4096 bytes" if protocol == "http" else "the limit is: 4096") in str(e.value)
    result = client_infer(client, protocol, "raising", {"x": x})
    np.testing.assert_array_equal(result.as_numpy("y"), x * 2)


def test_grpc_typed_contents_and_their_errors(error_server):
    """Typed `contents` (what clients other than tritonclient send) instead
    of raw bytes, through the generated protobuf types of the client."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    channel = grpc.insecure_channel(error_server.grpc)
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    request = service_pb2.ModelInferRequest(model_name="addition_model")
    for name, values in (("x", [1.0, 2.0]), ("y", [10.0, 20.0])):
        tensor = request.inputs.add(name=name, datatype="FP32", shape=[2])
        tensor.contents.fp32_contents.extend(values)
    response = stub.ModelInfer(request, timeout=60)
    assert response.outputs[0].name == "out" and list(response.outputs[0].shape) == [2]
    np.testing.assert_array_equal(np.frombuffer(response.raw_output_contents[0], np.float32), [11, 22])

    request.inputs[1].contents.fp32_contents.append(5.0)
    with pytest.raises(grpc.RpcError) as e:
        stub.ModelInfer(request, timeout=60)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input 'y': shape [2] holds 2 elements, fp32_contents has 3" in e.value.details()
    request.raw_input_contents.append(b"\0" * 8)
    with pytest.raises(grpc.RpcError) as e:
        stub.ModelInfer(request, timeout=60)
    assert "1 raw_input_contents for 2 inputs" in e.value.details()
    channel.close()


def metric(text, name, **labels):
    """The value of one sample in Prometheus text."""
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            sample_labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
            if all(sample_labels.get(k) == str(v) for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return None


def test_metrics_count_requests_and_failures(error_server):
    client = error_server.client("http")
    before = http_get(error_server.url("/metrics"))[1].decode()
    start = metric(before, "neuropods_inference_requests_total", model="raising", protocol="http") or 0
    failed = metric(before, "neuropods_inference_failures_total", model="raising", protocol="http",
                    fault="server") or 0
    client_infer(client, "http", "raising", {"x": np.ones(2, np.float32)})
    with pytest.raises(InferenceServerException):
        client_infer(client, "http", "raising", {"x": np.full(2, 99, np.float32)})
    status, text = http_get(error_server.url("/metrics"))
    text = text.decode()
    assert status == 200
    assert metric(text, "neuropods_inference_requests_total", model="raising", protocol="http") == start + 2
    assert metric(text, "neuropods_inference_failures_total", model="raising", protocol="http",
                  fault="server") == failed + 1
    assert metric(text, "neuropods_inference_request_duration_seconds_count", model="raising",
                  protocol="http") == start + 2
    assert metric(text, "neuropods_run_duration_seconds_count", model="raising") >= 2


def test_dynamic_batching_gives_each_caller_its_rows(serve, mlp_package, bool_package, addition):
    server = serve([mlp_package, bool_package, addition], "--max-batch-size", "32", "--max-queue-delay-us", "20000")
    assert "model 'addition_model' is served without batching: 'out' does not have the batch symbol" in server.stderr
    rng = np.random.default_rng(7)
    jobs = []
    for i in range(48):
        if i % 3 == 2:
            # A different trailing shape: never stacked with the others.
            cols = 2 + i % 4
            jobs.append(("bool_model", {"a": rng.random((2, cols)) > 0.5, "b": rng.random((2, cols)) > 0.5}))
        else:
            jobs.append(("mlp", {"x": rng.standard_normal((1 + i % 3, 8)).astype(np.float32)}))
    models = {path: load_neuropod(path) for path in (mlp_package, bool_package)}
    by_name = {m.name: m for m in models.values()}
    want = [by_name[name].infer(inputs) for name, inputs in jobs]
    clients = {}

    def call(index):
        protocol = "grpc" if index % 2 else "http"
        key = (threading.get_ident(), protocol)
        client = clients.setdefault(key, server.client(protocol))
        name, inputs = jobs[index]
        return client_infer(client, protocol, name, inputs)

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(call, range(len(jobs))))
    for (name, _), result, expected_outputs in zip(jobs, results, want):
        for output, value in expected_outputs.items():
            got = result.as_numpy(output)
            assert got.shape == value.shape
            np.testing.assert_allclose(got, value, rtol=1e-5, atol=1e-6)
    text = http_get(server.url("/metrics"))[1].decode()
    runs = metric(text, "neuropods_batch_size_requests_count", model="mlp")
    singles = metric(text, "neuropods_batch_size_requests_bucket", model="mlp", le="1")
    assert runs is not None and singles is not None
    assert singles < runs, f"no run of mlp took more than one request: {runs} runs, {singles} of one"
    rows = metric(text, "neuropods_batch_size_rows_sum", model="mlp")
    assert rows == sum(inputs["x"].shape[0] for name, inputs in jobs if name == "mlp")
    for model in models.values():
        model.close()


def test_batching_with_instances_answers_a_request_that_heads_the_next_batch(serve, mlp_package):
    """Two requests that cannot share a batch (together over the limit),
    then nothing more: the second heads a batch of its own, on whichever
    instance is free, without waiting for a third request."""
    server = serve([mlp_package], "--instances", "2", "--max-batch-size", "8", "--max-queue-delay-us", "20000")
    x = np.ones((5, 8), np.float32)

    def call(_):
        return client_infer(server.client("http"), "http", "mlp", {"x": x}).as_numpy("out").shape

    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(call, range(2))) == [(5, 4), (5, 4)]
    with pytest.raises(InferenceServerException, match="a request of 9 rows is over the batch size limit of 8"):
        client_infer(server.client("http"), "http", "mlp", {"x": np.ones((9, 8), np.float32)})


def test_a_failing_batch_fails_only_its_requests(serve, raising, mlp_package):
    server = serve([raising, mlp_package], "--max-batch-size", "16", "--max-queue-delay-us", "20000")
    x = np.ones((2, 8), np.float32)

    def call(index):
        client = server.client("http")
        if index % 2:
            try:
                client_infer(client, "http", "raising", {"x": np.full(4, 30, np.float32)})
            except InferenceServerException as e:
                return str(e)
            return "no error"
        return client_infer(client, "http", "mlp", {"x": x}).as_numpy("out").shape

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, range(16)))
    for index, result in enumerate(results):
        if index % 2:
            assert "input sum exceeds the limit of 100" in result
        else:
            assert result == (2, 4)


def test_a_request_the_model_refuses_fails_alone_in_its_batch(serve, make_package):
    # One request in ten holds a row the model refuses; batched with good
    # ones, it used to fail them all (56% of good requests got 500).
    path = make_package("no_negatives", M.RefusesNegativeRows(), [spec("x", "float32", ("batch", 4))],
                        [spec("y", "float32", ("batch", 4))])
    server = serve([path], "--max-batch-size", "16", "--max-queue-delay-us", "20000")
    jobs = [np.full((1 + i % 2, 4), -1.0 if i % 10 == 3 else float(i), np.float32) for i in range(60)]
    clients = {}

    def call(index):
        client = clients.setdefault(threading.get_ident(), server.client("http"))
        try:
            return client_infer(client, "http", "no_negatives", {"x": jobs[index]}).as_numpy("y")
        except InferenceServerException as e:
            return e

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(call, range(len(jobs))))
    for x, result in zip(jobs, results):
        if (x < 0).any():
            assert isinstance(result, InferenceServerException), result
            assert "a row holds a negative value" in str(result)
        else:
            assert not isinstance(result, InferenceServerException), f"a good request failed: {result}"
            np.testing.assert_array_equal(result, x * 2)
    text = http_get(server.url("/metrics"))[1].decode()
    runs = metric(text, "neuropods_batch_size_requests_count", model="no_negatives")
    singles = metric(text, "neuropods_batch_size_requests_bucket", model="no_negatives", le="1")
    assert singles < runs, "no run took more than one request: the test did not batch"


def test_connections_trickling_a_request_head_do_not_starve_health_checks(serve, addition):
    # 1,100 connections each sending a byte of a request head every 5 s,
    # to a server under systemd's default limit of 1024 file descriptors.
    # Before, they held every descriptor and every new request timed out.
    # 100 of them on the gRPC port, trickling HTTP/2's preface: both ports
    # share the descriptors, and the bound on idle connections.
    server = serve([addition], max_files=1024)
    tricklers = []
    try:
        for i in range(1100):
            host, port = (server.grpc if i % 11 == 0 else server.http).rsplit(":", 1)
            sock = socket.create_connection((host, int(port)))
            sock.setblocking(False)
            tricklers.append(sock)
        ends = time.monotonic() + 11
        round_ends = 0.0
        health = []
        while time.monotonic() < ends:
            if time.monotonic() >= round_ends:
                for i, sock in enumerate(tricklers):
                    try:
                        sock.send(b"P" if i % 11 == 0 else b"G")
                    except OSError:
                        pass  # closed by the server
                round_ends = time.monotonic() + 5
            started = time.monotonic()
            status, _ = http_get(server.url("/v2/health/ready"), timeout=5)
            health.append((status, time.monotonic() - started))
            time.sleep(0.5)
    finally:
        for sock in tricklers:
            sock.close()
    assert all(status == 200 for status, _ in health), health
    assert max(took for _, took in health) < 1.0, health
    text = http_get(server.url("/metrics"))[1].decode()
    closed = [metric(text, "neuropods_connections_closed_total", protocol=p, reason="idle_cap") for p in ("http", "grpc")]
    assert None not in closed and sum(closed) >= 1100 - 512, text[-2000:]


def test_a_request_head_or_body_that_does_not_arrive_in_time_is_cut_off(serve, addition):
    server = serve([addition], "--header-timeout", "1", "--body-timeout", "1")
    host, port = server.http.rsplit(":", 1)
    # A head trickled a byte at a time: closed at the deadline, not kept
    # open by each byte.
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        started = time.monotonic()
        closed = False
        for byte in b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n":
            try:
                sock.send(bytes([byte]))
                time.sleep(0.2)
            except OSError:
                closed = True
                break
        if not closed:
            closed = sock.recv(1024) == b""
        assert closed and time.monotonic() - started < 5
    # A body trickled: 408 once its deadline (1 s plus one per 64 KiB
    # received) passes.
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v2/models/addition_model/infer HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
        started = time.monotonic()
        answer = b""
        while b"\r\n\r\n" not in answer and time.monotonic() - started < 8:
            try:
                sock.send(b" ")
            except OSError:
                break
            sock.settimeout(0.5)
            try:
                answer += sock.recv(4096)
            except socket.timeout:
                pass
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert b"the request body did not arrive in time" in answer
        assert time.monotonic() - started < 4
    # A gRPC message that stops arriving: its stream is answered once the
    # deadline passes (before, HTTP/2 pings kept a silent client's stream
    # open forever). By hand, HTTP/2 frames: the preface, SETTINGS, the
    # request's HEADERS, then a DATA frame with a gRPC message claiming
    # 1000 bytes of which 3 ever come.
    def frame(kind, flags, stream, payload=b""):
        return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload

    def literal(name, value):  # HPACK: literal header, new name, no Huffman
        return b"\0" + bytes([len(name)]) + name + bytes([len(value)]) + value

    headers = b"".join(literal(n, v) for n, v in [
        (b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/inference.GRPCInferenceService/ModelInfer"),
        (b":authority", b"x"), (b"content-type", b"application/grpc"), (b"te", b"trailers")])
    host, port = server.grpc.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0) + frame(1, 0x4, 1, headers)
                     + frame(0, 0, 1, b"\0" + (1000).to_bytes(4, "big") + b"abc"))
        started = time.monotonic()
        received, answered = b"", False
        while not answered and time.monotonic() - started < 8:
            sock.settimeout(0.5)
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                break
            received += chunk
            while len(received) >= 9 and len(received) >= 9 + int.from_bytes(received[:3], "big"):
                length, kind, flags = int.from_bytes(received[:3], "big"), received[3], received[4]
                stream = int.from_bytes(received[5:9], "big") & 0x7FFFFFFF
                if kind == 4 and not flags & 1:
                    sock.sendall(frame(4, 1, 0))  # SETTINGS ack
                # The stream's trailers (HEADERS with END_STREAM), or a reset.
                answered |= stream == 1 and (kind == 1 and flags & 1 or kind == 3)
                received = received[9 + length:]
        assert answered, "the stalled gRPC request was never answered"
        assert time.monotonic() - started < 5
    text = http_get(server.url("/metrics"))[1].decode()
    assert metric(text, "neuropods_connections_closed_total", protocol="http", reason="header_timeout") >= 1
    assert metric(text, "neuropods_connections_closed_total", protocol="http", reason="body_timeout") >= 1
    assert metric(text, "neuropods_connections_closed_total", protocol="grpc", reason="body_timeout") >= 1


def test_shutdown_finishes_requests_in_flight(serve, slow):
    server = serve([slow])
    x = (np.eye(64, dtype=np.float32) * 0.5)
    steps = np.array(30000, np.int64)
    with load_neuropod(slow) as model:
        started = time.monotonic()
        want = model.infer({"x": x, "steps": steps})["y"]
        took = time.monotonic() - started
    assert took > 0.2, "the slow model is too fast to be in flight during a shutdown"
    result = {}

    def call():
        result["y"] = client_infer(server.client("http"), "http", "slow", {"x": x, "steps": steps}).as_numpy("y")

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(min(0.1, took / 4))
    assert server.stop(signal.SIGTERM) == 0
    caller.join(60)
    np.testing.assert_array_equal(result["y"], want)
    assert "shutting down: finishing the requests in flight" in server.stderr
    with pytest.raises(Exception):
        server.client("http").is_server_live()


def test_ctrl_c_stops_the_server_cleanly(serve, addition):
    server = serve([addition])
    assert server.client("grpc").is_server_live()
    assert server.stop(signal.SIGINT) == 0
    assert "Traceback" not in server.stderr


CRASHING_MODEL = """
import os
import numpy as np

class Model:
    def __call__(self, x):
        if (x < 0).any():
            os._exit(3)
        return {"out": x * 2}

def get_model(data_root):
    return Model()
"""


def test_out_of_process_instances_survive_a_crashing_model(serve, tmp_path):
    path = python_package(tmp_path, "crashing", CRASHING_MODEL)
    server = serve([path], "--use-ope", "--instances", "2")
    children = subprocess.run(["pgrep", "-P", str(server.process.pid)], capture_output=True, text=True)
    assert len(children.stdout.split()) == 2, children.stdout
    client = server.client("http")
    x = np.arange(3, dtype=np.float32)
    np.testing.assert_array_equal(client_infer(client, "http", "crashing", {"x": x}).as_numpy("out"), x * 2)
    with pytest.raises(InferenceServerException) as e:
        client_infer(client, "http", "crashing", {"x": -x - 1})
    assert e.value.status() == "500" and "exited with status 3" in str(e.value)
    for _ in range(4):
        np.testing.assert_array_equal(client_infer(client, "http", "crashing", {"x": x}).as_numpy("out"), x * 2)
    assert server.process.poll() is None


@pytest.mark.parametrize("case", ["missing package", "duplicate name", "port in use"])
def test_startup_errors_are_one_line(addition, tmp_path, case):
    args = [addition, "--http-port", "0"]
    if case == "missing package":
        args = [tmp_path / "nowhere", "--http-port", "0"]
        words = "not found: " + str(tmp_path / "nowhere")
    elif case == "duplicate name":
        args = [addition, addition, "--http-port", "0"]
        words = "two packages are named 'addition_model'"
    else:
        import socket

        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        args = [addition, "--http-port", str(taken.getsockname()[1])]
        words = f"cannot listen for HTTP on 127.0.0.1:{taken.getsockname()[1]}"
    result = subprocess.run([CONSOLE_SCRIPT, "serve", *map(str, args), "--grpc-port", "0"],
                            capture_output=True, text=True, timeout=120)
    if case == "port in use":
        taken.close()
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("neuropods serve: ") and words in last, result.stderr
