"""The figures and verdicts a reader ships on, checked at their exact values and boundaries.

Each test here was written against a hand-made bug that the rest of the suite let through
(top-5 taken from four classes, p90 read as p50, throughput per batch instead of per sample,
a gate at its boundary, a report that passed with a failed gate, a regression at exactly the
threshold, a failed row left out of the baseline comparison, the imagenet preset multiplying by
the std, `export` exiting 0 with a failed artifact, the ORT session not pinned to its threads).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgecompress.errors import DataError
from edgecompress.report import Report
from edgecompress.targets import bench
from edgecompress.targets.baseline import compare_baseline
from edgecompress.targets.gates import evaluate_gates, parse_gates
from edgecompress.targets.metrics import classification_metrics, drift


def test_top1_top5_exact_and_labels_must_fit_the_outputs():
    logits = np.tile(np.arange(7, 0, -1, dtype=np.float32), (3, 1))  # class 0 best ... class 6 worst
    assert classification_metrics(logits, np.array([0, 4, 5])) == {"top1": 1 / 3, "top5": 2 / 3}
    assert "top5" not in classification_metrics(logits[:, :4], np.array([0, 1, 3]))  # under 5 classes
    with pytest.raises(DataError, match="labels go up to class 7 but the model has 7 outputs"):
        classification_metrics(logits[:1], np.array([7]))


def test_drift_of_a_single_output_has_no_agreement():
    """One score per sample has one argmax: its agreement would always read 100 %."""
    d = drift(np.arange(4, dtype=np.float32)[:, None], np.arange(4, dtype=np.float32)[:, None] * 2)
    assert "top1_agreement" not in d and d["max_abs"] == 3.0
    d = drift(np.eye(4, dtype=np.float32), np.eye(4, dtype=np.float32)[[0, 1, 3, 2]])
    assert d["top1_agreement"] == 0.5


def test_latency_summary_percentiles_and_throughput():
    rng = np.random.default_rng(0)
    values = rng.gamma(2.0, 3.0, 57).tolist()
    for q in (0, 50, 90, 99, 100):
        assert bench._pct(values, q) == pytest.approx(np.percentile(values, q))
    times = [float(i) for i in range(1, 101)]
    s = bench._summary(times, [t / 2 for t in times], [0.25] * 20, 4)
    assert (s["p50"], s["p90"], s["p99"]) == pytest.approx((50.5, 90.1, 99.01))
    assert s["throughput_per_s"] == pytest.approx(4 * 1000 / 50.5)  # samples per second, not batches
    assert (s["mean"], s["min"], s["runs"], s["cpu_p50"], s["io_ms"]) == pytest.approx((50.5, 1.0, 100, 25.25, 0.25))


def test_onnx_runtime_session_is_pinned_to_the_threads_asked(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    for threads in (1, 2):
        runner = bench.OrtRunner(str(path), threads, None)
        opts = runner.sess.get_session_options()
        assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (threads, 1)
        assert runner.info["settings"]["intra_op_threads"] == threads


def _row(p50: float, status: str = "ok", **more) -> dict:
    return {"format": "onnx", "precision": "int8", "target": "x86-local", "status": status,
            "latency_ms": {"p50": p50}, "size_bytes": 1000, **more}


def _report(*rows: dict) -> Report:
    return Report(model={"name": "m"}, target="x86-local", artifacts=list(rows))


def test_gates_at_their_boundary_and_the_verdict_they_give():
    report = _report(_row(5.0))
    assert evaluate_gates(report, parse_gates(["latency_ms.p50 > 5"])) == []  # 5 > 5 is false: passes
    assert evaluate_gates(report, parse_gates(["latency_ms.p50 < 5"])) == []
    assert report.verdict()["passed"] and report.gates[0]["passed"]
    failures = evaluate_gates(report, parse_gates(["latency_ms.p50 >= 5"]))
    assert len(failures) == 1 and "latency_ms.p50" in failures[0]
    v = report.verdict()
    assert (v["passed"], v["failed_gates"], v["failed_artifacts"]) == (False, 1, 0)
    assert not _report(_row(5.0, status="failed")).verdict()["passed"]


def test_export_and_validate_word_a_failed_gate_alike():
    """export said "(m.onnx, x86-local/onnx/int8: 7 ms)", validate "(m.onnx, onnx int8 on
    x86-local: latency_ms.p50 = 7 ms)": one function words both now."""
    from edgecompress.cli import _raise_failed_gates
    from edgecompress.errors import ValidationError

    report = _report(_row(7.0, path="/o/m.onnx"), _row(9.0, latency_kind="estimated", target="rpi5"))
    failures = evaluate_gates(report, parse_gates(["latency_ms.p50>5"]), Path("/o"))  # validate's lines
    assert failures == ["gate failed: latency_ms.p50>5 (m.onnx, onnx int8 on x86-local: latency_ms.p50 = 7.00 ms)",
                        "gate failed: latency_ms.p50>5 (onnx int8 on rpi5: latency_ms.p50 = 9.00 ms [estimated])"]
    with pytest.raises(ValidationError) as e:  # export's line
        _raise_failed_gates(report)
    assert str(e.value) == failures[0] + " (+1 more)"


