"""ONNX: fp32 through the dynamo exporter (dynamic batch), int8 QDQ through ONNX Runtime.

int8 follows what measured best here (../shared/FIELD_NOTES.md): `quant_pre_process`, then
`quantize_static` with QDQ, per-channel int8 weights and *unsigned* int8 activations (U8S8 runs
~1.7x faster than S8S8 on this CPU; per-channel fixes the -7 pt of the per-tensor default).
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecompress.errors import ConfigError, DataError, ExportError
from edgecompress.exporters.base import (
    Artifact,
    ExportOptions,
    Format,
    TensorInfo,
    register_format,
)
from edgecompress.fileio import atomic_path

if TYPE_CHECKING:
    from edgecompress.data import Dataset
    from edgecompress.models import ModelSpec


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def export_fp32_onnx(spec: ModelSpec, out: Path, dynamic_batch: bool = True) -> None:
    """torch -> ONNX with the dynamo exporter; batch axis dynamic; weights inside the file."""
    import torch

    if spec.module is None:
        raise ExportError(f"{spec.name}: no PyTorch module to export")
    batch = torch.export.Dim("batch", min=1, max=4096) if dynamic_batch else None
    # The dynamo exporter needs an example batch >= 2 to keep the batch axis symbolic.
    args = spec.example_inputs(2 if dynamic_batch else 1)
    dyn = tuple({0: batch} for _ in args) if dynamic_batch else None
    names = [i.name for i in spec.inputs]
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf), torch.no_grad():
            prog = torch.onnx.export(
                spec.module.eval(), args, dynamo=True, dynamic_shapes=dyn,
                input_names=names, output_names=spec.output_names, external_data=False,
                optimize=True, verbose=False,
            )
            prog.save(str(out), external_data=False)
    except Exception as e:
        raise ExportError(f"onnx export of {spec.name} failed: {_first_line(e)} "
                          "(an op the exporter cannot lower? try a fixed --input-shape)") from e


class _Reader:
    """ORT CalibrationDataReader over a Dataset, in batches (bounded memory per step)."""

    def __init__(self, data: Dataset, input_name: str, batch: int) -> None:
        self._it = iter(data.batches(batch, desc="calibrating (onnxruntime)"))
        self._name = input_name

    def get_next(self) -> dict[str, Any] | None:
        x = next(self._it, None)
        if x is None:
            return None
        return dict(x) if isinstance(x, dict) else {self._name: x}


def quantize_onnx_int8(fp32_path: Path, out: Path, calib: Dataset, input_name: str,
                       options: ExportOptions) -> dict[str, Any]:
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    if options.calib_method not in methods:
        raise ConfigError(f"--calib-method {options.calib_method!r}: use one of {', '.join(methods)}")
    extra: dict[str, Any] = {
        # Percentile/Entropy keep every intermediate output by default (19 GB for 300 images of
        # EfficientNet-Lite0 here): fold them into histograms every few batches instead.
        "CalibMaxIntermediateOutputs": 4,
        "CalibPercentile": options.percentile,
    }
    extra.update(options.extra.get("onnx_quant", {}))
    with tempfile.TemporaryDirectory() as td:
        pre = Path(td) / "pre.onnx"
        logging.getLogger("root").setLevel(logging.ERROR)
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre), str(out), _Reader(calib, input_name, options.calib_batch),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=methods[options.calib_method], extra_options=extra,
        )
    return {"calibration": {"method": options.calib_method, "samples": len(calib),
                            "percentile": options.percentile if options.calib_method == "percentile" else None},
            "quantization": {"format": "QDQ", "weights": "int8 per-channel symmetric",
                             "activations": "uint8 per-tensor asymmetric"}}


def _io(path: Path) -> tuple[list[TensorInfo], list[TensorInfo]]:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}

    def info(v: Any) -> TensorInfo:
        t = v.type.tensor_type
        shape = [d.dim_value if d.dim_value > 0 else (d.dim_param or "?") for d in t.shape.dim]
        dtype = str(onnx.helper.tensor_dtype_to_np_dtype(t.elem_type))
        return TensorInfo(v.name, shape, dtype, "NCHW" if len(shape) == 4 else "")

    return ([info(v) for v in m.graph.input if v.name not in inits], [info(v) for v in m.graph.output])


def export_onnx(spec: ModelSpec, precision: str, out: Path, calib: Dataset | None,
                options: ExportOptions) -> Artifact:
    details: dict[str, Any] = {"opset": None, "dynamic_batch": options.dynamic_batch}
    with atomic_path(out) as tmp:
        if spec.onnx_path is not None and spec.module is None:
            src = spec.onnx_path  # an ONNX model in: export-only path
        else:
            src = tmp
            export_fp32_onnx(spec, tmp, options.dynamic_batch)
        if precision == "int8":
            if calib is None or len(calib) == 0:
                raise DataError("onnx int8: the calibration set is empty (pass --calib)")
            with tempfile.TemporaryDirectory() as td:
                fp32 = Path(td) / "fp32.onnx"
                fp32.write_bytes(Path(src).read_bytes())
                try:
                    details.update(quantize_onnx_int8(fp32, tmp, calib, spec.inputs[0].name, options))
                except (DataError, ConfigError):
                    raise
                except Exception as e:
                    raise ExportError(f"onnx int8 quantization of {spec.name} failed: {_first_line(e)}") from e
        elif src != tmp:
            tmp.write_bytes(Path(src).read_bytes())
        import onnx

        details["opset"] = next((o.version for o in onnx.load(str(tmp), load_external_data=False).opset_import
                                 if o.domain in ("", "ai.onnx")), None)
        inputs, outputs = _io(tmp)
    return Artifact("onnx", precision, out, "onnxruntime", spec.name, inputs=inputs, outputs=outputs,
                    details=details)


register_format(Format(
    name="onnx", suffix=".onnx", precisions=("fp32", "int8"), runtime="onnxruntime",
    description="ONNX (dynamo exporter, dynamic batch); int8 = ORT QDQ, per-channel, U8S8",
    export=export_onnx,
))
