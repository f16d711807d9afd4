"""`edgecompress validate`: manifest check, report, baseline regressions, --fail-on gates."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import run_cli

FAST = ("--runs", "5", "--warmup", "1")


@pytest.fixture(scope="module")
def export_dir(digits_spec, tmp_path_factory):
    from edgecompress.pipeline import ExportJob, run_export

    out = tmp_path_factory.mktemp("exp")
    run_export(ExportJob(model=digits_spec, formats=[("onnx", "fp32"), ("openvino", "fp32"),
                                                     ("openvino", "int8")],
                         out_dir=out, do_validate=False, progress=False))
    return out


@pytest.fixture(scope="module")
def eval_npz():
    from edgecompress.models.digits import digits_npz

    return str(digits_npz("test"))


@pytest.fixture(scope="module")
def first_run(export_dir, eval_npz, tmp_path_factory):
    out = tmp_path_factory.mktemp("v1")
    r = run_cli("validate", str(export_dir), "--eval", eval_npz, "--out", str(out), *FAST)
    assert r.returncode == 0, r.stderr[-2000:]
    return out


def test_validate_writes_report(first_run):
    rep = json.loads((first_run / "report.json").read_text())
    rows = {(a["format"], a["precision"]): a for a in rep["artifacts"]}
    assert set(rows) == {("onnx", "fp32"), ("openvino", "fp32"), ("openvino", "int8")}
    assert all(a["status"] == "ok" and a["latency_kind"] == "measured" for a in rows.values())
    assert rows[("onnx", "fp32")]["drift"]["top1_agreement"] == 1.0  # it is the reference
    assert rows[("openvino", "int8")]["metrics"]["top1"] > 0.9  # digits: real accuracy
    assert rep["data"]["reference"].startswith("outputs of digits-cnn-fp32.onnx")
    assert rep["data"]["reference_file"] == "digits-cnn-fp32.onnx"
    for f in ("report.md", "report.html"):
        assert (first_run / f).exists()


def test_validate_of_loose_files_labels_its_reference(first_run, export_dir, eval_npz, tmp_path):
    """Files without their export report: the header names the fp32 artifact as the reference and
    says nothing about the source model (it read 'None', '0 / 0' and 'fp32 PyTorch reference')."""
    out = tmp_path / "loose"
    r = run_cli("validate", str(export_dir / "digits-cnn-fp32.onnx"), str(export_dir / "digits-cnn-int8.xml"),
                "--eval", eval_npz, "--out", str(out), "--rounds", "1", *FAST)
    assert r.returncode == 0, r.stderr[-2000:]
    md = (out / "report.md").read_text()
    assert "**reference: outputs of digits-cnn-fp32.onnx (fp32) on this machine**" in md
    # its own row compared the file with itself ("100.0 (99.2-100)"): marked instead
    lines = md.splitlines()
    onnx_row = next(line for line in lines if line.startswith("| onnx | fp32 |"))
    header = next(line for line in lines[:lines.index(onnx_row)][::-1] if line.startswith("| format |"))
    cells = dict(zip([c.strip() for c in header.split("|")], [c.strip() for c in onnx_row.split("|")], strict=True))
    assert cells["agreement %"] == cells["cosine"] == "the reference", cells  # not "100.0 (99.2-100)"
    xml_row = next(line for line in md.splitlines() if line.startswith("| openvino | int8 |"))
    assert "the reference" not in xml_row and "(9" in xml_row  # its agreement and interval
    assert "PyTorch" not in md and "None" not in md and "0 / 0" not in md and "calibration data" not in md


def test_formats_the_target_does_not_run(export_dir, eval_npz, tmp_path):
    """rpi5 runs onnx and tflite: an export directory's OpenVINO files are skipped and said so; a named
    OpenVINO file is refused (the old hint named --format, which validate does not have); a drift gate
    on an estimated target is refused before any work."""
    out = tmp_path / "rpi5"
    r = run_cli("validate", str(export_dir), "--target", "rpi5", "--out", str(out), *FAST)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "skipped digits-cnn-fp32.xml (openvino), digits-cnn-int8.xml (openvino)" in r.stderr
    rep = json.loads((out / "report.json").read_text())
    assert {a["format"] for a in rep["artifacts"]} == {"onnx"}
    assert rep["data"]["skipped"] == ["digits-cnn-fp32.xml (openvino)", "digits-cnn-int8.xml (openvino)"]
    r = run_cli("validate", str(export_dir / "digits-cnn-int8.xml"), "--target", "rpi5",
                "--out", str(tmp_path / "named"), *FAST)
    assert r.returncode == 2 and "validate only the files of formats it runs" in r.stderr
    assert "--format" not in r.stderr
    r = run_cli("validate", str(export_dir), "--target", "rpi5", "--eval", eval_npz, "--fail-on",
                "drift.top1_agreement<0.97", "--out", str(tmp_path / "gate"), *FAST)
    assert r.returncode == 2 and "is estimated here (no device attached), so it measures no drift" in r.stderr
    assert not (tmp_path / "gate").exists()
    # a latency gate on an estimate: allowed, and its record and error say the figure is estimated
    r = run_cli("validate", str(export_dir), "--target", "rpi5", "--fail-on", "latency_ms.p50>1e-9",
                "--out", str(tmp_path / "est"), *FAST)
    assert r.returncode == 4 and "[estimated])" in r.stderr.strip().splitlines()[-1], r.stderr[-2000:]
    gates = json.loads((tmp_path / "est" / "report.json").read_text())["gates"]
    assert gates and all(g["latency_kind"] == "estimated" and not g["passed"] for g in gates)


def test_tampered_artifact_refused(export_dir, tmp_path):
    bad = tmp_path / "exp"
    shutil.copytree(export_dir, bad)
    onnx = bad / "digits-cnn-fp32.onnx"
    onnx.write_bytes(onnx.read_bytes() + b"\0")
    r = run_cli("validate", str(bad), "--out", str(tmp_path / "o"), *FAST)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "does not match manifest.json" in lines[0] and "digits-cnn-fp32.onnx" in lines[0]
    assert not (tmp_path / "o" / "report.json").exists()  # nothing measured


def test_baseline_regressions_and_gates(export_dir, first_run, eval_npz, tmp_path):
    # A baseline where everything was 2x faster and 2x smaller and int8 agreed better: regressions.
    base = json.loads((first_run / "report.json").read_text())
    for a in base["artifacts"]:
        a["latency_ms"]["p50"] /= 2
        a["size_bytes"] //= 2
    (tmp_path / "base.json").write_text(json.dumps(base))
    out = tmp_path / "v2"
    r = run_cli("validate", str(export_dir), "--eval", eval_npz, "--out", str(out),
                "--baseline", str(tmp_path / "base.json"), "--fail-on", "drift.top1_agreement<0.97",
                "--fail-on", "size_bytes>100000000", *FAST)
    assert r.returncode == 0, r.stderr[-2000:]  # gates pass; regressions are reported, not gated
    rep = json.loads((out / "report.json").read_text())
    regs = rep["baseline"]["regressions"]
    assert any("size" in g and "onnx fp32" in g for g in regs)
    # ONNX rows record their weight count, export's and validate's alike (a baseline of another
    # model is told by it), the same for the same file
    exported = json.loads((export_dir / "report.json").read_text())["artifacts"]
    counts = [a["details"]["weights"] for a in rep["artifacts"] + exported if a["format"] == "onnx"]
    assert len(counts) == 2 and counts[0] == counts[1] > 40_000, counts
    assert any("latency p50" in g for g in regs)
    assert "Against the baseline" in (out / "report.md").read_text()
    assert "regression:" in r.stderr
    # ... unless CI asks for them to fail the run (regressions never changed the exit code)
    r = run_cli("validate", str(export_dir), "--out", str(tmp_path / "v4"), "--baseline", str(tmp_path / "base.json"),
                "--fail-on-regression", "--rounds", "1", *FAST)
    assert r.returncode == 4 and "regression(s) against" in r.stderr, r.stderr[-1500:]
    # a baseline of another target compares nothing: no silent pass under --fail-on-regression
    for a in base["artifacts"]:
        a["target"] = "rpi5"
    (tmp_path / "other.json").write_text(json.dumps(base))
    r = run_cli("validate", str(export_dir), "--out", str(tmp_path / "v7"), "--baseline", str(tmp_path / "other.json"),
                "--fail-on-regression", "--rounds", "1", *FAST)
    assert r.returncode == 4 and "nothing was compared" in r.stderr.splitlines()[-1], r.stderr[-1500:]
    assert json.loads((tmp_path / "v7" / "report.json").read_text())["verdict"]["passed"] is False
    r = run_cli("validate", str(export_dir), "--out", str(tmp_path / "v5"), "--baseline", str(tmp_path / "base.json"),
                "--threshold", "5", *FAST)
    assert r.returncode == 2 and "at least 0 and below 1" in r.stderr
    r = run_cli("validate", str(export_dir), "--out", str(tmp_path / "v6"), "--baseline", str(tmp_path / "base.json"),
                "--accuracy-threshold", "1.5", *FAST)  # 1.5 pt written as points
    assert r.returncode == 2 and "--accuracy-threshold 1.5: an absolute drop, at least 0 and below 1" in r.stderr
    assert not (tmp_path / "v6").exists()
    r = run_cli("validate", str(export_dir), "--out", str(tmp_path / "v6"), "--baseline", str(tmp_path / "base.json"),
                "--accuracy-threshold", "1", *FAST)  # "1 point": it switched accuracy regressions off
    assert r.returncode == 2 and "did you mean 0.01?" in r.stderr and not (tmp_path / "v6").exists()

    r = run_cli("validate", str(export_dir), "--eval", eval_npz, "--out", str(tmp_path / "v3"),
                "--fail-on", "drift.top1_agreement<=1.0", *FAST)
    assert r.returncode == 4
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "gate failed: drift.top1_agreement<=1.0" in err[0]
    from conftest import GATE_FAILURE  # export's wording too (tests/test_cli_out.py)

    m = GATE_FAILURE.match(err[0])
    assert m and (m["path"], m["target"], m["value"]) == ("drift.top1_agreement", "x86-local", "100.00 %"), err[0]
    assert (tmp_path / "v3" / "report.json").exists()  # the report is written before the exit ...
    gates = json.loads((tmp_path / "v3" / "report.json").read_text())["gates"]  # ... and says why
    assert gates and not any(g["passed"] for g in gates)


@pytest.mark.parametrize("bad", ["drift.top1_agreement<<0.9", "__import__('os').system('x')<1",
                                 "drift.top1_agreement<0.9 or 1", "a.b < x"])
def test_bad_gate_rejected(export_dir, tmp_path, bad):
    r = run_cli("validate", str(export_dir), "--out", str(tmp_path / "o"), "--fail-on", bad, *FAST)
    assert r.returncode == 2 and "--fail-on" in r.stderr and "expected 'path.to.metric OP number'" in r.stderr


@pytest.mark.parametrize("gate, said", [
    ("drift.top1_agreement<97", "agreement is a fraction 0-1; did you mean <0.97?"),
    ("metrics.top1<=90", "accuracy is a fraction 0-1; did you mean <=0.9?"),
    ("metrics.top5<99.5", "accuracy is a fraction 0-1; did you mean <0.995?"),
    ("drift.cosine<99.9", "cosine is between -1 and 1; did you mean <0.999?"),
    ("drift.cosine_min<-2", "cosine is between -1 and 1 (e.g. 'drift.cosine_min<0.97')"),
    ("metrics.spearman<85", "Spearman is between -1 and 1; did you mean <0.85?"),
    ("drift.top1_agreement<-0.1", "agreement is a fraction 0-1 (e.g."),
    ("metrics.top1<1000", "accuracy is a fraction 0-1 (e.g."),
])
def test_a_percentage_threshold_on_a_fraction_is_refused_at_parse_time(gate, said):
    """"<97" on a 0-1 metric failed every artifact, the message showing "100.00 %" failing "<97"."""
    from edgecompress.errors import ConfigError
    from edgecompress.targets.gates import parse_gates

    with pytest.raises(ConfigError) as e:
        parse_gates([gate])
    assert str(e.value).startswith(f"fail_on={gate!r}: ") and said in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


def test_fraction_gates_at_their_range_ends_still_parse():
    from edgecompress.targets.gates import parse_gates

    ok = ["drift.top1_agreement<1", "drift.top1_agreement>0", "drift.cosine<-1", "metrics.top1<0.97",
          "metrics.spearman>-1", "latency_ms.p50>97", "size_bytes>1e6", "memory_mb.peak_rss>300",
          "drift.max_abs>5"]  # not fractions: any number
    assert [g.value for g in parse_gates(ok)] == [1, 0, -1, 0.97, -1, 97, 1e6, 300, 5]


def test_a_percentage_gate_exits_2_before_any_work(tmp_path):
    r = run_cli("export", "zoo:digits-cnn", "--int8", "--fail-on", "drift.top1_agreement<97",
                "--out", str(tmp_path / "x"))
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.strip().splitlines() == [
        "error: --fail-on 'drift.top1_agreement<97': agreement is a fraction 0-1; did you mean <0.97?"]
    assert not (tmp_path / "x").exists()


def test_parse_and_evaluate_gates():
    from edgecompress.report import Report
    from edgecompress.targets.gates import evaluate_gates, parse_gates

    gates = parse_gates(["drift.top1_agreement<0.97, latency_ms.p50>=10", "size_bytes!=1e3"])
    assert [(g.path, g.op, g.value) for g in gates] == [
        (("drift", "top1_agreement"), "<", 0.97), (("latency_ms", "p50"), ">=", 10.0),
        (("size_bytes",), "!=", 1000.0)]
    rep = Report(model={}, target="t", artifacts=[
        {"format": "onnx", "precision": "int8", "target": "t", "drift": {"top1_agreement": 0.96},
         "latency_ms": {"p50": 3.0}, "size_bytes": 1000, "status": "ok"}])
    fails = evaluate_gates(rep, gates)
    assert len(fails) == 1 and "drift.top1_agreement<0.97" in fails[0] and "96.00 %" in fails[0]
    # batch-N figures and the adb runner's memory deltas are report fields too
    assert len(parse_gates(["latency_by_batch.8.throughput_per_s<1e9", "memory_mb.overall_delta>50"])) == 2
    from edgecompress.errors import ConfigError

    with pytest.raises(ConfigError, match=r"a report row has no latency_by_batch\.x\.p50"):
        parse_gates(["latency_by_batch.x.p50>1"])
    # the outcome is in the report too (it was only in the exit code and on stderr)
    assert [(g["gate"], g["passed"]) for g in rep.gates] == [
        ("drift.top1_agreement<0.97", False), ("latency_ms.p50>=10", True), ("size_bytes!=1e3", True)]
    from edgecompress.report.render import to_html, to_markdown

    md = to_markdown(rep, None)  # a Report built in Python: the option by its keyword
    assert "## Gates (fail_on)" in md and "| drift.top1_agreement<0.97 | t/onnx/int8 | 96.00 % | FAILED |" in md
    assert "FAILED" in to_html(rep)


def test_compare_baseline_directions():
    from edgecompress.report import Report
    from edgecompress.targets.baseline import compare_baseline

    row = {"format": "onnx", "precision": "int8", "target": "t", "status": "ok", "size_bytes": 100,
           "latency_ms": {"p50": 1.04}, "metrics": {"top1": 0.80, "top5": 0.95},
           "drift": {"top1_agreement": 0.99}}
    old = {**row, "latency_ms": {"p50": 1.0}, "metrics": {"top1": 0.90, "top5": 0.97}, "size_bytes": 90,
           "drift": {"top1_agreement": 0.90}}
    res = compare_baseline(Report(model={}, target="t", artifacts=[row]), {"artifacts": [old]}, "b.json")
    text = " | ".join(res["regressions"])
    assert "top-1 90.00 % -> 80.00 %" in text and "size 90 B -> 100 B" in text
    assert "top-5 97.00 % -> 95.00 % (-2.0 pt)" in text  # top-5 is compared too, in points
    assert "latency" not in text  # +4 % is under the 5 % threshold
    assert "agreement" not in text  # it went up: an improvement
    # what was not compared is said: neither side has a cosine or a peak memory
    assert res["compared"] == ["latency p50", "size", "top-1", "top-5", "top-1 agreement"]
    assert res["not_compared"] == ["peak memory", "cosine"]
    from edgecompress.report.render import to_markdown

    rep = Report(model={}, target="t", artifacts=[row], baseline=res)
    assert "Not compared (absent from this run or the baseline): peak memory, cosine." in to_markdown(rep, None)


def test_cli_usage_errors_are_usage_lines_not_tracebacks():
    """An unknown flag, a missing argument or a bad value: one error line naming the flag and the
    command's --help, exit code 2 (click's usage block was four lines)."""
    for argv, msg in ((["export", "zoo:digits-cnn", "--bogus"], "No such option: --bogus"),
                      (["export"], "Missing argument 'model'"),
                      (["compress", "zoo:digits-cnn", "--resolution", "abc"], "Invalid value for '--resolution'"),
                      (["compress", "zoo:digits-cnn", "--resolution", "0"], "Invalid value for '--resolution'")):
        r = run_cli(*argv)
        assert r.returncode == 2, (argv, r.stderr[-500:])
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and msg in lines[0], r.stderr[-500:]
        assert f"see 'edgecompress {argv[0]} --help'" in lines[0]


def test_loose_files_without_eval_data(export_dir, tmp_path):
    """Artifact files with no export report beside them, no --eval: the I/O contract comes from
    the files (it was empty, so the benchmark got no input and every row failed)."""
    loose = tmp_path / "loose"
    loose.mkdir()
    for name in ("digits-cnn-fp32.onnx", "digits-cnn-int8.xml", "digits-cnn-int8.bin"):
        shutil.copy(export_dir / name, loose / name)
    out = tmp_path / "o"
    r = run_cli("validate", str(loose / "digits-cnn-fp32.onnx"), str(loose / "digits-cnn-int8.xml"),
                "--out", str(out), *FAST)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads((out / "report.json").read_text())["artifacts"]
    assert [a["status"] for a in rows] == ["ok", "ok"]
    assert all(a["latency_ms"]["p50"] > 0 for a in rows)
    assert rows[0]["io"]["inputs"][0]["shape"][1:] == [1, 8, 8]
    # no accuracy measured: no plot, and the report says why instead of leaving it out silently
    assert not (out / "report.png").exists()
    assert "No accuracy-vs-latency plot" in (out / "report.md").read_text()
    assert "No accuracy-vs-latency plot" in (out / "report.html").read_text()


def test_loose_files_precision_comes_from_the_file(export_dir, eval_npz, tmp_path):
    """An int8 IR renamed model.xml was listed as fp32 (the name decided) and became the drift
    reference of the real fp32 one; two export directories: each row from its own report."""
    loose = tmp_path / "loose"
    loose.mkdir()
    shutil.copy(export_dir / "digits-cnn-int8.xml", loose / "model.xml")
    shutil.copy(export_dir / "digits-cnn-int8.bin", loose / "model.bin")
    shutil.copy(export_dir / "digits-cnn-fp32.onnx", loose / "reference.onnx")
    out = tmp_path / "o"
    r = run_cli("validate", str(loose / "model.xml"), str(loose / "reference.onnx"), "--eval", f"{eval_npz}[:100]",
                "--out", str(out), "--rounds", "1", *FAST)
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads((out / "report.json").read_text())
    assert [(a["format"], a["precision"]) for a in rep["artifacts"]] == [("openvino", "int8"), ("onnx", "fp32")]
    assert rep["data"]["reference"].startswith("outputs of reference.onnx (fp32)")
    # files outside the report's folder: absolute paths (relative to the working directory, they
    # resolved from nowhere once the report was read from its folder)
    assert all(Path(a["path"]).is_absolute() and Path(a["path"]).is_file() for a in rep["artifacts"])


def test_two_export_directories_keep_their_own_details(export_dir, tmp_path, digits_spec, digits_calib):
    from edgecompress.exporters import ExportOptions
    from edgecompress.pipeline import ExportJob, run_export

    other = tmp_path / "other"
    run_export(ExportJob(model=digits_spec, formats=[("onnx", "int8")], out_dir=other, calib=digits_calib,
                         options=ExportOptions(calib_method="minmax"), do_validate=False, progress=False))
    out = tmp_path / "o"
    r = run_cli("validate", str(export_dir), str(other), "--target", "rpi5", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    rows = {a["path"]: a for a in json.loads((out / "report.json").read_text())["artifacts"]}
    mine = next(a for p, a in rows.items() if p.endswith("other/digits-cnn-int8.onnx"))
    assert mine["details"]["calibration"]["method"] == "minmax"


@pytest.mark.parametrize("gate,extra,fragment", [
    ("latency.p50>1", [], "a report row has no latency.p50 (gate on latency_ms.p50, size_bytes, "
     "memory_mb.peak_rss, metrics.top1, drift.top1_agreement, ...); did you mean 'latency_ms.p50'?"),
    ("drift.top1_agreement<0.9", [], "drift needs evaluation data; pass --eval"),
    ("latency_ms.p90>1", ["--target", "rpi5"], "an estimate has a p50 latency only"),
    ("latency_by_batch.1.p90>1", ["--target", "rpi5"], "an estimate has a p50 latency only"),
    ("latency_by_batch.4.p50>1", ["--target", "rpi5"], "an estimate is of batch 1 only"),
])
def test_gates_nothing_would_measure_are_refused_before_any_work(export_dir, tmp_path, gate, extra, fragment):
    """They were refused after validating everything, with the report already written."""
    out = tmp_path / "o"
    r = run_cli("validate", str(export_dir), "--out", str(out), "--fail-on", gate, *extra, *FAST)
    assert r.returncode == 2 and fragment in r.stderr, r.stderr[-1500:]
    assert not out.exists()


def test_a_gate_does_not_hide_failed_artifacts(tmp_path):
    """Every artifact failed: the run exits 4 with the table, not 2 with 'no artifact has a
    numeric latency_ms.p50'."""
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07" + b"not a model" * 20)
    r = run_cli("validate", str(bad), "--out", str(tmp_path / "o"), "--fail-on", "latency_ms.p50>100", *FAST)
    assert r.returncode == 4, r.stderr[-1500:]
    assert "no artifact in the report has a numeric" not in r.stderr and "failed" in r.stderr


