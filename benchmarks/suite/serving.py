"""Cases 15-16: serving over the Open Inference Protocol.

15. `neuropods serve` against MLServer (the protocol's Python reference
    server) serving the same TorchScript 4-element add, MLServer through a
    custom runtime that calls the same framework (`torch.jit.load` of the
    package's model.pt, numpy in and out through MLServer's codecs): HTTP
    and gRPC, 1 and 16 concurrent clients; throughput and p50/p99 latency.
16. Dynamic batching: `neuropods serve` with `--max-batch-size` against
    itself without it, on a batchable MLP (2048 wide, hidden 2048: 50 MB
    of weights, which one row reads all of for little arithmetic, as a
    served dense model does), 16 concurrent clients sending one row each.

The load comes from `examples/loadgen.rs` of crates/neuropods-server: a
closed loop of N clients, each with its own connection, on one thread of
Rust (a current-thread tokio runtime), so that it costs the machine far
less than either server and takes at most one core from it; both servers
face the same loadgen and the same requests. HTTP requests are JSON
tensors for both servers (MLServer does not take the binary extension);
neuropods' binary-extension figure is reported beside them. gRPC requests
carry `raw_input_contents`, as tritonclient sends them.

Each round measures every side once, in turn (the servers stay up
throughout, idle while the other is measured); the ratio is taken round by
round.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Dict, List, Optional, Tuple

from .harness import Comparison, Settings, summary
from .torchscript import package_addition, package_mlp

NEUROPODS = "neuropods serve"
MLSERVER = "MLServer"
BATCHED = "neuropods serve, batched"
UNBATCHED = "neuropods serve, unbatched"
THROUGHPUT_TARGET = 5.0
BATCHING_TARGET = 3.0
MAX_BATCH = 64
QUEUE_DELAY_US = 1000
SERVING_MLP_WIDTH = 2048

RUNTIME = '''"""An MLServer runtime that runs a neuropods TorchScript package's
model.pt: inputs by name, a dict of outputs, numpy through MLServer's codecs."""

import torch
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class TorchScriptRuntime(MLModel):
    async def load(self) -> bool:
        torch.set_num_threads(1)
        self._module = torch.jit.load(self.settings.parameters.uri)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        inputs = {i.name: torch.from_numpy(NumpyCodec.decode_input(i)) for i in payload.inputs}
        with torch.inference_mode():
            outputs = self._module(**inputs)
        return InferenceResponse(
            model_name=self.name,
            outputs=[NumpyCodec.encode_output(name, value.numpy()) for name, value in outputs.items()],
        )
