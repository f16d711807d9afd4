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

from edgecompress.errors import ConfigError, DataError, ExportError, first_line, opt, use_format
from edgecompress.exporters.base import (
    Artifact,
    ExportOptions,
    Format,
    TensorInfo,
    check_file_io,
    image_layout,
    register_format,
)
from edgecompress.fileio import atomic_path
from edgecompress.models.spec import complete_output_names, first_output, tensors_only
from edgecompress.passes._qat_backends import check_export
from edgecompress.targets.bench import decline_openvino_telemetry

if TYPE_CHECKING:
    from edgecompress.data import Dataset
    from edgecompress.models import ModelSpec


def _conversion_cause(e: BaseException) -> tuple[str, str]:
    """(cause, hint) of an ov.convert_model failure. Its first line is always "Check 'false' failed
    at .../unconverted_ops_report.cpp" (it names nothing); the op it has no rule for, or the node
    that failed and why (e.g. a MatMul whose dims do not match: a wrong --input-shape), is further
    down its OpConversionFailure text."""
    text = str(e)
    m = re.search(r"No conversion rule found for operations?: *(.+)", text)
    if m:
        return (f"no conversion rule for {m.group(1).strip()[:160]}",
                f"an op OpenVINO cannot convert; try {use_format('onnx')}")
    lines = [ln.strip() for ln in text.splitlines()]
    for i, ln in enumerate(lines):
        m = re.search(r"Conversion failed for (\S+)|Exception happened during conversion of operation (\S+)", ln)
        if not m:
            continue
        # the reason: the first line after it that is neither a "While validating ..." / "Check
        # '...' failed at ...:" frame (both end in ':') nor the summary
        why = next((r for r in lines[i + 1:] if r and not r.endswith(":") and not r.startswith(("--", "Summary"))),
                   "")
        node = m.group(1) or m.group(2)
        shape = re.search(r"dimension|shape|rank", why, re.IGNORECASE)
        return (f"conversion failed for {node}{': ' + why[:200] if why else ''}",
                f"check {opt('--input-shape', 'input_shape')}" if shape
                else f"an op OpenVINO cannot convert? try {use_format('onnx')}")
    return first_line(e), f"an op OpenVINO cannot convert? try {use_format('onnx')}"


# What torch.jit.trace warns when the model's code turns a tensor into a Python value
# ("Converting a tensor to a Python boolean / float / integer / index / number / list ..."): the
# value is frozen into the trace, as is whatever the code decides from it.
_PYTHON_VALUE = re.compile(r"Converting a tensor to a Python (\w+)")


