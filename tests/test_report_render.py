"""report.md / report.html text, from Report objects built by hand (no model runs): what the
figures mean (QAT step sizes, the reference after QAT), the verdict, units, intervals at 100 %."""

from __future__ import annotations

from typing import Any

import pytest

from edgecompress.report.model import Report
from edgecompress.report.render import quant_rows, table_rows, to_html, to_markdown


def _art(fmt: str, prec: str, **kw: Any) -> dict[str, Any]:
    row = {"format": fmt, "precision": prec, "target": "x86-local", "path": f"m-{prec}.{fmt}",
           "size_bytes": 82_679, "latency_ms": {"p50": 0.03, "p90": 0.04}, "latency_kind": "measured",
           "metrics": {}, "drift": {}, "memory_mb": {"peak_rss": 57.2}, "status": "ok", "error": ""}
    return row | kw


def _report(artifacts: list[dict[str, Any]], **kw: Any) -> Report:
    # machine / versions given: the defaults read /proc and run git, which these tests do not need;
    # a report of a CLI run (its hints name flags) unless a test says otherwise
    kw.setdefault("surface", "cli")
    return Report(model={"name": "m"}, target="x86-local", artifacts=artifacts, machine={}, versions={}, **kw)


def _step(name: str, size: int, gamma: float, **kw: Any) -> dict[str, Any]:
    return {"name": name, "params": 12_346, "macs": 413_034, "size_bytes": size, "metric": 0.989,
            "metric_name": "top1", "metrics": {"top1": 0.989, "top1_agreement": 0.996},
            "ratios": {"alpha": 0.262, "beta": 0.258, "gamma": gamma}, "delta_metric": -0.0044} | kw


_QAT_NOTE = "int8 (QAT): size counts weights at 1 byte; params/MACs are the float model's"


def _qat_steps() -> list[dict[str, Any]]:
    return [_step("original", 191_192, 1.0), _step("prune", 50_584, 0.265), _step("distill", 50_584, 0.265),
            _step("qat", 14_584, 0.076, note=_QAT_NOTE), _step("chain total", 14_584, 0.076, note=_QAT_NOTE)]


def test_steps_table_says_the_qat_size_counts_weights_at_one_byte():
    """#1: γ 0.076 read as 13x smaller files (the int8 files were 2.6x smaller): the step's note is
    shown (once, for the QAT step and the chain total), the γ column says it is the weights as
    stored, and 14.6 kB is not printed as "0.01 MB"."""
    report = _report([_art("onnx", "int8")], steps=_qat_steps())
    md = to_markdown(report, None)
    assert f"- **qat, chain total**: {_QAT_NOTE}" in md
    assert md.count(_QAT_NOTE) == 1
    assert "| weights size |" in md and "γ weights as stored" in md and "γ memory" not in md
    assert "| qat | 12,346 | 413,034 | 14.6 kB |" in md and "| original | 47" not in md
    assert "| original | 12,346 | 413,034 | 191.2 kB |" in md
    assert "not an exported file's size" in md
    page = to_html(report)
    assert "<b>qat, chain total</b>: int8 (QAT): size counts weights at 1 byte" in page
    assert "γ weights as stored" in page and "14.6 kB" in page