'''


def loadgen_path() -> str:
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.expanduser("~/.cache/neuropods/target")
    path = os.path.join(target, "release", "examples", "loadgen")
    if not os.path.isfile(path):
        raise RuntimeError(f"{path} is missing: cargo build --release -p neuropods-server --example loadgen")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server not ready after {timeout} s: {url}")


class Served:
    """A server process and its addresses."""

    def __init__(self, process: subprocess.Popen, http: str, grpc: str, log: str):
        self.process, self.http, self.grpc, self.log = process, http, grpc, log

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_neuropods(packages: List[str], work: str, *flags: str) -> Served:
    http, grpc = free_port(), free_port()
    log = os.path.join(work, f"neuropods-{http}.log")
    command = [os.path.join(os.path.dirname(sys.executable), "neuropods"), "serve", *packages,
               "--http-port", str(http), "--grpc-port", str(grpc), *flags]
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    served = Served(process, f"127.0.0.1:{http}", f"127.0.0.1:{grpc}", log)
    wait_ready(f"http://{served.http}/v2/health/ready", process)
    return served


def start_mlserver(package: str, name: str, work: str) -> Served:
    """MLServer serving the package's TorchScript file through RUNTIME, in
    its main process (parallel_workers 0: MLServer 1.7.1's worker pool does
    not start with uvloop 0.23, "There is no current event loop")."""
    root = os.path.join(work, "mlserver")
    model_dir = os.path.join(root, name)
    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, "torchscript_runtime.py"), "w") as f:
        f.write(RUNTIME)
    with open(os.path.join(model_dir, "model-settings.json"), "w") as f:
        json.dump({
            "name": name,
            "implementation": "torchscript_runtime.TorchScriptRuntime",
            "parameters": {"uri": os.path.join(package, "0", "data", "model.pt")},
        }, f)
    http, grpc, metrics = free_port(), free_port(), free_port()
    with open(os.path.join(root, "settings.json"), "w") as f:
        json.dump({"http_port": http, "grpc_port": grpc, "metrics_port": metrics, "parallel_workers": 0,
                   "host": "127.0.0.1", "debug": False}, f)
    log = os.path.join(work, "mlserver.log")
    command = [os.path.join(os.path.dirname(sys.executable), "mlserver"), "start", root]
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=root)
    served = Served(process, f"127.0.0.1:{http}", f"127.0.0.1:{grpc}", log)
    wait_ready(f"http://{served.http}/v2/models/{name}/ready", process)
    return served


def load(address: str, protocol: str, model: str, inputs: List[str], concurrency: int,
         duration: float, warmup: float) -> Dict[str, float]:
    command = [loadgen_path(), "--protocol", protocol, "--address", address, "--model", model,
               "--concurrency", str(concurrency), "--duration", str(duration), "--warmup", str(warmup)]
    for spec in inputs:
        command += ["--input", spec]
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + warmup + 120)
    if done.returncode != 0:
        raise RuntimeError(f"loadgen failed: {done.stderr[-2000:]}")
    result = json.loads(done.stdout)
    if result["errors"]:
        raise RuntimeError(f"{result['errors']} requests to {address} failed: {done.stderr[-2000:]}")
    return result


def compare(title: str, case: str, sides: Dict[str, Tuple[str, str]], ours: str, theirs: str,
            model: str, inputs: List[str], concurrency: int, rounds: int, duration: float,
            warmup: float, target: float, target_text: str, also: Optional[Dict[str, Tuple[str, str]]] = None,
            note: str = "") -> Comparison:
    """Rounds of loadgen runs, each side in turn; `sides` maps a label to
    (address, loadgen protocol). `also` are sides reported as extras."""
    runs: Dict[str, List[Dict[str, float]]] = {label: [] for label in {**sides, **(also or {})}}
    for _ in range(rounds):
        for label, (address, protocol) in {**sides, **(also or {})}.items():
            runs[label].append(load(address, protocol, model, inputs, concurrency, duration, warmup))
    throughput = {label: [r["throughput"] for r in results] for label, results in runs.items()}
    ratio = summary([a / b for a, b in zip(throughput[ours], throughput[theirs])])
    p99 = {label: summary([r["p99_us"] / 1e3 for r in results])["median"] for label, results in runs.items()}
    p50 = {label: summary([r["p50_us"] / 1e3 for r in results])["median"] for label, results in runs.items()}
    extra = {}
    for label in runs:
        extra[f"{label} p50 ms"] = p50[label]
        extra[f"{label} p99 ms"] = p99[label]
    met = ratio["median"] >= target
    if case == "15":
        met = met and p99[ours] < p99[theirs]
    return Comparison(
        case=case, title=title, unit="requests/s", neuropods_label=ours, neuropods=summary(throughput[ours]),
        other_label=theirs, other=summary(throughput[theirs]), ratio=ratio, higher_is_better=True,
        target=target_text, met=met, note=note, extra=extra,
    )


def run(settings: Settings, work: str) -> List[Comparison]:
    if shutil.which("mlserver", path=os.path.dirname(sys.executable)) is None:
        raise RuntimeError("mlserver is not installed in this venv (requirements-dev.txt installs it)")
    rounds = 1 if settings.quick else 5
    duration, warmup = (0.3, 0.2) if settings.quick else (2.0, 0.5)
    addition = package_addition(work)
    mlp = package_mlp(work, SERVING_MLP_WIDTH, SERVING_MLP_WIDTH, name="serving_mlp")
    results: List[Comparison] = []
    servers: List[Served] = []
    try:
        ours = start_neuropods([addition], work, "--intra-op-threads", "1")
        servers.append(ours)
        theirs = start_mlserver(addition, "addition", work)
        servers.append(theirs)
        add_inputs = ["x:FP32:4", "y:FP32:4"]
        for protocol in ("http", "grpc"):
            for concurrency in (1, 16):
                if protocol == "http":
                    sides = {NEUROPODS: (ours.http, "http-json"), MLSERVER: (theirs.http, "http-json")}
                    also = {f"{NEUROPODS}, binary extension": (ours.http, "http")}
                else:
                    sides = {NEUROPODS: (ours.grpc, "grpc"), MLSERVER: (theirs.grpc, "grpc")}
                    also = None
                clients = "1 client" if concurrency == 1 else f"{concurrency} clients"
                results.append(compare(
                    f"{'HTTP (JSON)' if protocol == 'http' else 'gRPC'}, {clients}", "15", sides, NEUROPODS,
                    MLSERVER, "addition", add_inputs, concurrency, rounds, duration, warmup, THROUGHPUT_TARGET,
                    f">= {THROUGHPUT_TARGET:g}x throughput, lower p99", also=also,
                ))
        # Both at torch's defaults (an intra-op thread per core): a batch
        # runs on both cores, as concurrent unbatched calls do.
        unbatched = start_neuropods([mlp], work)
        servers.append(unbatched)
        batched = start_neuropods([mlp], work, "--max-batch-size", str(MAX_BATCH),
                                  "--max-queue-delay-us", str(QUEUE_DELAY_US))
        servers.append(batched)
        for protocol in ("grpc", "http"):
            address = (lambda s: s.grpc) if protocol == "grpc" else (lambda s: s.http)
            sides = {BATCHED: (address(batched), protocol), UNBATCHED: (address(unbatched), protocol)}
            results.append(compare(
                f"MLP ({SERVING_MLP_WIDTH} wide), 1 row per request, 16 clients, {protocol}", "16", sides,
                BATCHED, UNBATCHED, "serving_mlp", [f"x:FP32:1,{SERVING_MLP_WIDTH}"], 16, rounds, duration, warmup, BATCHING_TARGET,
                f">= {BATCHING_TARGET:g}x unbatched throughput",
                note=f"--max-batch-size {MAX_BATCH} --max-queue-delay-us {QUEUE_DELAY_US}",
            ))
    finally:
        for server in servers:
            server.stop()
    return results
