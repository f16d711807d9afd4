"""`--fail-on` gates (`path.to.metric OP number`): parsed by a tiny grammar, never `eval`;
checked for a field a report row has before any work, evaluated per artifact row."""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecompress.errors import ConfigError, did_you_mean, opt, say
from edgecompress.report.render import metric_value, shown_as_percent
from edgecompress.targets.baseline import row_key, row_value, shown_path

if TYPE_CHECKING:
    from collections.abc import Sequence

    from edgecompress.report import Report

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


def _gate(text: str) -> str:
    """The gate as the caller gave it: `--fail-on 'TEXT'`, or `fail_on='TEXT'` from Python."""
    return opt("--fail-on", "fail_on", repr(text))


def parse_gates(exprs: list[str]) -> list[Gate]:
    gates = []
    for raw in exprs:
        if not raw.strip():  # it was read as no gate at all
            raise ConfigError(f"{_gate('')}: empty gate; give 'path.to.metric OP number'")
        for text in (t for t in raw.split(",") if t.strip()):
            m = _GATE.match(text)
            if not m and re.search(r"\d,\d", raw):  # "size_bytes>1,000,000": the error quoted '000'
                raise ConfigError(f"{_gate(raw.strip())}: a comma separates gates ('a<1,b>2'); write "
                                  "numbers without thousands separators (1000000 or 1e6)")
            if not m:
                raise ConfigError(f"{_gate(text.strip())}: expected 'path.to.metric OP number' "
                                  "with OP one of < <= > >= == != (e.g. 'drift.top1_agreement<0.97')")
            gate = Gate(text.strip(), tuple(m.group(1).split(".")), m.group(2), float(m.group(3)))
            _check_gate_path(gate)
            _check_gate_range(gate)
            gates.append(gate)
    return gates


def _fraction_range(path: tuple[str, ...]) -> tuple[str, float, float] | None:
    """(what, low, high) for a metric report.json holds as a fraction, else None. The report shows
    these as percentages ("100.00 %"), so "<97" read naturally and failed every artifact."""
    head, last = path[0], path[-1]
    if shown_as_percent(".".join(path)):
        return ("agreement" if head == "drift" else "accuracy"), 0.0, 1.0
    if head == "drift" and last.startswith("cosine"):  # a cosine similarity may be negative
        return "cosine", -1.0, 1.0
    if head == "metrics" and last == "spearman":  # shown x100 in the table ("Spearman x100")
        return "Spearman", -1.0, 1.0
    return None


def _check_gate_range(g: Gate) -> None:
    """A threshold the metric can never reach is a unit slip (97 meant 0.97): refused before any
    work, with the fraction it probably meant."""
    rng = _fraction_range(g.path)
    if rng is None:
        return
    what, lo, hi = rng
    if lo <= g.value <= hi:
        return
    span = "a fraction 0-1" if lo == 0 else f"between {lo:g} and {hi:g}"
    # a percentage (1-100) is the likely slip: name its fraction; anything else, an example
    hint = (f"; did you mean {g.op}{g.value / 100:g}?" if 1 < g.value <= 100
            else f" (e.g. '{'.'.join(g.path)}<0.97')")
    raise ConfigError(f"{_gate(g.text)}: {what} is {span}{hint}")


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
    known = ["size_bytes", *(f"{k}.{f}" for k, fs in _GATE_FIELDS.items() for f in sorted(fs)), "metrics.top1",
             "latency_by_batch.8.p50"]
    head, rest = g.path[0], g.path[1:]
    ok = (head == "size_bytes" and not rest) or (head == "metrics" and len(rest) == 1) \
        or (head in _GATE_FIELDS and len(rest) == 1 and rest[0] in _GATE_FIELDS[head]) \
        or (head == "latency_by_batch" and len(rest) == 2 and rest[0].isdigit() and rest[1] in _BATCH_FIELDS)
    if not ok:
        path = ".".join(g.path)
        # cutoff 0.5 as before did_you_mean served gates: `latency.p50` and shorter slips still get one
        raise ConfigError(f"{_gate(g.text)}: a report row has no {path} (gate on latency_ms.p50, size_bytes, "
                          "memory_mb.peak_rss, metrics.top1, drift.top1_agreement, ...)"
                          + did_you_mean(path, known, cutoff=0.5))


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
            v = row_value(row, g.path)
            if isinstance(v, bool) or not isinstance(v, int | float):
                continue
            seen = True
            failed = _OPS[g.op](v, g.value)
            file = shown_path(row, out_dir)
            # a latency the cost model or qemu gave, not a device: the gate's record says so (a CI
            # decision on an estimate read like one on a measurement)
            kind = row.get("latency_kind", "measured") if g.path[0].startswith("latency") else "measured"
            report.gates.append({"gate": g.text, "artifact": "/".join(row_key(row)),
                                 **({"file": file} if file else {}), "value": v, "passed": not failed,
                                 **({"latency_kind": kind} if kind != "measured" else {})})
            if failed:
                failures.append(gate_failure(report.gates[-1]))
        if not seen:  # recorded: the report written before the error must not read "passed"
            report.gates.append({"gate": g.text, "artifact": "—", "value": None, "passed": False})
        if not seen and not any(row.get("status") == "failed" for row in report.artifacts):
            # (with failed rows the failures are the news: the CLI exits 4 with their table)
            raise ConfigError(f"{_gate(g.text)}: no artifact in the report has a numeric "
                              f"{'.'.join(g.path)} (e.g. drift.top1_agreement, latency_ms.p50, "
                              "size_bytes, metrics.top1, memory_mb.peak_rss; an estimated target has no accuracy, "
                              "drift or memory)")
    return failures


