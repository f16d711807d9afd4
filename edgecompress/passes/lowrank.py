"""Low-rank factorization: SVD of Linear and (groups=1) Conv2d layers into two smaller layers.

Linear(in, out) -> Linear(in, r, no bias) + Linear(r, out); Conv2d(in, out, k) -> Conv2d(in, r, k,
same stride/padding, no bias) + Conv2d(r, out, 1). Rank per layer: the smallest r keeping `energy`
of the squared singular values, or a fixed `rank`, or -- with `param_budget` -- the energy is
found by bisection so the whole model keeps that fraction of its parameters. A layer is left
alone when the factorization saves less than `min_saving` (10 %) of its weights: r * (in*k*k +
out) > (1 - min_saving) * out * in*k*k.
The replacement is an nn.Sequential at the same name, so feature-KD layer names still resolve.
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecompress.errors import ConfigError
from edgecompress.passes import PassInfo, register_pass
from edgecompress.passes._common import (
    as_spec,
    check_distill,
    check_range,
    config_dict,
    make_config,
    pass_module,
    resolve_dataset,
    shared_weights,
)
from edgecompress.passes.distill import DistillConfig, finetune, named_teacher, teacher_module

if TYPE_CHECKING:
    import torch

    from edgecompress.data import DataLike
    from edgecompress.models import ModelSpec
    from edgecompress.models.spec import ModelLike, ShapeLike


@dataclass
class LowRankConfig:
    # fraction of squared singular values kept per layer: 0.9 unless rank or param_budget decides
    # (then None; with param_budget the bisection finds the energy, log `energy_found`)
    energy: float | None = None
    rank: int | None = None  # fixed rank for every layer (overrides energy)
    param_budget: float | None = None  # fraction of the model's params to keep (0.6 = -40 %)
    ignored: list[str] = field(default_factory=list)
    convs: bool = True  # also factorize groups=1 convolutions
    min_rank: int = 1
    # a layer is factorized only when that saves at least this fraction of its weights: a stem conv
    # at rank 7 of 9 saved one parameter of 288, added a layer, and cost a third of the decisions
    min_saving: float = 0.1
    finetune_epochs: int = 0
    distill: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.energy is not None and self.param_budget is not None:
            # the bisection found its own energy and the resolved recipe claimed this one was used
            raise ConfigError("lowrank.energy: give energy or param_budget, not both")
        if self.rank is not None and self.param_budget is not None:  # param_budget won, silently
            raise ConfigError("lowrank.rank: give rank or param_budget, not both")
        if self.energy is None and self.param_budget is None and self.rank is None:
            self.energy = 0.9  # the default, written into resolved recipes
        check_range("lowrank.energy", self.energy, 0, 1, lo_open=True)
        check_range("lowrank.rank", self.rank, 1)
        check_range("lowrank.param_budget", self.param_budget, 0, 1, lo_open=True, hi_open=True)
        check_range("lowrank.min_rank", self.min_rank, 1)
        check_range("lowrank.min_saving", self.min_saving, 0, 1, hi_open=True)
        check_distill("lowrank.distill", self.distill)
        check_range("lowrank.finetune_epochs", self.finetune_epochs, 0)


def _candidates(module: Any, cfg: LowRankConfig, tied: dict[str, str] | None = None) -> list[tuple[str, Any]]:
    """The layers to factorize: not ignored (a container name covers the layers inside it, as in
    prune.ignored), not holding a weight shared with another module (`tied`, `shared_weights`)."""
    from torch import nn

    names = dict(module.named_modules())
    for n in cfg.ignored:
        if n not in names:
            raise ConfigError(f"lowrank.ignored: model has no module {n!r}")
    out = []
    for name, m in module.named_modules():
        if any(name == n or name.startswith(n + ".") for n in cfg.ignored if n) or name in (tied or {}):
            continue
        if type(m) is nn.Linear or (cfg.convs and isinstance(m, nn.Conv2d) and m.groups == 1
                                    and m.weight.shape[1] * m.weight.shape[2] * m.weight.shape[3] > 1):
            out.append((name, m))
    return out


def _svd(m: Any) -> tuple[Any, Any, Any]:
    import torch

    w = m.weight.detach().reshape(m.weight.shape[0], -1).double()
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    return u, s, vh


def _rank_for(s: Any, energy: float, min_rank: int) -> int:
    import torch

    e = torch.cumsum(s**2, 0) / (s**2).sum()
    r = int(torch.searchsorted(e, torch.tensor(energy, dtype=e.dtype)).item()) + 1
    return max(min_rank, min(r, len(s)))


def _saves(m: Any, r: int, min_saving: float = 0.0) -> bool:
    """Rank r saves parameters, and at least `min_saving` of the layer's weights."""
    out, fan_in = m.weight.shape[0], m.weight[0].numel()
    after, before = r * (fan_in + out), out * fan_in
    return after < before and after <= (1 - min_saving) * before


