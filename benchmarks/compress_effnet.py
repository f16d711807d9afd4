"""EfficientNet-Lite0 on ../shared/data/imagenet-sample-1k: top-1 vs MACs for pruning at
-10/-20/-30 % MACs with and without KD, QAT (KD objective) vs PTQ int8, and the chained recipe
docs/recipes/efficientnet-lite0.yaml (prune -> KD -> QAT -> export) end to end.

    nice -n 19 .venv/bin/python benchmarks/compress_effnet.py [--skip-chain | --chain-report DIR]

`--chain-report DIR` reads the report.json that `edgecompress run docs/recipes/efficientnet-lite0.yaml
-o DIR` wrote (run it beside this script) instead of running the recipe here.

The 1000 images are split by a fixed seed (0) into a distillation half and an evaluation half;
both are preprocessed once (efficientnet-lite preset) and cached as .npz in benchmarks/.cache/.
Every stage appends its rows to benchmarks/RESULTS-compress.md as soon as it finishes, so an
interrupted run still leaves what it measured.
"""

from __future__ import annotations

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
TITLE = "EfficientNet-Lite0 (imagenet-sample-1k, 500 distill / 500 eval, seed 0)"
KD = {"epochs": 1, "lr": 3e-4, "batch_size": 32, "shift": 0, "hflip": True}
# Per-layer uniform ratio found by bisection on MACs; channel counts rounded to the nearest multiple
# of 8; the stem and the 1280-wide head kept whole (the classifier always is).
PRUNE = {"ratio": None, "round_to": 8, "ignore_stem": True, "ignore_head": True}


def halves() -> tuple[Dataset, Dataset]:
    CACHE.mkdir(exist_ok=True)
    paths = [CACHE / "effnet-distill.npz", CACHE / "effnet-eval.npz"]
    if not all(p.exists() for p in paths):
        labels = imagenet_sample()
        if labels is None:
            raise SystemExit("../shared/data/imagenet-sample-1k not found")
        ds = load_data(str(labels), "efficientnet-lite", 224, "calibration", True)
        perm = np.random.default_rng(0).permutation(len(ds))
        for p, idx in zip(paths, (np.sort(perm[:500]), np.sort(perm[500:])), strict=True):
            np.savez(p, x=ds.x[idx], y=ds.y[idx])
    out = []
    for p in paths:
        with np.load(p) as z:
            out.append(Dataset(z["x"], z["y"].astype(np.int64), str(p)))
    return out[0], out[1]


