"""Keep the command line's output ours: third-party chatter silenced, stdout for answers only.

Silence the known chatter of third-party libraries on the command line.

An `edgecompress export` printed ~90 lines besides its own progress bars and table: litert-torch's
conversion steps, NNCF's per-layer INFO and "Rollback to MINMAX" warnings, torch's "torchvision is
not installed" and pytree deprecations, torchao's optional CUDA kernels failing to load, the TFLite
converter's op count. Each line below is one that was seen and judged harmless; anything else
(another warning, every error) still shows. `edgecompress --verbose` / `EDGECOMPRESS_VERBOSE=1`
shows everything. The Python API leaves logging alone: only the CLI calls `setup_cli_process`.

stdout carries the command's answer (the report path of `demo`, the `formats` table), which build
scripts read; ORT's calibrators and NNCF's progress bars print to stdout, so the CLI sends
everything else to stderr, in its spawned export children too.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator
from typing import Any

# (logger, message pattern): records of WARNING and below that match are dropped; INFO and DEBUG
# of the same logger are dropped whatever they say.
_LOG_RULES: tuple[tuple[str, str], ...] = (
    # torch.onnx registers torchvision's ops when present; we do not use them
    ("torch.onnx._internal.exporter._registration", r"torchvision is not installed"),
    # torchao / litert-torch register an Enum as a pytree constant: a deprecation for their authors
    ("torch.utils._pytree", r"is an Enum subclass and is now natively supported"),
    # torchao's CUDA / MX kernels: this is a CPU build
    ("torchao", r"Failed to load .*\.so"),
    # torchao's int matmul kernels for GPUs (Triton); CPU quantization does not use them
    ("torchao.kernel.intmm", r"Detected no triton"),
    # histogram ranges are per-tensor; NNCF falls back to min/max for per-channel points by design
    ("nncf", r"Rollback to RangeEstimatorParametersSet"),
    # torch.export on a branch over tensor values: this warning carries 18-37 lines of graph dumps,
    # printed before our one-line error, which names the user's file and line itself
    ("torch.fx.experimental.symbolic_shapes", r"Unable to find user code corresponding to"),
    # transformers 5 when torch.export reads a text encoder's attributes: its `loss_function`
    # property names a causal-LM training loss; an exported encoder computes no loss
    ("transformers.modeling_utils", r"`loss_type=None` was set in the config but it is unrecognized"),
)
_WARNING_RULES: tuple[tuple[str, type[Warning]], ...] = (
    # raised inside torch.export's pickling of tree specs (litert-torch, torchao), not our code
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),
    # torch.onnx (dynamo) on text encoders: two axes share one constraint, so one keeps the other's
    # name; both stay dynamic (the exported MiniLM runs at any batch and sequence length)
    (r"# The axis name: .* will not be used", UserWarning),
)
_ENV = {
    "LITERT_TORCH_SHOW_PROGRESS": "n",  # litert-torch's step-by-step conversion log
    "TF_CPP_MIN_LOG_LEVEL": "2",  # the TFLite converter's C++ INFO lines ("Estimated count of ...")
    # the converter's "oneDNN custom operations are on" INFO line (and absl's "All log messages
    # before absl::InitializeLog()" warning it brings), which TF_CPP_MIN_LOG_LEVEL does not reach.
    # Its TensorFlow kernels only fold constants: the .tflite files are byte-identical either way
    # (sha256 of digits-cnn and EfficientNet-Lite0, fp32 and full int8, checked 2026-12-01).
    "TF_ENABLE_ONEDNN_OPTS": "0",
}
# Lines native code prints straight to file descriptor 2 (no logger, no env switch), dropped by
# `native_lines_dropped` around the calls that print them.
_NATIVE_LINES: tuple[str, ...] = (
    # LiteRT's minimal logger, once per process when an interpreter first applies its default
    # delegate; it has no Python switch (TF_CPP_MIN_LOG_LEVEL does not reach it) and XNNPACK is the
    # delegate the report names anyway
    r"INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.",
)
CLI_ENV = "EDGECOMPRESS_CLI"  # "quiet" / "verbose": how the CLI runs, for the children it spawns


class _Drop(logging.Filter):
    def __init__(self, pattern: str) -> None:
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.WARNING:
            return True
        return record.levelno == logging.WARNING and not self.pattern.search(record.getMessage())


def quiet_third_party() -> None:
    """Drop the known harmless third-party lines in this process and in processes it spawns."""
    for key, value in _ENV.items():
        os.environ.setdefault(key, value)
    for name, pattern in _LOG_RULES:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Drop) for f in logger.filters):
            logger.addFilter(_Drop(pattern))
    for message, category in _WARNING_RULES:
        warnings.filterwarnings("ignore", message=message, category=category)


def verbose_requested(argv: list[str]) -> bool:
    """`--verbose` anywhere on the command line (removed from argv) or EDGECOMPRESS_VERBOSE=1."""
    flag = "--verbose" in argv
    while "--verbose" in argv:
        argv.remove("--verbose")
    return flag or os.environ.get("EDGECOMPRESS_VERBOSE") == "1"


def setup_cli_process(verbose: bool) -> None:
    """The CLI's process: quiet unless `verbose`; spawned export children follow (`setup_child_process`)."""
    os.environ[CLI_ENV] = "verbose" if verbose else "quiet"
    if not verbose:
        quiet_third_party()


