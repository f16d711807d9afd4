"""QAT backends: which PT2E quantizer the QAT pass trains with, and which exporters lower the result.

[issue #4] A converted QAT graph is only real int8 in the format whose quantizer annotated it:
- `x86`: torchao's X86InductorQuantizer (uint8 activations) -> QDQ ONNX, OpenVINO int8 from it;
- `litert`: litert-torch's PT2E quantizer (int8 activations, per-channel symmetric weights, the
  TFLite exporter's conv+activation fix) -> full-integer .tflite through `litert_torch.convert`.
The pass picks one with `qat: {backend: ...}`; the exporters ask `check_export` whether they can
take the spec. A format the backend does not lower still gets int8 from the same chain, by that
format's own post-training quantization (`qat_route`; the artifact's details say which route):
- `ptq-of-float` (default): of the float model before QAT (`extra["fp32_reference"]`), with the
  exporter's bias correction, i.e. what that format gets without QAT;
- `ptq-of-qat-weights`: of the QAT-trained float weights (`extra["qat_float"]`, the trained graph
  with its fake quantization removed, BatchNorm folded), left uncorrected.
[issue #4] The default is measured: in the EfficientNet-Lite0 chain (x86 QAT), LiteRT PTQ of the
float model before QAT agreed with it on 98.6 % of the eval images (mean |Δlogit| 0.052), PTQ of
the QAT-trained weights on 97.4 % (0.070): weights trained against one quantizer's rounding do not
carry that training to another's, and they lose the bias correction (benchmarks/RESULTS-compress.md).
Kept free of torch imports: the recipe checker and every exporter import it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgecompress.errors import ConfigError
from edgecompress.registry import Registry

if TYPE_CHECKING:
    from edgecompress.models import ModelSpec


@dataclass(frozen=True)
class QATBackend:
    name: str
    prepare: str  # "module:function", (module, example_inputs, QATConfig) -> prepared PT2E graph
    formats: tuple[str, ...]  # export formats that lower the converted graph as int8
    fold_quantize: bool  # convert_pt2e(fold_quantize=...): litert-torch cannot lower folded int8 weights
    description: str
    # how the format's own PTQ sets activation ranges, QAT's default start (qat.calib_method):
    # ONNX's ExportOptions.calib_method default; the TFLite exporter's observers take min / max
    ptq_calib: str = "minmax"

    def prepare_fn(self) -> Callable[..., Any]:
        mod, _, fn = self.prepare.partition(":")
        return getattr(importlib.import_module(mod), fn)


QAT_BACKENDS: Registry[QATBackend] = Registry("QAT backend")
for _b in (
    QATBackend("x86", "edgecompress.passes.qat:prepare", ("onnx", "openvino"), True,
               "torchao X86InductorQuantizer -> QDQ ONNX / OpenVINO int8", "percentile"),
    QATBackend("litert", "edgecompress.passes._litert_qat:prepare", ("tflite",), False,
               "litert-torch PT2E quantizer -> full-int8 TFLite"),
):
    QAT_BACKENDS.register(_b.name, _b)


# how a format the QAT backend does not lower gets its int8 (QATConfig.cross_format; module doc)
CROSS_FORMAT_ROUTES = ("ptq-of-float", "ptq-of-qat-weights")


def get_backend(name: str, where: str = "qat.backend") -> QATBackend:
    """The backend called `name`; ConfigError naming `where` and the choices otherwise."""
    if not isinstance(name, str) or name not in QAT_BACKENDS:
        raise ConfigError(f"{where}: unknown QAT backend {name!r} (choices: {', '.join(QAT_BACKENDS.names())})")
    return QAT_BACKENDS.get(name)


def backend_for_format(fmt: str) -> str | None:
    """The backend whose QAT model `fmt` exports, if any."""
    return next((n for n, b in QAT_BACKENDS if fmt in b.formats), None)


def _backend_of(spec: ModelSpec) -> tuple[str, QATBackend | None]:
    """The QAT backend a quantized spec was trained with (name, entry; None if unknown)."""
    name = spec.extra.get("qat_quantizer", "x86")  # specs from before the litert backend: x86
    return name, QAT_BACKENDS.get(name) if name in QAT_BACKENDS else None


def qat_route(spec: ModelSpec, fmt: str, precision: str) -> tuple[ModelSpec, dict[str, Any] | None]:
    """The spec `fmt` should export, and a note when that is not the QAT graph itself.

    [issue #4] A QAT model asked for int8 in a format its backend does not lower (an `x86` model
    to TFLite, a `litert` one to ONNX / OpenVINO) is exported by that format's PTQ, calibrated like
    any PTQ, from the float model before QAT or from the QAT-trained float weights, as the pass's
    `cross_format` chose (module doc); the note says which and why. Any other case returns `spec`
    unchanged (the exporter lowers the QAT graph, or refuses).
    """
    if not spec.extra.get("quantized") or spec.module is None or precision in ("fp32", "fp16"):
        return spec, None
    name, backend = _backend_of(spec)
    # specs from before the choice existed: the trained weights, as they were exported then
    how = spec.extra.get("qat_cross_format", "ptq-of-qat-weights")
    source = spec.extra.get("fp32_reference" if how == "ptq-of-float" else "qat_float")
    if backend is None or fmt in backend.formats or source is None:
        return spec, None
    drop = ("quantized", "qat_quantizer", "qat_float", "qat_cross_format")
    extra = {k: v for k, v in spec.extra.items() if k not in drop}
    if how == "ptq-of-float":
        what = "the float model before QAT (bias-corrected as any PTQ)"
    else:
        # weights trained through int8 rounding already: the exporters' bias correction would count it twice
        extra["qat_weights"] = name
        what = "the QAT-trained float weights"
    note = {"route": how, "qat_backend": name,
            "why": f"the {name!r} QAT backend lowers to {', '.join(backend.formats)} only; {fmt} {precision} "
                   f"is post-training quantized from {what}"}
    return spec.replace(module=source, extra=extra), note


def check_export(spec: ModelSpec, fmt: str) -> None:
    """ConfigError (one line) if `spec` is a QAT model that format `fmt` cannot lower as int8."""
    if not spec.extra.get("quantized") or spec.module is None:
        return
    name, backend = _backend_of(spec)
    if backend is None or fmt in backend.formats:
        return
    good = backend_for_format(fmt)
    fix = f"run qat with backend: {good}" if good else "no QAT backend exports it"
    raise ConfigError(f"{fmt} export of {spec.name}: the model was quantization-aware trained with the "
                      f"{name!r} backend, which exports to {', '.join(backend.formats)} only; {fix}")
