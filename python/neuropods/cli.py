"""The `neuropods` command (also `python -m neuropods`).

    neuropods inspect PATH [--json]
    neuropods infer PATH --input x=x.npy [--input-npz in.npz] [--output out.npz]
    neuropods bench PATH [--use-ope] [--threads N] [--duration S] [--batch K] [--json]
    neuropods serve PATH... [--http-port 8000] [--grpc-port 8001] [--max-batch-size N]
    neuropods batch PATH --input IN.parquet --output OUT/ [--ray-address auto] [--concurrency N]

Everything goes through the public API (`load_neuropod`, and
`neuropods_native.inspect`, which reads a package without loading its
framework). An error prints one line, the exception's class and message,
and exits 1; `--verbose` prints the traceback too. An option out of range
is argparse's usage error (exit 2), naming the option.
"""

import argparse
import json
import math
import sys
import traceback
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

import neuropods
import neuropods_native
from neuropods.bench import measure
from neuropods.loader import LoadOptions, load_neuropod
from neuropods.utils.eval_utils import has_test_data


def format_shape(shape: Sequence[Any]) -> str:
    """A spec shape as Python writes a tuple: (None, 3), ('batch',)."""
    return repr(tuple(shape))


def format_size(size: int) -> str:
    scaled = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if scaled < 1024 or unit == "GiB":
            return f"{size} {unit}" if unit == "B" else f"{scaled:.1f} {unit}"
        scaled /= 1024
    return str(size)


