"""`edgecompress validate`: existing artifacts -> one device validation report, a baseline
comparison and CI gates.

- Artifacts come from files or from export directories; a directory's manifest.json is the
  contract: an artifact whose SHA-256 differs from it is refused (one-line error), never measured.
- `compare_baseline` flags regressions over a threshold (5 % by default) against an older
  report.json: latency up, size up, accuracy / agreement down (relative change).
- `--fail-on` gates are parsed by a tiny grammar (`path.to.metric OP number`), never `eval`.
"""

from __future__ import annotations

import contextlib
import json
import operator
import os
import re
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecompress.errors import ConfigError, DataError, InputFileError, OutputError
from edgecompress.fileio import require_utf8_name
from edgecompress.report.render import metric_value

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
    model.onnx was listed as fp32 and became the drift reference of the real fp32 one."""
    with contextlib.suppress(Exception):  # unreadable: its benchmark fails in one line later
        if (found := _precision_in_file(path)) is not None:
            return found
    from edgecompress.exporters import FORMATS

    fmt = next((f for _, f in FORMATS if f.suffix.lower() == path.suffix.lower()), None)
    stem = path.stem.lower()
    for p in sorted(fmt.precisions if fmt else (), key=len, reverse=True):  # "int8-dynamic" before "int8"
        if re.search(rf"(^|[-_.]){p}($|[-_.])", stem):  # "print8" is no int8
            return p
    return "fp32"


def _precision_in_file(path: Path) -> str | None:
    """The precision its format reads from the file (Format.read_precision); None: no such reader."""
    from edgecompress.exporters import FORMATS

    for _, fmt in FORMATS:
        if fmt.read_precision is not None and fmt.suffix.lower() == path.suffix.lower():
            return fmt.read_precision(path)
    return None


def _artifact_from_file(path: Path, row: dict[str, Any] | None = None,
                        precision: str | None = None) -> Artifact:
    from edgecompress.exporters import FORMATS, Artifact, TensorInfo
    from edgecompress.exporters.api import artifact_files, artifact_hash
    from edgecompress.fileio import path_size

    fmt = (row or {}).get("format") or _format_for(path)
    files = artifact_files(path, fmt)
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise InputFileError(f"{path}: missing file(s) {', '.join(missing)}")
    io = (row or {}).get("io", {})
    inputs = [TensorInfo(**t) for t in io.get("inputs", [])]
    outputs = [TensorInfo(**t) for t in io.get("outputs", [])]
    read_io = FORMATS.get(fmt).read_io
    # A file with no export report beside it: the I/O contract from the file itself (without it,
    # latency-only validation fed an empty input file).
    if not inputs and read_io is not None:
        with contextlib.suppress(Exception):  # unreadable: its benchmark fails in one line
            inputs, outputs = read_io(path)
    return Artifact(
        format=fmt, precision=(row or {}).get("precision") or precision or _guess_precision(path),
        path=path, runtime=FORMATS.get(fmt).runtime, model_name=path.stem,
        size_bytes=sum(path_size(f) for f in files),
        sha256=artifact_hash(files),
        inputs=inputs, outputs=outputs, details=(row or {}).get("details", {}))


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
                entries = json.loads(manifest.read_text(encoding="utf-8"))["artifacts"]
            except (json.JSONDecodeError, KeyError, TypeError) as err:  # `e` names the entries below
                raise InputFileError(f"{manifest}: not a valid manifest ({err})") from err
            rows = {}
            if (p / "report.json").exists():
                try:
                    # each directory's rows from its own report (the second directory's files got
                    # the first one's calibration details and TFLite I/O scales); the model
                    # summary from the first report
                    own = json.loads((p / "report.json").read_text())
                    rows = {Path(r["path"]).name: r for r in own.get("artifacts", [])}
                    source_report = source_report or own
                except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
                    rows = {}
            for e in entries:
                name = e.get("path") if isinstance(e, dict) else None
                if not isinstance(name, str) or not name:
                    raise InputFileError(f"{manifest}: an artifact entry has no path ({e!r:.80})")
                require_utf8_name(p / name, "ARTIFACT", name_only=True)
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
            require_utf8_name(p, "ARTIFACT", name_only=True)  # the runtimes open it by its name
            arts.append(_artifact_from_file(p))
        else:
            raise InputFileError(f"{p}: no such artifact or directory")
    if not arts:
        raise InputFileError("no artifacts to validate")
    return arts, source_report


# ---- baseline comparison -------------------------------------------------------------------------

# (label, path in an artifact row, direction that is worse)
_COMPARED = [
    ("latency p50", ("latency_ms", "p50"), "up"),
    ("size", ("size_bytes",), "up"),
    ("peak memory", ("memory_mb", "peak_rss"), "up"),
    ("top-1", ("metrics", "top1"), "down"),
    ("top-1 agreement", ("drift", "top1_agreement"), "down"),
    ("cosine", ("drift", "cosine"), "down"),
]


def _get(row: dict[str, Any], path: tuple[str, ...]) -> Any:
    cur: Any = row
    for k in path:
        if not isinstance(cur, dict) or k not in cur:
            return None
        cur = cur[k]
    return cur


def _key(row: dict[str, Any]) -> tuple[str, str, str]:
    return (row.get("target", ""), row["format"], row["precision"])


def _shown_path(row: dict[str, Any], out_dir: Path | None) -> str:
    """The row's file as report.json writes its `path` (relative to the report's folder when the
    file is inside it, else absolute), so a gate or baseline entry can be joined to its artifact
    row: two files of one format and precision (a.onnx, b.onnx) had identical entries."""
    p = row.get("path")
    if not p:
        return ""
    if out_dir is None:
        return str(p)
    full, root = Path(p).resolve(), Path(out_dir).resolve()
    return Path(os.path.relpath(full, root)).as_posix() if full.is_relative_to(root) else str(full)


def _match_baseline(rows: list[dict[str, Any]], old_rows: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
    """The baseline row of each row: by target/format/precision, as always, when that names one row
    on each side (a baseline written before the files were renamed still matches); when several
    files share it, by file name, then by full path. Ambiguous stays unmatched: the rows of a.onnx
    and b.onnx (both onnx fp32) overwrote each other and b was compared with a's figures."""
    def name(r: dict[str, Any]) -> str:
        return Path(str(r.get("path") or "")).name

    def full(r: dict[str, Any]) -> str:
        return str(Path(str(r.get("path") or "")).resolve())

    out: list[dict[str, Any] | None] = []
    for row in rows:
        same = [r for r in rows if _key(r) == _key(row)]
        cands = [r for r in old_rows if _key(r) == _key(row)]
        if len(same) == 1 and len(cands) == 1:
            out.append(cands[0])
            continue
        found = None
        for ident in (name, full):
            if ident(row) and sum(ident(r) == ident(row) for r in same) == 1:
                hits = [r for r in cands if ident(r) == ident(row)]
                if len(hits) == 1:
                    found = hits[0]
                    break
        out.append(found)
    return out


