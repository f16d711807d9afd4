"""Channel pruning with least-squares reconstruction (`prune: {method: reconstruct}`).

Written here because Torch-Pruning scores channels by their weights and leaves the surviving
weights as they were: a compact network then needs a long fine-tune on a large dataset to recover
(EfficientNet-Lite0 at -20 % MACs: 85.6 -> 53 % top-1 with 500 images, RESULTS-compress.md). Here
the network is pruned *chain* by chain in forward order. A chain is a layer (Conv2d, Conv1d or
Linear) whose output channels reach exactly one dense consumer (a linear layer or a 1x1 conv),
possibly through element-wise layers and depthwise convolutions (an MBConv block's expand ->
depthwise -> project, a conv -> pool -> classifier). On calibration
data the consumer's input in the model pruned so far and the consumer's output in the *original*
model give a least-squares problem. Channels are removed one at a time by the exact increase of
its error (Optimal Brain Surgeon on the consumer's input columns, as in OBC, Frantar & Alistarh
2022), and the consumer's weights and bias are refitted to the channels that stay, which also
corrects the error of the chains pruned before. Torch-Pruning's dependency graph still cuts the
channels and everything coupled to them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgecompress.errors import ConfigError


@dataclass
class Chain:
    root: str  # layer whose output channels are removed
    consumer: str  # the one dense layer that reads them (1x1 conv or linear); refitted
    channels: int
    scale: str | None = None  # BatchNorm right after the consumer (weights the error per output)


class _Stop(Exception):
    """Raised by a capture hook to end a forward pass early."""


def _conv(m: Any) -> bool:
    """A Conv1d or Conv2d (a Conv1d over a sequence is handled as a Conv2d over an image)."""
    from torch import nn

    return isinstance(m, nn.Conv1d | nn.Conv2d)


def _dense(m: Any) -> bool:
    from torch import nn

    if isinstance(m, nn.Linear):
        return True
    ones = (1,) * len(m.kernel_size) if _conv(m) else ()
    return (_conv(m) and m.groups == 1 and tuple(m.kernel_size) == ones
            and tuple(m.padding) == tuple(0 for _ in ones) and tuple(m.dilation) == ones)


def _depthwise(m: Any) -> bool:
    return _conv(m) and m.groups > 1 and m.groups == m.in_channels == m.out_channels


def _forward_with(module: Any, x: Any, hooks: list[tuple[Any, Any]]) -> None:
    """One no-grad forward of `x` (a tensor or a tuple of them) with forward hooks attached."""
    import torch

    handles = [m.register_forward_hook(fn) for m, fn in hooks]
    try:
        with torch.no_grad():
            module(*x) if isinstance(x, tuple | list) else module(x)
    finally:
        for h in handles:
            h.remove()


def _call_order(module: Any, x: Any) -> list[str]:
    order: list[str] = []
    _forward_with(module, x, [(m, lambda *_a, n=n: order.append(n))
                              for n, m in module.named_modules() if n and not list(m.children())])
    return order


def find_chains(module: Any, example: Any, ignored: list[Any]) -> tuple[list[Chain], Any]:
    """The model's prunable chains in call order, and the dependency graph they were found in."""
    import torch_pruning as tp
    from torch import nn

    dg = tp.DependencyGraph().build_dependency(module, example_inputs=example)
    names = {m: n for n, m in module.named_modules()}
    order = _call_order(module, example)
    pos = {n: i for i, n in enumerate(order)}
    chains = []
    for group in dg.get_all_groups(ignored_layers=ignored, root_module_types=(nn.Conv1d, nn.Conv2d, nn.Linear)):
        producers: set[nn.Module] = set()
        consumers: set[nn.Module] = set()
        other = False
        for dep, _ in group:
            m = dep.target.module
            if not isinstance(m, nn.Module):
                other = True  # a bare nn.Parameter coupled to the channels
                continue
            if (_conv(m) or isinstance(m, nn.Linear)) and not _depthwise(m):
                (consumers if dg.is_in_channel_pruning_fn(dep.handler) else producers).add(m)
        if other or len(producers) != 1 or len(consumers) != 1:
            continue  # residual streams (several producers), branches (several consumers)
        (root,), (consumer,) = producers, consumers
        if not _dense(consumer) or names.get(consumer) not in pos or _in_features(consumer) != _out_features(root):
            continue  # e.g. a linear layer reading a flattened feature map
        cname = names[consumer]
        follow = order[pos[cname] + 1] if pos[cname] + 1 < len(order) else None
        bn = module.get_submodule(follow) if follow else None
        scale = follow if isinstance(bn, nn.BatchNorm2d | nn.BatchNorm1d) and \
            bn.num_features == _out_features(consumer) else None
        chains.append(Chain(names[root], cname, _out_features(root), scale))
    chains.sort(key=lambda c: pos[c.consumer])
    return chains, dg


