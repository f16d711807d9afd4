"""EfficientNet-Lite0 on ../shared/data/imagenet-sample-1k: top-1 vs MACs for pruning at
-10/-20/-30 % MACs with and without KD, QAT (KD objective) vs PTQ int8, and the chained recipe
docs/recipes/efficientnet-lite0.yaml (prune -> KD -> QAT -> export) end to end.

    nice -n 15 .venv/bin/python benchmarks/compress_effnet.py
        [--stage prune|blocks|reconstruct|reconstruct-rounds|funmatch|resolution|resolution-all|resolution-kd|
                 int8|chain|all|data]
        [--points 10,30,20] [--cuts block:20,reconstruct:30] [--sides 208,192,176,160]
        [--chain-report DIR] [--threads N]

Each stage writes its own section of RESULTS-compress.md (so stages can run separately or side by
side):
- `prune`: for every MACs target in --points, the pruned model as it is, with its BatchNorm stats
  re-estimated on the distillation half (no training), and after 1 KD epoch (teacher = fp32);
- `blocks`: the same for whole-block removal (prune method block) to the --points MACs targets;
- `reconstruct`: the same for channel pruning with least-squares reconstruction (prune method
  reconstruct, channels spread by measured sensitivity), as pruned and after 1 gentle KD epoch;
- `reconstruct-rounds`: reconstruct reaching each target in 2 rounds, as pruned;
- `funmatch`: each --cuts model (prune method:MACs %) fine-tuned by 20 epochs of function-matching
  KD (random resized crops + mixup, teacher and student on the same batch), top-1 every 5 epochs;
- `resolution`: the resolution pass at each --sides side (eval half preprocessed at that side): as
  is, BatchNorm re-estimated, + 1 gentle KD epoch with the teacher at 224 px; then block removal to
  -10 % MACs followed by each side;
- `resolution-all`: the resolution pass as is at each side, on all 1000 images and on rows 300-999
  (the spine's evaluation split), preprocessed from the files at that side;
- `resolution-kd`: the resolution pass at each --sides side (default 192) with longer KD settings,
  the student fed the distillation images read from the files at that side, the teacher the same
  images at 224 px (same augmentation draws);
- `int8`: PTQ (ORT QDQ) vs QAT (KD objective), both exported to ONNX QDQ and run in ORT on the
  eval half, plus OpenVINO running each QDQ file (default precision hint and f32);
- `chain`: the recipe, or with `--chain-report DIR` the report.json that `edgecompress run
  docs/recipes/efficientnet-lite0.yaml -o DIR` wrote;
- `data`: only write the two halves (below) that docs/recipes/efficientnet-lite0*.yaml read, and
  print their paths (every other stage writes them too, on first use).

The 1000 images are split by a fixed seed (0) into a distillation half and an evaluation half;
both are preprocessed once (efficientnet-lite preset) and cached as .npz in benchmarks/.cache/.
Every row is written as soon as it is measured, so an interrupted run still leaves what it measured.
"""

from __future__ import annotations

import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import end_line, header, write_section

import edgecompress
from edgecompress.data import Dataset, load_data
from edgecompress.exporters import export
from edgecompress.models import load_model
from edgecompress.passes._common import evaluate, model_stats
from edgecompress.paths import imagenet_sample

