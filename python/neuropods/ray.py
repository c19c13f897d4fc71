"""Batch inference on Ray Data: a package scores a dataset of any size, on
this machine or on a Ray cluster, through ``Dataset.map_batches``::

    import ray
    from neuropods.ray import NeuropodPredictor

    ds = ray.data.read_parquet("features/")
    scored = ds.map_batches(NeuropodPredictor, fn_constructor_kwargs={"neuropod_path": "ranker.zip"},
                            batch_format="numpy", batch_size=4096,
                            compute=ray.data.ActorPoolStrategy(size=4))
    scored.write_parquet("scores/")

``score_parquet`` does the same from Parquet to Parquet, naming the row of
a batch that fails, and is what ``neuropods batch`` runs.

Ray is an optional dependency (``pip install neuropods[ray]``): this module
imports it, ``import neuropods`` never does.
"""

import logging
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, NamedTuple, Optional

import numpy as np
import ray

import neuropods_native
from neuropods._compat import Unpack
from neuropods.loader import LoadOptions, load_neuropod
from neuropods_native.errors import NeuropodError

__all__ = ["NeuropodPredictor", "score_parquet", "BatchSummary", "ROW_INDEX_COLUMN"]

Batch = Dict[str, np.ndarray]

#: The column ``score_parquet`` adds for each row's position in the input
#: (files in path order, rows in file order); named in errors, not written.
ROW_INDEX_COLUMN = "__neuropods_row__"


def check_column_map(column_map: Mapping[str, str], inputs: List[str]) -> None:
    """Refuses a ``column_map`` naming inputs the model does not have."""
    unknown = sorted(set(column_map.values()) - set(inputs))
    if unknown:
        raise ValueError(
            f"column_map names {', '.join(map(repr, unknown))}, which the model has no input of "
            f"(its inputs: {', '.join(inputs)})"
        )


class NeuropodPredictor:
    """A callable class for ``Dataset.map_batches(..., batch_format="numpy")``.

    Each actor loads the package once (``load_options`` as for
    ``load_neuropod``: ``use_ope``, threads...). Columns feed the inputs of
    the same name, or of the name ``column_map`` gives them; the other
    columns pass through unchanged (ids survive), input columns too with
    ``keep_input_columns``; each output becomes a column. An actor Ray gave a
    GPU runs the model on it (``visible_gpu=0``: Ray makes that GPU the
    actor's first) unless ``visible_gpu`` is given.

    Numeric and fixed-shape tensor columns reach the model as Ray hands them
    over, except that a read-only batch (Ray's default, a view of its object
    store) is copied once on its way in, as ``infer`` copies any read-only
    array: a model may write to its inputs. Columns of variable-shaped
    arrays are stacked when their shapes agree within a batch.

    A batch the model refuses raises the model's error (naming the tensor)
    with the batch's size and, when the batch has ``row_index_column``, the
    index of its first row.
    """

    def __init__(
        self,
        neuropod_path: str,
        *,
        column_map: Optional[Mapping[str, str]] = None,
        keep_input_columns: bool = False,
        row_index_column: Optional[str] = ROW_INDEX_COLUMN,
        **load_options: Unpack[LoadOptions],
    ) -> None:
        if "visible_gpu" not in load_options and ray.is_initialized() and ray.get_gpu_ids():
            load_options["visible_gpu"] = 0
        #: The GPU the model was asked to run on (None: the CPU).
        self.visible_gpu = load_options.get("visible_gpu")
        self._model = load_neuropod(neuropod_path, **load_options)
        self._specs = {spec["name"]: spec for spec in self._model.inputs}
        self._column_map = dict(column_map or {})
        check_column_map(self._column_map, list(self._specs))
        self._keep_input_columns = keep_input_columns
        self._row_index_column = row_index_column

    def _input_name(self, column: str) -> Optional[str]:
        name = self._column_map.get(column, column)
        return name if name in self._specs else None

    def _where(self, batch: Batch) -> str:
        rows = len(next(iter(batch.values()))) if batch else 0
        index = batch.get(self._row_index_column) if self._row_index_column else None
        if index is not None and len(index):
            return f"in the batch of {rows} rows starting at row {int(index[0])}"
        return f"in a batch of {rows} rows"

    def __call__(self, batch: Batch) -> Batch:
        inputs: Batch = {}
        out: Batch = {}
        for column, values in batch.items():
            name = self._input_name(column)
            if name is None:
                out[column] = values
                continue
            inputs[name] = self._as_input(column, name, values, batch)
            if self._keep_input_columns:
                out[column] = values
        missing = [name for name in self._specs if name not in inputs]
        if missing:
            raise ValueError(
                f"input {', '.join(map(repr, missing))} has no column {self._where(batch)} "
                f"(columns: {', '.join(batch)}); column_map maps columns to inputs"
            )
        try:
            outputs = self._model.infer(inputs)
        except NeuropodError as e:
            located = type(e)(f"{e} ({self._where(batch)})")
            located.detail = e.detail
            raise located from None
        rows = len(next(iter(batch.values())))
        for name, array in outputs.items():
            if name in out:
                raise ValueError(f"output '{name}' would replace the column of that name; rename the column")
            if array.ndim == 0 or array.shape[0] != rows:
                raise ValueError(
                    f"output '{name}' has shape {array.shape}, not one row per input row "
                    f"({rows}) {self._where(batch)}: map_batches needs one output row per row"
                )
            # Strings leave as Python str objects, which Arrow takes (it
            # may not know numpy's variable-width string dtype).
            out[name] = array.astype(object) if array.dtype.kind == "T" else array
        return out

    def _as_input(self, column: str, name: str, values: np.ndarray, batch: Batch) -> np.ndarray:
        """A column as the input array: as it is, except that an object
        column of arrays (variable-shaped tensors, Arrow lists) is stacked."""
        if values.dtype != object or self._specs[name]["dtype"] == "string" or len(values) == 0:
            return values
        first = values[0]
        if not isinstance(first, (np.ndarray, list, tuple)):
            return values
        items = [np.asarray(v) for v in values]
        shapes = {item.shape for item in items}
        if len(shapes) > 1:
            a, b = sorted(shapes)[:2]
            raise ValueError(
                f"column '{column}' (input '{name}') holds arrays of shapes {a} and {b} "
                f"{self._where(batch)}: the rows of one batch must share a shape"
            )
        return np.stack(items)


