"""Why the validator disables ONNX Runtime's SkipLayerNormFusion: MiniLM-L6 with and without it.

Reads the fp32 and int8-dynamic ONNX files of a `bench_minilm.py --out DIR` run and opens each in
ONNX Runtime twice (ORT_ENABLE_ALL, 1 thread): as ORT fuses it (Add + LayerNormalization ->
SkipLayerNormalization) and with `disabled_optimizers=["SkipLayerNormFusion"]`, as the validator
and the README's deployment advice open it. Input: batch 1, sequence 128, random token ids and an
all-ones attention mask. Prints, per file and setting, the p50 latency (CPU 0, 9 interleaved rounds
of 30 calls after 20 warm-up, median of the rounds' p50) and, from ORT's per-node profile over 30
calls, the time per forward of the (Skip)LayerNormalization nodes, their count and time per call.

Run: `.venv/bin/python benchmarks/minilm_ort_profile.py DIR`
"""

from __future__ import annotations

import collections
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np
import onnxruntime as ort
from _common import header, interleaved_p50s

if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {0})

SETTINGS = {"ORT fused (SkipLayerNormalization)": [],
            "SkipLayerNormFusion disabled (the validator's)": ["SkipLayerNormFusion"]}
NORM_OPS = ("SkipLayerNormalization", "LayerNormalization", "SkipSimplifiedLayerNormalization")


def _session(path: Path, disabled: list[str], profile_dir: str | None = None) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if profile_dir:
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(profile_dir) / "p")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)


def _feed(sess: ort.InferenceSession) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feed = {}
    for i in sess.get_inputs():
        if "mask" in i.name:
            feed[i.name] = np.ones((1, 128), np.int64)
        elif "type" in i.name:
            feed[i.name] = np.zeros((1, 128), np.int64)
        else:
            feed[i.name] = rng.integers(1000, 20000, (1, 128), dtype=np.int64)
    return feed


def _norm_profile(path: Path, disabled: list[str], calls: int = 30) -> dict[str, tuple[int, float]]:
    """{op type: (nodes per forward, ms per forward)} for the normalization ops."""
    with tempfile.TemporaryDirectory() as td:
        sess = _session(path, disabled, td)
        feed = _feed(sess)
        for _ in range(calls):
            sess.run(None, feed)
        events = json.loads(Path(sess.end_profiling()).read_text())
    dur: dict[str, float] = collections.defaultdict(float)
    nodes: dict[str, set[str]] = collections.defaultdict(set)
    for e in events:
        op = (e.get("args") or {}).get("op_name")
        if e.get("cat") == "Node" and op in NORM_OPS and e["name"].endswith("_kernel_time"):
            dur[op] += e["dur"] / 1000 / calls
            nodes[op].add(e["name"])
    return {op: (len(nodes[op]), dur[op]) for op in dur}


def main(folder: Path) -> None:
    head = header("MiniLM-L6 in ONNX Runtime: SkipLayerNormFusion on and off")
    files = {"fp32": next(folder.glob("*fp32.onnx")), "int8-dynamic": next(folder.glob("*int8-dynamic.onnx"))}
    calls = {}
    for prec, path in files.items():
        for label, disabled in SETTINGS.items():
            sess = _session(path, disabled)
            feed = _feed(sess)
            calls[(prec, label)] = (lambda s=sess, f=feed: s.run(None, f))
    p50s = interleaved_p50s(calls, rounds=9, per_round=30, warmup=20)
    print(head)
    print("| file | setting | p50 ms | norm nodes per forward | their ms per forward | ms per call |")
    print("|---|---|---|---|---|---|")
    for (prec, label), v in p50s.items():
        prof = _norm_profile(files[prec], SETTINGS[label])
        for op, (n, ms) in sorted(prof.items()):
            print(f"| {prec} | {label} | {statistics.median(v):.2f} | {op} x{n} | {ms:.2f} | {ms / max(n, 1):.3f} |")


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1].startswith("-"):
        sys.exit(__doc__.strip())
    if not list(Path(sys.argv[1]).glob("*int8-dynamic.onnx")) or not list(Path(sys.argv[1]).glob("*fp32.onnx")):
        sys.exit(f"{sys.argv[1]}: no *fp32.onnx / *int8-dynamic.onnx (run benchmarks/bench_minilm.py --out DIR first)")
    main(Path(sys.argv[1]))