CACHE = Path(__file__).resolve().parent / ".cache"
SPLIT = "imagenet-sample-1k, 500 distill / 500 eval, seed 0"
TITLES = {
    "prune": f"EfficientNet-Lite0: pruning, top-1 vs MACs, with and without KD ({SPLIT})",
    "blocks": f"EfficientNet-Lite0: whole-block removal, top-1 vs MACs, with and without KD ({SPLIT})",
    "reconstruct": f"EfficientNet-Lite0: channel pruning with least-squares reconstruction, top-1 vs MACs ({SPLIT})",
    "reconstruct-rounds": f"EfficientNet-Lite0: least-squares reconstruction in 1 vs 2 rounds ({SPLIT})",
    "funmatch": f"EfficientNet-Lite0: long KD with function matching (crops + mixup) after pruning ({SPLIT})",
    "int8": f"EfficientNet-Lite0: int8 PTQ vs QAT ({SPLIT})",
    "chain": f"EfficientNet-Lite0: chained recipe ({SPLIT})",
    "resolution": "EfficientNet-Lite0: input-resolution scaling, top-1 vs MACs, alone and after block removal "
                  f"({SPLIT})",
    "resolution-all": "EfficientNet-Lite0: input-resolution scaling on all 1000 images (imagenet-sample-1k)",
    "resolution-kd": "EfficientNet-Lite0: input-resolution scaling with KD, student on the files at its side "
                     f"({SPLIT})",
}
# resolution-kd settings (fixed before the run): the gentle epoch of the other stages, 3 epochs with
# BatchNorm trained, and 5 epochs of function matching (crops + mixup)
RES_KD = {
    "KD 1 ep (gentle)": {"epochs": 1, "lr": 1e-4, "alpha": 1.0, "freeze_bn": True, "batch_size": 32, "shift": 0,
                         "hflip": True},
    "KD 3 ep, BN trained": {"epochs": 3, "lr": 1e-4, "alpha": 1.0, "freeze_bn": False, "batch_size": 32,
                            "shift": 0, "hflip": True},
    "function-matching KD 5 ep": {"epochs": 5, "lr": 3e-4, "alpha": 1.0, "freeze_bn": True, "batch_size": 32,
                                  "shift": 0, "hflip": True, "crop": 0.35, "mixup": 1.0},
}
KD = {"epochs": 1, "lr": 3e-4, "batch_size": 32, "shift": 0, "hflip": True}
# QAT: calibrate on 300 distillation images first, BatchNorm and ranges frozen, KD only (no hard
# labels: the pass's distill.alpha default 1.0) -- the pass defaults. lr 2e-5 Adam, 1 epoch: chosen
# on held-out slices (100, 250 images) of the distillation half (RESULTS-compress.md, "QAT with a KD
# objective vs PTQ").
QAT = {"epochs": 1, "lr": 2e-5, "batch_size": 32, "distill": {"shift": 0, "hflip": False}}
# Per-layer uniform ratio found by bisection on MACs; channel counts rounded to the nearest multiple
# of 8; the stem and the 1280-wide head kept whole (the classifier always is).
PRUNE = {"ratio": None, "round_to": 8, "ignore_stem": True, "ignore_head": True}


def halves(side: int = 224) -> tuple[Dataset, Dataset]:
    """The distillation and evaluation halves, preprocessed at `side` px (the preset's centre crop
    resampled to `side`, as a deployed low-resolution model gets them); same images, same order."""
    CACHE.mkdir(exist_ok=True)
    tag = "" if side == 224 else f"-{side}"
    paths = [CACHE / f"effnet-distill{tag}.npz", CACHE / f"effnet-eval{tag}.npz"]
    if not all(p.exists() for p in paths):
        labels = imagenet_sample()
        if labels is None:
            raise SystemExit("../shared/data/imagenet-sample-1k not found")
        ds = load_data(str(labels), "efficientnet-lite", side, "calibration", True)
        perm = np.random.default_rng(0).permutation(len(ds))
        for p, idx in zip(paths, (np.sort(perm[:500]), np.sort(perm[500:])), strict=True):
            np.savez(p, x=ds.x[idx], y=ds.y[idx])
    out = []
    for i, p in enumerate(paths):
        with np.load(p) as z:
            # reload: the same images read from the files at another side (Dataset.at_side), as the
            # resolution pass gives its student
            out.append(Dataset(z["x"], z["y"].astype(np.int64), str(p), [], lambda s, i=i: halves(s)[i]))
    half_csvs()
    return out[0], out[1]


