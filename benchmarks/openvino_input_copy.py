"""Does the input's memory change OpenVINO's measured latency? A read-only memmap vs an array in RAM.

The validator's benchmark child (`targets/bench.py`) opens its inputs file as a read-only memmap.
Until 2026-12-01 the timed batch was a slice of it; OpenVINO shares only writable memory, so it
copied the 602 kB input on every timed call. This times both, fp32 (f32 hint, as the validator
pins it) and int8 IRs of an `edgecompress demo --out DIR` run, 1 thread on CPU 0, compiled as the
validator compiles them, in interleaved rounds (15 rounds x 40 calls after 30 warm-up; medians).
Also prints, for comparison, `openvino.runtime`'s lowest-overhead call (an infer request with the
input tensor set once), which is what OpenVINO's own benchmark_app times.

Run: `.venv/bin/python benchmarks/openvino_input_copy.py DIR`
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import openvino as ov

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, interleaved_p50s

if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {0})


def main(folder: Path) -> None:
    head = header("OpenVINO: input memory vs measured latency")
    core = ov.Core()
    x = np.random.default_rng(0).standard_normal((4, 3, 224, 224)).astype(np.float32)
    with tempfile.TemporaryDirectory() as td:
        np.save(Path(td) / "x.npy", x)
        mm = np.ascontiguousarray(np.load(Path(td) / "x.npy", mmap_mode="r")[:1])  # the old timed batch
        ram = np.array(x[:1], order="C", copy=True)  # the new one (bench._take)
        calls = {}
        for p in ("fp32", "int8"):
            m = core.read_model(str(folder / f"efficientnet-lite0-{p}.xml"))
            m.reshape({m.inputs[0].get_any_name(): [1, 3, 224, 224]})
            cfg = {"INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
                   **({"INFERENCE_PRECISION_HINT": "f32"} if p == "fp32" else {})}
            c = core.compile_model(m, "CPU", cfg)
            req = c.create_infer_request()
            req.set_input_tensor(ov.Tensor(ram, shared_memory=True))
            calls[(p, "read-only memmap slice (before)")] = lambda c=c: c([mm])
            calls[(p, "writable array in RAM (now)")] = lambda c=c: c([ram])
            calls[(p, "infer request, input set once")] = lambda r=req: r.infer()
        res = interleaved_p50s(calls, rounds=15, per_round=40, warmup=30)
    print(head)
    print("| timed call | fp32 ms | int8 ms | speed-up |\n|---|---|---|---|")
    for how in ("read-only memmap slice (before)", "writable array in RAM (now)", "infer request, input set once"):
        f32, i8 = statistics.median(res[("fp32", how)]), statistics.median(res[("int8", how)])
        print(f"| {how} | {f32:.3f} | {i8:.3f} | {f32 / i8:.2f}x |")


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1].startswith("-"):
        sys.exit(__doc__.strip())
    main(Path(sys.argv[1]))
