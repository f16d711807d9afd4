"""Bias correction of ONNX Runtime int8 files (exporters/_bias_correction.py): the shift it folds
in is the layer's true mean output shift, it lowers the int8 model's error where weight rounding
is biased, it changes bias values only, and every surface can turn it off."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from edgecompress.data import Dataset
from edgecompress.exporters import ExportOptions, export
from edgecompress.exporters._bias_correction import bias_shift


@pytest.mark.parametrize("groups", [1, 2, 6])
def test_the_shift_is_the_mean_output_of_the_weight_error(groups):
    """E[conv(x, dW)] per output channel, computed from the input's channel means, equals the mean
    of the convolution of real inputs with dW (circular padding, so each tap sees every input
    position once and the identity is exact)."""
    g = torch.Generator().manual_seed(groups)
    x = torch.rand(5, 6, 9, 9, generator=g) * 3 + torch.arange(6.0).view(1, 6, 1, 1)
    delta = torch.randn(12, 6 // groups, 3, 3, generator=g) * 0.01
    wrapped = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="circular")
    want = torch.nn.functional.conv2d(wrapped, delta, groups=groups).mean(dim=(0, 2, 3)).numpy()
    got = bias_shift(delta.numpy().astype(np.float64), x.mean(dim=(0, 2, 3)).numpy().astype(np.float64), groups)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)


class _Biased(torch.nn.Module):
    """A depthwise conv whose small taps all round to 0 in int8 (one large tap per channel sets the
    scale) on inputs with a large mean: the rounding shifts every channel's output the same way."""

    def __init__(self) -> None:
        super().__init__()
        self.dw = torch.nn.Conv2d(8, 8, 3, groups=8, padding=1)
        self.pw = torch.nn.Conv2d(8, 16, 1)
        self.fc = torch.nn.Linear(16, 10)
        with torch.no_grad():
            w = torch.full((8, 1, 3, 3), 0.003)
            w[:, 0, 1, 1] = 1.0  # scale 1/127: 0.003 rounds to 0, a shift of -8 * 0.003 * E[x]
            self.dw.weight.copy_(w)
            self.dw.bias.fill_(0.1)  # (an all-zero bias is dropped by the ONNX exporter)
            g = torch.Generator().manual_seed(0)
            self.pw.weight.copy_(torch.randn(16, 8, 1, 1, generator=g) * 0.3)
            self.fc.weight.copy_(torch.randn(10, 16, generator=g) * 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.pw(torch.relu(self.dw(x))))
        return self.fc(y.mean(dim=(2, 3)))


def _spec_and_data():
    from edgecompress.models import load_model

    spec = load_model(_Biased().eval(), input_shape=(1, 8, 12, 12))
    rng = np.random.default_rng(0)
    calib = Dataset(rng.uniform(4, 8, (64, 8, 12, 12)).astype(np.float32), source="uniform 4..8")
    test = rng.uniform(4, 8, (64, 8, 12, 12)).astype(np.float32)
    return spec, calib, test


def _run(path, x):
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def test_bias_correction_removes_a_biased_rounding_error_and_touches_only_biases(tmp_path):
    spec, calib, x = _spec_and_data()
    with torch.no_grad():
        ref = spec.module(torch.from_numpy(x)).numpy()
    on = export(spec, "onnx", "int8", tmp_path / "on", calib, ExportOptions(progress=False))
    off = export(spec, "onnx", "int8", tmp_path / "off", calib, ExportOptions(progress=False, bias_correction=False))
    assert on.details["calibration"]["bias_correction"]["layers"] == 3  # dw, pw, fc
    assert off.details["calibration"]["bias_correction"] is None
    err_on, err_off = (float(np.abs(_run(a.path, x) - ref).mean()) for a in (on, off))
    assert err_on < 0.5 * err_off, (err_on, err_off)

    # the same graph and weights: only the int32 biases moved (speed and size as ORT wrote them)
    a, b = onnx.load(str(on.path)), onnx.load(str(off.path))
    assert [(n.op_type, list(n.input)) for n in a.graph.node] == [(n.op_type, list(n.input)) for n in b.graph.node]
    ia = {i.name: numpy_helper.to_array(i) for i in a.graph.initializer}
    ib = {i.name: numpy_helper.to_array(i) for i in b.graph.initializer}
    assert ia.keys() == ib.keys()
    moved = {k for k in ia if not np.array_equal(ia[k], ib[k])}
    assert moved and all(k.endswith("bias_quantized") and ia[k].dtype == np.int32 for k in moved), moved

    from edgecompress.report import Report
    from edgecompress.report.render import quant_rows

    rows = quant_rows(Report(model={}, target="x86-local",
                             artifacts=[{"format": "onnx", "precision": "int8", "details": d}
                                        for d in (on.details, off.details)]))
    assert "biases corrected in 3 layers" in rows[0]["int8"] and "biases" not in rows[1]["int8"]


