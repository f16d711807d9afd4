"""`edgecompress validate --out`: an export's report is never replaced, one writer per folder, and
gates / baseline rows name the artifact's file (two files of one format and precision collided)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import run_cli

from edgecompress.errors import OutputError


def _settings():
    from edgecompress.targets import ValidateSettings

    return ValidateSettings(runs=3, warmup=1, rounds=1)


def _validate(paths, out, **kw):
    from edgecompress.targets.device_report import validate_artifacts

    return validate_artifacts([Path(p) for p in paths], "x86-local", Path(out), settings=_settings(),
                              progress=False, **kw)


@pytest.fixture(scope="module")
def export_dir(digits_spec, tmp_path_factory):
    """A real export (report.json, manifest.json); fp32 only and not validated: fast."""
    from edgecompress.pipeline import ExportJob, run_export

    out = tmp_path_factory.mktemp("exp")
    run_export(ExportJob(model=digits_spec, formats=[("onnx", "fp32")], out_dir=out, do_validate=False,
                         progress=False))
    return out


def _snapshot(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


def _no_work(monkeypatch):
    """Fail the test if validate loads or measures anything (the refusal comes before any work)."""
    import edgecompress.targets
    from edgecompress.targets import device_report

    def boom(*a, **k):
        raise AssertionError("validate did work before refusing --out")

    monkeypatch.setattr(device_report, "load_artifacts", boom)
    monkeypatch.setattr(edgecompress.targets, "validate", boom)


# ---- 1. an export's report is not replaced -------------------------------------------------------

def test_out_holding_an_export_report_is_refused_before_any_work(export_dir, monkeypatch):
    before = _snapshot(export_dir)
    _no_work(monkeypatch)
    with pytest.raises(OutputError, match=r"^out_dir='.*': holds an export's report .*pass another out_dir "
                                          r"\(e\.g\. out_dir='.*-validate'\)$"):
        _validate([export_dir], export_dir)
    assert _snapshot(export_dir) == before  # report.json / md / html / manifest untouched


def test_out_holding_an_export_report_cli_one_line(export_dir):
    before = _snapshot(export_dir)
    r = run_cli("validate", str(export_dir), "--out", str(export_dir), "--runs", "3", "--warmup", "1",
                "--rounds", "1", "--no-progress")
    assert r.returncode == 2, r.stderr[-1500:]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: --out {export_dir}: holds an export's report"), lines
    assert "another --out" in lines[0] and "Traceback" not in r.stderr
    assert _snapshot(export_dir) == before


def test_recipe_report_and_unreadable_report_beside_manifest_are_refused(tmp_path, monkeypatch):
    _no_work(monkeypatch)
    recipe = tmp_path / "recipe"  # `edgecompress run` of a recipe without export: steps, no manifest
    recipe.mkdir()
    (recipe / "report.json").write_text(json.dumps({"model": {}, "target": "x86-local", "artifacts": [],
                                                    "data": {"eval": None, "eval_n": 0},
                                                    "steps": [{"name": "original"}]}))
    with pytest.raises(OutputError, match="holds an export's report"):
        _validate([tmp_path / "x.onnx"], recipe)
    odd = tmp_path / "odd"  # cannot tell who wrote it, and a manifest says an export lives here
    odd.mkdir()
    (odd / "report.json").write_text("not json")
    (odd / "manifest.json").write_text('{"artifacts": []}')
    with pytest.raises(OutputError, match=r"manifest\.json and a report\.json validate did not write"):
        _validate([tmp_path / "x.onnx"], odd)
    assert (odd / "report.json").read_text() == "not json"


def test_a_validate_report_folder_is_overwritten_as_before(export_dir, tmp_path):
    out = tmp_path / "v"
    _validate([export_dir], out)
    first = json.loads((out / "report.json").read_text())["created"]
    report, _, _ = _validate([export_dir / "digits-cnn-fp32.onnx"], out)  # no refusal
    assert json.loads((out / "report.json").read_text())["artifacts"][0]["path"].endswith("digits-cnn-fp32.onnx")
    assert report.created >= first


# ---- 2. one writer per --out ---------------------------------------------------------------------

def test_second_writer_is_refused_with_the_export_message(export_dir, tmp_path):
    import fcntl
    import os

    out = tmp_path / "busy"
    out.mkdir()
    held = os.open(out, os.O_RDONLY | os.O_DIRECTORY)  # another run's lock (exclusive_dir is
    fcntl.flock(held, fcntl.LOCK_EX)  # re-entrant in its own thread, so it cannot stand in for one)
    try:
        with pytest.raises(OutputError, match="another edgecompress run is writing there"):
            _validate([export_dir], out)  # e.g. an export (or a validate) writing there now
    finally:
        os.close(held)
    assert list(out.iterdir()) == []  # nothing written


def test_validate_holds_the_lock_while_it_measures(export_dir, digits_spec, tmp_path, monkeypatch):
    """An export started into --out while validate measures is refused (both exited 0, one report lost)."""
    import edgecompress.targets
    from edgecompress.pipeline import ExportJob, run_export

    out = tmp_path / "v"
    real = edgecompress.targets.validate
    seen: list[str] = []

    def attempt() -> None:
        try:
            run_export(ExportJob(model=digits_spec, formats=[("onnx", "fp32")], out_dir=out,
                                 do_validate=False, progress=False))
        except OutputError as e:
            seen.append(str(e))

    def measuring(*a, **k):
        import threading

        t = threading.Thread(target=attempt)  # another writer (the lock is re-entrant per thread)
        t.start()
        t.join()
        return real(*a, **k)

    monkeypatch.setattr(edgecompress.targets, "validate", measuring)
    _validate([export_dir], out)
    assert len(seen) == 1 and "another edgecompress run is writing there" in seen[0], seen
    assert not (out / "manifest.json").exists()  # the export wrote nothing
    assert "calib" not in json.loads((out / "report.json").read_text())["data"]  # validate's report


# ---- 3. gates and baseline rows name the file ----------------------------------------------------

@pytest.fixture
def two_same(export_dir, tmp_path):
    """Two files of one format and precision, inside the report folder's parent (tmp_path/m)."""
    (tmp_path / "m").mkdir()
    for n in ("a.onnx", "b.onnx"):
        shutil.copy(export_dir / "digits-cnn-fp32.onnx", tmp_path / "m" / n)
    return tmp_path / "m" / "a.onnx", tmp_path / "m" / "b.onnx"


