"""TFLite on digits-cnn: fp32 equals PyTorch, full-int8 agrees and is really full-integer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgecompress.errors import ExportError
from edgecompress.exporters import ExportOptions, export
from edgecompress.targets import ValidateSettings, validate

FAST = ValidateSettings(threads=1, batches=(1,), warmup=2, runs=10)


@pytest.fixture(scope="module")
def tfl(tmp_path_factory, digits_spec, digits_calib, digits_eval, digits_reference):
    out = tmp_path_factory.mktemp("tflite")
    arts = [export(digits_spec, "tflite", p, out, digits_calib) for p in ("fp32", "fp16", "dynamic-int8", "int8")]
    ms = validate(arts, "x86-local", digits_eval, digits_reference, FAST, progress=False)
    return {a.precision: (a, m) for a, m in zip(arts, ms, strict=True)}


def test_fp32_equals_pytorch(tfl):
    art, m = tfl["fp32"]
    assert m.status == "ok", m.error
    assert m.drift["cosine"] >= 0.9999 and m.drift["top1_agreement"] == 1.0
    assert art.inputs[0].layout == "NHWC" and art.inputs[0].shape == [1, 8, 8, 1]


def test_full_int8_agrees_and_is_integer(tfl):
    art, m = tfl["int8"]
    assert m.status == "ok", m.error
    assert m.drift["top1_agreement"] >= 0.97, m.drift
    assert art.details["float_ops"] == [] and not art.details["mixed"]
    assert art.inputs[0].dtype == "int8" and art.outputs[0].dtype == "int8"
    assert art.inputs[0].scale and art.inputs[0].zero_point is not None
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"} <= set(art.details["ops"])
    assert "TRANSPOSE" not in art.details["ops"]
    assert art.size_bytes < 0.5 * tfl["fp32"][0].size_bytes
    # conv weights per-channel: one scale per output channel (per-tensor cost EfficientNet accuracy)
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(art.path))
    convs = [t for t in it.get_tensor_details() if t["dtype"].__name__ == "int8" and len(t["shape"]) == 4
             and t["name"] != it.get_input_details()[0]["name"] and len(t["quantization_parameters"]["scales"]) > 0]
    weights = [t for t in convs if len(t["quantization_parameters"]["scales"]) > 1]
    assert len(weights) >= 3  # the digits net's convolutions
    qp = "quantization_parameters"  # (a depthwise kernel is 1 x h x w x C: its channels are the last axis)
    assert weights and all(len(t[qp]["scales"]) == t["shape"][t[qp]["quantized_dimension"]] > 1 for t in weights)


def test_other_precisions_run(tfl):
    for p in ("fp16", "dynamic-int8"):
        _, m = tfl[p]
        assert m.status == "ok" and m.drift["top1_agreement"] >= 0.97, (p, m.error, m.drift)


class _WithErf(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.erf(self.conv(x))  # no int8 kernel: stays float
        return self.fc(y.mean((2, 3)))


def test_full_int8_check_rejects_float_ops(tmp_path, digits_calib):
    from edgecompress.models import load_model

    spec = load_model(_WithErf(), input_shape=(1, 1, 8, 8), name="erfnet")
    with pytest.raises(ExportError, match=r"tflite int8 of erfnet: .*stayed float") as err:
        export(spec, "tflite", "int8", tmp_path, digits_calib)
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    assert str(err.value).count("accepts") == 1  # one remedy, not two (the converter and exporter each added one)
    art = export(spec, "tflite", "int8", tmp_path, digits_calib, ExportOptions(allow_mixed=True))
    assert art.details["mixed"] and art.details["float_ops"]


class _DropoutHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1, stride=2)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv2(torch.relu(self.conv1(x)))).mean((2, 3))
        return self.fc(self.drop(x))


def test_full_int8_with_dropout_before_a_linear(tmp_path, digits_calib, digits_eval):
    """An eval-mode Dropout before the classifier gave a .tflite whose int8 logits were about twice
    the fp32 ones (0 % top-1 agreement, reported ok): the exporter now drops inference dropout."""
    from edgecompress.models import load_model
    from edgecompress.targets import reference_outputs

    torch.manual_seed(0)
    spec = load_model(_DropoutHead(), input_shape=(1, 1, 8, 8), name="drophead")
    art = export(spec, "tflite", "int8", tmp_path, digits_calib)
    (m,) = validate([art], "x86-local", digits_eval, reference_outputs(spec.module, digits_eval), FAST,
                    progress=False)
    assert m.status == "ok", m.error
    assert m.drift["cosine"] >= 0.999 and m.drift["top1_agreement"] >= 0.9, m.drift  # was 0.96 / 0.0


def test_report_gives_the_int8_io_contract(tfl):
    from edgecompress.report import Report, artifact_row
    from edgecompress.report.render import to_html, to_markdown

    _, m = tfl["int8"]
    report = Report(model={"name": "digits-cnn"}, target="x86-local", artifacts=[artifact_row(m.to_dict())])
    md = to_markdown(report, None)
    scale = m.artifact["inputs"][0]["scale"]
    assert "int8[1x8x8x1] NHWC" in md and f"scale {scale:.6g}" in md, md
    assert "zero point" in to_html(report)


# --- [issue #4] QAT with the litert backend -> full-int8 TFLite ------------------------------------
@pytest.fixture(scope="module")
def litert_qat(digits_spec, digits_calib):
    import edgecompress

    return edgecompress.qat(digits_spec, epochs=1, backend="litert", data=digits_calib, progress=False)


def test_qat_litert_exports_full_int8_tflite(litert_qat, digits_spec, digits_eval, tmp_path):
    from edgecompress.exporters import _litert_convert as lc

    assert litert_qat.extra["quantized"] == "qat" and litert_qat.extra["qat_quantizer"] == "litert"
    art = export(litert_qat, "tflite", "int8", tmp_path)  # no calibration set: QAT ranges are in the graph
    assert art.details["calibration"]["samples"] == 0
    # every op but the boundary QUANTIZE/DEQUANTIZE has int8 tensors and none stays float
    assert art.details["float_ops"] == [] and not art.details["mixed"]
    inner = {k: v for k, v in art.details["ops"].items() if k not in ("QUANTIZE", "DEQUANTIZE")}
    assert inner and all(art.details["int8_ops"].get(k) == v for k, v in inner.items()), art.details
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"} <= set(inner)
    assert art.inputs[0].dtype == "int8" and art.outputs[0].dtype == "int8"
    assert art.inputs[0].layout == "NHWC" and art.inputs[0].scale
    out = lc.run(art.path, digits_eval.x)  # ai-edge-litert interpreter (XNNPACK)
    with torch.no_grad():
        ref = digits_spec.module.eval()(torch.from_numpy(digits_eval.x)).numpy()
        qat_torch = litert_qat.module(torch.from_numpy(digits_eval.x)).numpy()
    assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.97
    assert (out.argmax(1) == qat_torch.argmax(1)).mean() >= 0.97  # the .tflite runs what QAT trained


def test_qat_litert_model_exports_int8_onnx_and_openvino_by_ptq(litert_qat, digits_spec, digits_calib,
                                                                  digits_eval, tmp_path):
    # [issue #4] a litert QAT graph in ONNX would keep fp32 weights behind Q->Clip->DQ: ONNX and
    # OpenVINO run their own PTQ instead (of the QAT-trained float weights if asked), and say so
    import onnx
    import onnxruntime as ort

    from edgecompress.errors import ConfigError, DataError

    with pytest.raises(DataError, match=r"^onnx int8: needs calibration data"):
        export(litert_qat, "onnx", "int8", tmp_path)
    with pytest.raises(ConfigError, match="already int8"):
        export(litert_qat, "tflite", "fp32", tmp_path)
    assert list(tmp_path.iterdir()) == []
    with torch.no_grad():
        ref = digits_spec.module.eval()(torch.from_numpy(digits_eval.x)).numpy()
    on_weights = litert_qat.replace(extra={**litert_qat.extra, "qat_cross_format": "ptq-of-qat-weights"})
    art = export(on_weights, "onnx", "int8", tmp_path, digits_calib)
    assert art.details["qat"] == {**art.details["qat"], "route": "ptq-of-qat-weights", "qat_backend": "litert"}
    m = onnx.load(str(art.path))
    assert sum(i.data_type == onnx.TensorProto.INT8 for i in m.graph.initializer) >= 6  # real int8 weights
    sess = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: digits_eval.x})[0]
    assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.97
    ov_art = export(litert_qat, "openvino", "int8", tmp_path / "ov", digits_calib)
    assert ov_art.details["qat"]["route"] == "ptq-of-float"  # the default


def test_qat_spec_without_trained_weights_is_refused_in_one_line(digits_spec, tmp_path):
    # a spec marked QAT but without `qat_float` (made by hand, or by an older edgecompress)
    from edgecompress.errors import ConfigError

    x86 = digits_spec.replace(extra={**digits_spec.extra, "quantized": "qat", "qat_quantizer": "x86"})
    with pytest.raises(ConfigError, match=r"^tflite export of digits-cnn: .*'x86'.*backend: litert$"):
        export(x86, "tflite", "int8", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_qat_backend_is_validated():
    import edgecompress
    from edgecompress.errors import ConfigError
    from edgecompress.passes._common import make_config
    from edgecompress.passes.qat import QATConfig
    from edgecompress.recipe import parse_recipe

    with pytest.raises(ConfigError, match=r"^qat\.backend: unknown QAT backend 'tflite' \(choices: litert, x86\)$"):
        edgecompress.qat(torch.nn.Linear(2, 2), backend="tflite")
    with pytest.raises(ConfigError, match=r"^recipe: passes\[0\]\.qat\.backend: unknown QAT backend 'bogus'"):
        parse_recipe({"model": "zoo:digits-cnn", "passes": [{"qat": {"backend": "bogus"}}]})
    # [issue #4] every format follows a QAT pass: the others quantize the QAT-trained weights
    parse_recipe({"model": "zoo:digits-cnn", "passes": [{"qat": {}}], "export": ["tflite:int8", "onnx:int8"]})
    r = parse_recipe({"model": "zoo:digits-cnn", "passes": [{"qat": {"backend": "litert"}}], "export": ["tflite:int8"]})
    assert r.resolved()["passes"][0]["qat"]["backend"] == "litert"
    # `quantizer` is the key's old name: resolved recipes written before `backend` still load
    assert make_config(QATConfig, {"quantizer": "x86"}, "qat").backend == "x86"
    assert make_config(QATConfig, {"quantizer": "litert"}, "qat").backend == "litert"
    with pytest.raises(ConfigError, match=r"^qat\.quantizer: 'x86' contradicts backend 'litert'"):
        make_config(QATConfig, {"backend": "litert", "quantizer": "x86"}, "qat")


def test_qat_litert_weight_scales_are_ptq_scales(digits_spec, digits_calib):
    # [issue #4] litert weights span [-127, 127]; the fused fake-quant kernel's symmetric formula
    # gave absmax/127 * 255/254 there, which made calibrated EfficientNet-Lite0 drift more than PTQ.
    # Trained and converted with absmax/127, as litert-torch's PTQ observer computes it.
    import operator

    from edgecompress.passes import _litert_qat
    from edgecompress.passes import qat as qat_mod

    cfg = qat_mod.QATConfig(epochs=0, backend="litert")
    prepared = _litert_qat.prepare(digits_spec.module, digits_spec.example_inputs(2), cfg)
    qat_mod.train_prepared(prepared, digits_spec.module, digits_calib, cfg, progress=False)
    qat_mod.pin_qparams(prepared, digits_calib.x[:2])
    checked = 0
    for node in prepared.graph.nodes:
        if node.op != "call_module" or node.args[0].op != "get_attr":
            continue
        f = prepared.get_submodule(node.target)
        w = operator.attrgetter(node.args[0].target)(prepared)
        if not f.is_symmetric_quant or w.dim() < 2:
            continue
        assert (f.quant_min, f.quant_max) == (-127, 127)
        absmax = w.detach().abs().flatten(1).amax(1)
        scale, zero_point = f.calculate_qparams()  # what convert_pt2e uses (pinned)
        torch.testing.assert_close(scale, (absmax / 127).clamp(min=2**-14), rtol=1e-5, atol=0)
        assert int(zero_point.abs().max()) == 0
        checked += 1
    assert checked == 8  # 6 convs + 2 linears


def test_io_read_back_from_the_file(tfl):
    """`validate` of a loose .tflite reads its I/O contract from the file: the same as the exporter's."""
    from edgecompress.exporters import FORMATS

    art, _ = tfl["int8"]
    ins, outs = FORMATS.get("tflite").read_io(art.path)
    assert [(t.shape, t.dtype, t.layout, t.scale, t.zero_point) for t in ins] == \
        [(list(t.shape), t.dtype, t.layout, t.scale, t.zero_point) for t in art.inputs]
    assert ins[0].layout == "NHWC" and ins[0].dtype == "int8" and ins[0].scale > 0
    assert [t.shape for t in outs] == [list(t.shape) for t in art.outputs]


