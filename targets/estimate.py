"""Latency estimates for targets that are not attached: a per-layer roofline, calibrated.

For every compute layer (convolution, depthwise convolution, fully connected / MatMul) we count
MACs and the bytes it moves (weights + input + output activations at the artifact's precision).
A layer takes `max(compute time, memory time) + a fixed per-layer overhead`, where

    compute time = 2 * MACs / (peak ops/s of the cores used * efficiency[precision] * dw factor)
    memory time  = bytes / memory bandwidth

The peak ops/s and bandwidth come from the target profile (each figure with a public source). The
efficiencies are the only fitted numbers: one per precision, fitted so that EfficientNet-Lite0 on
the Pixel 4 CPU (4 threads) gives Google's published 12 ms (fp32) and 6.5 ms (int8). The error is
then reported on the figures that were *not* used to fit (EfficientNet-Lite1..4 on the same phone,
and one Raspberry Pi 4 figure); see `calibration_report()` and benchmarks/RESULTS-targets.md.

Every number this module produces is an estimate and is labelled `latency_kind = "estimated"`.
Heavy imports (torch, onnx, openvino, litert) stay inside the functions that need them.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecompress.errors import ConfigError, InputFileError

if TYPE_CHECKING:
    from edgecompress.targets.profile import TargetProfile


@dataclass
class Layer:
    name: str
    op: str  # conv, dwconv, fc
    macs: int
    weight_elems: int
    in_elems: int
    out_elems: int

    @property
    def depthwise(self) -> bool:
        return self.op == "dwconv"


# Fixed assumptions (not fitted): depthwise convolutions reach a quarter of the dense efficiency
# (few MACs per loaded byte, poor SIMD use); each layer costs 5 µs of dispatch/synchronisation.
DW_FACTOR = 0.25
LAYER_OVERHEAD_US = 5.0

# Fitted by `calibrate()` on EfficientNet-Lite0 / Pixel 4 (see module docstring). A test re-fits
# them and checks these constants, so they cannot drift from the procedure silently.
EFFICIENCY = {"fp32": 0.5214, "int8": 0.2433}

# Public device figures: (model, input size, target profile, precision, threads, latency ms, source).
PIXEL4_SOURCE = ("tensorflow/tpu, models/official/efficientnet/lite/README.md (Pixel 4 CPU, "
                 "4 threads, batch 1)")
PUBLIC_FIGURES: list[dict[str, Any]] = [
    *[{"model": f"efficientnet-lite{i}", "target": "android-arm64", "precision": p, "threads": 4,
       "latency_ms": ms, "source": PIXEL4_SOURCE, "used_for_fit": i == 0}
      # Lite3 (41 / 18 ms) and Lite4 (76 / 30 ms) are published too, but the zoo's architecture
      # code builds only Lite0..2 (a wider Lite3/4 stem needs a change there): not used yet.
      for i, fp32, int8 in [(0, 12, 6.5), (1, 18, 9.1), (2, 26, 12)]
      for p, ms in (("fp32", fp32), ("int8", int8))],
    {"model": "efficientnet-lite0", "target": "rpi4", "precision": "fp32", "threads": 4,
     "latency_ms": 49.0, "used_for_fit": False,
     "source": "TildAlice, 'MobileNet vs EfficientNet-Lite: Pi 4 First Model 38ms Gap' (dev.to); "
               "precision and threads not stated, assumed fp32 / 4"},
]
LITE_RESOLUTION = {0: 224, 1: 240, 2: 260}


# ---- layers from a model or an artifact -------------------------------------------------------

def layers_from_torch(module: Any, example: Any) -> list[Layer]:
    """Conv2d / Linear layers of a torch module, with shapes from one forward pass."""
    import torch

    layers: list[Layer] = []

    def hook(mod, inp, out, name):
        x = inp[0]
        if isinstance(mod, torch.nn.Conv2d):
            kh, kw = mod.kernel_size
            dw = mod.groups > 1 and mod.groups == mod.in_channels
            macs = out[0].numel() * (mod.in_channels // mod.groups) * kh * kw
            layers.append(Layer(name, "dwconv" if dw else "conv", macs, mod.weight.numel(),
                                x[0].numel(), out[0].numel()))
        elif isinstance(mod, torch.nn.Linear):
            layers.append(Layer(name, "fc", out[0].numel() * mod.in_features, mod.weight.numel(),
                                x[0].numel(), out[0].numel()))

    handles = [m.register_forward_hook(lambda mod, i, o, n=n: hook(mod, i, o, n))
               for n, m in module.named_modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    try:
        with torch.no_grad():
            module.eval()(example)
    finally:
        for h in handles:
            h.remove()
    return layers


def _numel(shape) -> int:
    n = 1
    for d in shape:
        # dynamic batch -> 1 (typeshed gives numbers.Integral no comparison with int)
        n *= int(d) if isinstance(d, numbers.Integral) and d > 0 else 1  # type: ignore[operator]
    return n


def layers_from_onnx(path: Path, input_shapes: Sequence[Sequence[int]] = ()) -> list[Layer]:
    """The file's conv / fc layers. `input_shapes` (the model's known shape of each input, e.g.
    ModelSpec.input_shape) fill the inputs' symbolic dims before shape inference: an .onnx given
    as the model is copied with its symbolic H, W, which counted as 1 (an estimate far too low)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    _fix_symbolic_dims(model, input_shapes)
    model = onnx.shape_inference.infer_shapes(model)
    g = model.graph
    init = {t.name: list(t.dims) for t in g.initializer}
    shapes: dict[str, list] = {}
    for vi in [*g.input, *g.value_info, *g.output]:
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else -1 for d in dims]
    producer = {o: n for n in g.node for o in n.output}
    consts = {n.output[0]: list(numpy_helper.to_array(n.attribute[0].t).shape)
              for n in g.node if n.op_type == "Constant" and n.attribute}

    def weight_shape(name: str) -> list | None:
        for _ in range(4):  # through DequantizeLinear / Transpose / Cast / Identity of QDQ graphs
            if name in init:
                return init[name]
            if name in consts:
                return consts[name]
            node = producer.get(name)
            if node is None or not node.input:
                return shapes.get(name)
            name = node.input[0]
        return None

    layers = []
    for n in g.node:
        if n.op_type not in ("Conv", "Gemm", "MatMul", "ConvInteger", "QLinearConv", "MatMulInteger"):
            continue
        w_in = n.input[3] if n.op_type == "QLinearConv" else n.input[1]
        x_in = n.input[0]
        w = weight_shape(w_in)
        out = shapes.get(n.output[0])
        if not w or out is None:
            continue
        if n.op_type in ("Conv", "ConvInteger", "QLinearConv"):
            group = next((a.i for a in n.attribute if a.name == "group"), 1)
            cin_g, k = w[1], _numel(w[2:])
            op = "dwconv" if group > 1 and cin_g == 1 else "conv"
            layers.append(Layer(n.name or n.output[0], op, _numel(out) * cin_g * k, _numel(w),
                                _numel(shapes.get(x_in, [])), _numel(out)))
        else:
            trans_b = next((a.i for a in n.attribute if a.name == "transB"), 0)
            kdim = w[-1] if trans_b else w[0] if len(w) == 2 else w[-2]
            layers.append(Layer(n.name or n.output[0], "fc", _numel(out) * kdim, _numel(w),
                                _numel(shapes.get(x_in, [])), _numel(out)))
    return layers


