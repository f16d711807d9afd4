"""Interleaved latency rounds: the order alternates, figures are medians, failures are not hidden."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from edgecompress.errors import ValidationError
from edgecompress.targets.profile import get_target
from edgecompress.targets.runners.local import BenchRequest
from edgecompress.targets.validate import Measurement, ValidateSettings, _more_rounds, combine_rounds


def _lat(p50: float, runs: int = 10) -> dict:
    return {"1": {"p50": p50, "p90": p50 + 1, "p99": p50 + 2, "mean": p50, "min": p50 - 0.5,
                  "runs": runs, "throughput_per_s": 1000 / p50, "cpu_p50": p50, "io_ms": 0.1}}


def test_combine_rounds_takes_medians_and_keeps_the_rounds():
    got = combine_rounds([_lat(4.0), _lat(9.0), _lat(5.0)])["1"]
    assert got["p50"] == 5.0 and got["p90"] == 6.0 and got["p99"] == 7.0
    assert got["min"] == 3.5 and got["runs"] == 30
    assert got["p50_rounds"] == [4.0, 9.0, 5.0]
    assert got["throughput_per_s"] == pytest.approx(200.0)


def test_combine_rounds_keeps_a_batch_error():
    err = {"1": _lat(4.0)["1"], "8": {"error": "RuntimeError: batch fixed at 1"}}
    got = combine_rounds([err, {**_lat(5.0), "8": err["8"]}])
    assert got["8"] == {"error": "RuntimeError: batch fixed at 1"}
    assert got["1"]["p50"] == 4.5


class _Runner:
    """Records the order of the calls; answers a latency that depends on the artifact."""

    def __init__(self, fail: str | None = None):
        self.calls: list[str] = []
        self.fail = fail

    def run(self, req: BenchRequest, profile) -> dict:
        name = Path(req.artifact).name
        self.calls.append(name)
        assert req.outputs is None  # latency rounds evaluate nothing
        if name == self.fail:
            raise ValidationError(f"{name}: runtime crashed")
        return {"latency_ms": _lat(2.0 + len(self.calls))}


def _state(kinds: list[str]):
    out = [Measurement(artifact={"path": f"a{i}"}, target="x86-local", latency_ms=_lat(1.0),
                       latency_kind=k, settings={"rounds": 1}) for i, k in enumerate(kinds)]
    reqs = [BenchRequest(artifact=Path(f"a{i}"), runtime="onnxruntime", outputs=Path("o.npy"))
            for i in range(len(kinds))]
    return out, reqs


def test_rounds_alternate_order_and_skip_estimates():
    out, reqs = _state(["measured", "estimated", "measured", "measured"])
    runner = _Runner()
    _more_rounds(out, reqs, runner, get_target("x86-local"), 3, None)
    # round 2 backwards, round 3 forwards; the estimate is never repeated
    assert runner.calls == ["a3", "a2", "a0", "a0", "a2", "a3"]
    assert out[1].latency_ms == _lat(1.0) and out[1].settings["rounds"] == 1
    for m in (out[0], out[2], out[3]):
        assert m.settings["rounds"] == 3 and len(m.latency_ms["1"]["p50_rounds"]) == 3
        assert m.latency_ms["1"]["p50"] == float(np.median(m.latency_ms["1"]["p50_rounds"]))


def test_a_failing_round_marks_the_artifact_failed():
    out, reqs = _state(["measured", "measured"])
    _more_rounds(out, reqs, _Runner(fail="a1"), get_target("x86-local"), 2, None)
    assert out[1].status == "failed" and out[1].error.startswith("latency round 2: a1: runtime crashed")
    assert out[0].status == "ok" and out[0].settings["rounds"] == 2


def test_rounds_must_be_positive():
    from edgecompress.errors import ConfigError

    with pytest.raises(ConfigError, match="rounds 0"):
        ValidateSettings(rounds=0)


def _row(precision: str, p50: float, io: float, drift: dict) -> dict:
    return {"format": "tflite", "precision": precision, "path": f"m-{precision}.tflite", "size_bytes": 1000,
            "latency_ms": {"p50": p50, "p90": p50 + 1, "io_ms": io}, "latency_kind": "measured",
            "metrics": {}, "drift": drift, "status": "ok", "target": "x86-local",
            "settings": {"runs": 100, "warmup": 10, "rounds": 3}}


def test_report_shows_top1_change_and_the_agreements_interval():
    """The bars are a top-1 drop (points) and an agreement that 700 images only pin down to about
    +-1 pt: the table shows both, computed from the outputs, not copied."""
    import numpy as np

    from edgecompress.report.model import Report
    from edgecompress.report.render import table_rows
    from edgecompress.targets.metrics import drift, wilson_interval

    rng = np.random.default_rng(1)
    ref = rng.standard_normal((700, 10))
    out = ref.copy()
    out[:13] = np.roll(out[:13], 1, axis=1)  # 13 rows lose their argmax: 687 / 700 agree
    d = drift(ref, out)
    assert d["top1_agreement"] == 687 / 700
    lo, hi = d["top1_agreement_low95"], d["top1_agreement_high95"]
    assert lo < 687 / 700 < hi and round(100 * lo, 1) == 96.8 and round(100 * hi, 1) == 98.9
    assert wilson_interval(700, 700)[1] == 1.0 and wilson_interval(0, 10)[0] == 0.0
    assert wilson_interval(350, 700)[0] < 0.5 < wilson_interval(350, 700)[1]
    report = Report(model={"name": "m"}, target="x86-local", reference={"top1": 0.874}, artifacts=[
        _row("fp32", 8.0, 0.3, drift(ref, ref)) | {"metrics": {"top1": 0.874}},
        _row("int8", 4.0, 0.7, d) | {"metrics": {"top1": 0.869}}])
    fp32, int8 = table_rows(report)
    assert int8["top-1 %"] == "86.9 (-0.5)" and fp32["top-1 %"] == "87.4 (+0.0)"
    assert int8["agreement %"] == "98.1 (96.8-98.9)" and fp32["agreement %"] == "100.0 (99.5-100)"
    report.reference = {}  # loose files validated without labels for the reference: no change shown
    assert table_rows(report)[1]["top-1 %"] == "86.9"


def test_report_shows_speed_up_with_io_conversion_and_cosine_minimum():
    from edgecompress.report.model import Report
    from edgecompress.report.render import table_rows, to_markdown

    report = Report(model={"name": "m"}, target="x86-local", artifacts=[
        _row("fp32", 8.0, 0.3, {"cosine": 1.0, "cosine_min": 1.0}),
        _row("int8", 4.0, 0.7, {"cosine": 0.99, "cosine_min": 0.93})])
    fp32, int8 = table_rows(report)
    # invoke alone 2.00x; with the conversion each file needs, (8.0 + 0.3) / (4.0 + 0.7) = 1.77x
    assert int8["speed-up"] == "2.00x (1.77x with I/O conversion)"
    assert fp32["speed-up"] == "1.00x" and fp32["cosine"] == "1.00000"
    assert int8["cosine"] == "0.99000 (min 0.930)"
    assert "median of 3 rounds" in to_markdown(report, None)
    # a conversion that costs both files the same changes nothing: no second figure
    report.artifacts[1]["latency_ms"]["io_ms"] = 0.15
    assert table_rows(report)[1]["speed-up"] == "2.00x"


def test_speed_up_shows_the_spread_of_the_rounds_ratios():
    """Rounds time the fp32 and int8 files one after the other: each round's ratio is paired, and
    their spread says how far a single run's speed-up moves on the machine."""
    from edgecompress.report.model import Report, artifact_row
    from edgecompress.report.render import table_rows

    rounds = {"fp32": [8.0, 9.0, 8.4], "int8": [4.0, 4.0, 4.2]}  # ratios 2.00, 2.25, 2.00
    rows = []
    for prec, r in rounds.items():
        m = {"artifact": {"format": "onnx", "precision": prec, "path": f"m-{prec}.onnx", "size_bytes": 1000,
                          "sha256": ""},
             "latency_ms": {"1": {"p50": sorted(r)[1], "p90": max(r), "p50_rounds": r}}, "status": "ok"}
        rows.append(artifact_row(m))
    assert rows[1]["latency_ms"]["p50_rounds"] == [4.0, 4.0, 4.2]  # kept up front for the table
    report = Report(model={"name": "m"}, target="x86-local", artifacts=rows)
    # the median ratio 8.4 / 4.0 = 2.10x, and the rounds' own ratios 2.00-2.25x
    assert table_rows(report)[1]["speed-up"] == "2.10x (rounds 2.00-2.25x)"
    rows[1]["latency_ms"]["p50_rounds"] = [4.2, 4.5, 4.2]  # 8.0/4.2, 9.0/4.5, 8.4/4.2: all 1.90-2.00
    assert table_rows(report)[1]["speed-up"] == "2.10x (rounds 1.90-2.00x)"
    rows[1]["latency_ms"]["p50_rounds"] = [4.0, 4.5, 4.2]  # each round 2.00x: no spread to show
    assert table_rows(report)[1]["speed-up"] == "2.10x"
    rows[1]["latency_ms"]["p50_rounds"] = [4.0, 4.0]  # rounds that do not pair up: nothing claimed
    assert table_rows(report)[1]["speed-up"] == "2.10x"
    rows[1]["latency_ms"].update(p50_rounds=[4.0, 4.0, 4.2], io_ms=0.6)  # and an int8 input to quantize
    rows[0]["latency_ms"]["io_ms"] = 0.0
    assert table_rows(report)[1]["speed-up"] == "2.10x (rounds 2.00-2.25x; 1.83x with I/O conversion)"


