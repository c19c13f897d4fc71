"""Packaging TensorFlow graphs, SavedModels and Keras models."""

import os
import shutil
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from neuropods._compat import Unpack
from ._common import CommonOptions, PackagerOptions, SpecEntry, new_package, write_backend_config


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
    init_op_names: Union[str, Sequence[str], None] = (),
    signature_name: str = "serving_default",
    **options: Unpack[PackagerOptions],
) -> None:
    """Packages a TensorFlow model from exactly one source: a frozen graph
    file (``frozen_graph_path``), a ``GraphDef`` (``graph_def``), a SavedModel
    folder (``saved_model_dir``) or an object to save as one
    (``trackable_obj``, saved with ``tf.saved_model.save``).

    Graphs need ``node_name_mapping`` (spec name -> ``"op:index"``); for
    SavedModels the spec names are the signature's keys and a mapping is
    refused. ``options``: see `CommonOptions` (test data, zip, devices,
    custom ops).
    """
    common = CommonOptions.of("create_tensorflow_neuropod", options)
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
    mapping = dict(node_name_mapping or {})
    if is_graph:
        names = {entry["name"] for entry in [*input_spec, *output_spec]}
        missing = sorted(names - set(mapping))
        if missing:
            raise ValueError(f"node_name_mapping has no entry for {missing}")

    with new_package(
        neuropod_path,
        name=model_name,
        platform="tensorflow",
        input_spec=input_spec,
        output_spec=output_spec,
        options=common,
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
                # One name as a string, or None, as the original's packager took them.
                {"node_name_mapping": mapping, "init_op_names": _names(init_op_names)},
            )
        else:
            write_backend_config(folder, {"signature_name": signature_name})


def _names(names: Union[str, Sequence[str], None]) -> List[str]:
    """A list of names from a list, one name, or None."""
    if names is None:
        return []
    return [names] if isinstance(names, str) else list(names)


def _positional_index(key: str) -> Optional[int]:
    """N for Keras's positional output keys ``output_N``, else None."""
    prefix, _, suffix = key.rpartition("_")
    return int(suffix) if prefix == "output" and suffix.isdigit() else None


def _keras_signature_keys(
    mapping: Mapping[str, str],
    input_spec: Sequence[SpecEntry],
    output_spec: Sequence[SpecEntry],
    model_inputs: List[str],
    model_outputs: Mapping[str, str],
) -> Dict[str, str]:
    """Spec name -> signature key, for every spec name that is not its own
    key; raises ValueError naming a spec (or mapping) name the model does
    not have, and the names it has."""
    spec_names = [entry["name"] for entry in [*input_spec, *output_spec]]
    stray = sorted(set(mapping) - set(spec_names))
    if stray:
        raise ValueError(f"node_name_mapping names {stray}, which are in neither input_spec nor output_spec")
    keys: Dict[str, str] = {}
    for what, spec, known in (
        ("input", input_spec, {name: name for name in model_inputs}),
        ("output", output_spec, dict(model_outputs)),
    ):
        for entry in spec:
            name = entry["name"]
            model_name = mapping.get(name, name)
            if model_name not in known:
                via = f" (mapped to '{model_name}' by node_name_mapping)" if name in mapping else ""
                raise ValueError(
                    f"{what}_spec '{name}'{via} is not an {what} of the Keras model; "
                    f"its {what}s: {', '.join(sorted(known))}"
                    + ("" if name in mapping else "; map spec names to them with node_name_mapping")
                )
            if known[model_name] != name:
                keys[name] = known[model_name]
    return keys


def _spec_from_tensor_spec(name: str, spec: Any) -> Dict[str, Any]:
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
    node_name_mapping: Optional[Mapping[str, str]] = None,
    sess: Any = None,
    **options: Unpack[PackagerOptions],
) -> None:
    """Packages a Keras 3 model (TensorFlow backend) as a SavedModel.

    The model's names: inputs are named after its ``Input`` layers; outputs
    of a model returning a dict keep its keys (as ``model.predict`` does); a
    list or single output is named after its output layers
    (``model.output_names``) where Keras has them, else the signature's
    ``output_0``, ``output_1``...

    Spec names are the model's names, or map to them through
    ``node_name_mapping`` (spec name -> the model's name), as in the
    original Neuropod. Given specs are checked against the model's names
    now, before anything is written. Specs not given are read from the
    exported serving signature (named through ``node_name_mapping`` where
    it maps to a model's name); a first dim of any size becomes the
    ``batch_size`` symbol. ``options``: see `CommonOptions`.

    ``sess``, the original's TF1 session holding the weights, is accepted
    so that its keyword calls keep working, and ignored with a warning:
    a Keras 3 model holds its own weights.
    """
    import tempfile
    import warnings

    if sess is not None:
        warnings.warn(
            "create_keras_neuropod: sess is ignored (a Keras 3 model holds its own weights)",
            DeprecationWarning,
            stacklevel=2,
        )

    common = CommonOptions.of("create_keras_neuropod", options)

    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix=".keras-export-") as work:
        exported = os.path.join(work, "savedmodel")
        model.export(exported, format="tf_saved_model", verbose=False)
        signature = tf.saved_model.load(exported).signatures["serving_default"]
        input_keys: Dict[str, Any] = dict(signature.structured_input_signature[1])
        output_keys = dict(signature.structured_outputs)
        # Keras exports a list or single output as output_0, output_1... in
        # model order, and a dict output under its own keys.
        positions = {key: _positional_index(key) for key in output_keys}
        ordered = sorted(output_keys, key=lambda k: (positions[k] or 0, k))
        layer_names = list(getattr(model, "output_names", None) or [])
        positional = all(p is not None for p in positions.values())
        names: List[str] = layer_names if positional and len(layer_names) == len(ordered) else ordered
        # The model's output names -> the signature's keys.
        output_keys_by_name = dict(zip(names, ordered))
        mapping = dict(node_name_mapping or {})
        spec_name_of = {model_name_: spec_name for spec_name, model_name_ in mapping.items()}
        if input_spec is None:
            input_spec = [
                _spec_from_tensor_spec(spec_name_of.get(k, k), v) for k, v in sorted(input_keys.items())
            ]
        if output_spec is None:
            output_spec = [
                _spec_from_tensor_spec(spec_name_of.get(n, n), output_keys[k]) for n, k in zip(names, ordered)
            ]
        signature_keys = _keras_signature_keys(
            mapping, input_spec, output_spec, sorted(input_keys), output_keys_by_name
        )

        with new_package(
            neuropod_path,
            name=model_name,
            platform="tensorflow",
            input_spec=input_spec,
            output_spec=output_spec,
            options=common,
        ) as folder:
            shutil.copytree(exported, os.path.join(folder, "0", "data", "savedmodel"))
            backend: Dict[str, Any] = {"signature_name": "serving_default"}
            if signature_keys:
                backend["signature_keys"] = signature_keys
            write_backend_config(folder, backend)