def _in_features(m: Any) -> int:
    return int(m.in_features if hasattr(m, "in_features") else m.in_channels)


def _out_features(m: Any) -> int:
    return int(m.out_features if hasattr(m, "out_features") else m.out_channels)


def kept_channels(channels: int, ratio: float, round_to: int | None, max_ratio: float) -> int:
    """Channels a chain keeps at `ratio`: the nearest multiple of `round_to` (at least one
    multiple), never fewer than (1 - max_ratio) of them."""
    keep = channels * (1 - ratio)
    if round_to:
        keep = max(round_to, int(keep / round_to + 0.5) * round_to)
    keep = max(round(keep), int(np.ceil(channels * (1 - max_ratio))), 1)
    return min(keep, channels)


def _rows(t: Any, consumer: Any) -> Any:
    """A consumer's input or output as rows of features (positions x channels)."""
    if _conv(consumer) and t.ndim >= 3:
        t = t.movedim(1, -1)  # channels last: one row per position (per pixel, per sequence step)
    return t.reshape(-1, t.shape[-1])


def _capture(module: Any, name: str, x: Any, want_input: bool) -> Any:
    """The input or output of submodule `name` for batch `x`, running the model only up to it."""
    sub = module.get_submodule(name)
    box: list[Any] = []

    def hook(m: Any, args: tuple, out: Any) -> None:
        box.append(args[0] if want_input else out)
        raise _Stop

    h = sub.register_forward_hook(hook)
    try:
        module(x)
    except _Stop:
        pass
    finally:
        h.remove()
    return box[0]


class _Normal:
    """Running normal equations of a consumer's refit: G = [X 1]^T [X 1], C = [X 1]^T Y and the
    centred sum of squares of Y per output (float64); X the consumer's input, one row per
    position it reads, Y the output to reproduce."""

    def __init__(self, consumer: Any) -> None:
        self.consumer = consumer
        self.g: Any = None
        self.c: Any = None
        self.ys: Any = 0.0
        self.yy: Any = 0.0

    def add(self, inp: Any, out: Any, cols: list[int] | None = None) -> None:
        """Add a batch; `cols` picks the outputs still in the model (an earlier round cut some)."""
        import torch

        m = self.consumer
        if _conv(m) and any(s != 1 for s in m.stride):  # the positions a strided 1x1 conv reads
            inp = inp[(slice(None), slice(None), *(slice(None, None, s) for s in m.stride))]
        x, y = _rows(inp, m).double(), _rows(out, m).double()
        if cols is not None:
            y = y[:, cols]
        x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
        gb, cb = x.T @ x, x.T @ y
        self.g, self.c = (gb, cb) if self.g is None else (self.g + gb, self.c + cb)
        self.ys, self.yy = self.ys + y.sum(0), self.yy + (y * y).sum(0)

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = float(self.g[-1, -1])
        return self.g.numpy(), self.c.numpy(), (self.yy - self.ys * self.ys / n).numpy()


def _normal_equations(work: Any, orig: Any, chain: Chain, batches: list[Any],
                      cols: list[int] | None = None) -> tuple[Any, Any, Any]:
    """`_Normal` of a chain's consumer over the calibration batches: its input in the working
    model, its output (the `cols` still there) in the original one."""
    import torch

    acc = _Normal(work.get_submodule(chain.consumer))
    with torch.no_grad():
        for xb in batches:
            acc.add(_capture(work, chain.consumer, xb, True), _capture(orig, chain.consumer, xb, False), cols)
    return acc.result()