def compare_baseline(report: Report, baseline: dict[str, Any], baseline_path: str,
                     threshold: float = 0.05, out_dir: Path | None = None) -> dict[str, Any]:
    """Regressions of `report` against a baseline report dict (relative change > threshold).
    `out_dir`: the report's folder, for the file each entry names (as report.json gives it)."""
    old_rows = [r for r in baseline.get("artifacts", []) if r.get("status") == "ok"]
    # failed rows are matched too: an artifact that worked in the baseline and fails now is the
    # worst regression there is, and was skipped
    rows = [r for r in report.artifacts if r.get("status") in ("ok", "failed")]
    regressions, changes, unmatched = [], [], []
    matches = _match_baseline(rows, old_rows)
    for row, base in zip(rows, matches, strict=True):
        file = _shown_path(row, out_dir)
        if base is None:
            unmatched.append("/".join(_key(row)) + (f" ({file})" if file else ""))
            continue
        if row.get("status") == "failed":
            regressions.append(f"{row['format']} {row['precision']} on {row.get('target', '')}"
                               + (f" ({file})" if file else "") + ": failed (ok in the baseline)")
            continue
        for label, path, worse in _COMPARED:
            new_v, old_v = _get(row, path), _get(base, path)
            if not isinstance(new_v, int | float) or not isinstance(old_v, int | float) or old_v == 0:
                continue
            rel = (new_v - old_v) / abs(old_v)
            kind = "measured"
            if label == "latency p50" and "estimated" in (row.get("latency_kind"), base.get("latency_kind")):
                kind = "estimated"
            # qemu-user (issue #5 arm64 check): an emulated latency is labelled like an estimate
            if label == "latency p50" and "emulated" in (row.get("latency_kind"), base.get("latency_kind")):
                kind = "emulated"
            entry = {"artifact": "/".join(_key(row)), "file": file, "metric": label, "old": old_v,
                     "new": new_v, "change": rel, "latency_kind": kind}
            changes.append(entry)
            if (rel > threshold if worse == "up" else rel < -threshold):
                regressions.append(f"{row['format']} {row['precision']} on {row.get('target', '')}"
                                   + (f" ({file})" if file else "") + ": "
                                   f"{label} {metric_value(label, old_v)} -> {metric_value(label, new_v)} "
                                   f"({100 * rel:+.1f} %)"
                                   + (f" [{kind}]" if kind != "measured" else ""))
    compared = [label for label, _, _ in _COMPARED if any(c["metric"] == label for c in changes)]
    # Said, not left to guess: a run without --eval compares no accuracy at all.
    not_compared = [label for label, _, _ in _COMPARED if label not in compared]
    # Baseline rows no row of this run matched: a format dropped from the build, or an artifact
    # that no longer exports, passed as "no regression" (said, not judged: a subset may be meant)
    matched = {id(b) for b in matches if b is not None}
    missing = ["/".join(_key(b)) + (f" ({Path(str(b['path'])).name})" if b.get("path") else "")
               for b in old_rows if id(b) not in matched]
    notes = []
    old_model, new_model = baseline.get("model") or {}, report.model or {}
    # params and MACs, not the name: a loose file's model is named after the file
    differs = [k for k in ("params", "macs")
               if old_model.get(k) and new_model.get(k) and old_model[k] != new_model[k]]
    if differs:  # rows were matched by format and precision only: say they are of another model
        notes.append("the baseline is of another model (" + ", ".join(
            f"{k} {old_model[k]} -> {new_model[k]}" for k in differs) + ")")
    # Agreement and cosine are against each run's reference: an export's is the fp32 PyTorch model,
    # validate's the outputs of an fp32 file run here. Compared across the two, a drift change is
    # partly the references' own difference, and nothing said so.
    refs = [(d or {}).get("reference") or "the fp32 PyTorch model" for d in (baseline.get("data"), report.data)]
    if refs[0] != refs[1] and any(c["metric"] in ("top-1 agreement", "cosine") for c in changes):
        notes.append(f"drift is against another reference than the baseline's ({refs[0]} -> {refs[1]}): "
                     "agreement and cosine changes include the references' own difference")
    return {"path": baseline_path, "threshold": threshold, "regressions": regressions,
            "changes": changes, "unmatched": unmatched, "missing": missing, "compared": compared,
            "not_compared": not_compared, "notes": notes}