def test_gates_name_the_file(two_same, tmp_path):
    a, b = two_same
    out = tmp_path / "v"
    _, _, failures = _validate([a, b], out, fail_on=["size_bytes>100"])
    assert len(failures) == 2
    assert str(a) in failures[0] and str(b) in failures[1]  # outside --out: absolute
    gates = json.loads((out / "report.json").read_text())["gates"]
    assert [g["file"] for g in gates] == [str(a), str(b)]
    assert all(g["artifact"] == "x86-local/onnx/fp32" for g in gates)  # unchanged, for existing readers
    rows = json.loads((out / "report.json").read_text())["artifacts"]
    assert [g["file"] for g in gates] == [r["path"] for r in rows]  # joinable to the artifact rows
    md = (out / "report.md").read_text()  # and the report's gate table tells the two apart
    assert f"| size_bytes>100 | x86-local/onnx/fp32 | {a} |" in md and f"| {b} |" in md
    # inside the report folder: relative to it, as report.json writes artifact paths
    _, _, failures = _validate([a, b], tmp_path, fail_on=["size_bytes>100"])
    gates = json.loads((tmp_path / "report.json").read_text())["gates"]
    assert [g["file"] for g in gates] == ["m/a.onnx", "m/b.onnx"]
    assert "(m/a.onnx, onnx fp32 on x86-local: size_bytes" in failures[0]