def gate_failure(g: dict[str, Any]) -> str:
    """The one line a failed gate gives, from its record in report.gates: `export` and `validate`
    worded it differently ("(file, x86-local/onnx/fp32: 100.00 %)" vs "(file, onnx fp32 on
    x86-local: drift.top1_agreement = 100.00 %)"), which broke a grep over CI logs. Shape:
    gate failed: GATE (FILE, FORMAT PRECISION on TARGET: PATH = VALUE [KIND])"""
    m = _GATE.match(str(g["gate"]))
    path = m.group(1) if m else str(g["gate"])
    parts = str(g["artifact"]).rsplit("/", 2)  # row_key joined: target, format, precision
    if g.get("value") is None or len(parts) != 3:  # the record of a gate no artifact answered
        return f"gate failed: {g['gate']} (no artifact has a numeric {path})"
    target, fmt, precision = parts
    kind = f" [{g['latency_kind']}]" if g.get("latency_kind") else ""
    return (f"gate failed: {g['gate']} ({g['file'] + ', ' if g.get('file') else ''}{fmt} {precision} on "
            f"{target}: {path} = {metric_value(path, g['value'])}{kind})")


def check_gates_measurable(gates: list[Gate], profile: Any, has_eval: bool = True,
                           batches: Sequence[int] | None = None) -> None:
    """A gate nothing will measure cannot pass or fail: refused before any work (it was refused
    after validating everything): accuracy, drift or memory on an estimated target (nothing
    runs; an estimate has only a p50 latency), accuracy or drift without --eval, a batch size
    not in `batches` (the timed ones, when known)."""
    from edgecompress.targets.runners.estimate import runner_name_for

    estimated = runner_name_for(profile) == "estimate"
    for g in gates:
        if not has_eval and not estimated and g.path[0] in ("metrics", "drift"):
            raise ConfigError(f"{_gate(g.text)}: {g.path[0]} needs evaluation data; pass {opt('--eval', 'eval')}")
        # (an estimate has batch 1 only, said below: "add --batch" would not help there)
        if batches is not None and not estimated and g.path[0] == "latency_by_batch" and len(g.path) > 1 and \
                g.path[1].isdigit() and int(g.path[1]) not in {1, *batches}:
            add = say(f"--batch {g.path[1]}", f"{g.path[1]} to ValidateSettings.batches",
                      f"{g.path[1]} to options.batch")
            raise ConfigError(f"{_gate(g.text)}: batch {g.path[1]} is not timed; add {add}")
    if not estimated:
        return
    # mid-sentence, so a recipe's is `target rpi5` (`target: rpi5 is estimated here` read as a key)
    target = say(f"--target {profile.name}", f"target={profile.name!r}", f"target {profile.name}")
    for g in gates:
        if g.path[0] in ("metrics", "drift", "memory_mb"):
            raise ConfigError(f"{_gate(g.text)}: {target} is estimated here (no device "
                              f"attached), so it measures no {g.path[0]}; gate on latency_ms.p50 or size_bytes")
        # latency_by_batch.1.p90 is the same figure as latency_ms.p90; another batch has none
        by_batch = g.path[0] == "latency_by_batch" and len(g.path) > 2
        if by_batch and g.path[1] != "1":
            raise ConfigError(f"{_gate(g.text)}: {target} is estimated here (no device "
                              "attached): an estimate is of batch 1 only; gate on latency_ms.p50")
        # throughput_per_s is 1000 / p50 on an estimated row: the same figure, gateable
        if (g.path[0] == "latency_ms" and g.path[1] != "p50") or \
                (by_batch and g.path[2] not in ("p50", "throughput_per_s")):
            raise ConfigError(f"{_gate(g.text)}: {target} is estimated here (no device "
                              "attached): an estimate has a p50 latency only; gate on latency_ms.p50")
