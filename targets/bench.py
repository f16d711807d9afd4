#!/usr/bin/env python3
"""Self-contained benchmark of one artifact: latency percentiles, peak memory, and outputs.

Runs in its own process (so a crash or leak in a runtime cannot take the caller down) and needs
only the standard library, numpy and the runtime itself, so the same file is copied to remote
devices (ssh, adb, qemu) and run there unchanged. Prints one JSON object on its last stdout line.

Usage: bench.py ARTIFACT --runtime {onnxruntime,openvino,litert} [--threads N] [--cpus 0,1]
       [--batches 1,8] [--warmup 10] [--runs 100] [--inputs X.npy|X.npz] [--outputs OUT.npy]
       [--precision-hint f32] [--layout NCHW|NHWC] [--input-shape 1,3,224,224]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from typing import Any

# before onnxruntime is imported: no usage telemetry unasked (see edgecompress/__init__.py; this
# file also runs alone on devices)
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


def _status_mb(key: str) -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _rss_mb() -> float:
    return _status_mb("VmRSS")


def _peak_mb() -> float:
    # VmHWM belongs to this address space; ru_maxrss would also count the parent's peak, since it
    # survives fork + exec.
    return _status_mb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ORT 1.32's CPU SkipLayerNormalization kernel (what SkipLayerNormFusion makes of Add + LayerNorm)
# takes 0.30 ms per call on a 128x384 MiniLM activation here, 9x a plain LayerNormalization: 3.6 ms
# of a 14.3 ms int8 forward. Unfused, MiniLM-L6 runs 26.5 -> 23.4 ms fp32 and 14.3 -> 11.4 ms int8
# (b1, s128, 1 thread; benchmarks/minilm_ort_profile.py, RESULTS-minilm.md), outputs equal to 1e-7. No pattern in a
# CNN matches it. Deploy with the same `disabled_optimizers` (README, "ONNX Runtime settings").
ORT_DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)


def _utf8_path(path: str) -> str:
    """A path ONNX Runtime can take: its binding refuses a str that is not UTF-8 (a folder named
    with Latin-1 bytes reaches Python as surrogate escapes). Then this process (one per artifact)
    moves into the file's folder and names the file alone, and external data beside it is still
    found."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        folder, name = os.path.split(path)
        if folder:
            os.chdir(folder)
        name.encode("utf-8")  # a file name that is not UTF-8 itself still fails, with its error
        return name


# Every runner class takes (path, threads, precision hint, layout: ONNX Runtime and OpenVINO take
# NCHW data as given) and says by `eval_batch` whether it evaluates at a batch of its own (None:
# --eval-batch).
class OrtRunner:
    eval_batch: int | None = None

    def __init__(self, path: str, threads: int, hint: str | None, layout: str = "NCHW") -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.sess = ort.InferenceSession(_utf8_path(path), so, providers=["CPUExecutionProvider"],
                                         disabled_optimizers=list(ORT_DISABLED_OPTIMIZERS))
        self.inputs = [i.name for i in self.sess.get_inputs()]
        # integer inputs by their type: int32 ids for a file of int64 ids were an ORT error
        self.int_types = {i.name: i.type[len("tensor("):-1] for i in self.sess.get_inputs()
                          if i.type in ("tensor(int64)", "tensor(int32)")}
        self.info = {"name": "onnxruntime", "version": ort.__version__,
                     "settings": {"provider": "CPUExecutionProvider", "intra_op_threads": threads,
                                  "graph_optimization": "ORT_ENABLE_ALL",
                                  "disabled_optimizers": list(ORT_DISABLED_OPTIMIZERS)}}

    def prepare(self, x):
        feed = x if isinstance(x, dict) else {self.inputs[0]: x}
        return {k: _as_int(v, self.int_types.get(k)) for k, v in feed.items()}

    def infer(self, feed):
        return self.sess.run(None, feed)[0]

    def finish(self, y):
        return y


def _as_int(a, dtype):
    """Integer ids `a` as the integer type a file takes (`dtype`, None: as they are)."""
    if dtype is None or a.dtype == dtype or a.dtype.kind not in "iu":
        return a
    return a.astype(dtype)