def _residual(g: np.ndarray, c: np.ndarray, w: np.ndarray, yy_raw: np.ndarray) -> np.ndarray:
    """Per-output sum of squared residuals of Y ~ [X 1] W^T, from the normal equations."""
    return yy_raw - 2 * np.einsum("fo,of->o", c, w) + np.einsum("of,fk,ok->o", w, g, w)


def obs_select(g: np.ndarray, c: np.ndarray, keep: int, weights: np.ndarray | None = None,
               damp: float = 1e-4) -> tuple[list[int], np.ndarray]:
    """Remove input features (all but the last, the bias column) of the least-squares problem
    min ||Y - X W^T|| one at a time, each time the one whose removal raises the error least,
    refitting W exactly (OBS). Returns the removed feature indices and the refitted W
    (outputs x features; removed columns are zero). `weights` scales each output's error."""
    return obs_path(g, c, [keep], weights, damp)[keep]


def obs_path(g: np.ndarray, c: np.ndarray, keeps: list[int], weights: np.ndarray | None = None,
             damp: float = 1e-4) -> dict[int, tuple[list[int], np.ndarray]]:
    """`obs_select` for several kept counts along one greedy removal path."""
    d = g.shape[0] - 1
    keeps = sorted(set(keeps), reverse=True)
    snaps: dict[int, tuple[list[int], np.ndarray]] = {}
    h = g + np.eye(d + 1) * damp * max(float(np.mean(np.diag(g))), 1e-12)
    hinv = np.linalg.inv(h)
    w = (hinv @ c).T  # the exact least-squares optimum with every feature
    s2 = np.ones(w.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64) ** 2
    alive = np.ones(d + 1, dtype=bool)
    alive[d] = False  # the bias column is never removed
    removed: list[int] = []
    for k in keeps:
        if k >= d:
            snaps[k] = ([], w.copy())
    for step in range(d - min(keeps)):
        idx = np.flatnonzero(alive)
        cost = (s2[:, None] * w[:, idx] ** 2).sum(0) / np.diag(hinv)[idx]
        j = int(idx[np.argmin(cost)])
        w -= np.outer(w[:, j], hinv[j]) / hinv[j, j]
        hinv -= np.outer(hinv[:, j], hinv[j]) / hinv[j, j]
        w[:, j] = 0.0
        alive[j] = False
        removed.append(j)
        if d - step - 1 in keeps:
            snaps[d - step - 1] = (sorted(removed), w.copy())
    return snaps


def _set_weights(consumer: Any, w: np.ndarray, kept: list[int]) -> None:
    import torch
    from torch import nn

    wt = torch.from_numpy(w[:, kept]).to(consumer.weight.dtype)
    bias = torch.from_numpy(w[:, -1]).to(consumer.weight.dtype)
    if _conv(consumer):
        wt = wt.reshape(*wt.shape, *(1 for _ in consumer.kernel_size))
    with torch.no_grad():
        consumer.weight.copy_(wt)
        if consumer.bias is None:
            consumer.bias = nn.Parameter(bias)  # the refit needs one; a following BN folds it at export
        else:
            consumer.bias.copy_(bias)


def _all_normal_equations(orig: Any, chains: list[Chain], batches: list[Any]) -> list[tuple]:
    """`_Normal` of every chain's consumer in the unpruned model, in one pass over the data."""
    accs = [_Normal(orig.get_submodule(ch.consumer)) for ch in chains]
    hooks = [(a.consumer, lambda m, args, out, a=a: a.add(args[0], out)) for a in accs]
    for xb in batches:
        _forward_with(orig, xb, hooks)
    return [a.result() for a in accs]


def _output_weights(orig: Any, ch: Chain, outputs: int) -> np.ndarray:
    """Per-output error weights: the following BatchNorm's |gamma| / std (error after the BN)."""
    import torch

    if not ch.scale:
        return np.ones(outputs)
    bn = orig.get_submodule(ch.scale)
    return (bn.weight.detach().abs() / torch.sqrt(bn.running_var + bn.eps)).double().numpy()


