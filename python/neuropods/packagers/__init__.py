"""Packagers: turn a framework's model into a Neuropods package.

Each packager imports its framework only when called.
"""

from ._common import CommonOptions, PackagerOptions
from .onnx import create_onnx_neuropod
from .python import create_python_neuropod, create_pytorch_neuropod
from .tensorflow import create_keras_neuropod, create_tensorflow_neuropod
from .torchscript import create_torchscript_neuropod

__all__ = [
    "CommonOptions",
    "PackagerOptions",
    "create_keras_neuropod",
    "create_onnx_neuropod",
    "create_python_neuropod",
    "create_pytorch_neuropod",
    "create_tensorflow_neuropod",
    "create_torchscript_neuropod",
]