def test_an_unreadable_file_is_labelled_unknown_not_fp32(export_dir, eval_npz, tmp_path):
    """A garbage .onnx or a truncated .tflite got a failed row labelled fp32 (read as "the fp32
    artifact failed"), and, given first, was picked as the drift reference."""
    from edgecompress.targets.device_report import _guess_precision

    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07" + b"not a model" * 20)
    cut = tmp_path / "model.tflite"
    cut.write_bytes(b"TFL3 not a real model")
    named = tmp_path / "model-int8.tflite"
    named.write_bytes(b"TFL3 not a real model")
    assert [_guess_precision(p) for p in (bad, cut, named)] == ["unknown", "unknown", "int8"]  # the name, if it says
    out = tmp_path / "o"
    r = run_cli("validate", str(bad), str(export_dir / "digits-cnn-fp32.onnx"), "--eval", eval_npz,
                "--out", str(out), "--rounds", "1", *FAST)
    assert r.returncode == 4, r.stderr[-1500:]
    rows = {Path(a["path"]).name: a for a in json.loads((out / "report.json").read_text())["artifacts"]}
    assert (rows["broken.onnx"]["precision"], rows["broken.onnx"]["status"]) == ("unknown", "failed")
    # the real fp32 file is the reference (it was the broken one's turn, being first)
    assert rows["digits-cnn-fp32.onnx"]["status"] == "ok"
    assert json.loads((out / "report.json").read_text())["data"]["reference_file"] == "digits-cnn-fp32.onnx"
    assert "| onnx | unknown | 222 B | — |" in (out / "report.md").read_text()  # no size ratio: no known model


