"""ONNX: fp32 through the dynamo exporter (dynamic batch), int8 QDQ through ONNX Runtime.

int8 follows what measured best here (../shared/FIELD_NOTES.md): `quant_pre_process`, then
`quantize_static` with QDQ, per-channel int8 weights and *unsigned* int8 activations (U8S8 runs
~1.7x faster than S8S8 on this CPU; per-channel fixes the -7 pt of the per-tensor default).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import math
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecompress.errors import ConfigError, DataError, ExportError, OutputError, opt
from edgecompress.exporters._bias_correction import QAT_SKIP, correct_bias
from edgecompress.exporters._onnx_file import (
    QDQ_MIN_OPSET,
    check_loads,
    copy_onnx,
    float_weight_ops,
    op_type_names,
    quantized_ops,
    scrub,
)
from edgecompress.exporters._softmax_guard import guard_masked_softmax
from edgecompress.exporters.base import (
    Artifact,
    ExportOptions,
    Format,
    TensorInfo,
    check_file_io,
    image_layout,
    register_format,
)
from edgecompress.fileio import atomic_path, no_space
from edgecompress.passes._qat_backends import check_export
from edgecompress.quiet import trace_dumps_held

if TYPE_CHECKING:
    from edgecompress.data import Dataset
    from edgecompress.models import ModelSpec


def _plain(e: BaseException) -> str:
    """The error's text without the ANSI colour codes torch.onnx puts in its messages."""
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", str(e))