def test_baseline_of_two_files_of_one_format_matches_by_file(two_same, tmp_path):
    a, b = two_same
    out = tmp_path / "v"
    _validate([a, b], out)
    base = json.loads((out / "report.json").read_text())
    base["artifacts"][0]["size_bytes"] *= 10  # a was 10x larger: it shrank, no regression
    base["artifacts"][1]["size_bytes"] //= 10  # b was 10x smaller: b's size regressed
    (tmp_path / "base.json").write_text(json.dumps(base))
    report, _, _ = _validate([a, b], tmp_path / "v2", baseline=tmp_path / "base.json")
    res = report.baseline
    assert res["unmatched"] == []
    sizes = [c for c in res["changes"] if c["metric"] == "size"]
    assert [(c["file"], round(c["change"], 1)) for c in sizes] == [(str(a), -0.9), (str(b), 9.0)]
    size_regs = [r for r in res["regressions"] if "size" in r]
    assert len(size_regs) == 1 and str(b) in size_regs[0], res["regressions"]


def test_compare_baseline_matching_rules():
    from edgecompress.report import Report
    from edgecompress.targets.baseline import compare_baseline

    def row(path, size):
        return {"format": "onnx", "precision": "fp32", "target": "t", "status": "ok", "path": path,
                "size_bytes": size}

    # unique format/precision/target: matched whatever the file names (existing baselines still match)
    res = compare_baseline(Report(model={}, target="t", artifacts=[row("/x/model.onnx", 200)]),
                           {"artifacts": [row("/old/digits-cnn-fp32.onnx", 100)]}, "b.json")
    assert res["unmatched"] == [] and len(res["regressions"]) == 1
    # collisions: by file name; rows of a and b no longer overwrite each other
    new = Report(model={}, target="t", artifacts=[row("/n/a.onnx", 1000), row("/n/b.onnx", 100)])
    res = compare_baseline(new, {"artifacts": [row("/o/a.onnx", 1000), row("/o/b.onnx", 100)]}, "b.json")
    assert res["regressions"] == [] and res["unmatched"] == []
    assert [c["file"] for c in res["changes"]] == ["/n/a.onnx", "/n/b.onnx"]
    # one file against a baseline of two: its own name, else unmatched and said with its file
    res = compare_baseline(Report(model={}, target="t", artifacts=[row("/n/b.onnx", 1000)]),
                           {"artifacts": [row("/o/a.onnx", 100), row("/o/b.onnx", 1000)]}, "b.json")
    assert res["regressions"] == [] and res["unmatched"] == []
    res = compare_baseline(Report(model={}, target="t", artifacts=[row("/n/c.onnx", 1000)]),
                           {"artifacts": [row("/o/a.onnx", 100), row("/o/b.onnx", 1000)]}, "b.json")
    assert res["unmatched"] == ["t/onnx/fp32 (/n/c.onnx)"] and res["changes"] == []