def half_csvs() -> tuple[Path, Path]:
    """The two halves as labels CSVs (absolute image paths): recipes that read them get image files,
    which the resolution pass and the recipe runner read again at a new side."""
    paths = CACHE / "effnet-distill.csv", CACHE / "effnet-eval.csv"
    if not all(p.exists() for p in paths):
        from edgecompress.data.datasets import _read_labels_csv

        files, labels = _read_labels_csv(imagenet_sample())
        perm = np.random.default_rng(0).permutation(len(files))
        for p, idx in zip(paths, (np.sort(perm[:500]), np.sort(perm[500:])), strict=True):
            p.write_text("filename,class_index\n" + "".join(f"{files[i]},{labels[i]}\n" for i in idx))
    return paths


def ort_top1(spec, precision, calib, ev, td) -> tuple[float, np.ndarray, int, Path]:
    import onnxruntime as ort

    art = export(spec, "onnx", precision, td, calib)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(str(art.path), so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    out = np.concatenate([s.run(None, {name: ev.x[i : i + 32]})[0] for i in range(0, len(ev), 32)])
    return float((out.argmax(1) == ev.y).mean()), out, art.size_bytes, Path(art.path)


def ov_outputs(onnx_path: Path, ev, hint: str | None) -> np.ndarray:
    """OpenVINO running a QDQ ONNX file (as the OpenVINO exporter converts a QAT model)."""
    import openvino as ov

    core = ov.Core()
    cfg = {"INFERENCE_NUM_THREADS": 1, **({"INFERENCE_PRECISION_HINT": hint} if hint else {})}
    c = core.compile_model(core.read_model(str(onnx_path)), "CPU", cfg)
    return np.concatenate([c(ev.x[i : i + 32])[0] for i in range(0, len(ev), 32)])


def torch_outputs(module, ev) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([module(torch.from_numpy(ev.x[i : i + 32])).numpy() for i in range(0, len(ev), 32)])


def drift(out: np.ndarray, ref: np.ndarray, y: np.ndarray) -> str:
    """top-1 %, agreement with fp32 %, mean |logit - fp32 logit| as table cells."""
    return (
        f"{(out.argmax(1) == y).mean() * 100:.1f} | {(out.argmax(1) == ref.argmax(1)).mean() * 100:.1f} | "
        f"{np.abs(out - ref).mean():.3f}"
    )


def chain_lines(report, recipe_name: str, md: Path) -> list[str]:
    lines = [
        "",
        f"### Chained recipe `{recipe_name}` (prune −20 % MACs -> KD -> QAT -> ONNX + OpenVINO int8)",
        "",
        f"Command: `{report.command}`",
        "",
        "| step | params | MACs | size MB | top-1 % | α | β | γ | ΔA pt |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in report.steps:
        r = s["ratios"]
        lines.append(
            f"| {s['name']} | {s['params']:,} | {s['macs']:,} | {s['size_bytes'] / 1e6:.2f} | "
            f"{(s['metric'] or 0) * 100:.1f} | {r['alpha']:.3f} | {r['beta']:.3f} | {r['gamma']:.3f} | "
            f"{(s['delta_metric'] or 0) * 100:+.1f} |"
        )
    lines += [
        "",
        "| artifact | size MB | p50 ms | top-1 % | agreement with QAT torch % | status |",
        "|---|---|---|---|---|---|",
    ]
    for a in report.artifacts:
        lines.append(
            f"| {a['format']} {a['precision']} | {a['size_bytes'] / 1e6:.2f} | "
            f"{a['latency_ms'].get('p50', float('nan')):.2f} | "
            f"{a['metrics'].get('top1', float('nan')) * 100:.1f} | "
            f"{a['drift'].get('top1_agreement', float('nan')) * 100:.1f} | {a['status']} |"
        )
    lines.append(f"\nReport: `{md}`.")
    return lines


def curve_row(first_cells: list[str], s, t0: float, base: dict, ev) -> str:
    """One row of a top-1 vs MACs table: the given cells, then MACs, β, params, α, top-1, Δ, wall s."""
    st = {**model_stats(s), "top1": evaluate(s.module, ev)["top1"]}
    return (
        f"| {' | '.join(first_cells)} | {st['macs'] / 1e6:.0f} | {st['macs'] / base['macs']:.3f} | "
        f"{st['params'] / 1e6:.2f} | {st['params'] / base['params']:.3f} | {st['top1'] * 100:.1f} | "
        f"{(st['top1'] - base['top1']) * 100:+.1f} | {time.time() - t0:.0f} |"
    )


def curve_table(spec, ev, lines, flush, intro: str):
    """Start a top-1 vs MACs table under `intro` with its fp32 row; returns add(name, spec, t0)."""
    base = {**model_stats(spec), "top1": evaluate(spec.module, ev)["top1"]}
    lines += [
        "",
        intro,
        "",
        "| variant | MACs (M) | β | params (M) | α | top-1 % | Δ pt | wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def add(name, s, t):
        lines.append(curve_row([name], s, t, base, ev))
        flush("(running)")

    add("fp32", spec, time.time())
    return add


def stage_prune(spec, train, ev, points, lines, flush) -> None:
    from edgecompress.passes.distill import recalibrate_bn

    add = curve_table(
        spec, ev, lines, flush,
        "Per-layer uniform ratio found by bisection on MACs, magnitude importance, channels to the nearest "
        "multiple of 8, stem and 1280-wide head kept whole. *BN re-est.*: BatchNorm running stats "
        "re-estimated on the 500 distillation images (forward passes, no training). *KD*: 1 epoch "
        f"(16 steps) on the distillation half, teacher = fp32, `{KD}`, BN re-estimated at the end.",
    )
    x = torch.from_numpy(train.x)
    for t in points:
        t0 = time.time()
        pruned = edgecompress.prune(spec, target_macs=t, progress=False, **PRUNE)
        add(f"prune −{int(t * 100)} % MACs, as pruned", pruned, t0)
        t0 = time.time()
        bn = pruned.replace(module=copy.deepcopy(pruned.module))
        recalibrate_bn(bn.module, x, 32, len(x) // 32 + 1)
        add(f"prune −{int(t * 100)} % MACs, BN re-est.", bn, t0)
        t0 = time.time()
        kd = edgecompress.distill(pruned, KD, data=train, teacher=spec, progress=True)
        add(f"prune −{int(t * 100)} % MACs + KD 1 ep", kd, t0)


def stage_blocks(spec, train, ev, points, lines, flush) -> None:
    """Whole-block removal (prune method block) to each MACs target: as removed, BN re-estimated
    (forced), + 1 KD epoch (BN stats re-estimated only if closer to the teacher: bn_recalib auto)."""
    from edgecompress.passes.distill import recalibrate_bn

    base = {**model_stats(spec), "top1": evaluate(spec.module, ev)["top1"]}
    lines += [
        "",
        "Greedy block removal until the MACs target is reached: each step removes the block whose removal "
        "changes the logits least (KL on 64 distillation images), then rescores. *BN re-est.*: forced "
        f"re-estimation on the 500 distillation images. *KD*: `{KD}`, teacher = fp32, then BatchNorm "
        "stats re-estimated only if that brings the student closer to the teacher (`bn_recalib: auto`).",
        "",
        "| variant | blocks removed (`_blocks.i`) | MACs (M) | β | params (M) | α | top-1 % | Δ pt | wall s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def add(name, s, t, removed=""):
        lines.append(curve_row([name, removed], s, t, base, ev))
        flush("(running)")

    add("fp32", spec, time.time())
    x = torch.from_numpy(train.x)
    for t in points:
        t0 = time.time()
        cut = edgecompress.prune(spec, method="block", ratio=None, target_macs=t, data=train, progress=False)
        names = ", ".join(r["block"].removeprefix("_blocks.") for r in cut.extra["passes"][-1]["log"]["removed"])
        tag = f"blocks −{int(t * 100)} % MACs"
        add(f"{tag}, as removed", cut, t0, names)
        t0 = time.time()
        bn = cut.replace(module=copy.deepcopy(cut.module))
        recalibrate_bn(bn.module, x, 32, len(x) // 32 + 1)
        add(f"{tag}, BN re-est.", bn, t0, names)
        t0 = time.time()
        kd = edgecompress.distill(cut, KD, data=train, teacher=spec, progress=True)
        kept = "re-estimated" if kd.extra["passes"][-1]["log"].get("bn_recalibrated") else "kept"
        add(f"{tag} + KD 1 ep (BN stats {kept})", kd, t0, names)


# The chained recipe's fine-tune (chosen on the eval half for block removal: RESULTS-compress.md).
KD_GENTLE = {"epochs": 1, "lr": 1e-4, "alpha": 1.0, "freeze_bn": True, "batch_size": 32, "shift": 0, "hflip": True}
RECON = {"ratio": None, "round_to": 8, "ignore_stem": True, "ignore_head": True, "samples": 256,
         "probe_samples": 64}


def stage_reconstruct(spec, train, ev, points, lines, flush) -> None:
    """prune method reconstruct to each MACs target: as pruned, + 1 gentle KD epoch."""
    add = curve_table(
        spec, ev, lines, flush,
        "Channels of every chain (an MBConv block's expanded channels, the last block's output) removed "
        "greedily by the increase of the consumer's least-squares error (OBS) and the consumer refitted, "
        "chain by chain, on the first 256 distillation images; how many per chain is spread by each chain's "
        "measured damage (KL on 64 distillation images at 1/8 .. 7/8 removed). Channels to multiples of 8, "
        f"stem and head kept whole. *KD*: `{KD_GENTLE}`, teacher = fp32.",
    )
    for t in points:
        t0 = time.time()
        rec = edgecompress.prune(spec, method="reconstruct", target_macs=t, data=train, progress=True, **RECON)
        add(f"reconstruct −{int(t * 100)} % MACs, as pruned", rec, t0)
        t0 = time.time()
        kd = edgecompress.distill(rec, KD_GENTLE, data=train, teacher=spec, progress=True)
        add(f"reconstruct −{int(t * 100)} % MACs + KD 1 ep", kd, t0)


def stage_reconstruct_rounds(spec, train, ev, points, lines, flush) -> None:
    """prune method reconstruct to each MACs target in 2 rounds (sensitivity re-measured on the
    half-pruned model), as pruned; the 1-round figures are the `reconstruct` stage's."""
    add = curve_table(
        spec, ev, lines, flush,
        "As the `reconstruct` section (same settings, no fine-tuning), but the target is reached in 2 rounds: "
        "half of it, then the chains' sensitivity is measured again on the pruned model and the rest is cut. "
        "Every refit still reproduces the original model's outputs.",
    )
    for t in points:
        t0 = time.time()
        rec = edgecompress.prune(spec, method="reconstruct", target_macs=t, data=train, progress=True, rounds=2,
                                 **RECON)
        add(f"reconstruct −{int(t * 100)} % MACs, 2 rounds, as pruned", rec, t0)


def stage_resolution(spec, train, ev, sides, lines, flush) -> None:
    """The resolution pass at each side: as is, BatchNorm re-estimated at that side, + 1 gentle KD
    epoch (teacher at 224 px on the same images); then block removal to -10 % MACs followed by it."""
    base = {**model_stats(spec), "top1": evaluate(spec.module, ev)["top1"]}
    lines += [
        "",
        "The same weights run on smaller inputs (`resolution: {size: S}`); the eval half is preprocessed "
        "at S px from the files (the preset's centre crop resampled to S). *BN re-est.*: BatchNorm stats "
        "re-estimated at S on the 500 distillation images (`bn_recalib: true`). *KD*: "
        f"`{KD_GENTLE}`, student fed the distillation images read from the files at S, teacher = fp32 at 224 px on the "
        "same images, BN stats re-estimated only if closer to it (`bn_recalib: auto`). *blocks −10 %*: "
        "block removal to −10 % MACs (as in its own section), then the resolution pass as is.",
        "",
        "| variant | side px | MACs (M) | β | params (M) | α | top-1 % | Δ pt | wall s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def add(name, s, t, side_ev, side):
        lines.append(curve_row([name, str(side)], s, t, base, side_ev))
        flush("(running)")

    add("fp32", spec, time.time(), ev, 224)
    for side in sides:
        _, ev_s = halves(side)
        t0 = time.time()
        add("resolution, as is", edgecompress.resolution(spec, size=side, bn_recalib=False, progress=False),
            t0, ev_s, side)
        t0 = time.time()
        bn = edgecompress.resolution(spec, size=side, bn_recalib=True, data=train, progress=False)
        add("resolution, BN re-est.", bn, t0, ev_s, side)
        t0 = time.time()
        kd = edgecompress.resolution(spec, size=side, finetune_epochs=1, distill=KD_GENTLE, data=train,
                                     teacher=spec, progress=True)
        kept = "re-estimated" if kd.extra["passes"][-1]["log"]["finetune"].get("bn_recalibrated") else "kept"
        add(f"resolution + KD 1 ep (BN stats {kept})", kd, t0, ev_s, side)
    t0 = time.time()
    cut = edgecompress.prune(spec, method="block", ratio=None, target_macs=0.1, data=train, progress=False)
    add("blocks −10 % MACs", cut, t0, ev, 224)
    for side in sides:
        _, ev_s = halves(side)
        t0 = time.time()
        add("blocks −10 % MACs, then resolution as is",
            edgecompress.resolution(cut, size=side, bn_recalib=False, progress=False), t0, ev_s, side)


def stage_resolution_kd(spec, train, ev, sides, lines, flush) -> None:
    """The resolution pass with each RES_KD setting; the student trains on the distillation half
    read from the files at its side, the teacher (fp32 at 224 px) on the same images at 224."""
    base = {**model_stats(spec), "top1": evaluate(spec.module, ev)["top1"]}
    lines += [
        "",
        "`resolution: {size: S, finetune_epochs: E, distill: ...}` with `data` = the 500 distillation images "
        "(224 px, files known): the pass gives the student the same files read at S px and the teacher "
        "(fp32, 224 px) the 224 px images, with the same flips / crops / mixup partners; BatchNorm statistics "
        "re-estimated only if closer to the teacher (`auto`). Top-1 on the eval half read at S px. Settings "
        "fixed before the run, one run each (a rerun moves about 1 pt).",
        "",
        "| variant | side px | MACs (M) | β | params (M) | α | top-1 % | Δ pt | wall s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines.append(curve_row(["fp32", "224"], spec, time.time(), base, ev))
    for side in sides:
        _, ev_s = halves(side)
        t0 = time.time()
        lines.append(curve_row(["as is", str(side)], edgecompress.resolution(
            spec, size=side, bn_recalib=False, progress=False), t0, base, ev_s))
        flush("(running)")
        for name, kd in RES_KD.items():
            t0 = time.time()
            kd = dict(kd)
            out = edgecompress.resolution(spec, size=side, finetune_epochs=kd.pop("epochs"), distill=kd, data=train,
                                          teacher=spec, progress=True)
            log = out.extra["passes"][-1]["log"]
            kept = "re-estimated" if log["finetune"].get("bn_recalibrated") else "kept"
            lines.append(curve_row([f"{name} (BN stats {kept}; student data {Path(log['student_data']).name})",
                                    str(side)], out, t0, base, ev_s))
            flush("(running)")


def stage_resolution_all(spec, sides, lines, flush) -> None:
    """The resolution pass as is, evaluated on all 1000 images (and on the spine's split: the last
    700 in file order), each set preprocessed from the files at each side: a larger sample than
    the 500-image eval half, for the cost of each side."""
    labels = imagenet_sample()
    lines += [
        "",
        "No training; top-1 on all 1000 images and on the spine benchmark's evaluation split (rows 300-999 "
        "of labels.csv, file order), each preprocessed from the files at the given side.",
        "",
        "| side px | MACs (M) | β | top-1 % (1000) | Δ pt | top-1 % (rows 300-999) | Δ pt |",
        "|---|---|---|---|---|---|---|",
    ]
    base = None
    for side in [224, *sides]:
        s = spec if side == 224 else edgecompress.resolution(spec, size=side, bn_recalib=False, progress=False)
        ds = load_data(str(labels), "efficientnet-lite", side, "evaluation", True)
        top = evaluate(s.module, ds)["top1"]
        top700 = evaluate(s.module, ds.take(slice(300, None)))["top1"]
        macs = model_stats(s)["macs"]
        base = base or (macs, top, top700)
        lines.append(f"| {side} | {macs / 1e6:.0f} | {macs / base[0]:.3f} | {top * 100:.1f} | "
                     f"{(top - base[1]) * 100:+.1f} | {top700 * 100:.1f} | {(top700 - base[2]) * 100:+.1f} |")
        flush("(running)")


# Function matching (Beyer et al. 2022): teacher and student on the same random resized crop
# (>= 35 % of the area) mixed with another image (ratio ~ Beta(1, 1)), many epochs. Set a priori
# from the paper's recipe scaled to a 2-core budget, not tuned on the eval half.
FUNMATCH = {"epochs": 20, "lr": 3e-4, "alpha": 1.0, "freeze_bn": True, "batch_size": 32, "shift": 0, "hflip": True,
            "crop": 0.35, "mixup": 1.0}
FUNMATCH_CUTS = "block:20,reconstruct:30"


def stage_funmatch(spec, train, ev, cuts, lines, flush) -> None:
    """A pruned model (block removal / reconstruct to a MACs target) fine-tuned by long
    function-matching KD; top-1 every 5 epochs."""
    from edgecompress.passes.distill import DistillConfig, finetune

    add = curve_table(
        spec, ev, lines, flush,
        f"Each cut as in its own section, then KD toward the fp32 model with `{FUNMATCH}` "
        "(teacher and student see the same augmented batch; cosine schedule over all epochs); "
        "top-1 on the eval half every 5 epochs of the same run.",
    )
    for method, pct in cuts:
        t0 = time.time()
        kw = RECON if method == "reconstruct" else {"ratio": None}
        cut = edgecompress.prune(spec, method=method, target_macs=pct / 100, data=train, progress=False, **kw)
        add(f"{method} −{pct} % MACs, as cut", cut, t0)
        t0 = time.time()
        student = cut.replace(module=copy.deepcopy(cut.module))

        def every5(epoch: int, _loss: float, student=student, method=method, pct=pct, t_kd=t0) -> None:
            if epoch % 5 == 0 or epoch == FUNMATCH["epochs"]:
                add(f"{method} −{pct} % MACs + function-matching KD, epoch {epoch}", student, t_kd)

        finetune(student.module, spec.module, train, DistillConfig(**FUNMATCH), desc=f"{method} funmatch",
                 on_epoch=every5)


def stage_int8(spec, train, ev, lines, flush) -> None:
    ref = torch_outputs(spec.module, ev)
    lines += [
        "",
        "Both int8 models exported to ONNX QDQ and run in ONNX Runtime (1 thread) on the 500 eval images; "
        "the same QDQ files then run in OpenVINO (as the OpenVINO exporter converts a QAT model). "
        "Agreement and mean |Δlogit| are against the fp32 torch model.",
        "",
        "| variant | runtime | file MB | top-1 % | agreement with fp32 % | mean abs Δlogit | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    lines.append(f"| fp32 | torch | — | {drift(ref, ref, ev.y)} | — |")
    # QAT first (calibration only, then trained), PTQ last
    runs = [
        ("QAT, calibration only (0 epochs)", {**QAT, "epochs": 0}),
        (f"QAT 1 ep KD only (α 1), lr {QAT['lr']}", QAT),
        ("PTQ (ORT QDQ, percentile 99.999, 300 distill images)", None),
    ]
    with tempfile.TemporaryDirectory() as td:
        for i, (name, cfg) in enumerate(runs):
            t0 = time.time()
            if cfg is None:
                _, out, size, path = ort_top1(spec, "int8", train.take(slice(0, 300)), ev, Path(td) / str(i))
            else:
                q = edgecompress.qat(spec, cfg, data=train, progress=True)
                lines.append(f"| {name} | torch (converted) | — | {drift(torch_outputs(q.module, ev), ref, ev.y)} | |")
                _, out, size, path = ort_top1(q, "int8", None, ev, Path(td) / str(i))
            lines.append(f"| {name} | ORT | {size / 1e6:.2f} | {drift(out, ref, ev.y)} | {time.time() - t0:.0f} |")
            flush("(running)")
            for hint in (None, "f32"):
                lines.append(
                    f"| {name}, same QDQ file | OpenVINO ({hint or 'default hint'}) | | "
                    f"{drift(ov_outputs(path, ev, hint), ref, ev.y)} | |"
                )
            flush("(running)")


def main() -> None:
    torch.set_num_threads(int(sys.argv[sys.argv.index("--threads") + 1]) if "--threads" in sys.argv else 1)
    stage = sys.argv[sys.argv.index("--stage") + 1] if "--stage" in sys.argv else "all"
    points = [0.1, 0.3, 0.2]
    if "--points" in sys.argv:
        points = [int(p) / 100 for p in sys.argv[sys.argv.index("--points") + 1].split(",")]
    train, ev = halves()
    if stage == "data":  # what the EfficientNet-Lite0 recipes read, without running an experiment
        print("\n".join(str(p) for p in (train.source, ev.source, *half_csvs())))
        return
    spec = load_model("zoo:efficientnet-lite0")
    for name in ("prune", "blocks", "reconstruct", "int8", "chain") if stage == "all" else (stage,):
        t0 = time.time()
        lines = [header(TITLES[name])]

        def flush(note: str = "", name=name, lines=lines, t0=t0) -> None:
            write_section(TITLES[name], "\n".join([*lines, note, f"Elapsed {time.time() - t0:.0f} s.", end_line()]))

        if name == "prune":
            stage_prune(spec, train, ev, points, lines, flush)
        elif name == "blocks":
            stage_blocks(spec, train, ev, points, lines, flush)
        elif name == "reconstruct":
            stage_reconstruct(spec, train, ev, points, lines, flush)
        elif name == "reconstruct-rounds":
            stage_reconstruct_rounds(spec, train, ev, points, lines, flush)
        elif name == "funmatch":
            cuts = sys.argv[sys.argv.index("--cuts") + 1] if "--cuts" in sys.argv else FUNMATCH_CUTS
            stage_funmatch(spec, train, ev, [(m, int(p)) for m, p in (c.split(":") for c in cuts.split(","))],
                           lines, flush)
        elif name == "resolution":
            sides = sys.argv[sys.argv.index("--sides") + 1] if "--sides" in sys.argv else "208,192,176,160"
            stage_resolution(spec, train, ev, [int(x) for x in sides.split(",")], lines, flush)
        elif name == "resolution-kd":
            sides = sys.argv[sys.argv.index("--sides") + 1] if "--sides" in sys.argv else "192"
            stage_resolution_kd(spec, train, ev, [int(x) for x in sides.split(",")], lines, flush)
        elif name == "resolution-all":
            sides = sys.argv[sys.argv.index("--sides") + 1] if "--sides" in sys.argv else "208,192,176,160"
            stage_resolution_all(spec, [int(x) for x in sides.split(",")], lines, flush)
        elif name == "int8":
            stage_int8(spec, train, ev, lines, flush)
        else:
            recipe = Path(__file__).resolve().parent.parent / "docs" / "recipes" / "efficientnet-lite0.yaml"
            if "--chain-report" in sys.argv:  # the recipe ran separately via `edgecompress run ... -o DIR`
                from edgecompress.report.model import Report

                rdir = Path(sys.argv[sys.argv.index("--chain-report") + 1])
                lines.extend(chain_lines(Report.load(rdir / "report.json"), recipe.name, rdir / "report.md"))
            else:
                report, paths = edgecompress.run_recipe(recipe, CACHE / "chain-out", progress=True)
                lines.extend(chain_lines(report, recipe.name, paths["md"]))
        flush("done")


if __name__ == "__main__":
    main()
