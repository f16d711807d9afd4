"""TFLite full-int8: MinMax activation observers (the exporter's) vs exact percentile ranges.

EfficientNet-Lite0, calibrated on the first 300 images of ../shared/data/imagenet-sample-1k and
scored on the other 700 against the fp32 PyTorch model: agreement, top-1 and mean |logit error|.
Each percentile variant keeps the exact upper / lower `pct` percentile of every activation value
seen (a running top-k merge), where ORT's percentile calibration uses a histogram.

Run: `.venv/bin/python benchmarks/tflite_observers.py [PCT ...]` (e.g. 99.999 99.99); files go to
benchmarks/out/tflite_observers/.
"""
import json
import math
import pathlib
import sys
import time

import numpy as np
import torch
from _common import imagenet_or_exit
from torchao.quantization.pt2e.observer import MinMaxObserver

from edgecompress.data import DataSpec, load_data
from edgecompress.exporters import _litert_convert as lc
from edgecompress.models import load_model
from edgecompress.targets import reference_outputs


class PercentileObserver(MinMaxObserver):
    """min/max = the exact lower/upper `pct` percentiles of every value seen (top-k merge)."""
    pct = 99.999

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.n = 0
        self.hi = None
        self.lo = None

    def forward(self, x_orig):
        if x_orig.numel() == 0:
            return x_orig
        x = x_orig.detach().float().flatten()
        self.n += x.numel()
        k = max(1, math.ceil((1 - self.pct / 100) * self.n))
        def keep(buf, v):
            v = v.topk(min(k, v.numel())).values
            v = v if buf is None else torch.cat([buf, v])
            return v.topk(min(k, v.numel())).values
        self.hi = keep(self.hi, x)
        self.lo = keep(self.lo, -x)
        self.min_val.copy_(-self.lo.min())
        self.max_val.copy_(self.hi.min())
        return x_orig


def pct_obs(p):
    return type(f"P{p}", (PercentileObserver,), {"pct": p})


OUT = pathlib.Path(__file__).resolve().parent / "out" / "tflite_observers"
OUT.mkdir(parents=True, exist_ok=True)
data = load_data(DataSpec(str(imagenet_or_exit())), "efficientnet-lite", 224, "evaluation", progress=False)
calib, ev = data.take(slice(0, 300)), data.take(slice(300, None))
spec = load_model("zoo:efficientnet-lite0")
ref = reference_outputs(spec.module, ev)
variants = {"minmax": MinMaxObserver, **{f"pct{p}": pct_obs(p) for p in map(float, sys.argv[1:])}}
for name, obs in variants.items():
    t = time.time()
    out = OUT / f"{name}.tflite"
    lc.convert(spec.module, spec.example_inputs(1)[0], "int8", out,
               calib.batches(16), channels_last_io=True, quantizer=lc.make_quantizer(act_observer=obs))
    tc = time.time() - t
    y = lc.run(out, ev.x)
    agree = float((y.argmax(1) == ref.argmax(1)).mean())
    top1 = float((y.argmax(1) == ev.y).mean())
    err = float(np.abs(y - ref).mean())
    print(json.dumps({"variant": name, "agreement": round(100 * agree, 2), "top1": round(100 * top1, 2),
                      "logit_err": round(err, 4), "convert_s": round(tc, 1)}), flush=True)