def test_verdict_line_at_the_top():
    """#4: the outcome in one line before the summary: gates, failed artifacts, regressions (which
    fail the run only with --fail-on-regression) and baseline rows this run lacks."""
    gates = [{"gate": "latency_ms.p50>0.02", "artifact": "x86-local/onnx/int8", "value": 0.03, "passed": False},
             {"gate": "latency_ms.p50>0.02", "artifact": "x86-local/onnx/fp32", "value": 0.03, "passed": False},
             {"gate": "size_bytes>1e6", "artifact": "x86-local/onnx/fp32", "value": 82_679, "passed": True}]
    baseline = {"path": "b.json", "threshold": 0.05, "regressions": ["a", "b", "c"], "changes": [],
                "missing": ["x86-local/tflite/int8 (m-int8.tflite)"]}
    report = _report([_art("onnx", "int8"), _art("onnx", "fp32"), _art("tflite", "int8", status="failed")],
                     gates=gates, baseline=baseline)
    md = to_markdown(report, None)
    line = ("**Verdict: FAILED** — 1 artifact failed, 2 of 3 gate checks failed; 3 regressions against the "
            "baseline (they fail the run only with --fail-on-regression), 1 baseline artifact absent from "
            "this run")
    assert line in md and md.index(line) < md.index("- **model**")
    assert "In the baseline, absent from this run: x86-local/tflite/int8 (m-int8.tflite)." in md
    page = to_html(report)
    assert "<p class=bad><b>Verdict: FAILED</b> — 1 artifact failed" in page
    assert page.index("Verdict: FAILED") < page.index("<dl>")
    assert "In the baseline, absent from this run: x86-local/tflite/int8 (m-int8.tflite)." in page

    # everything passed; regressions under --fail-on-regression fail the run (the command said so)
    report.artifacts.pop()
    for g in report.gates:
        g["passed"] = True
    report.baseline = {"path": "b.json", "threshold": 0.05, "regressions": [], "changes": []}
    md = to_markdown(report, None)
    assert "**Verdict: passed** — 3 gate checks passed; no regression against the baseline" in md
    assert "<p class=ok><b>Verdict: passed</b>" in to_html(report)
    report.baseline["regressions"] = ["a"]
    report.command = "edgecompress validate d --baseline b.json --fail-on-regression"
    assert ("**Verdict: FAILED** — 3 gate checks passed; 1 regression against the baseline "
            "(--fail-on-regression: they fail the run)") in to_markdown(report, None)

    # nothing judged (no gate, no baseline, no failure): no verdict line
    assert "Verdict" not in to_markdown(_report([_art("onnx", "int8")]), None)


def test_full_agreement_shows_its_interval():
    """#5: 450 of 450 is 99.2-100 %, not exact: "100.0" alone read as exact."""
    full = {"top1_agreement": 1.0, "top1_agreement_low95": 0.9915, "top1_agreement_high95": 1.0}
    near = {"top1_agreement": 449 / 450, "top1_agreement_low95": 0.9876, "top1_agreement_high95": 0.99996}
    rows = table_rows(_report([_art("onnx", "fp32", drift=full), _art("onnx", "int8", drift=near)]))
    assert rows[0]["agreement %"] == "100.0 (99.2-100)"
    assert rows[1]["agreement %"] == "99.8 (98.8-100)"
    # an old report without the interval stays as it was
    assert table_rows(_report([_art("onnx", "fp32", drift={"top1_agreement": 1.0})]))[0]["agreement %"] == "100.0"


def test_reference_of_a_qat_run_is_the_float_model_before_qat():
    """#9: a QAT run's artifacts are compared with the float model before QAT (pipeline.py), not
    "after the passes" (QAT is one of them)."""
    report = _report([_art("onnx", "int8")], steps=_qat_steps(), reference={"top1": 0.989})
    md = to_markdown(report, None)
    assert "reference: the float PyTorch model before QAT, after prune, distill (artifact drift" in md
    assert "after the passes" not in md
    report.steps = [_step("original", 191_192, 1.0), _step("qat", 47_000, 0.25), _step("chain total", 47_000, 0.25)]
    assert "reference: the original float PyTorch model (before QAT, the only pass)" in to_markdown(report, None)
    report.steps = [_step("original", 191_192, 1.0), _step("prune", 50_584, 0.265),
                    _step("chain total", 50_584, 0.265)]
    assert "reference: the float PyTorch model after the passes" in to_markdown(report, None)


