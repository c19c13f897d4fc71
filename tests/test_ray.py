"""Batch inference on Ray Data (``neuropods.ray`` and ``neuropods batch``),
on a local Ray started here with two CPUs and shut down after the module:
real actors, real Parquet files, results compared with ``infer`` called
directly."""

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

import models_for_tests as M  # noqa: E402
from helpers import python_package, spec  # noqa: E402
from neuropods.loader import load_neuropod  # noqa: E402
from neuropods.ray import NeuropodPredictor, parquet_pieces  # noqa: E402

ROWS = 100_000
MLP_INPUT = [spec("x", "float32", ("batch", 8))]
MLP_OUTPUT = [spec("out", "float32", ("batch", 4))]

pytestmark = [
    pytest.mark.slow,
    # Ray's own modules warn (deprecations, resource hints) while it runs.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]


@pytest.fixture(scope="module")
def local_ray():
    # One GPU declared (none is needed): Ray hands it to an actor that asks.
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.execution_options.preserve_order = True
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def mlp(make_package):
    return make_package("ray_mlp", M.DictWrapper(M.make_mlp()), MLP_INPUT, MLP_OUTPUT)


@pytest.fixture(scope="module")
def features():
    rng = np.random.default_rng(7)
    return rng.standard_normal((ROWS, 8)).astype(np.float32)


def scored(dataset, path, **kwargs):
    """The dataset scored by the package, as one dict of columns."""
    out = dataset.map_batches(
        NeuropodPredictor,
        fn_constructor_kwargs={"neuropod_path": path, **kwargs},
        batch_format="numpy",
        batch_size=4096,
        compute=ray.data.ActorPoolStrategy(size=2),
    )
    batches = list(out.iter_batches(batch_size=None, batch_format="numpy"))
    return {column: np.concatenate([b[column] for b in batches]) for column in batches[0]}


def test_a_torchscript_mlp_scores_100k_rows_as_infer_does(local_ray, mlp, features):
    ids = np.arange(ROWS, dtype=np.int64) * 3
    dataset = ray.data.from_arrow(
        pa.table({"x": pa.FixedShapeTensorArray.from_numpy_ndarray(features), "id": ids})
    )
    result = scored(dataset, mlp)
    assert set(result) == {"id", "out"}  # the input column is not written back
    np.testing.assert_array_equal(result["id"], ids)
    with load_neuropod(mlp) as model:
        expected = model.infer({"x": features})["out"]
    np.testing.assert_allclose(result["out"], expected, rtol=1e-6, atol=1e-6)


PYTHON_MODEL = """
import numpy as np

class Tagger:
    def __call__(self, text, weight):
        lengths = np.array([len(t) for t in text.tolist()], dtype=np.int64)
        tagged = np.array([t.upper() + "!" for t in text.tolist()], dtype=object)
        return {"length": lengths, "tagged": tagged, "scaled": weight * 2.0}

def get_model(data_root):
    return Tagger()
"""


def test_a_python_model_with_string_columns_and_a_renamed_column(local_ray, tmp_path):
    path = python_package(
        tmp_path, "tagger", PYTHON_MODEL,
        input_spec=[spec("text", "string", ("n",)), spec("weight", "float64", ("n",))],
        output_spec=[spec("length", "int64", ("n",)), spec("tagged", "string", ("n",)),
                     spec("scaled", "float64", ("n",))],
    )
    words = np.array([f"w{i % 97}é" * (1 + i % 3) for i in range(ROWS)], dtype=object)
    weights = np.linspace(0, 1, ROWS)
    table = pa.table({"words": words, "weight": weights, "key": [f"k{i}" for i in range(ROWS)]})
    result = scored(ray.data.from_arrow(table), path, column_map={"words": "text"}, keep_input_columns=True)
    assert set(result) == {"words", "weight", "key", "length", "tagged", "scaled"}
    assert result["key"].tolist() == table["key"].to_pylist()
    with load_neuropod(path) as model:
        expected = model.infer({"text": words, "weight": weights})
    np.testing.assert_array_equal(result["length"], expected["length"])
    assert result["tagged"].tolist() == expected["tagged"].tolist()
    np.testing.assert_array_equal(result["scaled"], expected["scaled"])
    np.testing.assert_array_equal(result["words"].tolist(), words.tolist())


def test_list_columns_are_stacked_and_ragged_ones_refused(local_ray, mlp, features):
    # Arrow lists (features stored as list<float>) reach the actor as
    # object arrays of arrays; rows of one length become one 2-D input.
    lists = pa.array(list(features[:3000]), type=pa.list_(pa.float32()))
    result = scored(ray.data.from_arrow(pa.table({"x": lists})), mlp)
    with load_neuropod(mlp) as model:
        expected = model.infer({"x": features[:3000]})["out"]
    np.testing.assert_allclose(result["out"], expected, rtol=1e-6, atol=1e-6)
    ragged = pa.array([features[0], features[1, :5]], type=pa.list_(pa.float32()))
    with pytest.raises(Exception) as info:
        scored(ray.data.from_arrow(pa.table({"x": ragged})), mlp)
    message = str(info.value)
    assert "column 'x' (input 'x') holds arrays of shapes (5,) and (8,) in a batch of 2 rows" in message, message


def test_a_bad_batch_fails_naming_the_tensor_and_its_first_row(local_ray, mlp, features):
    # Rows 0-4095 are float32, rows 4096-4195 float64: the second batch is
    # refused. Ray's driver raises its own UserCodeException, whose text
    # carries the model's error.
    def block(x, first):
        rows = np.arange(first, first + len(x))
        return pa.table({"x": pa.FixedShapeTensorArray.from_numpy_ndarray(x), "__neuropods_row__": rows})

    dataset = ray.data.from_arrow([block(features[:4096], 0), block(features[:100].astype(np.float64), 4096)])
    with pytest.raises(Exception) as info:
        scored(dataset, mlp)
    message = str(info.value)
    assert "DTypeError: input 'x'" in message and "float64" in message, message
    assert "(in the batch of 100 rows starting at row 4096)" in message, message


def test_a_missing_input_column_is_named(local_ray, mlp, features):
    dataset = ray.data.from_arrow(pa.table({"features": pa.FixedShapeTensorArray.from_numpy_ndarray(features[:10])}))
    with pytest.raises(Exception) as info:
        scored(dataset, mlp)
    message = str(info.value)
    assert "input 'x' has no column in a batch of 10 rows (columns: features)" in message, message


def test_an_actor_given_a_gpu_runs_the_model_on_it(local_ray, mlp):
    def chosen(**kwargs):
        return NeuropodPredictor(mlp, **kwargs).visible_gpu

    with_gpu = ray.remote(num_gpus=1)(chosen)
    without = ray.remote(num_gpus=0)(chosen)
    # Ray makes the actor's GPU its first; without CUDA the model falls back
    # to the CPU with a logged warning, as any load with visible_gpu does.
    assert ray.get(with_gpu.remote()) == 0
    assert ray.get(without.remote()) is None
    assert ray.get(with_gpu.remote(visible_gpu=None)) is None


def write_parquet_folder(folder, features, ids, files=3):
    folder.mkdir()
    bounds = np.linspace(0, len(ids), files + 1).astype(int)
    for i, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:])):
        table = pa.table({"x": pa.FixedShapeTensorArray.from_numpy_ndarray(features[start:stop]), "id": ids[start:stop]})
        pq.write_table(table, folder / f"part-{i}.parquet", row_group_size=5000)


