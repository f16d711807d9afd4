"""Bias correction of int8 weights: ONNX Runtime's QDQ files after `quantize_static`, and the float
model TFLite's PT2E quantizer is given.

Why our own: neither ORT's quantizer nor litert-torch's has one (NNCF applies its own to the
OpenVINO IR). Rounding a layer's weights to int8 moves the mean of each output channel by
sum((Wq - W) * E[x]): small for a 1x1 conv over hundreds of channels, but a depthwise conv has 9 or
25 weights per channel and its rounding errors do not average out. Folding that shift back into
the layer's bias (the bias correction of Nagel et al., "Data-Free Quantization Through Weight
Equalization and Bias Correction", 2019, with E[x] measured on the calibration data) cut
EfficientNet-Lite0's int8 logit error by about a third in ORT and LiteRT
(benchmarks/RESULTS-spine.md). In the ONNX file only bias values change: the graph, its kernels
and its speed stay as ORT wrote them.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

# Why a QAT model's float twin is not corrected (`ModelSpec.extra["qat_weights"]`, _qat_backends.qat_route):
# its biases were trained against its weights' int8 rounding; the EfficientNet-Lite0 chain's TFLite
# file lost agreement with the correction applied (97.4 -> 97.2 %, |Δlogit| 0.070 -> 0.077).
QAT_SKIP = {"layers": 0, "skipped": "QAT-trained weights: training already absorbed their int8 rounding"}


def bias_shift(delta: np.ndarray, mean_in: np.ndarray, group: int = 1) -> np.ndarray:
    """Per-output-channel shift of a Conv's output when its weights change by `delta`
    (O, C/group, *kernel) and its input channels average `mean_in` (C,): E[conv(x, delta)]."""
    out_ch, in_per_group = delta.shape[0], delta.shape[1]
    per_o = delta.reshape(out_ch, in_per_group, -1).sum(-1)  # (O, C/g): the kernel's taps summed
    groups_of_o = np.arange(out_ch) // (out_ch // group)
    return (per_o * mean_in.reshape(group, in_per_group)[groups_of_o]).sum(1)


def layer_shift(delta: np.ndarray, mean_in: np.ndarray, is_linear: bool, group: int = 1) -> np.ndarray:
    """Per-output-channel mean shift of a Conv (`bias_shift`) or Linear ((O, I) weights) layer."""
    return delta @ mean_in if is_linear else bias_shift(delta, mean_in, group)


class InputMeans:
    """Per-channel means of layers' inputs, accumulated call by call: a conv's (N, C, ...) input
    counts each sample's channel means once, a linear's (..., C) input each row."""

    def __init__(self) -> None:
        self.sums: dict[Any, Any] = {}
        self.counts: dict[Any, int] = {}

    def add(self, key: Any, x: Any, is_linear: bool) -> None:
        x = x.detach().double()
        v = x.reshape(-1, x.shape[-1]) if is_linear else x.reshape(x.shape[0], x.shape[1], -1).mean(2)
        self.sums[key], self.counts[key] = self.sums.get(key, 0) + v.sum(0), self.counts.get(key, 0) + v.shape[0]

    def mean(self, key: Any) -> np.ndarray | None:
        return (self.sums[key] / self.counts[key]).numpy() if key in self.sums else None


def _dequantized(node: Any, inits: dict[str, np.ndarray]) -> np.ndarray | None:
    """The float weights a DequantizeLinear of constant int8 data gives, else None."""
    if node is None or node.op_type != "DequantizeLinear" or node.input[0] not in inits:
        return None
    q = inits[node.input[0]]
    if q.dtype != np.int8:
        return None
    scale = inits.get(node.input[1])
    zp = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(1, np.int8)
    if scale is None or zp is None:
        return None
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    shape = [1] * q.ndim
    if scale.size > 1:
        shape[axis] = -1
    return (q.astype(np.float32) - zp.astype(np.float32).reshape(shape)) * scale.astype(np.float32).reshape(shape)


def _layers(fp32: Any, int8: Any) -> tuple[list[dict[str, Any]], int]:
    """The int8 file's Conv / Gemm nodes with int8 weights and an int32 bias, paired by node name
    with their fp32 originals (quantize_static keeps node names); and how many int8 layers have no
    bias to fold a shift into (left as quantized: adding one would change the graph ORT wrote)."""
    from onnx import numpy_helper

    q_inits = {i.name: numpy_helper.to_array(i) for i in int8.graph.initializer}
    f_inits = {i.name: i for i in fp32.graph.initializer}
    producer = {o: n for n in int8.graph.node for o in n.output}
    originals = {n.name: n for n in fp32.graph.node if n.name}
    found, no_bias = [], 0
    for node in int8.graph.node:
        f = originals.get(node.name)
        if node.op_type not in ("Conv", "Gemm") or f is None or f.op_type != node.op_type:
            continue
        if len(node.input) < 3 or not node.input[2]:
            no_bias += _dequantized(producer.get(node.input[1]), q_inits) is not None
            continue
        attrs = {a.name: a for a in node.attribute}
        if node.op_type == "Gemm" and ((attrs.get("transA") and attrs["transA"].i)
                                       or any(k in attrs and attrs[k].f != 1.0 for k in ("alpha", "beta"))):
            continue  # x^T or a scaled product: the plain shift below would be wrong
        wq = _dequantized(producer.get(node.input[1]), q_inits)
        bias_dq = producer.get(node.input[2])
        if (wq is None or bias_dq is None or bias_dq.op_type != "DequantizeLinear"
                or q_inits.get(bias_dq.input[0], np.zeros(0)).dtype != np.int32
                or f.input[1] not in f_inits or len(f.input) < 3 or f.input[2] not in f_inits):
            continue
        w = numpy_helper.to_array(f_inits[f.input[1]]).astype(np.float32)
        if w.shape != wq.shape:
            continue
        found.append({"node": node, "input": f.input[0], "delta": wq - w,
                      "bias": numpy_helper.to_array(f_inits[f.input[2]]).astype(np.float64),
                      "bias_q": bias_dq.input[0], "bias_scale": q_inits[bias_dq.input[1]],
                      "group": attrs["group"].i if "group" in attrs else 1,
                      "trans_b": bool(attrs["transB"].i) if "transB" in attrs else False})
    return found, no_bias


def _input_means(m: Any, names: dict[str, bool],
                 feeds: Iterable[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-channel (axis 1) means of the fp32 model `m`'s tensors `names` over `feeds` (outputs are
    added to `m`), each sample weighing the same; `names[n]`: n has spatial axes (a Conv's input),
    else (N, C) (a Gemm's). The model pools a spatial tensor itself (a GlobalAveragePool as the
    graph output, not the tensor), so ORT keeps its fused NCHWc graph and returns a few kB per
    layer: outputting the tensors themselves took ~10 s and ~900 MB more on EfficientNet-Lite0."""
    import onnx
    import onnxruntime as ort

    graph_inputs = {i.name for i in m.graph.input}
    outputs = {}
    have = {o.name for o in m.graph.output}
    for n, spatial in names.items():
        if n in graph_inputs:
            continue
        if spatial:
            m.graph.node.append(onnx.helper.make_node("GlobalAveragePool", [n], [f"{n}__bias_correction_mean"]))
        outputs[n] = f"{n}__bias_correction_mean" if spatial else n
        if outputs[n] not in have:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(outputs[n]))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}

    def add(name: str, t: np.ndarray) -> None:  # (N, C, ...) -> the per-sample channel means, summed
        per_sample = t.reshape(t.shape[0], t.shape[1], -1).mean(axis=2, dtype=np.float64)
        sums[name] = sums.get(name, 0) + per_sample.sum(axis=0)
        counts[name] = counts.get(name, 0) + t.shape[0]

    for batch in feeds:
        # 2 samples per run: ORT's arena grows to the largest run and stays there, on top of what
        # the calibration left (batch 8: +300 MB on EfficientNet-Lite0; issue #2's 2 GB bar counts it)
        for i in range(0, len(next(iter(batch.values()))), 2):
            feed = {k: v[i:i + 2] for k, v in batch.items()}
            got = sess.run(list(outputs.values()), feed) if outputs else []
            for name, t in zip(outputs, got, strict=True):
                add(name, t)
        for name in names:
            if name in graph_inputs and name in batch and np.ndim(batch[name]) >= 2:
                add(name, np.asarray(batch[name]))
    return {n: sums[n] / counts[n] for n in sums}