# ---- --fail-on gates -----------------------------------------------------------------------------

_GATE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_\-]*(?:\.[A-Za-z0-9_\-]+)*)\s*(<=|>=|==|!=|<|>)\s*"
                   r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq,
        "!=": operator.ne}


@dataclass(frozen=True)
class Gate:
    """`path OP number`: the run FAILS when an artifact's value satisfies the expression."""

    text: str
    path: tuple[str, ...]
    op: str
    value: float


def parse_gates(exprs: list[str]) -> list[Gate]:
    gates = []
    for raw in exprs:
        if not raw.strip():  # it was read as no gate at all
            raise ConfigError("--fail-on '': empty gate; give 'path.to.metric OP number'")
        for text in (t for t in raw.split(",") if t.strip()):
            m = _GATE.match(text)
            if not m:
                raise ConfigError(f"--fail-on {text.strip()!r}: expected 'path.to.metric OP number' "
                                  "with OP one of < <= > >= == != (e.g. 'drift.top1_agreement<0.97')")
            gate = Gate(text.strip(), tuple(m.group(1).split(".")), m.group(2), float(m.group(3)))
            _check_gate_path(gate)
            gates.append(gate)
    return gates


# What an artifact row holds (report.json), so a typo is refused before the work, not after it.
# metrics.* is open: the evaluation set decides (top1 / top5 for labelled images, spearman for STS).
_GATE_FIELDS = {
    "latency_ms": {"p50", "p90", "p99", "mean", "cpu_p50", "io_ms"},
    "memory_mb": {"peak_rss", "rss_before_load", "model_and_runtime", "init_delta", "overall_delta"},
    "drift": {"top1_agreement", "cosine", "cosine_min", "max_abs", "mean_abs"},
}