@dataclass
class BatchSummary:
    """What ``score_parquet`` did."""

    rows: int
    seconds: float
    files_written: int
    output: str

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


class Piece(NamedTuple):
    """One row group of a Parquet file, and where its rows start in the
    whole input."""

    file: str
    row_group: int
    first_row: int
    rows: int


def parquet_pieces(path: str) -> List[Piece]:
    """The row groups of a Parquet file, or of every ``.parquet`` file under a
    folder (in path order), numbered across files."""
    import pyarrow.parquet as pq

    if os.path.isfile(path):
        files = [path]
    elif os.path.isdir(path):
        files = sorted(
            os.path.join(root, name)
            for root, _, names in os.walk(path)
            for name in names
            if name.endswith(".parquet") and not name.startswith((".", "_"))
        )
        if not files:
            raise FileNotFoundError(f"no .parquet files under {path}")
    else:
        raise FileNotFoundError(f"no such file or folder: {path}")
    pieces = []
    first = 0
    for file in files:
        metadata = pq.ParquetFile(file).metadata
        for group in range(metadata.num_row_groups):
            rows = metadata.row_group(group).num_rows
            pieces.append(Piece(file, group, first, rows))
            first += rows
    return pieces


def _read_pieces(items: Batch) -> Any:
    """Reads row groups (one batch of ``parquet_pieces``) as one Arrow table
    with the row index column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for file, group, first in zip(items["file"], items["row_group"], items["first_row"]):
        table = pq.ParquetFile(str(file)).read_row_group(int(group))
        index = pa.array(np.arange(int(first), int(first) + table.num_rows, dtype=np.int64))
        tables.append(table.append_column(ROW_INDEX_COLUMN, index))
    return pa.concat_tables(tables)


def score_parquet(
    neuropod_path: str,
    input_path: str,
    output_path: str,
    *,
    concurrency: int = 1,
    batch_size: int = 4096,
    num_cpus_per_actor: float = 1,
    num_gpus_per_actor: float = 0,
    column_map: Optional[Mapping[str, str]] = None,
    keep_input_columns: bool = False,
    overwrite: bool = False,
    ray_address: Optional[str] = None,
    **load_options: Unpack[LoadOptions],
) -> BatchSummary:
    """Scores a Parquet file or folder with a package, writing Parquet files
    to the folder ``output_path``, rows in input order. The files are
    written to a temporary folder beside it and moved into place once every
    batch succeeded: a failed job leaves no output that looks complete.

    Runs on the Ray this process is connected to; when it is connected to
    none, on the cluster at ``ray_address``, or (None) a new Ray of this
    machine's own, even when ``RAY_ADDRESS`` names a cluster. Refuses an
    output that is, contains or is inside the input or the package, before
    anything is written; the output folder's mode follows the umask.
    """
    if concurrency < 1 or batch_size < 1:
        raise ValueError("concurrency and batch_size must be at least 1")
    output_path = os.path.abspath(output_path)
    check_output_apart(output_path, {"input": input_path, "package": neuropod_path})
    if os.path.exists(output_path) and not overwrite:
        raise FileExistsError(f"{output_path} exists (overwrite=True / --overwrite replaces it)")
    pieces = parquet_pieces(input_path)
    # Checked here too, so that a wrong name fails before any actor starts.
    inputs = [spec["name"] for spec in neuropods_native.inspect(neuropod_path)["inputs"]]
    check_column_map(column_map or {}, inputs)
    if not ray.is_initialized():
        # Its workers' log lines are not forwarded: a failure comes back as
        # the exception raised here, not as lines of log.
        ray.init(address=ray_address or "local", logging_level=logging.ERROR, log_to_driver=False)
    parent = os.path.dirname(output_path)
    os.makedirs(parent, exist_ok=True)
    staging = make_staging_folder(output_path)
    started = time.perf_counter()
    context = ray.data.DataContext.get_current()
    saved = (context.execution_options.preserve_order, context.raise_original_map_exception)
    # Rows in input order; a failed batch raises the model's own error (in
    # a RayTaskError that is also an instance of it), not Ray's wrapper.
    context.execution_options.preserve_order = True
    context.raise_original_map_exception = True
    try:
        items = [piece._asdict() for piece in pieces]
        pieces_dataset = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
        rows_dataset = pieces_dataset.map_batches(_read_pieces, batch_size=1, batch_format="numpy")
        scored = rows_dataset.map_batches(
            NeuropodPredictor,
            fn_constructor_kwargs={
                "neuropod_path": os.path.abspath(neuropod_path),
                "column_map": column_map,
                "keep_input_columns": keep_input_columns,
                **load_options,
            },
            batch_format="numpy",
            batch_size=batch_size,
            compute=ray.data.ActorPoolStrategy(size=concurrency),
            num_cpus=num_cpus_per_actor,
            num_gpus=num_gpus_per_actor or None,
        ).drop_columns([ROW_INDEX_COLUMN])
        # Writing takes no CPU of Ray's count: actors may hold every CPU,
        # and rows must not wait for the last batch to be written.
        scored.write_parquet(staging, ray_remote_args={"num_cpus": 0})
        seconds = time.perf_counter() - started
        if os.path.isdir(output_path):
            shutil.rmtree(output_path)
        elif os.path.exists(output_path):
            os.remove(output_path)
        os.replace(staging, output_path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        context.execution_options.preserve_order, context.raise_original_map_exception = saved
    written = sum(1 for name in os.listdir(output_path) if name.endswith(".parquet"))
    rows = sum(piece.rows for piece in pieces)
    return BatchSummary(rows=rows, seconds=seconds, files_written=written, output=output_path)


def check_output_apart(output_path: str, sources: Mapping[str, str]) -> None:
    """Refuses an output folder that is, contains or is inside one of the
    job's ``sources`` (what it reads), before anything is written: replacing
    the output (``overwrite``) would delete what the job reads. Paths are
    compared resolved, so a symlink or ``..`` does not hide one."""
    output = os.path.realpath(output_path)
    for what, path in sources.items():
        source = os.path.realpath(path)
        if output == source:
            relation = "is"
        elif os.path.commonpath([output, source]) == source:
            relation = "is inside"
        elif os.path.commonpath([output, source]) == output:
            relation = "contains"
        else:
            continue
        raise ValueError(
            f"the output {output_path} {relation} the {what} {path}: writing it would replace what "
            f"the job reads; choose an output folder apart from the {what}"
        )


def make_staging_folder(output_path: str) -> str:
    """A new hidden folder beside ``output_path`` to write into, with the
    mode a new folder gets from the umask (``tempfile.mkdtemp`` makes every
    folder 0700, which the output would keep once moved into place)."""
    parent, base = os.path.split(output_path)
    while True:
        staging = os.path.join(parent, f".{base}.{secrets.token_hex(4)}")
        try:
            os.mkdir(staging)
            return staging
        except FileExistsError:
            continue


def model_error(error: BaseException) -> BaseException:
    """What a failed job's exception says, for one line: the exception a
    batch raised, from the ``RayTaskError`` Ray's driver raises for it (its
    ``cause``); for an actor whose constructor raised (a package that does
    not load on that node), the constructor's exception line, which Ray
    keeps only as text at the end of its message."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        return cause
    if isinstance(error, ray.exceptions.RayActorError) and error.actor_init_failed:
        lines = [line for line in str(error).splitlines() if line.strip()]
        return RuntimeError(f"a model actor failed to start: {lines[-1].strip()}")
    return error
