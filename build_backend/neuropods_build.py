"""The PEP 517 build backend of Neuropods (`pip install .`): maturin's, with
the backend libraries built first.

maturin builds the extension module and packs ``python/``; the libraries the
wheel carries beside the extension (the TorchScript backend once per
supported torch release, the TensorFlow, ONNX and Python backends, the
worker) come from ``scripts/lib/build-backends.sh --every-torch``, run here
for the interpreter being built for. So building needs what that script
needs: cargo, a C++ compiler and PyPI (it fetches the torch and
tensorflow-cpu wheels once for their headers and link libraries, into
``~/.cache/neuropods``, where cargo's build folders are kept too).
"""

import os
import subprocess
import sys
from typing import Any, Mapping, Optional

import maturin
from maturin import (  # noqa: F401  (the hooks maturin implements as they are)
    build_sdist,
    get_requires_for_build_editable,
    get_requires_for_build_sdist,
    get_requires_for_build_wheel,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _build_backends() -> None:
    # The extension's cargo build folder: outside the source tree, one per
    # Python version for `pip install .` (apart from the dev builds' folders
    # of scripts/env.sh, which are configured for other interpreters),
    # unless the caller chose.
    version = "%d.%d" % sys.version_info[:2]
    home = os.environ.get("NEUROPODS_HOME", os.path.expanduser("~/.cache/neuropods"))
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(home, f"target-pip-{version}")
    env = dict(os.environ, NEUROPODS_BUILD_PYTHON=sys.executable, NEUROPODS_EXTENSION_TARGET_DIR=target)
    env.pop("CARGO_TARGET_DIR", None)
    script = os.path.join(ROOT, "scripts", "lib", "build-backends.sh")
    subprocess.run(["bash", script, "--every-torch", sys.executable], check=True, env=env, cwd=ROOT)
    os.environ["CARGO_TARGET_DIR"] = target


def build_wheel(
    wheel_directory: str,
    config_settings: Optional[Mapping[str, Any]] = None,
    metadata_directory: Optional[str] = None,
) -> str:
    _build_backends()
    return maturin.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(
    wheel_directory: str,
    config_settings: Optional[Mapping[str, Any]] = None,
    metadata_directory: Optional[str] = None,
) -> str:
    _build_backends()
    return maturin.build_editable(wheel_directory, config_settings, metadata_directory)