def test_no_speed_up_note_in_validate_asks_for_the_fp32_file():
    """#11: validate has no -f; its report tells to pass the fp32 file instead."""
    by_command = _report([_art("onnx", "int8")], command="edgecompress validate m-int8.onnx")
    by_data = _report([_art("onnx", "int8")], data={"eval": None, "eval_n": 0, "reference": ""})
    for report in (by_command, by_data):
        md = to_markdown(report, None)
        assert "pass the same model's fp32 file of that format to validate too" in md
        assert "-f onnx:fp32" not in md
    export = _report([_art("onnx", "int8")], data={"calib": None}, command="edgecompress export m -f onnx:int8")
    md = to_markdown(export, None)
    assert "`-f onnx:fp32`" in md and "to validate too" not in md


def test_regression_lines_and_gate_values_in_units():
    """#8: `.4g` gave "size 8.101e+04 -> 1.046e+05" and gate values without units."""
    from edgecompress.targets.baseline import compare_baseline

    def row(fmt, **kw):
        return {"format": fmt, "precision": "int8", "target": "x86-local", "status": "ok",
                "path": f"/o/m.{fmt}", **kw}

    old = [row("onnx", latency_ms={"p50": 0.025711}, metrics={"top1": 0.9911}),
           row("openvino", size_bytes=81012), row("tflite", memory_mb={"peak_rss": 40.1})]
    new = [row("onnx", latency_ms={"p50": 0.030195}, metrics={"top1": 0.93}),
           row("openvino", size_bytes=104602), row("tflite", memory_mb={"peak_rss": 57.2})]
    base = compare_baseline(_report(new), {"artifacts": old}, "b.json")
    gates = [{"gate": "size_bytes>200000", "artifact": "x86-local/onnx/fp32", "value": 212_117, "passed": False},
             {"gate": "latency_ms.p50 > 0.05", "artifact": "x86-local/onnx/fp32", "value": 0.03530, "passed": True},
             {"gate": "drift.top1_agreement<0.999", "artifact": "x86-local/onnx/int8", "value": 0.9985,
              "passed": False},
             {"gate": "memory_mb.peak_rss>100", "artifact": "x86-local/onnx/int8", "value": 57.24, "passed": True},
             {"gate": "latency_ms.p50>0.1", "artifact": "rpi5/onnx/int8", "value": 0.126, "passed": True}]
    report = _report([_art("onnx", "fp32"), _art("onnx", "int8"),
                      _art("onnx", "int8", target="rpi5", latency_kind="estimated")], baseline=base, gates=gates)
    md = to_markdown(report, None)
    assert "- onnx int8 on x86-local (/o/m.onnx): latency p50 0.0257 ms -> 0.0302 ms (+17.4 %)" in md
    assert "- openvino int8 on x86-local (/o/m.openvino): size 81.0 kB -> 104.6 kB (+29.1 %)" in md
    assert "top-1 99.11 % -> 93.00 % (-6.1 pt)" in md  # accuracy drops in points, not relative
    assert "peak memory 40.1 MiB -> 57.2 MiB (+42.6 %)" in md
    assert "| size_bytes>200000 | x86-local/onnx/fp32 | 212.1 kB | FAILED |" in md
    assert "| latency_ms.p50 > 0.05 | x86-local/onnx/fp32 | 0.0353 ms | ok (passed) |" in md
    assert "| drift.top1_agreement<0.999 | x86-local/onnx/int8 | 99.85 % | FAILED |" in md
    assert "| memory_mb.peak_rss>100 | x86-local/onnx/int8 | 57.2 MiB | ok (passed) |" in md
    assert "| latency_ms.p50>0.1 | rpi5/onnx/int8 | 0.126 ms (est.) | ok (passed) |" in md  # #2: an estimate
    assert "e+0" not in md
    page = to_html(report)
    assert "size 81.0 kB -&gt; 104.6 kB (+29.1 %)" in page and "<td>212.1 kB</td>" in page


