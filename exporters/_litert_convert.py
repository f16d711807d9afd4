"""Conversion engine of the TFLite exporter: PyTorch -> .tflite via litert-torch (used by tflite.py).

Runs with LiteRT (`ai_edge_litert`), no TensorFlow. Full-integer models use litert-torch's own PT2E
quantizer (strict torch.export -> prepare_pt2e -> calibrate -> convert_pt2e -> litert_torch.convert),
configured and extended where EfficientNet-style nets need it (see `make_quantizer`):
  * conv (+ folded BN) + ReLU/ReLU6/hardtanh/clamp is annotated as one fused pattern, so the int8
    output range is observed *after* the clamp (the stock quantizer leaves ReLU6 out of the pattern
    and observes the pre-clamp conv output);
  * a same-padding Pad right after that clamp is kept inside the pattern, so the converter folds it
    into the next convolution instead of emitting PAD + TRANSPOSE pairs;
  * per-channel weights, MinMax activation observers (HistogramObserver costs ~1 s per 224 px image).
The written flatbuffer shares repeated vectors (`_compact`), which removes most of the per-channel
quantization-parameter overhead from the file.
"""

from __future__ import annotations

import collections
import dataclasses
import pathlib
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, ClassVar

import flatbuffers
import numpy as np
import torch
from litert_torch.quantize import pt2e_quantizer_utils as qutils
from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
from torch.fx import GraphModule, Node
from torchao.quantization.pt2e.observer import MinMaxObserver
from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

from edgecompress.models.spec import complete_output_names, default_input_name, first_output

PRECISIONS = ("fp32", "fp16", "dynamic-int8", "int8")
_CONVS = {torch.ops.aten.conv1d.default, torch.ops.aten.conv2d.default, torch.ops.aten.convolution.default}
# Clamp-like activations that TFLite fuses into CONV_2D / DEPTHWISE_CONV_2D.
_ACTS = {
    torch.ops.aten.relu.default,
    torch.ops.aten.relu_.default,
    torch.ops.aten.relu6.default,
    torch.ops.aten.hardtanh.default,
    torch.ops.aten.hardtanh_.default,
    torch.ops.aten.clamp.default,
}
_WEIGHTED = _CONVS | {torch.ops.aten.linear.default}
_PADS = {torch.ops.aten.pad.default, torch.ops.aten.constant_pad_nd.default}
# Quantize/dequantize at the graph boundary are the only float ops a full-integer model may keep.
_BOUNDARY_OPS = {"QUANTIZE", "DEQUANTIZE"}
_INT8_DTYPES = (np.int8, np.uint8)


class FullIntegerError(Exception):
    """A full-integer (`int8`) conversion left some ops in float."""


class UnsupportedModelError(Exception):
    """torch.export or litert-torch could not lower the model."""


@qutils.register_annotator("conv_act")
def _annotate_conv_act(
    gm: GraphModule, config: qutils.QuantizationConfig | None, filter_fn: Any = None
) -> list[list[Node]]:
    """Annotate conv -> clamp-like activation as one pattern with the observer after the clamp.

    Added because the stock `conv_relu` annotator only knows aten.relu. `aten.hardtanh` (what
    nn.ReLU6 exports to) is in the library's shared-observer list, so it inherits the conv's
    pre-clamp range (84 % vs 98 % top-1 agreement on EfficientNet-Lite0); `aten.relu6` is left
    unannotated and only comes out right because the converter borrows the next q/dq's range.
    """
    partitions = []
    for act in gm.graph.nodes:
        if act.op != "call_function" or act.target not in _ACTS:
            continue
        conv = act.args[0]
        # The conv output must feed only the activation, else the pre-clamp value is needed.
        if not isinstance(conv, Node) or conv.target not in _CONVS or len(conv.users) != 1:
            continue
        weight = conv.args[1]
        bias = conv.args[2] if len(conv.args) > 2 else None
        partition = [act, conv, weight] + ([bias] if isinstance(bias, Node) else [])
        if qutils._is_annotated(partition) or (filter_fn and not all(map(filter_fn, partition))):
            continue
        qmap = {conv.args[0]: qutils.get_input_act_qspec(config), weight: qutils.get_weight_qspec(config)}
        if isinstance(bias, Node):
            qmap[bias] = qutils.get_bias_qspec(config)
        conv.meta["quantization_annotation"] = QuantizationAnnotation(input_qspec_map=qmap, _annotated=True)
        # A same-padding Pad right after the clamp joins the pattern: with a q/dq pair between
        # clamp and pad the converter emits an int8 PAD wrapped in 2 TRANSPOSEs instead of
        # folding the pad into the next conv. Pad zeros lie inside [0, 6], so the range is kept.
        out = act
        if len(act.users) == 1 and next(iter(act.users)).target in _PADS:
            out = next(iter(act.users))
            partition.append(out)
            act.meta["quantization_annotation"] = QuantizationAnnotation(_annotated=True)
        out.meta["quantization_annotation"] = QuantizationAnnotation(
            output_qspec=qutils.get_output_act_qspec(config), _annotated=True
        )
        qutils._mark_nodes_as_annotated(partition)
        partitions.append(partition)
    return partitions