def _first_line(e: BaseException) -> str:
    text = _plain(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def _culprit(e: BaseException) -> str:
    """The op torch.onnx could not lower, dug out of its multi-page message, else the first line of
    the error it chains (torch.onnx's own "Failed to export the model with torch.export. This is
    step 1/3..." names nothing; the torch.export error under it names the layer or shape)."""
    text = _plain(e)
    m = re.search(r"No ONNX function found for <OpOverload\(op='([^']+)'", text)
    if m:
        return f"unsupported op {m.group(1)}"
    root = e
    while root.__cause__ is not None and root.__cause__ is not root:
        root = root.__cause__
    line = _first_line(root)
    if line.endswith(":"):  # "The following inconsistencies were found:" names nothing by itself
        rest = [ln.strip() for ln in str(root).strip().splitlines()[1:] if ln.strip()]
        line = f"{line} {rest[0]}" if rest else line
    m = re.search(r"(aten|prims)\.[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)?", text)
    line = f"{line} ({m.group(0)})" if m and m.group(0) not in line else line
    line = re.sub(r" \(unhinted: [^)]*\)| \(Size-like symbols: [^)]*\)", "", line)  # sympy details
    # torch.export names the user's line under this header (a data-dependent `if`, a float() of
    # a tensor): the one place in the message that says where to look
    m = re.search(r'The following call raised this error:\s*\n\s*File "([^"]+)", line (\d+)[^\n]*\n[ \t]*([^\n]*)',
                  text)
    if m:
        code = m.group(3).strip()
        line = f"{line} at {m.group(1)}:{m.group(2)}" + (f" ({code[:80]})" if code else "")
    return line


def _batch_is_fixed(e: BaseException) -> bool:
    """torch.export found the batch pinned (a reshape(1, ...), or a guard batch <= 2)."""
    text = _plain(e)
    return "Constraints violated (batch)" in text or bool(re.search(r"Eq\(s\d+, \d+\) is inconsistent", text))


def drop_debug_metadata(model: Any) -> None:
    """Clear the per-node debug metadata torch.onnx writes on every node (onnx_ir model, in place).

    Why: the dynamo exporter records on each node `pkg.torch.onnx.stack_trace` (absolute paths and
    source lines of the user's code), `fx_node`, `class_hierarchy`, `name_scopes` and `namespace`:
    65 % of a small QAT int8 file, build-machine paths shipped inside the app's model, and a
    different sha256 for the same weights when the source sits in another folder. torch.onnx.export
    has no switch for it (torch 2.13: `_core._set_node_metadata` runs unconditionally), so onnx_ir's
    own pass clears it: node metadata and doc strings in the main graph, its subgraphs and the
    functions, and the graph's torch.export signature text. Model-level metadata is left as is.
    Every ONNX artifact built from a PyTorch module passes here (fp32, ORT int8 from that file,
    QAT QDQ, OpenVINO's intermediate ONNX); a user's own .onnx is not touched."""
    from onnx_ir.passes.common import ClearMetadataAndDocStringPass

    ClearMetadataAndDocStringPass()(model)


def name_outputs(model: Any, spec: ModelSpec) -> None:
    """Give the graph's outputs the spec's names (onnx_ir model, in place). torch.onnx renames
    only as many outputs as `output_names` lists and leaves the others its own node names
    ("linear_1"): a spec built by hand names its first output only, and those get `output_k`,
    as in the OpenVINO and TFLite files."""
    import onnx_ir as ir

    from edgecompress.models.spec import complete_output_names

    outputs = model.graph.outputs
    names = complete_output_names(spec.output_names, len(outputs), f"onnx export of {spec.name}")
    # ONNX values share one namespace: an inner value torch named after its node ("linear", "mean")
    # that an output's name (a dict key) takes moves aside, else the file holds two such values
    values = [*model.graph.initializers.values(),
              *(v for node in ir.traversal.RecursiveGraphIterator(model.graph) for v in node.outputs)]
    taken = {v.name for v in values} | set(names)
    for v in values:
        if v.name in names and not any(v is o for o in outputs):
            v.name = next(n for i in range(1, len(taken) + 2) if (n := f"{v.name}_{i}") not in taken)
            taken.add(v.name)
    for value, name in zip(outputs, names, strict=True):
        value.name = name


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
        with contextlib.redirect_stdout(buf), torch.no_grad(), trace_dumps_held():
            prog = torch.onnx.export(
                spec.module.eval(), args, dynamo=True, dynamic_shapes=dyn,
                input_names=names, output_names=spec.output_names, external_data=False,
                optimize=True, verbose=False,
            )
            name_outputs(prog.model, spec)  # type: ignore[union-attr]  # dynamo=True: a program
            drop_debug_metadata(prog.model)  # type: ignore[union-attr]
            prog.save(str(out), external_data=False)  # type: ignore[union-attr]
    except ConfigError:  # the spec's output names (name_outputs): already one line
        raise
    except Exception as e:
        if no_space(e) or no_space(e.__cause__) or no_space(e.__context__):  # not the model's fault
            raise OutputError(f"{out}: no space left on device") from e
        if dynamic_batch and _batch_is_fixed(e):
            hint = ("the model fixes its batch size, e.g. x.reshape(1, -1): write x.flatten(1), or "
                    "torch.export it at batch 1 and pass the .pt2")
        elif "data-dependent expression" in _plain(e):
            hint = "the model branches on tensor values there: keep it a tensor (torch.where), or export another format"
        else:
            hint = f"rewrite that op, or try a fixed {opt('--input-shape', 'input_shape')}"
        raise ExportError(f"onnx export of {spec.name} failed: {_culprit(e)} ({hint})") from e


class _Reader:
    """ORT CalibrationDataReader over a Dataset, in batches, with a progress bar."""

    def __init__(self, data: Dataset, input_name: str, batch: int, progress: bool = True,
                 desc: str = "calibrating (onnxruntime)") -> None:
        self._it = iter(data.batches(batch, desc=desc if progress else None))
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
        self.reader, self.left = reader, n
        self.shape: dict[str, Any] | None = None

    def get_next(self) -> dict[str, Any] | None:
        if self.left <= 0 or not self.reader.has_next():
            return None
        shape = {k: getattr(v, "shape", None) for k, v in self.reader._peeked.items()}  # type: ignore[union-attr]
        if self.shape is not None and shape != self.shape:
            return None
        self.shape, self.left = shape, self.left - 1
        return self.reader.get_next()


@contextlib.contextmanager
def _quiet_root_logger() -> Any:
    """ORT's quantization tools warn through the root logger (e.g. "Please consider to run
    pre-processing"): silence it while they run, then give the caller's logging back as it was."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


@contextlib.contextmanager
def _bounded_histogram_calibration(chunk_batches: int) -> Any:
    """Make ORT's histogram calibrators (percentile, entropy) fold data in chunks.

    Why: in ORT 1.32 HistogramCalibrater.collect_data keeps every intermediate output of the whole
    calibration set before building histograms (~19 GB for 300 EfficientNet-Lite0 images here),
    and the `CalibMaxIntermediateOutputs` option is ignored by it (and, for MinMax, *discards*
    the collected ranges instead of merging them). The histogram collector merges across calls,
    so calling `collect_data` once per chunk gives the same histograms with bounded memory.
    The counting itself is FastHistogramCollector's (torch instead of numpy; _fast_histogram.py).
    """
    import importlib

    from onnxruntime.quantization.calibrate import HistogramCalibrater

    from edgecompress.exporters._fast_histogram import FastHistogramCollector

    # The module, not the `quantize` function the package re-exports under the same name.
    q: Any = importlib.import_module("onnxruntime.quantization.quantize")  # patched below

    original = q.create_calibrator

    def create(*args: Any, **kwargs: Any) -> Any:
        cal = original(*args, **kwargs)
        if isinstance(cal, HistogramCalibrater):
            cal.collector = FastHistogramCollector(
                method=cal.method, symmetric=cal.symmetric, num_bins=cal.num_bins,
                num_quantized_bins=cal.num_quantized_bins, percentile=cal.percentile, scenario=cal.scenario)
            collect = cal.collect_data

            def chunked(reader: _Reader) -> None:
                while reader.has_next():
                    # ORT prints "Collecting tensor data ..." to stdout per call: stdout is where
                    # the CLI prints the report path for build scripts, so it stays ours.
                    with contextlib.redirect_stdout(io.StringIO()):
                        collect(_Chunk(reader, chunk_batches))

            cal.collect_data = chunked
            compute = cal.compute_data

            def quiet_compute() -> Any:  # prints its settings ("Number of tensors ...") likewise
                with contextlib.redirect_stdout(io.StringIO()):
                    return compute()

            cal.compute_data = quiet_compute
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


# The ops whose weights static int8 quantizes (float_first counts Conv / Gemm / MatMul).
WEIGHTED_ONNX_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _refuse_nothing_to_quantize(model_path: Path, kinds: list[str], excluded: list[str], float_first: int,
                                name: str) -> None:
    """Refuse, before calibrating, a model with no layer int8 would quantize: ORT's histogram
    calibrators then fail with "Histogram has not been collected", and min/max writes the float
    model back unchanged. No such layer at all is the model's limit (ExportError, exit 3); a
    --float-first that covers them all is the user's setting (ConfigError, exit 2)."""
    import onnx

    nodes = onnx.load(str(model_path), load_external_data=False).graph.node
    layers = [n.name for n in nodes if n.op_type in kinds]
    if not layers:
        raise ExportError(f"onnx int8 of {name}: nothing to quantize: no {'/'.join(kinds)} layer (ops: "
                          f"{', '.join(sorted({n.op_type for n in nodes}))[:160]}), the file would be float; "
                          "export fp32")
    if not set(layers) - set(excluded):
        raise ConfigError(f"onnx int8 of {name}: nothing to quantize: "
                          f"{opt('--float-first', 'float_first', float_first)} leaves all {len(layers)} "
                          f"{'/'.join(kinds)} layers float, the file would be float; lower it, or export fp32")


def quantize_onnx_int8(fp32_path: Path, out: Path, calib: Dataset, input_name: str,
                       options: ExportOptions, op_types: list[str] | None = None,
                       float_first: int = 0, name: str = "the model") -> dict[str, Any]:
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
        raise ConfigError(f"{opt('--calib-method', 'calib_method', repr(options.calib_method))}: use one of "
                          f"{', '.join(methods)}")
    extra: dict[str, Any] = {
        "CalibPercentile": options.percentile,
        # Activations are uint8 and mostly post-ReLU6: a symmetric range would waste half the levels.
        "CalibTensorRangeSymmetric": False,
    }
    extra.update(options.extra.get("onnx_quant", {}))
    with tempfile.TemporaryDirectory() as td, _quiet_root_logger():
        pre = Path(td) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        # Why leave a stem in float: ORT's int8 conv kernels (MLAS) need input channels in multiples
        # of 4, so an RGB stem conv falls back to a generic im2col path, and a narrow depthwise conv
        # at full resolution runs slower in int8 than in fp32 NCHWc. On EfficientNet-Lite0 the
        # int8 stem + first depthwise conv took 0.75 ms vs 0.45 ms in fp32 (per-node profile,
        # benchmarks/RESULTS-spine.md); keeping the first 3 convs float moves the quantization
        # boundary to a 16-channel tensor and makes the whole model ~7 % faster.
        excluded = _leading_nodes(pre, float_first)
        _refuse_nothing_to_quantize(pre, op_types or list(WEIGHTED_ONNX_OPS), excluded, float_first, name)
        # Histograms are updated every ~16 samples: ~1.4 GB peak for EfficientNet-Lite0 at 224 px.
        with _bounded_histogram_calibration(chunk_batches=max(1, 16 // options.calib_batch)):
            quantize_static(
                str(pre), str(out), _Reader(calib, input_name, options.calib_batch, options.progress),
                quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=methods[options.calib_method], extra_options=extra,
                op_types_to_quantize=op_types, nodes_to_exclude=excluded,
            )
        corrected = None
        if options.bias_correction:
            reader = _Reader(calib, input_name, options.calib_batch, options.progress, "bias correction (onnxruntime)")
            try:
                corrected = correct_bias(pre, out, iter(reader.get_next, None))
            except Exception as e:  # an improvement, not the export: the file stays as ORT wrote it
                corrected = {"layers": 0, "skipped": _first_line(e)[:200]}
    return {"calibration": {"method": options.calib_method, "samples": len(calib),
                            "percentile": options.percentile if options.calib_method == "percentile" else None,
                            "bias_correction": corrected},
            "quantization": {"format": "QDQ", "weights": "int8 per-channel symmetric",
                             "activations": "uint8 per-tensor asymmetric",
                             "float_nodes": [{"node": n, "why": "float_first"} for n in excluded]}}


def _linear_sensitivity(module: Any, feeds: list[dict[str, Any]]) -> dict[str, float]:
    """1 - cosine(output, fp32 output), averaged over `feeds`, when only one nn.Linear is
    int8-dynamic as ORT runs it (input: uint8 with one asymmetric range per call; weight: int8
    symmetric per output channel), for every Linear. One layer at a time, end to end: the
    error a layer adds locally says little about what it does to the embedding (in MiniLM the
    first FFN output dense is the worst end to end and only 10th by local output error)."""
    import torch

    def fq_x(x: Any) -> Any:
        lo, hi = torch.clamp(x.min(), max=0), torch.clamp(x.max(), min=0)
        scale = torch.clamp(hi - lo, min=1e-12) / 255
        zp = torch.round(-lo / scale)
        return (torch.clamp(torch.round(x / scale) + zp, 0, 255) - zp) * scale

    def fq_w(w: Any) -> Any:
        s = torch.clamp(w.abs().amax(dim=1, keepdim=True), min=1e-12) / 127
        return torch.clamp(torch.round(w / s), -127, 127) * s

    def run() -> list[Any]:
        # float64 for the cosine: 1 - cos of a small model's error was 0.0 in float32 for every
        # layer (a tie, so the layers kept float were picked by name order)
        return [module(**{k: torch.from_numpy(v) for k, v in f.items()}).double() for f in feeds]

    module = module.eval()
    out: dict[str, float] = {}
    with torch.no_grad():
        ref = run()
        for name, lin in module.named_modules():
            if not isinstance(lin, torch.nn.Linear):
                continue
            w0 = lin.weight.data
            lin.weight.data = fq_w(w0)
            hook = lin.register_forward_pre_hook(lambda _m, args: (fq_x(args[0]), *args[1:]))
            try:
                errs = [1 - torch.nn.functional.cosine_similarity(y, r, dim=-1).mean()
                        for y, r in zip(run(), ref, strict=True)]
            finally:
                hook.remove()
                lin.weight.data = w0
            out[name] = float(sum(errs) / len(errs))
    return out


def _matmul_nodes_of(model_path: Path, module: Any) -> dict[str, tuple[str, int]]:
    """ONNX MatMul node -> (nn.Linear name, weight elements), matched by the weight's values (the
    dynamo exporter names nodes node_MatMul_<n> and stores W transposed)."""
    import hashlib

    import numpy as np
    import onnx
    import torch
    from onnx import numpy_helper

    def key(a: Any) -> str:
        return hashlib.sha1(np.ascontiguousarray(a, np.float32).tobytes()).hexdigest()

    by_key = {key(m.weight.detach().numpy().T): n for n, m in module.named_modules()
              if isinstance(m, torch.nn.Linear)}
    g = onnx.load(str(model_path)).graph
    inits = {i.name: i for i in g.initializer}
    found = {}
    for n in g.node:
        if n.op_type == "MatMul" and n.input[1] in inits and len(inits[n.input[1]].dims) == 2:
            w = numpy_helper.to_array(inits[n.input[1]])
            if (lin := by_key.get(key(w))) is not None:
                found[n.name] = (lin, int(w.size))
    return found


def _probe_feeds(spec: ModelSpec, n: int = 4, batch: int = 8, seq: int = 32) -> list[dict[str, Any]]:
    """Inputs for `_matmul_errors` when no calibration set is given: random in-vocabulary token ids
    (all-ones mask) for text encoders. BERT-style activation outliers sit in fixed hidden
    channels and show up on any text, so the ranking of sensitive layers needs no real data."""
    import numpy as np

    rng = np.random.default_rng(0)
    vocab = int(spec.extra.get("vocab_size", 100))
    seq = min(seq, int(spec.inputs[0].shape[1]))
    feeds = []
    for _ in range(n):
        feed = {}
        for i in spec.inputs:
            if i.name.endswith("mask"):
                feed[i.name] = np.ones((batch, seq), np.int64)
            else:
                feed[i.name] = rng.integers(min(1000, vocab // 2), vocab, (batch, seq), dtype=np.int64)
        feeds.append(feed)
    return feeds


def sensitive_matmuls(model_path: Path, module: Any, feeds: list[dict[str, Any]],
                      budget_bytes: float) -> list[dict[str, Any]]:
    """The MatMuls to keep in fp32 under int8-dynamic: the most sensitive Linear layers
    (`_linear_sensitivity`) first, while the extra bytes of their fp32 weights (3 per element
    over int8) fit in `budget_bytes`."""
    sens = _linear_sensitivity(module, feeds)
    nodes = _matmul_nodes_of(model_path, module)
    keep, used = [], 0
    for node, (lin, size) in sorted(nodes.items(), key=lambda kv: -sens.get(kv[1][0], 0.0)):
        if used + 3 * size <= budget_bytes:
            keep.append({"node": node, "layer": lin, "sensitivity": float(f"{sens.get(lin, 0.0):.3g}")})
            used += 3 * size
    return keep


# [issue #6] Share of the fp32 file that int8-dynamic encoders may spend on fp32 MatMuls. MiniLM
# (benchmarks/RESULTS-minilm.md, STS-B dev Spearman drop / size / ORT speed-up, b1 s128 1 thread):
# 0 -> -0.22 / 0.26x; 2 % (layer 0's FFN output dense) -> -0.11 / 0.27x / 2.1x; 4 % (two FFN
# output denses) -> -0.08 / 0.29x / ~2.0x: each fp32 FFN MatMul costs ~1.1 ms of a ~11 ms forward.
DYNAMIC_FLOAT_BUDGET = 0.02


def _dynamic_float_nodes(pre: Path, spec: ModelSpec | None, calib: Dataset | None,
                         options: ExportOptions) -> tuple[list[dict[str, Any]], float, str]:
    """Encoders: the most sensitive MatMuls to leave fp32 (see `sensitive_matmuls`), probed on the
    first 64 calibration rows when a text calibration set is given, else on random tokens."""
    if spec is None or spec.module is None or not spec.is_text:
        return [], 0.0, ""
    budget = float(options.extra.get("onnx_dyn_float_budget", DYNAMIC_FLOAT_BUDGET))
    if budget <= 0:
        return [], 0.0, ""
    x = getattr(calib, "x", None) if calib is not None and len(calib) else None
    if calib is not None and isinstance(x, dict):  # (x is None without calib)
        feeds = [{k: v[i:i + 32] for k, v in x.items()} for i in range(0, min(64, len(calib)), 32)]
        probe = f"first {min(64, len(calib))} calibration rows"
    else:
        feeds, probe = _probe_feeds(spec), "random in-vocabulary tokens (no calibration set)"
    return sensitive_matmuls(pre, spec.module, feeds, budget * pre.stat().st_size), budget, probe


def quantize_onnx_dynamic(fp32_path: Path, out: Path, options: ExportOptions, spec: ModelSpec | None = None,
                          calib: Dataset | None = None) -> dict[str, Any]:
    """ORT `quantize_dynamic`: int8 weights (per-channel unless extra['onnx_dyn_per_channel'] is
    False), uint8 activations with ranges computed per call; MatMul/Gemm/Attention, and Gather
    (the word-embedding table is half of a small encoder's bytes). Encoders keep their most
    sensitive MatMuls in fp32 within extra['onnx_dyn_float_budget'] (default 2 % of the fp32
    file; 0 turns it off)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # Per-channel: MiniLM embedding cosine vs fp32 0.993 mean (0.969 per-tensor) and faster here.
    per_channel = bool(options.extra.get("onnx_dyn_per_channel", True))
    with tempfile.TemporaryDirectory() as td, _quiet_root_logger():
        pre = Path(td) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        # [issue #6] Per-layer sensitivity on MiniLM (one MatMul int8 at a time, 640 dev sentences,
        # 1 - cosine vs fp32): layer 0's FFN output dense 1.2e-3, then 6.6e-4 .. 2.5e-4 for FFN
        # and value projections, < 1e-4 for the rest; the errors add up (sum 7.3e-3, all int8
        # 7.2e-3). Keeping the worst one fp32 takes STS-B Spearman from -0.22 to -0.11.
        floats, budget, probe = _dynamic_float_nodes(pre, spec, calib, options)
        quantize_dynamic(str(pre), str(out), weight_type=QuantType.QInt8, per_channel=per_channel,
                         op_types_to_quantize=["MatMul", "Gemm", "Attention", "Gather"],
                         nodes_to_exclude=[f["node"] for f in floats])
    q: dict[str, Any] = {"format": "dynamic (MatMulInteger)",
                         "weights": f"int8 {'per-channel' if per_channel else 'per-tensor'}",
                         "activations": "uint8, ranges computed at run time"}
    if budget:
        q.update(float_nodes=floats, float_budget=budget, sensitivity_probe=probe)
    # what dynamic quantization does not cover (a CNN's convolutions): the report listed "none"
    if left := float_weight_ops(out, exclude=[f["node"] for f in floats]):
        q["float_ops_not_covered"] = left
    return {"quantization": q}


def _io(path: Path) -> tuple[list[TensorInfo], list[TensorInfo]]:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}

    def info(v: Any) -> TensorInfo:
        t = v.type.tensor_type
        shape = [d.dim_value if d.dim_value > 0 else (d.dim_param or "?") for d in t.shape.dim]
        dtype = str(onnx.helper.tensor_dtype_to_np_dtype(t.elem_type))
        return TensorInfo(v.name, shape, dtype, image_layout(shape))

    return ([info(v) for v in m.graph.input if v.name not in inits], [info(v) for v in m.graph.output])


def _vocab(path: Path) -> dict[str, int]:
    """{integer input: rows of the embedding table it indexes}, read from the graph (no weights)."""
    import onnx

    from edgecompress.models.loaders import onnx_input_vocab

    m = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    ints = [v.name for v in m.graph.input if v.name not in inits
            and onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).kind in "iu"]
    return onnx_input_vocab(m, ints)


def export_onnx(spec: ModelSpec, precision: str, out: Path, calib: Dataset | None,
                options: ExportOptions) -> Artifact:
    details: dict[str, Any] = {"opset": None, "dynamic_batch": options.dynamic_batch}
    # [issue #4] An already-quantized spec (QAT pass: spec.extra["quantized"] = "qat") carries its
    # own Q/DQ ops: int8 is the dynamo export of that graph (real QDQ int8), with no ORT PTQ on top.
    prequant = spec.extra.get("quantized") if spec.module is not None else None
    # [issue #4] a litert-backend QAT graph exported to ONNX keeps fp32 weights behind Q->Clip->DQ
    # (the narrow [-127, 127] weight range): not real int8, so it is refused with the backend to use.
    check_export(spec, "onnx")
    # checked before any work: the model's own default unless the caller set it
    first = options.float_first if options.float_first is not None else int(spec.extra.get("onnx_int8_float_first", 0))
    if first < 0:
        raise ConfigError(f"float_first {first}: must be >= 0")
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
            if n := guard_masked_softmax(tmp):  # [issue #6] masked Softmax off ORT's denormal path
                details["softmax_underflow_guard"] = n
        if precision == "int8-dynamic":
            # Weights int8, activations quantized at run time: no calibration (transformers).
            with tempfile.TemporaryDirectory() as td:
                fp32 = Path(td) / "fp32.onnx"
                copy_onnx(Path(src), fp32, spec.name)  # weights kept in an external file come along
                try:
                    details.update(quantize_onnx_dynamic(fp32, tmp, options, spec, calib))
                except Exception as e:
                    raise ExportError(f"onnx int8-dynamic quantization of {spec.name} failed: "
                                      f"{scrub(_first_line(e), {fp32: str(src)})}") from e
            _refuse_float(tmp, spec.name, precision, "int8-dynamic quantizes MatMul and Gather weights only; "
                          "export fp32, or onnx:int8 for a Conv model")
        elif precision == "int8" and not prequant:  # [issue #4] QAT graphs skip ORT PTQ
            if calib is None or len(calib) == 0:
                raise DataError(f"onnx int8: the calibration set is empty (pass {opt('--calib', 'calib')})")
            with tempfile.TemporaryDirectory() as td:
                fp32 = Path(td) / "fp32.onnx"
                # ORT's per-channel QDQ needs opset 13: an older file is converted (its ops have
                # opset-13 forms), else ORT writes a model it cannot load itself.
                copy_onnx(Path(src), fp32, spec.name, min_opset=QDQ_MIN_OPSET)
                try:
                    # [issue #6] Encoders: quantize MatMul/Gemm/Gather only. Quantizing the
                    # attention-mask Add (range ~ -3e38..0) wrecked MiniLM (cosine 0.35 vs fp32).
                    ops = ["MatMul", "Gemm", "Gather"] if spec.is_text else None
                    qat_weights = bool(spec.extra.get("qat_weights")) and options.bias_correction
                    details.update(quantize_onnx_int8(
                        fp32, tmp, calib, spec.inputs[0].name,
                        dataclasses.replace(options, bias_correction=False) if qat_weights else options,
                        ops, first, spec.name))
                    if qat_weights:
                        details["calibration"]["bias_correction"] = dict(QAT_SKIP)
                except (DataError, ConfigError, ExportError):  # nothing to quantize: already says why
                    raise
                except Exception as e:
                    raise ExportError(f"onnx int8 quantization of {spec.name} failed: "
                                      f"{scrub(_first_line(e), {fp32: str(src)})}") from e
            _refuse_float(tmp, spec.name, precision, "export fp32")
        elif src != tmp:
            copy_onnx(Path(src), tmp, spec.name)  # one self-contained file, external weights included
        if precision != "fp32":
            check_loads(tmp, f"onnx {precision} of {spec.name}", out.name)
        import onnx

        graph_only = onnx.load(str(tmp), load_external_data=False)
        details["opset"] = next((o.version for o in graph_only.opset_import if o.domain in ("", "ai.onnx")), None)
        # a baseline comparison tells another model's file by it (targets/baseline.py)
        details["weights"] = weight_count(graph_only.graph)
        inputs, outputs = _io(tmp)
        if spec.module is not None:
            check_file_io("onnx", precision, spec, inputs, outputs)
    return Artifact("onnx", precision, out, "onnxruntime", spec.name, inputs=inputs, outputs=outputs,
                    details=details)


def weight_count(graph: Any) -> int:
    """Elements of the initializers of rank >= 2 (conv and linear weights, not biases or BN
    vectors): the same for a model's fp32 and int8 files, and far apart for a pruned model."""
    return sum(math.prod(t.dims) for t in graph.initializer if len(t.dims) >= 2)


def _refuse_float(path: Path, name: str, precision: str, advice: str) -> None:
    """ORT's quantizers leave a model they find nothing to quantize in untouched, and say nothing:
    that file would be labelled int8 (and its 'speed-up' measured) while it is float."""
    if quantized_ops(path) == 0:
        raise ExportError(f"onnx {precision} of {name}: nothing to quantize: no layer was quantized "
                          f"(ops: {', '.join(op_type_names(path))[:160]}), the file would be float; {advice}")


def _int8_for(spec: ModelSpec, _options: ExportOptions) -> str:
    """[issue #6] `--int8` on a transformer encoder means int8-dynamic: on MiniLM, static QDQ
    measured Spearman -0.44 pt at 1.9x, dynamic -0.11 pt at 2.1x (benchmarks/RESULTS-minilm.md):
    per-tensor static ranges cannot follow attention/FFN activations that change per sentence."""
    return "int8-dynamic" if spec.is_text else "int8"


_STATIC_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "QGemm", "QLinearAdd"}
_DYNAMIC_OPS = {"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul"}


def _read_precision(path: Path) -> str:
    """int8 (static Q/DQ or QLinear ops), int8-dynamic, fp16 (half initializers) or fp32."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    ops = {n.op_type for n in m.graph.node}
    if ops & _STATIC_OPS:
        return "int8"
    if ops & _DYNAMIC_OPS:
        return "int8-dynamic"
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in m.graph.initializer):
        return "fp16"
    return "fp32"


register_format(Format(
    name="onnx", suffix=".onnx", precisions=("fp32", "int8", "int8-dynamic"), runtime="onnxruntime",
    description="ONNX (dynamo exporter, dynamic batch); int8 = ORT QDQ, per-channel, U8S8; "
                "int8-dynamic = ORT quantize_dynamic (no calibration)",
    export=export_onnx,
    int8_for=_int8_for,
    read_io=_io,
    read_precision=_read_precision,
    read_vocab=_vocab,
    reference_rank=0,
    option_keys=("onnx_quant", "onnx_dyn_float_budget", "onnx_dyn_per_channel"),
))