def test_units_peak_rss_mib_sizes_kb_mb_and_ms_digits():
    """#14: peak RSS is VmHWM kB / 1024 (MiB); sizes are 10^6 B (MB), in kB under 1 MB; 0.03396 ms
    printed "0.034" next to "0.0302" (a digit lost on the carry)."""
    report = _report([_art("openvino", "fp32", size_bytes=18_654_980, latency_ms={"p50": 0.03396, "p90": 0.5}),
                      _art("openvino", "int8", size_bytes=4_700_000, latency_ms={"p50": 0.0302, "p90": 12.345})])
    fp32, int8 = table_rows(report)
    assert "peak RSS MiB" in fp32 and "peak RSS MB" not in fp32
    assert fp32["size"] == "18.65 MB" and int8["size"] == "4.70 MB (0.25x)"
    assert fp32["p50 ms"] == "0.0340" and fp32["p90 ms"] == "0.500" and int8["p90 ms"] == "12.35"
    assert table_rows(_report([_art("onnx", "int8", size_bytes=14_584)]))[0]["size"] == "14.6 kB"
    assert "in MiB (2^20 B); sizes are in kB / MB (10^3 / 10^6 B)" in to_markdown(report, None)


def test_a_busy_host_is_said():
    """#12: a 1-min load of 4.9 on 2 cores was a bare list in the summary."""
    busy = _report([_art("onnx", "fp32")])
    busy.machine = {"cores": 2, "loadavg": [4.87, 2.75, 2.97]}
    md = to_markdown(busy, None)
    assert "The host was busy: 1-min load average 4.9 on 2 cores" in md
    assert "load average (1/5/15 min) [4.87, 2.75, 2.97]" in md
    quiet = _report([_art("onnx", "fp32")])
    quiet.machine = {"cores": 2, "loadavg": [1.0, 1.2, 1.1]}
    assert "The host was busy" not in to_markdown(quiet, None)
    est = _report([_art("onnx", "fp32", latency_kind="estimated")])  # nothing ran here: no load to blame
    est.machine = busy.machine
    assert "The host was busy" not in to_markdown(est, None)


def test_a_qat_openvino_ir_has_an_ops_row():
    """#6: the QAT OpenVINO IR (details.quantization = {source: qat, via: ...}) had no row."""
    from edgecompress.report.render import quant_rows

    qat = {"source": "qat", "via": "QDQ ONNX -> ov.convert_model"}
    rows = quant_rows(_report([_art("openvino", "int8", details={"quantization": qat})]))
    assert rows == [{"format": "openvino", "precision": "int8", "int8": "QAT, QDQ ONNX -> ov.convert_model",
                     "float": "not recorded"}]


def test_plot_names_the_threads_and_does_not_blow_up_noise(monkeypatch):
    """#13: the x label said nothing of threads; 88.0 vs 88.1 % (one image of 700) filled the frame."""
    import matplotlib.axes

    from edgecompress.report.plot import tradeoff_png

    seen: dict[str, object] = {}
    real_x, real_y = matplotlib.axes.Axes.set_xlabel, matplotlib.axes.Axes.set_ylim
    def set_xlabel(self, text, *a, **k):
        seen["x"] = text
        return real_x(self, text, *a, **k)

    def set_ylim(self, *a, **k):
        if len(a) == 2:  # ours: (bottom, top)
            seen["y"] = a
        return real_y(self, *a, **k)

    real_legend = matplotlib.axes.Axes.legend

    def legend(self, *a, **k):
        leg = real_legend(self, *a, **k)
        seen["legend"] = ([t.get_text() for t in leg.get_texts()], leg.get_bbox_to_anchor().x0 > self.bbox.x1)
        return leg

    monkeypatch.setattr(matplotlib.axes.Axes, "set_xlabel", set_xlabel)
    monkeypatch.setattr(matplotlib.axes.Axes, "set_ylim", set_ylim)
    monkeypatch.setattr(matplotlib.axes.Axes, "legend", legend)
    arts = [_art("onnx", "fp32", metrics={"top1": 0.880}, settings={"threads": 1}, latency_ms={"p50": 0.068}),
            _art("onnx", "int8", metrics={"top1": 0.881}, settings={"threads": 1})]
    assert tradeoff_png(arts, "m")[:4] == b"\x89PNG"
    assert seen["x"] == "latency p50, batch 1, 1 thread (ms)"
    # the tables' digits (0.0680, not 0.068), and the legend beside the axes, not over the points
    texts, beside = seen["legend"]
    assert texts[0].endswith(" · 0.0680 ms") and texts[1].endswith(" · 0.0300 ms"), texts
    assert beside
    lo, hi = seen["y"]
    assert hi - lo >= 2.0  # points, at least 1 either side


