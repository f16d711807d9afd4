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


def _culprit(e: BaseException) -> str:
    """The op torch.onnx could not lower, dug out of its multi-page message, else its first line."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    m = re.search(r"No ONNX function found for <OpOverload\(op='([^']+)'", text)
    if m:
        return f"unsupported op {m.group(1)}"
    m = re.search(r"(aten|prims)\.[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)?", text)
    return f"{_first_line(e)} ({m.group(0)})" if m else _first_line(e)


def export_fp32_onnx(spec: ModelSpec, out: Path, dynamic_batch: bool = True) -> None:
    """torch -> ONNX with the dynamo exporter; batch axis dynamic; weights inside the file."""
    import torch

    if spec.module is None:
        raise ExportError(f"{spec.name}: no PyTorch module to export")
    batch = torch.export.Dim("batch", min=1, max=4096) if dynamic_batch else None
    # The dynamo exporter needs an example batch >= 2 to keep the batch axis symbolic.
    args = spec.example_inputs(2 if dynamic_batch else 1)
    dyn = tuple({0: batch} for _ in args) if dynamic_batch else None
    if spec.extra.get("dynamic_seq"):
        # Text encoders (models/hf.py): axis 1 of every (batch, seq) input is a dynamic length too.
        seq = torch.export.Dim("seq", min=2, max=int(spec.extra.get("max_seq_len", 512)))
        dyn = tuple({**({0: batch} if dynamic_batch else {}), 1: seq} for _ in args)
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
        raise ExportError(f"onnx export of {spec.name} failed: {_culprit(e)} "
                          "(rewrite that op, or try a fixed --input-shape)") from e


class _Reader:
    """ORT CalibrationDataReader over a Dataset, in batches, with a progress bar."""

    def __init__(self, data: Dataset, input_name: str, batch: int) -> None:
        self._it = iter(data.batches(batch, desc="calibrating (onnxruntime)"))
        self._name = input_name
        self._peeked: dict[str, Any] | None = None

    def get_next(self) -> dict[str, Any] | None:
        if self._peeked is not None:
            item, self._peeked = self._peeked, None
            return item
        x = next(self._it, None)
        if x is None:
            return None
        return dict(x) if isinstance(x, dict) else {self._name: x}

    def has_next(self) -> bool:
        if self._peeked is None:
            self._peeked = self.get_next()
        return self._peeked is not None


class _Chunk:
    """At most `n` batches of a _Reader, all of one size, so one `collect_data` call sees a bounded
    slice (ORT stacks a chunk's outputs: a smaller last batch must start a chunk of its own)."""

    def __init__(self, reader: _Reader, n: int) -> None:
        self.reader, self.left, self.shape = reader, n, None

    def get_next(self) -> dict[str, Any] | None:
        if self.left <= 0 or not self.reader.has_next():
            return None
        shape = {k: getattr(v, "shape", None) for k, v in self.reader._peeked.items()}  # type: ignore[union-attr]
        if self.shape is not None and shape != self.shape:
            return None
        self.shape, self.left = shape, self.left - 1
        return self.reader.get_next()


@contextlib.contextmanager
def _bounded_histogram_calibration(chunk_batches: int) -> Any:
    """Make ORT's histogram calibrators (percentile, entropy) fold data in chunks.

    Why: in ORT 1.32 HistogramCalibrater.collect_data keeps every intermediate output of the whole
    calibration set before building histograms (~19 GB for 300 EfficientNet-Lite0 images here),
    and the `CalibMaxIntermediateOutputs` option is ignored by it (and, for MinMax, *discards*
    the collected ranges instead of merging them). The histogram collector merges across calls,
    so calling `collect_data` once per chunk gives the same histograms with bounded memory.
    """
    import importlib

    from onnxruntime.quantization.calibrate import HistogramCalibrater

    # The module, not the `quantize` function the package re-exports under the same name.
    q = importlib.import_module("onnxruntime.quantization.quantize")

    original = q.create_calibrator

    def create(*args: Any, **kwargs: Any) -> Any:
        cal = original(*args, **kwargs)
        if isinstance(cal, HistogramCalibrater):
            collect = cal.collect_data

            def chunked(reader: _Reader) -> None:
                while reader.has_next():
                    collect(_Chunk(reader, chunk_batches))

            cal.collect_data = chunked
        return cal

    q.create_calibrator = create
    try:
        yield
    finally:
        q.create_calibrator = original


def _leading_nodes(model_path: Path, n: int) -> list[str]:
    """Names of the first n Conv/Gemm/MatMul nodes in graph (topological) order."""
    import onnx

    if n <= 0:
        return []
    nodes = onnx.load(str(model_path), load_external_data=False).graph.node
    return [nd.name for nd in nodes if nd.op_type in ("Conv", "Gemm", "MatMul")][:n]


def quantize_onnx_int8(fp32_path: Path, out: Path, calib: Dataset, input_name: str,
                       options: ExportOptions, op_types: list[str] | None = None,
                       float_first: int = 0) -> dict[str, Any]:
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
        "CalibPercentile": options.percentile,
        # Activations are uint8 and mostly post-ReLU6: a symmetric range would waste half the levels.
        "CalibTensorRangeSymmetric": False,
    }
    extra.update(options.extra.get("onnx_quant", {}))
    with tempfile.TemporaryDirectory() as td:
        pre = Path(td) / "pre.onnx"
        logging.getLogger("root").setLevel(logging.ERROR)
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        # Why leave a stem in float: ORT's int8 conv kernels (MLAS) need input channels in multiples
        # of 4, so an RGB stem conv falls back to a generic im2col path, and a narrow depthwise conv
        # at full resolution runs slower in int8 than in fp32 NCHWc. On EfficientNet-Lite0 the
        # int8 stem + first depthwise conv took 0.75 ms vs 0.45 ms in fp32 (per-node profile,
        # benchmarks/RESULTS-spine.md); keeping the first 3 convs float moves the quantization
        # boundary to a 16-channel tensor and makes the whole model ~7 % faster.
        excluded = _leading_nodes(pre, float_first)
        # Histograms are updated every ~16 samples: ~1.4 GB peak for EfficientNet-Lite0 at 224 px.
        with _bounded_histogram_calibration(chunk_batches=max(1, 16 // options.calib_batch)):
            quantize_static(
                str(pre), str(out), _Reader(calib, input_name, options.calib_batch),
                quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=methods[options.calib_method], extra_options=extra,
                op_types_to_quantize=op_types, nodes_to_exclude=excluded,
            )
    return {"calibration": {"method": options.calib_method, "samples": len(calib),
                            "percentile": options.percentile if options.calib_method == "percentile" else None},
            "quantization": {"format": "QDQ", "weights": "int8 per-channel symmetric",
                             "activations": "uint8 per-tensor asymmetric", "float_nodes": excluded}}


def quantize_onnx_dynamic(fp32_path: Path, out: Path, options: ExportOptions) -> dict[str, Any]:
    """ORT `quantize_dynamic`: int8 weights (per-channel unless extra['onnx_dyn_per_channel'] is
    False), uint8 activations with ranges computed per call; MatMul/Gemm/Attention, and Gather
    (the word-embedding table is half of a small encoder's bytes)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # Per-channel: MiniLM embedding cosine vs fp32 0.993 mean (0.969 per-tensor) and faster here.
    per_channel = bool(options.extra.get("onnx_dyn_per_channel", True))
    with tempfile.TemporaryDirectory() as td:
        pre = Path(td) / "pre.onnx"
        logging.getLogger("root").setLevel(logging.ERROR)
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        quantize_dynamic(str(pre), str(out), weight_type=QuantType.QInt8, per_channel=per_channel,
                         op_types_to_quantize=["MatMul", "Gemm", "Attention", "Gather"])
    return {"quantization": {"format": "dynamic (MatMulInteger)",
                             "weights": f"int8 {'per-channel' if per_channel else 'per-tensor'}",
                             "activations": "uint8, ranges computed at run time"}}


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
    # [issue #4] An already-quantized spec (QAT pass: spec.extra["quantized"] = "qat") carries its
    # own Q/DQ ops: int8 is the dynamo export of that graph (real QDQ int8), with no ORT PTQ on top.
    prequant = spec.extra.get("quantized") if spec.module is not None else None
    if prequant and precision != "int8":
        raise ConfigError(f"onnx {precision}: model {spec.name} is already int8 ({prequant}); "
                          "export it as int8")
    if prequant:
        details["quantization"] = {"source": prequant, "format": "QDQ (PT2E convert_pt2e)",
                                   "calibration": "none (ranges learned in QAT)"}
    with atomic_path(out) as tmp:
        if spec.onnx_path is not None and spec.module is None:
            src = spec.onnx_path  # an ONNX model in: export-only path
        else:
            src = tmp
            export_fp32_onnx(spec, tmp, options.dynamic_batch)
        if precision == "int8-dynamic":
            # Weights int8, activations quantized at run time: no calibration (transformers).
            with tempfile.TemporaryDirectory() as td:
                fp32 = Path(td) / "fp32.onnx"
                fp32.write_bytes(Path(src).read_bytes())
                try:
                    details.update(quantize_onnx_dynamic(fp32, tmp, options))
                except Exception as e:
                    raise ExportError(f"onnx int8-dynamic quantization of {spec.name} failed: "
                                      f"{_first_line(e)}") from e
        elif precision == "int8" and not prequant:  # [issue #4] QAT graphs skip ORT PTQ
            if calib is None or len(calib) == 0:
                raise DataError("onnx int8: the calibration set is empty (pass --calib)")
            with tempfile.TemporaryDirectory() as td:
                fp32 = Path(td) / "fp32.onnx"
                fp32.write_bytes(Path(src).read_bytes())
                try:
                    # [issue #6] Encoders: quantize MatMul/Gemm/Gather only. Quantizing the
                    # attention-mask Add (range ~ -3e38..0) wrecked MiniLM (cosine 0.35 vs fp32).
                    ops = (["MatMul", "Gemm", "Gather"]
                           if spec.task in ("embedding", "sequence-classification") else None)
                    first = options.float_first
                    if first is None:
                        first = int(spec.extra.get("onnx_int8_float_first", 0))
                    if first < 0:
                        raise ConfigError(f"float_first {first}: must be >= 0")
                    details.update(quantize_onnx_int8(fp32, tmp, calib, spec.inputs[0].name, options,
                                                      ops, first))
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
    name="onnx", suffix=".onnx", precisions=("fp32", "int8", "int8-dynamic"), runtime="onnxruntime",
    description="ONNX (dynamo exporter, dynamic batch); int8 = ORT QDQ, per-channel, U8S8; "
                "int8-dynamic = ORT quantize_dynamic (no calibration)",
    export=export_onnx,
))