def test_baseline_rows_gone_failed_or_of_another_model_are_said():
    """A baseline of 3 artifacts against a run of 1 said "no regression"; an artifact failing now
    was skipped; rows of another model were compared without a word."""
    from edgecompress.report import Report
    from edgecompress.targets.baseline import compare_baseline

    def row(fmt, prec, status="ok"):
        return {"format": fmt, "precision": prec, "target": "t", "status": status, "path": f"/o/m-{prec}.{fmt}",
                "size_bytes": 100}

    base = {"model": {"name": "m", "params": 10}, "artifacts": [row("onnx", "fp32"), row("onnx", "int8"),
                                                                row("tflite", "int8")]}
    run = Report(model={"name": "m", "params": 10}, target="t",
                 artifacts=[row("onnx", "fp32"), row("onnx", "int8", status="failed")])
    res = compare_baseline(run, base, "b.json")
    assert res["missing"] == ["t/tflite/int8 (m-int8.tflite)"]
    assert res["regressions"] == ["onnx int8 on t (/o/m-int8.onnx): failed (ok in the baseline)"]
    assert res["notes"] == []
    run.baseline = res
    assert run.verdict() == {"passed": False, "failed_artifacts": 1, "failed_gates": 0, "regressions": 1,
                             "regressions_fail": False, "baseline_missing": 1, "baseline_compared": True,
                             "latency": "none"}
    other = Report(model={"name": "m", "params": 7}, target="t", artifacts=[row("onnx", "fp32")])
    assert compare_baseline(other, base, "b.json")["notes"] == ["the baseline is of another model (params 10 -> 7)"]
    # a loose file's model is named after the file: another name alone is no other model
    renamed = Report(model={"name": "m-int8"}, target="t", artifacts=[row("onnx", "fp32")])
    assert compare_baseline(renamed, base, "b.json")["notes"] == []
    # loose files carry no params: their ONNX weight counts tell a pruned build's baseline apart
    loose = dict(row("onnx", "fp32"), details={"weights": 46_560})
    base_loose = {"model": {"name": "m-fp32"}, "artifacts": [dict(row("onnx", "fp32"), details={"weights": 9_942})]}
    assert compare_baseline(Report(model={"name": "x"}, target="t", artifacts=[loose]), base_loose, "b.json")[
        "notes"] == ["the baseline is of another model (m-fp32.onnx 9,942 -> 46,560 weights)"]
    base_loose["artifacts"][0]["details"]["weights"] = 46_600  # within 1 %: one model
    assert compare_baseline(Report(model={"name": "x"}, target="t", artifacts=[loose]), base_loose, "b.json")[
        "notes"] == []
    # two model references (not loose files) of another name are another model
    zoo = {"model": {"name": "a", "source": "zoo:a"}, "artifacts": [row("onnx", "fp32")]}
    assert "source zoo:a -> zoo:b" in compare_baseline(
        Report(model={"name": "b", "source": "zoo:b"}, target="t", artifacts=[row("onnx", "fp32")]), zoo, "b.json")[
        "notes"][0]
    # regressions judged as the exit code judges them: only under --fail-on-regression
    ok = Report(model={"name": "m", "params": 10}, target="t", artifacts=[row("onnx", "fp32")])
    ok.baseline = {"regressions": ["onnx fp32 on t: size 100 B -> 200 B (+100.0 %)"]}
    assert ok.verdict()["passed"] is True
    ok.baseline["fail_on_regression"] = True
    assert ok.verdict()["passed"] is False and ok.verdict()["regressions_fail"] is True


def test_a_gate_no_artifact_answers_is_recorded_failed():
    """The report written before the error read "Verdict: passed" (the run exited 2)."""
    from edgecompress.errors import ConfigError
    from edgecompress.report import Report
    from edgecompress.report.render import to_markdown
    from edgecompress.targets.gates import evaluate_gates, parse_gates

    rep = Report(model={}, target="t", artifacts=[{"format": "onnx", "precision": "fp32", "target": "t",
                                                   "status": "ok", "size_bytes": 100}], machine={}, versions={})
    with pytest.raises(ConfigError, match=r"no artifact in the report has a numeric memory_mb\.peak_rss"):
        evaluate_gates(rep, parse_gates(["memory_mb.peak_rss>1"]))
    assert rep.gates == [{"gate": "memory_mb.peak_rss>1", "artifact": "—", "value": None, "passed": False}]
    assert rep.verdict()["passed"] is False
    assert "| memory_mb.peak_rss>1 | — | — (no artifact has it) | FAILED |" in to_markdown(rep, None)


