"""Head-to-head on EfficientNet-Lite0: edgecompress's int8 files against the standard tools' routes.

Every file is built from the same fp32 model and the same data (calibrate on the first 300 rows of
`../shared/data/imagenet-sample-1k/labels.csv`, file order; evaluate on the other 700), and all of
them are measured together by the same validator on this machine: top-1, top-1 agreement with the
fp32 PyTorch reference, size, and batch-1 / 1-thread latency in interleaved rounds (each artifact a
fresh pinned process per round, the median of the rounds' p50). The speed-up of an int8 file is
against the fp32 file of its own runtime (OpenVINO fp32 at the f32 hint), i.e. edgecompress's
fp32 export, which every competitor route except litert-torch starts from. Then each runtime's files
are timed again in one pinned process, in interleaved rounds (`AB_CHILD`): a finer comparison of
files whose speeds differ by a few %, which is what one process differs from the next here.

The competitors, each its tool's documented route (`../shared/FIELD_NOTES.md` measured them on the
machine the project started on):
- ORT defaults: `quantize_static(fp32.onnx, ...)` with no options (QDQ, S8 activations and weights,
  per-tensor, MinMax).
- ORT tuned: `quant_pre_process`, then QDQ, per-channel, U8 activations / S8 weights, MinMax (the
  field notes' tuned recipe).
- Optimum: `ORTQuantizer` with `AutoQuantizationConfig.avx512_vnni(is_static=True, per_channel=True)`
  and `AutoCalibrationConfig.minmax`. Optimum pins transformers<5, which cannot share the project's
  venv, so it runs in its own (`--optimum-python`; skipped when absent). Make it with:
  `python3 -m venv .cache/optimum-venv && .cache/optimum-venv/bin/pip install torch==2.13.0
  onnxruntime==1.32.0 optimum-onnx datasets`.
- NNCF defaults: `nncf.quantize(read_model(fp32.xml), nncf.Dataset(300 images))`, saved with
  `ov.save_model`.
- litert-torch PT2E defaults: strict `torch.export` -> `prepare_pt2e(PT2EQuantizer().set_global(
  get_symmetric_quantization_config()))` -> 300 calibration images -> `convert_pt2e` ->
  `litert_torch.convert`, with `to_channel_last_io` (NHWC int8 I/O, as edgecompress's file).

edgecompress's files come from one command, `edgecompress demo --out OUT/ours` (run and timed
here unless `--ours DIR` names a finished one).

Run: `.venv/bin/python benchmarks/bench_competitors.py [--ours DIR] [--rounds 5] [--runs 200]`
Writes `benchmarks/results-competitors.json` and prints the markdown table.
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
ROOT = HERE.parent

OPTIMUM_CHILD = r"""
import sys, numpy as np
from pathlib import Path
from datasets import Dataset
from optimum.onnxruntime import ORTQuantizer
from optimum.onnxruntime.configuration import AutoCalibrationConfig, AutoQuantizationConfig
src, calib, out = Path(sys.argv[1]), np.load(sys.argv[2]), Path(sys.argv[3])
q = ORTQuantizer.from_pretrained(src.parent, file_name=src.name)
cfg = AutoQuantizationConfig.avx512_vnni(is_static=True, per_channel=True)
ds = Dataset.from_dict({sys.argv[4]: list(calib)})  # batch_size=1 adds the batch dim
ranges = q.fit(dataset=ds, calibration_config=AutoCalibrationConfig.minmax(ds),
               operators_to_quantize=cfg.operators_to_quantize, batch_size=1)
q.quantize(save_dir=out.parent, quantization_config=cfg, calibration_tensors_range=ranges, file_suffix="q")
produced = out.parent / (src.stem + "_q.onnx")
produced.replace(out)
print(cfg)
"""


# Same-process A/B: every file of one runtime loaded in one pinned process and timed in turn, in
# interleaved rounds (each round 40 invokes per file, its median; the figure is the median of the
# rounds). Separate processes (the validator's rounds) differ by a few % from process to process
# on this VM, which is the size of the differences between the int8 files here.
AB_CHILD = r"""
import json, os, sys, time, numpy as np
os.sched_setaffinity(0, {0})
runtime, rounds, files = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
calls = []
if runtime == "onnx":
    import onnxruntime as ort
    so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1
    for f, _prec in files:
        s = ort.InferenceSession(f, so, providers=["CPUExecutionProvider"])
        x = np.zeros((1, 3, 224, 224), np.float32)
        calls.append(lambda s=s, feed={s.get_inputs()[0].name: x}: s.run(None, feed))