def _is_float(v: Any) -> bool:
    return not isinstance(v, torch.Tensor) or v.is_floating_point()


def _skip_integer_nodes(gm: GraphModule) -> None:
    """Mark ops that no annotator may quantize as already annotated: ops that produce or read
    integer tensors, and ops reading a float tensor computed from integer inputs alone (no weight).

    [issue #6] BERT's `position_ids = arange(...)` + offset is an int64 `add`, which the stock `add`
    annotator quantized (lowering failed: "Expecting input to have dtype torch.float32, but got
    dtype: torch.int64"). The attention mask becomes `(1 - mask) * finfo.min`, added to the scores:
    with that add int8 the mask's -3.4e38 range makes LiteRT's quantized ADD abort (SIGABRT) in
    `allocate_tensors` (the same add wrecked ORT's static QDQ, see exporters/onnx.py); it stays float.
    """
    from_ints: set[Node] = set()
    # Constants: made in the graph (arange, zeros, ...) or lifted scalars / integer tensors, and
    # anything computed from them alone. Float weights are not constants here.
    consts: set[Node] = set()
    for n in gm.graph.nodes:
        ins = n.all_input_nodes
        if n.op == "get_attr":
            t = getattr(gm, str(n.target), None)
            if isinstance(t, torch.Tensor) and (t.numel() <= 1 or not t.is_floating_point()):
                consts.add(n)
        elif n.op == "placeholder":
            if not _is_float(n.meta.get("val")):
                from_ints.add(n)
        elif n.op == "call_function" and all(a in consts for a in ins):
            consts.add(n)
        elif n.op == "call_function" and all(a in from_ints or a in consts for a in ins):
            from_ints.add(n)
    for n in gm.graph.nodes:
        if n.op != "call_function" or "quantization_annotation" in n.meta:
            continue
        ins = n.all_input_nodes
        if (
            not _is_float(n.meta.get("val"))
            or not all(_is_float(a.meta.get("val")) for a in ins)
            or any(a in from_ints for a in ins)
        ):
            n.meta["quantization_annotation"] = QuantizationAnnotation(_annotated=True)


class _FusedActQuantizer(PT2EQuantizer):
    """litert-torch's PT2EQuantizer, trying the fused conv+activation annotator first and
    optionally quantizing the weights of some layers per tensor (see `make_quantizer`)."""

    STATIC_OPS: ClassVar[list[str]] = ["conv_act", *PT2EQuantizer.STATIC_OPS]

    def __init__(self, per_tensor: Any = None) -> None:
        super().__init__()
        self.per_tensor = per_tensor  # Node -> bool: conv/linear whose weight is per tensor

    def _annotate_for_static_quantization_config(self, model: GraphModule) -> GraphModule:
        _skip_integer_nodes(model)
        if self.per_tensor is not None and self.global_config is not None:
            cfg = dataclasses.replace(self.global_config, weight=get_symmetric_quantization_config().weight)

            def keep(n: Node) -> bool:
                return n.target not in _WEIGHTED or self.per_tensor(n)

            for op in ("conv_act", "conv", "linear"):  # first annotation wins
                qutils.OP_TO_ANNOTATOR[op](model, cfg, keep)
        return super()._annotate_for_static_quantization_config(model)


def _is_pointwise(n: Node) -> bool:
    """1x1 non-grouped conv or linear (for per-tensor weights; costs ~3 pt agreement on EfficientNet)."""
    w = n.args[1].meta.get("val") if isinstance(n.args[1], Node) else None
    if n.target == torch.ops.aten.linear.default:
        return True
    groups = n.args[6] if len(n.args) > 6 else 1
    return bool(w is not None and w.dim() == 4 and tuple(w.shape[2:]) == (1, 1) and groups == 1)


