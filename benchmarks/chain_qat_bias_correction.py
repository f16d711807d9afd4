"""QAT on the EfficientNet-Lite0 chain's float model with and without its bias correction (issue #4).

    .venv/bin/edgecompress run docs/recipes/efficientnet-lite0.yaml -o DIR
    OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/chain_qat_bias_correction.py DIR [EPOCHS,...] [LR,...] [off,on]

Rebuilds the float model the recipe's distill step saved (as chain_ptq_vs_qat.py), runs the recipe's QAT
settings for each number of epochs (default 0,1) and learning rate (default the recipe's 2e-5) with
`bias_correction` off and on (default both), exports the int8
ONNX (the QAT graph) and runs it in ONNX Runtime (1 thread) on the 500 eval images: top-1, agreement
and mean |Δlogit| against that float model. Prints a markdown table; nothing is written.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chain_ptq_vs_qat import chain_float_model, ort_outputs
from compress_effnet import drift, halves, torch_outputs

import edgecompress
from edgecompress.exporters import export

# the recipe's QAT step (docs/recipes/efficientnet-lite0.yaml) as it was before this script chose
# its lr (5e-6 now); epochs, lr and bias correction are the arguments
QAT = {"epochs": 1, "lr": 2e-5, "batch_size": 32, "calib_samples": 300, "distill": {"shift": 0, "hflip": False}}


def main() -> None:
    torch.set_num_threads(1)
    run = Path(sys.argv[1])
    epochs_list = [int(a) for a in sys.argv[2].split(",")] if len(sys.argv) > 2 else [0, 1]
    lrs = [float(a) for a in sys.argv[3].split(",")] if len(sys.argv) > 3 else [QAT["lr"]]
    bcs = [a == "on" for a in sys.argv[4].split(",")] if len(sys.argv) > 4 else [False, True]
    train, ev = halves()
    spec = chain_float_model(run)
    before = torch_outputs(spec.module, ev)
    print("| QAT epochs | lr | bias correction | top-1 % | agreement with the float model % | mean abs Δlogit "
          "| layers corrected | wall |")
    print("|---|---|---|---|---|---|---|---|")
    for epochs, lr, bc in ((e, lr, bc) for e in epochs_list for lr in (lrs if e else lrs[:1]) for bc in bcs):
        t = time.time()
        q = edgecompress.qat(spec, {**QAT, "epochs": epochs, "lr": lr, "bias_correction": bc}, data=train,
                             progress=False)
        with tempfile.TemporaryDirectory() as td:
            out = ort_outputs(export(q, "onnx", "int8", Path(td)).path, ev.x)
        layers = q.extra["passes"][-1]["log"].get("bias_corrected_layers", "—")
        print(f"| {epochs} | {lr:g} | {bc} | {drift(out, before, ev.y)} | {layers} | {time.time() - t:.0f} s |",
              flush=True)


if __name__ == "__main__":
    main()
