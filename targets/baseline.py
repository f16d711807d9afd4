"""Compare a report with an older report.json (`validate --baseline`): regressions over a
threshold: latency, size or peak memory up by more than `threshold` (a relative change, 5 % by
default); top-1, top-1 agreement or cosine down by more than `accuracy_threshold` (an absolute
drop in points, 1 pt by default)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecompress.report.render import metric_value
from edgecompress.report.write import report_path

if TYPE_CHECKING:
    from edgecompress.report import Report


# (label, path in an artifact row, direction that is worse)
_COMPARED = [
    ("latency p50", ("latency_ms", "p50"), "up"),
    ("size", ("size_bytes",), "up"),
    ("peak memory", ("memory_mb", "peak_rss"), "up"),
    ("top-1", ("metrics", "top1"), "down"),
    ("top-5", ("metrics", "top5"), "down"),
    ("top-1 agreement", ("drift", "top1_agreement"), "down"),
    ("cosine", ("drift", "cosine"), "down"),
]
# Fractions judged by their absolute drop (points), not a relative change: 5 % of a 99.3 % top-1
# let it fall to 94.6 % (the error rate x8) and cosine fall from 1.0 to 0.951 unflagged.
ABSOLUTE = frozenset({"top-1", "top-5", "top-1 agreement", "cosine"})
# Default 1 pt: the drop int8 is usually held to (PTQ within ~1 pt of fp32), and well above
# rerun noise: the same files on the same --eval data give the same top-1 and agreement, so only
# the model changes move them. Cosine sits at 0.999+ for a working int8 file and moves by ~1e-4
# between builds, so a 1-pt drop (under 0.99) is a file that drifts badly, not noise.
ACCURACY_THRESHOLD = 0.01


def row_value(row: dict[str, Any], path: tuple[str, ...]) -> Any:
    """The value at `path` in a report.json artifact row, or None where the row has none."""
    cur: Any = row
    for k in path:
        if not isinstance(cur, dict) or k not in cur:
            return None
        cur = cur[k]
    return cur


def row_key(row: dict[str, Any]) -> tuple[str, str, str]:
    """(target, format, precision): how rows are named in gates and baseline entries."""
    return (row.get("target", ""), row["format"], row["precision"])


def shown_path(row: dict[str, Any], out_dir: Path | None) -> str:
    """The row's file as report.json writes its `path` (relative to the report's folder when the
    file is inside it, else absolute), so a gate or baseline entry can be joined to its artifact
    row: two files of one format and precision (a.onnx, b.onnx) had identical entries."""
    p = row.get("path")
    if not p:
        return ""
    return str(p) if out_dir is None else report_path(p, out_dir)


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
        same = [r for r in rows if row_key(r) == row_key(row)]
        cands = [r for r in old_rows if row_key(r) == row_key(row)]
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
                     threshold: float = 0.05, out_dir: Path | None = None,
                     accuracy_threshold: float = ACCURACY_THRESHOLD) -> dict[str, Any]:
    """Regressions of `report` against a baseline report dict: latency, size, memory by a relative
    change > threshold; top-1, agreement, cosine by an absolute drop > accuracy_threshold.
    `out_dir`: the report's folder, for the file each entry names (as report.json gives it)."""
    old_rows = [r for r in baseline.get("artifacts", []) if r.get("status") == "ok"]
    # failed rows are matched too: an artifact that worked in the baseline and fails now is the
    # worst regression there is, and was skipped
    rows = [r for r in report.artifacts if r.get("status") in ("ok", "failed")]
    regressions, changes, unmatched, other_threads = [], [], [], []
    matches = _match_baseline(rows, old_rows)
    for row, base in zip(rows, matches, strict=True):
        file = shown_path(row, out_dir)
        if base is None:
            unmatched.append("/".join(row_key(row)) + (f" ({file})" if file else ""))
            continue
        if row.get("status") == "failed":
            regressions.append(f"{row['format']} {row['precision']} on {row.get('target', '')}"
                               + (f" ({file})" if file else "") + ": failed (ok in the baseline)")
            continue
        # a latency at 1 thread against one at 4 is no regression of the model: not compared, said
        threads = [row_value(r, ("settings", "threads")) for r in (base, row)]
        skip = all(isinstance(t, int) for t in threads) and threads[0] != threads[1]
        if skip:
            other_threads.append(f"{'/'.join(row_key(row))} ({threads[0]} -> {threads[1]})")
        for label, path, worse in _COMPARED:
            if skip and label == "latency p50":
                continue
            new_v, old_v = row_value(row, path), row_value(base, path)
            absolute = label in ABSOLUTE
            # a relative change of 0 is undefined; an accuracy of 0 still has a drop in points
            if not isinstance(new_v, int | float) or not isinstance(old_v, int | float) \
                    or (old_v == 0 and not absolute):
                continue
            rel = (new_v - old_v) / abs(old_v) if old_v else 0.0
            kind = "measured"
            if label == "latency p50" and "estimated" in (row.get("latency_kind"), base.get("latency_kind")):
                kind = "estimated"
            # qemu-user (issue #5 arm64 check): an emulated latency is labelled like an estimate
            if label == "latency p50" and "emulated" in (row.get("latency_kind"), base.get("latency_kind")):
                kind = "emulated"
            # "change" stays the relative change (as before); "delta" is new - old, which the
            # absolute rule judges; "rule" says which one decided
            entry = {"artifact": "/".join(row_key(row)), "file": file, "metric": label, "old": old_v,
                     "new": new_v, "change": rel, "delta": new_v - old_v,
                     "rule": "absolute" if absolute else "relative", "latency_kind": kind}
            changes.append(entry)
            moved, limit = (new_v - old_v, accuracy_threshold) if absolute else (rel, threshold)
            # rounded to 12 places: 0.93 - 0.94 is -0.01000000000000001, over a 0.01 threshold
            moved = round(moved, 12)
            if (moved > limit if worse == "up" else moved < -limit):
                shown = f"{100 * moved:+.1f} pt" if absolute else f"{100 * rel:+.1f} %"
                regressions.append(f"{row['format']} {row['precision']} on {row.get('target', '')}"
                                   + (f" ({file})" if file else "") + ": "
                                   f"{label} {metric_value(label, old_v)} -> {metric_value(label, new_v)} "
                                   f"({shown})"
                                   + (f" [{kind}]" if kind != "measured" else ""))
    compared = [label for label, _, _ in _COMPARED if any(c["metric"] == label for c in changes)]
    # Said, not left to guess: a run without --eval compares no accuracy at all.
    not_compared = [label for label, _, _ in _COMPARED if label not in compared]
    # Baseline rows no row of this run matched: a format dropped from the build, or an artifact
    # that no longer exports, passed as "no regression" (said, not judged: a subset may be meant)
    matched = {id(b) for b in matches if b is not None}
    missing = ["/".join(row_key(b)) + (f" ({Path(str(b['path'])).name})" if b.get("path") else "")
               for b in old_rows if id(b) not in matched]
    notes = []
    old_model, new_model = baseline.get("model") or {}, report.model or {}
    # params and MACs; the name only where both runs name a model reference (`source`): a loose
    # file's model is named after the file
    keys = ("params", "macs") + (("source",) if old_model.get("source") and new_model.get("source") else ())
    differs = [k for k in keys if old_model.get(k) and new_model.get(k) and old_model[k] != new_model[k]]
    # and per paired ONNX file, its weight count (exported and validated rows record it): loose
    # files carry no params or MACs, so a pruned build's baseline passed as the same model
    files = [f"{Path(str(row.get('path') or '')).name} {bw:,} -> {rw:,} weights"
             for row, base in zip(rows, matches, strict=True) if base is not None
             and isinstance(rw := row_value(row, ("details", "weights")), int)
             and isinstance(bw := row_value(base, ("details", "weights")), int) and abs(rw - bw) > 0.01 * bw]
    if differs or files:  # rows were matched by format and precision only: say they are of another model
        notes.append("the baseline is of another model (" + ", ".join(
            [f"{k} {old_model[k]} -> {new_model[k]}" for k in differs] + files[:2]) + ")")
    if other_threads:
        notes.append("latency not compared where the baseline ran another --threads: "
                     + ", ".join(other_threads[:3]) + (", ..." if len(other_threads) > 3 else ""))
    # Agreement and cosine are against each run's reference: an export's is the fp32 PyTorch model,
    # validate's the outputs of an fp32 file run here. Compared across the two, a drift change is
    # partly the references' own difference, and nothing said so.
    refs = [(d or {}).get("reference") or "the fp32 PyTorch model" for d in (baseline.get("data"), report.data)]
    if refs[0] != refs[1] and any(c["metric"] in ("top-1 agreement", "cosine") for c in changes):
        notes.append(f"drift is against another reference than the baseline's ({refs[0]} -> {refs[1]}): "
                     "agreement and cosine changes include the references' own difference")
    return {"path": baseline_path, "threshold": threshold, "accuracy_threshold": accuracy_threshold,
            "regressions": regressions,
            "changes": changes, "unmatched": unmatched, "missing": missing, "compared": compared,
            "not_compared": not_compared, "notes": notes}