def sensitivity(module: Any, chains: list[Chain], eqs: list[tuple], probe: list[Any], levels: list[float],
                round_to: int | None, floors: list[int], classification: bool, damp: float,
                progress: bool = True) -> list[dict[int, float]]:
    """For every chain alone and every fraction in `levels` (keeping at least its `floors`
    channels), how much the model's outputs move (KL of the softmax, or 1 - cosine) on `probe` when
    the chain keeps that many channels and its consumer is refitted. Removing channels is
    simulated by the refit weights (zero columns), so the model is not restructured; it is
    restored after each trial."""
    import torch

    from edgecompress.passes._blocks import _damage
    from edgecompress.progress import bar

    with torch.no_grad():
        ref = [module(b).float() for b in probe]
    probe_np = [b.numpy() for b in probe]  # _damage takes numpy batches, as block removal scores them
    curves = []
    for ch, floor, (g, c, _var) in bar(list(zip(chains, floors, eqs, strict=True)),
                                       desc="prune (reconstruct): sensitivity", unit="chain", disable=not progress):
        consumer = module.get_submodule(ch.consumer)
        keeps = sorted({max(kept_channels(ch.channels, r, round_to, 1.0), floor) for r in levels} - {ch.channels})
        path = obs_path(g, c, keeps, _output_weights(module, ch, c.shape[1]), damp)
        w0 = consumer.weight.detach().clone()
        b0 = None if consumer.bias is None else consumer.bias.detach().clone()
        curve = {ch.channels: 0.0}
        try:
            for keep, (_removed, w) in path.items():
                _set_weights(consumer, w, list(range(ch.channels)))
                curve[keep] = _damage(module, probe_np, ref, classification)
        finally:
            with torch.no_grad():
                consumer.weight.copy_(w0)
                if b0 is None:
                    consumer.bias = None
                else:
                    consumer.bias.copy_(b0)
        curves.append(curve)
    return curves


def allocate(chains: list[Chain], curves: list[dict[int, float]], removed: Any, budget: float,
             unit: int) -> list[int]:
    """Channels each chain keeps so that `removed(keeps)` (MACs or params) reaches `budget`,
    taking `unit` channels at a time from the chain whose measured damage (interpolated between the
    measured counts) rises least per unit removed."""

    def damage(k: int, keep: int) -> float:
        pts = sorted(curves[k].items())
        return float(np.interp(keep, [p[0] for p in pts], [p[1] for p in pts]))

    keep = [ch.channels for ch in chains]
    floor = [min(curves[k]) for k in range(len(chains))]
    now = removed(keep)
    while now < budget:
        best, best_k, best_gain = float("inf"), -1, 0.0
        for k in range(len(chains)):
            if keep[k] - unit < floor[k]:
                continue
            trial = keep.copy()
            trial[k] -= unit
            gain = removed(trial) - now
            rate = (damage(k, trial[k]) - damage(k, keep[k])) / max(gain, 1e-12)
            if rate < best:
                best, best_k, best_gain = rate, k, gain
        if best_k < 0:
            raise ConfigError(f"prune: pruning every chain as far as max_layer_ratio allows removes "
                              f"{now / max(budget, 1e-12):.0%} of the requested amount; lower the target, or "
                              "use method channel or block")
        keep[best_k] -= unit
        now += best_gain
    return keep


