"""Memory per export, one format at a time (issue #7): N exports of EfficientNet-Lite0 in one
process, RSS after each (after `gc.collect()` and `malloc_trim(0)`), mean growth after run 2.

    OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/export_memory_loop.py FORMAT PRECISION [base|reset] [N]

`reset` also calls `torch._dynamo.reset()` and clears sympy's cache after each export. Prints one
line per run and a RESULT line; nothing is written (results go to RESULTS-load.md by hand).
"""

from __future__ import annotations

import ctypes
import gc
import itertools
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS"))


def main() -> None:
    import torch

    from edgecompress.exporters import export
    from edgecompress.models import load_model
    from edgecompress.paths import imagenet_sample
    from edgecompress.pipeline import resolve_data

    torch.set_num_threads(1)
    fmt, prec = sys.argv[1], sys.argv[2]
    mode = sys.argv[3] if len(sys.argv) > 3 else "base"
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 6
    libc = ctypes.CDLL("libc.so.6")
    vals = []
    for i in range(n):
        spec = load_model("zoo:efficientnet-lite0")
        calib = resolve_data(spec, f"{imagenet_sample()}[0:16]", "calibration", False) if prec == "int8" else None
        with tempfile.TemporaryDirectory() as td:
            export(spec, fmt, prec, Path(td), calib)
        del spec, calib
        if mode == "reset":
            import sympy.core.cache
            import torch._dynamo

            torch._dynamo.reset()
            sympy.core.cache.clear_cache()
        gc.collect()
        libc.malloc_trim(0)
        vals.append(rss_mb())
        print(f"{fmt}:{prec} {mode} run {i + 1}: {vals[-1]:.1f} MB", flush=True)
    steps = [b - a for a, b in itertools.pairwise(vals[1:])]
    print(f"RESULT {fmt}:{prec} {mode} per-run growth after run 2: {sum(steps) / max(len(steps), 1):+.2f} MB "
          f"{[f'{s:+.1f}' for s in steps]}")


if __name__ == "__main__":
    main()
