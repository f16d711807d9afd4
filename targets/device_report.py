"""`edgecompress validate`: existing artifacts -> one device validation report, a baseline
comparison and CI gates.

- Artifacts come from files or from export directories; a directory's manifest.json is the
  contract: an artifact whose SHA-256 differs from it is refused (one-line error), never measured.
- `baseline.compare_baseline` flags regressions against an older report.json; `gates` holds the
  `--fail-on` gates.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecompress.errors import ConfigError, DataError, InputFileError, OutputError, opt, say
from edgecompress.fileio import json_loads, require_utf8_name
from edgecompress.targets.baseline import ACCURACY_THRESHOLD, compare_baseline
from edgecompress.targets.gates import check_gates_measurable, evaluate_gates, parse_gates

if TYPE_CHECKING:
    from edgecompress.exporters import Artifact
    from edgecompress.report import Report

# ---- loading artifacts ---------------------------------------------------------------------------


def _format_for(path: Path) -> str:
    from edgecompress.exporters import FORMATS

    for name, fmt in FORMATS:
        if path.name.lower().endswith(fmt.suffix):
            return name
    raise InputFileError(f"{path}: unknown artifact type (suffixes: "
                         f"{', '.join(f.suffix for _, f in FORMATS)})")


def _guess_precision(path: Path) -> str:
    """Read from the file; the name only when the file says nothing readable. An int8 file named
    model.onnx was listed as fp32 and became the drift reference of the real fp32 one. A file its
    format's reader cannot read, whose name names no precision, is "unknown": labelled fp32, a
    truncated .tflite's failed row read as "the fp32 artifact failed" (and, given first, it was
    the drift reference). A format with no reader keeps the fp32 default (nothing was unreadable)."""
    unreadable = False
    try:
        if (found := _precision_in_file(path)) is not None:
            return found
    except Exception:  # unreadable: its benchmark fails in one line later
        unreadable = True
    from edgecompress.exporters import FORMATS

    fmt = next((f for _, f in FORMATS if f.suffix.lower() == path.suffix.lower()), None)
    stem = path.stem.lower()
    for p in sorted(fmt.precisions if fmt else (), key=len, reverse=True):  # "int8-dynamic" before "int8"
        if re.search(rf"(^|[-_.]){p}($|[-_.])", stem):  # "print8" is no int8
            return p
    return "unknown" if unreadable else "fp32"


def _precision_in_file(path: Path) -> str | None:
    """The precision its format reads from the file (Format.read_precision); None: no such reader."""
    from edgecompress.exporters import FORMATS

    for _, fmt in FORMATS:
        if fmt.read_precision is not None and fmt.suffix.lower() == path.suffix.lower():
            if path.stat().st_size == 0:  # onnx.load reads 0 bytes as an empty model: "fp32"
                raise ValueError(f"{path}: empty file")
            return fmt.read_precision(path)
    return None


def _artifact_from_file(path: Path, row: dict[str, Any] | None = None,
                        precision: str | None = None) -> Artifact:
    from edgecompress.exporters import FORMATS, Artifact, TensorInfo
    from edgecompress.exporters.api import artifact_files, artifact_hash
    from edgecompress.fileio import path_size
    from edgecompress.targets.validate import takes_ids

    fmt = (row or {}).get("format") or _format_for(path)
    files = artifact_files(path, fmt)
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise InputFileError(f"{path}: missing file(s) {', '.join(missing)}")
    io = (row or {}).get("io", {})
    inputs = [TensorInfo(**t) for t in io.get("inputs", [])]
    outputs = [TensorInfo(**t) for t in io.get("outputs", [])]
    read_io, read_vocab = FORMATS.get(fmt).read_io, FORMATS.get(fmt).read_vocab
    details = dict((row or {}).get("details", {}))
    # A file with no export report beside it: the I/O contract from the file itself (without it,
    # latency-only validation fed an empty input file), and the vocabulary of each input of ids
    # (random latency ids of 0..99 overran a token_type_ids table of 2 rows)
    if not inputs and read_io is not None:
        with contextlib.suppress(Exception):  # unreadable: its benchmark fails in one line
            inputs, outputs = read_io(path)
    if read_vocab is not None and not ({"input_vocab", "vocab_size"} & details.keys()) \
            and any(takes_ids(t) for t in inputs):
        with contextlib.suppress(Exception):
            if vocab := read_vocab(path):
                details["input_vocab"] = vocab
    return Artifact(
        format=fmt, precision=(row or {}).get("precision") or precision or _guess_precision(path),
        path=path, runtime=FORMATS.get(fmt).runtime, model_name=path.stem,
        size_bytes=sum(path_size(f) for f in files),
        sha256=artifact_hash(files),
        inputs=inputs, outputs=outputs, details=details)


def load_artifacts(paths: list[Path]) -> tuple[list[Artifact], dict[str, Any] | None]:
    """Artifacts from files and export directories; the first directory's report.json (if any).

    A directory must hold manifest.json; every artifact listed there is checked against its
    SHA-256 before anything runs.
    """
    arts: list[Artifact] = []
    source_report = None
    for p in map(Path, paths):
        if p.is_dir():
            manifest = p / "manifest.json"
            if not manifest.exists():
                raise InputFileError(f"{p}: no manifest.json (pass artifact files, or an export "
                                     "directory written by `edgecompress export`)")
            try:
                entries = json_loads(manifest.read_text(encoding="utf-8"))["artifacts"]
                if not isinstance(entries, list):  # 5 or null: a TypeError traceback in the loop below
                    raise TypeError(f"'artifacts' is {type(entries).__name__}, not a list")
            except (json.JSONDecodeError, KeyError, TypeError) as err:  # `e` names the entries below
                raise InputFileError(f"{manifest}: not a valid manifest ({err})") from err
            rows = {}
            if (p / "report.json").exists():
                try:
                    # each directory's rows from its own report (the second directory's files got
                    # the first one's calibration details and TFLite I/O scales); the model
                    # summary from the first report
                    own = json_loads((p / "report.json").read_text())
                    rows = {Path(r["path"]).name: r for r in own.get("artifacts", [])}
                    source_report = source_report or own
                except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
                    rows = {}
            for e in entries:
                name = e.get("path") if isinstance(e, dict) else None
                if not isinstance(name, str) or not name:
                    raise InputFileError(f"{manifest}: an artifact entry has no path ({e!r:.80})")
                require_utf8_name(p / name, "artifact", name_only=True)
                if Path(name).name != name:
                    raise InputFileError(f"{manifest}: artifact path {name!r} leaves the directory")
                art = _artifact_from_file(p / name, {**rows.get(name, {}), **{
                    k: e[k] for k in ("format", "precision") if k in e}})
                if art.sha256 != e.get("sha256"):
                    raise InputFileError(
                        f"{p / name}: sha256 {art.sha256[:12]}... does not match manifest.json "
                        f"({str(e.get('sha256'))[:12]}...); refusing a modified artifact")
                arts.append(art)
        elif p.is_file():
            require_utf8_name(p, "artifact", name_only=True)  # the runtimes open it by its name
            arts.append(_artifact_from_file(p))
        else:
            raise InputFileError(f"{p}: no such artifact or directory")
    if not arts:
        raise InputFileError("no artifacts to validate")
    return arts, source_report


# ---- the whole command ---------------------------------------------------------------------------

def _refuse_export_dir(out_dir: Path) -> None:
    """--out holding an export's report is refused: validate replaced its report.json / .md / .html
    and dropped report.png, losing the export's top-1, calibration data and compression steps
    without a word. Told apart by the report's own fields: every export (`export`, `demo`, `run`,
    `compress`) records its calibration data under data.calib (None without int8), a recipe its
    steps; validate writes neither, so a previous `validate --out` is overwritten as before."""
    report = Path(out_dir) / "report.json"
    try:  # is_file() raises on a name too long or with a NUL: output_dir says that in one line
        if not report.is_file():
            return
        manifest = (Path(out_dir) / "manifest.json").is_file()
    except (OSError, ValueError):
        return
    try:
        d = json_loads(report.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # ValueError: JSON and UTF-8 decoding
        d = None
    if isinstance(d, dict):
        data = d.get("data")
        if not ((isinstance(data, dict) and "calib" in data) or d.get("steps")):
            return
        what = "an export's report (report.json written by export / run / compress)"
    elif manifest:  # cannot tell who wrote it: the export's, for all we know
        what = "an export's manifest.json and a report.json validate did not write"
    else:
        return
    shown = Path(out_dir) if Path(out_dir).name not in ("", "..") else Path(out_dir).absolute()
    other = opt("--out", "out_dir", f"{shown}-validate", quoted=True)
    raise OutputError(f"{opt('--out', 'out_dir', out_dir, quoted=True)}: holds {what}; validate would replace it: "
                      f"pass another {say('--out', 'out_dir')} (e.g. {other})")


def _target(profile: Any) -> str:
    """The target as the caller named it: `--target NAME`, or `target='NAME'` from Python."""
    return opt("--target", "target", profile.name, quoted=True)


def _formats_the_target_runs(arts: list[Artifact], paths: list[Path], profile: Any) -> tuple[list[Artifact], list[str]]:
    """Artifacts of a format the target does not run: skipped (and said) when they came from an export
    directory, refused when the user named the file."""
    named = {Path(p).resolve() for p in paths if Path(p).is_file()}
    foreign = [a for a in arts if a.format not in profile.formats]
    for a in foreign:
        if Path(a.path).resolve() in named:
            raise ConfigError(f"{_target(profile)} runs {', '.join(profile.formats)}; not {a.format} "
                              f"({a.path}): validate only the files of formats it runs")
    kept = [a for a in arts if a.format in profile.formats]
    if not kept:
        raise ConfigError(f"{_target(profile)} runs {', '.join(profile.formats)}; "
                          "none of the artifacts given is one")
    skipped = [f"{Path(a.path).name} ({a.format})" for a in foreign]
    if skipped:
        print(f"note: {_target(profile)} does not run {', '.join(sorted({a.format for a in foreign}))}; "
              f"skipped {', '.join(skipped)}", file=sys.stderr)
    return kept, skipped


# ---- which files are one model ------------------------------------------------------------------
# Loose files may be of different models (a.onnx an fp32 export, b.onnx another, pruned model's
# int8): paired by precision and format alone, b got a speed-up, a size ratio and "drift" against
# a's outputs. What the files say decides: per-sample input and output sizes (any two formats:
# layouts and names differ between them), exact shapes and names between two ONNX files, and the
# ONNX weight count (elements of its initializers of rank >= 2: the same for fp32, int8 QDQ and
# int8-dynamic files of one model, since scales, zero points and biases are rank 0-1; pruning
# changes it). OpenVINO and TFLite weights are not counted (their int8 files add rank-4
# quantization constants), so two files of those formats are compared by I/O only.


def _per_sample(shape: list[Any]) -> int | None:
    """Elements per sample (dims after the batch), None when a dim is symbolic."""
    dims = list(shape[1:])
    return math.prod(dims) if all(isinstance(d, int) and d > 0 for d in dims) else None


def _onnx_weight_count(path: Path) -> int | None:
    import onnx

    from edgecompress.exporters.onnx import weight_count

    try:  # the graph only: external weights are not read, their dims are in the graph
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception:  # unreadable: its benchmark fails in one line
        return None
    return weight_count(graph)


def model_mismatch(ref: Artifact, art: Artifact, weights: dict[str, int | None]) -> str | None:
    """Why `art` is not a file of `ref`'s model (one phrase), or None when nothing says so.
    `weights`: ONNX weight counts by path (memoized by the caller)."""
    for kind, mine, theirs in (("inputs", art.inputs, ref.inputs), ("outputs", art.outputs, ref.outputs)):
        if not mine or not theirs:  # unread: nothing to compare
            continue
        if len(mine) != len(theirs):
            return f"{len(mine)} {kind} vs {len(theirs)}"
        for a, b in zip(mine, theirs, strict=True):
            na, nb = _per_sample(a.shape), _per_sample(b.shape)
            if na is not None and nb is not None and na != nb:
                return f"{kind[:-1]} {a.name} of {na} values per sample vs {nb}"
            if art.format == ref.format == "onnx":
                if a.name != b.name:
                    return f"{kind[:-1]} named {a.name} vs {b.name}"
                fixed = [(x, y) for x, y in zip(a.shape[1:], b.shape[1:], strict=False)
                         if isinstance(x, int) and isinstance(y, int)]
                if len(a.shape) != len(b.shape) or any(x != y for x, y in fixed):
                    return f"{kind[:-1]} {a.name} of shape {a.shape} vs {b.shape}"
    if art.format == ref.format == "onnx":
        for f in (art, ref):
            if str(f.path) not in weights:
                weights[str(f.path)] = _onnx_weight_count(Path(f.path))
        mine_w, ref_w = weights[str(art.path)], weights[str(ref.path)]
        # 1 % of slack: a converter's stray constant must not split one model in two; pruning
        # removes far more
        if mine_w and ref_w and abs(mine_w - ref_w) > 0.01 * ref_w:
            return f"{mine_w:,} weights vs {ref_w:,}"
    return None


def _reference_artifact(arts: list[Artifact]) -> Artifact | None:
    """The fp32 artifact drift is measured against: ONNX first (its runtime is the reference one)."""
    from edgecompress.exporters import FORMATS

    def rank(a: Artifact) -> int:
        return FORMATS.get(a.format).reference_rank if a.format in FORMATS else 9

    fp32 = sorted((a for a in arts if a.precision == "fp32"), key=rank)
    return fp32[0] if fp32 else None


def model_groups(arts: list[Artifact], weights: dict[str, int | None] | None = None) -> list[int]:
    """A model number per artifact: the first artifact it is no other model's file of (in order).
    `weights`: ONNX weight counts by path, shared with the caller's other checks."""
    weights = {} if weights is None else weights
    heads: list[Artifact] = []
    out = []
    for a in arts:
        g = next((i for i, h in enumerate(heads) if model_mismatch(h, a, weights) is None), None)
        if g is None:
            heads.append(a)
            g = len(heads) - 1
        out.append(g)
    return out


