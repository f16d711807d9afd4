"""Knowledge distillation: the shared fine-tuning objective of every pass.

loss = alpha * T^2 * KL(softmax(t/T) || softmax(s/T))            response-based
     + (1 - alpha) * CE(s, y)                                     only when labels are present
     + feature_weight * sum MSE(proj(f_s), f_t)                   feature-based, learned 1x1 projection
     + relation_weight * MSE(G(s), G(t)), G = cosine Gram matrix  relation-based (batch similarity)

The teacher defaults to the model before the pass, so unlabelled data is enough. `finetune` is
what prune / lowrank / qat call between or after their own steps; `distill` is the pass.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from edgecompress.errors import ConfigError, DataError
from edgecompress.models.spec import first_output
from edgecompress.passes import PassInfo, register_pass
from edgecompress.passes._common import (
    array_fingerprint,
    as_spec,
    check_range,
    config_dict,
    fingerprint,
    hold_checkpoint_dir,
    load_checkpoint,
    make_config,
    module_fingerprint,
    output_count,
    resolve_dataset,
    save_checkpoint,
)

if TYPE_CHECKING:
    import torch

    from edgecompress.data import DataLike, Dataset
    from edgecompress.models import ModelSpec
    from edgecompress.models.spec import ModelLike, ShapeLike


@dataclass
class DistillConfig:
    epochs: int = 2
    lr: float = 1e-3
    batch_size: int = 64
    temperature: float = 4.0
    alpha: float = 0.7  # weight of the KD term; 1 - alpha goes to hard labels when present
    feature_layers: list[str] = field(default_factory=list)  # module names in student and teacher
    feature_weight: float = 1.0
    relation_weight: float = 0.0
    weight_decay: float = 0.0
    shift: int = 1  # random +-shift pixel roll of image batches (cheap augmentation); 0 = off
    hflip: bool = False
    # "Function matching" (Beyer et al., 2022, "Knowledge distillation: A good teacher is patient
    # and consistent"): teacher and student see the same strongly augmented image, so a small data
    # set yields many distinct points of the teacher's function and long schedules stop overfitting.
    # crop: random resized crops covering [crop, 1] of the image area (aspect 3/4..4/3), resized back
    # to the input size; 0 = off. mixup: per-sample mixing ratio ~ Beta(mixup, mixup) with a shuffled
    # copy of the batch; 0 = off (1.0 = uniform ratio). Image batches (N, C, H, W) only.
    crop: float = 0.0
    mixup: float = 0.0
    steps_per_epoch: int | None = None  # cap batches per epoch (large data sets on small CPUs)
    # Re-estimate BatchNorm running stats on the data after training: True, False, or "auto" (keep
    # the re-estimated stats only if they bring the student's eval-mode outputs closer to the
    # teacher's; see `recalibrate_bn_if_closer`).
    bn_recalib: bool | Literal["auto"] = "auto"
    # Keep BatchNorm layers in eval mode while training (running stats used, not updated): for a
    # network that was barely changed and a small data set, batch statistics of a few hundred
    # images pull it away from its trained statistics.
    freeze_bn: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        check_range("distill.epochs", self.epochs, 0)
        check_range("distill.lr", self.lr, 0, lo_open=True)
        # BatchNorm needs two samples a batch: finetune() skips smaller ones, so 1 trained nothing
        check_range("distill.batch_size", self.batch_size, 2)
        check_range("distill.temperature", self.temperature, 0, lo_open=True)
        check_range("distill.alpha", self.alpha, 0, 1)
        check_range("distill.feature_weight", self.feature_weight, 0)
        check_range("distill.relation_weight", self.relation_weight, 0)
        check_range("distill.weight_decay", self.weight_decay, 0)  # AdamW raised a ValueError
        check_range("distill.shift", self.shift, 0)
        check_range("distill.crop", self.crop, 0, 1, hi_open=True)
        check_range("distill.mixup", self.mixup, 0)
        check_range("distill.steps_per_epoch", self.steps_per_epoch, 1)
        # each epoch seeds torch with seed * 1000 + epoch: past 2**32 that overflowed, a traceback
        check_range("distill.seed", self.seed, 0, 2**32 - 1)


def _is_graph_module(m: Any) -> bool:
    import torch

    return isinstance(m, torch.fx.GraphModule)


def _set_mode(m: Any, train: bool) -> None:
    """Prepared PT2E models reject .train()/.eval(): they have their own switch."""
    if _is_graph_module(m):
        from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train

        (move_exported_model_to_train if train else move_exported_model_to_eval)(m)
    else:
        m.train(train)


class _Features:
    """Forward hooks collecting the outputs of named modules."""

    def __init__(self, module: Any, names: list[str], who: str) -> None:
        mods = dict(module.named_modules())
        missing = [n for n in names if n not in mods]
        if missing:
            raise ConfigError(f"distill.feature_layers: {who} has no module {missing[0]!r}")
        self.out: dict[str, Any] = {}
        self.handles = [mods[n].register_forward_hook(self._hook(n)) for n in names]

    def _hook(self, name: str):
        def hook(_m: Any, _i: Any, o: Any) -> None:
            self.out[name] = o[0] if isinstance(o, tuple | list) else o

        return hook

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def _projection(fs: torch.Tensor, ft: torch.Tensor) -> torch.nn.Module:
    from torch import nn

    if fs.dim() == 4:
        return nn.Conv2d(fs.shape[1], ft.shape[1], 1, bias=False)
    return nn.Linear(fs.shape[-1], ft.shape[-1], bias=False)


def _match_space(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """A teacher feature map pooled to the student's spatial size (a teacher at a higher input
    resolution than the student's, e.g. after the resolution pass); else unchanged."""
    import torch.nn.functional as F

    if t.dim() == 4 and s.dim() == 4 and t.shape[-2:] != s.shape[-2:]:
        return F.adaptive_avg_pool2d(t, (s.shape[-2], s.shape[-1]))
    return t


