"""OpenVINO IR: fp32, fp16 (compressed weights) and int8 (NNCF post-training quantization).

`ov.convert_model` gets the PyTorch module with the input shape pinned except for the batch (an
int8 model with every dim dynamic failed to compile here), then `nncf.quantize` on the IR.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecompress.errors import ConfigError, DataError, ExportError
from edgecompress.exporters.base import Artifact, ExportOptions, Format, TensorInfo, register_format
from edgecompress.fileio import TEMP_PREFIX
from edgecompress.passes._qat_backends import check_export
from edgecompress.targets.bench import decline_openvino_telemetry

if TYPE_CHECKING:
    from edgecompress.data import Dataset
    from edgecompress.models import ModelSpec


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def _refuse_frozen_branches(spec: ModelSpec, model: Any, caught: list[warnings.WarningMessage]) -> None:
    """ov.convert_model traces with TorchScript: an `if` on tensor values keeps the branch the
    example input took, silently (the ONNX and TFLite exporters refuse such a model). Tracing
    warns about it, but as much about harmless shape checks (`if x.shape[-1] != 8: raise`), so
    the warning alone decides nothing: when the model's own code (not torch's or transformers')
    warned, the IR is run in f32 on inputs unlike the example and compared with PyTorch."""
    import numpy as np
    import torch

    libraries = [os.path.dirname(torch.__file__) + os.sep]
    with contextlib.suppress(ImportError):
        import transformers

        libraries.append(os.path.dirname(transformers.__file__) + os.sep)
    seen, suspects = set(), []
    for w in caught:
        key = (str(w.message), w.filename, w.lineno)
        if key in seen:
            continue  # "always" repeats one warning per traced call
        seen.add(key)
        mine = not any(os.path.abspath(w.filename).startswith(lib) for lib in libraries)
        if issubclass(w.category, torch.jit.TracerWarning) and "Python boolean" in str(w.message) and mine:
            suspects.append(w)
        elif mine:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if not suspects or spec.module is None or any(not i.dtype.startswith("float") for i in spec.inputs):
        return  # (the caller converted spec.module: it is there)
    import openvino as ov

    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    example = spec.example_inputs(1)
    for xs in ([-x for x in example], [3 * x + 1 for x in example]):  # other signs, other ranges
        with torch.no_grad():
            want = spec.module(*xs)
        want = (want[0] if isinstance(want, tuple | list) else want).float().numpy()
        got = np.asarray(compiled([x.numpy() for x in xs])[0])
        if got.shape != want.shape or not np.allclose(got, want, rtol=1e-3, atol=1e-3 * (np.abs(want).max() + 1)):
            w = suspects[0]
            raise ExportError(
                f"openvino conversion of {spec.name}: the model branches on tensor values at "
                f"{w.filename}:{w.lineno}, and the traced IR kept the example's branch (it differs "
                "from PyTorch on other inputs); write it with torch.where, or export another format")


def convert(spec: ModelSpec, dynamic_batch: bool = True) -> Any:
    decline_openvino_telemetry()
    import openvino as ov

    shapes = [[-1 if dynamic_batch else 1, *i.shape[1:]] for i in spec.inputs]
    if spec.extra.get("dynamic_seq") and not spec.extra.get("ov_pin_seq"):
        # Text encoders (models/hf.py): a pinned length gets baked into position/token-type
        # expands, so the IR could not be reshaped to another length; keep axis 1 dynamic.
        shapes = [[s[0], -1, *s[2:]] for s in shapes]
    try:
        if spec.module is not None:
            import torch

            with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", torch.jit.TracerWarning)
                model = ov.convert_model(
                    spec.module.eval(), example_input=spec.example_inputs(1), input=[ov.PartialShape(s) for s in shapes]
                )
            _refuse_frozen_branches(spec, model, caught)
        elif spec.onnx_path is not None:
            model = ov.convert_model(str(spec.onnx_path), input=[ov.PartialShape(s) for s in shapes])
        else:
            raise ExportError(f"{spec.name}: nothing to convert")
    except ExportError:
        raise
    except Exception as e:
        raise ExportError(
            f"openvino conversion of {spec.name} failed: {_first_line(e)} "
            "(an op OpenVINO cannot convert? try --format onnx)"
        ) from e
    for port, name in zip(model.outputs, spec.output_names, strict=False):
        port.get_tensor().set_names({name})
    for port, i in zip(model.inputs, spec.inputs, strict=False):
        port.get_tensor().set_names({i.name})
    return model


# --calib-method -> NNCF's activation range estimator. The histogram search is the default: on
# EfficientNet-Lite0 it lifted top-1 agreement with fp32 from 97.6 % (min/max, NNCF's default)
# to 98.3 % (benchmarks/RESULTS-spine.md).
_RANGE_ESTIMATORS = {"minmax": "MINMAX", "percentile": "HISTOGRAM", "entropy": "HISTOGRAM"}


def quantize(model: Any, calib: Dataset, spec: ModelSpec, options: ExportOptions) -> tuple[Any, dict]:
    decline_openvino_telemetry()
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    batches = list(calib.batches(1))  # NNCF iterates samples itself; subset_size = all of them
    estimator = _RANGE_ESTIMATORS[options.calib_method]  # ExportOptions checked the name
    overflow = overflow_fix(options)
    kwargs: dict[str, Any] = {
        "subset_size": len(batches),
        # The full bias correction costs a little export time and buys agreement with fp32.
        "fast_bias_correction": options.extra.get("ov_fast_bias_correction", False),
        "preset": nncf.QuantizationPreset.PERFORMANCE,
        "advanced_parameters": AdvancedQuantizationParameters(
            activations_range_estimator_params=getattr(RangeEstimatorParametersSet, estimator),
            overflow_fix=OverflowFix(overflow),
        ),
    }
    # float_first: the caller's, else the model's own (ModelSpec.extra["openvino_int8_float_first"]),
    # else 0. On EfficientNet-Lite0 the first 3 convs left float lift top-1 agreement with fp32 from
    # 98.0 to 98.4 % at 224 px and from 96.7 to 98.4 % at 192 px (resolution pass), but cost 5-20 %
    # of int8 speed where float layers run fp32 (no bf16), so the zoo leaves it at 0
    # (benchmarks/RESULTS-spine.md, RESULTS-compress.md).
    first = options.float_first if options.float_first is not None else \
        int(spec.extra.get("openvino_int8_float_first", 0))
    float_layers = _leading_layers(model, first)
    if float_layers:
        kwargs["ignored_scope"] = nncf.IgnoredScope(names=float_layers)
    if spec.task in ("embedding", "sequence-classification"):
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
        # [issue #6] The full bias correction hurt MiniLM here (embedding cosine vs fp32 0.90
        # mean, 0.995 with the fast one): encoders default to the fast variant.
        kwargs["fast_bias_correction"] = options.extra.get("ov_fast_bias_correction", True)
    from tqdm.auto import tqdm

    names = [i.get_any_name() for i in model.inputs]

    def transform(x: Any) -> Any:
        return {n: x[n] for n in names} if isinstance(x, dict) else x

    ds = nncf.Dataset(tqdm(batches, desc="calibrating (nncf)", leave=False, disable=not options.progress), transform)
    try:
        qmodel = nncf.quantize(model, ds, **kwargs)
    except Exception as e:
        raise ExportError(f"openvino int8 quantization of {spec.name} failed: {_first_line(e)}") from e
    return qmodel, {
        "calibration": {"method": f"nncf-{estimator.lower()}+bias-correction", "samples": len(batches)},
        "quantization": {
            "format": "FakeQuantize (NNCF)",
            "tool": "nncf",
            "preset": "performance",
            "fast_bias_correction": kwargs["fast_bias_correction"],
            "overflow_fix": overflow,
            **({"float_nodes": [{"node": n, "why": "float_first"} for n in float_layers]} if float_layers else {}),
        },
    }


OVERFLOW_FIXES = ("disable", "first_layer_only", "enable")


def overflow_fix(options: ExportOptions) -> str:
    """NNCF's overflow fix for this export: `options.extra["ov_overflow_fix"]`, else "disable" where
    the CPU running the export has VNNI and NNCF's own default ("first_layer_only") elsewhere.

    Why: NNCF keeps the first layer's weights to 7 bits because x86 int8 kernels without VNNI
    (pmaddubsw) saturate 16-bit sums of pairs. With VNNI there is nothing to fix, and on
    EfficientNet-Lite0 the 7-bit stem cost 23 % more logit error on ImageNet and 83 vs 96 %
    agreement with fp32 on the photo-crop fallback set (benchmarks/RESULTS-spine.md). An IR made
    this way for a CPU without VNNI (Intel before 2019, AMD before Zen 4) should be re-exported
    with `ExportOptions(extra={"ov_overflow_fix": "first_layer_only"})`: the report says which.
    """
    from edgecompress.report.model import cpu_flags

    chosen = options.extra.get("ov_overflow_fix")
    if chosen is None:
        return "disable" if cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"} else "first_layer_only"
    if chosen not in OVERFLOW_FIXES:
        raise ConfigError(f"ov_overflow_fix {chosen!r}: one of {', '.join(OVERFLOW_FIXES)}")
    return str(chosen)


def _leading_layers(model: Any, n: int) -> list[str]:
    """Names of the first `n` convolution / MatMul ops in graph order (as the ONNX exporter's
    float_first counts Conv / Gemm / MatMul nodes)."""
    if n < 0:
        raise ConfigError(f"float_first {n}: must be >= 0")
    kinds = ("Convolution", "GroupConvolution", "MatMul")
    return [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() in kinds][:n]


def _convert_prequantized(spec: ModelSpec, precision: str, options: ExportOptions) -> Any:
    """[issue #4] QAT spec -> QDQ ONNX (temporary file) -> ov.convert_model; int8 only."""
    import tempfile

    from edgecompress.exporters.onnx import export_fp32_onnx

    if precision != "int8":
        raise ConfigError(
            f"openvino {precision}: model {spec.name} is already int8 ({spec.extra['quantized']}); export it as int8"
        )
    with tempfile.TemporaryDirectory() as td:
        qdq = Path(td) / "qdq.onnx"
        export_fp32_onnx(spec, qdq, options.dynamic_batch)  # the graph's own Q/DQ ops come along
        return convert(spec.replace(module=None, onnx_path=qdq), options.dynamic_batch)


# An op name OpenVINO made up: "<Type>_<id>" as a whole path segment ("Multiply_3611",
# "Constant_109610/fq_weights_1", "Result_560"), <id> from a process-wide counter.
_AUTO_NAME = re.compile(r"(?:^|(?<=/))([A-Z][A-Za-z0-9]*)_(\d+)(?=/|$)")


def stable_names(model: Any, name: str) -> None:
    """[issue #7] Make the IR's names independent of what the process converted before.

    OpenVINO names the nodes it creates (BN folding, NNCF quantizers, Results, the model itself:
    "Model0") from a process-wide counter, so the same model exported twice in one process gave a
    different .xml (same .bin). Renumber those ids by first appearance in topological order and
    name the model after the spec. Names taken from the framework ("__module.stem.1/aten::...")
    and tensor names (the inputs/outputs users address) are left as they are. Nodes that
    `save_model(compress_to_fp16=True)` adds are named "<friendly name>_compressed", so fp16 is
    covered too.
    """
    model.set_friendly_name(name)
    ids: dict[str, int] = {}

    def renumber(m: re.Match) -> str:
        return f"{m.group(1)}_{ids.setdefault(m.group(2), len(ids))}"

    for op in model.get_ordered_ops():
        old = op.get_friendly_name()
        new = _AUTO_NAME.sub(renumber, old)
        if new != old:
            op.set_friendly_name(new)


def export_openvino(
    spec: ModelSpec, precision: str, out: Path, calib: Dataset | None, options: ExportOptions
) -> Artifact:
    decline_openvino_telemetry()
    import openvino as ov

    details: dict[str, Any] = {"ir_version": ov.get_version()}
    prequant = spec.extra.get("quantized") if spec.module is not None else None
    # [issue #4] a litert-backend QAT graph exported to ONNX keeps fp32 weights behind Q->Clip->DQ
    # (the narrow [-127, 127] weight range): not real int8, so it is refused with the backend to use.
    check_export(spec, "openvino")
    if prequant:
        # [issue #4] An already-quantized spec (QAT): export its QDQ ONNX and convert that, so
        # OpenVINO runs the learned int8 ranges; NNCF PTQ is skipped.
        model = _convert_prequantized(spec, precision, options)
        details["quantization"] = {"source": prequant, "via": "QDQ ONNX -> ov.convert_model"}
    else:
        model = convert(spec, options.dynamic_batch)
    if precision == "int8" and not prequant:
        if calib is None or len(calib) == 0:
            raise DataError("openvino int8: the calibration set is empty (pass --calib, or calib= from Python)")
        model, more = quantize(model, calib, spec, options)
        details.update(more)
    # Write both IR files under temporary names, then rename .bin before .xml: the .xml is the
    # commit point, and read_model finds the .bin by the .xml's name.
    stable_names(model, spec.name)
    floats = details.get("quantization", {}).get("float_nodes")
    if floats:  # the names the saved IR gives those layers
        details["quantization"]["float_nodes"] = [
            {"node": n, "why": "float_first"} for n in _leading_layers(model, len(floats))]
    tmp_xml = out.with_name(f"{TEMP_PREFIX}{os.getpid()}-{out.name}")
    tmp_bin = tmp_xml.with_suffix(".bin")
    bin_moved = False
    try:
        ov.save_model(model, str(tmp_xml), compress_to_fp16=(precision == "fp16"))
        os.replace(tmp_bin, out.with_suffix(".bin"))
        bin_moved = True
        os.replace(tmp_xml, out)
    except OSError as e:
        from edgecompress.errors import OutputError

        if bin_moved:  # [issue #7] the new .bin no longer matches any .xml: leave no half pair
            for p in (out, out.with_suffix(".bin")):
                p.unlink(missing_ok=True)
        raise OutputError(f"{out}: cannot write the IR ({e.strerror})") from e
    finally:
        for p in (tmp_xml, tmp_bin):
            p.unlink(missing_ok=True)

    return Artifact(
        "openvino",
        precision,
        out,
        "openvino",
        spec.name,
        inputs=[_port_info(p) for p in model.inputs],
        outputs=[_port_info(p) for p in model.outputs],
        details=details,
    )


def _port_info(port: Any) -> TensorInfo:
    shape = [d.get_length() if d.is_static else "batch" for d in port.get_partial_shape()]
    return TensorInfo(
        port.get_any_name(), shape, port.get_element_type().to_dtype().name, "NCHW" if len(shape) == 4 else ""
    )


def _io(path: Path) -> tuple[list[TensorInfo], list[TensorInfo]]:
    decline_openvino_telemetry()
    import openvino as ov

    model = ov.Core().read_model(str(path))
    return [_port_info(p) for p in model.inputs], [_port_info(p) for p in model.outputs]


register_format(
    Format(
        name="openvino",
        suffix=".xml",
        precisions=("fp32", "fp16", "int8"),
        runtime="openvino",
        description="OpenVINO IR (.xml + .bin); fp16 = compressed weights; int8 = NNCF PTQ",
        export=export_openvino,
        extra_files=(".bin",),
        read_io=_io,
    )
)
