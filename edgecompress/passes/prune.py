"""Structured channel pruning with Torch-Pruning's dependency graph (residual and depthwise
groups are pruned together), or unstructured magnitude pruning as an option.

- `ratio`: fraction of channels removed in every prunable layer (or overall with
  `global_pruning`); `per_layer` overrides it by module name.
- `target_macs` / `target_params`: fraction of MACs / params to remove instead; the channel
  ratio that reaches it is found by bisection on copies of the model.
- `importance`: magnitude (L2 of the group), taylor (|w * grad| on a few training batches) or
  bn-scale (|gamma| of the following BatchNorm). `round_to` keeps channel counts multiples of N
  (rounded to the nearest multiple, never below N; see `_kept`). No layer loses more than
  `max_layer_ratio`, with `global_pruning` too (`_CappedImportance`); what a ratio cannot do as
  asked is a note in the log (`warnings`).
- `ignore_stem` / `ignore_head` keep the first convolution and the last one before the classifier
  whole (Conv2d or Conv1d; the classifier itself is always kept), first and last in the order they
  run on the example input, not the order the model registers them in; the EfficientNet-Lite0
  recipe turns both on.
- `steps` > 1 prunes iteratively, fine-tuning with the KD objective (`finetune_epochs`) after
  every step; the teacher is the model before the pass.
- `method: block` removes whole shape-preserving blocks (e.g. residual MBConv blocks), the ones
  whose removal moves the outputs least on a few training batches: `blocks: N`, or until
  `target_params` / `target_macs` is reached (`_blocks.py`; Torch-Pruning has no block removal).
- `method: reconstruct` prunes the channels of every *chain* (a layer whose channels reach one
  1x1 conv or linear layer: an MBConv block's expanded channels, a Conv1d before the classifier)
  and refits that consumer by least squares on `samples` training images, so little accuracy is
  lost before any fine-tuning (`_reconstruct.py`; Torch-Pruning neither picks channels by the
  consumer's reconstruction error nor refits). With `ratio` every chain loses that fraction; with
  `target_macs` / `target_params` each chain's sensitivity is measured on `probe_samples` images
  and the channels are taken where they cost least, in `rounds` steps that each measure the model
  pruned so far.
- `method: unstructured` zeroes the smallest weights globally. It shrinks nothing on disk or in
  MACs unless the format stores sparsity, and the record says so (params/MACs unchanged,
  `nonzero` given separately).
"""

from __future__ import annotations

import copy
import sys
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from edgecompress.errors import ConfigError
from edgecompress.models.spec import first_output
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
    from torch import nn

    from edgecompress.data import DataLike
    from edgecompress.models import ModelSpec
    from edgecompress.models.spec import ModelLike, ShapeLike


class _Default(float):
    """A default told apart from the same number written by the user: `ratio` given together
    with a target was silently dropped, and a default 0.5 looks like a written 0.5."""


