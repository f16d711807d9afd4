"""ModelSpec: the one object every stage passes along (a model plus its input contract)."""

from __future__ import annotations

import numbers
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, TypedDict

from edgecompress.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from edgecompress.data import Dataset, DataSpec


# What a single-input model (module:factory, an nn.Module, a .pt2) may be declared to take
# (`--input-dtype`, `load_model(input_dtype=...)`): float samples, or integer ids (token ids, class
# indices) for a model that starts with an nn.Embedding or indexes with its input.
INPUT_DTYPES = ("float32", "int64", "int32")

# What `load_model`, a pass's `model` / `teacher` and ExportJob.model take: a ModelSpec as it is, an
# nn.Module (with an input shape), or a reference: a file (.pt2, .onnx), 'zoo:NAME',
# 'package.module:factory', a Hugging Face directory. (A string: torch is for type checkers only.)
ModelLike: TypeAlias = "ModelSpec | torch.nn.Module | str | os.PathLike[str]"
# An input shape: a tuple or list of ints, or the CLI's text "1,3,224,224" (also "1x3x224x224").
ShapeLike: TypeAlias = "str | tuple[int, ...] | list[int]"


def check_input_dtype(dtype: str, flag: str | None = None) -> str:
    """`dtype` if it is one of INPUT_DTYPES, else a one-line ConfigError listing them, naming the
    option as the caller spelled it (`--input-dtype 'x'` / `input_dtype='x'`), or as `flag` when
    given (a recipe passes its own key's words)."""
    from edgecompress.errors import ConfigError, opt

    if not isinstance(dtype, str) or dtype.strip().lower() not in INPUT_DTYPES:
        given = opt("--input-dtype", "input_dtype", repr(dtype)) if flag is None else f"{flag} {dtype!r}"
        raise ConfigError(f"{given}: use one of {', '.join(INPUT_DTYPES)}")
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


def image_hw(shape: Sequence[Any]) -> tuple[int, int] | None:
    """(height, width) of a 4-D image input shape (batch first) in the layout the model takes it,
    NCHW or channels last (`image_layout`'s rule); None for any other shape."""
    # a symbolic dim ("?", "batch") is no size; the batch may be one
    if len(shape) != 4 or not all(isinstance(d, numbers.Integral) for d in shape[1:]):
        return None
    from edgecompress.exporters.base import image_layout

    h, w = (shape[2], shape[3]) if image_layout(shape) == "NCHW" else (shape[1], shape[2])
    return int(h), int(w)


# Tasks of text encoders (token ids in): tokenized data, encoder-specific quantization everywhere.
TEXT_TASKS = ("embedding", "sequence-classification")


class SpecExtra(TypedDict, total=False):
    """What a ModelSpec carries beyond its fields, by who sets it (all optional)."""

    # passes: one record per pass run ({"pass", "config", "log"}), for the report's steps
    passes: list[dict[str, Any]]
    # qat: the PT2E graph is int8 already ("qat"); its quantizer backend; the trained float twin;
    # the float model before QAT (the drift reference); which of those two the formats the backend
    # does not lower quantize by PTQ (_qat_backends.qat_route); the float model's params and MACs
    # (a QAT graph cannot be counted)
    quantized: str
    qat_quantizer: str
    qat_float: Any
    fp32_reference: Any
    qat_cross_format: str
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
    # an .onnx of several inputs (`_load_onnx`): each integer input's bound where the file shows one
    # (the rows of the table it is gathered from: input_ids, token_type_ids); an input that indexes
    # no table (an attention mask) has none to know
    input_vocab: dict[str, int]
    # a model whose input dtype was detected, not declared (an nn.Embedding first): why, in words,
    # for the report and the resolved recipe
    input_dtype_detected: str
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
    # One name per output, in the order of the flattened outputs (`output_names_from`): every
    # exporter gives the file's outputs exactly these. load_model fills it from the model's
    # outputs; a spec built by hand names the first (and its other outputs get output_1, ...).
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
    def image_hw(self) -> tuple[int, int] | None:
        """(height, width) of the (first) input when it is a 4-D image, NCHW or channels last;
        None otherwise. What image files are preprocessed to."""
        return image_hw(self.input_shape)

    @property
    def takes_integers(self) -> bool:
        """Its (first) input is integer ids: tokenized text, or a user's model of token / class ids."""
        return bool(self.inputs) and self.inputs[0].is_integer

    def input_dtype_fields(self) -> dict[str, str]:
        """report.json's `model` fields of an integer input: `input_dtype`, and `input_dtype_detected`
        (why) when the loader detected it rather than being told; none for float32, left unsaid."""
        if not self.takes_integers:
            return {}
        why = self.extra.get("input_dtype_detected")
        return {"input_dtype": self.inputs[0].dtype, **({"input_dtype_detected": why} if why else {})}

    @property
    def image_size(self) -> int:
        """The image input's width (its side when square), 0 for other inputs; `image_hw` has both."""
        hw = self.image_hw
        return hw[1] if hw else 0

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
                # token ids stay in the vocab (an input's own table, for a file of several inputs)
                bound = self.extra.get("input_vocab", {}).get(spec.name, self.extra.get("vocab_size", 100))
                high = min(100, int(bound))
                out.append(torch.randint(0, high, shape, generator=g, dtype=getattr(torch, spec.dtype)))
            else:
                out.append(torch.randn(shape, generator=g))
        return tuple(out)

    def replace(self, **changes: Any) -> ModelSpec:
        import dataclasses

        return dataclasses.replace(self, **changes)