def _ov_type(t) -> str:
    return t.to_string() if hasattr(t, "to_string") else str(t)


def decline_openvino_telemetry() -> None:
    """No usage data sent to Google Analytics unless the user opted in.

    Why: `import openvino` (its converter), `ov.convert_model` and `nncf.quantize` send telemetry
    through `openvino_telemetry`, and without a consent file (`opt_in_out --opt_in` / `--opt_out`
    writes it) they send by default: every export and OpenVINO benchmark here forked a sender
    process. A build tool must not phone home unasked, so a missing consent file counts as
    declined; a user's explicit opt-in is kept. Call it before importing openvino or nncf. It
    lives here because this file runs alone on devices; the exporters import it from here.
    """
    try:
        from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker
    except ImportError:  # no telemetry package, nothing is sent
        return
    if getattr(OptInChecker.check, "_edgecompress", False):
        return
    original = OptInChecker.check

    def check(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        return ConsentCheckResult.DECLINED if result == ConsentCheckResult.NO_FILE else result

    check._edgecompress = True  # type: ignore[attr-defined]  # a marker on the function object
    OptInChecker.check = check


class OpenVinoRunner:
    eval_batch: int | None = None

    def __init__(self, path: str, threads: int, hint: str | None, layout: str = "NCHW") -> None:
        decline_openvino_telemetry()
        import openvino as ov

        self.core = ov.Core()
        self.model = self.core.read_model(path)
        self.config = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
                       "PERFORMANCE_HINT": "LATENCY"}
        if hint:
            # On CPUs with bf16 OpenVINO silently runs fp32 IRs in bf16: pin it when asked.
            self.config["INFERENCE_PRECISION_HINT"] = hint
        self._compiled: dict[tuple | None, Any] = {}  # None: the file's own shapes
        self.names = [p.get_any_name() for p in self.model.inputs]
        self.int_types = [t if t.kind in "iu" else None
                          for t in (p.get_element_type().to_dtype() for p in self.model.inputs)]
        req = self._compile(None)
        self.info = {"name": "openvino", "version": ov.get_version(),
                     "settings": {"device": "CPU", "threads": threads,
                                  "inference_precision": _ov_type(req.get_property("INFERENCE_PRECISION_HINT")),
                                  "requested_precision": hint or "default"}}

    def _compile(self, shapes):
        key = tuple(shapes) if shapes else None
        if key not in self._compiled:
            m = self.model.clone()
            if shapes:
                m.reshape({n: list(s) for n, s in zip(self.names, shapes)})
            self._compiled[key] = self.core.compile_model(m, "CPU", self.config)
        return self._compiled[key]

    def prepare(self, x):
        arrays = [x[n] for n in self.names] if isinstance(x, dict) else [x]
        arrays = [_as_int(a, t) for a, t in zip(arrays, self.int_types)]
        return self._compile([a.shape for a in arrays]), arrays

    def infer(self, feed):
        compiled, arrays = feed
        return compiled(arrays)[compiled.outputs[0]]

    def finish(self, y):
        return y


def _by_name(x, name):
    """The input array for a .tflite tensor: litert-torch names keyword inputs 'serving_default_<name>'."""
    return x[name] if name in x else x[name.removeprefix("serving_default_").split(":")[0]]