def _fix_symbolic_dims(model: Any, input_shapes: Sequence[Sequence[int]]) -> None:
    """Each graph input's dims without a value set from `input_shapes` (same rank only)."""
    weights = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    for vi, shape in zip(inputs, input_shapes, strict=False):
        dims = vi.type.tensor_type.shape.dim
        if len(dims) != len(shape):
            continue
        for d, known in zip(dims, shape, strict=True):
            if not d.HasField("dim_value") and int(known) > 0:
                d.dim_value = int(known)  # clears dim_param (a oneof)


def layers_from_tflite(path: Path) -> list[Layer]:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    # plain ints: LiteRT gives np.int32, which _numel took for dynamic dims (every tflite layer
    # then counted as 1 MAC per output channel and the estimate was per-layer overhead only)
    tensors = {t["index"]: [int(d) for d in t["shape"]] for t in it.get_tensor_details()}
    layers = []
    for op in it._get_ops_details():
        name, ins, outs = op["op_name"], list(op["inputs"]), list(op["outputs"])
        if name not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") or len(ins) < 2:
            continue
        x, w, out = tensors.get(ins[0], []), tensors.get(ins[1], []), tensors.get(outs[0], [])
        if name == "CONV_2D":  # weights [Cout, kh, kw, Cin]
            layers.append(Layer(f"op{op['index']}", "conv", _numel(out) * _numel(w[1:]), _numel(w),
                                _numel(x), _numel(out)))
        elif name == "DEPTHWISE_CONV_2D":  # weights [1, kh, kw, C]
            layers.append(Layer(f"op{op['index']}", "dwconv", _numel(out) * w[1] * w[2], _numel(w),
                                _numel(x), _numel(out)))
        else:  # weights [N, K]
            layers.append(Layer(f"op{op['index']}", "fc", _numel(out) * w[-1], _numel(w),
                                _numel(x), _numel(out)))
    return layers


