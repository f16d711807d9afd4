"""An .onnx file the user gave, made fit to be an artifact; and the checks a quantized file passes.

An artifact is one self-contained file: the manifest hashes it, `validate` and the targets copy
it alone. A model saved with `save_as_external_data` keeps its weights in a side file, so a byte
copy of the .onnx was a weightless stub (it hashed, and "exported", fine). It is loaded with its
weights and written whole instead, which protobuf allows up to 2 GB.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from edgecompress.errors import ExportError, InputFileError, first_line, named, use_format
from edgecompress.fileio import path_or_bytes

ONE_FILE_LIMIT = 2**31  # protobuf's limit on one serialized message: one .onnx file
# ORT's per-channel QDQ (DequantizeLinear with `axis`) needs opset 13; older files are converted.
QDQ_MIN_OPSET = 13
# What a quantized file holds where ORT quantized something (static QDQ, dynamic, QOperator).
QUANT_OPS = frozenset({
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
    "QLinearConv", "QLinearMatMul", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QAttention", "QGemm",
    "DynamicQuantizeLSTM", "QEmbedLayerNormalization",
})


def _graphs(g: Any) -> Iterator[Any]:
    yield g
    for node in g.node:
        for a in node.attribute:
            if a.HasField("g"):
                yield from _graphs(a.g)
            for sub in a.graphs:
                yield from _graphs(sub)


def onnx_tensors(model: Any) -> Iterator[Any]:
    """Every TensorProto of the model: initializers and Constant-like attributes, subgraphs too."""
    for g in _graphs(model.graph):
        yield from g.initializer
        for node in g.node:
            for a in node.attribute:
                if a.HasField("t"):
                    yield a.t
                yield from a.tensors


def _opset(model: Any) -> int | None:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def scrub(text: str, paths: dict[Path, str]) -> str:
    """`text` with each temporary path in `paths` replaced by what the user knows it as, and any
    other path under the temp dir cut to its file name: a message named /tmp/tmpXXXX/ext.onnx.data,
    a directory the user never saw."""
    for p, shown in paths.items():
        text = text.replace(str(p), shown)
    return re.sub(re.escape(tempfile.gettempdir().rstrip("/")) + r"/[^\s'\"]*/", "", text)


def copy_onnx(src: Path, dst: Path, model_name: str, min_opset: int | None = None) -> None:
    """Write `src` to `dst` as one self-contained .onnx; with `min_opset`, converted up to it
    (onnx.version_converter) when its default-domain opset is lower. A plain file that needs no
    conversion is copied byte for byte."""
    import onnx

    src = Path(src)
    try:
        model = onnx.load(str(src), load_external_data=False)
    except Exception as e:
        raise InputFileError(f"{named('model', src)}: not a readable ONNX model ({type(e).__name__})") from e
    external = [t for t in onnx_tensors(model) if t.data_location == onnx.TensorProto.EXTERNAL]
    opset = _opset(model)
    target = min_opset or 0
    convert = opset is not None and opset < target
    if not external and not convert:
        shutil.copyfile(src, dst)
        return
    if external:
        files = sorted({next((e.value for e in t.external_data if e.key == "location"), "") for t in external})
        size = src.stat().st_size
        for f in files:
            data = src.parent / f
            if not f or not data.is_file():
                raise InputFileError(f"{named('model', src)}: its weights are stored in {data}, which does not exist "
                                     "(keep the external data file beside the .onnx)")
            size += data.stat().st_size
        if size >= ONE_FILE_LIMIT:
            raise ExportError(f"{named('model', src)}: "
                              f"{size / 1e9:.1f} GB with its external data ({', '.join(files)}); an "
                              "artifact is one .onnx file, which holds at most 2 GB; export from the PyTorch "
                              "model (module:factory or .pt2) with a smaller model, or use "
                              f"{use_format('openvino')}")
        try:
            onnx.load_external_data_for_model(model, str(src.parent))
        except Exception as e:
            raise InputFileError(f"{named('model', src)}: cannot read its external data ({', '.join(files)}): "
                                 f"{first_line(e, 160)}"
                                 ) from e
    if convert:
        from onnx import version_converter

        try:
            model = version_converter.convert_version(model, target)
        except Exception as e:
            line = first_line(e, 160)
            raise ExportError(f"onnx int8 of {model_name}: the file is opset {opset} and int8 (per-channel QDQ) "
                              f"needs opset {target}; converting it failed ({line}); re-export the model "
                              f"at opset {target} or later") from e
    onnx.save(model, str(dst))


def quantized_ops(path: Path) -> int:
    """How many nodes of the file at `path` are quantize / integer ops."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    return sum(n.op_type in QUANT_OPS for g in _graphs(m.graph) for n in g.node)


def float_weight_ops(path: Path, exclude: Iterable[str] = ()) -> dict[str, int]:
    """Conv / ConvTranspose / MatMul / Gemm nodes of the file that still compute in float, by type
    (a node whose weight is a float initializer, not a DequantizeLinear output); nodes named in
    `exclude` (listed elsewhere) not counted."""
    import collections

    import onnx

    m = onnx.load(str(path), load_external_data=False)
    graphs = list(_graphs(m.graph))
    inits = {i.name for g in graphs for i in g.initializer}
    skip = set(exclude)
    return dict(collections.Counter(
        n.op_type for g in graphs for n in g.node
        if n.op_type in ("Conv", "ConvTranspose", "MatMul", "Gemm") and len(n.input) > 1 and n.input[1] in inits
        and n.name not in skip))


def op_type_names(path: Path) -> list[str]:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    return sorted({n.op_type for g in _graphs(m.graph) for n in g.node})


def check_loads(path: Path, what: str, shown: str) -> None:
    """Open `path` with ONNX Runtime, as `validate` and the targets will: a quantized file it
    cannot load (ORT's tools can write one: per-channel QDQ on an opset they could not raise)
    must not become an artifact. `what` names it in the error, `shown` replaces `path`."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3  # its warnings are not ours to print; the error is raised
    try:
        ort.InferenceSession(path_or_bytes(path), so, providers=["CPUExecutionProvider"])
    except Exception as e:
        text = scrub(str(e).strip(), {path: shown})
        line = next((ln for ln in text.splitlines() if ln.strip()), type(e).__name__)
        raise ExportError(f"{what}: ONNX Runtime cannot load the file it produced ({line[:240]}); "
                          "nothing written") from e