class LiteRtRunner:
    # TFLite graphs are converted at batch 1 and may fix it in reshapes: evaluate per sample.
    eval_batch: int | None = 1

    def __init__(self, path: str, threads: int, hint: str | None, layout: str = "NCHW") -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.it = Interpreter(model_path=_utf8_path(path), num_threads=threads)
        self.it.allocate_tensors()
        self.inp = self.it.get_input_details()
        self.out = self.it.get_output_details()[0]
        self.layout = layout
        self._batch = None
        import ai_edge_litert

        self.info = {"name": "litert", "version": getattr(ai_edge_litert, "__version__", "?"),
                     "settings": {"delegate": "XNNPACK (default)", "num_threads": threads,
                                  "input_dtype": str(self.inp[0]["dtype"].__name__),
                                  "layout": layout}}

    def prepare(self, x):
        """NCHW float -> what the file expects (layout, int8 quantization): the caller's job."""
        import numpy as np

        arrays = [_by_name(x, d["name"]) for d in self.inp] if isinstance(x, dict) else [x]
        # Text encoders are converted at a fixed sequence length (reshapes bake it in): right-pad
        # shorter token / mask rows with 0, which masked attention and mean pooling ignore.
        arrays = [np.pad(a, ((0, 0), (0, d["shape"][1] - a.shape[1])))
                  if a.ndim == 2 and np.issubdtype(a.dtype, np.integer) and d["shape"][1] > a.shape[1] else a
                  for d, a in zip(self.inp, arrays)]
        if self._batch != arrays[0].shape[0]:
            # Unknown until the resize succeeds: a graph that fixes its batch (attention, a batch-1
            # .pt2) fails to allocate at 4, and the next batch-1 call must resize back, not skip it.
            self._batch = None
            for d, a in zip(self.inp, arrays):
                shape = a.shape if not (self.layout == "NHWC" and a.ndim == 4) else \
                    (a.shape[0], a.shape[2], a.shape[3], a.shape[1])
                self.it.resize_tensor_input(d["index"], list(shape))
            self.it.allocate_tensors()
            self.inp = self.it.get_input_details()
            self.out = self.it.get_output_details()[0]
            self._batch = arrays[0].shape[0]
        feed = []
        for d, a in zip(self.inp, arrays):
            if self.layout == "NHWC" and a.ndim == 4:
                a = a.transpose(0, 2, 3, 1)
            scale, zp = d["quantization"]
            if np.issubdtype(d["dtype"], np.integer) and scale:
                info = np.iinfo(d["dtype"])
                a = np.clip(np.round(a / scale + zp), info.min, info.max)
            feed.append((d["index"], np.ascontiguousarray(a.astype(d["dtype"]))))
        return feed

    def infer(self, feed):
        for index, a in feed:
            self.it.set_tensor(index, a)
        self.it.invoke()
        return self.it.get_tensor(self.out["index"])

    def finish(self, y):
        import numpy as np

        scale, zp = self.out["quantization"]
        if np.issubdtype(y.dtype, np.integer) and scale:
            y = (y.astype(np.float32) - zp) * scale
        return y


def _run(runner, x):
    return runner.finish(runner.infer(runner.prepare(x)))


RUNNERS: dict[str, Any] = {"onnxruntime": OrtRunner, "openvino": OpenVinoRunner, "litert": LiteRtRunner}


def _pct(values, q):
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def _summary(times, cpu, io, batch):
    """One batch size's latency record (ms) from its timed runs; throughput in samples per second."""
    return {"p50": _pct(times, 50), "p90": _pct(times, 90), "p99": _pct(times, 99),
            "mean": sum(times) / len(times), "min": min(times), "runs": len(times),
            "throughput_per_s": 1000 * batch / _pct(times, 50),
            # CPU time of the calling thread: excludes time the VM or scheduler took away, so it
            # stays comparable on a shared machine (exact at 1 thread).
            "cpu_p50": _pct(cpu, 50),
            "io_ms": _pct(io, 50)}


