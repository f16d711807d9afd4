"""Spine benchmark: EfficientNet-Lite0 -> int8 ONNX and OpenVINO on the shared ImageNet sample.

Reproduces every figure of benchmarks/RESULTS-spine.md:
- fp32 top-1 on all 1000 images and on the evaluation 700 (proves the preprocessing);
- int8 ONNX / OpenVINO on the 700: top-1, top-1 agreement with fp32 PyTorch, size ratio;
- batch-1, 1-thread latency p50 of fp32 (OpenVINO at f32) and int8, in separate pinned processes;
- calibration time and peak memory of each ORT calibration method, each in its own process.

Run: `.venv/bin/python benchmarks/bench_spine.py [--runs 300] [--skip-calib-methods]`
(calibrate on the first 300 rows of labels.csv, file order; evaluate on the other 700).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import imagenet_or_exit, run_record

HERE = Path(__file__).resolve().parent
CALIB_CHILD = r"""
import json, sys, time, numpy as np
from pathlib import Path
from edgecompress.data import Dataset
from edgecompress.exporters import ExportOptions
from edgecompress.exporters.onnx import quantize_onnx_int8
cal = Dataset(np.load(sys.argv[1]))
t = time.perf_counter()
quantize_onnx_int8(Path(sys.argv[2]), Path(sys.argv[3]), cal, "input", ExportOptions(calib_method=sys.argv[4]))
sec = time.perf_counter() - t
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) / 1024
print(json.dumps({"seconds": sec, "peak_rss_mb": hwm}))
"""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=str(HERE / "out" / "spine"))
    ap.add_argument("--skip-calib-methods", action="store_true")
    ap.add_argument("--reuse", action="store_true", help="reuse the artifacts of the last run (out/artifacts.json)")
    a = ap.parse_args()

    from edgecompress.data import DataSpec, load_data
    from edgecompress.exporters import ExportOptions, export
    from edgecompress.models import load_model
    from edgecompress.targets import ValidateSettings, reference_outputs, validate
    from edgecompress.targets.metrics import classification_metrics

    labels = imagenet_or_exit()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = load_model("zoo:efficientnet-lite0")
    all1000 = load_data(DataSpec(str(labels)), "efficientnet-lite", 224, "evaluation")
    calib, ev = all1000.take(slice(0, 300)), all1000.take(slice(300, None))
    ref_all = reference_outputs(spec.module, all1000)
    ref = ref_all[300:]
    res: dict[str, Any] = run_record()
    res["fp32_pytorch"] = {"all_1000": classification_metrics(ref_all, all1000.y),
                           "eval_700": classification_metrics(ref, ev.y)}
    from edgecompress.exporters import Artifact

    saved = out / "artifacts.json"
    if a.reuse and saved.exists():
        arts = [Artifact.from_dict(d) for d in json.loads(saved.read_text())]
    else:
        arts = []
        for fmt in ("onnx", "openvino", "tflite"):
            for prec in ("fp32", "int8"):
                t = time.perf_counter()
                arts.append(export(spec, fmt, prec, out, calib if prec == "int8" else None, ExportOptions()))
                arts[-1].details["wall_seconds"] = round(time.perf_counter() - t, 1)
        saved.write_text(json.dumps([x.to_dict() for x in arts], default=str))
    settings = ValidateSettings(threads=1, batches=(1,), warmup=30, runs=a.runs)
    ms = validate(arts, "x86-local", ev, ref, settings)
    # Latency: the machine is shared, so time every artifact in `rounds` interleaved rounds (each a
    # fresh pinned process, no outputs) and keep the median of the per-round p50s.
    p50s: dict[str, list[float]] = {f"{x.format}-{x.precision}": [] for x in arts}
    p90s: dict[str, list[float]] = {k: [] for k in p50s}
    loads = []
    for _ in range(a.rounds):
        for art, m in zip(validate(arts, "x86-local", None, None, settings, progress=False), arts, strict=True):
            key = f"{m.format}-{m.precision}"
            p50s[key].append(art.latency_ms["1"]["p50"])
            p90s[key].append(art.latency_ms["1"]["p90"])
            loads.append(art.settings.get("loadavg", [0])[0])
    res["latency_rounds"] = {"rounds": a.rounds, "runs_per_round": a.runs, "p50_ms": p50s,
                             "loadavg_1min": [min(loads), max(loads)] if loads else None}
    rows = {}
    for art, m in zip(arts, ms, strict=True):
        key = f"{art.format}-{art.precision}"
        rows[key] = {
            "status": m.status, "error": m.error, "size_bytes": art.size_bytes,
            "p50_ms": float(np.median(p50s[key])), "p90_ms": float(np.median(p90s[key])),
            "top1": m.metrics.get("top1"), "agreement": m.drift.get("top1_agreement"),
            "cosine": m.drift.get("cosine"), "runtime": m.runtime, "export_seconds": art.details.get("wall_seconds"),
            "calibration": art.details.get("calibration"), "loadavg": m.settings.get("loadavg")}
    for fmt in ("onnx", "openvino", "tflite"):
        f32, i8 = rows[f"{fmt}-fp32"], rows[f"{fmt}-int8"]
        i8["speedup_vs_fp32"] = f32["p50_ms"] / i8["p50_ms"] if i8["p50_ms"] else None
        i8["size_ratio"] = i8["size_bytes"] / f32["size_bytes"]
        i8["top1_drop_pt"] = 100 * (res["fp32_pytorch"]["eval_700"]["top1"] - i8["top1"])
    res["artifacts"] = rows
    (HERE / "results-spine.json").write_text(json.dumps(res, indent=2, default=str))
    if not a.skip_calib_methods:
        res["calibration_methods"] = {}
        with tempfile.TemporaryDirectory() as td:
            np.save(Path(td) / "cal.npy", calib.x)
            fp32 = next(x.path for x in arts if (x.format, x.precision) == ("onnx", "fp32"))
            for method in ("minmax", "percentile", "entropy"):
                proc = subprocess.run([sys.executable, "-c", CALIB_CHILD, str(Path(td) / "cal.npy"), str(fp32),
                                       str(Path(td) / f"{method}.onnx"), method],
                                      capture_output=True, text=True, check=False)
                line = proc.stdout.strip().splitlines()[-1] if proc.returncode == 0 else "{}"
                res["calibration_methods"][method] = json.loads(line) | {"loadavg": list(os.getloadavg())}
    (HERE / "results-spine.json").write_text(json.dumps(res, indent=2, default=str))
    print(json.dumps({k: v for k, v in res.items() if k not in ("versions", "machine")}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