def test_size_text_switches_units_where_the_rounding_does():
    """N10: 999,950 bytes read "1000.0 kB"; 999.7 read "1.0 kB" next to "999 B"."""
    from edgecompress.report.render import size_text

    assert [size_text(n) for n in (90, 999.4, 999.7, 82_679, 999_949, 999_950, 18_654_980)] == [
        "90 B", "999 B", "1.0 kB", "82.7 kB", "999.9 kB", "1.00 MB", "18.65 MB"]


def test_a_row_that_failed_a_gate_does_not_say_just_ok():
    """reader audit: "ok" in the artifacts table next to a FAILED gate a page down. The row names
    its failed gates (and only its own: the other file of the same format passed)."""
    gates = [{"gate": "latency_ms.p50>0.02", "artifact": "x86-local/onnx/int8", "value": 0.03, "passed": False},
             {"gate": "size_bytes>1e6", "artifact": "x86-local/onnx/int8", "value": 82_679, "passed": True},
             {"gate": "latency_ms.p50>0.02", "artifact": "x86-local/tflite/int8", "file": "b.tflite",
              "value": 0.03, "passed": False}]
    report = _report([_art("onnx", "int8"), _art("onnx", "fp32"), _art("tflite", "int8", path="a.tflite"),
                      _art("tflite", "int8", path="b.tflite")], gates=gates)
    status = [r["status"] for r in table_rows(report)]
    assert status == ["ok, gate FAILED: latency_ms.p50>0.02", "ok", "ok", "ok, gate FAILED: latency_ms.p50>0.02"]
    page = to_html(report)
    assert page.count('<td class="bad">ok, gate FAILED: latency_ms.p50&gt;0.02</td>') == 2


def test_a_row_not_validated_is_not_painted_failed_nor_said_measured():
    """--no-validate: the HTML painted the row red (class "failed") while the verdict passed, and
    report.json said latency_kind "measured" for a row nothing timed."""
    from edgecompress.report.model import artifact_row

    art = {"format": "onnx", "precision": "fp32", "path": "m.onnx", "size_bytes": 10, "sha256": ""}
    row = artifact_row({"artifact": art, "status": "not-validated"})
    assert row["latency_kind"] is None
    assert artifact_row({"artifact": art, "latency_ms": {"1": {"p50": 1.0}}})["latency_kind"] == "measured"
    assert _report([dict(_art("onnx", "fp32"), latency_kind=None)]).verdict()["latency"] == "none"
    assert _report([_art("onnx", "fp32"), dict(_art("onnx", "int8"), latency_kind="estimated")]).verdict()[
        "latency"] == "mixed"
    assert _report([dict(_art("onnx", "int8"), latency_kind="estimated")]).verdict()["latency"] == "estimated"
    page = to_html(_report([dict(_art("onnx", "fp32"), status="not-validated")]))
    assert 'class="failed"' not in page and 'class="bad">not-validated' not in page
    assert 'class="failed"' in to_html(_report([dict(_art("onnx", "fp32"), status="failed")]))


@pytest.mark.parametrize("target, said", [
    ("rpi4", "On rpi4: -58.8 % on its 1 held-out figure (faster than published: optimistic, the device took "
             "2.4x the estimate)."),
    ("android-arm64", "On android-arm64: +1.2 to +18.3 % on its 4 held-out figures (slower than published, "
                      "so on the safe side)."),
    ("rpi5", "No published rpi5 figure checks it: the error on this target is unknown"),
])
def test_an_estimate_says_which_way_it_errs_on_its_target(target, said):
    """reader audit: "mean 18.9 %, max 58.8 %" said neither which device erred nor which way."""
    from edgecompress.targets.estimate import held_out_error

    row = _art("onnx", "int8", target=target, latency_kind="estimated",
               runtime={"name": "estimate", "settings": {"calibration_error": held_out_error(target)}})
    report = Report(model={"name": "m"}, target=target, artifacts=[row], machine={}, versions={})
    md = to_markdown(report, None)
    assert "Calibration error on held-out public figures: mean 18.9 %, max 58.8 %." in md
    assert said in md
    assert said.replace("'", "&#x27;") in to_html(report)


