"""The public API called the documented ways, with its annotations as the only guide.

`.ci/typecheck.py` runs mypy on this file with the package, so an annotation narrower than a
documented call (audit #23: `load_data` took arrays and DataLoaders but was typed for paths) fails
`make test`; tests/test_typing_usage.py runs the same calls on digits-size data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import edgecompress as ec
from edgecompress import DataLike, ModelLike, ShapeLike

SHAPE = (1, 1, 8, 8)


class Tiny(nn.Module):
    """An 8x8 one-channel classifier (10 classes) whose input is named `pixels`."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(pixels)).mean((2, 3)))


def samples(n: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """`n` random model-ready samples and labels."""
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, *SHAPE[1:])).astype(np.float32), rng.integers(0, 10, n)


def data_forms(x: np.ndarray, y: np.ndarray, npz: Path) -> list[ec.Dataset]:
    """Every form `load_data` documents: a file (str, Path, DataSpec), arrays, tensors, (x, y),
    a torch Dataset, a DataLoader, a list of batches, a Dataset."""
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    forms: list[DataLike] = [
        str(npz), npz, f"{npz}[:8]", ec.DataSpec(str(npz), 0, 8), x, tx, (x, y), (tx, ty),
        TensorDataset(tx, ty), DataLoader(TensorDataset(tx, ty), batch_size=8), [x[:16], x[16:]],
        ec.Dataset(x, y),
    ]
    return [ec.load_data(f, progress=False) for f in forms]


def model_forms() -> list[ec.ModelSpec]:
    """`load_model` with a module and each shape form, names, and a spec relabelled."""
    shapes: list[ShapeLike] = [SHAPE, list(SHAPE), "1,1,8,8"]
    specs = [ec.load_model(Tiny(), input_shape=s) for s in shapes]
    named = ec.load_model(Tiny(), SHAPE, name="tiny", input_names=["image"], output_names=["logits"])
    ref: ModelLike = named
    return [*specs, named, ec.load_model(ref, preprocess="imagenet")]


def compress(model: ModelLike, x: np.ndarray, y: np.ndarray) -> ec.ModelSpec:
    """Passes on an nn.Module with a shape, fed in-memory data, with a module as teacher."""
    teacher = Tiny()
    small = ec.lowrank(model, {"rank": 2, "min_saving": 0.0}, data=(x, y), teacher=teacher,
                       input_shape=SHAPE, progress=False)
    return ec.prune(small, data=torch.from_numpy(x), teacher=small, ratio=0.25, finetune_epochs=0, progress=False)


def export_and_validate(spec: ec.ModelSpec, x: np.ndarray, y: np.ndarray, out: Path) -> list[ec.Measurement]:
    """export -> validate -> write_report, and the same through ExportJob / run_export."""
    data = ec.load_data((x, y))
    ref = ec.reference_outputs(spec, data, progress=False)
    art = ec.export(spec, "onnx", "fp32", out, options=ec.ExportOptions(progress=False))
    ms = ec.validate([art, art.path], eval_data=data, reference=torch.from_numpy(ref), progress=False,
                     settings=ec.ValidateSettings(rounds=1))
    ec.write_report(ec.Report.from_measurements(ms, model={"name": spec.name}), out / "report")
    job = ec.ExportJob(model=Tiny(), formats="onnx:int8", out_dir=str(out / "job"), calib=x, eval=(x, y),
                       input_shape=SHAPE, progress=False)
    ec.run_export(job)
    return ms
