"""Why the int8 speed-up bars (ORT >= 2.2x, LiteRT >= 2.0x) are not met: a rerunnable probe.

    .venv/bin/edgecompress demo --out DIR          # fp32 + int8 ONNX and .tflite of EfficientNet-Lite0
    nice .venv/bin/python benchmarks/int8_speed_probe.py DIR [--calib-n 64]

1 thread, batch 1, thread CPU time (`time.thread_time`), all files interleaved in one process
(rounds of 10 runs each), median; pin it with `taskset -c N` and keep the machine quiet. Measures:
- ONNX Runtime: fp32, the demo's int8 (first 3 convs float), and variants that also leave the
  depthwise convolutions float (all / the first 4 / the first 8), quantized here with the exporter's
  own `quantize_onnx_int8` (minmax, `--calib-n` images);
- LiteRT: fp32 and full-int8 .tflite through the Interpreter and the CompiledModel API, and the
  int8 file with each XNNPACK flag set tried (none helped).
- with `--sweep-float-first`: ONNX int8 with the first 0, 1, 2 or 4 convs float (the zoo's 3 is the
  demo's file), to check that default on a new host.
- with `--types`: ONNX int8 with the other activation / weight type pairs ORT offers (U8U8, S8S8;
  the exporter uses U8S8), same calibration and float stem.
- with `--openvino DIR[,DIR...]`: the fp32 (`f32` hint) and int8 (default hint) IRs that
  `edgecompress export -f openvino --int8 --out DIR` wrote, e.g. with and without `--float-first 3`;
  these rows are wall time (`perf_counter`), since OpenVINO may infer on a worker thread of its own
  that the caller's thread time would miss; `benchmarks/openvino_float_first.sh` is the cleaner
  measurement (fresh processes, `targets/bench.py`).
  `--only-openvino` skips the ONNX and LiteRT rows (DIR argument then unused: pass `-`).
Prints a markdown table; nothing is written.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from unittest.mock import patch

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def ort_session(path: Path) -> Callable[[], None]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    feed = {s.get_inputs()[0].name: np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)}
    return lambda: s.run(None, feed)


def litert_runs(path: Path) -> dict[str, Callable[[], None]]:
    from ai_edge_litert.compiled_model import CompiledModel
    from ai_edge_litert.cpu_options import CpuOptions
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_litert.options import Options

    it = Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    rng = np.random.default_rng(0)
    x = rng.standard_normal(d["shape"]).astype(np.float32) if d["dtype"] == np.float32 else \
        rng.integers(-100, 100, size=d["shape"]).astype(d["dtype"])
    it.set_tensor(d["index"], x)
    out = {"Interpreter": it.invoke}
    cm = CompiledModel.from_file(str(path), options=Options(cpu_options=CpuOptions(num_threads=1)))
    ib, ob = cm.create_input_buffers(0), cm.create_output_buffers(0)
    out["CompiledModel"] = lambda: cm.run_by_index(0, ib, ob)
    return out


def openvino_runs(d: Path) -> dict[str, Callable[[], None]]:
    import openvino as ov

    core = ov.Core()
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    out = {}
    for prec, hint in (("fp32", {"INFERENCE_PRECISION_HINT": "f32"}), ("int8", {})):
        m = core.read_model(str(d / f"efficientnet-lite0-{prec}.xml"))
        m.reshape({m.inputs[0].get_any_name(): list(x.shape)})  # static batch 1, as targets/bench.py runs it
        c = core.compile_model(m, "CPU", {"INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1,
                                          "PERFORMANCE_HINT": "LATENCY", **hint})
        req = c.create_infer_request()
        out[f"OpenVINO {prec} ({d.name})"] = lambda req=req: req.infer({0: x})
    return out


def _quantize(fp32: Path, calib_n: int, out: Path, float_first: int = 3) -> None:
    """The exporter's `quantize_onnx_int8` (minmax, first `float_first` convs float, 3 as the zoo
    entry) on `calib_n` sample images; the variants patch what it calls around this."""
    import onnx

    import exporters.onnx as eo
    from edgecompress.data.datasets import load_data
    from edgecompress.exporters.base import ExportOptions
    from edgecompress.paths import imagenet_sample

    sample = imagenet_sample()
    if sample is None:
        raise SystemExit("../shared/data/imagenet-sample-1k is absent: the int8 variants need calibration images")
    calib = load_data(f"{sample}[0:{calib_n}]", "efficientnet-lite", progress=False)
    inp = onnx.load(str(fp32), load_external_data=False).graph.input[0].name
    eo.quantize_onnx_int8(fp32, out, calib, inp, ExportOptions(calib_method="minmax"), float_first=float_first)


def float_first_variants(fp32: Path, calib_n: int, td: Path) -> dict[str, Path]:
    """int8 files with the first K convs float for K other than the zoo entry's 3."""
    out = {}
    for k in (0, 1, 2, 4):
        path = td / f"ff{k}.onnx"
        _quantize(fp32, calib_n, path, k)
        out[f"ONNX int8, first {k} convs float"] = path
    return out