def _factor(m: Any, u: Any, s: Any, vh: Any, r: int) -> Any:
    import torch
    from torch import nn

    us = (u[:, :r] * s[:r]).float()
    v = vh[:r].float()
    second: nn.Linear | nn.Conv2d
    if isinstance(m, nn.Linear):
        first = nn.Linear(m.in_features, r, bias=False)
        second = nn.Linear(r, m.out_features, bias=m.bias is not None)
        first.weight.data.copy_(v)
        second.weight.data.copy_(us)
    else:
        # deepcopy keeps stride / padding / dilation and any subclass behaviour (e.g. TF "same" pad)
        first = copy.deepcopy(m)
        first.out_channels = r
        first.weight = nn.Parameter(v.reshape(r, *m.weight.shape[1:]).contiguous())
        first.bias = None
        second = nn.Conv2d(r, m.out_channels, 1, bias=m.bias is not None)
        second.weight.data.copy_(us.reshape(m.out_channels, r, 1, 1))
    if m.bias is not None:
        with torch.no_grad():
            second.bias.copy_(m.bias)  # type: ignore[union-attr]  # made with bias=True above
    return nn.Sequential(first, second)


def _plan(layers: list[tuple[str, Any, tuple]], energy: float | None, rank: int | None,
          min_rank: int, min_saving: float = 0.0) -> dict[str, int]:
    plan = {}
    for name, m, (_u, s, _vh) in layers:
        r = rank if rank is not None else _rank_for(s, energy or 1.0, min_rank)
        r = min(r, len(s))
        if _saves(m, r, min_saving):
            plan[name] = r
    return plan


def _params_after(total: int, layers: list[tuple[str, Any, tuple]], plan: dict[str, int]) -> int:
    p = total
    for name, m, _ in layers:
        if name in plan:
            out, fan_in = m.weight.shape[0], m.weight[0].numel()
            p += plan[name] * (fan_in + out) - out * fan_in
    return p


def _set(module: Any, name: str, new: Any) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = module.get_submodule(parent_name) if parent_name else module
    setattr(parent, attr, new)


def _nothing_note(layers: list[tuple[str, Any, tuple]], cfg: LowRankConfig) -> str:
    """Why no layer was factorized: none to factorize, ranks that save no parameters, or savings
    below `min_saving` (named when it is what kept a layer whole)."""
    if not layers:
        return "lowrank: no layer factorized (no Linear or groups=1 Conv2d layer outside ignored / tied ones)"
    how = f"rank {cfg.rank}" if cfg.rank is not None else f"energy {cfg.energy}'s rank"
    none_saved: list[str] = []
    too_little: list[str] = []
    for name, m, (_u, s, _vh) in layers:
        r = min(cfg.rank if cfg.rank is not None else _rank_for(s, cfg.energy or 1.0, cfg.min_rank), len(s))
        (too_little if _saves(m, r) else none_saved).append(name)

    def names(ns: list[str]) -> str:
        return ", ".join(ns[:4]) + (", ..." if len(ns) > 4 else "")

    why = []
    if none_saved:
        why.append(f"{how} saves no parameters in {names(none_saved)}")
    if too_little:
        why.append(f"{how} saves less than min_saving {cfg.min_saving} of the weights of {names(too_little)} "
                   "(lower lowrank.min_saving to factorize them)")
    return f"lowrank: no layer factorized ({'; '.join(why)})"


