"""OpenVINO int8 variants of EfficientNet-Lite0: which layers stay float, NNCF's overflow fix, and
NNCF's defaults, scored on agreement with fp32 and timed against each other.

The RESULTS-spine.md sections "OpenVINO: every layer int8 again" and "OpenVINO: 8-bit first layer
on VNNI CPUs" came from this comparison. Every variant is the exporter's own int8 step (`exporters/openvino.py`
`quantize`: performance preset, histogram ranges, full bias correction) on the same fp32 IR, with
its `float_first` and `ov_overflow_fix` set as the variant says; NNCF defaults is
`bench_competitors.py`'s route. Two data sets:
- imagenet: calibrate on rows 0-299 of ../shared/data/imagenet-sample-1k/labels.csv, evaluate on
  rows 300-999 (skipped when ../shared is absent);
- crops: the project's own fallback (crops of scikit-learn's two sample photos, as `make demo` uses
  without ../shared): calibrate on all 128, evaluate on the first 100.
Agreement and mean |logit error| are against the fp32 PyTorch outputs; latency is the same-process
A/B of `bench_competitors.py` (one pinned process, 1 thread, interleaved rounds), on the imagenet
files.

Run: `.venv/bin/python benchmarks/openvino_variants.py [--rounds 20] [--out DIR]` (about 10 min).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# name -> (first layers left float, NNCF overflow fix); "nncf-defaults" is NNCF with no options
VARIANTS: dict[str, tuple[int, str]] = {
    "every layer int8, 8-bit first layer (default on VNNI)": (0, "disable"),
    "every layer int8, 7-bit first layer (NNCF's fix)": (0, "first_layer_only"),
    "first conv float": (1, "first_layer_only"),
    "first 2 convs float": (2, "first_layer_only"),
    "first 3 convs float": (3, "first_layer_only"),
}


def _quantize(fp32_xml: Path, calib: np.ndarray, float_first: int, overflow: str) -> Any:
    """The exporter's own OpenVINO int8 step (exporters/openvino.py `quantize`) with these two knobs."""
    import openvino as ov

    from edgecompress.data import Dataset
    from edgecompress.exporters.base import ExportOptions
    from edgecompress.exporters.openvino import quantize
    from edgecompress.models import load_model

    model = ov.Core().read_model(str(fp32_xml))
    options = ExportOptions(float_first=float_first, extra={"ov_overflow_fix": overflow}, progress=False)
    return quantize(model, Dataset(calib), load_model("zoo:efficientnet-lite0"), options)[0]


def _score(model: Any, x: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    import openvino as ov

    c = ov.Core().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": 2})
    out = np.concatenate([c([x[i:i + 1]])[0] for i in range(len(x))])
    return {"agreement": float((out.argmax(1) == ref.argmax(1)).mean()), "mean_abs": float(np.abs(out - ref).mean())}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(HERE / "out" / "openvino-variants"))
    ap.add_argument("--rounds", type=int, default=20, help="A/B rounds")
    a = ap.parse_args()

    import openvino as ov
    import torch
    from bench_competitors import AB_CHILD, _nncf_route

    from edgecompress.data import DataSpec, load_data
    from edgecompress.data.builtin import photo_crops
    from edgecompress.exporters import export
    from edgecompress.models import load_model
    from edgecompress.paths import imagenet_sample
    from edgecompress.report.model import machine

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = load_model("zoo:efficientnet-lite0")
    fp32 = export(spec, "openvino", "fp32", out)

    def reference(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return np.concatenate([spec.module.eval()(torch.from_numpy(x[i:i + 50])).numpy()
                                   for i in range(0, len(x), 50)])

    sets: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    labels = imagenet_sample()
    if labels is not None:
        data = load_data(DataSpec(str(labels)), "efficientnet-lite", 224, "evaluation")
        sets["imagenet"] = (data.x[:300], data.x[300:])
    crops = photo_crops()
    sets["crops"] = (crops, crops[:100])

    res: dict[str, Any] = {"machine": machine(), "rows": {}}
    files: list[tuple[str, str]] = []
    for set_name, (calib, ev) in sets.items():
        ref = reference(ev)
        for name, (ff, overflow) in [*VARIANTS.items(), ("NNCF defaults", (-1, ""))]:
            if ff < 0:
                path = out / f"nncf-defaults-{set_name}.xml"
                _nncf_route(fp32.path, path, calib)
                model = ov.Core().read_model(str(path))
            else:
                model = _quantize(fp32.path, calib, ff, overflow)
                path = out / f"v{len(files)}-{set_name}.xml"
                ov.save_model(model, str(path))
            res["rows"].setdefault(name, {})[set_name] = _score(model, ev, ref)
            if set_name == next(iter(sets)):
                files.append((name, str(path)))
            print(set_name, name, res["rows"][name][set_name], flush=True)

    ab_files = [[str(fp32.path), "fp32"], *[[p, "int8"] for _, p in files]]
    proc = subprocess.run([sys.executable, "-c", AB_CHILD, "openvino", str(a.rounds), json.dumps(ab_files)],
                          capture_output=True, text=True, check=True)
    ms = json.loads(proc.stdout.strip().splitlines()[-1])
    for (name, _), v in zip(files, ms[1:], strict=True):
        res["rows"][name]["ab_ms"], res["rows"][name]["ab_speedup"] = v, ms[0] / v
    res["fp32_ab_ms"] = ms[0]
    (out / "results.json").write_text(json.dumps(res, indent=1))

    cols = list(sets)
    print("| variant | " + " | ".join(f"{c} agreement % | {c} logit error" for c in cols) + " | A/B ms | speed-up |")
    print("|---|" + "---|---|" * len(cols) + "---|---|")
    for name, r in res["rows"].items():
        cells = " | ".join(f"{100 * r[c]['agreement']:.1f} | {r[c]['mean_abs']:.4f}" for c in cols)
        print(f"| {name} | {cells} | {r['ab_ms']:.3f} | {r['ab_speedup']:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