def _relation(z: torch.Tensor) -> torch.Tensor:
    import torch.nn.functional as F

    z = F.normalize(z.reshape(z.shape[0], -1), dim=1)
    return z @ z.t()


def softmax_kl(s: torch.Tensor, t: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(softmax(t / T) || softmax(s / T)), batch mean, scaled by T^2 (Hinton's KD term)."""
    import torch.nn.functional as F

    T = temperature
    return F.kl_div(F.log_softmax(s / T, 1), F.log_softmax(t / T, 1), reduction="batchmean", log_target=True) * T * T


def kd_loss(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None, cfg: DistillConfig) -> torch.Tensor:
    import torch.nn.functional as F

    kd = softmax_kl(s, t, cfg.temperature)
    loss = kd if y is None else cfg.alpha * kd + (1 - cfg.alpha) * F.cross_entropy(s, y)
    if cfg.relation_weight:
        loss = loss + cfg.relation_weight * F.mse_loss(_relation(s), _relation(t))
    return loss


def _random_resized_crop(xb: torch.Tensor, min_area: float, g: torch.Generator) -> torch.Tensor:
    """Per-sample random crop of [min_area, 1] of the area, aspect 3/4..4/3, resized back (bilinear).

    One affine_grid + grid_sample call for the whole batch instead of a per-image loop.
    """
    import torch
    import torch.nn.functional as F

    n = xb.shape[0]
    area = min_area + (1 - min_area) * torch.rand(n, generator=g)
    log_r = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * torch.rand(n, generator=g)
    ratio = torch.exp(log_r)
    sw = torch.sqrt(area * ratio).clamp(max=1.0)  # crop width / image width
    sh = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (1 - sw) * (2 * torch.rand(n, generator=g) - 1)  # centre in [-1 + sw, 1 - sw]
    cy = (1 - sh) * (2 * torch.rand(n, generator=g) - 1)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sw, cx, sh, cy
    grid = F.affine_grid(theta.to(xb.dtype), list(xb.shape), align_corners=False)
    return F.grid_sample(xb, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _augment(
    xb: torch.Tensor, cfg: DistillConfig, g: torch.Generator
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """Augment an image batch. Returns it and, with mixup, (ratio per sample, partner index)."""
    import numpy as np
    import torch

    if xb.dim() != 4 or not xb.is_floating_point():  # integer ids (audit #27) are not images to roll or mix
        return xb, None
    if cfg.shift:
        dy, dx = torch.randint(-cfg.shift, cfg.shift + 1, (2,), generator=g).tolist()
        xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
    if cfg.hflip and torch.rand(1, generator=g).item() < 0.5:
        xb = torch.flip(xb, dims=(3,))
    if cfg.crop:
        xb = _random_resized_crop(xb, cfg.crop, g)
    if not cfg.mixup:
        return xb, None
    # torch's Beta sampler takes no generator; numpy's, seeded from ours, keeps runs reproducible
    rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=g)))
    lam = torch.from_numpy(rng.beta(cfg.mixup, cfg.mixup, xb.shape[0])).to(xb.dtype)
    perm = torch.randperm(xb.shape[0], generator=g)
    lam4 = lam.view(-1, 1, 1, 1)
    return lam4 * xb + (1 - lam4) * xb[perm], (lam, perm)


def _mix_labels(yb: torch.Tensor, mix: tuple[torch.Tensor, torch.Tensor], num_classes: int) -> torch.Tensor:
    """Hard labels of a mixed batch as class probabilities (cross_entropy takes them)."""
    import torch.nn.functional as F

    lam, perm = mix
    oh = F.one_hot(yb, num_classes).to(lam.dtype)
    return lam.view(-1, 1) * oh + (1 - lam.view(-1, 1)) * oh[perm]


def recalibrate_bn(module: Any, x: torch.Tensor, batch_size: int, max_batches: int) -> int:
    """Re-estimate every BatchNorm's running mean/var as a plain average over `x` (train-mode
    forward, no gradients); returns the number of BatchNorm layers reset.

    [issue #4] A short fine-tune leaves the running stats of a pruned network stale: with
    EfficientNet's BN momentum 0.01, 16 steps move them only 15 % of the way, so eval-mode outputs
    use pre-pruning statistics (pruned -20 % MACs + 1 KD epoch: 3 % top-1 before, 38 % after this
    on 100 eval images). Skipped for PT2E graphs (no BatchNorm modules to reset).
    """
    import torch
    from torch import nn

    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns or _is_graph_module(module):
        return 0
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    module.train()
    try:
        with torch.no_grad():
            for b in range(max_batches):
                xb = x[b * batch_size : (b + 1) * batch_size]
                if len(xb) < 2:
                    break
                module(xb)
    finally:
        for m, mom in zip(bns, momenta, strict=True):
            m.momentum = mom
        module.eval()
    return len(bns)


def _teacher_gap(student: Any, t_out: list[Any], xs: list[Any]) -> float:
    """Mean KL(teacher || student) of softmax outputs (2-D logits), else mean squared error."""
    import torch
    import torch.nn.functional as F

    total = 0.0
    with torch.no_grad():
        for xb, t in zip(xs, t_out, strict=True):
            o = first_output(student(xb)).float()
            if o.ndim == 2:
                total += float(softmax_kl(o, t))
            else:
                total += float(F.mse_loss(o, t))
    return total / max(len(xs), 1)


def recalibrate_bn_if_closer(student: Any, teacher: Any, x: torch.Tensor, batch_size: int, max_batches: int,
                             probe: int = 256, teacher_x: torch.Tensor | None = None) -> dict[str, Any]:
    """`recalibrate_bn`, kept only if it lowers the gap to the teacher (eval mode, on the first
    `probe` samples of `x`); otherwise the previous running stats are restored. `teacher_x`: the
    teacher's view of the same samples (e.g. at the original resolution), default `x`.

    With enough data (`len(x) >= 2 * batch_size + probe'`, probe' = min(probe, len(x) // 2)) the
    candidate statistics are estimated on the samples *after* the probe ones, so the comparison is
    made on images they were not fitted to; if they win, the final statistics come from all of `x`.
    Judged on their own estimation images, re-estimated statistics looked better than they were:
    EfficientNet-Lite0 at 160 px after a KD epoch took them and fell from ~78 % to 67 % top-1
    (benchmarks/RESULTS-compress.md, resolution section).

    [issue #4] Re-estimation rescues a heavily pruned network (stale stats: -20 % MACs, 1 -> 53 %
    top-1) but hurts one that was barely changed: EfficientNet-Lite0 with one residual block
    removed scored 86.8 % as is and 82.4 % after re-estimating on the 500 distillation images (its
    own stats come from ImageNet training; 500 centre crops are a worse estimate). The teacher
    keeps its stats, so the gap to it says which set serves the student better, without labels.
    """
    import torch
    from torch import nn

    # Any: tracking BatchNorms have their running_* tensors, which torch types Optional
    bns: list[Any] = [m for m in student.modules()
                      if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns or _is_graph_module(student):
        return {"bn_recalibrated": False}
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in bns]
    n_probe = min(probe, len(x) // 2)
    held_out = len(x) - n_probe >= 2 * batch_size and n_probe >= 2
    if not held_out:
        n_probe = min(probe, len(x))
    xs = [x[i : i + batch_size] for i in range(0, n_probe, batch_size)]
    tx = x if teacher_x is None else teacher_x
    student.eval()
    with torch.no_grad():
        t_out = [first_output(teacher(tx[i : i + batch_size])).float() for i in range(0, n_probe, batch_size)]
    before = _teacher_gap(student, t_out, xs)
    recalibrate_bn(student, x[n_probe:] if held_out else x, batch_size, max_batches)
    after = _teacher_gap(student, t_out, xs)
    if after > before:
        with torch.no_grad():
            for m, (mean, var, n) in zip(bns, saved, strict=True):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(n)
    elif held_out:
        recalibrate_bn(student, x, batch_size, max_batches)
    return {"bn_recalibrated": after <= before, "bn_gap_kept_stats": round(before, 6),
            "bn_gap_reestimated": round(after, 6), "bn_probe": f"{n_probe} samples" + (
                ", held out of the estimate" if held_out else ", also in the estimate")}


def _restores_teacher_mode(fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """The teacher runs in eval mode; a caller's module in train mode gets its mode back."""
    import functools

    from edgecompress.models.modes import kept_modes

    @functools.wraps(fn)
    def run(student: Any, teacher: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        was_training = bool(getattr(teacher, "training", False))
        # every submodule's flag (a BatchNorm the caller froze stays frozen); a PT2E graph's mode
        # is its graph, switched back with its own call
        with kept_modes(teacher if teacher is not student else None):
            try:
                return fn(student, teacher, *args, **kwargs)
            finally:
                if was_training and teacher is not student and _is_graph_module(teacher):
                    _set_mode(teacher, True)

    return run


# A pass's `teacher` is the caller's own network, or a version of the model: the pass's default
# (the model before it, or before compression) and every teacher a recipe hands over
# (options.teacher: the original or the previous model; the user named none). The label check
# names the first "the teacher"; for the others that read as an unknown network.
_RECIPE_TEACHER: ContextVar[bool] = ContextVar("edgecompress_recipe_teacher", default=False)


@contextlib.contextmanager
def recipe_teacher() -> Iterator[None]:
    """Inside the block a pass's `teacher` is the recipe's pick, a version of the model."""
    token = _RECIPE_TEACHER.set(True)
    try:
        yield
    finally:
        _RECIPE_TEACHER.reset(token)


def named_teacher(teacher: Any) -> bool:
    """Whether a pass's `teacher` argument is a network the caller named (not the model itself)."""
    return teacher is not None and not _RECIPE_TEACHER.get()


@_restores_teacher_mode
def finetune(
    student: Any,
    teacher: Any,
    data: Dataset,
    cfg: DistillConfig,
    checkpoint: Path | None = None,
    desc: str = "distill",
    progress: bool = True,
    on_epoch: Callable[[int, float], None] | None = None,
    teacher_data: Dataset | None = None,
    teacher_named: bool = False,
) -> dict[str, Any]:
    """Train `student` in place toward `teacher` (and labels, if `data` has them).

    `teacher_named`: the teacher is a network the caller named (`named_teacher`), which errors
    call "the teacher"; else it is a version of the model, "the model".

    `teacher_data`: the teacher's view of the same samples, in the same order (the resolution
    pass: the images at the original side, `data` at the new one); augmented with the same random
    draws (flip, crop window, mixup partners) as the student's batch. Default: `data`.

    With `checkpoint`, state is saved after every epoch and a matching checkpoint resumes the run
    (a finished one skips training). `on_epoch(epoch, mean loss)` is called after every epoch with
    the student in eval mode (learning curves). Returns a small log: epochs run, last loss, resumed
    from. Dropout draws from torch's global generator, seeded from `cfg.seed` (each epoch) inside
    `fork_rng`: the same config gives the same student, and the caller's random stream is untouched.
    """
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return _finetune(student, teacher, data, cfg, checkpoint, desc, progress, on_epoch, teacher_data,
                         teacher_named)


def _finetune(
    student: Any, teacher: Any, data: Dataset, cfg: DistillConfig, checkpoint: Path | None, desc: str,
    progress: bool, on_epoch: Callable[[int, float], None] | None, teacher_data: Dataset | None,
    teacher_named: bool,
) -> dict[str, Any]:
    import numpy as np
    import torch
    import torch.nn.functional as F

    if cfg.epochs == 0 or len(data) == 0:
        return {"epochs": 0}
    if isinstance(data.x, dict):
        raise ConfigError("distill: multi-input models are not supported by the fine-tuning loop yet")
    x_all = torch.from_numpy(np.ascontiguousarray(data.x))
    y_all = torch.from_numpy(np.asarray(data.y)).long() if data.y is not None else None
    n = len(x_all)
    if n < 2:  # no batch of two can be formed: every step was skipped and the log claimed the epochs
        raise DataError(f"{desc}: training data {data.source} holds {n} sample; fine-tuning needs at least 2")
    t_all = None
    if teacher_data is not None:
        if isinstance(teacher_data.x, dict) or len(teacher_data) != n:
            raise ConfigError(f"{desc}: teacher_data must be one tensor of {n} samples, like data")
        t_all = torch.from_numpy(np.ascontiguousarray(teacher_data.x))
    per_epoch = math.ceil(n / cfg.batch_size)
    if cfg.steps_per_epoch:
        per_epoch = min(per_epoch, cfg.steps_per_epoch)
    graph = _is_graph_module(student)
    feats = [] if graph else list(cfg.feature_layers)
    if graph and cfg.feature_layers:
        print("note: distill.feature_layers ignored for a PT2E (QAT) model; response KD only", file=sys.stderr)
    teacher_cpu = teacher
    _set_mode(teacher_cpu, False)
    if y_all is not None and n:  # a label beyond the outputs failed deep in the loss (IndexError)
        with torch.no_grad():
            classes = first_output(teacher_cpu((x_all if t_all is None else t_all)[:2])).shape[-1]
        if int(y_all.max()) >= classes:
            # the outputs counted are the teacher's: "the model" alone misled when a separate
            # teacher was given, "the teacher" alone when the user never named one (the default)
            who = "the teacher" if teacher_named else "the model (the teacher by default)"
            raise DataError(f"{desc}: labels of {data.source} go up to class {int(y_all.max())} but {who} "
                            f"has {classes} outputs")
    hs = _Features(student, feats, "student") if feats else None
    ht = _Features(teacher_cpu, feats, "teacher") if feats else None
    projs = torch.nn.ModuleDict()
    bn_log: dict[str, Any] = {"bn_recalibrated": False}
    ck_dir = hold_checkpoint_dir(checkpoint, progress)  # locked until the finally below
    try:
        if feats:  # build the projections from one batch so the optimizer sees them
            with torch.no_grad():
                _set_mode(student, False)
                student(x_all[:2])
                teacher_cpu((x_all if t_all is None else t_all)[:2])
            assert hs is not None and ht is not None  # hooked above whenever feats is set
            for name in feats:
                projs[name.replace(".", "_")] = _projection(hs.out[name], ht.out[name])
        params = [p for p in student.parameters() if p.requires_grad] + list(projs.parameters())
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.epochs * per_epoch))
        # The teacher and the data belong to the key: a finished checkpoint of another teacher or
        # of other samples (same count) was taken as this run's result, with no training.
        key = fingerprint(desc, config_dict(cfg), module_fingerprint(student), n, module_fingerprint(teacher_cpu),
                          array_fingerprint(x_all, y_all, t_all))
        start = 0
        ck = load_checkpoint(checkpoint, key)
        if ck is not None:
            try:
                student.load_state_dict(ck["model"])
                projs.load_state_dict(ck["proj"])
                opt.load_state_dict(ck["opt"])
                sched.load_state_dict(ck["sched"])
                start = int(ck["epoch"])
                if progress:
                    print(f"{desc}: resuming from {checkpoint} (epoch {start}/{cfg.epochs})", file=sys.stderr)
            except (RuntimeError, KeyError, ValueError) as e:
                print(
                    f"note: checkpoint {checkpoint} does not fit ({type(e).__name__}); starting over", file=sys.stderr
                )
                start = 0
        bar = None
        if progress and start < cfg.epochs:
            from edgecompress.progress import bar as progress_bar

            bar = progress_bar(total=(cfg.epochs - start) * per_epoch, desc=desc, unit="batch", leave=False)
        last = float("nan")
        noted = False
        for epoch in range(start, cfg.epochs):
            _set_mode(student, True)
            if cfg.freeze_bn and not graph:
                for m in student.modules():
                    if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                        m.eval()
            g = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
            torch.manual_seed(cfg.seed * 1000 + epoch)  # dropout's draws: a resumed run repeats them too
            perm = torch.randperm(n, generator=g)
            running, count = 0.0, 0
            for b in range(per_epoch):
                idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
                if len(idx) < 2:
                    continue  # BatchNorm needs more than one sample
                if t_all is None:
                    xb, mix = _augment(x_all[idx], cfg, g)
                    xt = xb
                else:  # the teacher's view gets the same draws: a copy of the generator
                    g_t = torch.Generator()
                    g_t.set_state(g.get_state())
                    xb, mix = _augment(x_all[idx], cfg, g)
                    xt, _ = _augment(t_all[idx], cfg, g_t)
                yb = y_all[idx] if y_all is not None else None
                with torch.no_grad():
                    t_out = teacher_cpu(xt)  # the student's augmented batch: consistent teaching
                if not noted and output_count(t_out) > 1:  # the other outputs move only through shared layers
                    print(f"note: {desc}: the teacher gives {output_count(t_out)} outputs; the KD loss is of the "
                          "first (what accuracy and agreement measure)", file=sys.stderr)
                noted = True
                t_out = first_output(t_out)
                if mix is not None and yb is not None:
                    yb = _mix_labels(yb, mix, t_out.shape[-1])
                s_out = first_output(student(xb))
                if t_out.shape[-1:] != s_out.shape[-1:]:  # unlabelled, it was a raw RuntimeError in the loss
                    raise ConfigError(f"{desc}: the teacher gives {t_out.shape[-1]} outputs and the student "
                                      f"{s_out.shape[-1]}; distillation needs the same outputs")
                loss = kd_loss(s_out, t_out, yb, cfg)
                for name in feats:
                    assert hs is not None and ht is not None  # (as above)
                    proj = projs[name.replace(".", "_")]
                    loss = loss + cfg.feature_weight * F.mse_loss(proj(hs.out[name]),
                                                                  _match_space(ht.out[name], hs.out[name]))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                running += loss.item()
                count += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(epoch=epoch + 1, loss=f"{running / max(count, 1):.4f}")
            last = running / max(count, 1)
            _set_mode(student, False)
            if checkpoint is not None:
                save_checkpoint(
                    checkpoint,
                    {
                        "key": key,
                        "epoch": epoch + 1,
                        "model": student.state_dict(),
                        "proj": projs.state_dict(),
                        "opt": opt.state_dict(),
                        "sched": sched.state_dict(),
                        "loss": last,
                    },
                )
            if on_epoch is not None:
                on_epoch(epoch + 1, last)
        if bar is not None:
            bar.close()
        # also after a resumed (already finished) run: same data, same result
        if cfg.bn_recalib == "auto":
            bn_log = recalibrate_bn_if_closer(student, teacher_cpu, x_all, cfg.batch_size, per_epoch, teacher_x=t_all)
        elif cfg.bn_recalib:
            bn_log = {"bn_recalibrated": recalibrate_bn(student, x_all, cfg.batch_size, per_epoch) > 0}
    finally:
        for h in (hs, ht):
            if h is not None:
                h.close()
        _set_mode(student, False)
        ck_dir.close()
    return {"epochs": cfg.epochs, "resumed_from_epoch": start, "last_loss": last if start < cfg.epochs else None,
            **bn_log}


def teacher_module(teacher: Any, spec: ModelSpec) -> Any:
    """The teacher as a module: a ModelSpec's module, a module, or (None) a frozen copy of `spec`."""
    import copy

    import torch

    from edgecompress.models import ModelSpec

    if teacher is None:
        return copy.deepcopy(spec.module)
    module = teacher.module if isinstance(teacher, ModelSpec) else teacher
    # teacher="zoo:..." failed with AttributeError; a module-like wrapper (resolution.Resized) is fine
    if not (isinstance(module, torch.nn.Module) or (callable(module) and hasattr(module, "state_dict"))):
        raise ConfigError(f"teacher: expected a ModelSpec or a torch.nn.Module, got {type(teacher).__name__} "
                          "(load a model reference with edgecompress.load_model first)")
    return module


def distill(
    model: ModelLike,
    config: DistillConfig | dict | None = None,
    *,
    data: DataLike | None = None,
    teacher: ModelSpec | torch.nn.Module | None = None,
    workdir: Path | str | None = None,
    progress: bool = True,
    input_shape: ShapeLike | None = None,
    **overrides: Any,
) -> ModelSpec:
    """Fine-tune `model` toward `teacher` with the KD loss. Default teacher: the model before the
    first compression pass (prune, lowrank, resolution record it), else `model` as it is now.

    `data`: Dataset, DataSpec, 'PATH[start:stop]' or None (the model's default calibration set).
    Returns a new ModelSpec; the input is not modified.
    """
    cfg = make_config(DistillConfig, config, "distill", **overrides)
    # a .pt2 program trains too: KD only updates its weights (its BatchNorms stay as exported, in eval mode)
    spec = as_spec(model, input_shape, who="distill", exported_ok=True)
    # default: the model before compression (README), which the passes before this one recorded;
    # a model no pass compressed yet teaches itself (a frozen copy)
    original = spec.extra.get("original")
    t = teacher_module(teacher if teacher is not None or original is None or original is spec.module
                       else original, spec)
    ds = resolve_dataset(spec, data, "train", progress)
    ck = Path(workdir) / "checkpoints" / "distill.pt" if workdir else None
    log = finetune(spec.module, t, ds, cfg, ck, "distill", progress, teacher_named=named_teacher(teacher))
    log["teacher"] = ("given" if teacher is not None else "the model before compression"
                      if t is original and original is not spec.module else "itself (no pass compressed it)")
    spec.extra.setdefault("passes", []).append({"pass": "distill", "config": config_dict(cfg), "log": log})
    return spec


register_pass(
    PassInfo(
        "distill",
        DistillConfig,
        distill,
        "fine-tune with KD: response (KL, temperature) + labels, feature MSE, relation",
    )
)