def lowrank(model: ModelLike, config: LowRankConfig | dict | None = None, *, data: DataLike | None = None,
            teacher: ModelSpec | torch.nn.Module | None = None, workdir: Path | str | None = None,
            progress: bool = True, input_shape: ShapeLike | None = None, **overrides: Any) -> ModelSpec:
    """Factorize Linear / conv layers of `model` by SVD; returns a new spec (same input contract)."""
    from torch import nn

    cfg = make_config(LowRankConfig, config, "lowrank", **overrides)
    spec = as_spec(model, input_shape, who="lowrank")
    module = pass_module(spec).eval()
    teach = teacher_module(teacher, spec) if cfg.finetune_epochs else None
    # tied weights are left whole: factorizing each user made two copies of one tensor, and the
    # budget counted its saving twice (param_budget 0.9 gave 1.63x the parameters)
    tied = shared_weights(module)
    layers = [(n, m, _svd(m)) for n, m in _candidates(module, cfg, tied)]
    total = sum(p.numel() for p in module.parameters())  # a shared tensor counts once
    log: dict[str, Any] = {}
    kinds = (nn.Linear, nn.Conv2d)
    log["warnings"] = [f"{why}: left whole" for why in dict.fromkeys(
        why for n, why in tied.items() if isinstance(module.get_submodule(n), kinds))]
    for w in log["warnings"]:
        print(f"note: {w}", file=sys.stderr)
    if cfg.param_budget is not None:
        goal = cfg.param_budget * total
        lo, hi = 0.0, 1.0
        plan = _plan(layers, 1.0, None, cfg.min_rank, cfg.min_saving)
        best = None
        for _ in range(30):
            mid = (lo + hi) / 2
            plan = _plan(layers, mid, None, cfg.min_rank, cfg.min_saving)
            if _params_after(total, layers, plan) <= goal:
                best, lo = (mid, plan), mid
            else:
                hi = mid
        if best is None:
            least = _params_after(total, layers, _plan(layers, 1e-9, None, cfg.min_rank, cfg.min_saving))
            raise ConfigError(f"lowrank.param_budget: {cfg.param_budget} cannot be reached by "
                              f"factorizing {len(layers)} layers (min is {least / total:.2f})")
        log["energy_found"] = round(best[0], 4)
        plan = best[1]
    else:
        plan = _plan(layers, cfg.energy, cfg.rank, cfg.min_rank, cfg.min_saving)
    import torch

    # the new layers draw their (overwritten) initial weights from torch's stream: the caller's
    # stream advanced with every lowrank call, the only pass that moved it
    with torch.random.fork_rng(devices=[]):
        for name, m, (u, s, vh) in layers:
            if name in plan:
                _set(module, name, _factor(m, u, s, vh, plan[name]))
    log["ranks"] = plan
    log["skipped"] = [n for n, _, _ in layers if n not in plan]
    if not plan:  # said, as prune's "nothing pruned": the model came back unchanged without a word
        log["warnings"].append(_nothing_note(layers, cfg))
        print(f"note: {log['warnings'][-1]}", file=sys.stderr)
    if cfg.finetune_epochs:
        ds = resolve_dataset(spec, data, "train", progress)
        kd = make_config(DistillConfig, cfg.distill, "lowrank.distill", epochs=cfg.finetune_epochs)
        ck = Path(workdir) / "checkpoints" / "lowrank.pt" if workdir else None
        log["finetune"] = finetune(module, teach, ds, kd, ck, "lowrank: KD fine-tune", progress,
                                   teacher_named=named_teacher(teacher))
    spec.module = module.eval()
    spec.extra.setdefault("passes", []).append({"pass": "lowrank", "config": config_dict(cfg), "log": log})
    if progress:
        print(f"lowrank: factorized {len(plan)} layers, left {len(log['skipped'])} alone", file=sys.stderr)
    return spec


register_pass(PassInfo("lowrank", LowRankConfig, lowrank,
                       "SVD factorization of Linear / conv layers (energy, rank or param budget)",
                       structural=True))