def depthwise_variants(fp32: Path, calib_n: int, td: Path) -> dict[str, Path]:
    """int8 files with the first 3 convs float plus all / the first 4 / 8 depthwise convs float."""
    import onnx

    import exporters.onnx as eo

    out = {}
    for name, k in (("all", None), ("first 4", 4), ("first 8", 8)):
        def leading(pre: Path, n: int, k: int | None = k) -> list[str]:
            nodes = [nd for nd in onnx.load(str(pre), load_external_data=False).graph.node
                     if nd.op_type in ("Conv", "Gemm", "MatMul")]
            dw = [nd.name for nd in nodes if any(a.name == "group" and a.i > 1 for a in nd.attribute)]
            return sorted({nd.name for nd in nodes[:n]} | set(dw[:k] if k else dw))
        path = td / f"dw-{k or 'all'}.onnx"
        with patch.object(eo, "_leading_nodes", leading):
            _quantize(fp32, calib_n, path)
        out[f"ONNX int8, first 3 + {name} depthwise convs float"] = path
    return out


def type_variants(fp32: Path, calib_n: int, td: Path) -> dict[str, Path]:
    """int8 files quantized with U8U8 and S8S8 instead of the exporter's U8S8 (first 3 convs float)."""
    import onnxruntime.quantization as oq
    from onnxruntime.quantization import QuantType

    real = oq.quantize_static
    out = {}
    for name, act, w in (("U8U8", QuantType.QUInt8, QuantType.QUInt8), ("S8S8", QuantType.QInt8, QuantType.QInt8)):
        def typed(*a: object, act: QuantType = act, w: QuantType = w, **k: object) -> None:
            real(*a, **{**k, "activation_type": act, "weight_type": w})
        path = td / f"{name}.onnx"
        with patch.object(oq, "quantize_static", typed):  # quantize_onnx_int8 imports it at call time
            _quantize(fp32, calib_n, path)
        out[f"ONNX int8 {name} (activations, weights), first 3 convs float"] = path
    return out


def main() -> None:
    demo = Path(sys.argv[1])
    calib_n = int(sys.argv[sys.argv.index("--calib-n") + 1]) if "--calib-n" in sys.argv else 64
    from ai_edge_litert.compiled_model import CompiledModel
    from ai_edge_litert.cpu_options import CpuOptions
    from ai_edge_litert.options import Options

    ov_dirs = [Path(d) for d in sys.argv[sys.argv.index("--openvino") + 1].split(",")] \
        if "--openvino" in sys.argv else []
    with tempfile.TemporaryDirectory() as t:
        runs: dict[str, Callable[[], None]] = {}
        if "--only-openvino" not in sys.argv:
            runs["ONNX fp32"] = ort_session(demo / "efficientnet-lite0-fp32.onnx")
            runs["ONNX int8 (demo: first 3 convs float)"] = ort_session(demo / "efficientnet-lite0-int8.onnx")
            for name, path in depthwise_variants(demo / "efficientnet-lite0-fp32.onnx", calib_n, Path(t)).items():
                runs[name] = ort_session(path)
            if "--sweep-float-first" in sys.argv:
                for name, path in float_first_variants(demo / "efficientnet-lite0-fp32.onnx", calib_n, Path(t)).items():
                    runs[name] = ort_session(path)
            if "--types" in sys.argv:
                for name, path in type_variants(demo / "efficientnet-lite0-fp32.onnx", calib_n, Path(t)).items():
                    runs[name] = ort_session(path)
            for prec in ("fp32", "int8"):
                for api, fn in litert_runs(demo / f"efficientnet-lite0-{prec}.tflite").items():
                    runs[f"LiteRT {prec} ({api})"] = fn
            for flags in (0x23, 0x43, 0x83, 0x103, 0x203, 0x403, 0x803):
                cm = CompiledModel.from_file(str(demo / "efficientnet-lite0-int8.tflite"), options=Options(
                    cpu_options=CpuOptions(num_threads=1, xnnpack_flags=flags)))
                ib, ob = cm.create_input_buffers(0), cm.create_output_buffers(0)
                runs[f"LiteRT int8 (CompiledModel, xnnpack_flags {flags:#x})"] = \
                    lambda cm=cm, ib=ib, ob=ob: cm.run_by_index(0, ib, ob)
        for d in ov_dirs:
            runs.update(openvino_runs(d))
        for fn in runs.values():
            for _ in range(20):
                fn()
        times: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(15):
            for k, fn in runs.items():
                clock = time.perf_counter if k.startswith("OpenVINO") else time.thread_time
                for _ in range(10):
                    c = clock()
                    fn()
                    times[k].append((clock() - c) * 1e3)
    med = {k: statistics.median(v) for k, v in times.items()}
    print("| file (1 thread, batch 1) | median ms (thread time; OpenVINO: wall) | vs its fp32 |")
    print("|---|---|---|")
    bases = {"ONNX": "ONNX fp32", "LiteRT": "LiteRT fp32 (Interpreter)"}
    for k, m in med.items():
        base = med[bases[k.split()[0]]] if not k.startswith("OpenVINO") else \
            med[f"OpenVINO fp32 ({ov_dirs[0].name})"]
        print(f"| {k} | {m:.2f} | {base / m:.2f}x |")


if __name__ == "__main__":
    main()