def integer(low: int, high: Optional[int] = None) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high], so that a value out of
    range is refused naming its option (not an OverflowError later)."""

    def parse(text: str) -> int:
        value = int(text)
        if value < low or (high is not None and value > high):
            bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"{text} is out of range: takes an integer {bounds}")
        return value

    parse.__name__ = "integer"  # what argparse calls it in "invalid integer value"
    return parse


def seconds(zero_allowed: bool) -> Callable[[str], float]:
    """An argparse type: a finite number of seconds, above 0 or (when
    ``zero_allowed``) at least 0."""

    def parse(text: str) -> float:
        value = float(text)
        if not (math.isfinite(value) and (value > 0 or (zero_allowed and value == 0))):
            raise argparse.ArgumentTypeError(
                f"{text} is not a number of seconds {'of at least 0' if zero_allowed else 'above 0'}"
            )
        return value

    parse.__name__ = "seconds"
    return parse


PORT = integer(0, 65535)


def load_options(args: argparse.Namespace) -> LoadOptions:
    """Load options common to the subcommands that run a model."""
    options: LoadOptions = {"use_ope": args.use_ope}
    if args.visible_gpu is not None:
        options["visible_gpu"] = args.visible_gpu
    if args.intra_op_threads is not None:
        options["intra_op_threads"] = args.intra_op_threads
    if args.inter_op_threads is not None:
        options["inter_op_threads"] = args.inter_op_threads
    return options


def inspect(args: argparse.Namespace) -> None:
    info = neuropods_native.inspect(args.path)
    info["test_data"] = has_test_data([f["path"] for f in info["files"]])
    if args.json:
        print(json.dumps(info, indent=1))
        return
    print(f"name:      {info['name']}")
    print(f"platform:  {info['platform']} (version range {info['platform_version_semver']})")
    for direction in ("inputs", "outputs"):
        print(f"{direction}:")
        for entry in info[direction]:
            device = info["input_tensor_device"].get(entry["name"]) if direction == "inputs" else None
            placed = f" on {device}" if device else ""
            print(f"  {entry['name']}: {entry['dtype']} {format_shape(entry['shape'])}{placed}")
    if info["custom_ops"]:
        print(f"custom ops: {', '.join(info['custom_ops'])}")
    total = sum(f["size"] for f in info["files"])
    print(f"files ({len(info['files'])}, {format_size(total)}):")
    for entry in info["files"]:
        print(f"  {entry['path']}  {format_size(entry['size'])}")
    manifest = info["manifest"]
    detail = f": {manifest['detail']}" if manifest["detail"] else ""
    print(f"manifest:  {manifest['status']}{detail}")
    carried = "yes (run it: neuropods.utils.eval_utils.load_and_test_neuropod)" if info["test_data"] else "no"
    print(f"test data: {carried}")


def read_inputs(args: argparse.Namespace) -> Dict[str, np.ndarray]:
    inputs: Dict[str, np.ndarray] = {}
    if args.input_npz:
        archive = np.load(args.input_npz, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError(
                f"--input-npz {args.input_npz} holds one array (a .npy file), not named arrays: "
                f"give it as --input NAME={args.input_npz}"
            )
        with archive:
            inputs.update({name: archive[name] for name in archive.files})
    for item in args.input or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--input takes NAME=FILE.npy, got {item!r}")
        inputs[name] = np.load(path, allow_pickle=False)
    if not inputs:
        raise ValueError("no inputs: give --input NAME=FILE.npy or --input-npz FILE.npz")
    return inputs


def summary(array: np.ndarray, count: int = 6) -> str:
    flat = array.reshape(-1)
    values = ", ".join(str(v) for v in flat[:count].tolist())
    more = ", ..." if flat.size > count else ""
    return f"{array.dtype} {tuple(array.shape)} [{values}{more}]"


def infer(args: argparse.Namespace) -> None:
    inputs = read_inputs(args)
    with load_neuropod(args.path, **load_options(args)) as model:
        outputs = model.infer(inputs)
    if args.output:
        # Plain arrays (strings as unicode), readable without pickle.
        plain = {name: np.array(a.tolist(), dtype=str) if a.dtype.kind in "OT" else a for name, a in outputs.items()}
        # To the path given: np.savez would add ".npz" to a name without it.
        with open(args.output, "wb") as file:
            # numpy's stub types **kwds as its own keyword `allow_pickle: bool`.
            np.savez(file, **plain)  # type: ignore[arg-type]
        print(f"wrote {len(outputs)} outputs to {args.output}")
        return
    for name, array in outputs.items():
        print(f"{name}: {summary(array)}")


def bench(args: argparse.Namespace) -> None:
    with load_neuropod(args.path, **load_options(args)) as model:
        result = measure(model, threads=args.threads, duration=args.duration, batch=args.batch,
                         progress=not args.no_progress)
    result["use_ope"] = args.use_ope
    if args.json:
        print(json.dumps(result, indent=1))
        return
    lat = result["latency_ms"]
    print(f"{result['calls']} calls in {result['seconds']:.2f} s from {args.threads} thread(s), batch {args.batch}: "
          f"{result['calls_per_second']:.1f} calls/s")
    print(f"latency ms: p50 {lat['p50']:.4f}  p90 {lat['p90']:.4f}  p99 {lat['p99']:.4f}")


def serve(args: argparse.Namespace) -> None:
    try:
        neuropods_native.serve(
            args.paths,
            host=args.host,
            http_port=None if args.no_http else args.http_port,
            grpc_port=None if args.no_grpc else args.grpc_port,
            instances=args.instances,
            max_batch_size=args.max_batch_size,
            max_queue_delay_us=args.max_queue_delay_us,
            max_body_bytes=args.max_body_bytes,
            drain_timeout_s=args.drain_timeout,
            header_timeout_s=args.header_timeout,
            idle_timeout_s=args.idle_timeout,
            body_timeout_s=args.body_timeout,
            max_idle_connections=args.max_idle_connections,
            **load_options(args),
        )
    except KeyboardInterrupt:
        # The Ctrl-C that stopped the server, seen by Python once it returns.
        pass


def column_map(items: Optional[List[str]]) -> Dict[str, str]:
    mapping = {}
    for item in items or []:
        column, sep, name = item.partition("=")
        if not sep or not column or not name:
            raise ValueError(f"--column-map takes COLUMN=INPUT, got {item!r}")
        mapping[column] = name
    return mapping


def batch(args: argparse.Namespace) -> None:
    try:
        import ray

        from neuropods.ray import model_error, score_parquet
    except ModuleNotFoundError as e:
        if e.name not in ("ray", "pyarrow"):
            raise
        raise ImportError("neuropods batch needs Ray Data: pip install 'neuropods[ray]'") from None

    options = load_options(args)
    if "intra_op_threads" not in options:
        # Actors side by side, each with its CPUs: not every actor with a
        # pool as wide as the machine.
        options["intra_op_threads"] = max(1, int(args.num_cpus_per_actor))
    try:
        summary = score_parquet(
            args.path,
            args.input,
            args.output,
            concurrency=args.concurrency,
            batch_size=args.batch_size,
            num_cpus_per_actor=args.num_cpus_per_actor,
            num_gpus_per_actor=args.num_gpus_per_actor,
            column_map=column_map(args.column_map),
            keep_input_columns=args.keep_input_columns,
            overwrite=args.overwrite,
            ray_address=args.ray_address,
            **options,
        )
    except Exception as e:
        raise model_error(e) from e
    finally:
        # Before the command's error is printed: no late line of Ray's
        # (a worker's, forwarded) comes after it.
        ray.shutdown()
    print(
        f"scored {summary.rows} rows in {summary.seconds:.2f} s ({summary.rows_per_second:.0f} rows/s), "
        f"0 failed; wrote {summary.files_written} Parquet file(s) to {summary.output}"
    )


def add_load_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--use-ope", action="store_true", help="run the model in a worker process")
    parser.add_argument("--visible-gpu", type=int, help="GPU index (default: CPU)")
    parser.add_argument("--intra-op-threads", type=int, help="threads inside one op")
    parser.add_argument("--inter-op-threads", type=int, help="threads running independent ops")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="neuropods", description="Inspect, run, benchmark and serve neuropod packages.")
    top.add_argument("--verbose", action="store_true", help="print the traceback of an error")
    top.add_argument("--version", action="version", version=f"neuropods {neuropods.__version__}")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub = commands.add_parser("inspect", help="what a package is: specs, files, manifest check")
    sub.add_argument("path", help="package folder or zip")
    sub.add_argument("--json", action="store_true", help="print JSON")
    sub.set_defaults(run=inspect)

    sub = commands.add_parser("infer", help="run one call on inputs from .npy/.npz files")
    sub.add_argument("path", help="package folder or zip")
    sub.add_argument("--input", action="append", metavar="NAME=FILE.npy", help="an input (repeat for each)")
    sub.add_argument("--input-npz", metavar="FILE.npz", help="inputs, one array per name")
    sub.add_argument("--output", metavar="FILE.npz", help="write the outputs here instead of printing them")
    add_load_options(sub)
    sub.set_defaults(run=infer)

    sub = commands.add_parser("bench", help="latency and throughput on random inputs made from the spec")
    sub.add_argument("path", help="package folder or zip")
    sub.add_argument("--threads", type=integer(1), default=1, help="calling threads (default 1)")
    sub.add_argument("--duration", type=seconds(zero_allowed=False), default=5.0, help="seconds to measure (default 5)")
    sub.add_argument("--batch", type=integer(1), default=1, help="size of the first symbol in the spec (default 1)")
    sub.add_argument("--json", action="store_true", help="print JSON")
    sub.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    add_load_options(sub)
    sub.set_defaults(run=bench)

    sub = commands.add_parser(
        "serve",
        help="serve packages over the Open Inference Protocol (KServe v2: HTTP and gRPC)",
        description="Serve packages over the Open Inference Protocol (KServe v2, as Triton and "
        "MLServer speak it), each as a model named by its config. Stops on Ctrl-C or SIGTERM "
        "after finishing the requests in flight. Logs go to stderr, filtered by RUST_LOG.",
    )
    sub.add_argument("paths", nargs="+", metavar="PATH", help="package folders or zips")
    # The server's own defaults (neuropods_server's Default impls).
    served = neuropods_native.serve_defaults()
    sub.add_argument("--host", default=served["host"], help="address to listen on (default %(default)s)")
    sub.add_argument(
        "--http-port", type=PORT, default=served["http_port"], help="HTTP port, 0 for any free one (default %(default)s)"
    )
    sub.add_argument(
        "--grpc-port", type=PORT, default=served["grpc_port"], help="gRPC port, 0 for any free one (default %(default)s)"
    )
    sub.add_argument("--no-http", action="store_true", help="serve gRPC only")
    sub.add_argument("--no-grpc", action="store_true", help="serve HTTP only")
    sub.add_argument(
        "--instances", type=integer(1), default=served["instances"], help="copies of each model (default %(default)s)"
    )
    sub.add_argument(
        "--max-batch-size",
        type=integer(0),
        default=served["max_batch_size"],
        help="batch concurrent requests up to this many rows (default %(default)s: no batching); "
        "applies to models whose inputs and outputs all start with one batch symbol",
    )
    sub.add_argument(
        "--max-queue-delay-us", type=integer(0), default=served["max_queue_delay_us"],
        help="longest a request waits for a batch (default %(default)s)",
    )
    sub.add_argument(
        "--max-body-bytes", type=integer(1), default=served["max_body_bytes"],
        help="largest request taken, in bytes (default %(default)s)",
    )
    sub.add_argument(
        "--drain-timeout", type=seconds(zero_allowed=True), default=served["drain_timeout_s"],
        help="seconds a shutdown waits for requests (default %(default)s)",
    )
    sub.add_argument(
        "--header-timeout", type=seconds(zero_allowed=False), default=served["header_timeout_s"],
        help="seconds an HTTP/1 request head may take to arrive; also ends a keep-alive connection idle that long "
        "(default %(default)s)",
    )
    sub.add_argument(
        "--idle-timeout", type=seconds(zero_allowed=False), default=served["idle_timeout_s"],
        help="seconds a connection may go without a request in progress (default %(default)s)",
    )
    sub.add_argument(
        "--body-timeout", type=seconds(zero_allowed=False), default=served["body_timeout_s"],
        help=f"seconds a request body gets, plus one per {served['body_min_bytes_per_second']} bytes received "
        "(default %(default)s)",
    )
    sub.add_argument(
        "--max-idle-connections", type=integer(1),
        help="connections kept open with no request in progress; above it the one idle longest is closed "
        "(default: half the file descriptor limit, at most 10000)",
    )
    add_load_options(sub)
    sub.set_defaults(run=serve)

    sub = commands.add_parser(
        "batch",
        help="score a Parquet dataset with Ray Data, writing Parquet",
        description="Score a Parquet file or folder with Ray Data (pip install 'neuropods[ray]'): "
        "columns feed the inputs of their name, other columns pass through, outputs become columns; "
        "rows keep their input order. The output folder appears only when every batch succeeded. "
        "Starts a Ray of this machine's own unless --ray-address joins a cluster.",
    )
    sub.add_argument("path", help="package folder or zip")
    sub.add_argument("--input", required=True, help="a Parquet file, or a folder of them")
    sub.add_argument("--output", required=True, help="folder to write Parquet files to")
    sub.add_argument("--ray-address", help="a Ray cluster to join ('auto': the one this machine is in)")
    sub.add_argument("--concurrency", type=integer(1), default=1, help="model actors (default 1)")
    sub.add_argument("--batch-size", type=integer(1), default=4096, help="rows per call (default 4096)")
    sub.add_argument("--num-cpus-per-actor", type=float, default=1, help="CPUs each actor holds (default 1)")
    sub.add_argument("--num-gpus-per-actor", type=float, default=0, help="GPUs each actor holds (default 0)")
    sub.add_argument("--column-map", action="append", metavar="COLUMN=INPUT", help="feed an input from a column of another name")
    sub.add_argument("--keep-input-columns", action="store_true", help="write the input columns too")
    sub.add_argument("--overwrite", action="store_true", help="replace the output folder if it exists")
    add_load_options(sub)
    sub.set_defaults(run=batch)
    return top


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.run(args)
    except KeyboardInterrupt:
        print("neuropods: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args.verbose:
            traceback.print_exc()
            detail = getattr(e, "detail", None)
            if detail and sys.version_info < (3, 11):  # where notes are not printed
                print(detail, file=sys.stderr)
        # One line, all of the message: where a model failed is at its end
        # (batch's rows). A model's traceback is not in it (it is the
        # error's `detail`, which --verbose prints).
        message = " ".join(str(e).split())
        print(f"neuropods {args.command}: {type(e).__name__}: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