# latency_by_batch.<batch>.<field>: the only way to gate a batch-N latency or throughput
_BATCH_FIELDS = {"p50", "p90", "p99", "mean", "min", "cpu_p50", "io_ms", "throughput_per_s"}


def _check_gate_path(g: Gate) -> None:
    import difflib

    known = ["size_bytes", *(f"{k}.{f}" for k, fs in _GATE_FIELDS.items() for f in sorted(fs)), "metrics.top1",
             "latency_by_batch.8.p50"]
    head, rest = g.path[0], g.path[1:]
    ok = (head == "size_bytes" and not rest) or (head == "metrics" and len(rest) == 1) \
        or (head in _GATE_FIELDS and len(rest) == 1 and rest[0] in _GATE_FIELDS[head]) \
        or (head == "latency_by_batch" and len(rest) == 2 and rest[0].isdigit() and rest[1] in _BATCH_FIELDS)
    if not ok:
        near = difflib.get_close_matches(".".join(g.path), known, n=1, cutoff=0.5)
        raise ConfigError(f"--fail-on {g.text!r}: a report row has no {'.'.join(g.path)}"
                          + (f" (did you mean {near[0]}?)" if near else "")
                          + "; gate on latency_ms.p50, size_bytes, memory_mb.peak_rss, metrics.top1, "
                          "drift.top1_agreement, ...")


def evaluate_gates(report: Report, gates: list[Gate], out_dir: Path | None = None) -> list[str]:
    """One message per failing (gate, artifact); a gate that names no metric present is an error.
    The outcome per gate and artifact is also recorded in `report.gates` (report.json / .md /
    .html), so a reader of the report sees which gate failed where, not only the exit code.
    Each names the artifact's file (`out_dir`: the report's folder, which paths are relative to)."""
    failures = []
    report.gates = []
    for g in gates:
        seen = False
        for row in report.artifacts:
            v = _get(row, g.path)
            if isinstance(v, bool) or not isinstance(v, int | float):
                continue
            seen = True
            failed = _OPS[g.op](v, g.value)
            file = _shown_path(row, out_dir)
            # a latency the cost model or qemu gave, not a device: the gate's record says so (a CI
            # decision on an estimate read like one on a measurement)
            kind = row.get("latency_kind", "measured") if g.path[0].startswith("latency") else "measured"
            report.gates.append({"gate": g.text, "artifact": "/".join(_key(row)),
                                 **({"file": file} if file else {}), "value": v, "passed": not failed,
                                 **({"latency_kind": kind} if kind != "measured" else {})})
            if failed:
                failures.append(f"gate failed: {g.text} ({file + ', ' if file else ''}{row['format']} "
                                f"{row['precision']} on {row.get('target', '')}: {'.'.join(g.path)} = "
                                f"{metric_value('.'.join(g.path), v)}"
                                + (f" [{kind}]" if kind != "measured" else "") + ")")
        if not seen:  # recorded: the report written before the error must not read "passed"
            report.gates.append({"gate": g.text, "artifact": "—", "value": None, "passed": False})
        if not seen and not any(row.get("status") == "failed" for row in report.artifacts):
            # (with failed rows the failures are the news: the CLI exits 4 with their table)
            raise ConfigError(f"--fail-on {g.text!r}: no artifact in the report has a numeric "
                              f"{'.'.join(g.path)} (e.g. drift.top1_agreement, latency_ms.p50, "
                              "size_bytes, metrics.top1, memory_mb.peak_rss; an estimated target has no accuracy, "
                              "drift or memory)")
    return failures


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
        d = json.loads(report.read_text(encoding="utf-8"))
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
    raise OutputError(f"--out {out_dir}: holds {what}; validate would replace it: pass another --out "
                      f"(e.g. --out {shown}-validate)")