def ort_top1(spec, precision, calib, ev, td) -> tuple[float, float, int]:
    import onnxruntime as ort

    art = export(spec, "onnx", precision, td, calib)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(str(art.path), so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    out = np.concatenate([s.run(None, {name: ev.x[i:i + 32]})[0] for i in range(0, len(ev), 32)])
    return float((out.argmax(1) == ev.y).mean()), out, art.size_bytes


def chain_lines(report, recipe_name: str, md: Path) -> list[str]:
    lines = ["", f"### Chained recipe `{recipe_name}` (prune −20 % MACs -> KD -> QAT -> ONNX + OpenVINO int8)",
             "", f"Command: `{report.command}`", "",
             "| step | params | MACs | size MB | top-1 % | α | β | γ | ΔA pt |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in report.steps:
        r = s["ratios"]
        lines.append(f"| {s['name']} | {s['params']:,} | {s['macs']:,} | {s['size_bytes'] / 1e6:.2f} | "
                     f"{(s['metric'] or 0) * 100:.1f} | {r['alpha']:.3f} | {r['beta']:.3f} | {r['gamma']:.3f} | "
                     f"{(s['delta_metric'] or 0) * 100:+.1f} |")
    lines += ["", "| artifact | size MB | p50 ms | top-1 % | agreement with QAT torch % | status |",
              "|---|---|---|---|---|---|"]
    for a in report.artifacts:
        lines.append(f"| {a['format']} {a['precision']} | {a['size_bytes'] / 1e6:.2f} | "
                     f"{a['latency_ms'].get('p50', float('nan')):.2f} | "
                     f"{a['metrics'].get('top1', float('nan')) * 100:.1f} | "
                     f"{a['drift'].get('top1_agreement', float('nan')) * 100:.1f} | {a['status']} |")
    lines.append(f"\nReport: `{md}`.")
    return lines


def main() -> None:
    torch.set_num_threads(1)
    t0 = time.time()
    head = header(TITLE)
    lines = [head]

    def flush(note: str = "") -> None:
        write_section(TITLE, "\n".join([*lines, note, f"Elapsed {time.time() - t0:.0f} s.", end_line()]))

    train, ev = halves()
    spec = load_model("zoo:efficientnet-lite0")
    base = {**model_stats(spec), "top1": evaluate(spec.module, ev)["top1"]}
    ref = None
    lines += ["", "### Pruning (magnitude, per layer, round_to 8, stem/head kept): top-1 vs MACs, 500 eval images", "",
              "| variant | MACs (M) | β | params (M) | α | top-1 % | Δ pt | KD |", "|---|---|---|---|---|---|---|---|"]

    def add(name, s, kd):
        st = {**model_stats(s), "top1": evaluate(s.module, ev)["top1"]}
        lines.append(f"| {name} | {st['macs'] / 1e6:.0f} | {st['macs'] / base['macs']:.3f} | "
                     f"{st['params'] / 1e6:.2f} | {st['params'] / base['params']:.3f} | {st['top1'] * 100:.1f} | "
                     f"{(st['top1'] - base['top1']) * 100:+.1f} | {kd} |")
        flush("(running)")

    add("fp32", spec, "—")
    pruned = {}
    for t in (0.1, 0.2, 0.3):
        pruned[t] = edgecompress.prune(spec, target_macs=t, progress=False, **PRUNE)
        add(f"prune −{int(t * 100)} % MACs", pruned[t], "no")
    lines += ["", "### int8: PTQ vs QAT (KD objective), ONNX Runtime QDQ, 1 thread", "",
              "| variant | file MB | top-1 % | Δ vs fp32 pt | agreement with fp32 % |", "|---|---|---|---|---|"]
    with torch.no_grad():
        ref = np.concatenate([spec.module(torch.from_numpy(ev.x[i:i + 32])).numpy()
                              for i in range(0, len(ev), 32)])
    with tempfile.TemporaryDirectory() as td:
        for name, s, prec, calib in [("PTQ (ORT MinMax, 300 distill-half images)", spec, "int8",
                                      train.take(slice(0, 300)))]:
            acc, out, size = ort_top1(s, prec, calib, ev, td)
            lines.append(f"| {name} | {size / 1e6:.2f} | {acc * 100:.1f} | {(acc - base['top1']) * 100:+.1f} | "
                         f"{(out.argmax(1) == ref.argmax(1)).mean() * 100:.1f} |")
            flush("(running)")
        q = edgecompress.qat(spec, epochs=1, lr=2e-5, batch_size=32, data=train,
                             distill={"shift": 0, "hflip": True}, progress=True)
        acc, out, size = ort_top1(q, "int8", None, ev, td)
        lines.append(f"| QAT 1 ep on the 500 distill images (KD, lr 2e-5) | {size / 1e6:.2f} | {acc * 100:.1f} | "
                     f"{(acc - base['top1']) * 100:+.1f} | {(out.argmax(1) == ref.argmax(1)).mean() * 100:.1f} |")
        flush("(running)")
    lines += ["", "### Pruning + KD (1 epoch on the 500 distillation images, teacher = fp32)", "",
              "| variant | MACs (M) | β | params (M) | α | top-1 % | Δ pt | KD |", "|---|---|---|---|---|---|---|---|"]
    for t in (0.1, 0.2, 0.3):
        kd = edgecompress.distill(pruned[t], KD, data=train, teacher=spec, progress=True)
        add(f"prune −{int(t * 100)} % MACs + KD", kd, "1 ep")
    recipe = Path(__file__).resolve().parent.parent / "docs" / "recipes" / "efficientnet-lite0.yaml"
    if "--chain-report" in sys.argv:  # the recipe ran separately via `edgecompress run ... -o DIR`
        from edgecompress.report.model import Report

        rdir = Path(sys.argv[sys.argv.index("--chain-report") + 1])
        while not (rdir / "report.json").exists():  # it may still be running beside this script
            flush(f"(waiting for {rdir}/report.json)")
            time.sleep(30)
        lines.extend(chain_lines(Report.load(rdir / "report.json"), recipe.name, rdir / "report.md"))
    elif "--skip-chain" not in sys.argv:
        report, paths = edgecompress.run_recipe(recipe, CACHE / "chain-out", progress=True)
        lines.extend(chain_lines(report, recipe.name, paths["md"]))
    flush("done")


if __name__ == "__main__":
    main()
