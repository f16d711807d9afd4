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
    with pytest.raises(ExportError, match=r"tflite int8 of erfnet: .*stayed float"):
        export(spec, "tflite", "int8", tmp_path, digits_calib)
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    art = export(spec, "tflite", "int8", tmp_path, digits_calib, ExportOptions(allow_mixed=True))
    assert art.details["mixed"] and art.details["float_ops"]


def test_report_gives_the_int8_io_contract(tfl):
    from edgecompress.report import Report, artifact_row
    from edgecompress.report.render import to_html, to_markdown

    _, m = tfl["int8"]
    report = Report(model={"name": "digits-cnn"}, target="x86-local", artifacts=[artifact_row(m.to_dict())])
    md = to_markdown(report, None)
    scale = m.artifact["inputs"][0]["scale"]
    assert "int8[1x8x8x1] NHWC" in md and f"scale {scale:.6g}" in md, md
    assert "zero point" in to_html(report)