def setup_child_process() -> None:
    """In a child spawned by the CLI: stdout to stderr, and as quiet as the parent."""
    mode = os.environ.get(CLI_ENV)
    if mode is None:  # spawned from the Python API: leave the caller's streams alone
        return
    sys.stdout = sys.stderr
    if mode == "quiet":
        quiet_third_party()


def _stderr_handlers() -> list[logging.StreamHandler[Any]]:
    """The logging handlers that write to this process's stderr. torch's (on the `torch` logger,
    made at `import torch`) holds the stream it found then, so redirecting sys.stderr misses it."""
    streams = {id(sys.stderr), id(sys.__stderr__)}
    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    return [h for lg in loggers for h in lg.handlers
            if type(h) is logging.StreamHandler and id(h.stream) in streams]


@contextlib.contextmanager
def trace_dumps_held() -> Iterator[None]:
    """Around a torch.export trace on the command line: torch.export prints a failed trace's
    partial FX graph to stderr (18-37 lines of `class GraphModule` before our one-line error,
    which names the user's file and line itself), and torch logs a guard it failed to create as
    a 31-line ERROR traceback (`torch/_guards.py`, a model that fixes its batch) before raising
    the error we report. stderr, and the logging handlers writing to it, are held while tracing
    and written out when the trace succeeds; dropped when it fails (`--debug` still shows the
    traceback). The Python API and --verbose are untouched."""
    if os.environ.get(CLI_ENV) != "quiet":
        yield
        return
    buf = io.StringIO()
    handlers = [(h, h.setStream(buf)) for h in _stderr_handlers()]
    ok = False
    try:
        with contextlib.redirect_stderr(buf):
            yield
        ok = True
    finally:
        for h, stream in handlers:
            h.setStream(stream)
        if ok and buf.getvalue():
            sys.stderr.write(buf.getvalue())


@contextlib.contextmanager
def native_lines_dropped() -> Iterator[None]:
    """On the quiet command line, around a call whose native code prints a known line
    (`_NATIVE_LINES`) to file descriptor 2: fd 2 goes to a temporary file, and what was written
    there comes back on stderr afterwards without those lines (anything else shows, a little
    later). The Python API and --verbose are untouched."""
    if os.environ.get(CLI_ENV) != "quiet":
        yield
        return
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            text = held.read().decode(errors="replace")
            drop = re.compile("|".join(_NATIVE_LINES))
            kept = [ln for ln in text.splitlines(keepends=True) if not drop.fullmatch(ln.rstrip("\r\n"))]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