def prune_chains(module: Any, example: Any, ignored: list[Any], batches: list[Any], ratio: float | None,
                 round_to: int | None, max_ratio: float, progress: bool = True, damp: float = 1e-4,
                 target: tuple[str, float] | None = None, probe_samples: int = 64,
                 classification: bool = True, rounds: int = 1) -> dict[str, Any]:
    """Prune the chains of `module` (in place) with least-squares reconstruction on `batches`
    (tensors): every chain to `ratio`, or, with `target` ("macs" | "params", fraction), as many
    channels per chain as its measured sensitivity allows until that fraction is removed, in
    `rounds` equal steps that each measure the model pruned so far. Returns the log."""
    if not batches or sum(len(b) for b in batches) == 0:
        raise ConfigError("prune.method reconstruct: the calibration data is empty")
    module.eval()
    chains, dg = find_chains(module, example, ignored)
    if not chains:
        raise ConfigError("prune.method reconstruct: the model has no chain to prune (a layer whose channels "
                          "reach exactly one 1x1 conv or linear layer); use method channel")
    orig = copy.deepcopy(module).eval()
    info: dict[str, Any] = {"chains_found": len(chains), "samples": int(sum(len(b) for b in batches))}
    if target is None:
        keeps = [kept_channels(ch.channels, ratio or 0.0, round_to, max_ratio) for ch in chains]
        return {**info, "chains": _cut(module, orig, dg, chains, keeps, batches, damp, progress, {})}
    kind, frac = target
    total = _count(module, example, kind)
    levels = [x / 8 for x in range(1, 8) if x / 8 <= max_ratio + 1e-9]
    most = cost_model(module, example, chains, dg, kind)(
        [kept_channels(ch.channels, levels[-1], round_to, max_ratio) for ch in chains]) / total
    if most < frac:  # said before the minutes of sensitivity measurement, not after
        raise ConfigError(f"prune.target_{kind}: the model's chains hold at most {most:.0%} of its {kind} "
                          "within max_layer_ratio; lower the target, or use method channel or block")
    probe = _probe(batches, probe_samples)
    log: list[dict[str, Any]] = []
    alive: dict[str, list[int]] = {}  # original output channels still in a root, once a round cut it
    width = {ch.root: ch.channels for ch in chains}
    for r in range(rounds):
        if r:
            chains, dg = find_chains(module, example, ignored)
        goal = frac * (r + 1) / rounds  # of the original model's total
        removed_fn = cost_model(module, example, chains, dg, kind)
        now = _count(module, example, kind)
        # Sensitivity of the model as it is now: its own consumers' inputs and outputs.
        eqs = _all_normal_equations(module, chains, batches)
        # max_layer_ratio holds against the original widths, however many rounds cut a chain
        floors = [min(ch.channels, int(np.ceil(width[ch.root] * (1 - max_ratio)))) for ch in chains]
        curves = sensitivity(module, chains, eqs, probe, levels, round_to, floors, classification, damp,
                             progress)
        # The cost model counts conv / linear layers (and params of BatchNorm); Torch-Pruning's count,
        # the one reported, also has activations: ask for more until a pruned copy reaches the goal.
        budget = now - (1 - goal) * total
        for _ in range(6):
            keeps = allocate(chains, curves, removed_fn, budget, round_to or 1)
            got = 1 - measured(module, example, chains, keeps, kind) / total
            if got >= goal:
                break
            budget += (goal - got) * total * 1.05
        log += _cut(module, orig, dg, chains, keeps, batches, damp, progress, alive)
    return {**info, "chains": log, "allocation": "sensitivity", "rounds": rounds,
            "probe_samples": int(sum(len(b) for b in probe))}


def _cut(module: Any, orig: Any, dg: Any, chains: list[Chain], keeps: list[int], batches: list[Any],
         damp: float, progress: bool, alive: dict[str, list[int]]) -> list[dict[str, Any]]:
    """Cut each chain to its kept count in forward order, refitting its consumer toward the
    original model's output. `alive` maps a layer cut before (an earlier round) to its original
    output channels still present; it is updated."""
    from edgecompress.progress import bar

    log = []
    for ch, keep in bar(list(zip(chains, keeps, strict=True)), desc="prune (reconstruct)", unit="chain",
                        disable=not progress):
        if keep >= ch.channels:
            continue
        cols = alive.get(ch.consumer)
        g, c, var = _normal_equations(module, orig, ch, batches, cols)
        weights = _output_weights(orig, ch, _out_features(orig.get_submodule(ch.consumer)))
        if cols is not None:
            weights = weights[cols]
        removed, w = obs_select(g, c, keep, weights, damp)
        yy_raw = var + (c[-1] ** 2) / g[-1, -1]  # back from centred: sum y^2 = var + (sum y)^2 / n
        rel = float((weights**2 * _residual(g, c, w, yy_raw)).sum() / max((weights**2 * var).sum(), 1e-30))
        gone = set(removed)
        kept = [i for i in range(ch.channels) if i not in gone]
        root = module.get_submodule(ch.root)
        group = dg.get_pruning_group(root, dg.get_pruner_of_module(root).prune_out_channels, removed)
        group.prune()
        _set_weights(module.get_submodule(ch.consumer), w, kept)
        before = alive.get(ch.root, list(range(ch.channels)))
        alive[ch.root] = [before[i] for i in kept]
        log.append({"root": ch.root, "consumer": ch.consumer, "channels": ch.channels, "kept": keep,
                    "rel_error": round(rel, 5)})
    return log