def neuropods(*args, timeout=300, umask=None):
    return subprocess.run(
        [sys.executable, "-m", "neuropods", *map(str, args)], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "RAY_DEDUP_LOGS": "0"},
        preexec_fn=None if umask is None else (lambda: os.umask(umask)),
    )


def test_the_batch_command_scores_a_parquet_folder_end_to_end(mlp, features, tmp_path):
    ids = np.arange(20_000, dtype=np.int64) + 10
    write_parquet_folder(tmp_path / "in", features[:20_000], ids)
    result = neuropods("batch", mlp, "--input", tmp_path / "in", "--output", tmp_path / "out",
                       "--concurrency", 2, "--batch-size", 1000, umask=0o027)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "scored 20000 rows" in result.stdout, result.stdout
    # The output folder's mode follows the umask, as a new folder's does.
    assert stat.S_IMODE(os.stat(tmp_path / "out").st_mode) == 0o750
    table = pq.read_table(tmp_path / "out")
    assert table.column_names == ["id", "out"]
    np.testing.assert_array_equal(table["id"].to_numpy(), ids)  # input order kept
    with load_neuropod(mlp) as model:
        expected = model.infer({"x": features[:20_000]})["out"]
    np.testing.assert_allclose(np.stack(table["out"].to_numpy(zero_copy_only=False)), expected, rtol=1e-6, atol=1e-6)
    # An existing output folder is not replaced without --overwrite.
    again = neuropods("batch", mlp, "--input", tmp_path / "in", "--output", tmp_path / "out")
    assert again.returncode == 1 and "exists" in again.stderr


