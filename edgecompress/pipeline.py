"""The one pipeline: load -> (compress passes) -> export -> validate -> report.

Each stage is a plain function over dataclasses (ModelSpec, Dataset, Artifact, Measurement,
Report); `run_export` only chains them, so any stage can be called alone from Python.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from edgecompress.data import DataLike, Dataset, DataSpec
from edgecompress.data.resolve import resolve_data
from edgecompress.errors import (
    ConfigError,
    DataError,
    EdgeCompressError,
    InputFileError,
    formats_given_as,
    named,
    opt,
    say,
)
from edgecompress.exporters import FORMATS, Artifact, ExportOptions, export
from edgecompress.exporters.api import artifact_files
from edgecompress.fileio import (
    TEMP_PREFIX,
    exclusive_dir,
    output_dir,
    remove_stale_temps,
    results_landing,
    write_json_atomic,
)
from edgecompress.models import ModelLike, ModelSpec, ShapeLike, count_params_macs, load_model
from edgecompress.report import Report, write_report
from edgecompress.targets import Measurement, TargetProfile, ValidateSettings, reference_outputs, validate

if TYPE_CHECKING:
    from edgecompress.data.presets import Transform
    from edgecompress.targets.gates import Gate


@dataclass
class ExportJob:
    """Everything `edgecompress export` does, as data."""

    model: ModelLike
    # "onnx:int8" / "onnx" strings or (format, precision) pairs, or one of them; __post_init__
    # turns them into pairs (`format_pairs`)
    formats: str | tuple[str, str] | Sequence[str | tuple[str, str]]
    out_dir: str | os.PathLike[str]  # a Path after __post_init__
    calib: DataLike | None = None
    eval: DataLike | None = None
    target: str = "x86-local"
    options: ExportOptions = field(default_factory=ExportOptions)
    settings: ValidateSettings = field(default_factory=ValidateSettings)
    do_validate: bool = True
    input_shape: ShapeLike | None = None
    input_dtype: str | None = None  # float32 / int64 / int32 (a module:factory model's input)
    weights: str | os.PathLike[str] | None = None
    preprocess: str | Transform | None = None
    command: str = ""
    progress: bool = True
    # [issue #4] compression steps recorded by the recipe runner (Report.steps), and a ModelSpec
    # `model` may already be int8 from QAT (then params/MACs come from the float model it had).
    steps: list[dict[str, Any]] = field(default_factory=list)
    # Files a caller writes into out_dir after the report and before the manifest (the recipe
    # runner's steps.json, step weights and recipe.resolved.yaml): the manifest is the last file
    # of a complete run, so a run killed before it looks unfinished. Returns {kind: path}.
    write_before_manifest: Callable[[], dict[str, Path]] | None = None
    # Formats whose int8 came from `--int8` (not an explicit `format:int8`): each format may pick
    # what int8 means for the loaded model (Format.int8_for; ONNX encoders -> int8-dynamic).
    auto_int8: tuple[str, ...] = ()
    # --fail-on gates ('drift.top1_agreement<0.97'), as `validate` takes them: recorded in the
    # report's `gates`; the CLI exits 4 when one fails (a CI gate without a second measurement)
    fail_on: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # The CLI's spellings from Python: "onnx:int8" / "onnx" items (a str item failed as "too
        # many values to unpack" deep in run_export) and a str out_dir.
        from edgecompress.exporters import resolve_formats

        items: Any = self.formats
        if isinstance(items, str) or (isinstance(items, tuple) and len(items) == 2
                                      and all(isinstance(v, str) for v in items)):
            items = [items]  # one format: "onnx:int8" or ("onnx", "int8")
        pairs: list[tuple[str, str]] = []
        for item in items:
            if isinstance(item, str):
                pairs += [p for p in resolve_formats([item]) if p not in pairs]
            elif isinstance(item, tuple | list) and len(item) == 2 and all(isinstance(v, str) for v in item):
                pairs.append((item[0], item[1]))
            else:
                raise ConfigError(f"ExportJob.formats: expected 'format[:precision]' strings or (format, precision) "
                                  f"pairs, got {item!r}")
        self.formats = pairs
        self.out_dir = Path(self.out_dir)
        if self.input_dtype is not None:  # a typo fails before the target's preflight and any work
            from edgecompress.models.spec import check_input_dtype

            self.input_dtype = check_input_dtype(self.input_dtype)

    @property
    def format_pairs(self) -> list[tuple[str, str]]:
        """`formats` as (format, precision) pairs, which __post_init__ made them."""
        return cast("list[tuple[str, str]]", self.formats)


def adapt_int8(spec: ModelSpec, formats: list[tuple[str, str]], auto: tuple[str, ...],
               progress: bool = True, options: ExportOptions | None = None) -> list[tuple[str, str]]:
    """`formats` with each `--int8` pair of a format in `auto` replaced by that format's int8
    precision for `spec` under `options`; a note says what changed, with or without `progress`
    (--no-progress is for bars: a build log must still learn that another precision was written)."""
    from edgecompress.exporters import FORMATS

    out: list[tuple[str, str]] = []
    for fmt, precision in formats:
        if precision == "int8" and fmt in auto:
            chosen = FORMATS.get(fmt).int8_precision(spec, options)
            if chosen != precision:
                if fmt == "tflite" and spec.takes_integers:  # a plain tflite:int8 of ids is refused
                    other = (f"or tflite:int8 with {say('--allow-mixed', 'ExportOptions(allow_mixed=True)')} "
                             "for a mixed file of int8 layers and float ops")
                else:
                    other = f"ask for {fmt}:int8 explicitly for the other route"
                print(f"note: {say('--int8', 'auto_int8')} on {spec.name} ({spec.task}): {fmt} uses {chosen} "
                      f"({other})", file=sys.stderr)
            precision = chosen
        if (fmt, precision) not in out:
            out.append((fmt, precision))
    return out


def note_unused_allow_mixed(formats: list[tuple[str, str]], options: ExportOptions | None, label: str) -> None:
    """A note on stderr when `options` allow a mixed file (`label`: the option as the caller set
    it) but no tflite int8 is exported, the only export it changes: it did nothing, silently."""
    if options is not None and options.allow_mixed and ("tflite", "int8") not in formats:
        print(f"note: {label} has no effect: it only applies to tflite int8, which this run does not export",
              file=sys.stderr)


def onnx_reference(path: Path, data: Dataset) -> Any:
    """fp32 outputs of an ONNX model (for ONNX inputs, which have no PyTorch module)."""
    import onnxruntime as ort

    # [audit C #7] The .onnx is the user's file and this is the first time ONNX Runtime runs it:
    # an op it does not know, or a graph that fails on the data's shapes, is an input problem,
    # said in one line naming the file (it was a traceback).
    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        outs = [sess.run(None, dict(xb) if isinstance(xb, dict) else {name: xb})[0]
                for xb in data.batches(1)]
    except Exception as e:
        # ORT's "[ONNXRuntimeError] : 1 : FAIL : Load model from PATH failed:" says nothing new
        text = re.sub(r"\[ONNXRuntimeError\] : \d+ : \w+ : |Load model from .*? failed:", "",
                      " ".join(str(e).split())).strip()
        raise InputFileError(f"{named('model', path)}: ONNX Runtime cannot run it on {data.source} "
                             f"({type(e).__name__}: {text[:240] or '?'})") from e
    return np.concatenate([o.reshape(o.shape[0], -1) for o in outs]).astype(np.float32)


def write_manifest(out_dir: Path, artifacts: list[Artifact]) -> Path:
    """SHA-256 of every artifact, written last: `validate` refuses an artifact that differs."""
    entries = [{"path": Path(a.path).name, "format": a.format, "precision": a.precision,
                "sha256": a.sha256, "size_bytes": a.size_bytes} for a in artifacts]
    return write_json_atomic(Path(out_dir) / "manifest.json", {"artifacts": entries})


def _move_into(art: Artifact, out_dir: Path) -> Artifact:
    """An exported artifact's file(s) renamed into `out_dir` (same filesystem); the main file last,
    as the exporters commit it (an IR's .xml after its .bin)."""
    main, *siblings = artifact_files(art.path, art.format)
    for f in [*siblings, main]:
        os.replace(f, out_dir / f.name)
    return replace(art, path=out_dir / main.name)


def _relocated(m: Measurement, staging: Path, out_dir: Path) -> Measurement:
    """A measurement taken in the staging folder, with its paths (the artifact's, and any in an
    error or note) naming the file where it now lies."""
    def swap(v: Any) -> Any:
        if isinstance(v, str):
            return v.replace(str(staging), str(out_dir))
        if isinstance(v, dict):
            return {k: swap(x) for k, x in v.items()}
        if isinstance(v, list):
            return [swap(x) for x in v]
        return v

    return replace(m, **{f.name: swap(getattr(m, f.name)) for f in fields(m)})


def _note_foreign_artifacts(out_dir: Path, artifacts: list[Artifact], source: str = "") -> None:
    """Say which model files in `out_dir` this run did not write (an earlier run's other formats):
    they stay (edgecompress removes nothing of yours), but are in neither report nor manifest, and
    a build step globbing `out/*.tflite` would ship them."""
    ours = {f.name for a in artifacts for f in artifact_files(a.path, a.format)}
    with contextlib.suppress(OSError, ValueError):  # the model exported (`export m.onnx --out .`)
        if source and Path(source).resolve().parent == out_dir.resolve():
            ours.add(Path(source).name)
    suffixes = _model_suffixes()
    other = sorted(f.name for f in out_dir.iterdir() if f.is_file() and f.suffix in suffixes
                   and f.name not in ours)
    if other:
        print(f"note: {out_dir} also holds {len(other)} model file(s) this run did not write, listed in neither "
              f"report.json nor manifest.json: {', '.join(other[:6])}{', ...' if len(other) > 6 else ''}",
              file=sys.stderr)


def _model_suffixes() -> set[str]:
    """Suffixes of model files: every format's (with its sibling files), the .pt2 and external .data inputs."""
    from edgecompress.exporters import FORMATS

    return {".pt2", ".data", *(s for _, f in FORMATS for s in (f.suffix, *f.extra_files))}


def run_export(job: ExportJob) -> tuple[Report, dict[str, Path]]:
    # [issue #7] One writer per output directory; temp files of a killed earlier run are removed.
    # advice to use another format names the job's `formats=['onnx']`, not export()'s `fmt`
    with output_dir(Path(job.out_dir)) as out_dir, exclusive_dir(out_dir), formats_given_as("formats"):
        remove_stale_temps(out_dir)
        return _run_export(job, out_dir)


def _preflight(job: ExportJob) -> tuple[list[Gate], TargetProfile | None]:
    """The parsed --fail-on gates and the target, checked before any work: a typo, an unreachable
    device or --threads 99 fails in a second and leaves nothing behind."""
    from edgecompress.targets import get_target
    from edgecompress.targets.gates import parse_gates

    gates = parse_gates(job.fail_on)  # a malformed gate fails before any work
    if gates and not job.do_validate:
        turn_on = say("drop --no-validate", "set do_validate=True", "set options.validate_artifacts: true")
        raise ConfigError(f"{opt('--fail-on', 'fail_on', repr(gates[0].text))}: gates need measurements; {turn_on}")
    # the name and the formats it runs even with --no-validate: a typo was recorded as the
    # report's target, and a format the device does not run was exported for it
    profile = get_target(job.target)
    profile.check_formats([f for f, _ in job.format_pairs])
    if not job.do_validate:
        return gates, None
    # [issue #7] an unreachable device too (runners with a preflight)
    from edgecompress.targets.runners.estimate import preflight
    from edgecompress.targets.validate import check_threads

    preflight(profile)
    check_threads(profile, job.settings)  # --threads 99 failed after the export had written files
    return gates, profile


def _check_gates_measurable(gates: list[Gate], profile: TargetProfile | None, ev: Dataset | None,
                            job: ExportJob) -> None:
    """Accuracy / drift gates without evaluation data, or on an estimate, are refused before any work."""
    from edgecompress.targets.gates import check_gates_measurable

    check_gates_measurable(gates, profile, has_eval=ev is not None, batches=job.settings.batches)
    if ev is not None and ev.y is None and any(g.path[0] == "metrics" for g in gates):
        g = next(g for g in gates if g.path[0] == "metrics")
        raise ConfigError(f"{opt('--fail-on', 'fail_on', repr(g.text))}: metrics need labelled evaluation data; "
                          f"{ev.source} has no labels (gate on drift.top1_agreement instead)")


def _params_macs(spec: ModelSpec) -> tuple[int, int]:
    """The source model's parameters and MACs for the report."""
    try:
        return count_params_macs(spec)  # [issue #4] a QAT graph: its pass's recorded counts
    except EdgeCompressError as e:
        # The counts are for the report only: a model Torch-Pruning cannot run with hooks still
        # exports. The report gives 0 MACs (as for an .onnx in) and the parameters counted here.
        print(f"note: {e}; the report gives 0 MACs", file=sys.stderr)  # a note, not a bar: always
        return (sum(p.numel() for p in spec.module.parameters()) if spec.module is not None else 0), 0


def _fp32_reference(spec: ModelSpec, ev: Dataset | None, progress: bool) -> tuple[np.ndarray | None, dict[str, Any]]:
    """The fp32 outputs every artifact is compared with, and their metrics; (None, {}) without
    evaluation data or a model to run (a .pt2 in)."""
    if ev is None or (spec.module is None and spec.onnx_path is None):
        return None, {}
    from edgecompress.targets.metrics import task_metrics

    if spec.module is not None:
        # [issue #4] a QAT model's reference is the float model before QAT, not its int8 graph
        ref_module = spec.extra.get("fp32_reference") or spec.module
        ref_out = reference_outputs(ref_module, ev, progress=progress)
    else:  # an ONNX model in: its own fp32 outputs are the reference
        assert spec.onnx_path is not None  # the condition above
        ref_out = onnx_reference(spec.onnx_path, ev)
    try:
        return ref_out, task_metrics(ref_out, ev)  # top-1/5, or Spearman for STS pairs
    except DataError as e:
        raise DataError(f"evaluation data {ev.source}: {e}") from None


def _unused_data(data: Any, option: tuple[str, str], why: str) -> None:
    """A data path the run will not read is still checked (a typo in a build script passed until
    someone added --int8 or dropped --no-validate, and then broke the build), and a note says it
    is unused. Samples in memory pass silently: a recipe hands its training set over either way."""
    if not isinstance(data, str | Path | DataSpec):
        return
    spec = DataSpec.parse(str(data)) if isinstance(data, str | Path) else data
    path = Path(spec.path).expanduser()
    if not path.exists():
        raise InputFileError(f"{opt(*option, path, quoted=True)}: no such file or directory (unused by this run: "
                             f"{why})")
    lo, hi = spec.start or 0, spec.stop
    # a range that selects nothing whatever the file holds ([10:5], [:0]) fails now too
    if hi is not None and lo >= 0 and hi >= 0 and hi <= lo:
        raise DataError(f"{opt(*option, data, quoted=True)}: the range selects no samples (unused by this run: {why})")
    print(f"note: {opt(*option, data, quoted=True)} is not used: {why}", file=sys.stderr)


def _run_export(job: ExportJob, out_dir: Path) -> tuple[Report, dict[str, Path]]:
    gates, profile = _preflight(job)
    # a ModelSpec too: its input_shape / weights / preprocess were dropped without a word (an
    # export of untrained weights passed); load_model refuses or applies them as for a reference
    spec = load_model(job.model, job.input_shape, job.weights, job.preprocess, input_dtype=job.input_dtype)
    for fmt, _ in job.format_pairs:  # before any calibration or export
        FORMATS.get(fmt, "--format", "formats").check_source(spec, "formats")
    formats = adapt_int8(spec, job.format_pairs, job.auto_int8, job.progress, job.options)
    if not job.steps:  # a recipe's run (steps recorded) said it in its own words, before its passes
        note_unused_allow_mixed(formats, job.options, say("--allow-mixed", "ExportOptions(allow_mixed=True)"))
    for fmt, precision in formats:  # what a format refuses at a precision (tflite int8 of ids), before any work
        FORMATS.get(fmt).check_model(spec, precision, job.options)
    needs_calib = any(p == "int8" for _, p in formats)
    if not needs_calib:
        _unused_data(job.calib, ("--calib", "calib"), "no int8 precision is asked for")
    if not job.do_validate:
        _unused_data(job.eval, ("--eval", "eval"), "validation is off")
    calib = resolve_data(spec, job.calib, "calibration", job.progress) if needs_calib else None
    if needs_calib and (calib is None or len(calib) == 0):
        raise DataError(f"int8 needs calibration data and none was given or found (pass {opt('--calib', 'calib')})")
    ev = resolve_data(spec, job.eval, "evaluation", job.progress) if job.do_validate else None
    if gates:
        _check_gates_measurable(gates, profile, ev, job)
    params, macs = _params_macs(spec)
    # [issue #7] The fp32 reference comes BEFORE exporting: bad evaluation data (labels beyond
    # the model's classes...) then fails with nothing written.
    ref_out, reference = _fp32_reference(spec, ev, job.progress) if job.do_validate else (None, {})
    measurements = []
    # Every format is exported into a staging folder inside out_dir and moved into place only
    # when all succeeded: a run failing at its third format left the first two beside an older
    # run's report, with that run's manifest already deleted. Now a failed run changes nothing.
    # They are validated there too: moved in before validation, a run interrupted or failing while
    # it measured left new artifacts beside the previous run's report, with no manifest.
    staging = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}run-", dir=out_dir))
    # Ctrl-C / SIGTERM from the first move into out_dir until the manifest is written are held
    # (results_landing) and delivered when the stack closes: the folder is one run's, whole
    with contextlib.ExitStack() as landing:
        try:
            staged = []
            for fmt, precision in formats:
                if job.progress:
                    print(f"exporting {spec.name} -> {fmt} {precision}", file=sys.stderr)
                staged.append(export(spec, fmt, precision, staging, calib, replace(job.options, progress=job.progress)))
            if job.do_validate:
                measurements = validate(staged, profile or job.target, ev, ref_out, job.settings, job.progress,
                                        spec.task)
            else:
                measurements = [Measurement(artifact=a.to_dict(), target=job.target, status="not-validated")
                                for a in staged]
            if gates:  # a gate no figure answers fails here, before anything moves into out_dir
                from edgecompress.targets.gates import evaluate_gates

                evaluate_gates(Report.from_measurements(measurements, model={}, target=job.target), gates)
            # [issue #7] From here on artifacts get replaced: drop the old manifest first, so a manifest
            # on disk always describes a complete run (a killed run leaves none, never a stale one).
            landing.enter_context(results_landing(out_dir))
            (out_dir / "manifest.json").unlink(missing_ok=True)
            artifacts = [_move_into(a, out_dir) for a in staged]
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        measurements = [_relocated(m, staging, out_dir) for m in measurements]
        _note_foreign_artifacts(out_dir, artifacts, spec.source)
        report = Report.from_measurements(
            measurements,
            model={"name": spec.name, "source": spec.source, "params": params, "macs": macs,
                   "input_shape": list(spec.input_shape), "task": spec.task,
                   # [audit #27] integer ids in (what the files take): float32 is left unsaid
                   **spec.input_dtype_fields(),
                   # a named preset only (a Python callable is not data): `validate --eval images/`
                   # preprocesses with it, as the export did
                   **({"preprocess": spec.preprocess} if isinstance(spec.preprocess, str) else {})},
            target=job.target,
            reference=reference,
            data={"calib": calib.source if calib else None, "calib_n": len(calib) if calib else 0,
                  "eval": ev.source if ev else None, "eval_n": len(ev) if ev else 0,
                  "labelled": bool(ev is not None and ev.y is not None)},
            command=job.command or " ".join(shlex.quote(a) for a in sys.argv),
            steps=job.steps,  # [issue #4]
        )
        if gates:  # recorded in the report before it is written; failures: passed False
            from edgecompress.targets.gates import evaluate_gates

            evaluate_gates(report, gates, out_dir)
        paths = write_report(report, out_dir)
        if job.write_before_manifest is not None:
            paths.update(job.write_before_manifest())
        paths["manifest"] = write_manifest(out_dir, artifacts)
        return report, paths