def _refuse_frozen_branches(spec: ModelSpec, model: Any, caught: list[warnings.WarningMessage]) -> None:
    """ov.convert_model traces with TorchScript: an `if` on tensor values (or on a float() /
    int() / .item() of one) keeps the branch the example input took, silently (the ONNX and
    TFLite exporters refuse such a model). Tracing warns about it, but as much about harmless
    shape checks (`if x.shape[-1] != 8: raise`, `float(x.shape[-1]) ** -0.5`), so
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
        if issubclass(w.category, torch.jit.TracerWarning) and _PYTHON_VALUE.search(str(w.message)) and mine:
            suspects.append(w)  # an `if`, or float()/int()/.item() (`2.0 if float(x.mean()) > 0 else -1.0`)
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
        want = first_output(want).float().numpy()  # the IR's first output
        got = np.asarray(compiled([x.numpy() for x in xs])[0])
        if got.shape != want.shape or not np.allclose(got, want, rtol=1e-3, atol=1e-3 * (np.abs(want).max() + 1)):
            w = suspects[0]
            m = _PYTHON_VALUE.search(str(w.message))
            kind = m.group(1) if m else "boolean"
            what = ("branches on tensor values" if kind == "boolean" else
                    f"turns a tensor into a Python {kind} (float() / int() / .item())")
            raise ExportError(
                f"openvino conversion of {spec.name}: the model {what} at {w.filename}:{w.lineno}, and the "
                "traced IR kept the example's value (it differs from PyTorch on other inputs); keep it "
                "a tensor (torch.where for a branch), or export another format")


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
                example = spec.example_inputs(1)
                model = ov.convert_model(  # a None among its outputs: converted without it (`tensors_only`)
                    tensors_only(spec.module.eval(), example), example_input=example,
                    input=[ov.PartialShape(s) for s in shapes]
                )
            _refuse_frozen_branches(spec, model, caught)
        elif spec.onnx_path is not None:
            model = ov.convert_model(str(spec.onnx_path), input=[ov.PartialShape(s) for s in shapes])
        else:
            raise ExportError(f"{spec.name}: nothing to convert")
    except ExportError:
        raise
    except Exception as e:
        cause, hint = _conversion_cause(e)
        raise ExportError(f"openvino conversion of {spec.name} failed: {cause} ({hint})") from e
    # Every output gets the spec's name, and only that one: a PyTorch model returning a tuple gives
    # ports with none (get_any_name(), for the I/O contract and NNCF, raises on a nameless port),
    # and the ONNX and TFLite files carry the same names. The ports come in the order of the
    # flattened outputs (a dict's in key order), as the names do.
    # (An .onnx in keeps its file's names, whatever characters they hold: not checked.)
    names = complete_output_names(spec.output_names, len(model.outputs), f"openvino export of {spec.name}",
                                  check=spec.module is not None)
    for port, name in zip(model.outputs, names, strict=True):
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
            disable_bias_correction=not options.bias_correction,
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
    _refuse_nothing_to_quantize(model, spec, float_layers, first)
    chained = [n for n in _matmul_after_matmul(model) if n not in float_layers]
    if float_layers or chained:
        kwargs["ignored_scope"] = nncf.IgnoredScope(names=float_layers + chained)
    if spec.is_text:
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
        # [issue #6] The full bias correction hurt MiniLM here (embedding cosine vs fp32 0.90
        # mean, 0.995 with the fast one): encoders default to the fast variant.
        kwargs["fast_bias_correction"] = options.extra.get("ov_fast_bias_correction", True)
    from edgecompress.progress import bar

    names = [i.get_any_name() for i in model.inputs]

    def transform(x: Any) -> Any:
        return {n: x[n] for n in names} if isinstance(x, dict) else x

    calib_bar = bar(total=len(batches), desc="calibrating (nncf)", leave=False, disable=not options.progress)
    ds = nncf.Dataset(_Counted(batches, calib_bar), transform)
    try:
        with _nncf_progress(options.progress):
            qmodel = nncf.quantize(model, ds, **kwargs)
    except Exception as e:
        raise ExportError(f"openvino int8 quantization of {spec.name} failed: {first_line(e)}") from e
    finally:
        calib_bar.close()  # (if NNCF never iterated the samples)
    if not any(op.get_type_name() == "FakeQuantize" for op in qmodel.get_ordered_ops()):
        # NNCF placed no quantizer (it found nothing it quantizes): the IR would be float.
        raise ExportError(f"openvino int8 of {spec.name}: nothing to quantize: NNCF placed no FakeQuantize, "
                          "the IR would be float; export fp32")
    return qmodel, {
        "calibration": {"method": f"nncf-{estimator.lower()}" + ("+bias-correction" if options.bias_correction else ""),
                        "samples": len(batches)},
        "quantization": {
            "format": "FakeQuantize (NNCF)",
            "tool": "nncf",
            "preset": "performance",
            "fast_bias_correction": kwargs["fast_bias_correction"],
            "overflow_fix": overflow,
            **({"float_nodes": [{"node": n, "why": "float_first"} for n in float_layers]
                + [{"node": n, "why": _CHAINED_WHY} for n in chained]} if float_layers or chained else {}),
        },
    }


# The ops NNCF's int8 quantizes the weights of (float_first counts the first three kinds).
_WEIGHTED_OPS = ("Convolution", "GroupConvolution", "MatMul", "ConvolutionBackpropData",
                 "GroupConvolutionBackpropData")


def _refuse_nothing_to_quantize(model: Any, spec: ModelSpec, float_layers: list[str], first: int) -> None:
    """An int8 IR with no int8 layer is a float IR labelled int8 (NNCF accepts such a model and
    places no quantizer; --float-first can cover every layer): refuse it before calibrating."""
    weighted = [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() in _WEIGHTED_OPS]
    if not weighted:
        raise ExportError(f"openvino int8 of {spec.name}: nothing to quantize: no Conv/MatMul/Gemm layer, the IR "
                          "would be float; export fp32")
    if not set(weighted) - set(float_layers):  # the user's setting, not the model's limit: exit 2
        raise ConfigError(f"openvino int8 of {spec.name}: nothing to quantize: "
                          f"{opt('--float-first', 'float_first', first)} leaves all {len(weighted)} "
                          "Conv/MatMul/Gemm layers float, the IR would be float; lower it, or export fp32")


class _Counted:
    """The calibration samples for nncf.Dataset, counted on `bar` as NNCF takes them. NNCF reads
    them through islice(subset_size), which stops right after handing out the last one, before a
    tqdm-wrapped iterable would count it: the bar (and, in a log, its completion line) ended at
    1346/1347. Re-iterable like the tqdm it replaces: passes after the first are not counted."""

    def __init__(self, items: list[Any], bar: Any) -> None:
        self._items = items
        self._bar = bar

    def __len__(self) -> int:  # NNCF's Dataset.get_length
        return len(self._items)

    def __iter__(self) -> Any:
        try:
            for item in self._items:
                self._bar.update(1)  # a no-op once the bar is closed
                yield item
        finally:  # also when NNCF's islice drops this generator after the last sample
            self._bar.close()


@contextlib.contextmanager
def _nncf_progress(enabled: bool) -> Any:
    """NNCF draws its own rich progress bars ("Statistics collection", "Applying Bias correction")
    whatever the caller asked; with progress off (--no-progress) make every `track` it builds
    meanwhile a disabled one. Its modules import the class by name, so the class itself is
    patched, and restored after. With progress on and stderr a file or pipe they need nothing:
    rich redraws only on a terminal and otherwise prints each bar once, finished, as a line of
    its own (edgecompress.progress's rule; tests/test_progress.py checks the export's stderr)."""
    if enabled:
        yield
        return
    from nncf.common.logging import track_progress

    cls: Any = track_progress.track
    init = cls.__init__

    def quiet_init(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **{**kwargs, "disable": True})

    cls.__init__ = quiet_init
    try:
        yield
    finally:
        cls.__init__ = init


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


_CHAINED_WHY = "fed by a MatMul (OpenVINO's CPU plugin computes it wrong in int8 at a static batch)"


def _matmul_after_matmul(model: Any) -> list[str]:
    """MatMuls fed straight by another MatMul: the lowrank pass's Linear(in, r, no bias) +
    Linear(r, out). With both int8, OpenVINO's CPU plugin (2025) computes the second one wrong
    once the IR is reshaped to a static batch of 1 or 2 (outputs ~1e9, 9 % agreement on
    digits-cnn; right at a dynamic batch or at 64, and ORT is right on the same QDQ file). Left
    float, it runs right; it is r x out MACs, a few percent of the pair. (The QAT route does the
    same in passes/_x86_qat_quantizer.py.)"""
    return [op.get_friendly_name() for op in model.get_ordered_ops()
            if op.get_type_name() == "MatMul"
            and op.input_value(0).get_node().get_type_name() == "MatMul"]


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
            raise DataError(f"openvino int8: the calibration set is empty (pass {opt('--calib', 'calib')})")
        model, more = quantize(model, calib, spec, options)
        details.update(more)
    # Write both IR files under temporary names, then rename .bin before .xml: the .xml is the
    # commit point, and read_model finds the .bin by the .xml's name.
    stable_names(model, spec.name)
    floats = details.get("quantization", {}).get("float_nodes")
    if floats:  # the names the saved IR gives those layers
        lead = _leading_layers(model, sum(f["why"] == "float_first" for f in floats))
        chain = [n for n in _matmul_after_matmul(model) if n not in lead] \
            if any(f["why"] == _CHAINED_WHY for f in floats) else []
        details["quantization"]["float_nodes"] = [{"node": n, "why": "float_first"} for n in lead] + [
            {"node": n, "why": _CHAINED_WHY} for n in chain]
    _save_ir(model, out, compress_to_fp16=(precision == "fp16"))
    inputs, outputs = _io(out)  # the contract as the saved file states it (NNCF / fp16 rewrite the graph)
    if spec.module is not None:
        try:
            check_file_io("openvino", precision, spec, inputs, outputs)
        except ExportError:
            for p in (out, out.with_suffix(".bin")):  # a failed export leaves no file
                p.unlink(missing_ok=True)
            raise
    return Artifact("openvino", precision, out, "openvino", spec.name, inputs=inputs, outputs=outputs,
                    details=details)


def _port_info(port: Any, fallback: str = "") -> TensorInfo:
    shape = [d.get_length() if d.is_static else "batch" for d in port.get_partial_shape()]
    # an IR from elsewhere may have nameless ports: get_any_name() raises on those
    name = port.get_any_name() if port.get_names() else fallback
    return TensorInfo(name, shape, port.get_element_type().to_dtype().name, image_layout(shape))


def _io(path: Path) -> tuple[list[TensorInfo], list[TensorInfo]]:
    decline_openvino_telemetry()
    import openvino as ov

    model = ov.Core().read_model(str(path))
    return _ports_info(model.inputs, "input"), _ports_info(model.outputs, "output")


def _ports_info(ports: Any, kind: str) -> list[TensorInfo]:
    return [_port_info(p, f"{kind}_{k}") for k, p in enumerate(ports)]


def _save_ir(model: Any, out: Path, compress_to_fp16: bool) -> None:
    """Write the IR pair: both files to temp names (atomic_path), the .bin renamed first, and no
    half pair left behind if the .xml cannot follow (an old .xml beside a new .bin loads garbage)."""
    import openvino as ov

    out_bin = out.with_suffix(".bin")
    bin_moved = False
    try:
        with atomic_path(out) as tmp_xml:
            tmp_bin = tmp_xml.with_suffix(".bin")  # ov.save_model names the .bin after the .xml
            try:
                ov.save_model(model, str(tmp_xml), compress_to_fp16=compress_to_fp16)
                os.replace(tmp_bin, out_bin)
                bin_moved = True
            except OSError as e:
                from edgecompress.errors import OutputError

                raise OutputError(f"{out}: cannot write the IR ({e.strerror or e})") from e
            finally:
                tmp_bin.unlink(missing_ok=True)
    except BaseException:
        if bin_moved:  # [issue #7] the new .bin no longer matches any .xml
            for p in (out, out_bin):
                p.unlink(missing_ok=True)
        raise


def _read_precision(path: Path) -> str:
    """int8 (NNCF leaves FakeQuantize layers or i8 weight constants), fp16 (f16 constants) or fp32."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if 'type="FakeQuantize"' in text or 'element_type="i8"' in text:
        return "int8"
    if re.search(r'<layer[^>]*type="Const"[^>]*>\s*<data[^>]*element_type="f16"', text):
        return "fp16"
    return "fp32"


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
        read_precision=_read_precision,
        pins_fp32=True,
        reference_rank=1,
        option_keys=("ov_fast_bias_correction", "ov_overflow_fix"),
    )
)