def test_an_int8_file_without_its_export_report_has_an_ops_row():
    """reader audit: validating loose int8 files dropped the ops section without a word."""
    rows = quant_rows(_report([_art("onnx", "int8"), _art("onnx", "fp32")]))
    assert rows == [{"format": "onnx", "precision": "int8", "int8": "not recorded",
                     "float": "not recorded (validated without its export's report)"}]
    recorded = _art("onnx", "int8", details={"quantization": {"format": "QDQ", "float_nodes": []}})
    assert quant_rows(_report([recorded]))[0]["float"] == "none"


def test_a_compression_run_relates_its_files_to_the_original_model():
    """reader audit: "99.1 (+0.2)" (against the float model before QAT) next to the steps' ΔA -0.44
    (against the original): the files' change against the original is said."""
    steps = [_step("original", 191_192, 1.0, metric=0.993), _step("prune", 50_584, 0.265),
             _step("qat", 14_584, 0.076, note=_QAT_NOTE)]
    arts = [_art("onnx", "int8", metrics={"top1": 0.991}), _art("openvino", "int8", metrics={"top1": 0.9887})]
    md = to_markdown(_report(arts, steps=steps, reference={"top1": 0.989}), None)
    assert ("Against the original model (top-1 99.3 %, PyTorch, before the compression steps) the files' "
            "top-1 is: onnx int8 -0.2 pt, openvino int8 -0.4 pt.") in md
    assert "| 99.1 (+0.2) |" in md  # the table stays against the reference
    assert "Against the original model" not in to_markdown(_report(arts, reference={"top1": 0.989}), None)


def test_validates_reference_row_is_marked_only_when_its_name_is_unique():
    full = {"top1_agreement": 1.0, "top1_agreement_low95": 0.9915, "top1_agreement_high95": 1.0, "cosine": 1.0}
    one = _report([_art("onnx", "fp32", path="/a/m-fp32.onnx", drift=full), _art("onnx", "int8", drift=full)],
                  data={"reference_file": "m-fp32.onnx"})
    rows = table_rows(one)
    assert rows[0]["agreement %"] == rows[0]["cosine"] == "the reference"
    assert rows[1]["agreement %"] == "100.0 (99.2-100)"
    # two folders' m-fp32.onnx: which one ran as the reference is not known from the name
    two = _report([_art("onnx", "fp32", path="/a/m-fp32.onnx", drift=full),
                   _art("onnx", "fp32", path="/b/m-fp32.onnx", drift=full)], data={"reference_file": "m-fp32.onnx"})
    assert [r["agreement %"] for r in table_rows(two)] == ["100.0 (99.2-100)"] * 2