def _reference_outputs(arts: list[Artifact], eval_path: Path, settings: Any) -> tuple[Any, str]:
    """fp32 outputs to measure drift against, and the name of the file they come from: the fp32
    artifact (ONNX first), run here."""
    import numpy as np

    from edgecompress.targets.runners.local import BenchRequest, LocalRunner

    ref = _reference_artifact(arts)
    if ref is None:
        return None, ""
    with tempfile.TemporaryDirectory(prefix="edgecompress-ref-") as td:
        out = Path(td) / "ref.npy"
        req = BenchRequest.for_artifact(ref, settings, inputs=eval_path, outputs=out)
        # only its outputs are used: one run, on one thread, at batch 1
        LocalRunner().run(replace(req, threads=1, batches=(1,), warmup=0, runs=1))
        return np.load(out), Path(ref.path).name


def _other_models(arts: list[Artifact], ref_file: str,
                  weights: dict[str, int | None]) -> tuple[list[str], set[int]]:
    """Files that are not of the fp32 reference's model: each said (report and stderr), and their
    indices, which get no drift against it. Without a reference (no --eval), still said when no
    fp32 file of their format is of their model: they get no speed-up or size ratio."""
    from edgecompress.report.render import file_labels

    ref = _reference_artifact(arts) if ref_file else None
    # names with the folders that tell apart two models' files of one name
    label = dict(zip(map(id, arts), file_labels([a.path for a in arts]), strict=True))
    said, no_ref = [], set()
    for i, a in enumerate(arts):
        if ref is not None and a is not ref and (why := model_mismatch(ref, a, weights)):
            no_ref.add(i)
            said.append(f"{label[id(a)]}: another model than the reference {label[id(ref)]} "
                        f"({why}): no drift against it")
        elif ref is None:
            fp32 = [f for f in arts if f.precision == "fp32" and f.format == a.format and f is not a]
            whys = [why for f in fp32 if (why := model_mismatch(f, a, weights))]
            if fp32 and len(whys) == len(fp32):
                said.append(f"{label[id(a)]}: another model than {label[id(fp32[0])]} ({whys[0]})")
    for n in said:
        print(f"note: {n}", file=sys.stderr)
    return said, no_ref


