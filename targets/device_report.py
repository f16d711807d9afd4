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
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecompress.errors import ConfigError, InputFileError

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
    stem = path.stem.lower()
    for p in ("int8-dynamic", "int8", "fp16", "fp32"):
        if p in stem:
            return p
    return "fp32"


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
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise InputFileError(f"{manifest}: not a valid manifest ({e})") from e
            rows = {}
            if (p / "report.json").exists():
                try:
                    source_report = source_report or json.loads((p / "report.json").read_text())
                    rows = {Path(r["path"]).name: r for r in source_report.get("artifacts", [])}
                except (json.JSONDecodeError, KeyError, TypeError):
                    rows = {}
            for e in entries:
                name = e.get("path") if isinstance(e, dict) else None
                if not isinstance(name, str) or not name:
                    raise InputFileError(f"{manifest}: an artifact entry has no path ({e!r:.80})")
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


def compare_baseline(report: Report, baseline: dict[str, Any], baseline_path: str,
                     threshold: float = 0.05) -> dict[str, Any]:
    """Regressions of `report` against a baseline report dict (relative change > threshold)."""
    old = {_key(r): r for r in baseline.get("artifacts", []) if r.get("status") == "ok"}
    regressions, changes, unmatched = [], [], []
    for row in report.artifacts:
        if row.get("status") != "ok":
            continue
        base = old.get(_key(row))
        if base is None:
            unmatched.append("/".join(_key(row)))
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
            entry = {"artifact": "/".join(_key(row)), "metric": label, "old": old_v, "new": new_v,
                     "change": rel, "latency_kind": kind}
            changes.append(entry)
            if (rel > threshold if worse == "up" else rel < -threshold):
                regressions.append(f"{row['format']} {row['precision']} on {row.get('target', '')}: "
                                   f"{label} {old_v:.4g} -> {new_v:.4g} ({100 * rel:+.1f} %)"
                                   + (f" [{kind}]" if kind != "measured" else ""))
    compared = [label for label, _, _ in _COMPARED if any(c["metric"] == label for c in changes)]
    # Said, not left to guess: a run without --eval compares no accuracy at all.
    not_compared = [label for label, _, _ in _COMPARED if label not in compared]
    return {"path": baseline_path, "threshold": threshold, "regressions": regressions,
            "changes": changes, "unmatched": unmatched, "compared": compared,
            "not_compared": not_compared}


# ---- --fail-on gates -----------------------------------------------------------------------------

_GATE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_\-]*(?:\.[A-Za-z0-9_\-]+)*)\s*(<=|>=|==|!=|<|>)\s*"
                   r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
_OPS = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b}


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
            gates.append(Gate(text.strip(), tuple(m.group(1).split(".")), m.group(2),
                              float(m.group(3))))
    return gates


def evaluate_gates(report: Report, gates: list[Gate]) -> list[str]:
    """One message per failing (gate, artifact); a gate that names no metric present is an error."""
    failures = []
    for g in gates:
        seen = False
        for row in report.artifacts:
            v = _get(row, g.path)
            if isinstance(v, bool) or not isinstance(v, int | float):
                continue
            seen = True
            if _OPS[g.op](v, g.value):
                failures.append(f"gate failed: {g.text} ({row['format']} {row['precision']} on "
                                f"{row.get('target', '')}: {'.'.join(g.path)} = {v:.4g})")
        if not seen:
            raise ConfigError(f"--fail-on {g.text!r}: no artifact in the report has a numeric "
                              f"{'.'.join(g.path)} (e.g. drift.top1_agreement, latency_ms.p50, "
                              "size_bytes, metrics.top1, memory_mb.peak_rss; an estimated target has no accuracy, "
                              "drift or memory)")
    return failures


# ---- the whole command ---------------------------------------------------------------------------

