"""TorchScript modules used by the tests (module level so that TorchScript can
read their source and resolve their NamedTuple types)."""

from typing import Dict, List, NamedTuple, Optional, Tuple, Union

import torch


class AdditionModel(torch.nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {"out": x + y}


def make_mlp(seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    torch.manual_seed(seed)
    mlp = torch.nn.Sequential(
        torch.nn.Linear(8, 16),
        torch.nn.ReLU(),
        torch.nn.Linear(16, 16),
        torch.nn.ReLU(),
        torch.nn.Linear(16, 4),
    )
    return mlp.to(dtype).eval()


class DictWrapper(torch.nn.Module):
    """Runs a module on input `x`, returns {"out": module(x)}."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {"out": self.inner(x)}


class Int64Model(torch.nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {"out": a * 3 - torch.floor_divide(b, 2), "total": torch.cumsum(a, dim=0)}


class BoolModel(torch.nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {"and_not": a & ~b, "any": torch.any(a | b, dim=1)}


class HalfModel(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {"out": x * 2.5 + 1.0}


class SmallIntsModel(torch.nn.Module):
    """int8/int16/int32/uint8 in, each doubled (wrapping as torch wraps)."""

    def forward(
        self, i8: torch.Tensor, i16: torch.Tensor, i32: torch.Tensor, u8: torch.Tensor
    ) -> Dict[str, torch.Tensor]:
        return {"i8": i8 * 2, "i16": i16 * 2, "i32": i32 * 2, "u8": u8 * 2}


class UpperModel(torch.nn.Module):
    def forward(self, words: List[str]) -> Dict[str, List[str]]:
        return {"upper": [w.upper() for w in words]}


class ConcatModel(torch.nn.Module):
    """Joins two string lists element-wise and counts the characters."""

    def forward(self, left: List[str], right: List[str]) -> Dict[str, Union[List[str], torch.Tensor]]:
        joined: List[str] = []
        lengths: List[int] = []
        for a, b in zip(left, right):
            joined.append(a + "|" + b)
            lengths.append(len(a) + len(b))
        out: Dict[str, Union[List[str], torch.Tensor]] = {}
        out["joined"] = joined
        out["lengths"] = torch.tensor(lengths, dtype=torch.int64)
        return out


class DictTensorModel(torch.nn.Module):
    def forward(self, inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        return {"out": inputs["a"] * inputs["b"] + inputs["c"].sum()}


class DictStringModel(torch.nn.Module):
    def forward(self, inputs: Dict[str, List[str]]) -> Dict[str, List[str]]:
        out: List[str] = []
        for a, b in zip(inputs["first"], inputs["last"]):
            out.append(b + ", " + a)
        return {"names": out}


class DictUnionModel(torch.nn.Module):
    def forward(
        self, inputs: Dict[str, Union[torch.Tensor, List[str]]]
    ) -> Dict[str, Union[torch.Tensor, List[str]]]:
        out: Dict[str, Union[torch.Tensor, List[str]]] = {}
        values = inputs["values"]
        labels = inputs["labels"]
        if isinstance(values, torch.Tensor):
            out["scaled"] = values * 10
        if isinstance(labels, List[str]):
            tagged: List[str] = []
            for label in labels:
                tagged.append("<" + label + ">")
            out["tagged"] = tagged
        return out


class SingleTensorModel(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x - 1


class TupleModel(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return x + 1, x * 2, x.sum(dim=0)


class SumAndProduct(NamedTuple):
    # Field order deliberately differs from the output spec order.
    product: torch.Tensor
    total: torch.Tensor


class NamedTupleModel(torch.nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> SumAndProduct:
        return SumAndProduct(x * y, x + y)


class IdentityModel(torch.nn.Module):
    """Returns its input itself (no copy) and a view of it."""

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {"same": x, "tail": x[1:]}


class RaisingModel(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        if bool(x.sum() > 100):
            raise ValueError("input sum exceeds the limit of 100")
        return {"y": x * 2}


class RefusesNegativeRows(torch.nn.Module):
    """Doubles its rows; a negative value anywhere fails the whole call."""

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        if bool((x < 0).any()):
            raise ValueError("a row holds a negative value")
        return {"y": x * 2}


class WrongOutputDTypeModel(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {"y": x.to(torch.float64)}


class DefaultArgModel(torch.nn.Module):
    def forward(self, x: torch.Tensor, bias: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        if bias is None:
            return {"y": x - 1}
        return {"y": x + bias}


class SlowModel(torch.nn.Module):
    """`steps` dependent matmuls: takes a while, without the GIL if released."""

    def forward(self, x: torch.Tensor, steps: torch.Tensor) -> Dict[str, torch.Tensor]:
        y = x
        for _ in range(int(steps.item())):
            y = torch.tanh(y @ x)
        return {"y": y}


class ScaleModel(torch.nn.Module):
    """x * factor, with `factor` a model buffer (for thread tests)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("factor", torch.tensor([1.0, -2.0, 0.5], dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {"y": x * self.factor + 3.0}


class ComplexOutputModel(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {"y": x.to(torch.complex64)}


class IntListOutputModel(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> Dict[str, List[int]]:
        return {"y": [int(x.numel()), 2]}


class ExtraOutputModel(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {"y": x + 1, "surprise": x}


class GrowingOutputModel(torch.nn.Module):
    """Output bound to the same symbol as the input, but twice as long."""

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {"y": torch.cat([x, x])}


class InPlaceModel(torch.nn.Module):
    """Mutates its input in place (legal TorchScript), returns a new tensor."""

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        x.mul_(2)
        return {"y": x + 1}


class StringListOutputModel(torch.nn.Module):
    """Returns a bare List[str] (one output)."""

    def forward(self, words: List[str]) -> List[str]:
        out: List[str] = []
        for w in words:
            out.append(w + w)
        return out


class MixedTupleModel(torch.nn.Module):
    def forward(self, words: List[str]) -> Tuple[List[str], torch.Tensor]:
        lengths: List[int] = []
        for w in words:
            lengths.append(len(w))
        return words[::-1], torch.tensor(lengths, dtype=torch.int32)


class TransposeModel(torch.nn.Module):
    """Returns non-contiguous views of a new tensor (transposed, strided)."""

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        y = x * 2
        return {"t": y.t(), "every_other": y[:, ::2]}


class HandshakeModel(torch.nn.Module):
    """Reads and writes its (zero-copy) input while it runs: sets flag[1] = 1
    when it starts, then waits, at most `limit` polls, for someone else to
    set flag[0]. Returns how many polls it made."""

    def forward(self, flag: torch.Tensor, limit: torch.Tensor) -> Dict[str, torch.Tensor]:
        flag[1] = 1
        polls = 0
        max_polls = int(limit.item())
        while polls < max_polls and int(flag[0].item()) == 0:
            polls += 1
        return {"polls": torch.tensor([polls], dtype=torch.int64)}


class RenamingDictModel(torch.nn.Module):
    """Dict in, dict out, with keys derived from the input names."""

    def forward(self, inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        out: Dict[str, torch.Tensor] = {}
        for k, v in inputs.items():
            out[k + "→out"] = v * 2
        return out