def layers_from_openvino(path: Path) -> list[Layer]:
    from edgecompress.targets.bench import decline_openvino_telemetry

    decline_openvino_telemetry()
    import openvino as ov

    model = ov.Core().read_model(str(path))
    layers = []
    for node in model.get_ordered_ops():
        t = node.get_type_name()
        if t not in ("Convolution", "GroupConvolution", "MatMul"):
            continue
        out = [d.get_length() if d.is_static else -1 for d in node.get_output_partial_shape(0)]
        x = [d.get_length() if d.is_static else -1 for d in node.get_input_partial_shape(0)]
        w = [d.get_length() if d.is_static else -1 for d in node.get_input_partial_shape(1)]
        if t == "Convolution":  # [Cout, Cin, kh, kw]
            layers.append(Layer(node.get_friendly_name(), "conv", _numel(out) * _numel(w[1:]),
                                _numel(w), _numel(x), _numel(out)))
        elif t == "GroupConvolution":  # [G, Cout/G, Cin/G, kh, kw]
            op = "dwconv" if w[2] == 1 else "conv"
            layers.append(Layer(node.get_friendly_name(), op, _numel(out) * _numel(w[2:]),
                                _numel(w), _numel(x), _numel(out)))
        else:
            if len(w) < 2:
                continue
            tb = node.get_attributes().get("transpose_b", False)
            layers.append(Layer(node.get_friendly_name(), "fc", _numel(out) * (w[-1] if tb else w[-2]),
                                _numel(w), _numel(x), _numel(out)))
    return layers


