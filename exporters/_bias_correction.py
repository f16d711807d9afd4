"""Bias correction of ONNX Runtime's static int8 (QDQ) files.

Why our own: ORT's `quantize_static` has none (NNCF applies its fast bias correction to the
OpenVINO IR by default). Rounding a layer's weights to int8 moves the mean of each output channel
by sum((Wq - W) * E[x]): small for a 1x1 conv over hundreds of channels, but a depthwise conv has
9 or 25 weights per channel and its rounding errors do not average out. Folding that shift back
into the layer's int32 bias (the bias correction of Nagel et al., "Data-Free Quantization Through
Weight Equalization and Bias Correction", 2019, with E[x] measured on the calibration data) cut
EfficientNet-Lite0's int8 logit error by a third in ORT (benchmarks/RESULTS-spine.md). It changes
only bias values: the graph, its kernels and its speed stay as ORT wrote them.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np


def bias_shift(delta: np.ndarray, mean_in: np.ndarray, group: int = 1) -> np.ndarray:
    """Per-output-channel shift of a Conv's output when its weights change by `delta`
    (O, C/group, *kernel) and its input channels average `mean_in` (C,): E[conv(x, delta)]."""
    out_ch, in_per_group = delta.shape[0], delta.shape[1]
    per_o = delta.reshape(out_ch, in_per_group, -1).sum(-1)  # (O, C/g): the kernel's taps summed
    groups_of_o = np.arange(out_ch) // (out_ch // group)
    return (per_o * mean_in.reshape(group, in_per_group)[groups_of_o]).sum(1)


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
    bias to fold a shift into (left as quantized: a bias of our own would be a new graph input)."""
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


def _input_means(fp32_path: Path, names: list[str], feeds: Iterable[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-channel (axis 1) means of the fp32 model's tensors `names` over `feeds`."""
    import onnx
    import onnxruntime as ort

    m = onnx.load(str(fp32_path))
    graph_inputs = {i.name for i in m.graph.input}
    wanted = [n for n in dict.fromkeys(names) if n not in graph_inputs]
    have = {o.name for o in m.graph.output}
    for n in wanted:
        if n not in have:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(n))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for feed in feeds:
        got = dict(zip(wanted, sess.run(wanted, feed), strict=True)) if wanted else {}
        got.update({n: feed[n] for n in names if n in graph_inputs and n in feed})
        for n, t in got.items():
            t = np.asarray(t, np.float64)
            axes = tuple(a for a in range(t.ndim) if a != 1)
            sums[n] = sums.get(n, 0) + t.sum(axis=axes)
            counts[n] = counts.get(n, 0) + t.size // t.shape[1]
    return {n: sums[n] / counts[n] for n in sums}


def correct_bias(fp32_path: Path, int8_path: Path, feeds: Iterable[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Fold each int8 Conv / Gemm layer's weight-rounding shift into its int32 bias, in place in
    `int8_path` (a temporary file of the exporter). `fp32_path`: the float model `int8_path` was
    quantized from; `feeds`: its calibration inputs. Returns what the report records."""
    import onnx
    from onnx import numpy_helper

    int8 = onnx.load(str(int8_path))
    layers, no_bias = _layers(onnx.load(str(fp32_path), load_external_data=False), int8)
    if not layers:
        return {"layers": 0, "without_bias": no_bias}
    means = _input_means(fp32_path, [la["input"] for la in layers], feeds)
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