def _take(x, n):
    import numpy as np

    if isinstance(x, dict):
        return {k: _take(v, n) for k, v in x.items()}
    reps = -(-n // x.shape[0])
    # A writable copy in RAM, as an app's pre-processed buffer is. A slice of the read-only memmap
    # the inputs file is opened as made OpenVINO copy the input on every timed call (it shares only
    # writable memory): +0.09 ms per int8 EfficientNet-Lite0 call, 2.28x -> 2.24x (RESULTS-spine.md).
    return np.array(np.concatenate([x[:n]] * reps)[:n] if x.shape[0] < n else x[:n], order="C", copy=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifact")
    ap.add_argument("--runtime", required=True, choices=sorted(RUNNERS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cpus", default="")
    ap.add_argument("--batches", default="1")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--inputs", default="")
    ap.add_argument("--outputs", default="")
    ap.add_argument("--eval-batch", type=int, default=8)
    ap.add_argument("--precision-hint", default="")
    ap.add_argument("--layout", default="NCHW")
    ap.add_argument("--input-shape", default="")
    a = ap.parse_args(argv)

    # Pin before any runtime starts its thread pool, so the pool inherits the mask.
    cpus = sorted({int(c) for c in a.cpus.split(",") if c.strip()})
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(a.threads)
    import numpy as np

    result = {"artifact": a.artifact, "threads": a.threads,
              "cpus": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [],
              "machine": {"arch": platform.machine(), "python": platform.python_version(),
                          "numpy": np.__version__, "loadavg": list(os.getloadavg())}}
    data: Any  # {name: array} from an .npz, else one array
    if a.inputs:
        if a.inputs.endswith(".npz"):
            with np.load(a.inputs) as z:
                data = {k: z[k] for k in z.files}
        else:
            data = np.load(a.inputs, mmap_mode="r")
    else:
        shape = [int(s) for s in a.input_shape.split(",")]
        data = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    sample = _take(data, 1)
    rss0 = _rss_mb()
    t0 = time.perf_counter()
    runner = RUNNERS[a.runtime](a.artifact, a.threads, a.precision_hint or None, a.layout)
    _run(runner, sample)
    result["load_seconds"] = round(time.perf_counter() - t0, 3)
    result["runtime"] = runner.info
    latency: dict[str, dict[str, Any]] = {}
    for b in [int(s) for s in a.batches.split(",") if s.strip()]:
        xb = _take(data, b)
        try:
            feed = runner.prepare(xb)
            runner.finish(runner.infer(feed))
        except Exception as e:  # e.g. a .tflite whose graph fixes batch 1: report, don't abort
            latency[str(b)] = {"error": ("%s: %s" % (type(e).__name__, e)).splitlines()[0][:200]}
            continue
        for _ in range(a.warmup):
            runner.infer(feed)
        # Timed: the runtime call on inputs already in the file's layout and dtype, as TFLite's
        # benchmark_model and ORT's perf test time it. Converting float NCHW to a .tflite's NHWC int8
        # is the app's pre-processing; it is timed apart ("io_ms") so it is visible, not hidden.
        times, cpu = [], []
        for _ in range(a.runs):
            t, c = time.perf_counter(), time.thread_time()
            runner.infer(feed)
            cpu.append((time.thread_time() - c) * 1000)
            times.append((time.perf_counter() - t) * 1000)
        # The conversion itself, timed directly (a difference of two medians read 0-0.9 ms for
        # files that convert nothing).
        io = []
        for _ in range(min(a.runs, 20)):
            t = time.perf_counter()
            f = runner.prepare(xb)
            spent = time.perf_counter() - t
            y = runner.infer(f)
            t = time.perf_counter()
            runner.finish(y)
            io.append((spent + time.perf_counter() - t) * 1000)
        latency[str(b)] = _summary(times, cpu, io, b)
    result["latency_ms"] = latency
    # Peak memory of the inference process, read before the evaluation set is streamed through.
    result["memory_mb"] = {"peak_rss": round(_peak_mb(), 1), "rss_before_load": round(rss0, 1),
                           "model_and_runtime": round(_peak_mb() - rss0, 1)}
    if a.outputs and a.inputs:
        n = len(next(iter(data.values()))) if isinstance(data, dict) else data.shape[0]
        outs = []
        eval_batch = runner.eval_batch or a.eval_batch
        for s in range(0, n, eval_batch):
            xb = {k: v[s:s + eval_batch] for k, v in data.items()} if isinstance(data, dict) \
                else np.ascontiguousarray(data[s:s + eval_batch])
            outs.append(np.asarray(_run(runner, xb), dtype=np.float32).reshape(
                (next(iter(xb.values())) if isinstance(xb, dict) else xb).shape[0], -1))
        tmp = a.outputs + ".tmp.npy"
        np.save(tmp, np.concatenate(outs))
        os.replace(tmp, a.outputs)
        result["outputs"] = a.outputs
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