@dataclass
class PruneConfig:
    ratio: float | None = _Default(0.5)  # 0.5 unless a target decides (then None)
    target_macs: float | None = None  # fraction of MACs to remove (0.3 = -30 %)
    target_params: float | None = None  # fraction of params to remove
    per_layer: dict[str, float] = field(default_factory=dict)
    importance: Literal["magnitude", "taylor", "bn-scale"] = "magnitude"
    global_pruning: bool = False
    round_to: int | None = None
    ignored: list[str] = field(default_factory=list)  # module names kept whole (classifier always)
    ignore_stem: bool = False  # keep the first Conv2d / Conv1d to run whole (with everything coupled to it)
    ignore_head: bool = False  # keep the last Conv2d / Conv1d to run before the classifier whole (e.g. a 1280 head)
    max_layer_ratio: float = 0.9
    steps: int = 1
    method: Literal["channel", "unstructured", "block", "reconstruct"] = "channel"
    blocks: int | None = None  # method block: how many blocks to remove (or use a params/MACs target)
    block_samples: int = 64  # method block: training samples the candidates are scored on
    samples: int = 256  # method reconstruct: training samples of the least-squares refit
    probe_samples: int = 64  # method reconstruct with a target: samples the chains' sensitivity is measured on
    rounds: int = 1  # method reconstruct with a target: reach it in this many steps, re-measuring in between
    finetune_epochs: int = 0  # KD epochs after each step
    distill: dict[str, Any] = field(default_factory=dict)  # other DistillConfig keys for those epochs
    taylor_batches: int = 4

    def __post_init__(self) -> None:
        check_range("prune.ratio", self.ratio, 0, 1, lo_open=True, hi_open=True)
        check_range("prune.target_macs", self.target_macs, 0, 1, lo_open=True, hi_open=True)
        check_range("prune.target_params", self.target_params, 0, 1, lo_open=True, hi_open=True)
        check_range("prune.max_layer_ratio", self.max_layer_ratio, 0, 1, lo_open=True, hi_open=True)
        check_range("prune.round_to", self.round_to, 1)
        check_range("prune.steps", self.steps, 1)
        check_distill("prune.distill", self.distill)
        check_range("prune.finetune_epochs", self.finetune_epochs, 0)
        check_range("prune.taylor_batches", self.taylor_batches, 1)  # 0 left no gradient to rank by
        for name, r in self.per_layer.items():
            check_range(f"prune.per_layer.{name}", r, 0, 1, lo_open=True, hi_open=True)
        if self.target_macs is not None and self.target_params is not None:
            raise ConfigError("prune.target_macs: give target_macs or target_params, not both")
        check_range("prune.blocks", self.blocks, 1)
        check_range("prune.block_samples", self.block_samples, 1)
        check_range("prune.samples", self.samples, 1)
        check_range("prune.probe_samples", self.probe_samples, 1)
        check_range("prune.rounds", self.rounds, 1)
        targeted = self.target_macs is not None or self.target_params is not None
        given = self.ratio is not None and not isinstance(self.ratio, _Default)
        if isinstance(self.ratio, _Default):
            self.ratio = float(self.ratio)  # a plain number in resolved recipes
        if given and targeted:  # the target decided and the ratio was dropped
            key = "target_macs" if self.target_macs is not None else "target_params"
            raise ConfigError(f"prune.ratio: give ratio or {key}, not both")
        if given and self.method == "block":
            raise ConfigError("prune.ratio: method block removes whole blocks (blocks, target_macs or "
                              "target_params); ratio is for methods channel, reconstruct and unstructured")
        if self.rounds > 1 and (self.method != "reconstruct" or not targeted):
            raise ConfigError("prune.rounds: only for method reconstruct with target_macs or target_params "
                              "(method channel prunes iteratively with steps)")
        if self.method == "reconstruct":
            if self.steps != 1:
                raise ConfigError("prune.steps: method reconstruct refits every layer it prunes in one pass; "
                                  "use steps: 1 (finetune_epochs still applies)")
            if self.importance != "magnitude":
                raise ConfigError("prune.importance: method reconstruct picks channels by the refit's error; "
                                  "importance is for method channel")
            if self.per_layer or self.global_pruning:
                raise ConfigError("prune.per_layer: method reconstruct spreads a target by measured sensitivity; "
                                  "per_layer and global_pruning are for method channel")
            if self.target_macs is not None or self.target_params is not None:
                self.ratio = None  # the target decides (resolved recipes say so)
        if self.method == "block":
            has_target = self.target_macs is not None or self.target_params is not None
            if (self.blocks is None) == (not has_target):
                raise ConfigError("prune.blocks: method block needs either blocks (how many to remove) or "
                                  "target_macs / target_params, not both")
            if self.steps != 1:
                raise ConfigError("prune.steps: method block removes blocks greedily in one pass; use steps: 1")
            self.ratio = None  # a channel ratio means nothing here (resolved recipes say so)
        elif self.blocks is not None:
            raise ConfigError(f"prune.blocks: only for method block (method is {self.method!r})")
        if self.method in ("channel", "reconstruct", "unstructured") and self.ratio is None and not targeted:
            # `ratio: null` was read as 0.5 (channel, unstructured) or as "prune nothing" (reconstruct)
            raise ConfigError("prune.ratio: null; give ratio, target_macs or target_params")
        if self.method == "channel" and targeted:
            self.ratio = None  # the target decides (resolved recipes say so, as for reconstruct)
        if self.method == "unstructured" and (self.target_macs or self.target_params):
            raise ConfigError("prune.target_macs: unstructured pruning does not change MACs/params; "
                              "use ratio (fraction of weights zeroed)")


def _channel_layers() -> tuple[type[nn.Module], ...]:
    """The layers whose output channels channel pruning removes (the roots of its groups)."""
    from torch import nn

    return (nn.Linear, nn.Conv1d, nn.Conv2d)


def _classifier(module: Any, example: Any) -> Any:
    """The layer kept whole as the classifier: the last Linear to run on `example`, else the last
    convolution to run (`_run_facts`: the same cached forward as the output layers and the stem /
    head). It was the last one registered, so a model that registers its classifier before its
    feature layers kept a feature layer whole and pruned its classifier's outputs (the classes).
    By registration order only when none of them ran."""
    from torch import nn

    mods = dict(module.named_modules())
    pool = [mods[n] for n in _run_facts(module, example)[1]] or list(module.modules())
    for kind in (nn.Linear, _channel_layers()[1:]):
        if found := [m for m in pool if isinstance(m, kind)]:
            return found[-1]
    return None


