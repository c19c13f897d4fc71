"""Packages as the original Neuropod's releases wrote them load and run.

`tests/data/original-packages/` holds config files byte for byte in the
shapes each release of the original's packagers wrote (see its README);
the model files (a frozen graph, a SavedModel, python code) are made here
by the frameworks, with the node names those configs map to.
"""

import hashlib
import json
import os
import shutil
import zipfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

import neuropods_native
from neuropods.loader import load_neuropod

FIXTURES = Path(__file__).parent / "data" / "original-packages"

X = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
Y = np.array([[0.5, 0.25], [-1.0, 10.0]], np.float32)

# A python model of our own, at the entrypoint the fixtures' 0/config.json
# names (addition_model.get_model).
ADDITION_CODE = """\
def get_model(data_root):
    def add(x, y):
        return {"out": x + y}
    return add
"""


def from_fixture(name, tmp_path):
    """A copy of fixture `name`, with the empty folders the original's
    packagers made (0/ops, 0/data)."""
    root = Path(shutil.copytree(FIXTURES / name, tmp_path / name))
    (root / "0" / "ops").mkdir(parents=True, exist_ok=True)
    (root / "0" / "data").mkdir(exist_ok=True)
    return root


def frozen_addition_graph():
    """out = x + y as a frozen graph, in the node names of the original's
    own test package (some_namespace/in_x...), with an init op that needs no
    input (init_all_tables, as fixture 04 names)."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        with tf.compat.v1.name_scope("some_namespace"):
            x = tf.compat.v1.placeholder(tf.float32, [None, None], name="in_x")
            y = tf.compat.v1.placeholder(tf.float32, [None, None], name="in_y")
            tf.add(x, y, name="out")
        tf.no_op(name="init_all_tables")
    return graph.as_graph_def().SerializeToString()


@pytest.mark.parametrize(
    "fixture",
    [
        # The original's own C++ test package: "init_op_names": {}.
        "01-orig-testdata-tf_addition_model",
        # v0.1.x from Python 2 (trailing spaces, hash key order, no semver).
        "02-v0.1-py2-tf_frozen_graph",
        # v0.2.0 to v0.3.0-rc7 from Python 2.
        "05-v0.2-to-v0.3rc7-py2-tf_frozen_graph",
    ],
)
def test_a_tensorflow_frozen_graph_package_of_the_original_runs(fixture, tmp_path):
    root = from_fixture(fixture, tmp_path)
    (root / "0" / "data" / "model.pb").write_bytes(frozen_addition_graph())
    with load_neuropod(root) as model:
        np.testing.assert_array_equal(model.infer({"x": X, "y": Y})["out"], X + Y)


def test_the_original_read_init_op_names_as_its_json_library_did(tmp_path):
    # {} and null are empty lists to jsoncpp; a single name is what the
    # original's packager wrapped in a list. A non-empty object is refused.
    root = from_fixture("01-orig-testdata-tf_addition_model", tmp_path)
    (root / "0" / "data" / "model.pb").write_bytes(frozen_addition_graph())
    backend_config = root / "0" / "config.json"
    written = json.loads(backend_config.read_text())
    for init_op_names in [{}, None, [], "init_all_tables"]:
        backend_config.write_text(json.dumps({**written, "init_op_names": init_op_names}))
        with load_neuropod(root) as model:
            np.testing.assert_array_equal(model.infer({"x": X, "y": Y})["out"], X + Y)
    backend_config.write_text(json.dumps({**written, "init_op_names": {"a": "init_all_tables"}}))
    with pytest.raises(neuropods_native.ConfigError, match=r"0/config.json: init_op_names: expected a list or a string, got an object"):
        load_neuropod(root)


def test_a_tensorflow_saved_model_package_of_the_original_runs(tmp_path):
    # v0.3.0-rc2 on: "node_name_mapping": null, names from the signature.
    import tensorflow as tf

    class Addition(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name="x"),
                                      tf.TensorSpec([None, None], tf.float32, name="y")])
        def __call__(self, x, y):
            return {"out": x + y}

    root = from_fixture("07-v0.3rc2-to-rc7-py3-tf_savedmodel", tmp_path)
    module = Addition()
    tf.saved_model.save(module, str(root / "0" / "data" / "savedmodel"), signatures=module.__call__)
    with load_neuropod(root) as model:
        np.testing.assert_array_equal(model.infer({"x": X, "y": Y})["out"], X + Y)


def original_zip(root, path):
    """`root` zipped as the original's packager did: file entries only (no
    folders), names relative to the package root, in sorted order."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(p for p in root.rglob("*") if p.is_file()):
            archive.write(file, file.relative_to(root).as_posix())
    return path


@pytest.mark.parametrize("as_zip", [False, True], ids=["folder", "zip"])
@pytest.mark.parametrize(
    "fixture",
    [
        "08-v0.2-to-v0.3rc7-py3-python",
        # Only the original's last, untagged master wrote a manifest.json
        # (sorted keys, and never read it back).
        "09-master-unreleased-python-with-manifest",
    ],
)
def test_a_python_package_of_the_original_runs(fixture, as_zip, tmp_path):
    root = from_fixture(fixture, tmp_path)
    code = root / "0" / "code"
    code.mkdir()
    (code / "__init__.py").write_text("")
    (code / "addition_model.py").write_text(ADDITION_CODE)
    with_manifest = fixture.startswith("09-")
    if with_manifest:
        files = {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                 for p in root.rglob("*") if p.is_file()}
        (root / "manifest.json").write_text(json.dumps({"files": files, "manifest_version": 1}, indent=4, sort_keys=True))
    path = original_zip(root, tmp_path / "package.zip") if as_zip else root
    # 09's specs are ("batch_size",), 08's (None, None).
    x, y = (X.ravel(), Y.ravel()) if with_manifest else (X, Y)
    with load_neuropod(path, verify_manifest=with_manifest) as model:
        np.testing.assert_array_equal(model.infer({"x": x, "y": y})["out"], x + y)
