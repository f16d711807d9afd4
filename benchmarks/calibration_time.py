"""Time and peak memory of one ONNX int8 calibration of EfficientNet-Lite0 (300 images).

`quantize_onnx_int8` on the fp32 ONNX file of an `edgecompress demo --out DIR` run, calibrated on
rows 0-299 of ../shared/data/imagenet-sample-1k/labels.csv (decoded before the clock starts), first
3 convs float as the zoo entry does. Peak RSS is the whole process's (Python, torch, ORT and the
300 decoded images included). Run each method in its own process:

    .venv/bin/python benchmarks/calibration_time.py DIR {minmax|percentile|entropy}
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    import onnx

    import edgecompress.exporters.onnx as eo
    from edgecompress.data import DataSpec, load_data
    from edgecompress.exporters.base import ExportOptions
    from edgecompress.paths import imagenet_sample

    demo, method = Path(sys.argv[1]), sys.argv[2]
    labels = imagenet_sample()
    if labels is None:
        sys.exit("needs ../shared/data/imagenet-sample-1k")
    calib = load_data(DataSpec(str(labels), 0, 300), "efficientnet-lite", 224, "calibration", progress=False)
    fp32 = demo / "efficientnet-lite0-fp32.onnx"
    name = onnx.load(str(fp32), load_external_data=False).graph.input[0].name
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with tempfile.TemporaryDirectory() as td:
        t = time.perf_counter()
        eo.quantize_onnx_int8(fp32, Path(td) / "q.onnx", calib, name,
                              ExportOptions(calib_method=method, progress=False), float_first=3)
        took = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{method}: {took:.1f} s, peak RSS {peak:.0f} MB (before calibration {before:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