def test_a_baseline_with_another_drift_reference_is_said():
    """An export's drift is against the fp32 PyTorch model, validate's against an fp32 file's outputs:
    compared across the two, an agreement change is partly the references' difference."""
    from edgecompress.report import Report
    from edgecompress.targets.baseline import compare_baseline

    def row(agreement):
        return {"format": "onnx", "precision": "int8", "target": "t", "status": "ok", "path": "/o/m.onnx",
                "size_bytes": 100, "drift": {"top1_agreement": agreement}}

    base = {"model": {"name": "m"}, "data": {"eval": "e.npz"}, "artifacts": [row(0.99)]}
    val = Report(model={"name": "m"}, target="t", artifacts=[row(0.98)],
                 data={"reference": "outputs of m-fp32.onnx (fp32) on this machine"})
    assert compare_baseline(val, base, "b.json")["notes"] == [
        "drift is against another reference than the baseline's (the fp32 PyTorch model -> outputs of "
        "m-fp32.onnx (fp32) on this machine): agreement and cosine changes include the references' own difference"]
    same = Report(model={"name": "m"}, target="t", artifacts=[row(0.98)], data={"eval": "e.npz"})
    assert compare_baseline(same, base, "b.json")["notes"] == []
    # no drift compared (no --eval in this run): nothing to say
    no_drift = Report(model={"name": "m"}, target="t", artifacts=[row(None)],
                      data={"reference": "outputs of m-fp32.onnx (fp32) on this machine"})
    assert compare_baseline(no_drift, base, "b.json")["notes"] == []


def test_baseline_latency_at_other_threads_is_not_compared():
    """A baseline timed at --threads 4 against a run at 1: a 2.5x "regression" failed CI under
    --fail-on-regression, with no word about the threads. Size is still compared."""
    from edgecompress.report import Report
    from edgecompress.targets.baseline import compare_baseline

    def row(threads, p50, size):
        return {"format": "onnx", "precision": "fp32", "target": "t", "status": "ok", "path": "/o/m.onnx",
                "size_bytes": size, "latency_ms": {"p50": p50}, "settings": {"threads": threads}}

    base = {"model": {"name": "m"}, "artifacts": [row(4, 0.08, 100)]}
    res = compare_baseline(Report(model={"name": "m"}, target="t", artifacts=[row(1, 0.2, 100)]), base, "b.json")
    assert res["regressions"] == [] and "latency p50" in res["not_compared"]
    assert res["notes"] == ["latency not compared where the baseline ran another --threads: t/onnx/fp32 (4 -> 1)"]
    res = compare_baseline(Report(model={"name": "m"}, target="t", artifacts=[row(4, 0.2, 300)]), base, "b.json")
    assert [r.split(": ")[1].split(" ")[0] for r in res["regressions"]] == ["latency", "size"]


def test_baseline_that_compared_nothing_is_no_pass_under_fail_on_regression():
    """A baseline of another target shares nothing: the verdict said "no regression against the
    baseline" and passed, even under --fail-on-regression."""
    from edgecompress.report import Report
    from edgecompress.report.render import to_markdown

    run = Report(model={"name": "m"}, target="t", command="edgecompress validate d --fail-on-regression",
                 artifacts=[{"format": "onnx", "precision": "fp32", "target": "t", "status": "ok", "path": "/o/m.onnx",
                             "size_bytes": 1, "metrics": {}, "drift": {}, "latency_ms": {}}])
    run.baseline = {"regressions": [], "compared": [], "missing": ["u/onnx/fp32"], "fail_on_regression": True}
    assert run.verdict()["passed"] is False and run.verdict()["baseline_compared"] is False
    assert "nothing compared against the baseline" in to_markdown(run, None)
    assert "no regression against the baseline" not in to_markdown(run, None)
    run.baseline["fail_on_regression"], run.command = False, "edgecompress validate d"
    assert run.verdict()["passed"] is True  # said, not judged, without the flag
    run.baseline["compared"] = ["size"]
    assert "no regression against the baseline" in to_markdown(run, None)