def validate_artifacts(paths: list[Path], target: str, out_dir: Path, eval: str | None = None,
                       baseline: Path | None = None, fail_on: list[str] | None = None,
                       settings: Any = None, preprocess: str | None = None, command: str = "",
                       threshold: float = 0.05, progress: bool = True,
                       accuracy_threshold: float = ACCURACY_THRESHOLD,
                       fail_on_regression: bool = False) -> tuple[Report, dict, list[str]]:
    """Validate existing artifacts on `target`; write the report; return it, its paths and the
    gate failures (the caller decides the exit code)."""
    from edgecompress.fileio import exclusive_dir, output_dir, remove_stale_temps
    from edgecompress.report import Report, write_report
    from edgecompress.targets import ValidateSettings, get_target, validate
    from edgecompress.targets.metrics import classification_metrics
    from edgecompress.targets.validate import _inputs_file, nchw_shape, takes_ids

    gates = parse_gates(fail_on or [])  # a malformed gate fails before anything runs
    _refuse_export_dir(Path(out_dir))  # before any work; checked again under the lock
    # 1 itself is refused too: the natural slip for "1 %" / "1 point" read as 100 %, 100 points,
    # and no drop of top-1, agreement or cosine could ever be a regression
    if not 0 <= threshold < 1:  # also NaN; -1 made an unchanged run a regression, 5 meant 500 %
        raise ConfigError(f"{opt('--threshold', 'threshold', threshold)}: a relative change, at least 0 and below 1 "
                          "(0.05 = 5 %"
                          f"{'; did you mean 0.01?' if threshold == 1 else ''})")
    if not 0 <= accuracy_threshold < 1:  # a drop in points as a fraction: 1 meant 1 pt, not 100
        raise ConfigError(f"{opt('--accuracy-threshold', 'accuracy_threshold', accuracy_threshold)}: an absolute "
                          "drop, at least 0 and below 1 "
                          f"(0.01 = 1 point{'; did you mean 0.01?' if accuracy_threshold == 1 else ''})")
    profile = get_target(target)
    settings = settings or ValidateSettings()
    if preprocess:
        from edgecompress.data.presets import PRESETS

        PRESETS.get(preprocess, "--preprocess", "preprocess")
    check_gates_measurable(gates, profile, has_eval=bool(eval), batches=settings.batches)
    arts, source = load_artifacts(paths)
    arts, skipped = _formats_the_target_runs(arts, paths, profile)
    from edgecompress.targets.runners.estimate import preflight

    preflight(profile)  # unreachable host / no phone / no rootfs / missing [hardware]: one error, nothing written
    from edgecompress.targets.validate import check_threads

    check_threads(profile, settings)  # --threads 8 on a 4-core board: before the reference runs
    base = None
    if baseline is not None:
        from edgecompress.report import Report as _R

        base = _R.load(baseline).to_dict()
    # a failed run (bad --eval data, an unreachable device) removes the folder it made: it left an
    # empty --out behind. One writer per folder, as for export: an export and a validate (or two
    # validates) into one --out both exited 0 and one report was silently lost.
    with output_dir(Path(out_dir)) as out_dir, exclusive_dir(out_dir):
        _refuse_export_dir(out_dir)  # an export may have finished there since the check above
        remove_stale_temps(out_dir)  # a killed run's temp files: no live writer owns them now
        model = dict((source or {}).get("model", {})) or {"name": Path(arts[0].path).stem}
        ev, ref, reference, ref_file = None, None, {}, ""
        preset: str | None = None
        from edgecompress.targets.runners.estimate import runner_name_for

        eval_ignored = None
        if eval and runner_name_for(profile) == "estimate":
            # nothing runs on an estimated target: the fp32 reference ran here for nothing and the
            # report listed evaluation data next to rows that measured none
            print(f"note: {_target(profile)} is estimated here (no device attached): nothing runs, "
                  f"so {opt('--eval', 'eval')} is not used", file=sys.stderr)
            eval_ignored, eval = str(eval), None  # the report says so too: "no --eval" read the same
        if eval:
            from edgecompress.data.resolve import load_for_input

            shape = model.get("input_shape") or []
            if len(shape) != 4 and arts[0].inputs:  # loose files: the size from the file's own input
                shape = nchw_shape(arts[0])
            preset = _eval_preset(eval, preprocess, model.get("preprocess"))
            ids = bool(arts[0].inputs) and takes_ids(arts[0].inputs[0])
            if ids:
                _refuse_images_for_ids(eval, arts[0])
            # images at the input's (height, width), in its layout (a channels-last model's too)
            ev = load_for_input(eval, shape, preset or "efficientnet-lite", "evaluation", progress)
            _check_eval_shape(ev, shape, eval, arts[0].inputs[0].dtype if arts[0].inputs else "", ids)
            with tempfile.TemporaryDirectory(prefix="edgecompress-eval-") as td:
                ref, ref_file = _reference_outputs(arts, _inputs_file(ev, Path(td)), settings)
            if ref is not None:
                try:
                    reference = classification_metrics(ref, ev.y)
                except DataError as e:  # named the labels' file and flag nowhere
                    raise DataError(f"{opt('--eval', 'eval', ev.source, quoted=True)}: {e}") from None
        weights: dict[str, int | None] = {}  # each ONNX file's graph read once for both checks
        other_model, no_ref = _other_models(arts, ref_file, weights)
        measurements = validate(arts, profile, ev, ref, settings, progress, no_reference=no_ref)
        report = Report.from_measurements(
            measurements, model=model, target=profile.name, reference=reference,
            data={"eval": ev.source if ev else None, "eval_n": len(ev) if ev else 0,
                  **({"eval_preprocess": preset} if ev is not None and preset else {}),
                  "labelled": bool(ev is not None and ev.y is not None),
                  "reference": f"outputs of {ref_file} (fp32) on this machine" if ref_file else "",
                  **({"reference_file": ref_file} if ref_file else {}),
                  **({"skipped": skipped} if skipped else {}),
                  **({"other_model": other_model} if other_model else {}),
                  **({"eval_ignored": eval_ignored} if eval_ignored else {})},
            command=command)
        for a, row in zip(arts, report.artifacts, strict=True):
            # as an export records it: a baseline comparison tells another model's file by it
            if a.format == "onnx" and isinstance(row.get("details"), dict) and "weights" not in row["details"]:
                if str(a.path) not in weights:
                    weights[str(a.path)] = _onnx_weight_count(Path(a.path))
                if weights[str(a.path)]:
                    row["details"]["weights"] = weights[str(a.path)]
        groups = model_groups(arts, weights)
        if len(set(groups)) > 1:  # speed-up and size ratio pair rows of one model only (render._fp32_of)
            for row, g in zip(report.artifacts, groups, strict=True):
                row["model_group"] = g
        if base is not None:
            report.baseline = compare_baseline(report, base, str(baseline), threshold, out_dir,
                                               accuracy_threshold)
            # the report's verdict judges regressions as the exit code will (they fail the run
            # only under --fail-on-regression): report.json said passed where the run exited 4
            report.baseline["fail_on_regression"] = fail_on_regression
        try:
            failures = evaluate_gates(report, gates, out_dir)  # before writing: the report records the outcome
        except ConfigError:  # a gate no artifact could answer: the measurements are still written
            write_report(report, out_dir)
            raise
        written = write_report(report, out_dir)
        return report, written, failures


