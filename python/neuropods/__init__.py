"""Neuropods: package a deep-learning model once, run it through one API.

``neuropods.loader.load_neuropod`` loads any package; the packagers in
``neuropods.packagers`` make them. Importing this package needs only numpy:
frameworks are loaded when a model of theirs is.
"""

from neuropods_native import __version__
from neuropods_native.errors import NeuropodError

__all__ = ["__version__", "NeuropodError"]
