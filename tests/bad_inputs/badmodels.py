"""Factories used by the bad-input catalogue (imported as `tests.bad_inputs.badmodels:NAME`)."""

import torch
from torch import nn

NOT_CALLABLE = 42


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean((2, 3)))


def tiny() -> nn.Module:
    return Tiny()


def raises() -> nn.Module:
    raise RuntimeError("factory exploded")


def not_a_module() -> str:
    return "a string"


class Unexportable(nn.Module):
    """Runs eagerly, but uses an op (Bessel J0) that has no ONNX translation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.special.bessel_j0(x)


def unexportable() -> nn.Module:
    return Unexportable()


class Fft(nn.Module):
    """Exports to ONNX and OpenVINO, but litert-torch cannot lower the FFT: a run of
    `-f onnx -f tflite` fails at its second format."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.fft.fft(x.flatten(1)).abs())


def fft() -> nn.Module:
    return Fft()


class Branchy(nn.Module):
    """An `if` on tensor values: TorchScript tracing (OpenVINO's converter) would keep the branch
    the example input took, silently."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        if x.sum() > 0:
            x = x * 2
        return self.fc(x)


def branchy() -> nn.Module:
    return Branchy()


class FixedBatch(nn.Module):
    """`x.reshape(1, -1)` pins the batch to 1: torch.export's dynamic batch fails, and torch logs
    a 31-line guard traceback (torch/_guards.py) on its own handler before our one-line error."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.reshape(1, -1))


def fixed_batch() -> nn.Module:
    return FixedBatch()


class IdsBag(nn.Module):
    """Integer ids in (nn.Embedding first, so it loads as int64 without a flag), 3 classes out."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 4)
        self.fc = nn.Linear(4, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc(self.emb(ids).mean(1))


def ids_bag() -> nn.Module:
    return IdsBag()


class OneHotIds(nn.Module):
    """Takes ids with no nn.Embedding to see (F.one_hot): loaded as float, it fails with a hint."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(100, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc(nn.functional.one_hot(ids, 100).float().mean(1))


def one_hot_ids() -> nn.Module:
    return OneHotIds()