def check_gates_measurable(gates: list[Gate], profile: Any, has_eval: bool = True) -> None:
    """A gate nothing will measure cannot pass or fail: refused before any work (it was refused
    after validating everything): accuracy, drift or memory on an estimated target (nothing
    runs; an estimate has only a p50 latency), accuracy or drift without --eval."""
    from edgecompress.targets.runners.estimate import runner_name_for

    estimated = runner_name_for(profile) == "estimate"
    for g in gates:
        if not has_eval and not estimated and g.path[0] in ("metrics", "drift"):
            raise ConfigError(f"--fail-on {g.text!r}: {g.path[0]} needs evaluation data; pass --eval")
    if not estimated:
        return
    for g in gates:
        if g.path[0] in ("metrics", "drift", "memory_mb"):
            raise ConfigError(f"--fail-on {g.text!r}: --target {profile.name} is estimated here (no device "
                              f"attached), so it measures no {g.path[0]}; gate on latency_ms.p50 or size_bytes")
        if g.path[0] == "latency_ms" and g.path[1] != "p50":
            raise ConfigError(f"--fail-on {g.text!r}: --target {profile.name} is estimated here (no device "
                              "attached): an estimate has a p50 latency only; gate on latency_ms.p50")


def _formats_the_target_runs(arts: list[Artifact], paths: list[Path], profile: Any) -> tuple[list[Artifact], list[str]]:
    """Artifacts of a format the target does not run: skipped (and said) when they came from an export
    directory, refused when the user named the file."""
    import sys

    named = {Path(p).resolve() for p in paths if Path(p).is_file()}
    foreign = [a for a in arts if a.format not in profile.formats]
    for a in foreign:
        if Path(a.path).resolve() in named:
            raise ConfigError(f"--target {profile.name} runs {', '.join(profile.formats)}; not {a.format} "
                              f"({a.path}): validate only the files of formats it runs")
    kept = [a for a in arts if a.format in profile.formats]
    if not kept:
        raise ConfigError(f"--target {profile.name} runs {', '.join(profile.formats)}; "
                          "none of the artifacts given is one")
    skipped = [f"{Path(a.path).name} ({a.format})" for a in foreign]
    if skipped:
        print(f"note: --target {profile.name} does not run {', '.join(sorted({a.format for a in foreign}))}; "
              f"skipped {', '.join(skipped)}", file=sys.stderr)
    return kept, skipped


def _reference_outputs(arts: list[Artifact], eval_path: Path, settings: Any) -> tuple[Any, str]:
    """fp32 outputs to measure drift against, and the name of the file they come from: the fp32
    artifact (ONNX first), run here."""
    import numpy as np

    from edgecompress.exporters import FORMATS
    from edgecompress.targets.runners.local import BenchRequest, LocalRunner

    def rank(a: Artifact) -> int:
        return FORMATS.get(a.format).reference_rank if a.format in FORMATS else 9

    fp32 = sorted((a for a in arts if a.precision == "fp32"), key=rank)
    if not fp32:
        return None, ""
    ref = fp32[0]
    with tempfile.TemporaryDirectory(prefix="edgecompress-ref-") as td:
        out = Path(td) / "ref.npy"
        req = BenchRequest.for_artifact(ref, settings, inputs=eval_path, outputs=out)
        # only its outputs are used: one run, on one thread, at batch 1
        LocalRunner().run(replace(req, threads=1, batches=(1,), warmup=0, runs=1))
        return np.load(out), Path(ref.path).name


