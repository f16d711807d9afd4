"""Quantization-aware training with torchao PT2E, trained with the KD objective.

torch.export.export (dynamic batch) -> prepare_qat_pt2e(m, x86_quantizer()) (X86InductorQuantizer's
QAT config, annotated for ONNX Runtime's QDQ fusions: `_x86_qat_quantizer.py`) -> calibrate the
observers -> fine-tune with `distill.finetune` (teacher = the float model before the pass) ->
convert_pt2e. The result is a GraphModule with real quantize/dequantize ops; the spec is
marked `extra["quantized"] = "qat"` so the exporters lower it as it is (QDQ ONNX, OpenVINO int8
from that ONNX) instead of running their own post-training quantization.

[issue #4] Standard QAT practice, each step because a short run on EfficientNet-Lite0 without it
was worse than PTQ (ORT int8 top-1 81.6 % vs PTQ 87.0 %, agreement with fp32 90.4 % vs 97.4 %):
- `calib_samples`: the observers are initialised first as PTQ initialises them: inference mode,
  fake quantization off, min/max over all calibration batches. Without it the moving-average
  observers (averaging constant 0.01) kept the range of the first *training* batch, seen with
  batch-statistics BatchNorm.
- BatchNorm is folded into the convolutions before `prepare_qat_pt2e` (whose own conv-BN fusion
  rebuilt every BatchNorm with eps 1e-5 instead of EfficientNet's 1e-3: a 0.20 mean logit error
  before any quantization), so the run cannot move BN statistics either.
- `freeze_bn`: training runs the graph in inference mode (running statistics used, never updated)
  for any BatchNorm left unfolded; dropout is off too (one switch). In train mode a 16-step run
  with batch 32 moved the statistics toward noisy batch estimates the int8 model never uses.
- `normalise_sources`: the x86 quantizer's patterns see Conv2d subclasses and functional ReLU6.
- `freeze_observers`: after calibration the quantization ranges stay fixed while the weights
  adapt to them.
- `bias_correction`: then each layer's bias is corrected for its weights' rounding
  (`correct_prepared_bias`), so training starts where the exporters' corrected PTQ ends.
- `pin_qparams`: the int8 model is converted with the scales the fake-quant graph trained with
  (the fused kernel and `convert_pt2e` compute them differently).
- KD only, no hard labels: the fine-tune's `distill.alpha` defaults to 1.0 here (the distill pass
  default 0.7 puts 30 % of the loss on cross-entropy with the labels). QAT's job is to make the int8
  model match the float teacher; the label term pulls it toward the labels wherever the teacher is
  wrong (14 % of the eval images for EfficientNet-Lite0). With it, 1 KD epoch moved
  EfficientNet-Lite0 int8 *away* from fp32 (held-out mean |Δlogit| 0.093 calibrated -> 0.127
  trained, agreement 98 -> 95 %); without it the same run moves it closer (0.073, 98 %).
  Set `distill: {alpha: 0.7}` for the old objective.

`backend: litert` prepares with litert-torch's PT2E quantizer instead (`_litert_qat.py`) and the
result exports as full-int8 TFLite; `_qat_backends.py` lists the backends and their formats. The
other formats get int8 from the same run by their own PTQ (`cross_format`: of the float model
before QAT by default, or of the QAT-trained float weights, `float_twin`).

Prepared / converted models reject .train()/.eval(): mode switches go through
`move_exported_model_to_train/eval`. QAT must be the last pass of a chain.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecompress.errors import ConfigError, first_line
from edgecompress.passes import PassInfo, register_pass
from edgecompress.passes._common import (
    as_spec,
    check_distill,
    check_range,
    config_dict,
    make_config,
    model_stats,
    pass_module,
    resolve_dataset,
)
from edgecompress.passes._qat_backends import CROSS_FORMAT_ROUTES, get_backend
from edgecompress.passes.distill import DistillConfig, finetune, named_teacher, teacher_module

if TYPE_CHECKING:
    import torch

    from edgecompress.data import DataLike, Dataset
    from edgecompress.models import ModelSpec
    from edgecompress.models.spec import ModelLike, ShapeLike


@dataclass
class QATConfig:
    epochs: int = 1
    # [issue #4] QAT fine-tunes a trained model a little: on the EfficientNet-Lite0 chain one epoch
    # at 1e-4 (the old default, and so `compress --qat-epochs`) drifted from the float model (ORT
    # agreement 96.2 %, mean |Δlogit| 0.094) where 1e-5 kept 99.0 % / 0.036 (PTQ 99.2 % / 0.040;
    # benchmarks/chain_qat_bias_correction.py)
    lr: float = 1e-5
    batch_size: int = 64
    backend: str = "x86"  # _qat_backends.QAT_BACKENDS: x86 (QDQ ONNX / OpenVINO) or litert (full-int8 TFLite)
    # old name of `backend` (recipes resolved before it say `quantizer: x86`); not written back
    quantizer: str | None = field(default=None, metadata={"deprecated_alias": "backend"})
    calib_samples: int = 300  # observers initialised on this many training samples first (0 = not)
    # how those samples set the activation ranges: minmax | percentile | entropy (ORT's histogram
    # calibrators). None: the backend's PTQ default (x86: the ONNX exporter's percentile; litert: minmax)
    calib_method: str | None = None
    percentile: float = 99.999  # calib_method percentile (as ExportOptions.percentile)
    freeze_bn: bool = True  # train with BatchNorm running stats, never updated
    freeze_observers: bool = True  # quantization ranges fixed after calibration
    # x86: leave the first N conv / linear nodes float (None: the model's default, the ONNX
    # exporter's `onnx_int8_float_first`; _x86_qat_quantizer.py says why). litert: must stay 0.
    float_first: int | None = None
    # fold each layer's weight-rounding shift into its bias after calibration (correct_prepared_bias;
    # with calib_samples 0 there are no ranges to round with, and nothing is corrected)
    bias_correction: bool = True
    # how formats the backend does not lower get int8 (_qat_backends.CROSS_FORMAT_ROUTES): their PTQ
    # of the float model before QAT (measured better), or of the QAT-trained weights
    cross_format: str = "ptq-of-float"
    distill: dict[str, Any] = field(default_factory=dict)  # other DistillConfig keys (alpha defaults to 1.0 here)

    def __post_init__(self) -> None:
        check_range("qat.epochs", self.epochs, 0)
        check_distill("qat.distill", self.distill)
        check_range("qat.lr", self.lr, 0, lo_open=True)
        check_range("qat.batch_size", self.batch_size, 2)
        check_range("qat.calib_samples", self.calib_samples, 0)
        if self.calib_method is not None:
            from edgecompress.exporters.base import CALIB_METHODS  # the exporters' list (imported only here)

            if self.calib_method not in CALIB_METHODS:
                raise ConfigError(f"qat.calib_method: {self.calib_method!r} is not one of {', '.join(CALIB_METHODS)}")
        check_range("qat.percentile", self.percentile, 0, 100, lo_open=True)
        if self.epochs == 0 and self.calib_samples == 0:
            raise ConfigError("qat.calib_samples: 0 with epochs 0 leaves the observers without ranges")
        if self.quantizer is not None:
            if self.backend not in ("x86", self.quantizer):
                raise ConfigError(f"qat.quantizer: {self.quantizer!r} contradicts backend {self.backend!r} "
                                  "(quantizer is the old name of backend; set backend only)")
            self.backend, self.quantizer = get_backend(self.quantizer, "qat.quantizer").name, None
        get_backend(self.backend)
        if self.cross_format not in CROSS_FORMAT_ROUTES:
            raise ConfigError(f"qat.cross_format: {self.cross_format!r} is not one of {', '.join(CROSS_FORMAT_ROUTES)}")
        if self.float_first is not None:
            check_range("qat.float_first", self.float_first, 0)
            if self.float_first and self.backend == "litert":
                raise ConfigError("qat.float_first: the litert backend exports full-integer TFLite; "
                                  "every layer is quantized (set 0 or use backend: x86)")


def _wrapper_class() -> type:
    from torch import nn

    class _QuantizedModule(nn.Module):
        """The converted int8 graph behind a plain nn.Module: exporters and evaluators call
        .eval(), which a converted PT2E graph refuses; after convert there is no mode to switch."""

        def __init__(self, graph_module: Any) -> None:
            super().__init__()
            self.graph_module = graph_module
            self.training = False  # so exporters do not warn about a model "in training mode"

        def forward(self, x: Any) -> Any:  # one input: the exporters' dynamic_shapes match it
            return self.graph_module(x)

        def train(self, mode: bool = True) -> _QuantizedModule:
            return self

    return _QuantizedModule


def _frozen_bn_class() -> type:
    from torch import nn

    class _FrozenBatchNorm(nn.Module):
        """The prepared graph as the student `distill.finetune` trains, kept in inference mode:
        gradients flow, BatchNorm uses its running stats and leaves them alone."""

        def __init__(self, graph_module: Any) -> None:
            super().__init__()
            self.graph_module = graph_module

        def forward(self, x: Any) -> Any:
            return self.graph_module(x)

        def train(self, mode: bool = True) -> _FrozenBatchNorm:
            from torchao.quantization.pt2e import move_exported_model_to_eval

            move_exported_model_to_eval(self.graph_module)
            return self

    return _FrozenBatchNorm


def fake_quantizers(prepared: Any) -> list[Any]:
    from torchao.quantization.pt2e.fake_quantize import FakeQuantizeBase

    return [m for m in prepared.modules() if isinstance(m, FakeQuantizeBase)]


def calibrate(prepared: Any, x: Any, batch_size: int, method: str = "minmax", percentile: float = 99.999) -> int:
    """Initialise every observer of a prepared QAT graph on `x` (an N x ... array) as PTQ does:
    inference mode, fake quantization off, ranges = min / max over all of `x`, or for `method`
    percentile / entropy the per-tensor activation ranges ONNX Runtime's calibrator of that name
    picks (its histogram collector, fed the same tensors; weights keep min / max, as in ORT).
    Returns the number of fake-quantize modules set.

    [issue #4] Why the method matters: QAT starts from these ranges and `freeze_observers` keeps
    them, so QAT began from min / max while the PTQ it is compared with calibrated by percentile.
    On digits-cnn that start alone cost one test image (int8 99.11 % after calibration and after
    every fine-tuning tried, against PTQ's 99.33 %: the PTQ file calibrated by minmax reads 99.11
    % too, benchmarks/RESULTS-compress.md).

    The x86 quantizer's FusedMovingAvgObsFakeQuantize keeps a moving average (constant 0.01) in
    which the first batch it sees dominates; here every call is observed alone (constant 1) and
    the extremes accumulated by a hook after each call, then the scale / zero point recomputed.
    Per call, not per batch: one module can observe several tensors (a shared spec: the input and
    output of the average pool), and a per-batch read would keep only the last one's range.
    """
    import numpy as np
    import torch
    from torchao.quantization.pt2e import move_exported_model_to_eval

    fqs = [f for f in fake_quantizers(prepared) if hasattr(f.activation_post_process, "averaging_constant")]
    saved = [(f.activation_post_process.averaging_constant, int(f.fake_quant_enabled[0])) for f in fqs]
    seen: dict[int, list[Any]] = {}

    def hook(f: Any, _inp: Any, _out: Any) -> None:
        o = f.activation_post_process
        lo_hi = seen.get(id(f))
        if lo_hi is None:
            seen[id(f)] = [o.min_val.clone(), o.max_val.clone()]
        else:
            lo_hi[0] = torch.minimum(lo_hi[0], o.min_val)
            lo_hi[1] = torch.maximum(lo_hi[1], o.max_val)

    collectors: dict[int, Any] = {}
    if method != "minmax":
        from edgecompress.exporters._fast_histogram import FastHistogramCollector

        per_tensor = (torch.per_tensor_affine, torch.per_tensor_symmetric)

        def pre_hook(f: Any, inp: Any) -> None:
            a = inp[0]
            if isinstance(a, torch.nn.Parameter) or f.activation_post_process.qscheme not in per_tensor:
                return  # a weight: min / max, as ORT
            c = collectors.get(id(f))
            if c is None:  # ORT's settings for the method (create_calibrator; the exporter's percentile)
                bins, qbins = (2048, 128) if method == "percentile" else (128, 128)
                c = collectors[id(f)] = FastHistogramCollector(method, False, bins, qbins, percentile, "same")
            c.collect({"t": [a.detach().float().numpy()]})  # silent (FastHistogramCollector)

        handles = [f.register_forward_pre_hook(pre_hook) for f in fqs]
    else:
        handles = []
    handles += [f.register_forward_hook(hook) for f in fqs]
    move_exported_model_to_eval(prepared)
    try:
        for f in fqs:
            f.activation_post_process.averaging_constant = 1.0
            f.enable_observer()
            f.disable_fake_quant()
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                prepared(torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size])))
        for f in fqs:
            if id(f) not in seen:
                continue
            lo, hi = seen[id(f)]
            if id(f) in collectors:
                r = collectors[id(f)].compute_collection_result()["t"]
                lo, hi = (torch.full_like(lo, float(r[0])), torch.full_like(hi, float(r[1])))
            o = f.activation_post_process
            o.min_val.resize_(lo.shape).copy_(lo)
            o.max_val.resize_(hi.shape).copy_(hi)
            scale, zero_point = f.calculate_qparams()
            f.scale.resize_(scale.shape).copy_(scale)
            f.zero_point.resize_(zero_point.shape).copy_(zero_point)
    finally:
        for h in handles:
            h.remove()
        for f, (const, fq_on) in zip(fqs, saved, strict=True):
            f.activation_post_process.averaging_constant = const
            f.enable_fake_quant(bool(fq_on))
    return len(seen)


def correct_prepared_bias(prepared: Any, x: Any, batch_size: int) -> int:
    """Bias correction of a calibrated, frozen QAT graph before it trains: each conv / linear's
    float bias loses the mean output shift its fake-quantized weights cause, sum((Wq - W) * E[x]),
    with E[x] the layer's input on `x` with every fake quantization off (the float model) and Wq
    what the layer's own weight quantizer makes of W (its frozen per-channel scales, so x86's and
    litert's grids alike). Returns the number of layers corrected.

    [issue #4] The exporters correct their PTQ's biases the same way (exporters/_bias_correction.py);
    without it QAT started from uncorrected PTQ and one KD epoch only caught up with corrected PTQ
    (EfficientNet-Lite0 chain, ORT: agreement 99.2 % both, mean |Δlogit| 0.045 vs 0.040); with it,
    calibration alone reads 0.037 and one gentle KD epoch 0.035. Why not leave it to training: at
    the recipe's lr (5e-6 .. 2e-5) 16 Adam steps move a bias by at most 16 x lr.
    """
    import numpy as np
    import torch
    from torchao.quantization.pt2e import move_exported_model_to_eval

    from edgecompress.exporters._bias_correction import InputMeans, fx_attribute, layer_shift, recording_forward

    aten = torch.ops.aten
    layers = {aten.conv1d.default, aten.conv2d.default, aten.conv3d.default, aten.linear.default}

    def behind_quantizer(node: Any) -> Any:  # a get_attr, or one behind a quantizer module: (node, quantizer)
        if getattr(node, "op", None) == "call_module" and getattr(node.args[0], "op", None) == "get_attr":
            return node.args[0], prepared.get_submodule(node.target)
        return node, None

    sites: dict[Any, tuple[Any, Any, Any, int]] = {}  # node -> weight, its quantizer, bias, groups
    for node in prepared.graph.nodes:
        if node.op != "call_function" or node.target not in layers or len(node.args) < 3:
            continue
        (w_node, wq), (b_node, _) = behind_quantizer(node.args[1]), behind_quantizer(node.args[2])
        w, b = fx_attribute(prepared, w_node), fx_attribute(prepared, b_node)
        if w is None or wq is None or b is None:  # a weight without a quantizer, or no bias
            continue
        groups = node.args[6] if node.target != aten.linear.default and len(node.args) > 6 else 1
        sites[node] = (w, wq, b, int(groups))
    if not sites:
        return 0
    fqs = fake_quantizers(prepared)
    means = InputMeans()
    saved = [(int(f.fake_quant_enabled[0]), int(f.observer_enabled[0])) for f in fqs]
    move_exported_model_to_eval(prepared)
    try:
        for f in fqs:
            f.disable_fake_quant()
            f.disable_observer()
        run = recording_forward(prepared, {n: (n, n.target == aten.linear.default) for n in sites}, means.add)
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                run(torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size])))
        done = 0
        with torch.no_grad():
            for node, (w, wq, b, groups) in sites.items():
                mean = means.mean(node)
                if mean is None:
                    continue
                wq.enable_fake_quant()
                delta = (wq(w.detach().clone()) - w).double().numpy()
                wq.disable_fake_quant()
                b -= torch.from_numpy(layer_shift(delta, mean, node.target == aten.linear.default, groups)).to(b.dtype)
                done += 1
    finally:
        for f, (fq_on, obs_on) in zip(fqs, saved, strict=True):
            f.enable_fake_quant(bool(fq_on))
            f.enable_observer(bool(obs_on))
    return done


def pin_qparams(prepared: Any, x: Any) -> int:
    """Make `convert_pt2e` quantize with the scale / zero point the fake-quant graph used.

    [issue #4] The x86 QAT config's FusedMovingAvgObsFakeQuantize runs the fused ATen kernel, which
    recomputes scale and zero point from the running min / max at *every* forward (observers on or
    off) with its own formula (symmetric weights: absmax / 128), while `convert_pt2e` calls the
    Python observer's `calculate_qparams` (absmax / 127.5, another minimum-scale clamp). On
    EfficientNet-Lite0 51 of 101 quantizers differed (up to 4x on near-dead channels): the converted
    int8 model drifted from fp32 more than the graph QAT trained (mean |Δlogit| 0.117 vs 0.099 on
    250 held-out images, calibrated only; 0.125 vs 0.083 after 1 KD epoch), so training gains were
    lost in conversion. Here one forward on `x` with observers off refreshes the buffers, then each
    fused quantizer's `calculate_qparams` returns them. Returns the number of quantizers pinned.
    """
    import numpy as np
    import torch
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.fake_quantize import FusedMovingAvgObsFakeQuantize

    fqs = [f for f in prepared.modules() if isinstance(f, FusedMovingAvgObsFakeQuantize)]
    saved = [int(f.observer_enabled[0]) for f in fqs]
    move_exported_model_to_eval(prepared)
    try:
        for f in fqs:
            f.disable_observer()
        symmetrize_weight_ranges(prepared)  # int8 weights exported with zero point 0, always
        with torch.no_grad():
            prepared(torch.from_numpy(np.ascontiguousarray(x)))
    finally:
        for f, on in zip(fqs, saved, strict=True):
            f.enable_observer(bool(on))
    for f in fqs:
        f.calculate_qparams = lambda f=f: (f.scale.detach().clone(), f.zero_point.detach().clone())
    return len(fqs)


def symmetrize_weight_ranges(prepared: Any) -> int:
    """Make every symmetric (weight) quantizer's frozen range two-sided: [-absmax, absmax].

    [issue #4] The fused fake-quant kernel symmetrizes a range only when it straddles 0; a channel
    whose weights all have one sign (common in depthwise convs after pruning + KD) gets affine
    qparams with zero point -128 or 127. Training then fake-quantizes with them, `pin_qparams` exports
    them, and ONNX Runtime's QLinearConv runs int8 weights with non-zero zero points on a slow path:
    the pruned EfficientNet-Lite0 chain's QAT int8 took 125 ms in ORT vs 5.2 ms in OpenVINO, 16 of 49
    weight tensors affected (benchmarks/RESULTS-compress.md). Call with observers frozen (the
    ranges no longer move); returns the number of channels made two-sided.
    """
    import torch
    from torchao.quantization.pt2e.fake_quantize import FusedMovingAvgObsFakeQuantize

    changed = 0
    for f in prepared.modules():
        if not isinstance(f, FusedMovingAvgObsFakeQuantize) or not f.is_symmetric_quant:
            continue
        obs = f.activation_post_process
        if obs.min_val.numel() == 0:  # never observed
            continue
        with torch.no_grad():
            # an all-zero (pruned) channel needs a non-empty range too: [0, 0] gets the kernel's
            # default scale 0.1 with zero point 127, and one such channel made the first depthwise
            # conv of the pruned chain take 13 ms in ORT
            absmax = torch.maximum(obs.min_val.abs(), obs.max_val.abs()).clamp(min=1e-6)
            changed += int(((obs.min_val >= 0) | (obs.max_val <= 0)).sum())
            if f.quant_min == -f.quant_max and not getattr(f, "_narrow_range_set", False):
                # [issue #4] narrow-range weights ([-127, 127]: the litert backend): the kernel's
                # symmetric formula gives absmax/127 * 255/254, 0.4 % coarser than PTQ's absmax/127;
                # that alone made the calibrated EfficientNet-Lite0 drift more than PTQ (mean |Δlogit|
                # 0.097 vs 0.092 on 250 images; PTQ's weight qparams in the same graph: 0.092). This
                # range makes the kernel use absmax/127 (x86 weights span [-128, 127]: no change).
                absmax = absmax * (f.quant_max - f.quant_min) / (f.quant_max - f.quant_min + 1)
                f._narrow_range_set = True  # once: pin_qparams symmetrizes again
            obs.min_val.copy_(-absmax)
            obs.max_val.copy_(absmax)
    return changed


def normalise_sources(gm: Any) -> int:
    """Make the x86 quantizer's pattern matching see every convolution and activation.

    X86InductorQuantizer finds its QAT patterns (conv + BN + ReLU6 / Hardtanh / ReLU ...) by the
    exact module type a node comes from (`source_fn_stack`, or for a non-strict export the
    innermost class in `nn_module_stack`). [issue #4] On EfficientNet-Lite0 that missed two things:
    `SameConv2d` (an nn.Conv2d subclass: the stem and all 16 depthwise convolutions) stayed float,
    and the functional `F.relu6` (recorded as part of the enclosing block) was not fused with its
    convolution, so the int8 range was observed on the BatchNorm output *before* the clamp. Here
    every aten conv2d node is recorded as coming from nn.Conv2d and every activation node from its
    module type. Returns the number of nodes changed.
    """
    import torch
    from torch import nn

    aten = torch.ops.aten
    types = {
        aten.conv2d.default: nn.Conv2d,
        aten.relu6.default: nn.ReLU6,
        aten.hardtanh.default: nn.Hardtanh,
        aten.relu.default: nn.ReLU,
        aten.hardswish.default: nn.Hardswish,
        aten.silu.default: nn.SiLU,
    }
    changed = 0
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target in types:
            node.meta["source_fn_stack"] = [(node.name, types[node.target])]
            changed += 1
    return changed


def prepare(module: Any, example: tuple, cfg: QATConfig) -> Any:
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    batch = torch.export.Dim("batch", min=1, max=4096)
    dyn = tuple({0: batch} for _ in example)
    try:
        gm = torch.export.export(module.eval(), example, dynamic_shapes=dyn).module()
    except Exception as e:
        first = first_line(e)
        raise ConfigError(f"qat: torch.export.export of the model failed: {first}") from e
    # [issue #4] Fold every conv -> BatchNorm into the conv first, with the BatchNorm's own eps.
    # prepare_qat_pt2e's conv-BN fusion rebuilds each BatchNorm with eps 1e-5: EfficientNet-Lite
    # uses 1e-3, and with all fake quantization *off* the prepared graph already disagreed with
    # fp32 on 5 % of the eval images (mean |logit error| 0.20, twice PTQ's). Folded, QAT trains
    # the folded weights and bias against the statistics the int8 model uses anyway.
    from torchao.quantization.pt2e.utils import _fuse_conv_bn_

    _fuse_conv_bn_(gm)
    normalise_sources(gm)
    return prepare_qat_pt2e(gm, x86_quantizer(cfg.float_first or 0))


def x86_quantizer(float_first: int = 0) -> Any:
    """The x86 QAT quantizer: X86InductorQuantizer's QAT config, annotated so that ONNX Runtime's
    QDQ fusions run every conv as QLinearConv and the classifier as QGemm ([issue #4]: each conv
    output quantized, no conv + add fusion, a conv's input Q/DQ before its zero Pad, int32 linear
    bias; `_x86_qat_quantizer`)."""
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        get_default_x86_inductor_quantization_config,
    )

    from edgecompress.passes._x86_qat_quantizer import ort_x86_quantizer

    return ort_x86_quantizer(get_default_x86_inductor_quantization_config(is_qat=True), float_first)


# [issue #4] QAT distils toward the float model only: no cross-entropy with hard labels unless
# `distill.alpha` asks for it (the labels pulled EfficientNet-Lite0 int8 away from fp32; module doc).
QAT_KD_DEFAULTS: dict[str, Any] = {"alpha": 1.0}


def kd_config(cfg: QATConfig) -> DistillConfig:
    """The DistillConfig QAT's fine-tune runs: `QAT_KD_DEFAULTS`, then `cfg.distill`, then the
    QAT-level epochs / lr / batch size."""
    return make_config(
        DistillConfig,
        {**QAT_KD_DEFAULTS, **cfg.distill},
        "qat.distill",
        epochs=cfg.epochs,
        lr=cfg.lr,
        batch_size=cfg.batch_size,
    )


def train_prepared(
    prepared: Any, teacher: Any, ds: Dataset, cfg: QATConfig, checkpoint: Path | None = None, progress: bool = True,
    teacher_named: bool = False,
) -> dict[str, Any]:
    """Calibrate the observers of a prepared QAT graph, freeze them, fine-tune with the KD
    objective (BatchNorm frozen), as `cfg` asks; returns the log recorded with the pass."""
    if isinstance(ds.x, dict):
        raise ConfigError("qat: multi-input models are not supported")
    kd = kd_config(cfg)
    log: dict[str, Any] = {"calibrated_on": 0}
    if cfg.calib_samples:
        n = min(cfg.calib_samples, len(ds))
        method = cfg.calib_method or get_backend(cfg.backend).ptq_calib
        calibrate(prepared, ds.x[:n], cfg.batch_size, method, cfg.percentile)
        log["calibrated_on"], log["calib_method"] = n, method
        if cfg.freeze_observers:
            from torchao.quantization.pt2e.fake_quantize import disable_observer

            prepared.apply(disable_observer)
            log["symmetrized_weight_channels"] = symmetrize_weight_ranges(prepared)
        if cfg.bias_correction:
            log["bias_corrected_layers"] = correct_prepared_bias(prepared, ds.x[:n], cfg.batch_size)
    if cfg.epochs:
        if kd.feature_layers:
            print("note: qat.distill.feature_layers ignored for a PT2E (QAT) model; response KD only", file=sys.stderr)
            kd = make_config(DistillConfig, kd, "qat.distill", feature_layers=[])
        student = _frozen_bn_class()(prepared) if cfg.freeze_bn else prepared
        log.update(finetune(student, teacher, ds, kd, checkpoint, "qat (KD)", progress, teacher_named=teacher_named))
    else:
        log["epochs"] = 0
    return log


def drop_unused_state(gm: Any) -> int:
    """Delete parameters and buffers no node of a PT2E graph reads; returns how many.

    [issue #4] `convert_pt2e` folds each float weight into a new int8 constant but leaves the
    float original on the module: 49 of EfficientNet-Lite0's convolutions kept both, and the
    recorded "size" of the QAT model counted 6.7 MB for a 4.4 MB int8 file. State under a
    submodule the graph calls (`call_module`, e.g. torch.export's `_guards_fn`) counts as used.
    """
    nodes = list(gm.graph.nodes)
    used = {str(n.target) for n in nodes if n.op in ("get_attr", "call_module")}
    dropped = 0
    for name, _ in [*gm.named_parameters(), *gm.named_buffers()]:
        if name in used or any(u.startswith(name + ".") for u in used):
            continue
        owner, _, leaf = name.rpartition(".")
        delattr(gm.get_submodule(owner) if owner else gm, leaf)
        dropped += 1
    gm.delete_all_unused_submodules()
    return dropped


def float_twin(prepared: Any) -> Any:
    """The float model QAT trained: a copy of the prepared graph with every observer / fake-quantize
    call removed (BatchNorm stays folded into the convolutions, as trained).

    [issue #4] A format the QAT backend does not lower quantizes these weights with its own PTQ
    (`_qat_backends.qat_route`), so one QAT chain exports int8 to every format.
    """
    import operator

    import torch
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.fake_quantize import FakeQuantizeBase
    from torchao.quantization.pt2e.observer import ObserverBase

    aten = torch.ops.aten
    # litert-torch's quantizer finds adds / muls by their Python source (`a + b`: get_source_partitions
    # on operator.add); as aten calls, 7 of EfficientNet-Lite0's 9 residual adds stayed float in TFLite
    python_ops = {aten.add.Tensor: operator.add, aten.mul.Tensor: operator.mul}
    gm = copy.deepcopy(prepared)
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), FakeQuantizeBase | ObserverBase):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
        elif node.op == "call_function" and node.target in python_ops and len(node.args) == 2 and not node.kwargs:
            node.target = python_ops[node.target]
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    move_exported_model_to_eval(gm)
    return _wrapper_class()(gm)


def qat(
    model: ModelLike,
    config: QATConfig | dict | None = None,
    *,
    data: DataLike | None = None,
    teacher: ModelSpec | torch.nn.Module | None = None,
    workdir: Path | str | None = None,
    progress: bool = True,
    input_shape: ShapeLike | None = None,
    **overrides: Any,
) -> ModelSpec:
    """QAT of `model` with the KD objective; returns a spec whose module is the converted int8
    PT2E graph, marked `extra["quantized"] = "qat"` and `extra["qat_quantizer"] = <backend>`,
    with `extra["qat_float"]` (the trained float weights), `extra["fp32_reference"]` (the
    float model before QAT) and `extra["qat_cross_format"]` (which of the two other formats' PTQ
    quantizes). The caller's torch random stream is left as it was (torch.export
    and PT2E's prepare draw from it)."""
    import torch

    cfg = make_config(QATConfig, config, "qat", **overrides)
    with torch.random.fork_rng(devices=[]):
        return _qat(model, cfg, data, teacher, workdir, progress, input_shape)


def _qat(
    model: Any, cfg: QATConfig, data: Any, teacher: Any,
    workdir: Path | str | None, progress: bool, input_shape: Any,
) -> ModelSpec:
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    spec = as_spec(model, input_shape, who="qat")
    if len(spec.inputs) != 1:
        raise ConfigError(f"qat: model {spec.name} has {len(spec.inputs)} inputs; QAT supports one")
    before = model_stats(spec)
    ds = resolve_dataset(spec, data, "train", progress)
    backend = get_backend(cfg.backend)
    # the float model before QAT: the fp32 reference its int8 exports are validated against
    reference = copy.deepcopy(pass_module(spec)).eval()
    teach = reference if teacher is None else teacher_module(teacher, spec)  # None: that same model
    if cfg.float_first is None and backend.name == "x86":  # the model's own default (zoo entries)
        cfg = dataclasses.replace(cfg, float_first=int(spec.extra.get("onnx_int8_float_first", 0)))
    prepared = backend.prepare_fn()(spec.module, spec.example_inputs(2), cfg)
    ck = Path(workdir) / "checkpoints" / "qat.pt" if workdir else None
    log = train_prepared(prepared, teach, ds, cfg, ck, progress, named_teacher(teacher))
    twin = float_twin(prepared)
    # convert with the qparams training used (ds.x: an array, one input was checked above)
    pin_qparams(prepared, ds.x[:2])  # type: ignore[index]
    move_exported_model_to_eval(prepared)
    converted = convert_pt2e(prepared, fold_quantize=backend.fold_quantize)
    move_exported_model_to_eval(converted)
    log["unused_float_tensors_dropped"] = drop_unused_state(converted)
    spec.module = _wrapper_class()(converted)
    spec.extra["quantized"] = "qat"
    spec.extra["qat_quantizer"] = backend.name  # the exporters check it (_qat_backends.check_export)
    spec.extra["qat_float"] = twin  # other formats' PTQ may start from it (_qat_backends.qat_route)
    spec.extra["qat_cross_format"] = cfg.cross_format
    spec.extra["fp32_reference"] = reference  # pipeline.run_export validates against it
    # Torch-Pruning cannot count a converted graph: keep the float model's counts.
    spec.extra["params"], spec.extra["macs"] = before["params"], before["macs"]
    spec.extra.setdefault("passes", []).append({"pass": "qat", "config": config_dict(cfg), "log": log})
    if progress:
        print(f"qat: converted to int8 (PT2E, {backend.description})", file=sys.stderr)
    return spec


register_pass(
    PassInfo(
        "qat",
        QATConfig,
        qat,
        "torchao PT2E quantization-aware training (backend x86 or litert) with the KD loss",
        structural=True,
    )
)