def test_the_batch_command_fails_a_bad_batch_and_writes_nothing(mlp, features, tmp_path):
    folder = tmp_path / "in"
    write_parquet_folder(folder, features[:12_000], np.arange(12_000), files=2)
    # A third file whose rows have 3 features instead of 8: rows 12000 on.
    pq.write_table(pa.table({"x": pa.FixedShapeTensorArray.from_numpy_ndarray(features[:500, :3]),
                             "id": np.arange(500)}), folder / "part-9.parquet")
    result = neuropods("batch", mlp, "--input", folder, "--output", tmp_path / "out", "--batch-size", 1000)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("neuropods batch: ShapeError:"), result.stderr[-3000:]
    assert "input 'x'" in last and "starting at row 12000" in last, last
    assert not (tmp_path / "out").exists()
    assert [p for p in os.listdir(tmp_path) if p.startswith(".out")] == []


def test_the_batch_command_names_what_stops_it_before_any_row(mlp, features, tmp_path):
    write_parquet_folder(tmp_path / "in", features[:100], np.arange(100), files=1)
    # A column_map naming no input: refused before Ray starts.
    result = neuropods("batch", mlp, "--input", tmp_path / "in", "--output", tmp_path / "out",
                       "--column-map", "x=features")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "neuropods batch: ValueError: column_map names 'features', which the model has no input of (its inputs: x)"
    ), result.stderr[-2000:]
    # A model that cannot be made in the actor: the job stops with its error.
    broken = python_package(tmp_path, "broken", """
def get_model(data_root):
    raise RuntimeError("no weights in " + data_root.split("/")[-1])
""", input_spec=MLP_INPUT, output_spec=MLP_OUTPUT)
    result = neuropods("batch", broken, "--input", tmp_path / "in", "--output", tmp_path / "out")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("neuropods batch: RuntimeError: a model actor failed to start:"), result.stderr[-3000:]
    assert last.endswith("no weights in data"), last
    assert sorted(os.listdir(tmp_path)) == ["broken", "broken_src", "in"]


def tree(folder):
    """Every file under ``folder`` with its bytes."""
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_batch_command_refuses_an_output_that_would_replace_what_it_reads(mlp, features, tmp_path):
    data = tmp_path / "data"
    write_parquet_folder(data, features[:100], np.arange(100), files=1)
    (data / "notes.txt").write_text("beside the input")
    single = data / "part-0.parquet"
    package = Path(mlp)
    before = {**tree(data), **tree(package)}
    cases = [
        (single, single, "is the input"),
        (single, data, "contains the input"),  # the input's own folder
        (data, data / "scores", "is inside the input"),
        (single, tmp_path / "mlp_link" / "x", "is inside the package"),  # through a symlink
    ]
    (tmp_path / "mlp_link").symlink_to(mlp)
    for input_path, output, relation in cases:
        result = neuropods("batch", mlp, "--input", input_path, "--output", output, "--overwrite")
        assert result.returncode == 1, (output, result.stderr[-2000:])
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith(f"neuropods batch: ValueError: the output {output} {relation} "), last
        assert {**tree(data), **tree(package)} == before  # nothing deleted, nothing written
        assert not (data / "scores").exists()


def test_parquet_pieces_number_rows_across_files_in_path_order(features, tmp_path):
    write_parquet_folder(tmp_path / "in", features[:12_000], np.arange(12_000), files=2)
    pieces = parquet_pieces(str(tmp_path / "in"))
    assert [(os.path.basename(p.file), p.row_group, p.first_row, p.rows) for p in pieces] == [
        ("part-0.parquet", 0, 0, 5000), ("part-0.parquet", 1, 5000, 1000),
        ("part-1.parquet", 0, 6000, 5000), ("part-1.parquet", 1, 11000, 1000),
    ]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .parquet files"):
        parquet_pieces(str(tmp_path / "empty"))