# What an input or output name may hold: names are ONNX value names, OpenVINO tensor names (kept in
# the IR's comma-separated `names` attribute, so no comma) and TFLite signature keys, and apps write
# them in code. Letters, digits, _ . - / : covers dict keys, forward() parameters, torch.onnx's and
# OpenVINO's own names.
_TENSOR_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-/:]*")


def _tensor_name(text: str) -> str:
    """`text` with the characters a tensor name may not hold turned to "_" (and a leading "_" when
    it would start with . - / :)."""
    name = re.sub(r"[^A-Za-z0-9_.\-/:]", "_", text)
    return name if _TENSOR_NAME.fullmatch(name) else f"_{name}"


def default_output_name(k: int) -> str:
    """Output k's name when nothing names it: `output`, then `output_1`, `output_2`, ..."""
    return "output" if k == 0 else f"output_{k}"


def default_input_name(k: int) -> str:
    """Input k's name when no forward() parameter names it: `input`, then `input_1`, ..."""
    return "input" if k == 0 else f"input_{k}"


def input_names_from(module: Any, n: int = 1) -> list[str]:
    """The names of a module's first `n` inputs: its forward()'s positional parameters in order
    (`forward(self, x)` -> "x", `forward(self, input_ids, attention_mask)` -> both), the way outputs
    are named from what forward returns. Inputs no parameter names (`*args`, a signature Python
    cannot read) get `input`, `input_1`, ...; a parameter name a tensor name may not hold gets "_"
    for those characters. Every exporter gives the file's inputs these names."""
    import inspect

    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError, AttributeError):  # a builtin or a C extension's forward
        params = []
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return [_tensor_name(positional[k]) if k < len(positional) else default_input_name(k) for k in range(n)]


def _output_leaves(y: Any, where: str) -> list[tuple[Any, Any]]:
    """(key path, tensor) of each tensor in a forward's result `y`, in pytree flattening order (the
    order torch.export, and so every exporter, lays the outputs out); None entries are skipped.
    ModelLoadError (one line) for a result no exporter takes: no tensor at all, or something that
    is neither a tensor nor a tuple / list / dict / namedtuple of them (an int, an object of a
    class of the model's own): each exporter refused it in its own words, or crashed."""
    import torch
    from torch.utils import _pytree as pytree

    from edgecompress.errors import ModelLoadError

    leaves = [(path, leaf) for path, leaf in pytree.tree_flatten_with_path(y)[0] if leaf is not None]
    other = next((leaf for _, leaf in leaves if not isinstance(leaf, torch.Tensor)), None)
    if other is not None or not leaves:
        what = f"an object of type {type(other).__name__} among its outputs" if other is not None else \
            f"no tensor ({y!r:.40})"
        raise ModelLoadError(f"{where} returns {what}; the exporters take a tensor, or a tuple, list or dict "
                             "of tensors (nested ones too): return tensors")
    return leaves


