"""The main job: package a TorchScript addition model, load it through the
public API and run it.

    python examples/addition.py [output_folder]
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from neuropods.loader import load_neuropod
from neuropods.packagers import create_torchscript_neuropod


class AdditionModel(torch.nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor):
        return {"out": x + y}


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    path = folder / "addition_model"
    create_torchscript_neuropod(
        neuropod_path=path,
        model_name="addition_model",
        module=torch.jit.script(AdditionModel()),
        input_spec=[
            {"name": "x", "dtype": "float32", "shape": ("num_inputs",)},
            {"name": "y", "dtype": "float32", "shape": ("num_inputs",)},
        ],
        output_spec=[{"name": "out", "dtype": "float32", "shape": (None,)}],
        test_input_data={"x": np.arange(5, dtype=np.float32), "y": np.arange(5, dtype=np.float32)},
        test_expected_out={"out": np.arange(5) * 2},
    )
    print(f"packaged {path}")
    x = np.array([1, 2, 3, 4], dtype=np.float32)
    y = np.array([10, 20, 30, 40], dtype=np.float32)
    with load_neuropod(path, visible_gpu=None) as neuropod:
        print(f"loaded {neuropod.name} ({neuropod.platform})")
        print(f"inputs:  {neuropod.inputs}")
        print(f"outputs: {neuropod.outputs}")
        result = neuropod.infer({"x": x, "y": y})
    print(f"{x} + {y} = {result['out']}")


if __name__ == "__main__":
    main()