def _eval_preset(eval: str, flag: str | None, exported: str | None) -> str | None:
    """The preset --eval images are read with: --preprocess when given (it overrides the export's,
    with a note when they differ), else the export's (in its report.json), else None (the
    loader's EfficientNet-Lite default). None for tensor files, which are read as they are."""
    from edgecompress.data import DataSpec
    from edgecompress.data.datasets import TENSOR_SUFFIXES

    if Path(DataSpec.parse(eval).path).suffix.lower() in TENSOR_SUFFIXES:
        return None
    if flag and exported and flag != exported:
        print(f"note: {opt('--preprocess', 'preprocess', flag, quoted=True)} overrides the export's preset "
              f"({exported}) for the {say('--eval', 'evaluation')} images", file=sys.stderr)
    return flag or exported


def _check_eval_shape(ev: Any, shape: list[Any], flag_value: str, dtype: str = "", ids: bool = False) -> None:
    """--eval samples against the artifacts' input (NCHW, symbolic dims skipped; a float input, or
    an int8 one the runner quantizes float data for; integers for a file of ids, `ids`), before
    any run: a wrong set was reported as every artifact's benchmark failure (exit 4, naming the
    file rather than the data)."""
    if isinstance(ev.x, dict) or len(shape) < 2:  # token sets: the runners pad them to the file
        return
    given = opt("--eval", "eval", flag_value, quoted=True)
    if ids and ev.x.dtype.kind not in "iu":  # [audit #27]
        raise DataError(f"{given}: dtype {ev.x.dtype} but the artifacts take {dtype} ids (save the "
                        "token / class ids as integers, x.astype(np.int64))")
    if not ids and (dtype.startswith("float") or dtype in ("int8", "uint8")) and ev.x.dtype.kind != "f":
        raise DataError(f"{given}: dtype {ev.x.dtype} but the artifacts take float samples "
                        "(save preprocessed float32 arrays)")
    from edgecompress.targets.validate import shape_misfit

    if (shown := shape_misfit(list(shape), ev.x.shape)) is not None:
        raise DataError(f"{given}: samples have shape {tuple(ev.x.shape[1:])} but the artifacts "
                        f"take {shown} (check {opt('--preprocess', 'preprocess')}, or the data)")


def _refuse_images_for_ids(eval: str, art: Any) -> None:
    """[audit #27] --eval images (or a CSV of them) for artifacts of integer ids: refused before
    every image is decoded only to be refused as float samples."""
    from edgecompress.data import DataSpec
    from edgecompress.data.datasets import TENSOR_SUFFIXES

    path = Path(DataSpec.parse(eval).path).expanduser()
    if path.exists() and path.suffix.lower() not in TENSOR_SUFFIXES:
        what = "an image folder" if path.is_dir() else f"a {path.suffix or 'extensionless'} file"
        raise DataError(f"{opt('--eval', 'eval', eval, quoted=True)}: {what}, but {art.path} takes "
                        f"{art.inputs[0].dtype} ids; give a .npy / .npz of integer ids")
