"""Packaging ONNX models."""

import os
import shutil
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence, Union

import numpy as np

from neuropods._compat import Unpack
from ._common import CommonOptions, PackagerOptions, SpecEntry, new_package, normalize_spec

if TYPE_CHECKING:
    import onnx

MODEL_FILE = os.path.join("0", "data", "model.onnx")


def create_onnx_neuropod(
    neuropod_path: "os.PathLike[str] | str",
    model_name: str,
    onnx_model_path: "os.PathLike[str] | str | None" = None,
    onnx_model: Union["onnx.ModelProto", bytes, None] = None,
    input_spec: Optional[Sequence[SpecEntry]] = None,
    output_spec: Optional[Sequence[SpecEntry]] = None,
    **options: Unpack[PackagerOptions],
) -> None:
    """Packages an ONNX model from exactly one source: a ``.onnx`` file
    (``onnx_model_path``; external-data files it refers to are copied beside
    it) or a model in memory (``onnx_model``: an ``onnx.ModelProto`` or its
    serialized bytes).

    Specs left out are read from the graph: its inputs (initializers
    excluded) and outputs, with symbolic dims as symbols and unknown dims as
    None. Given specs are checked against the graph: every name must be the
    graph's, with its dtype, and every graph input needs a spec.
    ``options``: see `CommonOptions` (test data, zip, devices, custom ops).
    Needs the ``onnx`` package; running the package needs ``onnxruntime``.
    """
    common = CommonOptions.of("create_onnx_neuropod", options)
    if (onnx_model_path is None) == (onnx_model is None):
        raise ValueError("give exactly one of onnx_model_path and onnx_model")
    try:
        import onnx
    except ImportError as e:
        raise ImportError("create_onnx_neuropod needs the onnx package: pip install onnx") from e

    serialized: Optional[bytes] = None
    if onnx_model_path is not None:
        source = os.fspath(onnx_model_path)
        model = onnx.load(source, load_external_data=False)
        external = _external_files(model, os.path.dirname(os.path.abspath(source)))
    elif isinstance(onnx_model, onnx.ModelProto):
        model = onnx_model
        external = _external_files(model, None)
    elif isinstance(onnx_model, (bytes, bytearray, memoryview)):
        serialized = bytes(onnx_model)
        model = onnx.load_from_string(serialized)
        external = _external_files(model, None)
    else:
        raise TypeError(f"onnx_model must be an onnx.ModelProto or bytes, got {type(onnx_model).__name__}")

    graph_inputs, graph_outputs = graph_specs(model)
    inputs = _checked(input_spec, graph_inputs, "input_spec", "input")
    outputs = _checked(output_spec, graph_outputs, "output_spec", "output")
    unfed = sorted({spec["name"] for spec in graph_inputs} - {spec["name"] for spec in inputs})
    if unfed:
        raise ValueError(f"input_spec has no entry for the graph's input(s) {unfed}: every graph input needs one")

    with new_package(
        neuropod_path,
        name=model_name,
        platform="onnx",
        input_spec=inputs,
        output_spec=outputs,
        options=common,
    ) as folder:
        target = os.path.join(folder, MODEL_FILE)
        if serialized is not None:
            with open(target, "wb") as f:
                f.write(serialized)
        elif onnx_model_path is not None:
            shutil.copyfile(os.fspath(onnx_model_path), target)
            data_dir = os.path.dirname(target)
            for relative, path in external.items():
                destination = os.path.join(data_dir, relative)
                os.makedirs(os.path.dirname(destination), exist_ok=True)
                shutil.copyfile(path, destination)
        else:
            onnx.save_model(model, target)


def graph_specs(model: "onnx.ModelProto") -> "tuple[List[Dict[str, Any]], List[Dict[str, Any]]]":
    """The graph's inputs (initializers excluded: they have values) and
    outputs as spec entries."""
    graph = model.graph
    initialized = {tensor.name for tensor in graph.initializer}
    inputs = [_spec_of(value, "input") for value in graph.input if value.name not in initialized]
    outputs = [_spec_of(value, "output") for value in graph.output]
    return inputs, outputs


def _spec_of(value: Any, what: str) -> Dict[str, Any]:
    import onnx

    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        raise ValueError(f"the graph's {what} '{value.name}' is a {kind}, not a tensor: Neuropods passes tensors")
    tensor_type = value.type.tensor_type
    if tensor_type.elem_type == onnx.TensorProto.STRING:
        dtype = "string"
    else:
        try:
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)).name
        except (KeyError, TypeError) as e:
            raise ValueError(
                f"the graph's {what} '{value.name}' has ONNX element type "
                f"{onnx.TensorProto.DataType.Name(tensor_type.elem_type)}, which Neuropods does not support"
            ) from e
    if not tensor_type.HasField("shape"):
        raise ValueError(
            f"the graph's {what} '{value.name}' has no shape (unknown rank): give {what}_spec with its shape"
        )
    shape: List[Union[int, str, None]] = []
    for dim in tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            shape.append(int(dim.dim_value))
        elif dim.HasField("dim_param") and dim.dim_param:
            shape.append(str(dim.dim_param))
        else:
            shape.append(None)
    return {"name": value.name, "dtype": dtype, "shape": shape}


def _checked(
    given: Optional[Sequence[SpecEntry]], graph: List[Dict[str, Any]], argument: str, what: str
) -> List[Dict[str, Any]]:
    """The given specs, each checked against the graph's tensor of its name
    (it must exist, with the same dtype); the graph's own when none given."""
    if given is None:
        return graph
    specs = normalize_spec(given, argument)
    by_name = {spec["name"]: spec for spec in graph}
    for spec in specs:
        found = by_name.get(spec["name"])
        if found is None:
            raise ValueError(
                f"{argument}: '{spec['name']}' is not an {what} of the graph (its {what}s: {', '.join(by_name)})"
            )
        if found["dtype"] != spec["dtype"]:
            raise ValueError(
                f"{argument}: '{spec['name']}' is {spec['dtype']}, but the graph's {what} is {found['dtype']}"
            )
    return specs


def _all_tensors(graph: Any) -> Iterator[Any]:
    """Every tensor stored in a graph and its subgraphs (initializers and
    constant attributes), which may keep their data in external files."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _all_tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _all_tensors(subgraph)


def _external_files(model: "onnx.ModelProto", base: Optional[str]) -> Dict[str, str]:
    """The external-data files the model refers to: relative location ->
    path. Refuses locations outside the model's folder (ONNX Runtime does
    too) and, for a model in memory, any (there is no folder to copy them
    from: save the model with its data inside, or package the file)."""
    import onnx

    files: Dict[str, str] = {}
    for tensor in _all_tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((entry.value for entry in tensor.external_data if entry.key == "location"), "")
        normalized = os.path.normpath(location)
        if not location or os.path.isabs(location) or normalized.startswith(os.pardir):
            raise ValueError(
                f"tensor '{tensor.name}' keeps its data in '{location}', which is not a file beside the model"
            )
        if base is None:
            raise ValueError(
                f"tensor '{tensor.name}' keeps its data in external file '{location}', which a model "
                "in memory cannot bring along: pass onnx_model_path, or load the model with its data"
            )
        path = os.path.join(base, normalized)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"tensor '{tensor.name}' keeps its data in {path}, which does not exist")
        files[normalized] = path
    return files