def correct_bias(fp32_path: Path, int8_path: Path, feeds: Iterable[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Fold each int8 Conv / Gemm layer's weight-rounding shift into its int32 bias, in place in
    `int8_path` (a temporary file of the exporter). `fp32_path`: the float model `int8_path` was
    quantized from; `feeds`: its calibration inputs. Returns what the report records."""
    import onnx
    from onnx import numpy_helper

    int8 = onnx.load(str(int8_path))
    fp32 = onnx.load(str(fp32_path))  # read once: its weights pair the layers, its graph runs the means
    layers, no_bias = _layers(fp32, int8)
    if not layers:
        return {"layers": 0, "without_bias": no_bias}
    means = _input_means(fp32, {la["input"]: la["node"].op_type == "Conv" for la in layers}, feeds)
    inits = {i.name: i for i in int8.graph.initializer}
    done = 0
    for la in layers:
        mean = means.get(la["input"])
        if mean is None:
            continue
        delta = la["delta"].astype(np.float64)
        if la["node"].op_type == "Conv":
            if mean.shape[0] != delta.shape[1] * la["group"]:
                continue
            shift = bias_shift(delta, mean, la["group"])
        else:
            shift = delta @ mean if la["trans_b"] else mean @ delta
        scale = la["bias_scale"].astype(np.float64)
        q = np.round((la["bias"] - shift) / scale)
        info = np.iinfo(np.int32)
        inits[la["bias_q"]].CopyFrom(numpy_helper.from_array(np.clip(q, info.min, info.max).astype(np.int32),
                                                             la["bias_q"]))
        done += 1
    tmp = int8_path.with_name(int8_path.name + ".bias-corrected")
    onnx.save(int8, str(tmp))
    tmp.replace(int8_path)  # whole or not at all: a failure above leaves ORT's file as it was
    return {"layers": done, "without_bias": no_bias,
            "method": "weight rounding shift folded into int32 biases (fp32 input means on the calibration data)"}


def correct_module_bias(module: Any, batches: Iterable[Any], levels: int = 127) -> tuple[Any, dict[str, Any]]:
    """The same correction before quantization, on a copy of a PyTorch `module`, for quantizers
    that round each Conv / Linear weight per output channel to `round(W / s)`, s = max|W| / levels
    (litert-torch's PT2E default: symmetric int8, -127..127). They quantize the weights after
    folding batch norm into them, which scales each output channel by gamma / sigma: the rounding
    is the same in both, so a shift folded into the conv's own bias (one added where it has none)
    comes out of the folding as the folded layer's. Layers are `nn.Conv*d` / `nn.Linear` modules and
    the `aten.conv*d` / `aten.linear` calls of torch.fx graphs inside `module` (a `.pt2` model's
    graph) whose weight and bias are attributes. `batches`:
    calibration inputs (arrays or tensors, the module's one input). Returns the corrected copy and
    what the report records."""
    import copy

    import torch

    fixed = copy.deepcopy(module).eval()
    means = InputMeans()
    record = means.add

    # key -> (weight, bias or None, is_linear, groups, owner module to give a new bias to, or None)
    sites: dict[str, tuple[Any, Any, bool, int, Any]] = {}
    handles, graphs = [], []
    for name, m in fixed.named_modules():
        if isinstance(m, torch.nn.Linear | torch.nn.Conv1d | torch.nn.Conv2d | torch.nn.Conv3d):
            linear = isinstance(m, torch.nn.Linear)
            sites[name] = (m.weight, m.bias, linear, 1 if linear else int(m.groups), m)  # type: ignore[arg-type]
            handles.append(m.register_forward_pre_hook(
                lambda _m, args, key=name, lin=linear: record(key, args[0], lin)))
        elif isinstance(m, torch.fx.GraphModule) and (found := _fx_sites(m, name)):
            sites.update({k: v[:5] for k, v in found.items()})
            graphs.append((m, {v[5]: (k, v[2]) for k, v in found.items()}))
    if not sites:
        return module, {"layers": 0}
    for gm, nodes in graphs:  # run each graph node by node, seeing its layers' inputs
        gm.forward = recording_forward(gm, nodes, record)
    try:
        with torch.no_grad():
            for b in batches:
                fixed(torch.as_tensor(np.asarray(b)))
    finally:
        for h in handles:
            h.remove()
        for gm, _ in graphs:
            del gm.forward  # the class's compiled forward again
    done = 0
    with torch.no_grad():
        for key, (weight, bias, linear, groups, owner) in sites.items():
            mean = means.mean(key)
            if mean is None or (bias is None and owner is None):  # not reached; an fx call without bias
                continue
            w = weight.detach().double()
            s = (w.abs().reshape(w.shape[0], -1).amax(1).clamp(min=1e-12) / levels).reshape(-1, *[1] * (w.ndim - 1))
            delta = (torch.clamp(torch.round(w / s), -levels, levels) * s - w).numpy()
            shift = layer_shift(delta, mean, linear, groups)
            if bias is None:
                owner.bias = bias = torch.nn.Parameter(torch.zeros(w.shape[0], dtype=weight.dtype))
            bias -= torch.from_numpy(shift).to(bias.dtype)
            done += 1
    return fixed, {"layers": done, "method": f"weight rounding shift (per-channel max|W|/{levels}) folded into the "
                                             "float biases before quantization (input means on the calibration data)"}


def _fx_sites(gm: Any, prefix: str) -> dict[str, tuple[Any, Any, bool, int, None, Any]]:
    """The conv / linear calls of an fx graph whose weight and bias are graph attributes:
    key -> (weight, bias, is_linear, groups, None, node)."""
    import torch

    aten = torch.ops.aten
    kinds = {aten.conv1d.default: False, aten.conv2d.default: False, aten.conv3d.default: False,
             aten.linear.default: True}

    found = {}
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target not in kinds or len(node.args) < 3:
            continue
        weight, bias = fx_attribute(gm, node.args[1]), fx_attribute(gm, node.args[2])
        if weight is None or bias is None:
            continue
        linear = kinds[node.target]
        groups = 1 if linear else (node.args[6] if len(node.args) > 6 else node.kwargs.get("groups", 1))
        found[f"{prefix}:{node.name}"] = (weight, bias, linear, int(groups), None, node)
    return found


def fx_attribute(gm: Any, node: Any) -> Any:
    """The tensor a get_attr `node` of fx graph module `gm` reads, else None."""
    import torch

    if not isinstance(node, torch.fx.Node) or node.op != "get_attr":
        return None
    obj = gm
    for part in str(node.target).split("."):
        obj = getattr(obj, part, None)
    return obj if isinstance(obj, torch.Tensor) else None


def recording_forward(gm: Any, nodes: dict[Any, tuple[Any, bool]], record: Any) -> Any:
    """A forward for `gm` that interprets its graph and hands each node of `nodes` its input first."""
    import torch

    class Recording(torch.fx.Interpreter):
        def run_node(self, n: Any) -> Any:
            if n in nodes:
                args, _ = self.fetch_args_kwargs_from_env(n)
                record(nodes[n][0], args[0], nodes[n][1])
            return super().run_node(n)

    def forward(*args: Any) -> Any:
        return Recording(gm).run(*args)

    return forward