def validate_artifacts(paths: list[Path], target: str, out_dir: Path, eval: str | None = None,
                       baseline: Path | None = None, fail_on: list[str] | None = None,
                       settings: Any = None, preprocess: str | None = None, command: str = "",
                       threshold: float = 0.05, progress: bool = True,
                       fail_on_regression: bool = False) -> tuple[Report, dict, list[str]]:
    """Validate existing artifacts on `target`; write the report; return it, its paths and the
    gate failures (the caller decides the exit code)."""
    from edgecompress.fileio import exclusive_dir, output_dir, remove_stale_temps
    from edgecompress.report import Report, write_report
    from edgecompress.targets import ValidateSettings, get_target, validate
    from edgecompress.targets.metrics import classification_metrics
    from edgecompress.targets.validate import _inputs_file, nchw_shape

    gates = parse_gates(fail_on or [])  # a malformed gate fails before anything runs
    _refuse_export_dir(Path(out_dir))  # before any work; checked again under the lock
    if not 0 <= threshold <= 1:  # also NaN; -1 made an unchanged run a regression, 5 meant 500 %
        raise ConfigError(f"--threshold {threshold}: a relative change between 0 and 1 (0.05 = 5 %)")
    profile = get_target(target)
    settings = settings or ValidateSettings()
    if preprocess:
        from edgecompress.data.presets import PRESETS

        PRESETS.get(preprocess, "--preprocess")
    check_gates_measurable(gates, profile, has_eval=bool(eval))
    arts, source = load_artifacts(paths)
    arts, skipped = _formats_the_target_runs(arts, paths, profile)
    from edgecompress.targets.runners.estimate import preflight

    preflight(profile)  # unreachable host / no phone / no rootfs / missing [hardware]: one error, nothing written
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
        from edgecompress.targets.runners.estimate import runner_name_for

        if eval and runner_name_for(profile) == "estimate":
            # nothing runs on an estimated target: the fp32 reference ran here for nothing and the
            # report listed evaluation data next to rows that measured none
            import sys

            print(f"note: --target {profile.name} is estimated here (no device attached): nothing runs, "
                  "so --eval is not used", file=sys.stderr)
            eval = None
        if eval:
            from edgecompress.data import load_data

            shape = model.get("input_shape") or []
            if len(shape) != 4 and arts[0].inputs:  # loose files: the side from the file's own input
                shape = nchw_shape(arts[0])
            size = int(shape[-1]) if len(shape) == 4 and isinstance(shape[-1], int) else 224
            # the export's preset (recorded in its report), else the flag, else EfficientNet-Lite's
            ev = load_data(eval, preprocess or model.get("preprocess") or "efficientnet-lite", size, "evaluation",
                           progress)
            _check_eval_shape(ev, shape, eval, arts[0].inputs[0].dtype if arts[0].inputs else "")
            with tempfile.TemporaryDirectory(prefix="edgecompress-eval-") as td:
                ref, ref_file = _reference_outputs(arts, _inputs_file(ev, Path(td)), settings)
            if ref is not None:
                reference = classification_metrics(ref, ev.y)
        measurements = validate(arts, profile, ev, ref, settings, progress)
        report = Report.from_measurements(
            measurements, model=model, target=profile.name, reference=reference,
            data={"eval": ev.source if ev else None, "eval_n": len(ev) if ev else 0,
                  "labelled": bool(ev is not None and ev.y is not None),
                  "reference": f"outputs of {ref_file} (fp32) on this machine" if ref_file else "",
                  **({"reference_file": ref_file} if ref_file else {}),
                  **({"skipped": skipped} if skipped else {})},
            command=command)
        if base is not None:
            report.baseline = compare_baseline(report, base, str(baseline), threshold, out_dir)
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


def _check_eval_shape(ev: Any, shape: list[Any], flag_value: str, dtype: str = "") -> None:
    """--eval samples against the artifacts' input (NCHW, symbolic dims skipped; a float input, or
    an int8 one the runner quantizes float data for), before any run: a wrong set was reported as
    every artifact's benchmark failure (exit 4, naming the file rather than the data)."""
    if isinstance(ev.x, dict) or len(shape) < 2:  # token sets: the runners pad them to the file
        return
    if (dtype.startswith("float") or dtype in ("int8", "uint8")) and ev.x.dtype.kind != "f":
        raise DataError(f"--eval {flag_value}: dtype {ev.x.dtype} but the artifacts take float samples "
                        "(save preprocessed float32 arrays)")
    from edgecompress.targets.validate import shape_misfit

    if (shown := shape_misfit(list(shape), ev.x.shape)) is not None:
        raise DataError(f"--eval {flag_value}: samples have shape {tuple(ev.x.shape[1:])} but the artifacts "
                        f"take {shown} (check --preprocess, or the data)")