def test_two_files_of_one_format_and_precision_are_told_apart():
    """`validate ours.onnx theirs.onnx` gave two "onnx int8" rows no reader could tell apart."""
    from edgecompress.report.model import Report
    from edgecompress.report.render import table_rows, to_markdown

    rows = [_row("fp32", 8.0, 0.3, {}), _row("int8", 4.0, 0.7, {}), _row("int8", 5.0, 0.7, {})]
    rows[2]["path"] = "/elsewhere/theirs.tflite"
    report = Report(model={"name": "m"}, target="x86-local", artifacts=rows)
    assert [r["file"] for r in table_rows(report)] == ["m-fp32.tflite", "m-int8.tflite", "theirs.tflite"]
    assert "| file | format |" in to_markdown(report, None)
    # two models' files of ONE name (exp1/, comp1/) read as one: the folder that tells them apart
    rows[1]["path"], rows[2]["path"] = "/w/exp1/m-int8.tflite", "/w/comp1/m-int8.tflite"
    assert [r["file"] for r in table_rows(report)] == ["m-fp32.tflite", "exp1/m-int8.tflite", "comp1/m-int8.tflite"]
    report.artifacts.pop()  # one file per format and precision: no file column
    assert "file" not in table_rows(report)[0]


def test_report_says_why_a_quantized_row_has_no_speed_up():
    """A recipe's `export: [onnx:int8]` has no fp32 file to compare with: the table's dash is
    explained, with the format to add; once the fp32 row is there the note goes."""
    from edgecompress.report.model import Report
    from edgecompress.report.render import table_rows, to_markdown

    int8 = _row("int8", 4.0, 0.7, {"cosine": 0.99})
    report = Report(model={"name": "m"}, target="x86-local", artifacts=[int8])
    assert table_rows(report)[0]["speed-up"] == "—"
    assert "No speed-up or size ratio for tflite: no fp32 artifact" in to_markdown(report, None)
    # the format to add, in the words of what built the report (a Report built in Python: formats)
    assert "(add tflite:fp32 to formats)" in to_markdown(report, None)
    for surface, advice in (("cli", "`-f tflite:fp32`"), ("recipe", "tflite:fp32 to the recipe's `export`")):
        assert advice in to_markdown(dataclasses.replace(report, surface=surface), None)
    report.artifacts = [_row("fp32", 8.0, 0.3, {"cosine": 1.0}), int8]
    assert table_rows(report)[1]["speed-up"].startswith("2.00x")
    assert "No speed-up" not in to_markdown(report, None)


