"""ModelSpec: the one object every stage passes along (a model plus its input contract)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    import torch

    from edgecompress.data import Dataset, DataSpec


# What a single-input model (module:factory, an nn.Module, a .pt2) may be declared to take
# (`--input-dtype`, `load_model(input_dtype=...)`): float samples, or integer ids (token ids, class
# indices) for a model that starts with an nn.Embedding or indexes with its input.
INPUT_DTYPES = ("float32", "int64", "int32")


def check_input_dtype(dtype: str, flag: str = "--input-dtype") -> str:
    """`dtype` if it is one of INPUT_DTYPES, else a one-line ConfigError listing them."""
    from edgecompress.errors import ConfigError

    if not isinstance(dtype, str) or dtype.strip().lower() not in INPUT_DTYPES:
        raise ConfigError(f"{flag} {dtype!r}: use one of {', '.join(INPUT_DTYPES)}")
    return dtype.strip().lower()


@dataclass
class InputSpec:
    """One model input: its shape for a single sample with batch 1 first, e.g. (1, 3, 224, 224)."""

    shape: tuple[int, ...]
    name: str = "input"
    dtype: str = "float32"

    @property
    def is_integer(self) -> bool:
        """Integer ids (token ids, masks, class indices), not float samples."""
        return self.dtype.startswith(("int", "uint"))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


# Tasks of text encoders (token ids in): tokenized data, encoder-specific quantization everywhere.
TEXT_TASKS = ("embedding", "sequence-classification")


class SpecExtra(TypedDict, total=False):
    """What a ModelSpec carries beyond its fields, by who sets it (all optional)."""

    # passes: one record per pass run ({"pass", "config", "log"}), for the report's steps
    passes: list[dict[str, Any]]
    # qat: the PT2E graph is int8 already ("qat"); its quantizer backend; the trained float twin
    # other formats' PTQ starts from; the float model before QAT (the drift reference); the float
    # model's params and MACs (a QAT graph cannot be counted)
    quantized: str
    qat_quantizer: str
    qat_float: Any
    fp32_reference: Any
    params: int
    macs: int
    # passes: the model before the first compression pass (a standalone distill's default teacher)
    original: Any
    # zoo entries: how many first convs int8 exports keep float, per format
    onnx_int8_float_first: int
    openvino_int8_float_first: int
    # text encoders (models/hf.py): tokenizer folder, sequence length, padding, vocabulary,
    # a dynamic sequence axis in ONNX and its upper bound. `vocab_size` also for any model whose
    # input is ids into an nn.Embedding (the loaders read its num_embeddings): ids stay below it
    tokenizer: str | None
    seq_len: int
    text_length: str
    vocab_size: int
    dynamic_seq: bool
    max_seq_len: int
    # an ONNX / ExportedProgram file exported at a fixed batch
    fixed_batch: int


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
    extra: SpecExtra = field(default_factory=lambda: SpecExtra())

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.inputs[0].shape

    @property
    def is_text(self) -> bool:
        """A text encoder: the exporters and the data loader ask this, not the task names."""
        return self.task in TEXT_TASKS

    @property
    def takes_integers(self) -> bool:
        """Its (first) input is integer ids: tokenized text, or a user's model of token / class ids."""
        return bool(self.inputs) and self.inputs[0].is_integer

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