def test_regression_is_a_change_beyond_the_threshold_and_a_newly_failed_row_is_one():
    baseline = _report(_row(100.0)).to_dict()
    at = compare_baseline(_report(_row(105.0)), baseline, "b.json", threshold=0.05)
    assert at["regressions"] == [] and at["changes"][0]["change"] == pytest.approx(0.05)
    beyond = compare_baseline(_report(_row(105.5)), baseline, "b.json", threshold=0.05)
    assert len(beyond["regressions"]) == 1 and "latency p50" in beyond["regressions"][0]
    faster = compare_baseline(_report(_row(50.0)), baseline, "b.json", threshold=0.05)
    assert faster["regressions"] == []  # latency is worse going up only
    failed = compare_baseline(_report(_row(100.0, status="failed")), baseline, "b.json")
    assert [r.endswith("failed (ok in the baseline)") for r in failed["regressions"]] == [True]


def _acc_row(top1: float, agreement: float, cosine: float, p50: float = 1.0) -> dict:
    return _row(p50, metrics={"top1": top1}, drift={"top1_agreement": agreement, "cosine": cosine})


def test_accuracy_agreement_and_cosine_regress_by_their_drop_in_points():
    """A 99.3 -> 94.6 % top-1 (-4.7 pt, the error rate x8) is -4.7 % relative: it passed the 5 %
    threshold, and so did cosine 1.0 -> 0.951. They are judged by their absolute drop now."""
    baseline = _report(_acc_row(0.993, 0.99, 1.0)).to_dict()
    res = compare_baseline(_report(_acc_row(0.946, 0.99, 0.951)), baseline, "b.json")
    assert res["regressions"] == [
        "onnx int8 on x86-local: top-1 99.30 % -> 94.60 % (-4.7 pt)",
        "onnx int8 on x86-local: cosine 1.00000 -> 0.95100 (-4.9 pt)"]
    assert (res["threshold"], res["accuracy_threshold"]) == (0.05, 0.01)  # both recorded
    top1 = next(c for c in res["changes"] if c["metric"] == "top-1")
    assert top1["rule"] == "absolute" and top1["delta"] == pytest.approx(-0.047)
    assert next(c for c in res["changes"] if c["metric"] == "latency p50")["rule"] == "relative"


@pytest.mark.parametrize("metric", ["top1", "agreement", "cosine"])
def test_a_drop_in_points_at_the_accuracy_threshold(metric):
    """1.0 pt is at the default 0.01 (not over it: passes); 1.1 pt is over it. Cosine from its
    typical 0.9999."""
    old = {"top1": 0.993, "agreement": 0.98, "cosine": 0.9999}
    baseline = _report(_acc_row(**{"top1": old["top1"], "agreement": old["agreement"],
                                   "cosine": old["cosine"]})).to_dict()

    def drop(pt: float) -> dict:
        new = dict(old, **{metric: old[metric] - pt / 100})
        return compare_baseline(_report(_acc_row(new["top1"], new["agreement"], new["cosine"])),
                                baseline, "b.json")

    assert drop(1.0)["regressions"] == []
    over = drop(1.1)["regressions"]
    assert len(over) == 1 and over[0].endswith("(-1.1 pt)"), over
    # the threshold is the caller's: 2 pt lets the 1.1-pt drop pass
    new = dict(old, **{metric: old[metric] - 0.011})
    assert compare_baseline(_report(_acc_row(new["top1"], new["agreement"], new["cosine"])), baseline,
                            "b.json", accuracy_threshold=0.02)["regressions"] == []


def test_latency_stays_relative_whatever_the_accuracy_threshold():
    baseline = _report(_acc_row(0.99, 0.99, 0.999, p50=100.0)).to_dict()
    res = compare_baseline(_report(_acc_row(0.99, 0.99, 0.999, p50=105.5)), baseline, "b.json",
                           threshold=0.05, accuracy_threshold=1.0)
    assert res["regressions"] == ["onnx int8 on x86-local: latency p50 100 ms -> 106 ms (+5.5 %)"]


