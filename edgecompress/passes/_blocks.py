"""Whole-block removal (`prune: {method: block}`): drop the shape-preserving blocks whose
removal changes the model's outputs least.

Written here because Torch-Pruning removes channels, not layers. A *block* is a submodule that
the model calls once with one tensor and that returns a tensor of the same shape (a residual
MBConv block, a `conv-bn-relu` of equal width...), holds parameters, and is not a
normalisation layer. Only the outermost such modules count (a block's own layers are not
candidates). Removing one replaces it with `nn.Identity` (a block that holds its own residual,
`x + f(x)`, or a plain block: the input passes through) or with `Zero` (a residual *branch* the
parent adds to its input: `x + f(x)` becomes `x + 0`); both are tried and the one that moves the
outputs less is kept. Each candidate is scored by how much
its removal moves the outputs on a few batches (KL of the softmax for classifiers, 1 - cosine
otherwise), and the cheapest one is removed; repeat (rescoring, because removals interact) until
`blocks` are gone or the params / MACs target is reached.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from edgecompress.errors import ConfigError


@dataclass
class BlockScore:
    name: str
    params: int
    damage: float  # output change when the block alone is removed (lower: cheaper to drop)
    replacement: str = "identity"  # identity | zero


@functools.cache
def _zero_class() -> type:
    from torch import nn

    class Zero(nn.Module):
        """A removed residual branch: a scalar 0 that broadcasts in the parent's `x + f(x)`."""

        def forward(self, x: Any) -> Any:
            return x.new_zeros(())

    return Zero


def _replacement(kind: str) -> Any:
    from torch import nn

    return nn.Identity() if kind == "identity" else _zero_class()()


def _call(module: Any, x: Any) -> Any:
    """The model's first output on `x` (the one the damage is measured on, as validation does)."""
    import torch

    from edgecompress.models.spec import first_output

    if isinstance(x, dict):
        return first_output(module(**{k: torch.from_numpy(v) for k, v in x.items()}))
    return first_output(module(torch.from_numpy(x)))


def find_blocks(module: Any, x: Any) -> list[str]:
    """Names of the outermost removable blocks, in call order (see the module doc)."""
    import torch
    from torch import nn

    norms = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)
    calls: dict[str, int] = {}
    ok: dict[str, bool] = {}
    order: list[str] = []
    handles = []

    def hook(name: str) -> Any:
        def fn(mod: Any, args: tuple, kwargs: dict, out: Any) -> None:
            calls[name] = calls.get(name, 0) + 1
            if name not in ok:
                order.append(name)
            ok[name] = (
                len(args) == 1 and not kwargs and isinstance(args[0], torch.Tensor)
                and isinstance(out, torch.Tensor) and out.shape == args[0].shape
            )
        return fn

    for name, m in module.named_modules():
        if name and not isinstance(m, norms) and any(True for _ in m.parameters()):
            handles.append(m.register_forward_hook(hook(name), with_kwargs=True))
    try:
        with torch.no_grad():
            _call(module.eval(), x)
    finally:
        for h in handles:
            h.remove()
    found = [n for n in order if ok[n] and calls[n] == 1]
    return [n for n in found if not any(n.startswith(p + ".") for p in found if p != n)]


def _replace(module: Any, name: str, new: Any) -> Any:
    parent_name, _, child = name.rpartition(".")
    parent = module.get_submodule(parent_name) if parent_name else module
    old = parent.get_submodule(child)
    setattr(parent, child, new)
    return old


def _damage(module: Any, batches: list[Any], ref: list[Any], classification: bool) -> float:
    import torch
    import torch.nn.functional as F

    from edgecompress.passes.distill import softmax_kl

    total = 0.0
    with torch.no_grad():
        for x, r in zip(batches, ref, strict=True):
            out = _call(module, x).float()
            if out.shape != r.shape:
                raise ValueError(f"output shape {tuple(out.shape)} != {tuple(r.shape)}")
            if classification and out.ndim == 2:
                total += float(softmax_kl(out, r))
            else:
                total += float((1 - F.cosine_similarity(out.flatten(1), r.flatten(1), dim=1)).mean())
    return total / max(len(batches), 1)


def score_blocks(module: Any, names: list[str], batches: list[Any], ref: list[Any],
                 classification: bool) -> list[BlockScore]:
    """Damage of removing each block alone, as Identity or as Zero, whichever is lower (a
    replacement the model cannot run with, or that changes the output shape, does not count);
    the model is restored after each trial."""
    scores = []
    for name in names:
        best: tuple[float, str] = (float("inf"), "identity")
        for kind in ("identity", "zero"):
            old = _replace(module, name, _replacement(kind))
            try:
                d = _damage(module, batches, ref, classification)
            except (RuntimeError, ValueError, IndexError, TypeError):
                d = float("inf")
            finally:
                _replace(module, name, old)
            if d < best[0]:
                best = (d, kind)
        scores.append(BlockScore(name, sum(p.numel() for p in old.parameters()), best[0], best[1]))
    return [sc for sc in scores if sc.damage != float("inf")]


def remove_blocks(module: Any, data: Any, count: int | None, target: float | None, which: int,
                  counter: Any, classification: bool = True, samples: int = 64,
                  batch_size: int = 32) -> dict[str, Any]:
    """Greedily remove the cheapest block until `count` are gone, or until `target` of the
    params (`which` 0) / MACs (1) is removed; `counter(module) -> (params, macs)`."""
    import torch

    n = min(samples, len(data))
    if n == 0:
        raise ConfigError("prune.method block: the scoring data is empty")
    sub = data.take(slice(0, n))
    batches = list(sub.batches(batch_size))
    module.eval()
    with torch.no_grad():
        ref = [_call(module, x).float() for x in batches]
    candidates = find_blocks(module, batches[0])
    if not candidates:
        raise ConfigError("prune.method block: the model has no removable block (a submodule called once "
                          "with one tensor that returns the same shape)")
    base = counter(module)[which]
    removed: list[dict[str, Any]] = []
    while True:
        done = len(removed) >= count if count is not None else 1 - counter(module)[which] / base >= (target or 0)
        if done:
            break
        left = [c for c in candidates if c not in {r["block"] for r in removed}]
        if not left:
            asked = f"{count} asked" if count is not None else \
                f"removing all of them cuts {1 - counter(module)[which] / base:.0%}, short of the target {target:.0%}"
            raise ConfigError(f"prune.blocks: only {len(candidates)} removable blocks in the model "
                              f"({', '.join(candidates)}); {asked}")
        scores = score_blocks(module, left, batches, ref, classification)
        if not scores:
            raise ConfigError(f"prune.blocks: none of the blocks left ({', '.join(left)}) can be removed "
                              "without breaking the model")
        best = min(scores, key=lambda s: s.damage)
        _replace(module, best.name, _replacement(best.replacement))
        removed.append({"block": best.name, "params": best.params, "damage": round(best.damage, 6),
                        "replaced_by": best.replacement, "candidates_scored": len(scores)})
    return {"candidates": candidates, "removed": removed, "scored_on": n,
            "damage_metric": "KL(softmax)" if classification else "1 - cosine"}
