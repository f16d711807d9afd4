"""TFLite: fp32, fp16 weights, dynamic-range int8 and full-integer int8, via litert-torch.

PyTorch -> .tflite with no TensorFlow (litert-torch PT2E), run with LiteRT (ai-edge-litert +
XNNPACK). Image models take NHWC input; full-int8 files have int8 input and output tensors whose
scale / zero point are recorded in the artifact's I/O contract. A full-int8 export fails, naming
the ops, if anything but the I/O stays float, unless `--allow-mixed`. The conversion engine (and
why it extends litert-torch's quantizer) is in `_litert_convert.py`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecompress.errors import ConfigError, DataError, ExportError, opt, say, use_format
from edgecompress.exporters.base import (
    Artifact,
    ExportOptions,
    Format,
    TensorInfo,
    check_file_io,
    image_layout,
    register_format,
)
from edgecompress.models.spec import complete_output_names, tensors_only
from edgecompress.passes._qat_backends import check_export

if TYPE_CHECKING:
    from edgecompress.data import Dataset
    from edgecompress.models import ModelSpec


_QUANT_DESCRIPTION = {
    "fp32": "none",
    "fp16": "fp16 weights (dequantized at load)",
    "dynamic-int8": "int8 per-channel weights, activations quantized at run time",
    "int8": "full integer: int8 per-channel weights, int8 activations, int8 I/O",
}


def _padded(batches: Any, names: list[str], seq_len: int) -> Any:
    """Dict batches of (batch, L) token arrays -> tuples in input order, right-padded to seq_len."""
    import numpy as np

    for b in batches:
        arrays = [np.asarray(b[n]) for n in names]
        if arrays[0].shape[1] > seq_len:
            raise DataError(f"tflite: calibration sequences of {arrays[0].shape[1]} tokens exceed the "
                            f"model's {seq_len} "
                            f"({opt('--input-shape', 'input_shape', say('1,L', '(1, L)', '[1, L]'))})")
        yield tuple(np.pad(a, ((0, 0), (0, seq_len - a.shape[1]))) for a in arrays)


def export_tflite(spec: ModelSpec, precision: str, out: Path, calib: Dataset | None,
                  options: ExportOptions) -> Artifact:
    from edgecompress.exporters import _litert_convert as lc
    from edgecompress.exporters._bias_correction import QAT_SKIP, correct_module_bias

    # [issue #4] A QAT spec (spec.extra["quantized"]) exports only if it was trained with the litert
    # backend; its graph carries the Q/DQ ops, lowered as they are (no calibration, int8 only).
    check_export(spec, "tflite")
    prequant = spec.extra.get("quantized")
    if prequant and precision != "int8":
        raise ConfigError(f"tflite {precision}: model {spec.name} is already int8 ({prequant}); export it as int8")
    text = spec.is_text  # (a second input made any model a "text" one, with its rows padded as tokens)
    if len(spec.inputs) != 1 and not text:
        raise ExportError(f"tflite export of {spec.name}: {len(spec.inputs)} inputs; only single-input "
                          f"models and text encoders are supported (use {use_format('onnx')})")
    _refuses(spec, precision, options)
    if precision == "int8" and not prequant and (calib is None or len(calib) == 0):
        raise DataError(f"tflite int8: the calibration set is empty (pass {opt('--calib', 'calib')})")
    batches = calib.batches(16, desc="calibrating (litert PT2E)" if options.progress else None) \
        if precision == "int8" and calib and not prequant else None
    example: Any = spec.example_inputs(1)[0]
    names = None
    if text:
        # [issue #6] Text encoders: token ids + attention mask by name (the file's signature keeps
        # them), at the spec's fixed (1, seq_len); TFLite graphs bake the sequence length into
        # their reshapes. Calibration rows are right-padded to it with id 0 / mask 0, which the
        # masked attention and mean pooling ignore.
        example, names = spec.example_inputs(1), [i.name for i in spec.inputs]
        if batches is not None:
            batches = _padded(batches, names, int(spec.inputs[0].shape[1]))
    if spec.module is None:  # Format.needs_module: export() refused it before this
        raise ExportError(f"{spec.name}: no PyTorch module to export")
    # a model taking channels last already keeps its input as it is (it was turned around again)
    own_layout = text or image_layout(spec.inputs[0].shape) == "NCHW"
    try:
        with _litert_steps_shown(options.progress):
            # a None among its outputs: converted without it (`tensors_only`), as ONNX and OpenVINO do;
            # a QAT graph too (litert-torch refused its None: "contained a None item"). Not .eval() on
            # that one: it was put in eval mode by QAT (move_exported_model_to_eval)
            source, corrected = spec.module if prequant else spec.module.eval(), None
            if spec.extra.get("qat_weights") and options.bias_correction:
                corrected = dict(QAT_SKIP)
            elif precision == "int8" and batches is not None and not text and options.bias_correction:
                # the default quantizer's weight rounding, folded into the biases (exporters/_bias_correction.py);
                # batches of 4: at 16 its activations raised EfficientNet-Lite0's peak RSS by ~225 MB
                try:
                    source, corrected = correct_module_bias(source, calib.batches(  # type: ignore[union-attr]
                        4, desc="bias correction (torch)" if options.progress else None))
                except Exception as e:  # an improvement, not the export (as for ONNX): quantize it as it is
                    corrected = {"layers": 0, "skipped": str(e).strip().splitlines()[0][:200] if str(e).strip()
                                 else type(e).__name__}
            module = tensors_only(source, spec.example_inputs(1))
            info = lc.convert(module, example, precision, out, batches,
                              channels_last_io=own_layout, allow_mixed=options.allow_mixed, input_names=names,
                              file_input_names=[i.name for i in spec.inputs], output_names=spec.output_names,
                              prequantized=bool(prequant))
    except lc.FullIntegerError as e:
        raise ExportError(f"tflite int8 of {spec.name}: {e} ({say('--allow-mixed', 'ExportOptions(allow_mixed=True)')} "
                          f"accepts a mixed file; or use {use_format('onnx')})") from e
    except lc.UnsupportedModelError as e:
        raise ExportError(f"tflite export of {spec.name}: {e}") from e

    def tensor(d: dict[str, Any], layout: str) -> TensorInfo:
        return TensorInfo(d["name"], d["shape"], d["dtype"], layout if len(d["shape"]) == 4 else "",
                          d.get("scale"), d.get("zero_point"))

    details: dict[str, Any] = {
        "ops": info["ops"], "int8_ops": info["int8_ops"], "float_ops": info["float_ops"], "layout": info["layout"],
        # mixed = int8 and float compute side by side; an fp32 file is all float, not "mixed"
        "mixed": bool(info["float_ops"]) and bool(info["int8_ops"]), "quantization": _QUANT_DESCRIPTION[precision]}
    inputs = [tensor(d, info["layout"]) for d in info["inputs"]]
    outputs = [tensor(d, "") for d in info["outputs"]]
    if info["io_named"]:  # the file carries the spec's names (tensor names and signature keys)
        try:
            check_file_io("tflite", precision, spec, inputs, outputs)
        except ExportError:
            out.unlink(missing_ok=True)  # a failed export leaves no file
            raise
    else:
        # a file over 2 GB keeps litert-torch's names (it cannot be rewritten in one flatbuffer):
        # the contract holds the file's names, and these map them to the other formats' names
        details["input_names"] = dict(zip([i.name for i in inputs], [i.name for i in spec.inputs], strict=True))
        details["output_names"] = dict(zip([o.name for o in outputs], complete_output_names(
            spec.output_names, len(outputs), f"tflite export of {spec.name}"), strict=True))
    if prequant:
        details["calibration"] = {"method": f"none: ranges learned in {prequant} "
                                            f"({spec.extra.get('qat_quantizer')} backend)", "samples": 0}
    elif precision == "int8":
        details["calibration"] = {"method": "minmax (PT2E, observer after fused ReLU/ReLU6)",
                                  "samples": len(calib) if calib else 0, "bias_correction": corrected}
    return Artifact("tflite", precision, out, "litert", spec.name, inputs=inputs, outputs=outputs, details=details)


def _io(path: Path) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """A .tflite's tensors as LiteRT reports them; 4-D tensors are NHWC (TFLite's layout)."""
    from ai_edge_litert.interpreter import Interpreter

    from edgecompress.exporters._litert_convert import model_source

    it = Interpreter(**model_source(path))

    def info(d: dict[str, Any]) -> TensorInfo:
        shape: list[int | str] = [int(s) for s in d["shape"]]
        scale, zp = d.get("quantization", (0.0, 0))
        quant = bool(scale) and d["dtype"].__name__.startswith(("int", "uint"))
        return TensorInfo(d["name"], shape, d["dtype"].__name__, "NHWC" if len(shape) == 4 else "",
                          float(scale) if quant else None, int(zp) if quant else None)

    return [info(d) for d in it.get_input_details()], [info(d) for d in it.get_output_details()]


def _read_precision(path: Path) -> str:
    """int8 (full integer: the file takes int8), dynamic-int8 (int8 weights), fp16 or fp32."""
    from ai_edge_litert.interpreter import Interpreter

    from edgecompress.exporters._litert_convert import model_source

    it = Interpreter(**model_source(path))
    kinds = {t["dtype"].__name__ for t in it.get_tensor_details()}
    if it.get_input_details()[0]["dtype"].__name__ in ("int8", "uint8"):
        return "int8"
    if kinds & {"int8", "uint8"}:
        return "dynamic-int8"
    if "float16" in kinds:
        return "fp16"
    return "fp32"


def _refuses(spec: ModelSpec, precision: str, options: ExportOptions) -> None:
    """Full-integer int8 of a model of integer ids, refused before any calibration or training
    unless `allow_mixed`: it can never be full-integer, and failed only after calibration and
    conversion. [audit #27] A user's model of ids (Embedding -> mean -> Linear, Embedding ->
    Conv1d; PTQ and litert QAT alike): the ops that read the ids (EMBEDDING_LOOKUP, or a CAST)
    stay float (litert-torch's PT2E quantizer has no int8 embedding;
    `_litert_convert._skip_integer_nodes`), and so does what follows up to the first quantized
    layer. A text encoder: its LayerNorm, Softmax and attention-mask add stay float too (tiny BERT
    and MiniLM alike; mixed, MiniLM loses 1.6 Spearman points where dynamic-int8 loses 0.02).
    Mixed (--allow-mixed) both run: int32 ids in, int8 layers, float ops between."""
    if precision != "int8" or not spec.takes_integers or options.allow_mixed:
        return
    what = ("a text encoder (its LayerNorm, Softmax and attention-mask add stay float in LiteRT)" if spec.is_text
            else f"a model of {spec.inputs[0].dtype} ids (the embedding lookup / the ops reading the ids stay float "
                 "in LiteRT)")
    # a recipe has none, nor has compress (its -f names each precision)
    auto = say("; what --int8 gives this model", "; what auto_int8=True gives this model", "", "")
    raise ExportError(f"tflite int8 of {spec.name}: full-integer int8 does not apply to {what}; export "
                      f"tflite:dynamic-int8 (int8 weights{auto}), "
                      "or accept a mixed file of "
                      f"int8 layers and float ops with {say('--allow-mixed', 'ExportOptions(allow_mixed=True)')}")


def _int8_for(spec: ModelSpec, options: ExportOptions) -> str:
    """`--int8` on a model of integer ids means dynamic-int8: full-integer int8 cannot apply
    (`_refuses`), and dynamic-int8 keeps agreement with fp32 (an Embedding -> Linear model: top-1
    98 % on 64 samples, int8 table too; MiniLM: -0.02 Spearman points, 2.9x faster in LiteRT).
    [audit #27] for a user's model of ids; text encoders too, as ONNX's --int8 gives them
    int8-dynamic. With --allow-mixed, which only means something for int8, the mixed int8 file."""
    return "dynamic-int8" if spec.takes_integers and not options.allow_mixed else "int8"


register_format(Format(
    name="tflite", suffix=".tflite", precisions=("fp32", "fp16", "dynamic-int8", "int8"), runtime="litert",
    description="TFLite via litert-torch (no TensorFlow), NHWC; int8 = full integer with int8 I/O",
    export=export_tflite,
    int8_for=_int8_for,
    refuses=_refuses,
    read_io=_io,
    read_precision=_read_precision,
    needs_module=True,
    resizes_inputs=True,
    reference_rank=2,
))


@contextlib.contextmanager
def _litert_steps_shown(progress: bool) -> Iterator[None]:
    """litert-torch prints its conversion steps to stdout (34 lines for a small int8 model) unless
    LITERT_TORCH_SHOW_PROGRESS says no: `progress=False` from Python means none of that either.
    A value the user set is kept; the variable is put back afterwards."""
    if progress or "LITERT_TORCH_SHOW_PROGRESS" in os.environ:
        yield
        return
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "n"
    try:
        yield
    finally:
        os.environ.pop("LITERT_TORCH_SHOW_PROGRESS", None)
