"""ModelSpec: the one object every stage passes along (a model plus its input contract)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from edgecompress.data import Dataset, DataSpec


@dataclass
class InputSpec:
    """One model input: its shape for a single sample with batch 1 first, e.g. (1, 3, 224, 224)."""

    shape: tuple[int, ...]
    name: str = "input"
    dtype: str = "float32"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


# Tasks of text encoders (token ids in): tokenized data, encoder-specific quantization everywhere.
TEXT_TASKS = ("embedding", "sequence-classification")


@dataclass
class ModelSpec:
    """A model and what it takes: the input contract, preprocessing and its default data.

    `module` is None only for models that arrive as ONNX (export-only paths).
    """

    name: str
    module: torch.nn.Module | None
    inputs: list[InputSpec]
    source: str = ""
    task: str = "classification"
    preprocess: str | Callable[..., Any] | None = None
    onnx_path: Path | None = None
    # Zoo entries carry default data so --calib/--eval are optional for them.
    default_calib: Callable[[], DataSpec | Dataset | None] | None = None
    default_eval: Callable[[], DataSpec | Dataset | None] | None = None
    output_names: list[str] = field(default_factory=lambda: ["output"])
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.inputs[0].shape

    @property
    def is_text(self) -> bool:
        """A text encoder: the exporters and the data loader ask this, not the task names."""
        return self.task in TEXT_TASKS

    @property
    def image_size(self) -> int:
        return int(self.input_shape[-1]) if len(self.input_shape) == 4 else 0

    def example_inputs(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        """Random inputs of the right shape and dtype (for tracing / export)."""
        import torch

        g = torch.Generator().manual_seed(0)
        out = []
        for spec in self.inputs:
            shape = (batch, *spec.shape[1:])
            if spec.dtype.startswith("int") and spec.name.endswith("mask"):
                # attention masks: all ones (a random 0..99 mask is not a mask)
                out.append(torch.ones(shape, dtype=getattr(torch, spec.dtype)))
            elif spec.dtype.startswith("int"):
                high = min(100, int(self.extra.get("vocab_size", 100)))  # token ids stay in the vocab
                out.append(torch.randint(0, high, shape, generator=g, dtype=getattr(torch, spec.dtype)))
            else:
                out.append(torch.randn(shape, generator=g))
        return tuple(out)

    def replace(self, **changes: Any) -> ModelSpec:
        import dataclasses

        return dataclasses.replace(self, **changes)