def _run_once(module: Any, example: Any) -> tuple[list[Any], list[Any]]:
    """One forward pass on `example`: (the layers whose output a multi-output model returns as it
    is, the Linear / Conv1d / Conv2d layers in the order they ran, one entry per call).

    Output layers, why: only the last Linear (`_classifier`) was kept whole, so of
    `return self.fc(y), self.aux(y)` the first head lost half its outputs (10 -> 5 classes),
    silently. A single-output model keeps the rule above (none here).
    Run order, why: `ignore_stem` / `ignore_head` took the first / last convolution by registration
    order, so a model that registers its head before its stem (or builds its layers out of order)
    kept the wrong layer whole; the classifier (`_classifier`) is the last Linear to run, for the same
    reason."""
    import torch

    from edgecompress.passes._common import output_count

    produced: list[tuple[Any, Any]] = []  # (tensor, layer): the tensors kept alive, so `is` is exact
    hooks = [m.register_forward_hook(lambda m, _i, o: produced.append((o, m)))
             for m in module.modules() if isinstance(m, _channel_layers())]
    try:
        with torch.no_grad():
            y = module(*example)
    finally:
        for h in hooks:
            h.remove()
    ran = [m for _, m in produced]
    if output_count(y) < 2:
        return [], ran
    outs = list(y.values()) if isinstance(y, dict) else list(y)
    return [m for t, m in produced if any(t is o for o in outs)], ran


# module -> (its structure, the names of its output layers, of its Linear / conv layers in run order).
# `_run_once` runs the model, and `_ignored` is asked for every dependency graph built (the plan,
# the pruner, the channels after, and again on each copy a MACs / params target bisects): one
# forward per model, not per ask.
_OUTPUT_LAYERS: weakref.WeakKeyDictionary[
    Any, tuple[tuple[tuple[str, type], ...], list[str], list[str]]] = weakref.WeakKeyDictionary()


def _structure(module: Any) -> tuple[tuple[str, type], ...]:
    return tuple((n, type(m)) for n, m in module.named_modules())


def _run_facts(module: Any, example: Any) -> tuple[list[str], list[str]]:
    """`_run_once` by module name, run once per model: kept while its modules are the same
    (pruning narrows layers in place; a pass that swaps a layer for another runs it again)."""
    structure = _structure(module)
    hit = _OUTPUT_LAYERS.get(module)
    if hit is not None and hit[0] == structure:
        return hit[1], hit[2]
    names = {m: n for n, m in module.named_modules()}
    outs, ran = _run_once(module, example)
    facts = ([names[m] for m in outs], [names[m] for m in ran])
    _OUTPUT_LAYERS[module] = (structure, *facts)
    return facts


def _output_layer_names(module: Any, example: Any) -> list[str]:
    """The names of the layers a multi-output model returns as they are (`_run_once`)."""
    return _run_facts(module, example)[0]


def _copy_model(module: Any) -> Any:
    """A deep copy that shares `module`'s run facts (`_run_facts`): same names."""
    twin = copy.deepcopy(module)
    if (hit := _OUTPUT_LAYERS.get(module)) is not None:
        _OUTPUT_LAYERS[twin] = hit
    return twin


def _ignored(module: Any, cfg: PruneConfig, example: Any) -> list[Any]:
    from torch import nn

    mods = dict(module.named_modules())
    out = []
    for n in cfg.ignored:
        if n not in mods:
            raise ConfigError(f"prune.ignored: model has no module {n!r}")
        out.append(mods[n])
    head = _classifier(module, example)
    if head is not None:
        out.append(head)
    out += [mods[n] for n in _output_layer_names(module, example) if mods[n] is not head]
    # tied weights: Torch-Pruning prunes each user as its own group and gave them new, different
    # weights (the tie silently gone); kept whole instead (`_retie` and a note say the rest)
    out += [mods[n] for n in shared_weights(module)]
    # the stem and the head: the first and the last dense convolution to run, Conv1d (over a sequence)
    # or Conv2d (by run order on the example: registration order kept the wrong layer of a model
    # that registers its head before its stem)
    if cfg.ignore_stem or cfg.ignore_head:
        convs = [mods[n] for n in _run_facts(module, example)[1]]
        convs = [m for m in convs if isinstance(m, nn.Conv1d | nn.Conv2d) and m.groups == 1 and m is not head]
        if cfg.ignore_stem and convs:
            out.append(convs[0])
        if cfg.ignore_head and convs:
            out.append(convs[-1])
    return out


def _ties(module: Any) -> list[tuple[str, str, str, str]]:
    """(module, parameter, other module, its parameter) for every parameter two modules share."""
    first: dict[int, tuple[str, str]] = {}
    out = []
    for name, m in module.named_modules():
        for pname, p in m.named_parameters(recurse=False):
            if id(p) in first:
                out.append((*first[id(p)], name, pname))
            else:
                first[id(p)] = (name, pname)
    return out


def _retie(module: Any, ties: list[tuple[str, str, str, str]]) -> list[str]:
    """Tie again what pruning another layer's channels sliced apart (its inputs: the same channels
    cut from both copies); notes for ties that could not be kept."""
    import torch

    notes = []
    for a, pa, b, pb in ties:
        wa, wb = getattr(module.get_submodule(a), pa), getattr(module.get_submodule(b), pb)
        if wa is wb:
            continue
        if wa.shape == wb.shape and torch.equal(wa, wb):
            setattr(module.get_submodule(b), pb, wa)
        else:
            notes.append(f"{a}.{pa} was shared with {b}: pruning untied them")
    return notes