def test_a_failed_correction_leaves_orts_file_and_says_why(tmp_path, monkeypatch):
    """Bias correction improves a file ORT already wrote: if it fails, the export keeps that file
    and the report says it was skipped and why."""
    import edgecompress.exporters._bias_correction as bc

    def broken(*_a, **_k):
        raise RuntimeError("no room for the probe outputs\nsecond line")

    monkeypatch.setattr(bc, "_input_means", broken)
    spec, calib, x = _spec_and_data()
    art = export(spec, "onnx", "int8", tmp_path, calib, ExportOptions(progress=False))
    assert art.details["calibration"]["bias_correction"] == {"layers": 0, "skipped": "no room for the probe outputs"}
    assert _run(art.path, x).shape == (64, 10)


def test_a_layer_without_bias_is_left_as_quantized(tmp_path):
    """No bias input, nothing to fold into: the file is ORT's, and the report counts 0 layers."""
    model = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, bias=False), torch.nn.Flatten(),
                                torch.nn.Linear(8 * 4 * 4, 3, bias=False)).eval()
    from edgecompress.models import load_model

    spec = load_model(model, input_shape=(1, 4, 6, 6))
    calib = Dataset(np.random.default_rng(1).uniform(0, 1, (16, 4, 6, 6)).astype(np.float32))
    art = export(spec, "onnx", "int8", tmp_path, calib, ExportOptions(progress=False))
    assert art.details["calibration"]["bias_correction"] == {"layers": 0, "without_bias": 2}