def test_estimator_counts_tflite_layers_like_onnx(tfl, digits_spec, tmp_path):
    """The roofline estimate of a .tflite costs the same MACs as the ONNX file of the same model
    (LiteRT's np.int32 shapes were read as dynamic dims: 150 MACs instead of 1.57 M)."""
    from edgecompress.exporters import export
    from edgecompress.targets.estimate import layers_from_onnx, layers_from_tflite

    onnx = export(digits_spec, "onnx", "fp32", tmp_path)
    for precision in ("fp32", "int8"):
        art, _ = tfl[precision]
        macs = sum(layer.macs for layer in layers_from_tflite(art.path))
        assert macs == sum(layer.macs for layer in layers_from_onnx(onnx.path)) > 1_000_000
        assert isinstance(macs, int)
    assert tfl["fp32"][0].details["mixed"] is False  # all float is not "mixed"
    assert tfl["int8"][0].details["mixed"] is False


class _Attention(nn.Module):
    """LayerNorm + multi-head attention: the converted graph fixes batch 1 (XNNPACK cannot reshape it)."""

    def __init__(self) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(32)
        self.mha = nn.MultiheadAttention(32, 4, batch_first=True)
        self.head = nn.Linear(32, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln(x)
        a, _ = self.mha(h, h, h, need_weights=False)
        return self.head((x + a).mean(1))


def test_a_batch_the_graph_cannot_take_fails_alone(tmp_path):
    """`--batch 4` on a .tflite that fixes batch 1: only batch 4 carries the error; batch 1 and the
    evaluation still run (the runner resized back to 1 after the failed resize)."""
    import json

    import numpy as np

    from edgecompress.exporters import _litert_convert as lc
    from edgecompress.targets import bench

    torch.manual_seed(0)
    model = _Attention().eval()
    path = tmp_path / "attn.tflite"
    lc.convert(model, torch.randn(1, 16, 32), "fp32", path, channels_last_io=False)
    x = np.random.default_rng(0).standard_normal((3, 16, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = bench.main([str(path), "--runtime", "litert", "--batches", "1,4", "--runs", "3", "--warmup", "1",
                         "--inputs", str(tmp_path / "x.npy"), "--outputs", str(tmp_path / "y.npy")])
    res = json.loads(buf.getvalue().strip().splitlines()[-1])
    assert rc == 0
    assert res["latency_ms"]["1"]["p50"] > 0 and "error" in res["latency_ms"]["4"]
    y = np.load(tmp_path / "y.npy")
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert y.shape == (3, 6) and np.allclose(y, ref, atol=1e-4)


def test_no_progress_means_no_converter_steps_on_stdout(tmp_path, digits_spec, digits_calib, capfd, monkeypatch):
    """`ExportOptions(progress=False)` from Python still printed litert-torch's 34 step lines."""
    import os

    monkeypatch.delenv("LITERT_TORCH_SHOW_PROGRESS", raising=False)
    export(digits_spec, "tflite", "int8", tmp_path, digits_calib, ExportOptions(progress=False))
    assert "LiteRT-Torch Convert" not in capfd.readouterr().out
    assert "LITERT_TORCH_SHOW_PROGRESS" not in os.environ  # put back as it was


class _ReshapedHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1, stride=2)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(x.mean((2, 3))[:, :, None].flatten(1))


def test_a_wrongly_lowered_int8_file_is_refused(tmp_path, digits_calib):
    """litert-torch lowers `dequantize -> unsqueeze -> flatten -> quantize` (two scales) as if the
    scale did not change: the file was 2.3x off on every sample (0 % agreement), reported ok. The
    exporter now runs the file against the quantized PyTorch graph it came from."""
    from edgecompress.models import load_model

    torch.manual_seed(0)
    spec = load_model(_ReshapedHead(), input_shape=(1, 1, 8, 8), name="reshaped")
    with pytest.raises(ExportError, match=r"disagrees with its own quantized PyTorch graph \(mean \|diff\| .* = \d+ "
                                          r"output steps on 16 calibration samples\)"):
        export(spec, "tflite", "int8", tmp_path, digits_calib)
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    assert export(spec, "tflite", "fp32", tmp_path, digits_calib).precision == "fp32"  # fp32 lowers right


def test_full_int8_refuses_float_io(monkeypatch, tmp_path, digits_spec, digits_calib):
    """A full-int8 file whose input or output stayed float is not full-integer: refused, nothing written."""
    import edgecompress.exporters._litert_convert as lc
    from edgecompress.errors import ExportError

    real = lc.inspect

    def float_io(path):  # type: ignore[no-untyped-def]
        info = real(path)
        info["inputs"][0]["dtype"] = "float32"
        return info

    monkeypatch.setattr(lc, "inspect", float_io)
    with pytest.raises(ExportError, match="float I/O"):
        export(digits_spec, "tflite", "int8", tmp_path, digits_calib)
    assert list(tmp_path.iterdir()) == []


class _ChannelsLast(nn.Module):
    """Takes NHWC images (an app's camera buffer) and permutes inside."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x.permute(0, 3, 1, 2))).mean((2, 3)))


def test_a_model_taking_channels_last_keeps_its_input_layout(tmp_path):
    """A [1, 8, 8, 3] (NHWC) model became a [1, 8, 3, 8] .tflite labelled NHWC: the exporter turned
    its input around once more, and only a meaningless transpose fed it right (audit 21A)."""
    import numpy as np

    from edgecompress.data import load_data
    from edgecompress.models import load_model
    from edgecompress.targets import reference_outputs

    torch.manual_seed(0)
    spec = load_model(_ChannelsLast(), input_shape=(1, 8, 8, 3), name="nhwc")
    x = np.random.default_rng(0).standard_normal((32, 8, 8, 3)).astype("float32")
    data = load_data(x)
    arts = [export(spec, "tflite", p, tmp_path, data) for p in ("fp32", "int8")]
    onnx = export(spec, "onnx", "fp32", tmp_path, data)
    assert [a.inputs[0].shape for a in arts] == [[1, 8, 8, 3]] * 2
    assert {a.inputs[0].layout for a in [*arts, onnx]} == {""}  # as the model takes it: no NCHW / NHWC claim
    ms = validate(arts, "x86-local", data, reference_outputs(spec, data), FAST, progress=False)
    assert [m.status for m in ms] == ["ok", "ok"], [m.error for m in ms]
    assert ms[0].drift["cosine"] >= 0.9999 and ms[1].drift["top1_agreement"] >= 0.9
