"""EfficientNet-Lite0: int8 in the formats a QAT backend does not lower, by both `qat.cross_format` routes.

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/qat_cross_format.py [--backends x86,litert]

[issue #4] One QAT run per backend (the int8 stage's settings: 300 distillation images calibrate
the observers, 1 KD epoch, lr 2e-5, batch 32), then the other format's int8 (x86 -> TFLite, litert
-> ONNX) exported by that format's PTQ (first 300 distillation images) from each source:
`ptq-of-float` (the float model before QAT, bias-corrected) and `ptq-of-qat-weights` (the
QAT-trained float weights, uncorrected); the backend's own int8 file for context. Every file runs
in its runtime (LiteRT XNNPACK / ONNX Runtime, 1 thread) on the 500 eval images; top-1, agreement
and mean |Δlogit| against the fp32 torch model (which is the float model before QAT here). Writes
its section of RESULTS-compress.md as each row is measured.
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
from chain_ptq_vs_qat import ort_outputs
from compress_effnet import QAT, SPLIT, drift, halves, torch_outputs

import edgecompress
from edgecompress.exporters import _litert_convert as lc
from edgecompress.exporters import export
from edgecompress.models import load_model
from edgecompress.passes._qat_backends import CROSS_FORMAT_ROUTES, QAT_BACKENDS

TITLE = f"EfficientNet-Lite0: QAT's other formats, PTQ of the float model vs of the QAT-trained weights ({SPLIT})"
OTHER = {"x86": "tflite", "litert": "onnx"}  # a format each backend does not lower


def run(fmt: str, path: Path, x: np.ndarray) -> np.ndarray:
    return lc.run(path, x) if fmt == "tflite" else ort_outputs(path, x)


def main() -> None:
    torch.set_num_threads(1)
    t0 = time.time()
    backends = sys.argv[sys.argv.index("--backends") + 1].split(",") if "--backends" in sys.argv else list(OTHER)
    train, ev = halves()
    calib = train.take(slice(0, 300))
    spec = load_model("zoo:efficientnet-lite0")
    ref = torch_outputs(spec.module, ev)
    lines = [
        header(TITLE),
        "",
        f"QAT settings `{QAT}` (KD only, 300 distillation images calibrate first). Each row's file runs in its "
        "runtime (1 thread) on the 500 eval images; agreement and mean |Δlogit| against the fp32 torch "
        "model, the float model before QAT.",
        "",
        "| QAT backend | format | int8 from | top-1 % | agreement with fp32 % | mean abs Δlogit | bias correction "
        "| wall s |",
        "|---|---|---|---|---|---|---|---|",
        f"| — | torch fp32 | — | {drift(ref, ref, ev.y)} | — | — |",
    ]

    def flush(note: str = "") -> None:
        write_section(TITLE, "\n".join([*lines, note, f"Elapsed {time.time() - t0:.0f} s.", end_line()]))

    with tempfile.TemporaryDirectory() as td:
        for b in backends:
            t1 = time.time()
            q = edgecompress.qat(spec, {**QAT, "backend": b}, data=train, progress=True)
            own = QAT_BACKENDS.get(b).formats[0]
            art = export(q, own, "int8", Path(td) / f"{b}-own")
            lines.append(f"| {b} | {own} | the QAT graph | {drift(run(own, art.path, ev.x), ref, ev.y)} | — "
                         f"| {time.time() - t1:.0f} |")
            flush("(running)")
            fmt = OTHER[b]
            for how in CROSS_FORMAT_ROUTES:
                t1 = time.time()
                qh = q.replace(extra={**q.extra, "qat_cross_format": how})
                art = export(qh, fmt, "int8", Path(td) / f"{b}-{how}", calib)
                assert art.details["qat"]["route"] == how
                bc = art.details["calibration"].get("bias_correction", {})
                bc_cell = f"{bc.get('layers', 0)} layers" + (" (skipped: QAT weights)" if bc.get("skipped") else "")
                lines.append(f"| {b} | {fmt} | {how} | {drift(run(fmt, art.path, ev.x), ref, ev.y)} | {bc_cell} "
                             f"| {time.time() - t1:.0f} |")
                flush("(running)")
    flush("done")


if __name__ == "__main__":
    main()