def tensors_only(module: Any, example: Sequence[Any]) -> Any:
    """`module` itself, or, when its result on `example` holds None (`return logits, None`), a
    wrapper whose forward returns only the tensors: a tuple in pytree flattening order (one tensor
    as it is). Why: None outputs are no outputs here (`_output_leaves` skips them, so no name is
    given to them), and torch.onnx drops them, but OpenVINO's TorchScript tracing and litert-torch's
    lowering refused such a model in their own words ("Couldn't get TorchScript module by tracing",
    "must be a Value (contained a None item)"). Every format's file now holds the same outputs,
    named alike."""
    import torch
    from torch.utils import _pytree as pytree

    with torch.no_grad():
        y = module(*example)
    if not any(leaf is None for leaf in pytree.tree_leaves(y)):
        return module

    class TensorsOnly(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            leaves = [t for t in pytree.tree_leaves(self.inner(*args, **kwargs)) if t is not None]
            return leaves[0] if len(leaves) == 1 else tuple(leaves)

    return TensorsOnly(module).eval()


def first_output(y: Any, where: str = "the model") -> Any:
    """The first tensor of a forward's result `y`, in pytree flattening order: the output every
    exporter lays out first and names first (`output_names_from`), and the one accuracy, agreement
    and cosine are of. A tuple's first, a dict's first in key order, and so on down nested ones:
    `({"logits": a, "aux": b}, c)` -> a. A result no exporter takes is refused (`_output_leaves`)."""
    return _output_leaves(y, where)[0][1]


def output_names_from(y: Any, given: Sequence[str] = (), where: str = "the model") -> list[str]:
    """The names of the tensors in a forward's result `y`, in pytree flattening order (the order
    torch.export, and so every exporter, lays the outputs out): `given` for the first ones, then
    a dict's (or namedtuple's) key path joined with "." (`{"heads": {"cls": a}}` -> "heads.cls",
    `{"aux": (a, b)}` -> "aux.0", "aux.1"), and `output`, `output_1`, ... for outputs no key
    names (a tensor, a tuple or list). Characters a name may not hold in a key become "_"."""
    from torch.utils import _pytree as pytree

    derived = []
    for k, (path, _) in enumerate(_output_leaves(y, where)):
        if not any(isinstance(p, pytree.MappingKey | pytree.GetAttrKey) for p in path):
            derived.append(default_output_name(k))
            continue
        parts = [str(p.key) if isinstance(p, pytree.MappingKey) else
                 p.name if isinstance(p, pytree.GetAttrKey) else
                 str(p.idx) if isinstance(p, pytree.SequenceKey) else str(p) for p in path]
        derived.append(_tensor_name(".".join(parts)))
    if len(given) > len(derived):
        raise ConfigError(f"{where}: {len(given)} output names {list(given)} for its {len(derived)} output(s) "
                          f"{derived}; give at most one name per output")
    return [*given, *derived[len(given):]]


def complete_output_names(given: Sequence[str], n: int, where: str, check: bool = True) -> list[str]:
    """`given` for the first of a file's `n` outputs and `output_k` for the others (`check`ed):
    what an exporter names the outputs of a spec that does not name them all (one built by hand)."""
    if len(given) > n:
        raise ConfigError(f"{where}: {len(given)} output names {list(given)} for the model's {n} output(s)")
    names = [*given, *(default_output_name(k) for k in range(len(given), n))]
    if check:
        check_output_names(names, where)
    return names


def check_input_names(names: Sequence[str], where: str) -> None:
    """ConfigError (one line) for an input name that is not a string of the allowed characters, or
    that names two inputs."""
    _check_names("input", names, where)


def check_output_names(names: Sequence[str], where: str, input_names: Sequence[str] = ()) -> None:
    """ConfigError (one line) for an output name that is not a string of the allowed characters,
    that names two outputs, or that is an input's name (an ONNX graph's values share one namespace)."""
    _check_names("output", names, where)
    for k, name in enumerate(names):
        if name in input_names:
            raise ConfigError(f"{where}: output {k} name {name!r} is also an input's name; an output needs a "
                              "name of its own")


def _check_names(kind: str, names: Sequence[str], where: str) -> None:
    for k, name in enumerate(names):
        if not isinstance(name, str) or not _TENSOR_NAME.fullmatch(name):
            raise ConfigError(f"{where}: {kind} {k} name {name!r} is not a valid tensor name (letters, digits "
                              "and _ . - / :, not starting with . - / :)")
        if name in names[:k]:
            raise ConfigError(f"{where}: {kind} name {name!r} is given to {kind}s {list(names).index(name)} "
                              f"and {k} ({list(names)}); each {kind} needs its own name")