def make_quantizer(
    per_channel: bool | str = True, act_observer: Any = MinMaxObserver, fuse_act: bool = True
) -> PT2EQuantizer:
    """Static int8 PT2E quantizer: symmetric int8 weights, affine int8 activations.

    per_channel: True, False, "linear" (per tensor for Linear only) or "spatial" (per channel
    only for k x k / depthwise convs; 1x1 convs and Linear per tensor).
    act_observer: observer class for activations; None keeps the library's HistogramObserver.
    fuse_act: observe conv outputs after ReLU/ReLU6 (and a following same-padding Pad).
    """
    cfg = get_symmetric_quantization_config(is_per_channel=bool(per_channel))
    if act_observer is not None:
        act = dataclasses.replace(cfg.input_activation, observer_or_fake_quant_ctr=act_observer.with_args(eps=2**-12))
        cfg = dataclasses.replace(cfg, input_activation=act, output_activation=act)
    per_tensor = (
        {"linear": lambda n: n.target == torch.ops.aten.linear.default, "spatial": _is_pointwise}.get(per_channel)
        if isinstance(per_channel, str)
        else None
    )
    if isinstance(per_channel, str) and per_tensor is None:
        raise ValueError(f"per_channel must be a bool, 'linear' or 'spatial', got {per_channel!r}")
    q = _FusedActQuantizer(per_tensor) if fuse_act else PT2EQuantizer()
    return q.set_global(cfg)


def _one_line(exc: BaseException) -> str:
    msg = " ".join(str(exc).split())
    return msg[:300] + ("..." if len(msg) > 300 else "")


def _culprit(exc: BaseException) -> str:
    """Best guess at the op (and module) or source line an export/lowering error is about."""
    # litert-torch lowers node by node (`run_node(node)`): the innermost fx Node on the stack is it.
    tb, node = exc.__traceback__, None
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "run_node" and isinstance(cand := tb.tb_frame.f_locals.get("node"), Node):
            node = cand
        tb = tb.tb_next
    if node is not None:
        stack = node.meta.get("nn_module_stack") or {}
        where = next(reversed(stack.values()))[0] if stack else node.name
        return f"{node.target} in {where}"
    msg = str(exc)
    for pat in (r"code: ([^\n]+)", r"(aten\.[\w.]+|torch\.ops\.[\w.]+)"):
        if m := re.search(pat, msg):
            return m.group(1).strip()[:120]
    return type(exc).__name__


def model_source(path: pathlib.Path | str) -> dict[str, Any]:
    """The LiteRT Interpreter's source for `path`: `model_path`, or `model_content` (the bytes)
    when the path is not UTF-8 (a folder named with Latin-1 bytes reaches Python as surrogate
    escapes, which the binding refused). A .tflite is one self-contained file."""
    from edgecompress.fileio import path_or_bytes

    source = path_or_bytes(path)
    return {"model_path": source} if isinstance(source, str) else {"model_content": source}


def _unsupported(stage: str, exc: BaseException) -> UnsupportedModelError:
    from edgecompress.errors import use_format

    return UnsupportedModelError(
        f"{stage} cannot lower the model (at {_culprit(exc)}): {_one_line(exc)} -- "
        f"try {use_format('onnx')}, or export with a fixed input shape"
    )


def _export(
    model: torch.nn.Module, args: tuple[torch.Tensor, ...], kwargs: dict[str, torch.Tensor] | None = None
) -> torch.export.ExportedProgram:
    # strict=True: non-strict export leaves the residual adds un-annotated (they stay float).
    from edgecompress.quiet import trace_dumps_held

    try:
        with trace_dumps_held():  # a failed trace's graph dump: our error names the line
            return torch.export.export(model, args, kwargs, strict=True)
    except Exception as exc:  # torch.export raises many unrelated types
        raise _unsupported("torch.export(strict=True)", exc) from None


