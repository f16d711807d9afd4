"""What every pass shares: config parsing, model/data resolution, size/MAC counting, evaluation
and resumable checkpoints. Not a pass itself (the leading underscore keeps it out of PASSES)."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from edgecompress.errors import ConfigError, DataError, say

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np
    import torch

    from edgecompress.data import DataLike, Dataset
    from edgecompress.models import ModelLike, ModelSpec, ShapeLike

C = TypeVar("C")


def _refuse_loose_numbers(cls: type, params: dict[str, Any], at: Callable[[str], str]) -> None:
    """pydantic's lax mode reads `epochs: true` as 1, `ratio: "0.5"` as 0.5, `hflip: "yes"` and
    `global_pruning: 1` as True; a number field gets a number here (ints still fill float fields),
    a bool field true or false, and a mapping of numbers (`per_layer`) numbers."""
    import typing

    def loose_number(key: str, value: Any) -> None:
        if isinstance(value, bool | str | bytes):
            raise ConfigError(f"{at(key)}: {value!r} is not a number"
                              + (" (write it without quotes)" if isinstance(value, str) else ""))

    hints = typing.get_type_hints(cls)
    for key, value in params.items():
        hint = hints.get(key)
        kinds = set(typing.get_args(hint)) or {hint}
        kinds.discard(type(None))
        if typing.get_origin(hint) is dict and isinstance(value, dict):
            if set(typing.get_args(hint)[1:]) <= {int, float}:
                for k, v in value.items():
                    loose_number(f"{key}.{k}", v)
            continue
        if bool in kinds:
            # the other kinds are Literal options (bn_recalib: "auto"), matched exactly by pydantic
            literals = {a for k in kinds if typing.get_origin(k) is typing.Literal for a in typing.get_args(k)}
            if value is not None and not isinstance(value, bool) and not (isinstance(value, str) and value in literals):
                raise ConfigError(f"{at(key)}: {value!r} is not true or false")
            continue
        if not kinds or not kinds <= {int, float}:
            continue
        loose_number(key, value)


def make_config(cls: type[C], config: Any = None, where: str | None = None, *,
                at: Callable[[str], str] | None = None, **overrides: Any) -> C:
    """A validated `cls` from an instance, a dict and/or keyword overrides.

    Types are checked by pydantic (dataclass mode, unknown keys refused); range checks live in each
    config's `__post_init__`. Errors are one-line ConfigErrors naming `where.key`, or `at(key)`
    when given (a recipe's pass item names its keys on the caller's surface: errors.pass_key).
    """
    from pydantic import TypeAdapter
    from pydantic import ValidationError as PydanticError

    where = where or cls.__name__.removesuffix("Config").lower()
    at = at or (lambda key: f"{where}.{key}")
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        if not isinstance(config, cls):  # prune(spec, DistillConfig(...)) failed with AttributeError
            raise ConfigError(f"{where}: expected {cls.__name__} or a mapping of parameters, "
                              f"got {type(config).__name__}")
        # validated again: an instance changed after construction (cfg.ratio = 5.0) is not trusted
        config = dataclasses.asdict(config)  # type: ignore[call-overload]  # a dataclass instance (above)
    if config is not None and not isinstance(config, dict):
        raise ConfigError(f"{where}: expected a mapping of parameters, got {type(config).__name__}")
    params = {**(config or {}), **overrides}
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = [k for k in params if k not in known]
    if unknown:
        raise ConfigError(f"{at(unknown[0])}: unknown key (known: {', '.join(sorted(known))})")
    _refuse_loose_numbers(cls, params, at)
    try:
        return TypeAdapter(cls).validate_python(params)
    except ConfigError as e:  # from __post_init__: "<pass>.<key>: ..." -> "<where>.<key>: ..." (at(key))
        msg, short = str(e), cls.__name__.removesuffix("Config").lower() + "."
        if msg.startswith(short) and not msg.startswith(where):
            key, _, rest = msg[len(short) :].partition(":")  # "ratio: 1.5 is out of range" -> ratio
            msg = at(key) + _ + rest if " " not in key else where + "." + msg[len(short) :]
        raise ConfigError(msg) from None
    except PydanticError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "?"
        msg = "unknown key" if err["type"] == "unexpected_keyword_argument" else err["msg"]
        raise ConfigError(f"{at(key)}: {msg} (got {err.get('input')!r})") from None


def check_range(
    where: str,
    value: float | None,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
) -> None:
    """ConfigError naming `where` when value is outside [lo, hi] (open ends where asked).

    NaN and +-Inf (YAML `.nan`, `.inf`) are out of every range [issue #7]: NaN compares False both
    ways and slipped by; an infinite lr or temperature only yields a NaN model later.
    """
    if value is None:
        return
    bad = (
        not math.isfinite(value)
        or (lo is not None and (value <= lo if lo_open else value < lo))
        or (hi is not None and (value >= hi if hi_open else value > hi))
    )
    if bad:
        lb = "(" if lo_open else "["
        rb = ")" if hi_open else "]"
        raise ConfigError(
            f"{where}: {value} is out of range {lb}{lo if lo is not None else '-inf'}, "
            f"{hi if hi is not None else 'inf'}{rb}"
        )


def check_distill(where: str, params: Any) -> None:
    """Validate a pass's nested `distill:` keys when its config is built.

    They were checked only when the pass began fine-tuning, after the pruning or factorization
    before it had run (from Python; recipes checked them up front).
    """
    from edgecompress.passes.distill import DistillConfig  # distill.py imports this module

    make_config(DistillConfig, params, where)


def as_spec(model: ModelLike, input_shape: ShapeLike | None = None, copy_module: bool = True, *, who: str = "passes",
            exported_ok: bool = False) -> ModelSpec:
    """A ModelSpec from a spec, an nn.Module (needs input_shape) or a reference string.

    The module is deep-copied so a pass never changes the caller's model in place. `who` names the
    pass in errors; `exported_ok`: the pass only trains the weights, which works on a .pt2's
    program too (distill), so it is not refused (`refuse_exported`).
    """
    import torch

    from edgecompress.models import ModelSpec, load_model

    spec = model if isinstance(model, ModelSpec) else load_model(model, input_shape)
    # load_model took its own copy of a bare module (unless it could not: then copy, or fail, here)
    fresh = isinstance(model, torch.nn.Module) and spec.module is not model
    pass_module(spec)
    if not exported_ok:
        refuse_exported(spec, who)
    if spec.extra.get("quantized"):
        raise ConfigError(
            f"model {spec.name}: already quantized ({spec.extra['quantized']}); qat must be the last pass"
        )
    if copy_module and not fresh:
        # `passes` is copied too: a pass appends its record there, and a shallow copy appended it to
        # the caller's spec as well (prune(a) then lowrank(a) left `a` claiming both).
        extra = {**spec.extra, "passes": list(spec.extra.get("passes", []))}
        # the model before the first pass: a standalone distill's default teacher (it taught the
        # pruned model its own outputs: 22 % top-1 stayed 22 %). Not copied: no pass changes it.
        extra.setdefault("original", spec.module)
        spec = spec.replace(module=copy.deepcopy(spec.module), extra=extra)
    elif copy_module and fresh:
        spec.extra.setdefault("original", model)  # the caller's module, which the pass leaves alone
    return spec


def output_count(y: Any) -> int:
    """How many output tensors a forward gave (1 for a tensor; nested tuples / dicts counted through,
    as the exporters lay them out)."""
    import torch
    from torch.utils import _pytree as pytree

    return sum(isinstance(leaf, torch.Tensor) for leaf in pytree.tree_leaves(y))


def shared_weights(module: torch.nn.Module) -> dict[str, str]:
    """Modules holding a parameter another module holds too (tied weights, `b.weight = a.weight`):
    name -> "a.weight is shared with b" (the same words for `a` and `b`). A pass that rebuilds one of
    them unties them (prune gave `a` and `b` different weights) or counts the tensor twice (lowrank's
    budget grew the model 63 %)."""
    owners: dict[int, list[tuple[str, str]]] = {}
    for name, m in module.named_modules():
        for pname, p in m.named_parameters(recurse=False):
            owners.setdefault(id(p), []).append((name, pname))
    out: dict[str, str] = {}
    for held in owners.values():
        if len({n for n, _ in held}) > 1:
            (first, pname), others = held[0], [n for n, _ in held[1:] if n != held[0][0]]
            for name, _ in held:
                out.setdefault(name, f"{first}.{pname} is shared with {', '.join(others)}")
    return out


def refuse_exported(spec: ModelSpec, who: str = "passes") -> None:
    """A .pt2 model (`ExportedModule`) refused by the passes that find layers to restructure or
    quantize: its program's graph holds no nn.Conv2d / nn.Linear modules, so prune and lowrank
    changed nothing (prune blaming "the classifier, ignored or tied layers"), unstructured pruning
    and resolution failed in torch's words, qat on a `batch` constraint nobody set."""
    from edgecompress.models.exported import ExportedModule

    if isinstance(spec.module, ExportedModule):
        source = Path(spec.source).name if spec.source else spec.name
        raise ConfigError(f"{who}: model {spec.name} is an exported program ({source}), without the nn.Conv2d / "
                          "nn.Linear modules the pass works on; load the model as module:factory (a .pt2 can be "
                          "distilled and exported as it is)")


def pass_module(spec: ModelSpec) -> torch.nn.Module:
    """`spec.module`, which a pass needs (`as_spec` checks it first)."""
    if spec.module is None:
        raise ConfigError(f"model {spec.name}: passes need a PyTorch module (got an ONNX file)")
    return spec.module


@overload
def resolve_dataset(
    spec: ModelSpec, data: DataLike | None, purpose: str, progress: bool = True,
    required: Literal[True] = True,
) -> Dataset: ...
@overload
def resolve_dataset(
    spec: ModelSpec, data: DataLike | None, purpose: str, progress: bool = True, required: bool = True
) -> Dataset | None: ...
def resolve_dataset(
    spec: ModelSpec, data: DataLike | None, purpose: str, progress: bool = True, required: bool = True
) -> Dataset | None:
    from edgecompress.data import DataSpec
    from edgecompress.data.resolve import resolve_data

    if isinstance(data, str):
        data = DataSpec.parse(data)
    ds = resolve_data(spec, data, purpose, progress)
    if required:
        if ds is None:
            raise DataError(
                f"{purpose} data: none given and model {spec.name} has no default "
                f"({say('pass --train', 'pass data=', 'set data.train')})"
            )
        if len(ds) == 0:
            raise DataError(f"{purpose} data {ds.source}: holds no samples")
    return ds


def state_bytes(module: torch.nn.Module, quantized: bool = False) -> int:
    """Bytes of the state_dict; for an int8 (QAT) model, weights count 1 byte per element."""
    total = 0
    seen: set[int] = set()
    for t in module.state_dict().values():
        if id(t) in seen:
            continue
        seen.add(id(t))
        per = t.element_size()
        if quantized and t.is_floating_point() and t.dim() >= 2:
            per = 1  # int8 weights after convert_pt2e (stored as fp32 + q/dq in the graph module)
        total += t.numel() * per
    return total


def model_stats(spec: ModelSpec) -> dict[str, int]:
    """params, MACs (one sample) and state_dict bytes of a spec's module."""
    from edgecompress.models import count_params_macs

    params, macs = count_params_macs(spec)  # a QAT graph: the counts its pass recorded
    quantized = bool(spec.extra.get("quantized"))
    return {"params": params, "macs": macs, "size_bytes": state_bytes(pass_module(spec), quantized)}


def predict(module: Any, data: Dataset, batch: int = 64) -> np.ndarray:
    from edgecompress.targets import reference_outputs

    return reference_outputs(module, data, batch=batch, progress=False)


def evaluate(module: Any, data: Dataset | None, reference: np.ndarray | None = None) -> dict[str, float]:
    """top1 on labelled data; `top1_agreement` with `reference` outputs when given."""
    if data is None:
        return {}
    from edgecompress.targets.metrics import classification_metrics

    out = predict(module, data)
    try:
        m = dict(classification_metrics(out, data.y))
    except DataError as e:
        raise DataError(f"{data.source}: {e}") from None
    if reference is not None and reference.shape == out.shape:
        m["top1_agreement"] = float((reference.argmax(1) == out.argmax(1)).mean())
    return m


def fingerprint(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def module_fingerprint(module: torch.nn.Module) -> str:
    """Cheap identity of a model's weights (shapes and sums) for checkpoint matching."""
    import torch

    h = hashlib.sha256()
    with torch.no_grad():
        for k, v in module.state_dict().items():
            h.update(f"{k}{tuple(v.shape)}{float(v.double().sum()) if v.numel() else 0:.6e}".encode())
    return h.hexdigest()[:12]


def array_fingerprint(*arrays: Any) -> str:
    """Identity of the training data itself (every byte, shape and dtype), for checkpoint matching:
    two sets of the same size must not share a checkpoint."""
    import numpy as np

    h = hashlib.blake2b(digest_size=8)
    for a in arrays:
        if a is None:
            h.update(b"none")
            continue
        a = np.ascontiguousarray(a.numpy() if hasattr(a, "numpy") else a)
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(memoryview(a).cast("B"))  # type: ignore[arg-type]  # numpy types __buffer__ for 3.12+ only
    return h.hexdigest()


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Atomic torch.save of plain tensors / numbers (loadable with weights_only=True)."""
    import torch

    from edgecompress.fileio import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    # through a file object: torch names the archive inside after a path's stem, which is the
    # random temp name, so two identical runs wrote different bytes; a file object gets "archive"
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(payload, f)


def hold_checkpoint_dir(path: Path | None, progress: bool = True) -> contextlib.ExitStack:
    """[issue #7] Lock the directory of checkpoint `path` and remove what a killed run left there.

    A fine-tune SIGKILLed inside `save_checkpoint` leaves its `.tmp-<name>-*` file (atomic_path
    only cleans up after a Python exception). While we hold the directory's flock
    (`fileio.exclusive_dir`, released by the kernel even on SIGKILL) no other edgecompress run
    writes there, so every temp file in it is stale and `fileio.remove_stale_temps` deletes it; a
    second fine-tune into the same directory fails at once instead of racing on the checkpoint.
    Returns the ExitStack that holds the lock (close it when done); an empty one for `path=None`.
    """
    from edgecompress.fileio import ensure_writable_dir, exclusive_dir, remove_stale_temps

    stack = contextlib.ExitStack()
    if path is None:
        return stack
    folder = ensure_writable_dir(Path(path).parent, "checkpoint directory")
    stack.enter_context(exclusive_dir(folder, "checkpoint directory"))
    try:
        removed = remove_stale_temps(folder)
    except BaseException:
        stack.close()
        raise
    if removed and progress:
        print(f"note: removed {len(removed)} stale temp file(s) of a killed run in {folder}", file=sys.stderr)
    return stack


def load_checkpoint(path: Path | None, key: str) -> dict[str, Any] | None:
    """The checkpoint at `path` if it exists and was written for `key`; None otherwise."""
    import torch

    if path is None or not Path(path).is_file():
        return None
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a half-written or foreign file: start over, say so
        print(f"note: ignoring unreadable checkpoint {path} ({type(e).__name__})", file=sys.stderr)
        return None
    if not isinstance(ck, dict) or ck.get("key") != key:
        # said, not silent: a changed recipe restarted training and overwrote the checkpoint
        print(f"note: checkpoint {path} is of another configuration (settings, model or data changed); "
              "training restarts", file=sys.stderr)
        return None
    return ck


def config_dict(config: Any) -> dict[str, Any]:
    """A config as a plain dict (what resolved recipes record); unset deprecated aliases are left out."""
    if not dataclasses.is_dataclass(config):
        return dict(config or {})
    d = dataclasses.asdict(config)  # type: ignore[arg-type]  # a config instance, not its class
    for f in dataclasses.fields(config):
        if f.metadata.get("deprecated_alias") and d.get(f.name) is None:
            d.pop(f.name, None)
    return d
