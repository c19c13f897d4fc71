"""Packaging TensorFlow graphs, SavedModels and Keras models."""

import os
import shutil
from typing import Any, Mapping, Optional, Sequence

from ._common import SpecEntry, new_package, self_test, write_backend_config


def create_tensorflow_neuropod(
    neuropod_path: "os.PathLike[str] | str",
    model_name: str,
    input_spec: Sequence[SpecEntry],
    output_spec: Sequence[SpecEntry],
    node_name_mapping: Optional[Mapping[str, str]] = None,
    frozen_graph_path: Optional[str] = None,
    graph_def: Any = None,
    saved_model_dir: Optional[str] = None,
    trackable_obj: Any = None,
    init_op_names: Sequence[str] = (),
    signature_name: str = "serving_default",
    test_input_data: Optional[Mapping[str, Any]] = None,
    test_expected_out: Optional[Mapping[str, Any]] = None,
    package_as_zip: bool = False,
    input_tensor_device: Optional[Mapping[str, str]] = None,
    default_input_tensor_device: str = "GPU",
    custom_ops: Sequence[str] = (),
    platform_version_semver: str = "*",
) -> None:
    """Packages a TensorFlow model from exactly one source: a frozen graph
    file (``frozen_graph_path``), a ``GraphDef`` (``graph_def``), a SavedModel
    folder (``saved_model_dir``) or an object to save as one
    (``trackable_obj``, saved with ``tf.saved_model.save``).

    Graphs need ``node_name_mapping`` (spec name -> ``"op:index"``); for
    SavedModels the spec names are the signature's keys and a mapping is
    refused. With ``test_input_data`` the package is loaded and run once and
    checked against ``test_expected_out``.
    """
    sources = {
        "frozen_graph_path": frozen_graph_path,
        "graph_def": graph_def,
        "saved_model_dir": saved_model_dir,
        "trackable_obj": trackable_obj,
    }
    given = [name for name, value in sources.items() if value is not None]
    if len(given) != 1:
        raise ValueError(f"give exactly one model source of {sorted(sources)}; got {given or 'none'}")
    is_graph = given[0] in ("frozen_graph_path", "graph_def")
    if is_graph and not node_name_mapping:
        raise ValueError(f"{given[0]} needs node_name_mapping (spec name -> 'op:index')")
    if not is_graph and node_name_mapping:
        raise ValueError(
            "node_name_mapping is for graphs only: a SavedModel's spec names are its signature's keys"
        )
    if is_graph:
        names = {entry["name"] for entry in [*input_spec, *output_spec]}
        missing = sorted(names - set(node_name_mapping))
        if missing:
            raise ValueError(f"node_name_mapping has no entry for {missing}")

    with new_package(
        neuropod_path,
        name=model_name,
        platform="tensorflow",
        input_spec=input_spec,
        output_spec=output_spec,
        package_as_zip=package_as_zip,
        input_tensor_device=input_tensor_device,
        default_input_tensor_device=default_input_tensor_device,
        custom_ops=custom_ops,
        platform_version_semver=platform_version_semver,
    ) as folder:
        data = os.path.join(folder, "0", "data")
        if frozen_graph_path is not None:
            shutil.copy(os.fspath(frozen_graph_path), os.path.join(data, "model.pb"))
        elif graph_def is not None:
            with open(os.path.join(data, "model.pb"), "wb") as f:
                f.write(graph_def.SerializeToString())
        elif saved_model_dir is not None:
            shutil.copytree(os.fspath(saved_model_dir), os.path.join(data, "savedmodel"))
        else:
            import tensorflow as tf

            tf.saved_model.save(trackable_obj, os.path.join(data, "savedmodel"))
        if is_graph:
            write_backend_config(
                folder,
                {"node_name_mapping": dict(node_name_mapping), "init_op_names": list(init_op_names)},
            )
        else:
            write_backend_config(folder, {"signature_name": signature_name})
    self_test(neuropod_path, test_input_data, test_expected_out)


def _positional_index(key: str) -> Optional[int]:
    """N for Keras's positional output keys ``output_N``, else None."""
    prefix, _, suffix = key.rpartition("_")
    return int(suffix) if prefix == "output" and suffix.isdigit() else None


def _spec_from_tensor_spec(name: str, spec: Any) -> dict:
    dims = list(spec.shape.as_list()) if spec.shape.rank is not None else []
    shape = ["batch_size" if i == 0 and d is None else d for i, d in enumerate(dims)]
    dtype = "string" if spec.dtype.name == "string" else spec.dtype.name
    return {"name": name, "dtype": dtype, "shape": tuple(shape)}


def create_keras_neuropod(
    neuropod_path: "os.PathLike[str] | str",
    model_name: str,
    model: Any,
    input_spec: Optional[Sequence[SpecEntry]] = None,
    output_spec: Optional[Sequence[SpecEntry]] = None,
    test_input_data: Optional[Mapping[str, Any]] = None,
    test_expected_out: Optional[Mapping[str, Any]] = None,
    package_as_zip: bool = False,
    input_tensor_device: Optional[Mapping[str, str]] = None,
    default_input_tensor_device: str = "GPU",
    custom_ops: Sequence[str] = (),
    platform_version_semver: str = "*",
) -> None:
    """Packages a Keras 3 model (TensorFlow backend) as a SavedModel.

    Specs not given are read from the exported serving signature: inputs are
    named after the model's ``Input`` layers; outputs of a model returning a
    dict keep its keys (as ``model.predict`` does); a list or single output
    is named after its output layers (``model.output_names``) where Keras
    has them, else the signature's ``output_0``, ``output_1``...; a first
    dim of any size becomes the ``batch_size`` symbol.
    """
    import tempfile

    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix=".keras-export-") as work:
        exported = os.path.join(work, "savedmodel")
        model.export(exported, format="tf_saved_model", verbose=False)
        signature = tf.saved_model.load(exported).signatures["serving_default"]
        input_keys = dict(signature.structured_input_signature[1])
        output_keys = dict(signature.structured_outputs)
        # Keras exports a list or single output as output_0, output_1... in
        # model order, and a dict output under its own keys.
        positions = {key: _positional_index(key) for key in output_keys}
        ordered = sorted(output_keys, key=lambda k: (positions[k] or 0, k))
        layer_names = list(getattr(model, "output_names", None) or [])
        positional = all(p is not None for p in positions.values())
        names = layer_names if positional and len(layer_names) == len(ordered) else ordered
        renamed = {name: key for name, key in zip(names, ordered) if name != key}
        if input_spec is None:
            input_spec = [_spec_from_tensor_spec(k, v) for k, v in sorted(input_keys.items())]
        if output_spec is None:
            output_spec = [_spec_from_tensor_spec(n, output_keys[k]) for n, k in zip(names, ordered)]

        with new_package(
            neuropod_path,
            name=model_name,
            platform="tensorflow",
            input_spec=input_spec,
            output_spec=output_spec,
            package_as_zip=package_as_zip,
            input_tensor_device=input_tensor_device,
            default_input_tensor_device=default_input_tensor_device,
            custom_ops=custom_ops,
            platform_version_semver=platform_version_semver,
        ) as folder:
            shutil.copytree(exported, os.path.join(folder, "0", "data", "savedmodel"))
            backend = {"signature_name": "serving_default"}
            if renamed:
                backend["signature_keys"] = renamed
            write_backend_config(folder, backend)
    self_test(neuropod_path, test_input_data, test_expected_out)