def _importance(kind: str) -> Any:
    import torch_pruning as tp

    if kind == "magnitude":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if kind == "taylor":
        return tp.importance.GroupTaylorImportance()
    return tp.importance.BNScaleImportance()


def _round_kept(n_pruned: int, current: int, round_to: int) -> int:
    """Channels to prune so that the kept count is the *nearest* multiple of `round_to`, and at
    least `round_to` (or all of a layer narrower than that).

    Torch-Pruning 1.6 floors the kept count instead (`_round_to`), so any ratio > 0 removes at
    least `round_to` channels from every layer: 16 -> 8 (-50 %) in EfficientNet-Lite0's first
    block at a ratio of 0.002. With a MACs target the bisection then settled on that tiny ratio
    and the "-10 %" model was 8 channels off every layer (-15 % MACs, top-1 85.6 -> 1.2 %).
    """
    kept = current - n_pruned
    kept = max(round_to, int(kept / round_to + 0.5) * round_to)
    return max(current - min(kept, current), 0)


def _kept(channels: int, ratio: float, max_ratio: float, round_to: int | None) -> int:
    """Channels a layer of `channels` keeps at `ratio`: the *nearest* count (Torch-Pruning floors
    it, so ratio 1e-9 took one channel off every layer: 47,210 -> 44,926 params on digits-cnn),
    at least one, never fewer than `max_ratio` allows, and a multiple of `round_to` when that
    fits (`_round_kept`; a layer narrower than round_to, or whose nearest multiple would break
    max_ratio with no wider one left, stays whole). Not `_reconstruct.kept_channels`: that one
    rounds half to even and rounds narrow layers to a multiple too, and its figures were measured
    with it."""
    keep = max(1, int(channels * (1 - ratio) + 0.5))
    floor = channels - int(channels * max_ratio + 1e-9)  # max_layer_ratio: the most a layer loses
    keep = min(channels, max(keep, floor))
    if round_to:
        keep = channels - _round_kept(channels - keep, channels, round_to)
        if keep < floor:  # the nearest multiple is below the cap: the next one up, if there is one
            up = -(-floor // round_to) * round_to
            keep = up if up <= channels else channels
    return keep


def _groups(module: Any, example: Any, cfg: PruneConfig) -> tuple[Any, list[tuple[list[Any], str, int]]]:
    """The dependency graph and its prunable channel groups: (out-channel modules, the group's
    first module name, channels). Residual / depthwise couplings are one group."""
    import torch_pruning as tp
    from torch import nn

    dg = tp.DependencyGraph().build_dependency(module, example_inputs=example)
    ignored = [m for layer in _ignored(module, cfg, example) for m in layer.modules()]
    names = {m: n for n, m in module.named_modules()}
    prunable = tuple(tp.ops.type2class(t) for t in dg.REGISTERED_PRUNERS)
    out = []
    for group in dg.get_all_groups(ignored_layers=ignored, root_module_types=list(_channel_layers())):
        mods = []
        for dep, _ in group:
            m = dep.target.module
            if dg.is_out_channel_pruning_fn(dep.handler) and isinstance(m, nn.Module) \
                    and isinstance(m, prunable) and m not in mods:
                mods.append(m)
        channels = dg.get_out_channels(group[0].dep.target.module)
        if mods and channels:
            out.append((mods, names.get(mods[0], "?"), int(channels)))
    return dg, out


def _plan(module: Any, example: Any, cfg: PruneConfig, ratio: float) -> list[dict[str, Any]]:
    """Per channel group: its name, channels, the ratio asked (`per_layer` by any module name in
    the group, else `ratio`) and the channels it keeps (`_kept`)."""
    names = {m: n for n, m in module.named_modules()}
    plan = []
    for mods, name, channels in _groups(module, example, cfg)[1]:
        asked = next((r for m in mods if (r := _per_layer(cfg, names.get(m, ""))) is not None), ratio)
        plan.append({"layer": name, "modules": mods, "channels": channels, "asked": asked,
                     "kept": _kept(channels, asked, cfg.max_layer_ratio, cfg.round_to)})
    return plan


def _per_layer(cfg: PruneConfig, name: str) -> float | None:
    """`per_layer`'s ratio for module `name`: its own entry, else its nearest container's (`res_a`
    covers `res_a.0`, as prune.ignored does; a container name was silently without effect)."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        r = cfg.per_layer.get(".".join(parts[:i]))
        if r is not None:
            return r
    return None


def _unused_per_layer(module: Any, cfg: PruneConfig, plan: list[dict[str, Any]], example: Any) -> list[str]:
    """Notes for `per_layer` entries naming layers no channel group holds (the classifier, an
    ignored layer): their ratio was silently kept."""
    planned = {id(m) for g in plan for m in g["modules"]}
    mods = dict(module.named_modules())
    head = _classifier(module, example)
    notes = []
    for n in cfg.per_layer:
        inside = list(mods[n].modules()) if n in mods else []
        if inside and not any(id(m) in planned for m in inside):
            why = "the classifier (output layer) is always kept whole" if head is not None and head in inside \
                else "it is kept whole (ignored, or coupled to a layer that is)"
            notes.append(f"prune.per_layer.{n}: not used; {why}")
    return notes


def _global_floor(channels: int, cfg: PruneConfig) -> int:
    """The fewest channels a group keeps under global pruning: max_layer_ratio's count, rounded up
    to a multiple of round_to (at most the group's channels)."""
    floor = max(1, channels - int(channels * cfg.max_layer_ratio + 1e-9))
    return min(channels, -(-floor // cfg.round_to) * cfg.round_to) if cfg.round_to else floor


class _CappedImportance:
    """Torch-Pruning's importance, with the channels a group must keep made unprunable (+inf).

    Why: with `global_pruning` Torch-Pruning ranks every channel against one threshold and checks
    `max_pruning_ratio` only for groups already past it, then floors kept counts to `round_to`, so
    one layer could lose far more than max_layer_ratio (digits-cnn, ratio 0.85, cap 0.6, round_to
    8: 64 -> 16 channels). Here each group keeps at least its cap's count, rounded *up* to a
    multiple of round_to (Torch-Pruning's flooring then cannot go below it)."""

    def __init__(self, inner: Any, plan: list[dict[str, Any]], cfg: PruneConfig) -> None:
        self.inner = inner
        self.floor: dict[Any, int] = {}  # out-channel module -> the fewest channels its group keeps
        self.groups: list[tuple[int, int, list[Any]]] = []  # (channels, floor, modules)
        for g in plan:
            floor = _global_floor(g["channels"], cfg)
            self.groups.append((g["channels"], floor, g["modules"]))
            for m in g["modules"]:
                self.floor[m] = floor

    def removable(self, local: set[Any]) -> float:
        """The largest global ratio the caps allow over the groups ranked together (not `local`):
        a ratio past it made the threshold +inf, which prunes every channel."""
        ranked = [(c, f) for c, f, mods in self.groups if not local.intersection(mods)]
        total = sum(c for c, _ in ranked)
        return max(0.0, (sum(c - f for c, f in ranked) - 0.5) / total) if total else 0.0

    def __call__(self, group: Any, **kwargs: Any) -> Any:
        import torch

        imp = self.inner(group, **kwargs)
        floor = self.floor.get(group[0].dep.target.module)
        if imp is None or floor is None or len(imp) <= floor:
            return imp if imp is None or floor is None else torch.full_like(imp, float("inf"))
        imp = imp.clone()
        imp[torch.topk(imp, floor).indices] = float("inf")  # the `floor` most important stay
        return imp


def _pruner(module: Any, example: Any, cfg: PruneConfig, ratio: float, steps: int,
            importance: str | None = None, plan: list[dict[str, Any]] | None = None) -> Any:
    """A Torch-Pruning MetaPruner that removes what `_plan` says.

    Local pruning (the default): every group gets its own ratio, chosen so that Torch-Pruning's
    floor lands on `_kept` (1 - (kept + 0.5) / channels): its own counts rounded up the pruned
    channels, ignored max_pruning_ratio outside global pruning (0.95 took 32 channels to 1), and
    a ratio that emptied a layer made it skip that layer whole (0.99 pruned nothing). With
    `global_pruning` one threshold ranks all groups; max_layer_ratio is its per-layer cap there.
    `plan`: `_plan(module, example, cfg, ratio)` when the caller has it (each builds a dependency graph).
    """
    import torch_pruning as tp

    mods = dict(module.named_modules())
    for n in cfg.per_layer:
        if n not in mods:
            raise ConfigError(f"prune.per_layer: model has no module {n!r}")
    ratios: dict[Any, float] | None = None
    if not cfg.global_pruning:
        ratios = {}
        for g in plan if plan is not None else _plan(module, example, cfg, ratio):
            r = max(0.0, 1 - (g["kept"] + 0.5) / g["channels"]) if g["kept"] < g["channels"] else 0.0
            for m in g["modules"]:
                ratios[m] = r
    else:
        ratio = min(ratio, cfg.max_layer_ratio)
        ratios = {mods[n]: min(r, cfg.max_layer_ratio) for n, r in cfg.per_layer.items()} or None
    imp = _importance(importance or cfg.importance)
    if cfg.global_pruning:
        imp = _CappedImportance(imp, plan if plan is not None else _plan(module, example, cfg, ratio), cfg)
        ratio = min(ratio, imp.removable(set(ratios or ())))
    return tp.pruner.MetaPruner(
        module, example, importance=imp,
        global_pruning=cfg.global_pruning, pruning_ratio=0.0 if not cfg.global_pruning else ratio,
        pruning_ratio_dict=ratios or None, max_pruning_ratio=cfg.max_layer_ratio,
        iterative_steps=steps, ignored_layers=_ignored(module, cfg, example),
        round_to=cfg.round_to if cfg.global_pruning else None,
    )


def _channels(module: Any, example: Any, cfg: PruneConfig) -> dict[str, int]:
    return {name: channels for _mods, name, channels in _groups(module, example, cfg)[1]}


def _prune_notes(before: dict[str, int], after: dict[str, int], plan: list[dict[str, Any]],
                 cfg: PruneConfig, ratio: float) -> list[str]:
    """What the ratio could not do as asked, in words (log `warnings`, printed as `note:`)."""
    notes = []
    if cfg.global_pruning:  # one threshold for all: the layers it would have cut past their cap
        capped = [g["layer"] for g in plan if g["layer"] not in cfg.per_layer
                  and after.get(g["layer"], 0) <= _global_floor(g["channels"], cfg) < g["channels"]]
    else:
        capped = [g["layer"] for g in plan  # the nearest count is below what max_layer_ratio lets go
                  if max(1, int(g["channels"] * (1 - g["asked"]) + 0.5))
                  < g["channels"] - int(g["channels"] * cfg.max_layer_ratio + 1e-9)]
    if capped:
        notes.append(f"prune.ratio {ratio}: capped at max_layer_ratio {cfg.max_layer_ratio} in "
                     f"{len(capped)} layer(s) ({', '.join(capped[:4])}{', ...' if len(capped) > 4 else ''})")
    if cfg.global_pruning:
        total = sum(before.values())
        gone = total - sum(after.get(k, v) for k, v in before.items())
        if total and abs(gone / total - ratio) > 0.02:
            notes.append(f"prune.ratio {ratio}: global pruning removed {gone} of {total} channels "
                         f"({gone / total:.1%}); max_layer_ratio {cfg.max_layer_ratio} and round_to "
                         f"{cfg.round_to} decide the rest")
        return notes
    whole = [g["layer"] for g in plan if g["kept"] == g["channels"]]
    if whole and len(whole) < len(plan):
        why = f"narrower than round_to {cfg.round_to} or " if cfg.round_to else ""
        notes.append(f"prune.ratio {ratio}: {len(whole)} layer(s) left whole ({why}the ratio rounds to 0 "
                     f"channels): {', '.join(whole[:4])}{', ...' if len(whole) > 4 else ''}")
    # the channels actually kept, not the plan: bn-scale ranks only layers a BatchNorm follows and
    # left the others (digits-cnn's fc1) whole, with no note
    unranked = [g["layer"] for g in plan if g["kept"] < g["channels"] <= after.get(g["layer"], g["channels"])]
    if unranked and any(after.get(k, v) != v for k, v in before.items()):
        why = "no BatchNorm follows them for importance bn-scale to rank by" if cfg.importance == "bn-scale" \
            else f"importance {cfg.importance} did not rank their channels"
        notes.append(f"prune.ratio {ratio}: {len(unranked)} layer(s) left whole ({why}): "
                     f"{', '.join(unranked[:4])}{', ...' if len(unranked) > 4 else ''}")
    if not before:  # no channel group left to prune (the classifier, ignored and tied layers stay whole)
        notes.append(f"prune.ratio {ratio}: nothing pruned (no Linear / Conv1d / Conv2d layer to prune besides "
                     "the classifier and ignored or tied layers, which are kept whole)")
    elif all(after.get(k, v) == v for k, v in before.items()):
        why = f"round_to {cfg.round_to} is wider than what the ratio removes from every layer" if cfg.round_to \
            else "it rounds to 0 channels in every layer"
        notes.append(f"prune.ratio {ratio}: nothing pruned ({why})")
    return notes


def _count(module: Any, example: Any) -> tuple[int, int]:
    from edgecompress.models.macs import count_ops_and_params

    macs, params = count_ops_and_params(module, example)
    return params, macs


def ratio_for_target(module: Any, example: Any, cfg: PruneConfig) -> float:
    """Channel ratio whose pruning removes `target_macs` (or `target_params`) of the model,
    by bisection on copies (magnitude importance: counts depend on the ratio, not on which
    channels go, unless global_pruning). A target that max_layer_ratio cannot reach is refused:
    the bisection returned max_layer_ratio and the model silently missed it."""
    target = cfg.target_macs if cfg.target_macs is not None else cfg.target_params
    if target is None:
        raise ConfigError("prune: ratio_for_target needs target_macs or target_params")
    which = 1 if cfg.target_macs is not None else 0
    key = "target_macs" if which else "target_params"
    base = _count(module, example)[which]
    _output_layer_names(module, example)  # once, here: every copy bisected shares it

    def removed_at(r: float) -> float:
        m = _copy_model(module)
        _pruner(m, example, cfg, r, 1, "magnitude").step()
        return 1 - _count(m, example)[which] / base

    lo, hi = 0.0, cfg.max_layer_ratio
    most = removed_at(hi)
    if most < target:
        raise ConfigError(f"prune.{key}: {target} is not reachable with max_layer_ratio {cfg.max_layer_ratio} "
                          f"(that removes {most:.3f}); lower the target, or raise max_layer_ratio "
                          "(a recipe's prune: {max_layer_ratio: ...})")
    best = hi
    for _ in range(14):
        mid = (lo + hi) / 2
        if removed_at(mid) >= target:
            best, hi = mid, mid
        else:
            lo = mid
        if hi - lo < 2e-3:
            break
    return best


def _taylor_grads(module: Any, data: Any, teacher: Any, batches: int, batch_size: int = 64) -> None:
    """Accumulate gradients of the task loss (labels, or the teacher's argmax) for Taylor importance."""
    import torch
    import torch.nn.functional as F

    module.zero_grad()
    module.eval()
    for i in range(batches):
        xb = data.x[i * batch_size:(i + 1) * batch_size]
        if len(xb) == 0:
            break
        xb = torch.from_numpy(xb)
        if data.y is not None:
            yb = torch.from_numpy(data.y[i * batch_size:(i + 1) * batch_size]).long()
        else:
            with torch.no_grad():
                yb = first_output(teacher(xb)).argmax(1)
        F.cross_entropy(first_output(module(xb)), yb).backward()
    # the loss is of the first output (a multi-output model's other heads take no part in it): their
    # weights have no gradient, which Torch-Pruning's Taylor importance read as None.grad; zero
    # rates their channels by what they do for the first output
    for p in module.parameters():
        if p.requires_grad and p.grad is None:
            p.grad = torch.zeros_like(p)


def _unstructured(module: Any, ratio: float, model_name: str) -> dict[str, Any]:
    import torch
    from torch.nn.utils import prune as tprune

    # A weight tied between layers is ranked once: listed twice it took two slots in the global
    # ranking (a lower threshold than asked for) and was counted twice in the sparsity reported.
    targets: list[tuple[Any, str]] = []
    seen: set[int] = set()
    for m in module.modules():
        if isinstance(m, _channel_layers()) and id(m.weight) not in seen:
            seen.add(id(m.weight))
            targets.append((m, "weight"))
    if not targets:  # torch's global ranking of an empty list: "torch.cat(): expected a non-empty list"
        raise ConfigError(f"prune.method unstructured: model {model_name} has no Linear / Conv1d / Conv2d layer "
                          "whose weights could be pruned")
    tprune.global_unstructured(targets, pruning_method=tprune.L1Unstructured, amount=ratio)
    for m, name in targets:
        tprune.remove(m, name)
    total = sum(m.weight.numel() for m, _ in targets)
    nonzero = sum(int(torch.count_nonzero(m.weight)) for m, _ in targets)
    return {"weights": total, "nonzero": nonzero, "sparsity": 1 - nonzero / max(total, 1),
            "note": "unstructured: zeros are stored as zeros; params, MACs and file size unchanged"}


def _finetune(module: Any, teacher: Any, ds: Any, cfg: PruneConfig, tag: str, workdir: Path | str | None,
              progress: bool, teacher_named: bool) -> dict[str, Any]:
    """The KD fine-tune after a one-shot method (`finetune_epochs`), checkpointed in `workdir`."""
    kd = make_config(DistillConfig, cfg.distill, "prune.distill", epochs=cfg.finetune_epochs)
    ck = Path(workdir) / "checkpoints" / f"prune-{tag}.pt" if workdir else None
    return finetune(module, teacher, ds, kd, ck, f"prune ({tag}): KD fine-tune", progress, teacher_named=teacher_named)


def _reconstruct(module: Any, spec: ModelSpec, ds: Any, cfg: PruneConfig, progress: bool) -> dict[str, Any]:
    import torch

    from edgecompress.passes._reconstruct import prune_chains

    if isinstance(ds.x, dict):
        raise ConfigError("prune.method reconstruct: needs a model with one tensor input; use method channel")
    batches = list(torch.from_numpy(ds.x[: cfg.samples]).split(32))
    target = ("macs", cfg.target_macs) if cfg.target_macs is not None else \
        ("params", cfg.target_params) if cfg.target_params is not None else None
    example = spec.example_inputs(1)
    return prune_chains(module, example, _ignored(module, cfg, example), batches, cfg.ratio, cfg.round_to,
                        cfg.max_layer_ratio, progress, target=target, probe_samples=cfg.probe_samples,
                        classification=spec.task == "classification", rounds=cfg.rounds)


def prune(model: ModelLike, config: PruneConfig | dict | None = None, *, data: DataLike | None = None,
          teacher: ModelSpec | torch.nn.Module | None = None, workdir: Path | str | None = None,
          progress: bool = True, input_shape: ShapeLike | None = None, **overrides: Any) -> ModelSpec:
    """Prune channels of `model` (spec, nn.Module + input_shape, or reference); returns a new spec
    with the same input contract."""
    cfg = make_config(PruneConfig, config, "prune", **overrides)
    spec = as_spec(model, input_shape, who="prune")
    module = pass_module(spec).eval()
    teach = teacher_module(teacher, spec) if (cfg.finetune_epochs or cfg.importance == "taylor") else None
    needs_data = cfg.finetune_epochs > 0 or cfg.importance == "taylor" or cfg.method in ("block", "reconstruct")
    ds = resolve_dataset(spec, data, "train", progress) if needs_data else None
    log: dict[str, Any] = {"method": cfg.method}
    if cfg.method == "unstructured":
        assert cfg.ratio is not None  # PruneConfig refuses unstructured without a ratio
        log.update(_unstructured(module, cfg.ratio, spec.name))
    elif cfg.method == "block":
        from edgecompress.passes._blocks import remove_blocks

        example = spec.example_inputs(1)
        which = 1 if cfg.target_macs is not None else 0
        target = cfg.target_macs if cfg.target_macs is not None else cfg.target_params
        log.update(remove_blocks(module, ds, cfg.blocks, target, which, lambda m: _count(m, example),
                                 spec.task == "classification", cfg.block_samples))
        log["note"] = f"{len(log['removed'])} block(s) removed: {', '.join(r['block'] for r in log['removed'])}"
        if cfg.finetune_epochs:
            log["finetune"] = [_finetune(module, teach, ds, cfg, "blocks", workdir, progress, named_teacher(teacher))]
    elif cfg.method == "reconstruct":
        log.update(_reconstruct(module, spec, ds, cfg, progress))
        kept = sum(c["kept"] for c in log["chains"])
        total = sum(c["channels"] for c in log["chains"])
        log["note"] = f"{total - kept} of {total} channels removed in {len(log['chains'])} chains, consumers refitted"
        if cfg.finetune_epochs:
            log["finetune"] = [_finetune(module, teach, ds, cfg, "reconstruct", workdir, progress,
                                         named_teacher(teacher))]
    else:
        example = spec.example_inputs(1)
        if cfg.target_macs is not None or cfg.target_params is not None:
            ratio = ratio_for_target(module, example, cfg)
            log["ratio_found"] = round(ratio, 4)
        else:
            assert cfg.ratio is not None  # PruneConfig refuses neither a ratio nor a target
            ratio = cfg.ratio
        ties = _ties(module)
        tied = [f"{why}: left whole" for why in dict.fromkeys(shared_weights(module).values())]  # `_ignored`
        plan = _plan(module, example, cfg, ratio)
        before = {g["layer"]: g["channels"] for g in plan}  # what _channels() gives, without another graph
        pruner = _pruner(module, example, cfg, ratio, cfg.steps, plan=plan)
        kd = make_config(DistillConfig, cfg.distill, "prune.distill", epochs=cfg.finetune_epochs)
        log["finetune"] = []
        for step in range(cfg.steps):
            if cfg.importance == "taylor":
                _taylor_grads(module, ds, teach, cfg.taylor_batches)
            pruner.step()
            module.zero_grad(set_to_none=True)
            if cfg.finetune_epochs:
                ck = Path(workdir) / "checkpoints" / f"prune-step{step + 1}.pt" if workdir else None
                desc = f"prune step {step + 1}/{cfg.steps}: KD fine-tune"
                log["finetune"].append(finetune(module, teach, ds, kd, ck, desc, progress,
                                                teacher_named=named_teacher(teacher)))
        log["ratio"] = ratio
        # said, not silent: layers the ratio could not cut as asked (capped, left whole, nothing)
        log["warnings"] = [*tied, *_retie(module, ties), *_unused_per_layer(module, cfg, plan, example),
                           *_prune_notes(before, _channels(module, example, cfg), plan, cfg, ratio)]
        for w in log["warnings"]:
            print(f"note: {w}", file=sys.stderr)
    module.eval()
    spec.module = module
    spec.extra.setdefault("passes", []).append({"pass": "prune", "config": config_dict(cfg), "log": log})
    if progress:
        nothing = any("nothing pruned" in w for w in log.get("warnings", []))  # said just above
        what = log["note"] if cfg.method in ("block", "reconstruct") else \
            f"{log.get('note', 'no channel pruned' if nothing else 'channels pruned')} " \
            f"(ratio {log.get('ratio', cfg.ratio)})"
        print(f"prune: {what}", file=sys.stderr)
    return spec


register_pass(PassInfo("prune", PruneConfig, prune,
                       "Torch-Pruning channel pruning (ratio / MACs / params target), channel pruning with "
                       "least-squares reconstruction, block removal, or unstructured",
                       structural=True))
