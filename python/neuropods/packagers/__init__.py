"""Packagers: turn a framework's model into a Neuropods package.

Each packager imports its framework only when called.
"""

from .torchscript import create_torchscript_neuropod

__all__ = ["create_torchscript_neuropod"]