def test_no_speed_up_note_counts_an_fp32_file_of_another_model_as_no_reference():
    """validate's model groups: an int8 file of model B next to model A's fp32 file gets no
    speed-up (render pairs only within a group), and the note said nothing about why."""
    from edgecompress.report.model import Report
    from edgecompress.report.render import table_rows, to_markdown

    fp32, int8 = _row("fp32", 8.0, 0.3, {"cosine": 1.0}), _row("int8", 4.0, 0.7, {})
    fp32["model_group"], int8["model_group"] = 0, 1
    report = Report(model={"name": "m"}, target="x86-local", artifacts=[fp32, int8],
                    command="edgecompress validate a.tflite b.tflite")
    assert table_rows(report)[1]["speed-up"] == "—"
    assert "No speed-up or size ratio for tflite" in to_markdown(report, None)
    int8["model_group"] = 0
    assert "No speed-up" not in to_markdown(report, None)


def test_report_says_only_the_first_of_several_outputs_is_compared():
    from edgecompress.report.model import Report
    from edgecompress.report.render import to_markdown

    row = _row("fp32", 8.0, 0.3, {"cosine": 1.0})
    report = Report(model={"name": "m"}, target="x86-local", artifacts=[row])
    assert "outputs: accuracy" not in to_markdown(report, None)
    row["io"] = {"inputs": [], "outputs": [{"name": "logits", "shape": [1, 10]}, {"name": "aux", "shape": [1, 4]}]}
    assert "The model has 2 outputs: accuracy, agreement and cosine are of the first (logits) only." \
        in to_markdown(report, None)


