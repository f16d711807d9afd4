"""PTQ vs QAT on the compressed model of the EfficientNet-Lite0 chain (issue #4).

    .venv/bin/edgecompress run docs/recipes/efficientnet-lite0.yaml -o DIR
    nice .venv/bin/python benchmarks/chain_ptq_vs_qat.py DIR

Rebuilds the model the recipe's distill step saved (DIR/step2-distill/model.pt, blocks removed as
recorded in DIR/report.json), quantizes it with ONNX Runtime PTQ (the exporter's default: percentile,
first 300 distillation images), and compares it on the 500 evaluation images with the recipe's QAT
int8 file (DIR/efficientnet-lite0-int8.onnx): top-1, agreement and mean |Δlogit| against the float
model before quantization and against the original fp32 model, plus the discordant images. If the
recipe wrote a .tflite (LiteRT PTQ, of the float model before QAT or of the QAT-trained weights as
the run's `qat.cross_format` chose), it is compared with LiteRT PTQ of the float model before QAT.
Prints a markdown table; nothing is written.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compress_effnet import drift, halves, torch_outputs

from edgecompress.exporters import export
from edgecompress.models import ModelSpec, load_model
from edgecompress.passes._blocks import _replacement
from edgecompress.report.model import Report


def ort_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return np.concatenate([s.run(None, {name: x[i : i + 50]})[0] for i in range(0, len(x), 50)])


def chain_float_model(run: Path) -> ModelSpec:
    """The float model the recipe's distill step saved in run folder `run` (blocks removed as its
    report recorded), in eval mode."""
    spec = load_model("zoo:efficientnet-lite0")
    removed = next(s for s in Report.load(run / "report.json").steps if s["name"] == "prune")["log"]["removed"]
    for r in removed:
        owner, _, leaf = r["block"].rpartition(".")
        setattr(spec.module.get_submodule(owner) if owner else spec.module, leaf, _replacement(r["replaced_by"]))
    spec.module.load_state_dict(torch.load(run / "step2-distill" / "model.pt", weights_only=True)["state_dict"])
    spec.module.eval()
    return spec


def main() -> None:
    torch.set_num_threads(1)
    run = Path(sys.argv[1])
    train, ev = halves()
    ref = torch_outputs(load_model("zoo:efficientnet-lite0").module, ev)
    spec = chain_float_model(run)
    before = torch_outputs(spec.module, ev)
    with tempfile.TemporaryDirectory() as td:
        ptq = ort_outputs(export(spec, "onnx", "int8", Path(td), train.take(slice(0, 300))).path, ev.x)
    qat = ort_outputs(run / "efficientnet-lite0-int8.onnx", ev.x)
    print("| model (ONNX Runtime, 500 eval images) | top-1 % | agreement with the float model before int8 % "
          "| mean abs Δlogit | agreement with the original fp32 % | mean abs Δlogit |")
    print("|---|---|---|---|---|---|")
    def vs_fp32(out: np.ndarray) -> str:
        return drift(out, ref, ev.y).split(" | ", 1)[1]  # agreement and Δlogit only

    print(f"| float model before int8 (after blocks + KD) | {drift(before, before, ev.y)} | {vs_fp32(before)} |")
    for name, out in (("PTQ int8 of that model", ptq), ("QAT int8 (the recipe's)", qat)):
        print(f"| {name} | {drift(out, before, ev.y)} | {vs_fp32(out)} |")
    only_ptq = int(((ptq.argmax(1) == ev.y) & (qat.argmax(1) != ev.y)).sum())
    only_qat = int(((qat.argmax(1) == ev.y) & (ptq.argmax(1) != ev.y)).sum())
    print(f"\nImages right only with PTQ: {only_ptq}; only with QAT: {only_qat}.")
    tflite = run / "efficientnet-lite0-int8.tflite"
    if tflite.exists():  # [issue #4] the recipe's .tflite: LiteRT PTQ by the run's qat.cross_format
        from edgecompress.exporters import _litert_convert as lc

        with tempfile.TemporaryDirectory() as td:
            plain = lc.run(export(spec, "tflite", "int8", Path(td), train.take(slice(0, 300))).path, ev.x)
        print("\n| model (LiteRT full int8, 500 eval images) | top-1 % | agreement with the float model "
              "before int8 % | mean abs Δlogit |")
        print("|---|---|---|---|")
        print(f"| PTQ of the float model before QAT | {drift(plain, before, ev.y)} |")
        arts = Report.load(run / "report.json").artifacts
        route = next((a["details"].get("qat", {}).get("route") for a in arts if a.get("format") == "tflite"), None)
        print(f"| the recipe's .tflite (route {route}) | {drift(lc.run(tflite, ev.x), before, ev.y)} |")


if __name__ == "__main__":
    main()
