"""`export()`: one verb for every format; the format table decides what happens."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from edgecompress.errors import ConfigError, DataError, did_you_mean, opt, say
from edgecompress.exporters._memory import pin_mmap_threshold, released_export_state
from edgecompress.exporters.base import FORMATS, Artifact, ExportOptions, Format
from edgecompress.fileio import output_dir, path_size, safe_child, sha256_file
from edgecompress.passes._qat_backends import qat_route

if TYPE_CHECKING:
    from edgecompress.data import Dataset
    from edgecompress.models import ModelSpec


def resolve_formats(
    formats: Sequence[str], precisions: Sequence[str] = (), int8: bool = False
) -> list[tuple[str, str]]:
    """Expand CLI-style choices into (format, precision) pairs, checked against the table.

    `onnx` -> fp32; `onnx:int8` -> int8; `--int8` adds int8 *and* keeps fp32 as the reference;
    `--precision fp16` applies to every listed format (an error names a format that lacks it).
    """
    pairs: list[tuple[str, str]] = []
    if precisions and formats and all(":" in item for item in formats):  # it was silently ignored
        shown = say(", ".join(precisions), repr(list(precisions)))  # as typed: `-p fp16`, `precisions=['fp16']`
        raise ConfigError(f"{opt('--precision', 'precisions', shown)}: every "
                          f"{say('--format', 'item of formats')} names its own precision ({', '.join(formats)}); "
                          "drop one or the other")
    for item in formats:
        name, _, prec = item.partition(":")
        fmt = FORMATS.get(name.strip().lower(), "--format", "formats")
        wanted = [prec] if prec else list(precisions) or ["fp32"]
        if int8 and not prec:
            wanted = ["fp32", *[p for p in wanted if p != "fp32"], "int8"]
        for p in wanted:
            p = p.strip().lower()
            if p not in fmt.precisions:
                raise ConfigError(
                    f"{opt('--format', 'formats', item, quoted=True)}: {fmt.name} supports precisions "
                    f"{', '.join(fmt.precisions)}, not {p!r}{did_you_mean(p, fmt.precisions)}"
                )
            if (fmt.name, p) not in pairs:
                pairs.append((fmt.name, p))
    if not pairs:
        raise ConfigError(f"{say('--format', 'formats')}: give at least one format "
                          f"(known: {', '.join(FORMATS.names())})")
    return pairs


def artifact_name(spec: ModelSpec, fmt: str, precision: str) -> str:
    suffix = FORMATS.get(fmt).suffix
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in spec.name) or "model"
    return f"{safe}-{precision}{suffix}"


def export(
    spec: ModelSpec,
    fmt: str,
    precision: str = "fp32",
    out_dir: str | os.PathLike[str] = ".",
    calib: Dataset | None = None,
    options: ExportOptions | None = None,
    name: str | None = None,
) -> Artifact:
    """Export `spec` to `fmt` at `precision` inside `out_dir`; returns the hashed Artifact.

    The file is `name`, else `<model>-<precision><suffix>`; a file of that name is replaced (pass
    `name` to keep two variants of one precision side by side). Every exporter writes to a
    temporary file and renames it, so a failure leaves nothing behind.
    """
    from edgecompress.data import Dataset
    from edgecompress.models import ModelSpec

    # Wrong types failed deep inside the exporters ("'str' object has no attribute 'extra'").
    if not isinstance(spec, ModelSpec):
        raise ConfigError(f"export: expected a ModelSpec (edgecompress.load_model(...)), got {type(spec).__name__}")
    if not isinstance(out_dir, (str, os.PathLike)):  # 5 failed in pathlib with "expected str, bytes or os.PathLike"
        raise ConfigError(f"export: out_dir must be a path (str or Path), got {type(out_dir).__name__}")
    if options is not None and not isinstance(options, ExportOptions):
        raise ConfigError(f"export: options must be an ExportOptions, got {type(options).__name__}")
    if calib is not None and not isinstance(calib, Dataset):
        raise ConfigError("export: calib must be a Dataset (edgecompress.load_data(path, array, tensor or "
                          f"DataLoader)), got {type(calib).__name__}")
    if calib is not None:
        # what the pipeline checks of any data, for a caller who built the Dataset: integer
        # arrays failed inside ORT after the fp32 export, NaN samples calibrated NaN ranges
        from edgecompress.data.datasets import check_in_memory, match_model

        check_in_memory(calib, f"calibration data {calib.source}")
        calib = dataclasses.replace(calib)  # match_model may cast x to float32: not the caller's object
        match_model(calib, spec.input_shape, spec.inputs[0].dtype, f"calibration data {calib.source}",
                    spec.extra.get("vocab_size"), spec.extra.get("input_vocab"), {i.name: i.dtype for i in spec.inputs})
    options = options or ExportOptions()
    known = {k for _, f in FORMATS for k in f.option_keys}
    if unknown := sorted(set(options.extra) - known):
        raise ConfigError(f"ExportOptions.extra: unknown key(s) {', '.join(map(repr, unknown))} (known: "
                          f"{', '.join(sorted(known)) or 'none'})")
    if spec.extra.get("fixed_batch"):
        # a .pt2 exported at batch 1 cannot be re-traced with a dynamic batch (its reshapes bake
        # the 1 in): the file keeps batch 1 and ORT calibration feeds it one sample at a time
        options = dataclasses.replace(options, dynamic_batch=False, calib_batch=1)
    fmt, precision = str(fmt).lower(), str(precision).lower()  # as the CLI: "ONNX" was unknown
    format_ = FORMATS.get(fmt, "--format", "fmt")
    if precision not in format_.precisions:
        # ONNX spells the weight-only scheme int8-dynamic, TFLite dynamic-int8: the other's was refused bare
        other = next((p for p in format_.precisions if set(p.split("-")) == set(precision.split("-"))), None)
        raise ConfigError(f"{opt('--format', 'fmt', fmt, quoted=True)}: supports {', '.join(format_.precisions)}, "
                          f"not {precision!r}"
                          + (f" (did you mean {other}?)" if other else ""))
    format_.check_model(spec, precision, options)
    if spec.module is not None:  # (an .onnx in keeps its file's names)
        from edgecompress.models.spec import check_input_names, check_output_names

        # before any work: a spec built by hand can name two inputs or outputs alike (load_model
        # names them from the model, so they differ)
        where, inputs = f"{fmt} export of {spec.name}", [i.name for i in spec.inputs]
        check_input_names(inputs, where)
        check_output_names(spec.output_names, where, inputs)
    # [issue #4] a QAT model in a format its backend does not lower: PTQ of its trained weights
    spec, qat_note = qat_route(spec, fmt, precision)
    # [issue #4] an already-quantized spec (QAT) brings its own ranges: no calibration needed.
    prequant = bool(spec.extra.get("quantized")) and spec.module is not None
    if precision in format_.needs_calibration and not prequant and (calib is None or len(calib) == 0):
        given = "none was given" if calib is None else f"{calib.source} holds no samples"
        raise DataError(f"{fmt} {precision}: needs calibration data and {given} (pass {opt('--calib', 'calib')})")
    if name is not None and Path(name).suffix.lower() != format_.suffix:  # ONNX bytes in model.tflite
        raise ConfigError(f"name {name!r}: {fmt} files end in {format_.suffix}")
    # the folders it creates are removed again when the export fails (it left empty trees)
    with output_dir(Path(out_dir), "out_dir") as out_dir:
        out = safe_child(out_dir, name or artifact_name(spec, fmt, precision))
        t0 = time.perf_counter()
        try:
            if options.isolate:  # [issue #7] third-party C++ state dies with the child (_isolate.py)
                from edgecompress.exporters._isolate import export_in_child

                # the parent too: its pickled job and the calibration arrays are large blocks as well
                pin_mmap_threshold()
                art = export_in_child(format_.name, spec, precision, out, calib, options)
            else:
                from edgecompress.models.modes import kept_modes

                # the exporters switch the module to eval: a ModelSpec built by hand holds the caller's own
                with kept_modes(spec.module):
                    art = export_in_process(format_, spec, precision, out, calib, options)
        except ImportError as e:  # [issue #7] a runtime / toolkit that is not installed: one line
            from edgecompress.errors import RuntimeMissingError

            pkg = (e.name or str(e)).split(".")[0]
            raise RuntimeMissingError(
                f"{fmt} {precision}: needs the Python package {pkg!r}, which is not "
                f"installed or does not import (pip install {pkg})"
            ) from e
    if qat_note:
        art.details["qat"] = qat_note
    if spec.takes_integers and spec.extra.get("vocab_size"):
        # [audit #27] the ids the file takes stay below it: validation's random inputs (no --eval) too
        art.details["vocab_size"] = int(spec.extra["vocab_size"])
    if spec.extra.get("input_vocab"):  # an .onnx of several inputs: the bound of each input that has one
        art.details["input_vocab"] = {k: int(v) for k, v in spec.extra["input_vocab"].items()}
    art.details["export_seconds"] = round(time.perf_counter() - t0, 2)
    files = artifact_files(art.path, format_.name)
    art.size_bytes = sum(path_size(f) for f in files if f.exists())
    art.sha256 = artifact_hash(files)
    art.path = Path(os.path.relpath(art.path)) if not art.path.is_absolute() else art.path
    return art


def export_in_process(format_: Format, spec: ModelSpec, precision: str, out: Path,
                      calib: Dataset | None, options: ExportOptions) -> Artifact:
    """`format_.export` with the memory measures of _memory.py (also what an isolated child runs)."""
    import random

    import numpy as np
    import torch

    pin_mmap_threshold()  # once per process; the child of an isolated export gets here first
    # The caller's random streams stay as they were: importing litert-torch moved numpy's and
    # random's, and every TFLite int8 conversion drew from torch's (the passes and run_recipe
    # already leave them alone).
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        with torch.random.fork_rng(devices=[]), released_export_state():
            return format_.export(spec, precision, out, calib, options)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


def artifact_files(path: Path | str, fmt: str) -> list[Path]:
    """An artifact's file(s): the main file first, then its format's sibling files (an IR's .bin)."""
    path = Path(path)
    return [path, *(path.with_suffix(s) for s in FORMATS.get(fmt).extra_files)]


def sibling_files(path: Path | str, runtime: str) -> list[Path]:
    """The sibling files of the artifact at `path` that `runtime` runs (an IR's .bin), from its
    format's row: what a remote runner copies beside it (a hand-kept {runtime: suffixes} table in
    the ssh and qemu runners left a new format's sibling files behind)."""
    path = Path(path)
    fmt = next((f for _, f in FORMATS if f.runtime == runtime and f.suffix.lower() == path.suffix.lower()), None)
    return [path.with_suffix(s) for s in (fmt.extra_files if fmt is not None else ())]


def artifact_hash(files: Sequence[Path]) -> str:
    """SHA-256 of an artifact (the manifest's rule): of its one file, or of its files' hashes in order."""
    if len(files) == 1:
        return sha256_file(files[0])
    import hashlib

    h = hashlib.sha256()
    for f in files:
        h.update(sha256_file(f).encode())
    return h.hexdigest()