def test_every_surface_turns_it_off(tmp_path):
    from typer.testing import CliRunner

    from edgecompress.cli import app
    from edgecompress.recipe import parse_recipe

    r = parse_recipe({"model": "zoo:digits-cnn", "export": ["onnx:int8"], "options": {"bias_correction": False}}, "r")
    assert r.export_options().bias_correction is False
    assert parse_recipe({"model": "zoo:digits-cnn", "export": ["onnx:int8"]}, "r").export_options().bias_correction
    # QAT's own correction follows the option unless the qat item sets it
    def qat_cfg(qat: dict, **options: bool):
        recipe = parse_recipe({"model": "zoo:digits-cnn", "passes": [{"qat": qat}], "options": options}, "r")
        return recipe.pass_configs()[0][1].bias_correction

    assert qat_cfg({}) is True and qat_cfg({}, bias_correction=False) is False
    assert qat_cfg({"bias_correction": True}, bias_correction=False) is True

    res = CliRunner().invoke(app, ["export", "zoo:digits-cnn", "-f", "onnx", "--int8", "--no-bias-correction",
                                   "--no-validate", "--no-progress", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    import json

    report = json.loads((tmp_path / "report.json").read_text())
    (int8,) = [a for a in report["artifacts"] if a["precision"] == "int8"]
    assert int8["details"]["calibration"]["bias_correction"] is None

    # compress: its flag lands in the resolved recipe it writes (and so in its export)
    out = tmp_path / "compressed"
    res = CliRunner().invoke(app, ["compress", "zoo:digits-cnn", "--export", "onnx:int8", "--no-bias-correction",
                                   "--runs", "2", "--warmup", "1", "--rounds", "1", "--no-progress", "--out", str(out)])
    assert res.exit_code == 0, res.output
    import yaml

    assert yaml.safe_load((out / "recipe.resolved.yaml").read_text())["options"]["bias_correction"] is False
    (int8,) = json.loads((out / "report.json").read_text())["artifacts"]
    assert int8["details"]["calibration"]["bias_correction"] is None


def test_tflite_int8_corrects_the_float_biases_before_quantizing_and_leaves_the_model_alone(tmp_path):
    """litert-torch's PT2E quantizer has no bias correction: the exporter corrects a copy of the
    float model (the default quantizer's per-channel max|W|/127 rounding), not the caller's."""
    from edgecompress.exporters._litert_convert import run as run_tflite

    spec, calib, x = _spec_and_data()
    before = {k: v.clone() for k, v in spec.module.state_dict().items()}
    with torch.no_grad():
        ref = spec.module(torch.from_numpy(x)).numpy()
    on = export(spec, "tflite", "int8", tmp_path / "on", calib, ExportOptions(progress=False))
    off = export(spec, "tflite", "int8", tmp_path / "off", calib, ExportOptions(progress=False, bias_correction=False))
    assert on.details["calibration"]["bias_correction"]["layers"] == 3
    assert off.details["calibration"]["bias_correction"] is None
    err_on, err_off = (float(np.abs(run_tflite(a.path, x) - ref).mean()) for a in (on, off))
    assert err_on < 0.5 * err_off, (err_on, err_off)
    after = spec.module.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_an_fx_graph_is_corrected_as_its_modules_are():
    """A QAT model's float twin reaches the TFLite exporter as a torch.fx graph (aten.conv2d /
    aten.linear calls on attributes), not as nn.Conv2d modules: the same layers get the same shift."""
    from edgecompress.exporters._bias_correction import correct_module_bias

    spec, calib, x = _spec_and_data()
    graph = torch.export.export(spec.module, (torch.from_numpy(x[:16]),)).module()  # batches of 16 below
    eager, d_eager = correct_module_bias(spec.module, calib.batches(16))
    fx, d_fx = correct_module_bias(graph, calib.batches(16))
    assert d_eager["layers"] == d_fx["layers"] == 3
    for name in ("dw.bias", "pw.bias", "fc.bias"):
        moved = eager.state_dict()[name] - spec.module.state_dict()[name]
        assert moved.abs().max() > 1e-3, name  # the correction did something
        torch.testing.assert_close(fx.state_dict()[name], eager.state_dict()[name], rtol=1e-5, atol=1e-6)
    assert torch.equal(graph.state_dict()["dw.bias"], spec.module.state_dict()["dw.bias"])  # a copy was corrected
    with torch.no_grad():  # and it runs as a graph again (no recording left behind)
        torch.testing.assert_close(fx(torch.from_numpy(x[:16])), eager(torch.from_numpy(x[:16])), rtol=1e-4, atol=1e-4)


def test_a_failed_tflite_correction_quantizes_the_model_as_it_is(tmp_path, monkeypatch):
    import edgecompress.exporters._bias_correction as bc

    def broken(*_a, **_k):
        raise RuntimeError("a graph the recorder cannot run")

    monkeypatch.setattr(bc, "correct_module_bias", broken)
    spec, calib, _x = _spec_and_data()
    art = export(spec, "tflite", "int8", tmp_path, calib, ExportOptions(progress=False))
    assert art.details["calibration"]["bias_correction"] == {"layers": 0, "skipped": "a graph the recorder cannot run"}
    assert art.path.exists() and art.details["mixed"] is False


def test_qat_trained_weights_are_not_corrected_again(tmp_path, digits_spec, digits_calib):
    """PTQ of a QAT model's trained float weights (a format its backend does not lower): their
    biases were trained against the rounding already, so the exporter leaves them and says why."""
    import edgecompress as ec
    from edgecompress.exporters._bias_correction import QAT_SKIP

    # x86 backend, TFLite from the trained weights
    q = ec.qat(digits_spec, data=digits_calib, epochs=1, cross_format="ptq-of-qat-weights", progress=False)
    art = export(q, "tflite", "int8", tmp_path, digits_calib, ExportOptions(progress=False))
    assert art.details["qat"]["route"] == "ptq-of-qat-weights"
    assert art.details["calibration"]["bias_correction"] == QAT_SKIP


@pytest.mark.parametrize("backend", ["x86", "litert"])
def test_qat_starts_from_corrected_biases(backend):
    """QAT corrects its biases after calibration, through each backend's own weight quantizers
    (passes/qat.correct_prepared_bias): the calibrated int8 graph loses most of the biased
    rounding error, and `bias_correction: false` keeps it."""
    import edgecompress as ec

    spec, calib, x = _spec_and_data()
    with torch.no_grad():
        ref = spec.module(torch.from_numpy(x)).numpy()
    err, logs = {}, {}
    for on in (True, False):
        q = ec.qat(spec, data=calib, epochs=0, calib_samples=64, backend=backend, bias_correction=on, progress=False)
        with torch.no_grad():
            err[on] = float(np.abs(q.module(torch.from_numpy(x)).numpy() - ref).mean())
        logs[on] = q.extra["passes"][-1]["log"]
    assert logs[True]["bias_corrected_layers"] == 3 and "bias_corrected_layers" not in logs[False]
    assert err[True] < 0.5 * err[False], err
