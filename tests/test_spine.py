"""The spine on digits-cnn: every format round-trips, int8 agrees with fp32, reports parse."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgecompress.exporters import FORMATS, ExportOptions, export, resolve_formats
from edgecompress.fileio import TEMP_PREFIX
from edgecompress.targets import ValidateSettings, validate
from edgecompress.targets.metrics import classification_metrics

FAST = ValidateSettings(threads=1, batches=(1, 4), warmup=2, runs=10)


def test_digits_model_is_real_and_deterministic(digits_spec, digits_eval, digits_reference):
    from edgecompress.models.digits import train_digits_cnn

    acc = classification_metrics(digits_reference, digits_eval.y)["top1"]
    assert acc >= 0.97, acc
    again = train_digits_cnn(epochs=2)
    twice = train_digits_cnn(epochs=2)
    for a, b in zip(again.state_dict().values(), twice.state_dict().values(), strict=True):
        assert np.array_equal(a.numpy(), b.numpy())


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, digits_spec, digits_calib):
    out = tmp_path_factory.mktemp("spine")
    pairs = [(f, p) for f, fmt in FORMATS for p in fmt.precisions if f in ("onnx", "openvino")]
    return [export(digits_spec, f, p, out, digits_calib) for f, p in pairs]


@pytest.fixture(scope="module")
def measured(artifacts, digits_eval, digits_reference):
    return validate(artifacts, "x86-local", digits_eval, digits_reference, FAST, progress=False)


def test_every_format_round_trips(measured):
    for m in measured:
        a = m.artifact
        assert m.status == "ok", (a["format"], a["precision"], m.error)
        assert set(m.latency_ms) == {"1", "4"}
        assert 0 < m.latency_ms["1"]["p50"] <= m.latency_ms["1"]["p90"] <= m.latency_ms["1"]["p99"]
        # thread CPU time cannot exceed wall time at one thread; io conversion is timed apart
        assert 0 < m.latency_ms["1"]["cpu_p50"] <= m.latency_ms["1"]["p99"] * 1.05
        # io_ms is the input/output conversion (bench.py prepare + finish), timed directly outside
        # the timed call. ONNX Runtime and OpenVINO take NCHW float as given, so it only wraps the
        # array: measured (> 0, not a difference of medians that can read 0 or below) and far below
        # the call itself (~1 us vs ~50 us here); io timed around the inference would read >= p50.
        for b in ("1", "4"):
            lat = m.latency_ms[b]
            assert 0 < lat["io_ms"] < lat["p50"] / 4, (a["format"], a["precision"], b, lat)
        # three interleaved rounds (the default), each figure the median of the rounds'
        assert m.settings["rounds"] == 3 and len(m.latency_ms["4"]["p50_rounds"]) == 3
        assert m.latency_ms["1"]["p50"] == float(np.median(m.latency_ms["1"]["p50_rounds"]))
        if a["precision"] == "fp32":
            assert m.drift["cosine"] >= 0.9999 and m.drift["top1_agreement"] == 1.0, a
        elif a["precision"] == "fp16":
            assert m.drift["cosine"] >= 0.999, a
        else:
            assert m.drift["top1_agreement"] >= 0.97, (a, m.drift)
        assert m.memory_mb["peak_rss"] > 0


def test_openvino_fp32_is_measured_at_f32(measured):
    ov = {m.artifact["precision"]: m for m in measured if m.artifact["format"] == "openvino"}
    assert ov["fp32"].runtime["settings"]["inference_precision"] == "f32"
    assert ov["fp32"].runtime["settings"]["requested_precision"] == "f32"


def test_int8_artifacts_are_really_int8(artifacts):
    by = {(a.format, a.precision): a for a in artifacts}
    q = onnx.load(str(by["onnx", "int8"].path))
    ops = {n.op_type for n in q.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    int8_weights = [i for i in q.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert len(int8_weights) >= 7  # every conv and linear weight
    # as the report says: weights int8 per-channel (one scale per output channel), activations
    # uint8 with their own zero points (asymmetric ranges: post-ReLU values use all 256 levels)
    init = {i.name: onnx.numpy_helper.to_array(i) for i in q.graph.initializer}
    weight_dq = [n for n in q.graph.node if n.op_type == "DequantizeLinear" and init.get(n.input[0]) is not None
                 and init[n.input[0]].dtype == np.int8]
    assert len(weight_dq) >= 7 and all(init[n.input[1]].size == init[n.input[0]].shape[0] > 1 for n in weight_dq
                                       if init[n.input[0]].ndim == 4)
    act_zp = [init[n.input[2]] for n in q.graph.node if n.op_type == "QuantizeLinear"]
    assert act_zp and all(z.dtype == np.uint8 for z in act_zp) and any(int(z) != 128 for z in act_zp)
    xml = by["openvino", "int8"].path.read_text()
    assert xml.count('type="FakeQuantize"') + xml.count('type="FakeConvert"') >= 7
    assert by["openvino", "int8"].size_bytes < 0.6 * by["openvino", "fp32"].size_bytes
    assert by["onnx", "int8"].size_bytes < 0.6 * by["onnx", "fp32"].size_bytes


def test_onnx_fp32_has_dynamic_batch(artifacts):
    a = next(a for a in artifacts if (a.format, a.precision) == ("onnx", "fp32"))
    assert isinstance(a.inputs[0].shape[0], str)
    assert a.inputs[0].shape[1:] == [1, 8, 8]


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_other_calibration_methods(tmp_path, digits_spec, digits_calib, digits_eval, digits_reference, method):
    art = export(digits_spec, "onnx", "int8", tmp_path, digits_calib, ExportOptions(calib_method=method))
    assert art.details["calibration"]["method"] == method
    # the method is applied, not only recorded: its activation ranges differ from minmax's
    minmax = export(digits_spec, "onnx", "int8", tmp_path, digits_calib, ExportOptions(calib_method="minmax"),
                    name="minmax.onnx")

    def act_scales(path):  # type: ignore[no-untyped-def]
        m = onnx.load(str(path))
        init = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
        return np.array([float(init[n.input[1]]) for n in m.graph.node if n.op_type == "QuantizeLinear"])

    a, b = act_scales(art.path), act_scales(minmax.path)
    assert a.shape == b.shape and not np.allclose(a, b) and (a <= b * 1.0001).all()  # clipped, never wider
    (m,) = validate([art], "x86-local", digits_eval, digits_reference,
                    ValidateSettings(runs=3, warmup=1), progress=False)
    assert m.status == "ok" and m.drift["top1_agreement"] >= 0.97, m.drift


def test_float_first_leaves_the_stem_float(tmp_path, digits_spec, digits_calib, digits_eval, digits_reference):
    art = export(digits_spec, "onnx", "int8", tmp_path, digits_calib, ExportOptions(float_first=1))
    q = onnx.load(str(art.path))
    convs = [n for n in q.graph.node if n.op_type == "Conv"]
    producers = {o: n.op_type for n in q.graph.node for o in n.output}
    # The first conv reads float weights and a float input; every later conv reads dequantized ones.
    assert [f["node"] for f in art.details["quantization"]["float_nodes"]] == [convs[0].name]
    assert producers.get(convs[0].input[1]) != "DequantizeLinear"
    assert producers.get(convs[0].input[0]) != "DequantizeLinear"
    assert all(producers.get(c.input[1]) == "DequantizeLinear" for c in convs[1:])
    (m,) = validate([art], "x86-local", digits_eval, digits_reference, ValidateSettings(runs=3, warmup=1),
                    progress=False)
    assert m.status == "ok" and m.drift["top1_agreement"] >= 0.97, m.drift
    # the report names the float layer in its "Quantized and float ops" section
    from edgecompress.report.model import Report, artifact_row
    from edgecompress.report.render import quant_rows, to_html, to_markdown

    report = Report(model={"name": "digits"}, target="x86-local", artifacts=[artifact_row(m.to_dict())])
    # a Python run: the option named by its keyword (the CLI's report says --float-first)
    assert quant_rows(report)[0]["float"] == f"{convs[0].name}: first layers left float (float_first)"
    assert convs[0].name in to_markdown(report, None) and convs[0].name in to_html(report)
    with pytest.raises(Exception, match="float_first -1"):
        export(digits_spec, "onnx", "int8", tmp_path / "neg", digits_calib, ExportOptions(float_first=-1))
    assert not (tmp_path / "neg").exists() or not list((tmp_path / "neg").glob("*.onnx"))


def test_openvino_overflow_fix_follows_the_cpu(tmp_path, digits_spec, digits_calib, monkeypatch):
    """NNCF's 7-bit first layer (its overflow fix) only where the CPU lacks VNNI, unless the caller
    picks; the saved IR's int8 weights show which, and the report's ops table says who can run it."""
    import openvino as ov

    import edgecompress.report.model as rm
    from edgecompress.errors import ConfigError
    from edgecompress.report.model import Report
    from edgecompress.report.render import quant_rows

    def weight_ranges(path):
        out = []
        for op in ov.Core().read_model(str(path)).get_ordered_ops():
            if op.get_type_name() not in ("Convolution", "GroupConvolution", "MatMul"):
                continue
            stack = [op.input_value(1).get_node()]
            while stack:  # the int8 constant under the weights' Convert / Multiply
                w = stack.pop()
                if w.get_type_name() == "Constant" and w.get_element_type().get_type_name() == "i8":
                    out.append(int(abs(w.get_data().astype(int)).max()))
                    break
                stack += [w.input_value(i).get_node() for i in range(w.get_input_size())]
        return out

    got = {}
    for flags, extra in (({"avx2", "avx512_vnni"}, {}), ({"avx2"}, {}), ({"avx2", "avx512_vnni"},
                                                                           {"ov_overflow_fix": "first_layer_only"})):
        monkeypatch.setattr(rm, "cpu_flags", lambda flags=flags: flags)
        name = f"{len(got)}"
        art = export(digits_spec, "openvino", "int8", tmp_path / name, digits_calib, ExportOptions(extra=extra))
        got[name] = (art.details["quantization"]["overflow_fix"], weight_ranges(art.path), art.details)
    (vnni, full, d0), (old, half, _), (asked, half2, d2) = got.values()
    assert (vnni, old, asked) == ("disable", "first_layer_only", "first_layer_only")
    assert full[0] > 64 and half[0] <= 64 and half2[0] <= 64  # the first layer's weights: 8 vs 7 bits
    assert full[1:] == half[1:] and min(full[1:]) > 64  # the other layers are 8-bit either way
    rows = [quant_rows(Report(model={"name": "d"}, target="x86-local",
                              artifacts=[{"format": "openvino", "precision": "int8", "details": d}]))[0]["int8"]
            for d in (d0, d2)]
    assert "8-bit weights (for x86 CPUs with VNNI)" in rows[0]
    assert "7-bit weights (runs on x86 CPUs without VNNI)" in rows[1]
    with pytest.raises(ConfigError, match="ov_overflow_fix 'off': one of disable"):
        export(digits_spec, "openvino", "int8", tmp_path / "bad", digits_calib,
               ExportOptions(extra={"ov_overflow_fix": "off"}))
    assert not list(tmp_path.glob("bad/**/*.xml")) and not list(tmp_path.glob("bad/**/*.bin"))


def test_openvino_float_first_leaves_the_first_conv_float(tmp_path, digits_spec, digits_calib):
    """float_first keeps the first N conv / MatMul layers of the OpenVINO int8 IR float (NNCF
    ignored scope), names them as the saved IR does, and refuses N < 0; not given, the model's own
    default applies (digits-cnn has none: every layer is quantized)."""
    import openvino as ov

    def layers(path):
        m = ov.Core().read_model(str(path))
        return [(op.get_friendly_name(), op.input_value(0).get_node().get_type_name()) for op in m.get_ordered_ops()
                if op.get_type_name() in ("Convolution", "GroupConvolution")]

    default = export(digits_spec, "openvino", "int8", tmp_path / "d", digits_calib, ExportOptions())
    assert all(src == "FakeQuantize" for _, src in layers(default.path))
    assert "float_nodes" not in default.details["quantization"]
    art = export(digits_spec, "openvino", "int8", tmp_path / "f", digits_calib, ExportOptions(float_first=1))
    (first, src), *rest = layers(art.path)
    assert src != "FakeQuantize" and rest and all(s == "FakeQuantize" for _, s in rest)
    assert art.details["quantization"]["float_nodes"] == [{"node": first, "why": "float_first"}]
    from edgecompress.report.model import Report
    from edgecompress.report.render import quant_rows

    (row,) = quant_rows(Report(model={"name": "digits"}, target="x86-local",
                               artifacts=[{"format": "openvino", "precision": "int8", "details": art.details}]))
    # the report's ops table
    assert row["int8"].startswith("FakeQuantize (NNCF); first layer")
    assert row["float"] == f"{first}: first layers left float (float_first)"  # a Python run: the keyword
    own = digits_spec.replace(extra={**digits_spec.extra, "openvino_int8_float_first": 1})  # a zoo entry's default
    by_model = export(own, "openvino", "int8", tmp_path / "m", digits_calib, ExportOptions())
    assert [src == "FakeQuantize" for _, src in layers(by_model.path)] == [False] + [True] * len(rest)
    with pytest.raises(Exception, match="float_first -1"):
        export(digits_spec, "openvino", "int8", tmp_path / "n", digits_calib, ExportOptions(float_first=-1))
    assert not list(tmp_path.glob("n/**/*.xml")) and not list(tmp_path.glob("n/**/*.bin"))


def test_resolve_formats():
    assert resolve_formats(["onnx", "openvino"], int8=True) == [
        ("onnx", "fp32"), ("onnx", "int8"), ("openvino", "fp32"), ("openvino", "int8")]
    assert resolve_formats(["openvino:fp16"]) == [("openvino", "fp16")]
    from edgecompress.errors import ConfigError

    with pytest.raises(ConfigError, match="onnx supports precisions"):
        resolve_formats(["onnx", "openvino"], ["fp16"])
    with pytest.raises(ConfigError, match=r"^formats='coreml': unknown format \(known: "):
        resolve_formats(["coreml"])


def test_report_files_parse(tmp_path, digits_spec):
    from edgecompress.pipeline import ExportJob, run_export

    job = ExportJob(model=digits_spec, formats=resolve_formats(["onnx"], int8=True), out_dir=tmp_path,
                    settings=FAST, progress=False, command="pytest")
    _, paths = run_export(job)
    data = json.loads(paths["json"].read_text())
    assert [(a["format"], a["precision"]) for a in data["artifacts"]] == [("onnx", "fp32"), ("onnx", "int8")]
    for a in data["artifacts"]:
        assert {"format", "precision", "path", "size_bytes", "latency_ms", "metrics", "drift", "status"} <= set(a)
        assert set(a["latency_ms"]) >= {"p50", "p90", "p99"}
        assert a["metrics"]["top1"] >= 0.97 and a["status"] == "ok"
        # relative to the report's folder (tmp_path is absolute), so the folder can be moved
        assert not Path(a["path"]).is_absolute() and (tmp_path / a["path"]).is_file(), a["path"]
    from edgecompress.report import Report

    # read back, the paths resolve from the report's folder, wherever the reader runs
    assert all(Path(a["path"]).is_file() for a in Report.load(paths["json"]).artifacts)
    assert data["versions"]["onnxruntime"] and data["machine"]["cores"] >= 1 and data["command"] == "pytest"
    assert data["cwd"] == os.getcwd()  # relative paths in the command are relative to it
    assert data["reference"]["top1"] >= 0.97
    html = paths["html"].read_text()
    assert "<table>" in html and "data:image/png;base64," in html and "onnx" in html
    md = paths["md"].read_text()
    assert "| onnx | int8 |" in md
    manifest = json.loads(paths["manifest"].read_text())
    from edgecompress.fileio import sha256_file

    for entry in manifest["artifacts"]:
        assert sha256_file(tmp_path / entry["path"]) == entry["sha256"]
    assert not list(tmp_path.glob(TEMP_PREFIX + "*"))


@pytest.mark.parametrize("bias_correction", [True, False])
def test_openvino_int8_asks_nncf_for_what_the_report_says(tmp_path, digits_spec, digits_calib, monkeypatch,
                                                         bias_correction):
    """The NNCF settings measured best for CNNs (RESULTS-spine.md): performance preset (symmetric
    activations), the full bias correction (off with bias_correction=False, as for the other
    formats), the histogram range search for --calib-method percentile. Captured at the call, the
    real quantization then runs."""
    import nncf

    seen = {}
    real = nncf.quantize

    def spy(model, dataset, **kwargs):  # type: ignore[no-untyped-def]
        seen.update(kwargs)
        return real(model, dataset, **kwargs)

    monkeypatch.setattr(nncf, "quantize", spy)
    art = export(digits_spec, "openvino", "int8", tmp_path, digits_calib,
                 ExportOptions(progress=False, bias_correction=bias_correction))
    assert seen["preset"] == nncf.QuantizationPreset.PERFORMANCE and seen["fast_bias_correction"] is False
    assert seen["advanced_parameters"].disable_bias_correction is not bias_correction
    assert seen["subset_size"] == len(digits_calib)
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    assert seen["advanced_parameters"].activations_range_estimator_params == RangeEstimatorParametersSet.HISTOGRAM
    assert art.details["calibration"]["method"] == "nncf-histogram" + ("+bias-correction" if bias_correction else "")


def test_onnx_int8_dynamic_weights_are_per_channel(tmp_path, digits_spec):
    art = export(digits_spec, "onnx", "int8-dynamic", tmp_path)
    m = onnx.load(str(art.path))
    init = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
    scales = [init[n.input[1]] for n in m.graph.node if n.op_type == "DequantizeLinear"
              and init.get(n.input[0]) is not None and init[n.input[0]].dtype == np.int8]
    scales += [init[n.input[3]] for n in m.graph.node if n.op_type == "MatMulInteger" and len(n.input) > 3
               and n.input[3] in init]
    assert scales and all(s.size > 1 for s in scales), [s.shape for s in scales]
