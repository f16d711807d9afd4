"""The format table and the Artifact every exporter returns.

One `Format` row per file under exporters/ (Ultralytics-style): name, suffix, precisions, the
runtime that runs it. The CLI's checks, its --help text and the report read this table, so a new
format is one new module that calls `register_format`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecompress.registry import Registry

if TYPE_CHECKING:
    from edgecompress.data import Dataset
    from edgecompress.models import ModelSpec

CALIB_METHODS = ("minmax", "percentile", "entropy")


def image_layout(shape: Sequence[Any]) -> str:
    """The layout a 4-D float input is taken in: "NCHW" (PyTorch's), or "" for a model that takes
    channels last already (1-4 channels last, more in dim 1: `x.permute(0, 3, 1, 2)` in its forward).
    The TFLite exporter turned such an input around once more: a [1, 8, 8, 3] model became a
    [1, 8, 3, 8] file labelled NHWC, which no app feeds right. "" means: as the model takes it."""
    if len(shape) != 4:
        return ""
    c_first, c_last = shape[1], shape[3]
    channels_last = isinstance(c_last, int) and c_last in (1, 3, 4) and not (isinstance(c_first, int)
                                                                            and c_first in (1, 3, 4))
    return "" if channels_last else "NCHW"


@dataclass
class ExportOptions:
    """Knobs shared by the exporters; a recipe or the CLI fills them.

    `isolate=True` exports in a spawned child process, which imports the calling script again as
    `__mp_main__`: put the script's own work under `if __name__ == "__main__":`.
    """

    # measured best agreement with fp32 (benchmarks/RESULTS-spine.md). OpenVINO (NNCF) has no
    # entropy calibrator: percentile and entropy both select its histogram range estimator there.
    calib_method: str = "percentile"
    # 8: ORT's MinMax calibration of EfficientNet-Lite0 peaked at 2.2 GB with batches of 16, 1.2 GB with 8.
    calib_batch: int = 8
    percentile: float = 99.999
    dynamic_batch: bool = True
    allow_mixed: bool = False  # TFLite: accept float ops left in an int8 model
    # int8: leave the first N Conv/Gemm/MatMul nodes (graph order) in float. None = the model's own
    # default (ModelSpec.extra["onnx_int8_float_first"] / ["openvino_int8_float_first"], set by zoo
    # entries where it was measured), else 0. TFLite full-int8: not applied.
    float_first: int | None = None
    # [issue #7] Export in a spawned child process (exporters/_isolate.py): third-party converter
    # state that in-process exports leave behind (~1-2 MB each) dies with it; costs a few seconds.
    isolate: bool = False
    # int8: fold each layer's weight-rounding shift into its bias. ONNX and TFLite:
    # exporters/_bias_correction.py (ORT's and litert-torch's quantizers have none); OpenVINO: NNCF's
    # own bias correction (off: disable_bias_correction).
    bias_correction: bool = True
    progress: bool = True  # calibration progress bars (the pipeline passes its own setting)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # checked here, not deep in ORT ("integer division or modulo by zero" for calib_batch 0)
        from edgecompress.errors import ConfigError, opt

        if self.calib_method not in CALIB_METHODS:  # OpenVINO took any string as "histogram"
            raise ConfigError(f"{opt('--calib-method', 'calib_method', repr(self.calib_method))}: one of "
                              f"{', '.join(CALIB_METHODS)}")
        if not (isinstance(self.calib_batch, int) and not isinstance(self.calib_batch, bool) and self.calib_batch >= 1):
            raise ConfigError(f"calib_batch {self.calib_batch!r}: 1 or more")
        # a string compared with 0 was a TypeError; a bool is not a percentile
        if isinstance(self.percentile, bool) or not isinstance(self.percentile, int | float) \
                or not 0 < self.percentile <= 100:
            raise ConfigError(f"percentile {self.percentile!r}: a number in (0, 100], e.g. 99.999")
        # True read as 1 (the first conv left float); "no" as true for dynamic_batch
        if self.float_first is not None and not (isinstance(self.float_first, int)
                                                 and not isinstance(self.float_first, bool) and self.float_first >= 0):
            raise ConfigError(f"float_first {self.float_first!r}: an integer, 0 or more")
        for name in ("dynamic_batch", "allow_mixed", "isolate", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} {getattr(self, name)!r}: True or False")
        if not isinstance(self.extra, dict):  # None failed inside an exporter ("not iterable")
            raise ConfigError(f"extra {self.extra!r}: a dict of exporter settings")


@dataclass
class TensorInfo:
    """One input or output of an artifact: what a caller must feed or read."""

    name: str
    shape: list[int | str]
    dtype: str = "float32"
    layout: str = ""  # NCHW / NHWC for images
    scale: float | None = None  # set when the tensor itself is quantized (TFLite int8 I/O)
    zero_point: int | None = None


@dataclass
class Artifact:
    """A file (or IR pair) a runtime can load, with its contract and its hash."""

    format: str
    precision: str
    path: Path
    runtime: str
    model_name: str
    size_bytes: int = 0
    sha256: str = ""
    inputs: list[TensorInfo] = field(default_factory=list)
    outputs: list[TensorInfo] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Artifact:
        d = dict(d)
        d["path"] = Path(d["path"])
        d["inputs"] = [TensorInfo(**t) for t in d.get("inputs", [])]
        d["outputs"] = [TensorInfo(**t) for t in d.get("outputs", [])]
        return cls(**d)


ExportFn = Callable[["ModelSpec", str, Path, "Dataset | None", ExportOptions], Artifact]


def check_file_io(fmt: str, precision: str, spec: ModelSpec, inputs: list[TensorInfo],
                  outputs: list[TensorInfo]) -> None:
    """ExportError unless a written file's inputs and outputs (its I/O contract, read back from it)
    carry the spec's names, in its order: an app feeds and reads the same names whatever the
    format's file, and report.json's contract holds them too."""
    from edgecompress.errors import ExportError
    from edgecompress.models.spec import complete_output_names

    got, want = [i.name for i in inputs], [i.name for i in spec.inputs]
    if got != want:
        raise ExportError(f"{fmt} {precision} of {spec.name}: the file names its inputs {got}, not {want}")
    got = [o.name for o in outputs]
    want = complete_output_names(spec.output_names, len(got), f"{fmt} export of {spec.name}")
    if got != want:
        raise ExportError(f"{fmt} {precision} of {spec.name}: the file names its outputs {got}, not {want} "
                          "(an output that is an input, or one tensor returned twice?)")


@dataclass(frozen=True)
class Format:
    name: str
    suffix: str
    precisions: tuple[str, ...]
    runtime: str  # the bench runtime that executes it (see targets/bench.py)
    description: str
    export: ExportFn
    needs_calibration: tuple[str, ...] = ("int8",)
    extra_files: tuple[str, ...] = ()  # sibling files that belong to the artifact (.bin of IR)
    # The I/O contract read back from a file (`validate` of a file with no export report beside it)
    read_io: Callable[[Path], tuple[list[TensorInfo], list[TensorInfo]]] | None = None
    # The precision read back from a file (`validate` of a loose file): without it a new format's
    # int8 file named model.x is taken by its name, as fp32, and may become the drift reference
    read_precision: Callable[[Path], str] | None = None
    # The vocabulary of each integer input read from a file ({input: table rows}), for validate's
    # random ids of a loose file (an export's report records `input_vocab` / `vocab_size`): without
    # it token_type_ids of 0..99 fed a table of 2 rows, and the runtime's Gather failed.
    read_vocab: Callable[[Path], dict[str, int]] | None = None
    needs_module: bool = False  # converts from PyTorch only (an .onnx input cannot go there)
    # The ExportOptions.extra keys its exporter reads: export() refuses any key no format reads
    # (a typo such as "ov_overflow_fx" was silently ignored)
    option_keys: tuple[str, ...] = ()
    # What `--int8` means for a given model under the run's options (None: "int8"). An explicit
    # `format:int8` is never changed.
    int8_for: Callable[[ModelSpec, ExportOptions], str] | None = None
    # How validate runs its files. Its runtime resizes the inputs to any batch (LiteRT); else a file
    # that fixes its batch (a .pt2 exported at batch 1) is timed and evaluated at that batch only.
    resizes_inputs: bool = False
    # fp32 / fp16 files run with ValidateSettings.openvino_fp32_hint as bench.py's --precision-hint
    # (OpenVINO runs them in bf16 on CPUs that have it unless told f32).
    pins_fp32: bool = False
    # Which fp32 file `edgecompress validate` takes as the drift reference: the lowest rank.
    reference_rank: int = 9
    # What it refuses of a model at a precision, raised before any calibration or export (the
    # pipeline, export() and a recipe before its passes call it through `check_model`)
    refuses: Callable[[ModelSpec, str, ExportOptions], None] | None = None

    def check_source(self, spec: ModelSpec, keyword: str = "fmt") -> None:
        """Refuse, before any work, a model this format cannot be converted from. `keyword`: the
        Python parameter the format came in (export's `fmt`, ExportJob's `formats`)."""
        if self.needs_module and spec.module is None:
            from edgecompress.errors import ConfigError, opt, use_format

            use = f"{use_format('onnx', keyword)} or {use_format('openvino', keyword)}"
            raise ConfigError(f"{opt('--format', keyword, self.name, quoted=True)}: converts from a PyTorch "
                              f"model, and {spec.source} is not one; use {use} for ONNX inputs")

    def check_model(self, spec: ModelSpec, precision: str, options: ExportOptions | None = None) -> None:
        """`check_source`, and what this format refuses of `spec` at `precision` (`refuses`)."""
        self.check_source(spec)
        if self.refuses is not None:
            self.refuses(spec, precision, options or ExportOptions())

    def int8_precision(self, spec: ModelSpec, options: ExportOptions | None = None) -> str:
        """The precision `--int8` asks of this format for `spec` (under `options`: --allow-mixed)."""
        return self.int8_for(spec, options or ExportOptions()) if self.int8_for is not None else "int8"


@dataclass(frozen=True)
class Precision:
    """What a precision name stores and computes in, for the latency estimate (targets/estimate.py)."""

    name: str
    weight_bytes: int
    activation_bytes: int
    compute: str  # the peak it runs at: "int8" or "fp32"


# Every format's precision names in one table: ONNX says int8-dynamic and TFLite dynamic-int8 (both
# kept, as users spell them); each module re-listing its own lost the TFLite spelling (an estimated
# target failed on every dynamic-int8 .tflite). A format with a new name registers it here.
PRECISIONS: Registry[Precision] = Registry("precision")


def register_precision(p: Precision) -> Precision:
    return PRECISIONS.register(p.name, p)


for _p in (
    Precision("fp32", 4, 4, "fp32"),
    Precision("fp16", 2, 2, "fp32"),  # CPU kernels compute fp16 models in fp32 (XNNPACK/ORT on these cores)
    Precision("int8", 1, 1, "int8"),
    Precision("int8-dynamic", 1, 4, "int8"),  # int8 weights, float activations between layers
    Precision("dynamic-int8", 1, 4, "int8"),
):
    register_precision(_p)

FORMATS: Registry[Format] = Registry("format", "edgecompress.exporters", "edgecompress.formats")


def register_format(fmt: Format) -> Format:
    unknown = [p for p in fmt.precisions if p not in PRECISIONS]
    if unknown:  # the estimate and the loose-file reader would fail on them later, far from here
        raise ValueError(f"format {fmt.name!r}: unknown precision(s) {', '.join(unknown)}; "
                         "register_precision(Precision(...)) first")
    return FORMATS.register(fmt.name, fmt)
