"""TFLite: fp32, fp16 weights, dynamic-range int8 and full-integer int8, via litert-torch.

PyTorch -> .tflite with no TensorFlow (litert-torch PT2E), run with LiteRT (ai-edge-litert +
XNNPACK). Image models take NHWC input; full-int8 files have int8 input and output tensors whose
scale / zero point are recorded in the artifact's I/O contract. A full-int8 export fails, naming
the ops, if anything but the I/O stays float, unless `--allow-mixed`. The conversion engine (and
why it extends litert-torch's quantizer) is in `_litert_convert.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecompress.errors import ConfigError, DataError, ExportError
from edgecompress.exporters.base import Artifact, ExportOptions, Format, TensorInfo, register_format

if TYPE_CHECKING:
    from edgecompress.data import Dataset
    from edgecompress.models import ModelSpec


_QUANT_DESCRIPTION = {
    "fp32": "none",
    "fp16": "fp16 weights (dequantized at load)",
    "dynamic-int8": "int8 per-channel weights, activations quantized at run time",
    "int8": "full integer: int8 per-channel weights, int8 activations, int8 I/O",
}


def export_tflite(spec: ModelSpec, precision: str, out: Path, calib: Dataset | None,
                  options: ExportOptions) -> Artifact:
    from edgecompress.exporters import _litert_convert as lc

    if spec.module is None:
        raise ExportError(f"tflite export of {spec.name}: needs a PyTorch model (got {spec.source}); "
                          "use --format onnx or openvino for ONNX inputs")
    if spec.extra.get("quantized"):
        raise ConfigError(f"tflite export of {spec.name}: QAT models for TFLite are not supported yet; "
                          "export the model before QAT with --format tflite:int8 (PTQ)")
    if len(spec.inputs) != 1:
        raise ExportError(f"tflite export of {spec.name}: {len(spec.inputs)} inputs; only single-input "
                          "models are supported (use --format onnx)")
    if precision == "int8" and (calib is None or len(calib) == 0):
        raise DataError("tflite int8: the calibration set is empty (pass --calib)")
    batches = calib.batches(16, desc="calibrating (litert PT2E)") if precision == "int8" and calib else None
    try:
        info = lc.convert(spec.module, spec.example_inputs(1)[0], precision, out, batches,
                          channels_last_io=True, allow_mixed=options.allow_mixed)
    except lc.FullIntegerError as e:
        raise ExportError(f"tflite int8 of {spec.name}: {e} (--allow-mixed accepts it, or use --format onnx)") from e
    except lc.UnsupportedModelError as e:
        raise ExportError(f"tflite export of {spec.name}: {e}") from e

    def tensor(d: dict[str, Any], layout: str) -> TensorInfo:
        return TensorInfo(d["name"], d["shape"], d["dtype"], layout if len(d["shape"]) == 4 else "",
                          d.get("scale"), d.get("zero_point"))

    details: dict[str, Any] = {
        "ops": info["ops"], "float_ops": info["float_ops"], "layout": info["layout"],
        "mixed": bool(info["float_ops"]), "quantization": _QUANT_DESCRIPTION[precision]}
    if precision == "int8":
        details["calibration"] = {"method": "minmax (PT2E, observer after fused ReLU/ReLU6)",
                                  "samples": len(calib) if calib else 0}
    return Artifact("tflite", precision, out, "litert", spec.name,
                    inputs=[tensor(d, info["layout"]) for d in info["inputs"]],
                    outputs=[tensor(d, "") for d in info["outputs"]], details=details)


register_format(Format(
    name="tflite", suffix=".tflite", precisions=("fp32", "fp16", "dynamic-int8", "int8"), runtime="litert",
    description="TFLite via litert-torch (no TensorFlow), NHWC; int8 = full integer with int8 I/O",
    export=export_tflite,
))