def layers_from_artifact(path: Path | str, fmt: str, input_shapes: Sequence[Sequence[int]] = ()) -> list[Layer]:
    """`path`'s layers; `input_shapes` fill an ONNX file's symbolic input dims (`layers_from_onnx`)."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path}: no such artifact")
    readers = {"onnx": layers_from_onnx, "tflite": layers_from_tflite, "openvino": layers_from_openvino}
    if fmt not in readers:
        raise ConfigError(f"estimate: no layer reader for format {fmt!r} (known: {', '.join(readers)})")
    try:
        return layers_from_onnx(path, input_shapes) if fmt == "onnx" else readers[fmt](path)
    except (OSError, ValueError, RuntimeError, *_parse_errors(fmt)) as e:  # type: ignore[misc]  # mypy reads no *tuple here
        raise InputFileError(f"{path}: not a readable {fmt} file; cannot read its layers for an estimate "
                             f"({type(e).__name__}: {str(e)[:200]})") from e


def _parse_errors(fmt: str) -> tuple[type[BaseException], ...]:
    """What a reader raises on a corrupt file besides OSError / ValueError / RuntimeError: a cut
    .onnx is a protobuf DecodeError (not a ValueError) and reached the user as a traceback."""
    if fmt != "onnx":
        return ()
    import onnx.checker
    import onnx.shape_inference
    from google.protobuf.message import Error as ProtobufError

    return ProtobufError, onnx.shape_inference.InferenceError, onnx.checker.ValidationError


# ---- the cost model ---------------------------------------------------------------------------

def _hw(profile: TargetProfile, key: str) -> float:
    where = f" ({profile.path})" if profile.path else ""
    try:
        value = float(profile.hardware[key])
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"target {profile.name}: [hardware] {key} is needed for an estimate{where}") from None
    if not 0 < value < float("inf"):  # 0 was a ZeroDivisionError, a negative one a negative latency
        raise ConfigError(f"target {profile.name}: [hardware] {key} = {value:g} must be a positive number{where}")
    return value


def estimate_latency(layers: list[Layer], profile: TargetProfile, precision: str,
                     threads: int | None = None,
                     efficiency: dict[str, float] | None = None) -> dict[str, Any]:
    """Estimated batch-1 latency (ms) of `layers` on `profile`, with the per-layer breakdown."""
    from edgecompress.exporters.base import PRECISIONS

    if precision not in PRECISIONS:
        raise ConfigError(f"estimate: unknown precision {precision!r} (known: {', '.join(PRECISIONS.names())})")
    if not layers:
        raise ConfigError("estimate: the artifact has no convolution / matmul layer to cost")
    p = PRECISIONS.get(precision)
    wbytes, abytes, kind = p.weight_bytes, p.activation_bytes, p.compute
    eff = (efficiency or EFFICIENCY)[kind]
    cores = threads or len(profile.hardware.get("big_cores", [])) or int(_hw(profile, "cores"))
    peak = _hw(profile, f"peak_{kind}_gops_per_core") * 1e9 * cores
    bw = _hw(profile, "memory_bandwidth_gbs") * 1e9
    total = compute_bound = 0.0
    macs = moved = 0
    for ly in layers:
        t_c = 2 * ly.macs / (peak * eff * (DW_FACTOR if ly.depthwise else 1.0))
        nbytes = ly.weight_elems * wbytes + (ly.in_elems + ly.out_elems) * abytes
        t_m = nbytes / bw
        total += max(t_c, t_m) + LAYER_OVERHEAD_US * 1e-6
        compute_bound += t_c >= t_m
        macs += ly.macs
        moved += nbytes
    ms = total * 1e3
    return {"p50": ms, "mean": ms, "threads": cores, "layers": len(layers), "macs": macs,
            "bytes": moved, "compute_bound_layers": int(compute_bound),
            "model": {"efficiency": eff, "dw_factor": DW_FACTOR, "layer_overhead_us": LAYER_OVERHEAD_US,
                      "peak_gops": peak / 1e9, "bandwidth_gbs": bw / 1e9}}


# ---- calibration against public figures ----------------------------------------------------------

@functools.lru_cache(maxsize=4)
def efficientnet_lite_layers(i: int, hw: tuple[int, int] | None = None) -> list[Layer]:
    """Layers of EfficientNet-Lite{i} at input (height, width) `hw`, by default its published
    square resolution (random weights: only the shapes matter)."""
    import torch

    from edgecompress.models.efficientnet_lite import EfficientNetLite

    h, w = hw or (LITE_RESOLUTION[i], LITE_RESOLUTION[i])
    model = EfficientNetLite(f"efficientnet-lite{i}")
    model.set_image_size((h, w))  # SAME padding per axis: built for the square resolution
    return layers_from_torch(model, torch.zeros(1, 3, h, w))


def calibrate(figures: list[dict[str, Any]] | None = None) -> dict[str, float]:
    """Fit one efficiency per precision on the figures marked used_for_fit (bisection)."""
    from edgecompress.exporters.base import PRECISIONS
    from edgecompress.targets.profile import get_target

    out = {}
    for f in (figures or PUBLIC_FIGURES):
        if not f["used_for_fit"]:
            continue
        layers = efficientnet_lite_layers(int(f["model"][-1]))
        profile = get_target(f["target"])
        kind = PRECISIONS.get(f["precision"]).compute
        lo, hi = 1e-4, 1.0
        for _ in range(60):
            mid = (lo * hi) ** 0.5
            ms = estimate_latency(layers, profile, f["precision"], f["threads"], {kind: mid})["p50"]
            lo, hi = (mid, hi) if ms > f["latency_ms"] else (lo, mid)
        out[kind] = round((lo * hi) ** 0.5, 4)
    return out


def calibration_report(efficiency: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """Estimate vs published latency for every public figure; error in %."""
    from edgecompress.targets.profile import get_target

    rows: list[dict[str, Any]] = []
    cache: dict[int, list[Layer]] = {}
    for f in PUBLIC_FIGURES:
        i = int(f["model"][-1])
        layers = cache.setdefault(i, efficientnet_lite_layers(i))
        est = estimate_latency(layers, get_target(f["target"]), f["precision"], f["threads"],
                               efficiency)["p50"]
        rows.append({**f, "estimate_ms": round(est, 2),
                     "error_pct": round(100 * (est - f["latency_ms"]) / f["latency_ms"], 1),
                     "macs": sum(ly.macs for ly in layers)})
    return rows


def calibration_summary(rows: list[dict[str, Any]]) -> dict[str, float]:
    held = [abs(r["error_pct"]) for r in rows if not r["used_for_fit"]]
    return {"held_out_figures": len(held), "mean_abs_error_pct": round(sum(held) / len(held), 1),
            "max_abs_error_pct": round(max(held), 1)}


# From calibration_report() (benchmarks/bench_targets.py prints it; a test checks these): error on the
# figures not used for the fit. Pixel 4 Lite1/Lite2: +4.5 / +1.2 % fp32, +11.9 / +18.3 % int8.
# Raspberry Pi 4 Lite0: -58.8 % (the A72 runs far below the A76 efficiency; treat rpi4 estimates
# as optimistic by ~2.4x until a measured Pi figure recalibrates it).
CALIBRATION_ERROR = {"held_out_figures": 5, "mean_abs_error_pct": 18.9, "max_abs_error_pct": 58.8,
                     "pixel4_held_out_mean_abs_error_pct": 9.0, "rpi4_error_pct": -58.8}
# The same held-out errors by target, signed (+: the estimate is slower than the published time, on
# the safe side; -: faster, optimistic). A report gives its own target's: "mean 18.9 %, max 58.8 %"
# said neither which device erred nor in which direction. A target absent here has no public figure.
# By precision: the one Pi 4 figure is fp32, and was quoted under the int8 rows too.
HELD_OUT_ERROR_PCT: dict[str, dict[str, tuple[float, ...]]] = {
    "android-arm64": {"fp32": (1.2, 4.5), "int8": (11.9, 18.3)},
    "rpi4": {"fp32": (-58.8,)},
}


def held_out_error(target: str, precision: str | None = None) -> dict[str, Any]:
    """The calibration error a report quotes for an estimate on `target` at `precision`: the
    overall figures and this target's signed held-out errors at that precision (all precisions
    when None; an empty list: no public figure checks it)."""
    by = HELD_OUT_ERROR_PCT.get(target, {})
    errors = by.get(precision, ()) if precision else tuple(e for v in by.values() for e in v)
    return {**CALIBRATION_ERROR, "target": target, "precision": precision, "target_error_pct": sorted(errors)}


def int8_unchecked(profile: TargetProfile, precision: str) -> str:
    """Why an int8 estimate on `profile` says nothing about int8 vs fp32 ('' when it does): the
    int8 efficiency is fitted on the Pixel 4's dot-product (SDOT) kernels; a core without them
    (Cortex-A72) got that efficiency times an assumed int8 peak, and its int8 rows read 0.94x of
    fp32 for every compute-bound model: an artefact of the model, shown as a result."""
    if precision != "int8" or profile.hardware.get("has_dotprod") is not False:
        return ""
    return (f"int8 on {profile.name} (no dot-product instructions) rests on an assumed int8 peak and the "
            "Pixel 4's int8 kernel efficiency; no published figure checks it, so no int8 speed-up is given")


def estimate_artifact(path: Path | str, fmt: str, precision: str, profile: TargetProfile,
                      threads: int | None = None, input_shapes: Sequence[Sequence[int]] = ()) -> dict[str, Any]:
    """The estimate runner's result for one artifact (same keys as bench.py's JSON);
    `input_shapes`: the model's known input shapes, for an ONNX file's symbolic dims."""
    res = estimate_latency(layers_from_artifact(path, fmt, input_shapes), profile, precision, threads)
    # 4 significant figures, and the throughput from the same figure: rounded to 1 us, a 0.1 ms
    # model's speed-up moved by 1 % and its throughput disagreed with its p50
    p50 = float(f"{res['p50']:.4g}")
    lat: dict[str, Any] = {"p50": p50}
    # A cost model gives one figure, and no spread: the keys every measured row has are there,
    # empty (null), so a reader of report.json finds p90 / p99 / mean in every row and never a
    # made-up figure (mean was a copy of p50 and read as a second measurement).
    lat.update(p90=None, p99=None, mean=None)
    lat["throughput_per_s"] = round(1000 / p50, 2)
    return {
        "latency_ms": {"1": lat},
        "latency_kind": "estimated",
        "memory_mb": {},
        "runtime": {"name": "estimate", "version": "roofline-1",
                    "settings": {"threads": res["threads"], "layers": res["layers"],
                                 "macs": res["macs"], "bytes_moved": res["bytes"],
                                 "compute_bound_layers": res["compute_bound_layers"],
                                 **res["model"], "calibration": PIXEL4_SOURCE,
                                 # which device the figure is for (the report names it: nothing ran)
                                 "device": profile.hardware.get("cpu") or profile.description,
                                 "calibration_error": held_out_error(profile.name, precision),
                                 **({"int8_unchecked": why} if (why := int8_unchecked(profile, precision)) else {})}},
    }