def test_an_empty_file_is_labelled_unknown_not_fp32(tmp_path):
    """[audit 28] A 0-byte .onnx (a killed copy) read as an empty ModelProto, so as "fp32": its
    failed row read as "the fp32 artifact failed", as a garbage file's did before (above)."""
    from edgecompress.targets.device_report import _guess_precision

    for name in ("model.onnx", "model.xml", "model.tflite"):
        (tmp_path / name).write_bytes(b"")
        assert _guess_precision(tmp_path / name) == "unknown", name
    (tmp_path / "model-int8.onnx").write_bytes(b"")
    assert _guess_precision(tmp_path / "model-int8.onnx") == "int8"  # the name, if it says


def test_validate_reads_images_with_the_exports_preprocessing(export_dir, digits_eval, tmp_path):
    """`validate DIR --eval images/` preprocessed digits-cnn's images as EfficientNet-Lite ones
    (RGB, 224 px) and every row failed on the input shape; the export's preset is in its report."""
    import numpy as np
    from PIL import Image

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    rows = []
    for i in range(40):
        Image.fromarray(np.uint8(np.round(digits_eval.x[i, 0] * 255)), "L").save(imgs / f"{i}.png")
        rows.append(f"{i}.png,{int(digits_eval.y[i])}")
    (imgs / "labels.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "o"
    r = run_cli("validate", str(export_dir), "--eval", str(imgs), "--out", str(out), "--rounds", "1", *FAST)
    assert r.returncode == 0, r.stderr[-1500:]
    rep = json.loads((out / "report.json").read_text())
    assert rep["model"]["preprocess"] == "gray-unit"
    assert all(a["status"] == "ok" and a["metrics"]["top1"] > 0.9 for a in rep["artifacts"])
    # the preset the images were read with is recorded (the README had the flag and the export's
    # preset in the wrong order, and no report said which one was used)
    assert rep["data"]["eval_preprocess"] == "gray-unit" and "note: --preprocess" not in r.stderr
    assert "samples, labelled, preprocessed with gray-unit)" in (out / "report.md").read_text()
    # --preprocess wins over the export's preset, and says so: imagenet makes 3-channel samples,
    # which digits-cnn does not take
    r = run_cli("validate", str(export_dir), "--eval", str(imgs), "--preprocess", "imagenet", "--out",
                str(tmp_path / "o2"), "--rounds", "1", *FAST)
    assert r.returncode == 2, r.stderr[-1500:]
    assert "note: --preprocess imagenet overrides the export's preset (gray-unit) for the --eval images" in r.stderr
    assert "samples have shape (3, 8, 8) but the artifacts take (1, 8, 8)" in r.stderr


def test_report_table_says_what_it_shows():
    """Small latencies kept three digits (0.04 vs 0.03 hid a 1.3x gap); 99.95 % agreement no longer
    reads as 100.0; an STS encoder's Spearman has its column; an OpenVINO int8 row whose float
    layers ran bf16 against an f32 reference says so."""
    from edgecompress.report import Report
    from edgecompress.report.render import table_rows, to_markdown

    def row(fmt, prec, p50, hint, **extra):
        return {"format": fmt, "precision": prec, "target": "t", "status": "ok", "size_bytes": 10**6,
                "latency_ms": {"p50": p50}, "runtime": {"settings": {"inference_precision": hint}}, **extra}

    rep = Report(model={"name": "m"}, target="t", artifacts=[
        row("openvino", "fp32", 0.0412, "f32", metrics={"spearman": 0.8672}),
        row("openvino", "int8", 0.0305, "bf16", drift={"top1_agreement": 0.9995}, metrics={"spearman": 0.861})])
    fp32, int8 = table_rows(rep)
    assert fp32["p50 ms"] == "0.0412" and int8["p50 ms"] == "0.0305"
    assert int8["speed-up"] == "1.35x (float layers bf16, fp32 at f32)"
    assert int8["agreement %"] == ">99.9" and int8["Spearman x100"] == "86.10"
    assert "| Spearman x100 |" in to_markdown(rep, None)


def test_a_gate_no_artifact_answers_still_leaves_the_report(export_dir, eval_npz, tmp_path):
    """Exit 2 after the work, but the measurements are written (they were lost)."""
    out = tmp_path / "o"
    r = run_cli("validate", str(export_dir / "digits-cnn-int8.xml"), "--eval", f"{eval_npz}[:50]", "--out", str(out),
                "--fail-on", "drift.top1_agreement<0.9", "--rounds", "1", *FAST)
    assert r.returncode == 2 and "no artifact in the report has a numeric drift.top1_agreement" in r.stderr
    assert json.loads((out / "report.json").read_text())["artifacts"][0]["status"] == "ok"


def test_nan_and_null_metrics_render(tmp_path):
    """A collapsed encoder's Spearman is NaN (null once reloaded): the plot failed on NaN axis
    limits and the table on None."""
    from edgecompress.report import Report, write_report

    row = {"format": "onnx", "precision": "fp32", "target": "t", "status": "ok", "size_bytes": 1000,
           "latency_ms": {"p50": 1.0}, "metrics": {"spearman": float("nan")}, "drift": {"cosine": None}}
    paths = write_report(Report(model={"name": "m"}, target="t", artifacts=[row]), tmp_path)
    assert "| — |" in paths["md"].read_text()
    again = Report.load(paths["json"])
    assert again.artifacts[0]["metrics"]["spearman"] is None
    write_report(again, tmp_path / "again")


def test_eval_data_of_the_wrong_shape_is_the_datas_error(export_dir, tmp_path):
    """Samples that do not fit the artifacts failed every artifact's benchmark (exit 4, naming the
    file, not the data) and left an empty --out folder behind."""
    import numpy as np

    bad = tmp_path / "seven.npy"
    np.save(bad, np.zeros((10, 1, 7, 7), np.float32))  # digits take (1, 8, 8)
    out = tmp_path / "new" / "report"
    r = run_cli("validate", str(export_dir), "--eval", str(bad), "--out", str(out), *FAST)
    assert r.returncode == 2, r.stderr[-2000:]
    (line,) = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert f"--eval {bad}" in line and "(1, 7, 7)" in line and "(1, 8, 8)" in line
    assert not (tmp_path / "new").exists()  # the folders the run made are gone again
    r = run_cli("validate", str(export_dir), "--eval", str(tmp_path / "absent.npy"), "--out", str(out), *FAST)
    assert r.returncode == 2 and not (tmp_path / "new").exists()
    np.save(bad, np.zeros((10, 1, 8, 8), np.int64))  # the right shape, integer samples
    r = run_cli("validate", str(export_dir), "--eval", str(bad), "--out", str(out), *FAST)
    assert r.returncode == 2 and "dtype int64 but the artifacts take float samples" in r.stderr, r.stderr[-800:]
    assert not (tmp_path / "new").exists()


def test_reference_run_takes_the_settings_openvino_hint(tmp_path, monkeypatch):
    """The drift reference of `edgecompress validate` ran an OpenVINO IR with a hard-coded "f32",
    whatever ValidateSettings.openvino_fp32_hint said (validate() itself followed it); it is built
    as validate() builds its requests, and the reference is the format ranked first."""
    import numpy as np

    from edgecompress.exporters import Artifact, TensorInfo
    from edgecompress.targets import ValidateSettings
    from edgecompress.targets.device_report import _reference_outputs
    from edgecompress.targets.runners.local import LocalRunner

    seen = []

    def fake_run(self, req, profile=None):
        seen.append(req)
        np.save(req.outputs, np.zeros((2, 10), np.float32))
        return {}

    monkeypatch.setattr(LocalRunner, "run", fake_run)

    def art(fmt, suffix, runtime):
        return Artifact(format=fmt, precision="fp32", path=tmp_path / f"m{suffix}", runtime=runtime, model_name="m",
                        inputs=[TensorInfo("x", [1, 1, 8, 8], layout="NCHW")])

    ov, tfl = art("openvino", ".xml", "openvino"), art("tflite", ".tflite", "litert")
    for hint in ("f32", "", "bf16"):
        _, name = _reference_outputs([tfl, ov], tmp_path / "x.npy", ValidateSettings(openvino_fp32_hint=hint))
        assert name == "m.xml" and seen[-1].runtime == "openvino"
        assert (seen[-1].precision_hint or "") == hint
        assert (seen[-1].threads, seen[-1].batches, seen[-1].runs, seen[-1].warmup) == (1, (1,), 1, 0)
        assert seen[-1].eval_batch == 1  # the file fixes batch 1
    _reference_outputs([ov, art("onnx", ".onnx", "onnxruntime")], tmp_path / "x.npy", ValidateSettings())
    assert seen[-1].runtime == "onnxruntime" and seen[-1].precision_hint is None


def _other_model(path: Path, hidden: int) -> Path:
    """Another model with the digits CNN's I/O contract (input `x` [N,1,8,8], output [N,10]): an MLP."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(size=(64, hidden)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(size=(hidden, 10)).astype(np.float32), "w2")
    shape = numpy_helper.from_array(np.array([-1, 64], dtype=np.int64), "shape")
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["flat"]),
             helper.make_node("MatMul", ["flat", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["output"])]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 8, 8])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 10])],
                          [w1, w2, shape])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_files_of_another_model_are_not_paired_with_the_reference(export_dir, eval_npz, tmp_path):
    """validate a.onnx b.onnx of two models gave b a speed-up, a size ratio and "drift" against a
    (and an fp32 b was failed as "disagrees with the reference")."""
    from onnxruntime.quantization import quantize_dynamic

    from edgecompress.targets.device_report import _artifact_from_file, model_mismatch

    fp32 = export_dir / "digits-cnn-fp32.onnx"
    other = _other_model(tmp_path / "mlp-fp32.onnx", hidden=32)
    quantize_dynamic(str(other), str(tmp_path / "mlp-int8.onnx"))
    arts = {p.name: _artifact_from_file(p) for p in (fp32, other, tmp_path / "mlp-int8.onnx",
                                                      export_dir / "digits-cnn-int8.xml")}
    assert model_mismatch(arts["digits-cnn-fp32.onnx"], arts["mlp-int8.onnx"], {}) == "2,368 weights vs 46,560"
    assert model_mismatch(arts["mlp-fp32.onnx"], arts["mlp-int8.onnx"], {}) is None  # one model's fp32 and int8
    assert model_mismatch(arts["digits-cnn-fp32.onnx"], arts["digits-cnn-int8.xml"], {}) is None
    out = tmp_path / "v"
    r = run_cli("validate", str(fp32), str(tmp_path / "mlp-int8.onnx"), str(other), "--eval", eval_npz,
                "--out", str(out), "--rounds", "1", *FAST)
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads((out / "report.json").read_text())
    rows = {Path(a["path"]).name: a for a in rep["artifacts"]}
    assert rows["mlp-int8.onnx"]["drift"] == {} and rows["mlp-fp32.onnx"]["drift"] == {}
    assert rows["mlp-fp32.onnx"]["status"] == "ok"
    assert rows["digits-cnn-fp32.onnx"]["model_group"] != rows["mlp-int8.onnx"]["model_group"] \
        == rows["mlp-fp32.onnx"]["model_group"]
    assert ("note: mlp-int8.onnx: another model than the reference digits-cnn-fp32.onnx "
            "(2,368 weights vs 46,560): no drift against it") in r.stderr
    assert len(rep["data"]["other_model"]) == 2
    md = (out / "report.md").read_text()
    assert "- **not of one model**: mlp-int8.onnx: another model than the reference" in md
    int8_line = next(ln for ln in md.splitlines() if ln.startswith("| mlp-int8.onnx |"))
    # its speed-up and size ratio are against mlp-fp32.onnx, its own model's fp32 file
    mlp_ratio = rows["mlp-int8.onnx"]["size_bytes"] / rows["mlp-fp32.onnx"]["size_bytes"]
    assert f"({mlp_ratio:.2f}x)" in int8_line


def test_labels_beyond_the_classes_name_the_eval_file(export_dir, tmp_path):
    """'labels go up to class 99 but the model has 10 outputs' named neither the file nor --eval."""
    import numpy as np

    rng = np.random.default_rng(0)
    bad = tmp_path / "badlab.npz"
    np.savez(bad, x=rng.standard_normal((8, 1, 8, 8)).astype("float32"), y=rng.integers(50, 100, 8))
    r = run_cli("validate", str(export_dir), "--eval", str(bad), "--out", str(tmp_path / "o"), *FAST)
    assert r.returncode == 2, r.stderr[-1500:]
    assert r.stderr.strip().splitlines()[-1].startswith(f"error: --eval {bad}: labels go up to class "), r.stderr[-800:]