def test_report_shows_what_a_pass_could_not_do():
    """A pass's notes (a prune ratio capped at max_layer_ratio) were only printed on the terminal."""
    from edgecompress.report.model import Report
    from edgecompress.report.render import to_html, to_markdown

    steps = [{"name": "original", "params": 10, "macs": 10, "size_bytes": 40},
             {"name": "prune", "params": 4, "macs": 4, "size_bytes": 16,
              "log": {"warnings": ["prune.ratio 0.99: capped at max_layer_ratio 0.9 in 5 layer(s)"]}}]
    report = Report(model={"name": "m"}, target="x86-local", artifacts=[], steps=steps)
    assert "- **prune**: prune.ratio 0.99: capped at max_layer_ratio 0.9 in 5 layer(s)" in to_markdown(report, None)
    assert "<b>prune</b>: prune.ratio 0.99: capped" in to_html(report, None)
    steps[1]["log"] = {"warnings": []}
    assert "capped" not in to_markdown(report, None)


def test_report_says_which_batch_an_artifact_could_not_run():
    from edgecompress.report.model import Report
    from edgecompress.report.render import to_markdown

    row = _row("fp32", 8.0, 0.3, {"cosine": 1.0})
    report = Report(model={"name": "m"}, target="x86-local", artifacts=[row])
    assert "Not timed" not in to_markdown(report, None)
    row["latency_by_batch"] = {"1": {"p50": 8.0}, "4": {"error": "ValueError: Cannot set tensor: Dimension mismatch"}}
    assert "Not timed: tflite fp32 at batch 4: ValueError: Cannot set tensor" in to_markdown(report, None)