def inspect(path: pathlib.Path | str) -> dict[str, Any]:
    """Op counts, float ops and I/O contract of a .tflite, read from the LiteRT interpreter."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # No default delegate, so the op list is the file's, not XNNPACK's partitions.
    it = Interpreter(
        **model_source(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    ins, outs = it.get_input_details(), it.get_output_details()
    io = {d["index"] for d in ins} | {d["index"] for d in outs}
    ops: collections.Counter[str] = collections.Counter()
    int8_ops: collections.Counter[str] = collections.Counter()  # ops with an int8 tensor (weights too)
    float_ops = []
    for op in it._get_ops_details():  # the only way to see per-op tensors
        name = op["op_name"]
        ops[name] += 1
        idx = [i for i in (*op["inputs"], *op["outputs"]) if i >= 0]
        if any(tensors[i]["dtype"] in _INT8_DTYPES for i in idx):
            int8_ops[name] += 1
        if name in _BOUNDARY_OPS and io & set(idx):
            continue  # float<->int8 conversion at the model boundary is allowed
        if any(tensors[i]["dtype"] in (np.float32, np.float16) for i in idx):
            float_ops.append(f"{name}#{op['index']}")

    def _io(d: dict[str, Any]) -> dict[str, Any]:
        scale, zp = d["quantization"]
        return {
            "name": d["name"],
            "shape": d["shape"].tolist(),
            "dtype": np.dtype(d["dtype"]).name,
            **({"scale": scale, "zero_point": zp} if d["dtype"] in _INT8_DTYPES else {}),
        }

    return {
        "inputs": [_io(d) for d in ins],
        "outputs": [_io(d) for d in outs],
        "ops": dict(ops),
        "int8_ops": dict(int8_ops),
        "float_ops": float_ops,
    }


def _calibrate(
    prepared: GraphModule, batches: Iterable[Any], batch: int, nhwc: bool, names: list[str] | None = None
) -> int:
    """Feed calibration batches: NCHW float arrays, or (for several inputs) tuples of arrays in
    input order, passed by keyword when the model was exported with `names`."""
    n = 0
    with torch.no_grad():
        for b in batches:
            # integer ids (a model of token / class ids) stay integer: the graph indexes with them
            arrays = [np.asarray(a) for a in b] if isinstance(b, (tuple, list)) else [np.asarray(b)]
            if nhwc and arrays[0].ndim == 4:
                arrays[0] = arrays[0].transpose(0, 2, 3, 1)
            # The exported graph has a fixed batch, so feed the calibration set in those chunks.
            for i in range(0, len(arrays[0]) - batch + 1, batch):
                ts = [torch.from_numpy(np.ascontiguousarray(a[i : i + batch])) for a in arrays]
                ts = [t.float() if t.is_floating_point() else t for t in ts]
                if names:
                    prepared(**dict(zip(names, ts, strict=True)))
                else:
                    prepared(*ts)
                n += batch
    return n


def _kept(batches: Iterable[Any], probe: list[np.ndarray], n: int = 16) -> Iterator[Any]:
    """`batches` as they are, the first `n` samples of single-input batches copied into `probe`."""
    for b in batches:
        if not isinstance(b, tuple | list) and sum(len(p) for p in probe) < n:
            head = np.asarray(b[: n - sum(len(p) for p in probe)])
            probe.append(np.array(head, head.dtype if head.dtype.kind in "iu" else np.float32))  # ids stay ids
        yield b


def _check_lowering(path: pathlib.Path, quantized: Any, samples: list[np.ndarray], nhwc: bool, step: float) -> None:
    """The int8 file against the quantized PyTorch graph it was converted from, on a few samples.

    Why: the two compute the same int8 arithmetic, so they agree to about one output step
    (0.002 on a small conv net), but litert-torch lowered `dequantize -> unsqueeze -> flatten ->
    quantize` with another scale as if the scale were unchanged: the file was 2.3x off on every
    sample (0 % top-1 agreement with fp32) and passed every other check. Fails with
    UnsupportedModelError when the mean difference passes 4 output steps (`step`: the output scale).
    """
    x = np.concatenate(samples)[:16]
    got = run(path, x)
    with torch.no_grad():
        feed = x.transpose(0, 2, 3, 1) if nhwc else x
        ys = [quantized(torch.from_numpy(np.ascontiguousarray(feed[i : i + 1]))) for i in range(len(feed))]
        # the file's first output (`run`): the first tensor as the export flattened the outputs (a
        # dict reached the subtraction below: a raw TypeError)
        want = np.concatenate([np.asarray(first_output(y)).reshape(1, -1) for y in ys])
    step = step or 1.0
    diff = float(np.abs(got.reshape(len(x), -1) - want).mean())
    if diff > 4 * step:
        raise UnsupportedModelError(
            f"the int8 .tflite disagrees with its own quantized PyTorch graph (mean |diff| {diff:.3g} = "
            f"{diff / step:.0f} output steps on {len(x)} calibration samples): litert-torch lowered it wrongly "
            "(seen with a reshape such as unsqueeze/flatten between a pooling and a Linear; view() lowers right)")


_DROPOUTS = ("dropout", "feature_dropout", "alpha_dropout", "feature_alpha_dropout")


def _drop_inference_dropout(gm: torch.fx.GraphModule) -> int:
    """Remove eval-mode dropout nodes (identities) from an exported graph; return how many.

    Why: an `nn.Dropout` before a Linear stays in the strict export as `aten.dropout(x, p, False)`,
    and after litert-torch's PT2E quantizer the int8 .tflite computed that Linear from a wrongly
    scaled input (0 % top-1 agreement with fp32 on a small conv net, for p = 0 as for p = 0.5;
    litert-torch's stock quantizer does the same). The node does nothing at inference, so it goes.
    """
    removed = 0
    for node in list(gm.graph.nodes):
        name = getattr(node.target, "__name__", "")
        if node.op == "call_function" and name.split(".")[0] in _DROPOUTS:
            train = node.args[2] if len(node.args) > 2 else node.kwargs.get("train", False)
            if train is False:
                node.replace_all_uses_with(node.args[0])
                gm.graph.erase_node(node)
                removed += 1
    if removed:
        gm.graph.lint()
        gm.recompile()
    return removed


def _quantized(model: torch.nn.Module, args: tuple, kwargs: dict, precision: str, quantizer: PT2EQuantizer | None,
               calib_batches: Iterable[Any] | None, probe: list[np.ndarray], batch: int, nhwc: bool,
               input_names: list[str] | None, prequantized: bool, aeq_dynamic: bool) -> tuple[Any, Any]:
    """The model litert-torch lowers and its QuantConfig (None: float, or ai-edge-quantizer's
    dynamic recipe after conversion): PT2E prepare -> calibrate (keeping a few samples in `probe`
    for the lowering check) -> convert for int8 and dynamic-int8."""
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if prequantized:
        # [issue #4] The Q/DQ ops are in the graph already (QAT); the converter only needs a static
        # PT2E quantizer in quant_config to lower them to int8 kernels (qdq_conversion_mode STATIC).
        model.training = False
        return model, QuantConfig(pt2e_quantizer=quantizer or make_quantizer())
    if precision == "int8" or (precision == "dynamic-int8" and not aeq_dynamic):
        if precision == "int8":
            q = quantizer or make_quantizer()
        else:
            q = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True))
        exported = _export(model, args, kwargs).module()
        _drop_inference_dropout(exported)
        try:
            prepared = prepare_pt2e(exported, q)
            if precision == "int8":
                n = _calibrate(prepared, _kept(calib_batches or [], probe), batch, nhwc, input_names)
            else:
                n = 1
                prepared(*args, **kwargs)  # dynamic range needs no calibration, only the weight observers
            converted = convert_pt2e(prepared, fold_quantize=False) if n else None
        except Exception as exc:  # an observer on a data-dependent value raised AttributeError
            raise _unsupported("PT2E quantization (prepare / calibrate / convert)", exc) from None
        if converted is None:
            raise ValueError("calib_batches held no sample")
        model = move_exported_model_to_eval(converted)
        model.training = False  # .eval() is refused on pt2e modules; this only silences litert's warning
        return model, QuantConfig(pt2e_quantizer=q)
    _export(model, args, kwargs)  # fail early, with a clear message, on unexportable models
    return model, None


def _check_full_integer(info: dict[str, Any], allow_mixed: bool) -> None:
    """Raise FullIntegerError if a full-int8 file kept a float op or float I/O (the I/O joins the
    file's float_ops list either way), unless `allow_mixed`."""
    # [audit #27] integer ids in (int32 / int64, no scale: token or class indices) are the model's
    # contract, not float I/O left over: its float tensors are what must be int8
    io_types = [d["dtype"] for d in info["inputs"] + info["outputs"] if d["dtype"] not in ("int32", "int64")]
    if any(t not in ("int8", "uint8") for t in io_types):
        info["float_ops"].append(f"float I/O {io_types}")
    if info["float_ops"] and not allow_mixed:
        kinds = collections.Counter(o.split("#")[0] for o in info["float_ops"])
        raise FullIntegerError(
            f"{len(info['float_ops'])} op(s) stayed float in the int8 model: "
            f"{', '.join(f'{k} x{v}' for k, v in kinds.items())} "
            f"[{', '.join(info['float_ops'][:6])}{', ...' * (len(info['float_ops']) > 6)}]"
        )  # the caller adds the remedy in its own words (CLI flag or Python option): one hint, not two


def convert(
    model: torch.nn.Module,
    example_input: torch.Tensor | tuple[torch.Tensor, ...],
    precision: str,
    out_path: pathlib.Path,
    calib_batches: Iterable[Any] | None = None,
    channels_last_io: bool = True,
    allow_mixed: bool = False,
    *,
    quantizer: PT2EQuantizer | None = None,
    input_names: list[str] | None = None,
    file_input_names: Sequence[str] = (),
    output_names: Sequence[str] = (),
    prequantized: bool = False,
    check_lowering: bool = True,
) -> dict[str, Any]:
    """Convert `model` to a .tflite at `out_path` and return its I/O contract and op list.

    precision: fp32 | fp16 (fp16 weights) | dynamic-int8 (dynamic range) | int8 (full integer,
    int8 input and output; needs `calib_batches` of NCHW float arrays, or of integer ids for a model
    of ids, whose file takes them as int32). For int8, raises
    FullIntegerError if any op besides boundary quantize/dequantize stays float, unless
    `allow_mixed`. Raises UnsupportedModelError if the model cannot be exported or lowered.
    `quantizer` overrides the default int8 PT2E quantizer (`make_quantizer()`).
    Several inputs (text encoders: token ids + attention mask): pass a tuple as `example_input`
    (integer tensors stay integer; the file takes int32) and `input_names`, which become the
    file's signature names; `calib_batches` then yields tuples of arrays in that order.
    `prequantized`: `model` is already a converted PT2E graph (QAT, `backend: litert`: litert-torch's
    quantizer, `convert_pt2e(fold_quantize=False)`); int8 only, no calibration, lowered as it is.
    `check_lowering=False` skips `_check_lowering` (benchmarks measuring another tool's file as it is).
    `file_input_names` names the file's inputs (default: `input_names`, else `input`, `input_1`,
    ...) and `output_names` the first outputs (the others `output_1`, ...; see `_name_io`).
    """
    import litert_torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if prequantized and precision != "int8":
        raise ValueError(f"a prequantized (QAT) model converts as int8 only, not {precision!r}")
    if precision == "int8" and calib_batches is None and not prequantized:
        raise ValueError("int8 needs calib_batches")
    out_path = pathlib.Path(out_path)
    model = model.eval()
    inputs = tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)
    inputs = tuple(t.detach().float() if t.is_floating_point() else t.detach() for t in inputs)
    if input_names is not None and len(input_names) != len(inputs):
        raise ValueError(f"{len(input_names)} input_names for {len(inputs)} inputs")
    nhwc = channels_last_io and len(inputs) == 1 and inputs[0].dim() == 4 and inputs[0].is_floating_point()
    x = inputs[0]
    if nhwc:
        # Permute inside the graph so the converter cancels it against its own NCHW->NHWC
        # transposes; the file then takes NHWC and has no TRANSPOSE ops.
        model = litert_torch.to_channel_last_io(model, args=[0]).eval()
        x = x.permute(0, 2, 3, 1).contiguous()
        inputs = (x,)
    # Named inputs go in by keyword so the .tflite signature carries the names.
    args, kwargs = ((), dict(zip(input_names, inputs, strict=True))) if input_names else (inputs, {})

    probe: list[np.ndarray] = []  # a few calibration samples (NCHW float) for the lowering check
    # [issue #6] Text encoders: dynamic-int8 through the PT2E path gives the word-embedding table an
    # asymmetric int8 quantization (zero point -11 on a tiny BERT) that LiteRT's EMBEDDING_LOOKUP
    # refuses at allocation ("zero_point == 0 was not true"); ai-edge-quantizer's dynamic recipe on
    # the fp32 file quantizes it (and the FULLY_CONNECTED weights) symmetrically per channel.
    # [audit #27] the same for any model of integer ids (an nn.Embedding table first)
    aeq_dynamic = precision == "dynamic-int8" and (bool(input_names) or any(not t.is_floating_point() for t in inputs))
    model, quant_config = _quantized(model, args, kwargs, precision, quantizer, calib_batches, probe, x.shape[0],
                                     nhwc, input_names, prequantized, aeq_dynamic)

    from edgecompress.fileio import atomic_path

    # a unique temp name beside the output, renamed only once every check below passed
    with atomic_path(out_path) as tmp:
        try:
            # The graph was already strictly exported above; litert-torch re-exports it.
            edge = litert_torch.convert(model, args, kwargs or None, quant_config=quant_config)
            data = bytes(edge.model_content())
        except Exception as exc:  # the MLIR lowering raises plain RuntimeError/ValueError
            raise _unsupported("litert-torch", exc) from None
        if precision == "fp16":
            data = _fp16_weights(data)
        elif aeq_dynamic:
            data = _dynamic_int8_weights(data)
        named = len(data) <= _FLATBUFFER_MAX  # (_compact cannot rewrite a larger file)
        data = _compact(data, (file_input_names or input_names or (), output_names))
        tmp.write_bytes(data)
        if problem := _load_problem(tmp):
            raise UnsupportedModelError(f"LiteRT cannot allocate the converted {precision} model ({problem})")
        info = inspect(tmp)
        if precision == "int8":
            _check_full_integer(info, allow_mixed)
            if not input_names and check_lowering:
                _check_lowering(tmp, model, probe or [x.permute(0, 3, 1, 2).numpy() if nhwc else x.numpy()], nhwc,
                                float(info["outputs"][0].get("scale") or 0.0))
    return {
        "precision": precision,
        "path": str(out_path),
        "size_bytes": len(data),
        # not transposed: as the model takes it ("" for a model taking channels last already)
        "layout": "NHWC" if nhwc else ("NCHW" if x.dim() == 4 and channels_last_io else ""),
        "io_named": named,
        **info,
    }


def _load_problem(path: pathlib.Path) -> str | None:
    """Allocate the file with LiteRT in a child process; None if that works, else what failed.

    [issue #6] A converted file can abort the interpreter (SIGABRT from a kernel's Prepare, no
    Python exception): the mixed full-int8 tiny BERT does. Checking in a child keeps the caller alive.
    """
    import subprocess
    import sys

    code = (
        "import sys\nfrom ai_edge_litert.interpreter import Interpreter\n"
        "Interpreter(model_content=open(sys.argv[1], 'rb').read()).allocate_tensors()\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=False)
    if r.returncode == 0:
        return None
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith(("W", "I0", "INFO"))]
    return f"exit code {r.returncode}" + (f": {lines[-1][:200]}" if lines else "")


def _fp16_weights(tflite: bytes) -> bytes:
    """Cast float weights to fp16 (dequantized to fp32 at load) with ai-edge-quantizer."""
    from ai_edge_quantizer import quantizer as aeq
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    qt = aeq.Quantizer(bytearray(tflite))
    qt.add_weight_only_config(
        regex=".*",
        operation_name=aeq.qtyping.TFLOperationName.ALL_SUPPORTED,
        num_bits=16,
        algorithm_key=AlgorithmName.FLOAT_CASTING,
    )
    return bytes(qt.quantize(enable_progress_report=False).quantized_model)


def _dynamic_int8_weights(tflite: bytes) -> bytes:
    """Dynamic-range int8 (per-channel symmetric int8 weights, activations quantized at run time)
    of an fp32 .tflite with ai-edge-quantizer."""
    from ai_edge_quantizer import quantizer as aeq
    from ai_edge_quantizer import recipe

    qt = aeq.Quantizer(bytearray(tflite), recipe.dynamic_wi8_afp32())
    return bytes(qt.quantize().quantized_model)


class _DedupBuilder(flatbuffers.Builder):
    """flatbuffers Builder that writes each distinct numpy vector once and 16-byte aligns it.

    Per-channel int8 weights and their int32 biases each carry a scale and an int64 zero-point
    vector per output channel: ~0.5 MB on EfficientNet-Lite0, 10 % of the file. The zero points
    are all 0, so most vectors repeat; sharing them is plain flatbuffers (offsets may point to the
    same vector) and the file reads the same. 16-byte alignment matches what the converter writes
    for weight buffers.
    """

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self._seen: dict[tuple[str, bytes], int] = {}

    def CreateNumpyVector(self, x: np.ndarray) -> int:  # flatbuffers API name
        payload = np.ascontiguousarray(x, x.dtype.newbyteorder("<")).tobytes()
        key = (x.dtype.str, payload)
        if key not in self._seen:
            self.StartVector(x.itemsize, x.size, 16)
            self.head -= len(payload)
            self.Bytes[self.head : self.head + len(payload)] = payload
            self.vectorNumElems = x.size
            self._seen[key] = self.EndVector()
        return self._seen[key]


_FLATBUFFER_MAX = 2**31 - 2**20  # what one flatbuffer holds, with room for its tables


def _compact(tflite: bytes, names: tuple[Sequence[str], Sequence[str]] | None = None) -> bytes:
    """Rewrite the flatbuffer with repeated vectors (mostly quantization params) shared, and its
    inputs and outputs named (`_name_io`) when `names` (inputs', outputs') is given."""
    from ai_edge_litert import schema_py_generated as schema

    if len(tflite) > _FLATBUFFER_MAX:
        # one flatbuffer cannot hold it; keep the converter's external-buffer layout, and its
        # names (inputs args_0 ..., outputs output_0, ... or a dict's keys joined by "_"): the I/O
        # contract, read from the file, records those
        return tflite
    model = schema.ModelT.InitFromPackedBuf(bytearray(tflite), 0)
    if names is not None:
        _name_io(model, *names)
    for b in model.buffers:
        if b.offset > 1:  # data stored after the flatbuffer (ai-edge-quantizer does this): inline it
            b.data = np.frombuffer(tflite, np.uint8, b.size, b.offset)
            b.offset = b.size = 0
    builder = _DedupBuilder(len(tflite))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _name_io(model: Any, input_names: Sequence[str], output_names: Sequence[str]) -> None:
    """Name each input and output of the main subgraph (a `schema.ModelT`, in place): its tensor
    (what `get_input_details()` / `get_output_details()` report, in the model's order) and its
    signature key (what `get_signature_runner()` takes and returns by). The names given come
    first, then `input_k` / `output_k`, as in the ONNX and OpenVINO files.

    Why: litert-torch names signature inputs after the converted call (`args_0` for a positional
    one) and their tensors `serving_default_args_0:0`, signature outputs `output_0`, `output_1`, ...
    (a dict's: its keys joined by "_") and output tensors after graph nodes, so one model's inputs
    and outputs had other names here than in its ONNX / OpenVINO files. The signature's entries
    are put in the model's order too (LiteRT maps them by name, so the order is only what a reader
    of the file sees)."""
    sub = model.subgraphs[0]
    for tensors, sig_field, names in (
            ([int(t) for t in sub.inputs], "inputs",
             [*input_names, *(default_input_name(k) for k in range(len(input_names), len(sub.inputs)))]),
            ([int(t) for t in sub.outputs], "outputs",
             complete_output_names(list(output_names), len(sub.outputs), "tflite export"))):
        for t, name in zip(tensors, names, strict=True):
            sub.tensors[t].name = name
        by_tensor = dict(zip(tensors, names, strict=True))
        for sig in model.signatureDefs or []:
            entries = getattr(sig, sig_field)
            if sig.subgraphIndex == 0 and entries:
                entries.sort(key=lambda tm: tensors.index(tm.tensorIndex) if tm.tensorIndex in by_tensor
                             else len(tensors))
                for tm in entries:
                    old = tm.name.decode() if isinstance(tm.name, bytes) else tm.name
                    new = by_tensor.get(tm.tensorIndex, old)
                    if sig_field == "inputs" and old in names and old != new:
                        # converted by keyword (text encoders): the key said which tensor it is, and
                        # naming by position would swap two inputs
                        raise UnsupportedModelError(f"the file's input {old!r} is at position "
                                                    f"{names.index(new)}, where the model has {new!r}")
                    tm.name = new


def run(path: pathlib.Path | str, x_nchw_float: np.ndarray, threads: int = 1) -> np.ndarray:
    """Run a .tflite on a float NCHW batch with LiteRT (XNNPACK) and return float outputs.

    Transposes to NHWC when the model takes NHWC and (de)quantizes int8 I/O; a batch larger than
    the model's is run one slice at a time.
    """
    from ai_edge_litert.interpreter import Interpreter

    from edgecompress.quiet import native_lines_dropped

    with native_lines_dropped():  # LiteRT's "Created ... XNNPACK delegate" line
        it = Interpreter(**model_source(path), num_threads=threads)  # XNNPACK is the default delegate
        it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    x = np.asarray(x_nchw_float)
    if x.dtype.kind not in "iu":  # integer ids (token / class indices) go in as integers
        x = x.astype(np.float32)
    shape = tuple(inp["shape"])
    if x.ndim == 4 and shape[1:] != x.shape[1:]:
        x = x.transpose(0, 2, 3, 1)
    if inp["dtype"] in _INT8_DTYPES:
        scale, zp = inp["quantization"]
        info = np.iinfo(inp["dtype"])
        x = np.clip(np.round(x / scale) + zp, info.min, info.max)
    x = x.astype(inp["dtype"])
    n = shape[0]
    res = []
    for i in range(0, len(x), n):
        it.set_tensor(inp["index"], x[i : i + n])
        it.invoke()
        y = it.get_tensor(out["index"]).astype(np.float32)
        if out["dtype"] in _INT8_DTYPES:
            scale, zp = out["quantization"]
            y = (y - zp) * scale
        res.append(y)
    return np.concatenate(res)
