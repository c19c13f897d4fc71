# Checked against the module by stubtest (scripts/test.sh).
from os import PathLike
from typing import Any, Dict, List, Mapping, Optional, Union

import numpy as np
from typing_extensions import Buffer, final

__version__: str
__all__ = [
    "Neuropod",
    "TensorMemory",
    "serialize",
    "deserialize",
    "check_config",
    "check_requirements",
    "write_manifest",
    "inspect",
    "serve",
    "serve_defaults",
    "_panic_for_tests",
    "__version__",
]

_SpecEntry = Dict[str, Any]

@final
class Neuropod:
    def __new__(
        cls,
        neuropod_path: Union[str, "PathLike[str]"],
        visible_gpu: Optional[int] = None,
        *,
        intra_op_threads: Optional[int] = None,
        inter_op_threads: Optional[int] = None,
        verify_manifest: bool = False,
        use_ope: bool = False,
        ope_python: Union[str, "PathLike[str]", None] = None,
    ) -> "Neuropod": ...
    def infer(self, inputs: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]: ...
    def allocate(self, name: str, shape: List[int], dtype: Any = None) -> np.ndarray: ...
    @property
    def worker_pid(self) -> Optional[int]: ...
    def close(self) -> None: ...
    def __enter__(self) -> "Neuropod": ...
    def __exit__(self, *args: Any) -> bool: ...
    @property
    def name(self) -> str: ...
    @property
    def platform(self) -> str: ...
    @property
    def inputs(self) -> List[_SpecEntry]: ...
    @property
    def outputs(self) -> List[_SpecEntry]: ...

@final
class TensorMemory: ...

def serialize(value: Union[np.ndarray, Mapping[str, np.ndarray]]) -> bytes: ...
def deserialize(data: Buffer) -> Union[np.ndarray, Dict[str, np.ndarray]]: ...
def check_config(text: str) -> None: ...
def check_requirements(text: str) -> None: ...
def inspect(path: Union[str, "PathLike[str]"]) -> Dict[str, Any]: ...
def serve(
    packages: List[Union[str, "PathLike[str]"]],
    *,
    # Defaults not written here are the server's own: serve_defaults().
    host: Optional[str] = None,
    http_port: Optional[int] = ...,
    grpc_port: Optional[int] = ...,
    instances: Optional[int] = None,
    max_batch_size: int = 0,
    max_queue_delay_us: Optional[int] = None,
    max_body_bytes: Optional[int] = None,
    drain_timeout_s: Optional[float] = None,
    header_timeout_s: Optional[float] = None,
    idle_timeout_s: Optional[float] = None,
    body_timeout_s: Optional[float] = None,
    max_idle_connections: Optional[int] = None,
    visible_gpu: Optional[int] = None,
    intra_op_threads: Optional[int] = None,
    inter_op_threads: Optional[int] = None,
    verify_manifest: bool = False,
    use_ope: bool = False,
    ope_python: Union[str, "PathLike[str]", None] = None,
) -> None: ...
def serve_defaults() -> Dict[str, Any]: ...
def write_manifest(package_dir: Union[str, "PathLike[str]"]) -> None: ...
def _panic_for_tests() -> None: ...