def test_plot_draws_each_accuracys_interval(monkeypatch):
    """#13: no error bars, so 88.0 vs 88.1 % on 700 images read as a ranking. With the evaluation
    set's size each top-1 gets its Wilson interval (agreement plots use the drift's own)."""
    import matplotlib.axes

    from edgecompress.report.plot import tradeoff_png
    from edgecompress.targets.metrics import wilson_interval

    bars: list[tuple[float, float]] = []
    ylim: list[tuple[float, float]] = []
    real_e, real_y = matplotlib.axes.Axes.errorbar, matplotlib.axes.Axes.set_ylim

    def errorbar(self, x, y, yerr=None, **k):
        bars.append((y - yerr[0][0], y + yerr[1][0]))
        return real_e(self, x, y, yerr=yerr, **k)

    def set_ylim(self, *a, **k):
        if len(a) == 2:
            ylim.append(a)
        return real_y(self, *a, **k)

    monkeypatch.setattr(matplotlib.axes.Axes, "errorbar", errorbar)
    monkeypatch.setattr(matplotlib.axes.Axes, "set_ylim", set_ylim)
    arts = [_art("onnx", "fp32", metrics={"top1": 616 / 700}), _art("onnx", "int8", metrics={"top1": 617 / 700})]
    assert tradeoff_png(arts, "m", eval_n=700)[:4] == b"\x89PNG"
    want = [tuple(100 * v for v in wilson_interval(k, 700)) for k in (616, 617)]
    assert bars == [pytest.approx(w) for w in want]
    assert ylim[-1][0] < min(b[0] for b in bars) and ylim[-1][1] > max(b[1] for b in bars)
    bars.clear()
    assert tradeoff_png(arts, "m")[:4] == b"\x89PNG" and bars == []  # n unknown: no bar made up
    agree = {"top1_agreement": 0.981, "top1_agreement_low95": 0.968, "top1_agreement_high95": 0.989}
    assert tradeoff_png([_art("onnx", "int8", drift=agree)], "m")[:4] == b"\x89PNG"
    assert bars == [pytest.approx((96.8, 98.9))]


def test_a_perfect_score_plots_and_a_failing_plot_costs_no_report(tmp_path, monkeypatch, capsys):
    """100 % top-1 on 21 images crashed the whole run (exit 1, --out half-written): the Wilson
    upper bound at k = n came out just under 1, and matplotlib refused the negative error bar."""
    from edgecompress.report import write as write_mod
    from edgecompress.report.plot import tradeoff_png
    from edgecompress.targets.metrics import wilson_interval

    assert all(wilson_interval(n, n)[1] == 1.0 and wilson_interval(0, n)[0] == 0.0 for n in range(1, 1001))
    assert all(lo <= k / n <= hi for n in range(1, 120) for k in range(n + 1)
               for lo, hi in [wilson_interval(k, n)])
    for n in (21, 100, 700):
        assert tradeoff_png([_art("onnx", "fp32", metrics={"top1": 1.0})], "m", eval_n=n)[:4] == b"\x89PNG"

    def broken(*a: Any, **k: Any) -> bytes:
        raise ValueError("'yerr' must not contain negative values")

    monkeypatch.setattr(write_mod, "tradeoff_png", broken)
    paths = write_mod.write_report(_report([_art("onnx", "fp32", metrics={"top1": 1.0})]), tmp_path)
    assert "png" not in paths and {"json", "md", "html"} <= set(paths)
    assert "note: the report's plot was not drawn (ValueError" in capsys.readouterr().err


def test_markdown_and_html_draw_the_same_table_sections():
    """Both renderers take their sections from one list: report.md lacked the I/O table's note on
    reading int8 tensors that report.html had; each section title and note appears in both."""
    report = _report([_art("onnx", "int8")], steps=_qat_steps())
    md, page = to_markdown(report, None), to_html(report)
    for text in ("Runtimes and I/O contract", "int8 tensors: real value = scale × (q − zero point).",
                 "Compression steps", "Weights size and γ are the weights as each step stores them"):
        assert text in md and text in page
    assert md.index("Runtimes and I/O contract") < md.index("Compression steps")
    assert page.index("Runtimes and I/O contract") < page.index("Compression steps")


def _by_batch(p50_1: float, p50_8: float) -> dict[str, Any]:
    return {"1": {"p50": p50_1, "p90": p50_1 * 1.1, "throughput_per_s": 1000 / p50_1},
            "8": {"p50": p50_8, "p90": 0.2886, "throughput_per_s": 8000 / p50_8}}


