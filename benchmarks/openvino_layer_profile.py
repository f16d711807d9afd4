"""Where OpenVINO spends an EfficientNet-Lite0 inference, fp32 vs int8, by layer kind.

Reads the fp32 and int8 IRs of an `edgecompress demo --out DIR` run, compiles each at 1 thread
(fp32 pinned to the `f32` hint, as the validator measures it), runs 100 profiled inferences after
50 warm-up, and sums OpenVINO's per-node times by (node type, kernel). The ratio per kind says
which layers int8 speeds up and which it barely does.

Run: `.venv/bin/python benchmarks/openvino_layer_profile.py DIR` (pin it, e.g. `taskset -c 1`).
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path

import numpy as np
import openvino as ov


def profile(xml: Path, hint: str | None, runs: int = 100) -> dict[tuple[str, str], float]:
    cfg: dict = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": 1, "PERF_COUNT": True, "NUM_STREAMS": 1}
    if hint:
        cfg["INFERENCE_PRECISION_HINT"] = hint
    req = ov.Core().compile_model(ov.Core().read_model(str(xml)), "CPU", cfg).create_infer_request()
    x = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
    for _ in range(50):
        req.infer({0: x})
    us: dict[tuple[str, str], float] = collections.defaultdict(float)
    for _ in range(runs):
        req.infer({0: x})
        for p in req.profiling_info:
            if p.status == p.Status.EXECUTED:
                us[(p.node_type, p.exec_type)] += p.real_time.total_seconds() * 1e6 / runs
    return us


def main() -> int:
    out = Path(sys.argv[1])
    fp32 = profile(out / "efficientnet-lite0-fp32.xml", "f32")
    int8 = profile(out / "efficientnet-lite0-int8.xml", None)
    kinds = ("Convolution", "GroupConvolution", "FullyConnected")
    print("| layer kind | fp32 us (kernel) | int8 us (kernel) | int8 speed-up |")
    print("|---|---|---|---|")
    for kind in kinds:
        f = {k: v for k, v in fp32.items() if k[0].startswith(kind)}
        q = {k: v for k, v in int8.items() if k[0].startswith(kind)}
        fs, qs = sum(f.values()), sum(q.values())
        ratio = f"{fs / qs:.2f}x" if qs else "—"
        print(f"| {kind} | {fs:.0f} ({', '.join(sorted({k[1] for k in f}))}) | {qs:.0f} "
              f"({', '.join(sorted({k[1] for k in q}))}) | {ratio} |")
    print(f"| all executed nodes | {sum(fp32.values()):.0f} | {sum(int8.values()):.0f} | "
          f"{sum(fp32.values()) / sum(int8.values()):.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