def test_the_report_states_both_thresholds():
    from edgecompress.report.render import to_html, to_markdown

    baseline = _report(_acc_row(0.99, 0.99, 0.999)).to_dict()
    report = _report(_acc_row(0.99, 0.99, 0.999))
    report.baseline = compare_baseline(report, baseline, "b.json")
    said = "Threshold 5 % (latency, size, memory); 1 pt (accuracy, agreement, cosine)."
    assert said in to_markdown(report, None) and said in to_html(report)
    report.baseline["accuracy_threshold"] = 0.0025  # was shown "0.2 pt"
    assert "; 0.25 pt (accuracy, agreement, cosine)." in to_markdown(report, None)
    report.baseline["accuracy_threshold"] = 0.01
    report.baseline.pop("accuracy_threshold")  # a report.json written before: one relative rule
    assert "Threshold 5 %. " in to_markdown(report, None)


def test_imagenet_preset_is_mean_std_normalisation():
    from PIL import Image

    from edgecompress.data.presets import get_transform

    img = Image.new("RGB", (256, 256), (124, 116, 104))  # ~ the ImageNet mean in 0..255
    x = get_transform("imagenet", 224)(img)
    assert x.shape == (3, 224, 224)
    expected = (np.array([124, 116, 104]) / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    assert np.allclose(x[:, 100, 100], expected, atol=1e-3)
    white = get_transform("imagenet", 224)(Image.new("RGB", (256, 256), (255, 255, 255)))
    assert np.allclose(white[:, 0, 0], (1 - np.array([0.485, 0.456, 0.406])) / [0.229, 0.224, 0.225], atol=1e-3)


def test_export_exits_4_when_an_artifact_failed(monkeypatch, tmp_path):
    """The build's only signal: a failed row must not exit 0."""
    from typer.testing import CliRunner

    import edgecompress.pipeline as pipeline
    from edgecompress.cli import app

    html = tmp_path / "report.html"
    html.write_text("x")
    for status, code in (("failed", 4), ("ok", 0)):
        row = _row(1.0, status=status, path="m.onnx", error="boom" if status == "failed" else "")
        monkeypatch.setattr(pipeline, "run_export", lambda job, row=row: (_report(row), {"html": html}))
        result = CliRunner().invoke(app, ["export", "zoo:digits-cnn", "-f", "onnx", "--out", str(tmp_path / "o"),
                                          "--no-progress"])
        assert result.exit_code == code, (status, result.output)


def test_presets_keep_the_image_orientation_and_crop_like_tensorflow():
    from PIL import Image

    from edgecompress.data.presets import center_crop_fraction, get_transform

    # a left-to-right ramp: each preset's output must vary along its last axis (W), not along H
    ramp = Image.fromarray(np.tile(np.linspace(0, 255, 320, dtype=np.uint8), (240, 1))).convert("RGB")
    for preset in ("imagenet", "efficientnet-lite"):
        x = get_transform(preset, 224)(ramp)
        assert x.shape == (3, 224, 224)
        assert np.ptp(x[0, 112, :]) > 1 and np.ptp(x[0, :, 112]) < 1e-5, preset
    # TensorFlow's offsets round up: a 10x7 image cropped to 3 starts at (4, 2), not (3, 2)
    im = Image.fromarray(np.arange(70, dtype=np.uint8).reshape(7, 10))
    crop = np.asarray(center_crop_fraction(im, 0.5))
    assert crop.shape == (3, 3) and crop[0, 0] == 2 * 10 + 4


def test_openvino_overflow_fix_follows_the_cpus_vnni(monkeypatch):
    """NNCF's 7-bit first layer is for x86 without VNNI: any VNNI flavour (server AVX-512, client
    AVX-VNNI, AMX) turns it off; a user's explicit choice wins."""
    import edgecompress.report.model as host
    from edgecompress.exporters import ExportOptions
    from edgecompress.exporters.openvino import overflow_fix

    for flags, want in (({"avx512_vnni"}, "disable"), ({"avx_vnni"}, "disable"), ({"amx_int8"}, "disable"),
                        ({"avx2"}, "first_layer_only"), (set(), "first_layer_only")):
        monkeypatch.setattr(host, "cpu_flags", lambda flags=flags: flags)
        assert overflow_fix(ExportOptions()) == want, flags
    assert overflow_fix(ExportOptions(extra={"ov_overflow_fix": "enable"})) == "enable"


def test_registry_discovers_public_modules_only(tmp_path, monkeypatch):
    """Modules whose names start with "_" are helpers of a package, not entries to import."""
    import sys

    from edgecompress.registry import Registry

    pkg = tmp_path / "ecx_plugins"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "alpha.py").write_text("from ecx_reg import R\nR.register('alpha', 1)\n")
    (pkg / "_helper.py").write_text("from ecx_reg import R\nR.register('helper', 2)\n")
    reg: Registry[int] = Registry("thing", package="ecx_plugins")
    holder = type(sys)("ecx_reg")
    holder.R = reg  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ecx_reg", holder)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert reg.names() == ["alpha"]
    finally:
        for name in ("ecx_plugins", "ecx_plugins.alpha", "ecx_plugins._helper"):
            sys.modules.pop(name, None)