def _probe(batches: list[Any], n: int) -> list[Any]:
    out, got = [], 0
    for b in batches:
        if got >= n:
            break
        out.append(b[: n - got])
        got += len(out[-1])
    return out


def _count(module: Any, example: Any, kind: str) -> float:
    from edgecompress.models.macs import count_ops_and_params

    macs, params = count_ops_and_params(module, example)
    return float(macs if kind == "macs" else params)


def cost_model(module: Any, example: Any, chains: list[Chain], dg: Any, kind: str) -> Any:
    """A function of the chains' kept channel counts giving the MACs (or params) they remove.
    A layer read by one chain and written by another (a 1x1 conv between two chains) costs the
    product of both fractions, so the cost is not a sum over chains."""
    from torch import nn

    macs: dict[Any, float] = {}

    def hook(m: Any, args: tuple, out: Any) -> None:
        per_out = out[0].numel()  # one sample
        if _conv(m):
            macs[m] = per_out * (m.in_channels // m.groups) * int(np.prod(m.kernel_size))
        else:
            macs[m] = per_out * m.in_features

    _forward_with(module, example, [(m, hook) for m in module.modules() if _conv(m) or isinstance(m, nn.Linear)])
    # per layer: [cost of the part scaled by both sides, chain of its inputs, chain of its outputs,
    #             cost of the part scaled by its outputs only (bias, BatchNorm, depthwise)]
    layers: dict[int, list[Any]] = {}
    for k, ch in enumerate(chains):
        root = module.get_submodule(ch.root)
        for dep, _ in dg.get_pruning_group(root, dg.get_pruner_of_module(root).prune_out_channels, [0]):
            m = dep.target.module
            if not isinstance(m, nn.Module):
                continue
            entry = layers.setdefault(id(m), [0.0, None, None, 0.0])
            dense = (_conv(m) or isinstance(m, nn.Linear)) and not _depthwise(m)
            if dense:
                # dense: m is a Conv1d / Conv2d / Linear (mypy reads m.weight through Module.__getattr__)
                weight = float(m.weight.numel()) if kind == "params" else macs.get(m, 0.0)  # type: ignore[operator]
                entry[0] = weight
                if dg.is_in_channel_pruning_fn(dep.handler):
                    entry[1] = k
                else:
                    entry[2] = k
                    bias = getattr(m, "bias", None)
                    entry[3] = float(bias.numel()) if kind == "params" and bias is not None else 0.0
            else:  # depthwise conv, BatchNorm...: one channel of this chain each
                entry[2] = k
                entry[3] = (float(sum(p.numel() for p in m.parameters(recurse=False))) if kind == "params"
                            else macs.get(m, 0.0))
    full = [ch.channels for ch in chains]

    def removed(keeps: list[int]) -> float:
        def frac(k: int | None) -> float:
            return 1.0 if k is None else keeps[k] / full[k]

        out = 0.0
        for both, k_in, k_out, single in layers.values():
            out += both * (1 - frac(k_in) * frac(k_out)) + single * (1 - frac(k_out))
        return out

    return removed


def measured(module: Any, example: Any, chains: list[Chain], keeps: list[int], kind: str) -> float:
    """MACs (or params) of `module` with the chains cut to `keeps`, counted on a pruned copy."""
    import torch_pruning as tp

    dry = copy.deepcopy(module)
    dg = tp.DependencyGraph().build_dependency(dry, example_inputs=example)
    for ch, keep in zip(chains, keeps, strict=True):
        if keep < ch.channels:
            root = dry.get_submodule(ch.root)
            dg.get_pruning_group(root, dg.get_pruner_of_module(root).prune_out_channels,
                                 list(range(ch.channels - keep))).prune()
    return _count(dry, example, kind)