def test_batch_n_latency_and_throughput_are_in_the_human_reports():
    """`--batch 8` was timed (report.json latency_by_batch["8"]) but report.md / .html showed batch 1
    only: the figure asked for was nowhere a reader of the report would look."""
    report = _report([_art("onnx", "fp32", latency_by_batch=_by_batch(0.0516, 0.2621)),
                      _art("onnx", "int8", latency_by_batch={
                          **_by_batch(0.0301, 0.1502),
                          "16": {"error": "the file fixes batch 1"}})])  # not timed: left to the note
    md = to_markdown(report, None)
    assert ("## Latency by batch size\n\n"
            "p50 / p90 are per call (one batch of that many samples); throughput is samples per second "
            "at the p50 (batch / p50).\n\n"
            "| format | precision | batch | p50 ms | p90 ms | throughput samples/s |\n"
            "|---|---|---|---|---|---|\n"
            "| onnx | fp32 | 1 | 0.0516 | 0.0568 | 19380 |\n"
            "| onnx | fp32 | 8 | 0.262 | 0.289 | 30523 |\n"
            "| onnx | int8 | 1 | 0.0301 | 0.0331 | 33223 |\n"
            "| onnx | int8 | 8 | 0.150 | 0.289 | 53262 |\n") in md
    assert md.index("## Latency by batch size") < md.index("## Runtimes and I/O contract")
    assert "Latency is batch 1 (other batch sizes: Latency by batch size, below)" in md  # the note points there
    page = to_html(report)
    assert "<h2>Latency by batch size</h2>" in page and "<td>30523</td>" in page and "<td>53262</td>" in page


def test_no_batch_table_when_only_batch_1_was_timed():
    report = _report([_art("onnx", "fp32", latency_by_batch={"1": {"p50": 0.05, "p90": 0.06,
                                                                  "throughput_per_s": 20000.0}})])
    assert "Latency by batch size" not in to_markdown(report, None)
    assert "Latency by batch size" not in to_html(report)
    assert "Latency is batch 1, in ms" in to_markdown(report, None)


def test_markdown_keeps_odd_paths_whole_and_inert():
    """A folder named x<script>..&"q`|b: the Markdown turned `|` into `/` (a file that does not
    exist), passed `<script>` raw to viewers that render HTML, and a backtick broke the code span."""
    import re

    from edgecompress.report.render import _uncode

    odd = "/t/x<script>alert(1)</script>&q`|b/m-fp32.onnx"
    report = _report([_art("onnx", "fp32", path=odd), _art("onnx", "int8")],
                     command=f"edgecompress validate '{odd}'",
                     gates=[{"gate": "drift.top1_agreement<0.97", "artifact": "x86-local/onnx/fp32", "file": odd,
                             "value": 0.99, "passed": True}])
    md = to_markdown(report, None)
    # the command is one code span (inert there), whatever backticks it holds
    assert f"- **command**: `` edgecompress validate '{odd}' ``" in md
    outside = re.sub(r"(`+) .*? \1", "", md)
    assert "<script>" not in outside
    assert "| x86-local/onnx/fp32 | /t/x&lt;script>alert(1)&lt;/script>&q\\`\\|b/m-fp32.onnx |" in md
    assert "| drift.top1_agreement<0.97 |" in md  # a gate's < is no tag: left as it reads
    assert _uncode(f"`` {odd} ``") == odd and _uncode("`a`") == "a" and _uncode("plain") == "plain"
    assert "<dd>edgecompress validate &#x27;/t/x&lt;script&gt;" in to_html(report)


def test_an_estimated_report_does_not_ask_for_the_eval_it_ignored():
    """`validate --target rpi5 --eval d.npz`: the report ended "pass --eval data", advice already
    followed, and report.json could not tell "no --eval" from "--eval not used"."""
    row = _art("onnx", "fp32", target="rpi5", latency_kind="estimated")
    report = Report(model={"name": "m"}, target="rpi5", artifacts=[row], machine={}, versions={},
                    data={"eval": None, "eval_ignored": "d.npz"})
    for text in (to_markdown(report, None), to_html(report)):
        assert "an estimated target runs nothing" in text and "(d.npz was given and not used)" in text
        assert "pass --eval" not in text