def _check_gates_measurable(gates: list[Gate], profile: Any) -> None:
    """A gate on accuracy, drift or memory cannot pass or fail on an estimated target (nothing
    runs): refused before any work (it was refused after validating everything)."""
    from edgecompress.targets.runners.estimate import runner_name_for

    if runner_name_for(profile) != "estimate":
        return
    for g in gates:
        if g.path[0] in ("metrics", "drift", "memory_mb"):
            raise ConfigError(f"--fail-on {g.text!r}: --target {profile.name} is estimated here (no device "
                              f"attached), so it measures no {g.path[0]}; gate on latency_ms.p50 or size_bytes")


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
    """fp32 outputs to measure drift against: the fp32 artifact (ONNX first), run here."""
    import numpy as np

    from edgecompress.targets.runners.local import BenchRequest, LocalRunner

    order = {"onnx": 0, "openvino": 1, "tflite": 2}
    fp32 = sorted((a for a in arts if a.precision == "fp32"), key=lambda a: order.get(a.format, 9))
    if not fp32:
        return None, ""
    ref = fp32[0]
    layout = ref.inputs[0].layout if ref.inputs and ref.inputs[0].layout else "NCHW"
    with tempfile.TemporaryDirectory(prefix="edgecompress-ref-") as td:
        out = Path(td) / "ref.npy"
        LocalRunner().run(BenchRequest(
            artifact=Path(ref.path), runtime=ref.runtime, warmup=0, runs=1, inputs=eval_path,
            outputs=out, layout=layout, eval_batch=settings.eval_batch,
            precision_hint="f32" if ref.runtime == "openvino" else None))
        return np.load(out), f"outputs of {Path(ref.path).name} (fp32) on this machine"


def validate_artifacts(paths: list[Path], target: str, out_dir: Path, eval: str | None = None,
                       baseline: Path | None = None, fail_on: list[str] | None = None,
                       settings: Any = None, preprocess: str | None = None, command: str = "",
                       threshold: float = 0.05, progress: bool = True) -> tuple[Report, dict, list[str]]:
    """Validate existing artifacts on `target`; write the report; return it, its paths and the
    gate failures (the caller decides the exit code)."""
    from edgecompress.fileio import ensure_writable_dir
    from edgecompress.report import Report, artifact_row, write_report
    from edgecompress.targets import ValidateSettings, get_target, validate
    from edgecompress.targets.metrics import classification_metrics
    from edgecompress.targets.validate import _inputs_file

    gates = parse_gates(fail_on or [])  # a malformed gate fails before anything runs
    if not threshold >= 0:  # also NaN; -1 made an unchanged run a regression
        raise ConfigError(f"--threshold {threshold}: a relative change, 0 or more (0.05 = 5 %)")
    profile = get_target(target)
    settings = settings or ValidateSettings()
    if preprocess:
        from edgecompress.data.presets import PRESETS

        PRESETS.get(preprocess, "--preprocess")
    _check_gates_measurable(gates, profile)
    arts, source = load_artifacts(paths)
    arts, skipped = _formats_the_target_runs(arts, paths, profile)
    base = None
    if baseline is not None:
        from edgecompress.report import Report as _R

        base = _R.load(baseline).to_dict()
    out_dir = ensure_writable_dir(Path(out_dir))
    model = dict((source or {}).get("model", {})) or {"name": Path(arts[0].path).stem}
    ev, ref, reference, ref_source = None, None, {}, ""
    if eval:
        from edgecompress.data import load_data

        shape = model.get("input_shape") or []
        size = int(shape[-1]) if len(shape) == 4 else 224
        ev = load_data(eval, preprocess or "efficientnet-lite", size, "evaluation", progress)
        with tempfile.TemporaryDirectory(prefix="edgecompress-eval-") as td:
            ref, ref_source = _reference_outputs(arts, _inputs_file(ev, Path(td)), settings)
        if ref is not None:
            reference = classification_metrics(ref, ev.y)
    measurements = validate(arts, profile, ev, ref, settings, progress)
    report = Report(
        model=model, target=profile.name,
        artifacts=[artifact_row(m.to_dict()) for m in measurements], reference=reference,
        data={"eval": ev.source if ev else None, "eval_n": len(ev) if ev else 0,
              "labelled": bool(ev is not None and ev.y is not None), "reference": ref_source,
              **({"skipped": skipped} if skipped else {})},
        command=command)
    if base is not None:
        report.baseline = compare_baseline(report, base, str(baseline), threshold)
    paths = write_report(report, out_dir)
    return report, paths, evaluate_gates(report, gates)
