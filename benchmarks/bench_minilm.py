#!/usr/bin/env python3
"""all-MiniLM-L6-v2 through every exporter: STS-B dev Spearman, drift, size and 1-thread latency.

Usage: .venv/bin/python benchmarks/bench_minilm.py [--out DIR] [--runs 100] [--reuse] [--no-latency]
       [--formats onnx:fp32,onnx:int8-dynamic,onnx:int8,openvino:fp32,openvino:int8,tflite:fp32,
                  tflite:dynamic-int8]

- fp32 reference: PyTorch, mean pooling + L2 norm, on ../shared/data/stsbenchmark/sts-dev.csv
  (1500 pairs = 3000 sentences, padded to the longest sentence of the set).
- int8 calibration (ORT static QDQ, NNCF): the first 150 pairs (300 sentences) of sts-train.csv.
- Accuracy: every artifact runs the same 3000 sentences through targets/bench.py; Spearman x100 of
  the cosine of each pair's embeddings vs the gold scores, and embedding cosine vs PyTorch fp32.
- Latency: batch 1, sequence 128 (real dev sentences padded to 128), 1 thread pinned to CPU 0,
  warm-up 10, median of --runs. OpenVINO fp32 runs with INFERENCE_PRECISION_HINT=f32.
  --no-latency (or --runs 0) skips this pass: accuracy only, for a loaded machine.
- TFLite files are converted at (1, 128) (their reshapes fix the length); the runner right-pads
  the dev sentences to 128 with id 0 / mask 0, which leaves the masked-mean embedding unchanged.
  tflite:int8 (full integer, --allow-mixed) is not in the default list: see RESULTS-minilm.md.
Prints a Markdown table and writes DIR/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/edgecompress-bench-minilm")
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--calib-pairs", type=int, default=150)
    ap.add_argument("--reuse", action="store_true", help="reuse artifacts already in --out")
    ap.add_argument("--no-latency", action="store_true", help="accuracy only (same as --runs 0)")
    ap.add_argument("--formats", default="onnx:fp32,onnx:int8-dynamic,onnx:int8,openvino:fp32,"
                                         "openvino:int8,tflite:fp32,tflite:dynamic-int8")
    a = ap.parse_args()

    import numpy as np
    import torch

    from edgecompress.data.text import load_text_for
    from edgecompress.exporters import FORMATS, Artifact, ExportOptions, export
    from edgecompress.models import load_model
    from edgecompress.paths import shared_data_dir
    from edgecompress.targets import ValidateSettings, reference_outputs, validate
    from edgecompress.targets.metrics import task_metrics

    torch.set_num_threads(1)
    sts = shared_data_dir() / "stsbenchmark"
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    spec = load_model("zoo:minilm-l6")
    dev = load_text_for(spec, str(sts / "sts-dev.csv"), "evaluation", length="longest")
    calib = load_text_for(spec, f"{sts / 'sts-train.csv'}[0:{a.calib_pairs}]", "calibration")
    lat_set = load_text_for(spec, f"{sts / 'sts-dev.csv'}[0:8]", "evaluation", length="fixed")
    print(f"dev {dev.x['input_ids'].shape}, calib {calib.x['input_ids'].shape}, "
          f"latency input {lat_set.x['input_ids'].shape}", file=sys.stderr)

    ref = reference_outputs(spec.module, dev, batch=64, progress=False)
    ref_metrics = task_metrics(ref, dev)
    print(f"PyTorch fp32 Spearman x100 = {100 * ref_metrics['spearman']:.2f}", file=sys.stderr)

    artifacts = []
    for item in a.formats.split(","):
        fmt, prec = item.split(":")
        path = out / f"minilm-l6-{prec}{FORMATS.get(fmt).suffix}"
        meta = path.with_suffix(path.suffix + ".json")
        if a.reuse and meta.is_file() and path.is_file():
            artifacts.append(Artifact.from_dict(json.loads(meta.read_text())))
            continue
        print(f"exporting {fmt} {prec}", file=sys.stderr)
        # int8-dynamic gets no calibration set: its fp32-kept MatMuls are chosen on a random-token probe.
        art = export(spec, fmt, prec, out, calib if prec == "int8" else None, ExportOptions(allow_mixed=True))
        meta.write_text(json.dumps(art.to_dict(), default=str))
        artifacts.append(art)

    # Accuracy pass: outputs on all 3000 dev sentences (timing here is not used).
    acc = validate(artifacts, "x86-local", dev, ref,
                   ValidateSettings(threads=1, runs=1, warmup=1, eval_batch=32), progress=False)
    # Latency pass: batch 1, seq 128, 1 thread.
    if a.no_latency or a.runs <= 0:
        lat = [None] * len(artifacts)
    else:
        lat = validate(artifacts, "x86-local", lat_set, None,
                       ValidateSettings(threads=1, runs=a.runs, warmup=10, eval_batch=8), progress=False)
    rows = []
    for art, m_acc, m_lat in zip(artifacts, acc, lat, strict=True):
        rows.append({
            "format": art.format, "precision": art.precision, "size_mb": art.size_bytes / 1e6,
            "status": f"{m_acc.status}/{m_lat.status if m_lat else '-'}",
            "error": m_acc.error or (m_lat.error if m_lat else None),
            "spearman_x100": 100 * m_acc.metrics.get("spearman", float("nan")),
            "cosine_mean": m_acc.drift.get("cosine"), "cosine_min": m_acc.drift.get("cosine_min"),
            "p50_ms": m_lat.latency_ms.get("1", {}).get("p50") if m_lat else None,
            "p90_ms": m_lat.latency_ms.get("1", {}).get("p90") if m_lat else None,
            "runtime": (m_lat or m_acc).runtime.get("settings", {}),
            "loadavg": (m_lat or m_acc).settings.get("loadavg"),
            "details": art.details,
        })
    fp32 = {r["format"]: r for r in rows if r["precision"] == "fp32"}
    lines = ["| format | precision | size MB (x fp32) | Spearman x100 (Δ vs PyTorch) | cosine mean / min"
             " | p50 ms b1 s128 1T (speed-up) | runtime precision |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        f = fp32.get(r["format"])
        ratio = r["size_mb"] / f["size_mb"] if f else float("nan")
        speed = f["p50_ms"] / r["p50_ms"] if f and r["p50_ms"] and f["p50_ms"] else float("nan")
        delta = r["spearman_x100"] - 100 * ref_metrics["spearman"]
        cos = (f"{r['cosine_mean']:.4f} / {r['cosine_min']:.4f}" if r["cosine_mean"] is not None
               else "—")
        p50 = f"{r['p50_ms']:.2f} ({speed:.2f}x)" if r["p50_ms"] else "—"
        prec_used = r["runtime"].get("inference_precision", "")
        lines.append(f"| {r['format']} | {r['precision']} | {r['size_mb']:.1f} ({ratio:.2f}x) | "
                     f"{r['spearman_x100']:.2f} ({delta:+.2f}) | {cos} | {p50} | {prec_used} |"
                     + (f" {r['error']}" if r["error"] else ""))
    table = "\n".join(lines)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    result = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": platform.platform(),
              "cpu": platform.processor(), "uptime_end": uptime, "seconds": round(time.time() - t0),
              "command": " ".join(sys.argv), "reference_spearman_x100": 100 * ref_metrics["spearman"],
              "rows": rows, "table": table}
    (out / "results.json").write_text(json.dumps(result, indent=1, default=str))
    print(f"PyTorch fp32 Spearman x100: {100 * ref_metrics['spearman']:.2f}")
    print(table)
    print(f"uptime at end: {uptime}; total {result['seconds']} s")
    _ = np  # numpy is used through the validators
    return 0


if __name__ == "__main__":
    sys.exit(main())
