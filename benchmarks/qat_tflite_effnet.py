"""EfficientNet-Lite0: full-int8 TFLite from QAT (`qat: {backend: litert}`) vs the TFLite exporter's PTQ.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/qat_tflite_effnet.py [--skip-kd] [--label TEXT]

Same halves as compress_effnet.py (imagenet-sample-1k, 500 distill / 500 eval, seed 0, cached in
benchmarks/.cache/). Rows: PTQ (tflite:int8, calibrated on the first 300 distillation images),
QAT litert calibration only (300 distillation images), QAT litert + 1 KD epoch (the int8 stage's
QAT settings: lr 2e-5, batch 32, KD only). Each int8 model is exported with the TFLite exporter
(full-integer check on) and run with LiteRT (XNNPACK, 1 thread) on the 500 eval images; agreement
and mean |Δlogit| against the fp32 torch model; p50 of 50 single-image invokes. Writes its section
of RESULTS-compress.md as soon as each row is measured.
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
from compress_effnet import QAT, SPLIT, drift, halves, torch_outputs

import edgecompress
from edgecompress.exporters import _litert_convert as lc
from edgecompress.exporters import export
from edgecompress.models import load_model

TITLE = f"EfficientNet-Lite0: full-int8 TFLite, QAT (litert backend) vs PTQ ({SPLIT})"
if "--label" in sys.argv:  # a rerun gets its own section instead of replacing the last one
    TITLE += f", {sys.argv[sys.argv.index('--label') + 1]}"


def p50_ms(path: Path, x: np.ndarray, runs: int = 50) -> float:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    scale, zp = inp["quantization"]
    q = np.clip(np.round(x[:1].transpose(0, 2, 3, 1) / scale) + zp, -128, 127).astype(np.int8)
    it.set_tensor(inp["index"], q)
    for _ in range(5):
        it.invoke()
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        it.invoke()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts) * 1e3)


def main() -> None:
    torch.set_num_threads(1)
    t0 = time.time()
    train, ev = halves()
    spec = load_model("zoo:efficientnet-lite0")
    ref = torch_outputs(spec.module, ev)
    lines = [
        header(TITLE),
        "",
        "Every int8 model exported by the TFLite exporter (full-integer check on: all ops int8 except the "
        "boundary QUANTIZE/DEQUANTIZE) and run with LiteRT (XNNPACK, 1 thread) on the 500 eval images. "
        "Agreement and mean |Δlogit| against the fp32 torch model; p50 = 50 single-image invokes.",
        "",
        "| variant | runtime | file MB | top-1 % | agreement with fp32 % | mean abs Δlogit | ops (float) "
        "| p50 ms | wall s |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| fp32 | torch | — | {drift(ref, ref, ev.y)} | | | — |",
    ]

    def flush(note: str = "") -> None:
        write_section(TITLE, "\n".join([*lines, note, f"Elapsed {time.time() - t0:.0f} s.", end_line()]))

    qat_lit = {**QAT, "backend": "litert"}
    runs = [
        ("PTQ (tflite:int8, minmax, 300 distill images)", None),
        ("QAT litert, calibration only (300 distill images)", {**qat_lit, "epochs": 0}),
    ]
    if "--skip-kd" not in sys.argv:
        runs.append((f"QAT litert, 1 ep KD only (α 1), lr {QAT['lr']}", qat_lit))
    with tempfile.TemporaryDirectory() as td:
        for i, (name, cfg) in enumerate(runs):
            t1 = time.time()
            out_dir = Path(td) / str(i)
            if cfg is None:
                art = export(spec, "tflite", "int8", out_dir, train.take(slice(0, 300)))
            else:
                q = edgecompress.qat(spec, cfg, data=train, progress=True)
                lines.append(f"| {name} | torch (converted) | — | {drift(torch_outputs(q.module, ev), ref, ev.y)} "
                             "| | | |")
                art = export(q, "tflite", "int8", out_dir)
            out = lc.run(art.path, ev.x)
            ops = sum(art.details["ops"].values())
            p50 = p50_ms(Path(art.path), ev.x)
            lines.append(
                f"| {name} | LiteRT | {art.size_bytes / 1e6:.2f} | {drift(out, ref, ev.y)} | "
                f"{ops} ({len(art.details['float_ops'])}) | {p50:.2f} | {time.time() - t1:.0f} |"
            )
            flush("(running)")
    flush("done")


if __name__ == "__main__":
    main()
