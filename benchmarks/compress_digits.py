"""digits-cnn: 50 % channel pruning + KD, QAT int8 vs PTQ int8, low-rank at -40 % params.

    nice .venv/bin/python benchmarks/compress_digits.py

Writes its section of benchmarks/RESULTS-compress.md. Accuracy is on the fixed 450-image test
split (1 image = 0.22 pt); fine-tuning uses the 1347-image train split, teacher = fp32 model.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import end_line, header, write_section

import edgecompress
from edgecompress.exporters import export
from edgecompress.models import load_model
from edgecompress.passes._common import evaluate, model_stats, resolve_dataset


def ort_top1(spec, precision, calib, ev, td):
    import onnxruntime as ort

    art = export(spec, "onnx", precision, td, calib)
    s = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"])
    out = s.run(None, {s.get_inputs()[0].name: ev.x})[0]
    return float((out.argmax(1) == ev.y).mean()), art.size_bytes


def main() -> None:
    torch.set_num_threads(1)
    head = header("digits-cnn (scikit-learn digits, 450 test images)")
    t0 = time.time()
    spec = load_model("zoo:digits-cnn")
    train = resolve_dataset(spec, None, "train", False)
    ev = resolve_dataset(spec, None, "evaluation", False)
    base = {**model_stats(spec), "top1": evaluate(spec.module, ev)["top1"]}
    rows = [("fp32", base, base["top1"], "")]

    def row(name, s, note=""):
        st = {**model_stats(s), "top1": evaluate(s.module, ev)["top1"]}
        rows.append((name, st, st["top1"], note))
        print(name, st, file=sys.stderr)
        return st

    pruned = edgecompress.prune(spec, ratio=0.5, finetune_epochs=15, distill={"lr": 3e-3}, data=train,
                                progress=False)
    row("prune 50 % channels + KD 15 ep", pruned)
    pruned_kd = edgecompress.distill(pruned, epochs=10, lr=1e-3, data=train, teacher=spec, progress=False)
    row("  + KD 10 more ep", pruned_kd)
    raw = edgecompress.prune(spec, ratio=0.5, progress=False)
    row("prune 50 % channels, no fine-tuning", raw)
    # Least-squares reconstruction: only the layers whose channels feed one 1x1 conv / linear layer
    # (down -> pw, pw -> fc1, fc1 -> fc2), cut to a quarter; the same layers by magnitude alongside.
    rec = edgecompress.prune(spec, ratio=0.75, method="reconstruct", data=train, progress=False)
    row("reconstruct: chains cut to 25 %, no fine-tuning", rec)
    same = edgecompress.prune(spec, ratio=0.75, ignored=["stem.0", "res_a.0"], progress=False)
    row("same layers cut to 25 % by magnitude, no fine-tuning", same)
    lr = edgecompress.lowrank(spec, energy=None, param_budget=0.6, finetune_epochs=15,
                              distill={"lr": 3e-3}, data=train, progress=False)
    row("low-rank SVD to 60 % params + KD 15 ep", lr)
    lr0 = edgecompress.lowrank(spec, energy=None, param_budget=0.6, progress=False)
    row("low-rank SVD to 60 % params, no fine-tuning", lr0)

    with tempfile.TemporaryDirectory() as td:
        ptq, ptq_size = ort_top1(spec, "int8", train.take(slice(0, 300)), ev, td)
        q = edgecompress.qat(spec, epochs=2, lr=1e-4, data=train, progress=False)
        qat_torch = evaluate(q.module, ev)["top1"]
        qat_ort, qat_size = ort_top1(q, "int8", None, ev, td)
        # QAT on the pruned + KD model too (the chained recipe's last step).
        qp = edgecompress.qat(pruned_kd, epochs=2, lr=1e-4, data=train, teacher=spec, progress=False)
        qp_ort, qp_size = ort_top1(qp, "int8", None, ev, td)
        ptq_p, ptq_p_size = ort_top1(pruned_kd, "int8", train.take(slice(0, 300)), ev, td)

    lines = [head, "", "| model | params | MACs | state_dict KB | top-1 % | Δ vs fp32 pt |",
             "|---|---|---|---|---|---|"]
    for name, st, top1, _ in rows:
        lines.append(f"| {name} | {st['params']:,} ({st['params'] / base['params']:.2f}) | "
                     f"{st['macs']:,} ({st['macs'] / base['macs']:.2f}) | {st['size_bytes'] / 1e3:.1f} | "
                     f"{top1 * 100:.2f} | {(top1 - base['top1']) * 100:+.2f} |")
    lines += ["", "| int8 (ONNX Runtime, QDQ) | file KB | top-1 % | Δ vs fp32 pt |", "|---|---|---|---|"]
    for name, size, acc in [
        ("PTQ (ORT quantize_static, percentile 99.999 as the exporter's default, 300 train images)", ptq_size, ptq),
        ("QAT 2 ep, KD objective (PT2E -> QDQ export)", qat_size, qat_ort),
        ("pruned 50 % + KD, then PTQ", ptq_p_size, ptq_p),
        ("pruned 50 % + KD, then QAT 2 ep (KD, teacher fp32)", qp_size, qp_ort),
    ]:
        lines.append(f"| {name} | {size / 1e3:.1f} | {acc * 100:.2f} | {(acc - base['top1']) * 100:+.2f} |")
    lines += ["", f"QAT torch model top-1 {qat_torch * 100:.2f} %; its ORT int8 export {qat_ort * 100:.2f} %.",
              f"Total wall time {time.time() - t0:.0f} s.", end_line()]
    write_section("digits-cnn (scikit-learn digits, 450 test images)", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
