"""Input-resolution scaling: run the same network on smaller images (MobileNet's "resolution
multiplier", one of EfficientNet's three compound-scaling axes).

A convolutional network's MACs scale with the input area, so 192 px instead of 224 px removes
~26 % of them without touching a weight. On EfficientNet-Lite0 (benchmarks/RESULTS-compress.md)
that costs far less top-1 than removing the same MACs by pruning, because the model keeps every
learned filter and only sees coarser pixels. Torch-Pruning, NNCF and torchao have no such pass;
it is ours.

What changes is the input contract: the spec's input shape (square side `size`) and so the data
every later stage loads (the recipe runner re-resolves its data sets at the new side, through the
same preprocessing preset: for `efficientnet-lite` the same centre crop, resampled to `size`).
The weights stay; a model whose padding depends on the input size re-pads itself
(`set_image_size(size)`, e.g. EfficientNet-Lite's TF "SAME" stride-2 convolutions).

Optional repairs, both measured against a teacher that sees the *original* resolution of the same
images (so the student learns to answer at low resolution what the model answered at full):
- `bn_recalib` ("auto"): BatchNorm statistics re-estimated at the new side, kept only if they bring
  the outputs closer to that teacher;
- `finetune_epochs`: KD epochs.
The student gets the same images at the new side: image files are preprocessed again at `size`
(`Dataset.at_side`); tensors, which cannot be, are resized.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from edgecompress.data.datasets import resize_square
from edgecompress.errors import ConfigError, first_line
from edgecompress.passes import PassInfo, register_pass
from edgecompress.passes._common import (
    as_spec,
    check_distill,
    check_range,
    config_dict,
    make_config,
    pass_module,
    resolve_dataset,
)
from edgecompress.passes.distill import (
    DistillConfig,
    finetune,
    named_teacher,
    recalibrate_bn,
    recalibrate_bn_if_closer,
    teacher_module,
)

if TYPE_CHECKING:
    import torch

    from edgecompress.data import DataLike, Dataset
    from edgecompress.models import ModelSpec
    from edgecompress.models.spec import ModelLike, ShapeLike


@dataclass
class ResolutionConfig:
    size: int | None = None  # new square input side in pixels
    target_macs: float | None = None  # or: fraction of MACs to remove (the largest side that does)
    multiple_of: int = 8  # with target_macs: sides tried are multiples of this
    bn_recalib: bool | Literal["auto"] = "auto"
    finetune_epochs: int = 0  # KD epochs at the new side, teacher at the original one
    distill: dict[str, Any] = field(default_factory=dict)  # other DistillConfig keys for those epochs

    def __post_init__(self) -> None:
        check_range("resolution.size", self.size, 1)
        check_range("resolution.target_macs", self.target_macs, 0, 1, lo_open=True, hi_open=True)
        check_range("resolution.multiple_of", self.multiple_of, 1)
        check_range("resolution.finetune_epochs", self.finetune_epochs, 0)
        check_distill("resolution.distill", self.distill)
        if (self.size is None) == (self.target_macs is None):
            raise ConfigError("resolution.size: give either size (pixels) or target_macs (fraction removed)")


class Resized:
    """`module` fed its input resized to `size` (bicubic; antialiased when shrinking). The recipe
    runner wraps the original model in it when it teaches a pass that runs after this one: the
    teacher then sees the small images at the side (and padding) it was built for."""

    def __init__(self, module: torch.nn.Module, size: int) -> None:
        self.module, self.size = module, size

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(resize_square(x, self.size))

    # what `finetune` / `recalibrate_bn*` call on a student (train, eval, parameters, state_dict...)
    def __getattr__(self, name: str) -> Any:
        if name in ("module", "size"):  # not set yet (copy / unpickle): no recursion
            raise AttributeError(name)
        return getattr(self.module, name)


def dataset_at(spec: ModelSpec, data: Any, previous: Dataset | Callable[[], Dataset | None] | None,
               purpose: str, progress: bool = True) -> Dataset | None:
    """`data` loaded again for `spec`'s (new) input side. Image files go through the preprocessing
    preset at that side. Preprocessed tensors (.npy / .npz, zoo arrays), which cannot be, are the
    `previous` Dataset (or what the callable returns) at that side (`Dataset.at_side`: resized,
    and its source says so)."""
    from edgecompress.data import Dataset
    from edgecompress.errors import DataError

    if previous is None:
        return None
    _c, h, w = _image_input(spec)  # (N, C, H, W), as at_side gives it
    if isinstance(data, Dataset):  # in memory, taken as is by resolve_dataset
        return data.at_side((h, w))
    try:
        return resolve_dataset(spec, data, purpose, progress, required=False)
    except DataError:  # tensors stored at the old side: resolve_data refuses the shape mismatch
        import numpy as np

        if callable(previous):
            previous = previous()
        if previous is None or isinstance(previous.x, dict) or np.asarray(previous.x).ndim != 4:
            raise
        return previous.at_side((h, w))


def _image_input(spec: ModelSpec) -> tuple[int, int, int]:
    shape = spec.input_shape
    if len(spec.inputs) != 1 or len(shape) != 4 or not spec.inputs[0].dtype.startswith("float"):
        raise ConfigError(f"resolution: model {spec.name} takes {[tuple(i.shape) for i in spec.inputs]}; "
                          "the pass needs one image input (N, C, H, W)")
    from edgecompress.exporters.base import image_layout

    if image_layout(shape) != "NCHW":  # (1, 224, 224, 3) was read as 224 channels of 224x3
        raise ConfigError(f"resolution: model {spec.name} takes channels-last images {tuple(shape)}; "
                          "the pass scales (N, C, H, W) inputs")
    return int(shape[1]), int(shape[2]), int(shape[3])


def _square_side(spec: ModelSpec) -> int:
    """The side of `spec`'s square (N, C, H, W) input: what the pass scales, refused in one line
    otherwise (crops and MAC counts of a side x side input are not a non-square model's)."""
    _c, h, w = _image_input(spec)
    if h != w:
        raise ConfigError(f"resolution: model {spec.name} takes {h}x{w} (h x w) inputs; the pass scales "
                          "square inputs")
    return h


def at_size(spec: ModelSpec, size: int) -> ModelSpec:
    """`spec` with a square input of side `size`. Re-pads `spec.module` in place if it knows how
    (`set_image_size`), and checks that it runs there with outputs of the same shape: a model with
    a size-bound layer (a flatten into a Linear) is refused in one line, its padding restored."""
    import torch

    from edgecompress.models.spec import InputSpec

    c, h, w = _image_input(spec)
    module = pass_module(spec).eval()
    repad = getattr(module, "set_image_size", None)
    with torch.no_grad():
        before = module(torch.zeros(1, c, h, w))
        if repad is not None:
            repad(size)
        try:
            after = module(torch.zeros(1, c, size, size))
        except Exception as e:
            if repad is not None:
                repad(h)
            first = first_line(e, limit=None)
            raise ConfigError(f"resolution.size {size}: model {spec.name} does not run at {size}x{size} "
                              f"({first}); the pass needs a network that pools over space") from None
    if tuple(before.shape) != tuple(after.shape):
        if repad is not None:
            repad(h)
        raise ConfigError(f"resolution.size {size}: model {spec.name} gives outputs of shape "
                          f"{tuple(after.shape)} at {size}x{size} but {tuple(before.shape)} at {h}x{w}")
    return spec.replace(inputs=[InputSpec((1, c, size, size), spec.inputs[0].name, spec.inputs[0].dtype)])


def size_for_macs(spec: ModelSpec, target: float, multiple_of: int) -> int:
    """The largest side (a multiple of `multiple_of`, below the current one) whose MACs are at most
    (1 - target) of the current model's, counted with Torch-Pruning at each candidate side."""
    from edgecompress.models import count_params_macs

    _c, h, _w = _image_input(spec)
    base = count_params_macs(spec)[1]
    side = (h - 1) // multiple_of * multiple_of
    try:
        while side >= multiple_of:
            if count_params_macs(at_size(spec, side))[1] <= (1 - target) * base:
                return side
            side -= multiple_of
    finally:
        at_size(spec, h)  # the module as it came
    # name the key that changes the answer: the audit's 8 px model had no multiple of 8 below 8
    raise ConfigError(f"resolution.target_macs {target}: no side that is a multiple of {multiple_of} "
                      f"(resolution.multiple_of) removes that much from model {spec.name}; lower multiple_of, "
                      "or give size")


def resolution(model: ModelLike, config: ResolutionConfig | dict | None = None, *, data: DataLike | None = None,
               teacher: ModelSpec | torch.nn.Module | None = None, workdir: Path | str | None = None,
               progress: bool = True, input_shape: ShapeLike | None = None, **overrides: Any) -> ModelSpec:
    """Run `model` at a smaller square input side. `data` (at the model's current side) is needed
    only for `bn_recalib` and `finetune_epochs`. Returns a new spec with the new input shape; load
    evaluation / calibration data for it at that side (`resolve_dataset(new_spec, ...)`)."""
    import torch

    cfg = make_config(ResolutionConfig, config, "resolution", **overrides)
    spec = as_spec(model, input_shape, who="resolution")
    h = w = _square_side(spec)
    if cfg.size is not None:
        size = cfg.size
    elif cfg.target_macs is not None:
        size = size_for_macs(spec, cfg.target_macs, cfg.multiple_of)
    else:  # ResolutionConfig refuses this already
        raise ConfigError("resolution.size: give either size (pixels) or target_macs (fraction removed)")
    if size > h:
        raise ConfigError(f"resolution.size {size}: larger than the model's input side {h} (this pass shrinks)")
    needs_data = cfg.finetune_epochs > 0 or cfg.bn_recalib is True
    # "auto" only compares two sets of statistics: with no data at all (a bare module, no data=)
    # it keeps the model's own, where it failed with "train data: none given"
    wants_data = needs_data or cfg.bn_recalib == "auto"
    ds = resolve_dataset(spec, data, "train", progress, required=needs_data) if wants_data else None
    if ds is not None and isinstance(ds.x, dict):
        raise ConfigError("resolution: bn_recalib / finetune_epochs need image data (one tensor input)")
    teach = teacher_module(teacher, spec) if ds is not None else None
    new = at_size(spec, size)
    log: dict[str, Any] = {"from": h, "to": size, "note": f"input {h}x{w} -> {size}x{size}"}
    if ds is not None:
        # [issue #4] the student sees the images as a deployed model would: read again at `size`.
        # Training on resized tensors taught it blurrier images than it is later evaluated on.
        small = ds.at_side(size)
        log["student_data"] = small.source if small.reload is None else f"{small.source} at {size} px"
    if cfg.finetune_epochs:
        kd = make_config(DistillConfig, cfg.distill, "resolution.distill", epochs=cfg.finetune_epochs,
                         bn_recalib=cfg.bn_recalib)
        ck = Path(workdir) / "checkpoints" / "resolution.pt" if workdir else None
        log["finetune"] = finetune(new.module, teach, small, kd, ck, f"resolution {size}: KD fine-tune", progress,
                                   teacher_data=ds, teacher_named=named_teacher(teacher))
    elif cfg.bn_recalib and ds is None:
        log["bn_recalibrated"] = False
        log["bn_note"] = "no data given: BatchNorm statistics kept"
    elif cfg.bn_recalib and ds is not None:  # (ds is None was the branch above)
        x, tx = torch.from_numpy(small.x), torch.from_numpy(ds.x)
        if cfg.bn_recalib == "auto":
            log.update(recalibrate_bn_if_closer(new.module, teach, x, 32, (len(x) + 31) // 32, teacher_x=tx))
        else:
            log["bn_recalibrated"] = recalibrate_bn(new.module, x, 32, (len(x) + 31) // 32) > 0
    pass_module(new).eval()
    # the model before compression takes the old side: not a teacher a later distill could feed
    new.extra.pop("original", None)
    new.extra.setdefault("passes", []).append({"pass": "resolution", "config": config_dict(cfg), "log": log})
    if progress:
        print(f"resolution: {log['note']}", file=sys.stderr)
    return new


register_pass(PassInfo("resolution", ResolutionConfig, resolution,
                       "input-resolution scaling: the same weights on smaller images (MACs scale with the area)"))