elif runtime == "openvino":
    import openvino as ov
    core = ov.Core()
    for f, prec in files:
        cfg = {"INFERENCE_NUM_THREADS": 1, "PERFORMANCE_HINT": "LATENCY"}
        if prec == "fp32":
            cfg["INFERENCE_PRECISION_HINT"] = "f32"  # the validator's fp32 reference
        r = core.compile_model(core.read_model(f), "CPU", cfg).create_infer_request()
        calls.append(lambda r=r, x=np.zeros((1, 3, 224, 224), np.float32): r.infer([x]))
else:
    from ai_edge_litert.interpreter import Interpreter
    for f, _prec in files:
        it = Interpreter(model_path=f, num_threads=1)
        it.allocate_tensors()
        d = it.get_input_details()[0]
        it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
        calls.append(it.invoke)
for c in calls:
    for _ in range(30):
        c()
got = [[] for _ in files]
for rnd in range(rounds):
    order = range(len(files)) if rnd % 2 == 0 else reversed(range(len(files)))
    for i in order:
        ts = []
        for _ in range(40):
            t = time.perf_counter(); calls[i](); ts.append(time.perf_counter() - t)
        got[i].append(1000 * float(np.median(ts)))
print(json.dumps([float(np.median(g)) for g in got]))
"""


class _Reader:
    """ORT CalibrationDataReader over an array of NCHW images, one per call (the documented way)."""

    def __init__(self, x: np.ndarray, name: str) -> None:
        self.it = iter(x)
        self.name = name

    def get_next(self) -> dict[str, np.ndarray] | None:
        nxt = next(self.it, None)
        return None if nxt is None else {self.name: nxt[None].astype(np.float32)}


def _ort_route(fp32: Path, out: Path, calib: np.ndarray, tuned: bool) -> dict[str, Any]:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    name = onnx.load(str(fp32), load_external_data=False).graph.input[0].name
    with tempfile.TemporaryDirectory() as td:
        src = fp32
        if tuned:
            src = Path(td) / "pre.onnx"
            quant_pre_process(str(fp32), str(src))
            quantize_static(str(src), str(out), _Reader(calib, name), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)
            return {"options": "quant_pre_process; QDQ, per_channel, QUInt8 activations, QInt8 weights, MinMax"}
        quantize_static(str(src), str(out), _Reader(calib, name))
        return {"options": "defaults (QDQ, QInt8 activations and weights, per-tensor, MinMax)"}


def _optimum_route(python: str, fp32: Path, out: Path, calib: np.ndarray) -> dict[str, Any]:
    import onnx

    name = onnx.load(str(fp32), load_external_data=False).graph.input[0].name
    with tempfile.TemporaryDirectory() as td:
        # Optimum writes beside its source: give it a private copy of the fp32 file
        src = Path(td) / "model.onnx"
        src.write_bytes(fp32.read_bytes())
        np.save(Path(td) / "calib.npy", calib)
        proc = subprocess.run([python, "-c", OPTIMUM_CHILD, str(src), str(Path(td) / "calib.npy"),
                               str(Path(td) / "q.onnx"), name], capture_output=True, text=True, check=False,
                              cwd=td)  # ORT's calibrator writes augmented_model.onnx into the cwd
        if proc.returncode:
            raise RuntimeError(f"optimum failed: {proc.stderr.strip().splitlines()[-1:]}")
        (Path(td) / "q.onnx").replace(out)
        return {"options": "AutoQuantizationConfig.avx512_vnni(is_static=True, per_channel=True); "
                           "AutoCalibrationConfig.minmax", "config": proc.stdout.strip()[-400:]}


def _nncf_route(fp32_xml: Path, out: Path, calib: np.ndarray) -> dict[str, Any]:
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(fp32_xml))
    q = nncf.quantize(model, nncf.Dataset([c[None] for c in calib]))
    ov.save_model(q, str(out))
    return {"options": "nncf.quantize defaults (subset_size 300, performance preset: symmetric activations)"}


def _litert_route(module: Any, out: Path, calib: np.ndarray) -> dict[str, Any]:
    import torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config

    from edgecompress.exporters._litert_convert import convert

    q = PT2EQuantizer().set_global(get_symmetric_quantization_config())
    # our convert() is the plain route (strict export, NHWC I/O, litert_torch.convert) with a
    # quantizer passed in; allow_mixed so a default that leaves float ops is measured, not refused,
    # and no lowering check: the defaults' file is off its own PT2E graph by ~5 output steps here
    # (2026-12-02), which edgecompress refuses for its own files; the tool's file is measured as it is
    info = convert(module, torch.from_numpy(calib[:1]), "int8", out, [calib], allow_mixed=True, quantizer=q,
                   check_lowering=False)
    return {"options": "PT2EQuantizer + get_symmetric_quantization_config() defaults (HistogramObserver)",
            "float_ops": info.get("float_ops", [])}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ours", help="a finished `edgecompress demo --out` directory (default: run the demo)")
    ap.add_argument("--out", default=str(HERE / "out" / "competitors"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=200)
    # abspath, not resolve(): a venv's python is a symlink to the base interpreter, which has no optimum
    ap.add_argument("--optimum-python", type=os.path.abspath,
                    default=str(ROOT / ".cache" / "optimum-venv" / "bin" / "python"))
    ap.add_argument("--ab-rounds", type=int, default=15, help="rounds of the same-process A/B timing")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the competitors' files")
    ap.add_argument("--build-only", action="store_true", help="build the competitors' files, measure nothing")
    a = ap.parse_args()

    from edgecompress.data import DataSpec, load_data
    from edgecompress.models import load_model
    from edgecompress.targets import ValidateSettings, reference_outputs, validate
    from edgecompress.targets.device_report import _artifact_from_file, load_artifacts

    labels = imagenet_or_exit()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = run_record()

    ours = Path(a.ours) if a.ours else out / "ours"
    if not a.ours:
        t = time.perf_counter()
        subprocess.run([str(Path(sys.executable).parent / "edgecompress"), "demo", "--out", str(ours)], check=True)
        res["ours_demo_seconds"] = round(time.perf_counter() - t, 1)
    our_arts, _ = load_artifacts([ours])
    by = {(x.format, x.precision): x for x in our_arts}

    spec = load_model("zoo:efficientnet-lite0")
    data = load_data(DataSpec(str(labels)), "efficientnet-lite", 224, "evaluation")
    calib, ev = data.take(slice(0, 300)), data.take(slice(300, None))

    routes = [
        ("ORT defaults", "onnx", "ort-defaults.onnx", lambda p: _ort_route(by["onnx", "fp32"].path, p, calib.x, False)),
        ("ORT tuned", "onnx", "ort-tuned.onnx", lambda p: _ort_route(by["onnx", "fp32"].path, p, calib.x, True)),
        ("Optimum avx512_vnni", "onnx", "optimum.onnx",
         lambda p: _optimum_route(a.optimum_python, by["onnx", "fp32"].path, p, calib.x)),
        ("NNCF defaults", "openvino", "nncf-defaults.xml",
         lambda p: _nncf_route(by["openvino", "fp32"].path, p, calib.x)),
        ("litert-torch PT2E defaults", "tflite", "litert-defaults.tflite",
         lambda p: _litert_route(spec.module, p, calib.x)),
    ]
    built: list[tuple[str, Any]] = []
    res["builds"] = {}
    for tool, _fmt, fname, build in routes:
        path = out / fname
        if tool.startswith("Optimum") and not Path(a.optimum_python).exists():
            res["builds"][tool] = {"skipped": f"no {a.optimum_python}"}
            continue
        info: dict[str, Any] = {}
        if a.rebuild or not path.exists():
            t = time.perf_counter()
            info = build(path)
            info["seconds"] = round(time.perf_counter() - t, 1)
            (out / f"{fname}.json").write_text(json.dumps(info))
        else:
            info = json.loads((out / f"{fname}.json").read_text()) if (out / f"{fname}.json").exists() else {}
        res["builds"][tool] = info
        built.append((tool, _artifact_from_file(path, precision="int8")))

    if a.build_only:
        print(json.dumps(res["builds"], indent=1))
        return 0
    ref = reference_outputs(spec.module, ev)
    arts = [(f"edgecompress {p}", x) for (f, p), x in sorted(by.items()) if p in ("fp32", "int8")] + built
    settings = ValidateSettings(threads=1, batches=(1,), warmup=30, runs=a.runs, rounds=a.rounds)
    ms = validate([x for _, x in arts], "x86-local", ev, ref, settings)
    res["loadavg_end"] = list(os.getloadavg())
    fp32_p50 = {x.format: m.latency_ms["1"]["p50"] for (_, x), m in zip(arts, ms, strict=True)
                if x.precision == "fp32" and m.status == "ok"}
    rows = []
    for (tool, x), m in zip(arts, ms, strict=True):
        lat = (m.latency_ms or {}).get("1", {})
        p50 = lat.get("p50")
        rows.append({
            "tool": tool, "format": x.format, "precision": x.precision, "file": x.path.name, "status": m.status,
            "error": m.error, "size_mb": round(x.size_bytes / 1e6, 2), "p50_ms": p50,
            "p50_rounds": lat.get("p50_rounds"),
            "speedup": (fp32_p50[x.format] / p50) if p50 and x.format in fp32_p50 else None,
            "top1": m.metrics.get("top1"), "agreement": m.drift.get("top1_agreement"),
            "agreement_95": [m.drift.get("top1_agreement_low95"), m.drift.get("top1_agreement_high95")],
            "cosine": m.drift.get("cosine"), "mean_abs": m.drift.get("mean_abs"),
            "precision_run": (m.runtime.get("settings") or {}).get("inference_precision")})
    # the same files again, each runtime's in one process (see AB_CHILD)
    for fmt in ("onnx", "openvino", "tflite"):
        group = [(r, x) for r, (_, x) in zip(rows, arts, strict=True) if r["format"] == fmt]
        proc = subprocess.run([sys.executable, "-c", AB_CHILD, fmt, str(a.ab_rounds),
                               json.dumps([[str(x.path), x.precision] for _, x in group])],
                              capture_output=True, text=True, check=False)
        if proc.returncode:
            res.setdefault("ab_errors", {})[fmt] = proc.stderr.strip().splitlines()[-1:]
            continue
        ab = json.loads(proc.stdout.strip().splitlines()[-1])
        f32 = next((v for (r, _), v in zip(group, ab, strict=True) if r["precision"] == "fp32"), None)
        for (r, _), v in zip(group, ab, strict=True):
            r["ab_ms"], r["ab_speedup"] = v, (f32 / v if f32 and r["precision"] != "fp32" else None)
    res["rows"] = rows
    (HERE / "results-competitors.json").write_text(json.dumps(res, indent=2, default=str))

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}"

    print("| runtime | tool | size MB | p50 ms (validator rounds) | speed-up | same-process A/B ms | A/B speed-up"
          " | top-1 % | agreement with fp32 % (95 %) | cosine | mean abs logit error |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for fmt in ("onnx", "openvino", "tflite"):
        for r in (r for r in rows if r["format"] == fmt):
            rounds = ", ".join(f"{v:.2f}" for v in r["p50_rounds"] or [])
            sp = "-" if r["precision"] == "fp32" or r["speedup"] is None else f"{r['speedup']:.2f}x"
            p50 = "failed" if r["p50_ms"] is None else f"{r['p50_ms']:.2f} ({rounds})"
            lo, hi = r["agreement_95"]
            partial = lo is not None and r["agreement"] is not None and r["agreement"] < 1
            ci = f" ({pct(lo)}-{pct(hi)})" if partial else ""
            cos = "-" if r["cosine"] is None else f"{r['cosine']:.5f}"
            mae = "-" if r["mean_abs"] is None else f"{r['mean_abs']:.4f}"
            ab = "-" if r.get("ab_ms") is None else f"{r['ab_ms']:.2f}"
            absp = "-" if r.get("ab_speedup") is None else f"{r['ab_speedup']:.2f}x"
            print(f"| {fmt} | {r['tool']} | {r['size_mb']} | {p50} | {sp} | {ab} | {absp} | {pct(r['top1'])} | "
                  f"{pct(r['agreement'])}{ci} | {cos} | {mae} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
