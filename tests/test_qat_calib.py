"""QAT's starting ranges: the calibration method of the PTQ it is compared with (issue #4)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from edgecompress.errors import ConfigError
from edgecompress.passes import qat as qat_mod
from edgecompress.passes._qat_backends import QAT_BACKENDS


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def _data() -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (64, 4, 6, 6)).astype(np.float32)
    x[3, 0, 0, 0] = 40.0  # one outlier: min / max keeps it, a 99.9th percentile range does not
    return x


def _input_range(method: str, percentile: float = 99.999) -> tuple[float, float, list[tuple[float, float]]]:
    torch.manual_seed(0)
    prepared = qat_mod.prepare(copy.deepcopy(_Net()), (torch.zeros(2, 4, 6, 6),), qat_mod.QATConfig())
    first: list[object] = []  # the quantizer of the graph input: the first activation fake-quant called

    def pre(f: object, args: tuple) -> None:
        if not first and not isinstance(args[0], nn.Parameter):
            first.append(f)

    handles = [f.register_forward_pre_hook(pre) for f in qat_mod.fake_quantizers(prepared)]
    with torch.no_grad():
        prepared(torch.zeros(1, 4, 6, 6))
    for h in handles:
        h.remove()
    qat_mod.calibrate(prepared, _data(), 16, method, percentile)
    o = first[0].activation_post_process  # type: ignore[attr-defined]
    weights = [(float(f.activation_post_process.min_val.min()), float(f.activation_post_process.max_val.max()))
               for f in qat_mod.fake_quantizers(prepared)
               if f.activation_post_process.qscheme not in (torch.per_tensor_affine, torch.per_tensor_symmetric)]
    return float(o.min_val), float(o.max_val), weights


def test_percentile_start_matches_onnx_runtimes_percentile_calibrator() -> None:
    from onnxruntime.quantization.calibrate import HistogramCollector

    x = _data()
    lo_mm, hi_mm, w_mm = _input_range("minmax")
    assert lo_mm < -2  # the normal samples reach below -2
    assert hi_mm == pytest.approx(40.0)
    lo, hi, w = _input_range("percentile", 99.9)
    # ORT's own collector (not ours), fed the same input in the same batches of 16
    ref = HistogramCollector("percentile", False, 2048, 128, 99.9, "same")
    for i in range(0, len(x), 16):
        ref.collect({"x": [x[i : i + 16]]})
    want = ref.compute_collection_result()["x"]
    assert hi < 10 < hi_mm  # the outlier is cut
    assert lo == pytest.approx(float(want[0]), rel=1e-4, abs=1e-4)
    assert hi == pytest.approx(float(want[1]), rel=1e-4, abs=1e-4)
    assert w == w_mm  # weights keep min / max, as ORT's calibrators leave weights alone


def test_qat_log_records_the_backends_ptq_method(digits_spec, digits_calib) -> None:
    assert QAT_BACKENDS.get("x86").ptq_calib == "percentile"  # the ONNX exporter's default
    assert QAT_BACKENDS.get("litert").ptq_calib == "minmax"  # the TFLite exporter's observers
    import edgecompress

    q = edgecompress.qat(digits_spec, epochs=0, calib_samples=64, data=digits_calib, progress=False)
    assert q.extra["passes"][-1]["log"]["calib_method"] == "percentile"
    q = edgecompress.qat(digits_spec, epochs=0, calib_samples=64, calib_method="minmax", data=digits_calib,
                         progress=False)
    assert q.extra["passes"][-1]["log"]["calib_method"] == "minmax"


@pytest.mark.parametrize(("key", "value", "match"), [
    ("calib_method", "histogram", "qat.calib_method: 'histogram' is not one of minmax, percentile, entropy"),
    ("percentile", 0, "qat.percentile"),
    ("percentile", 101, "qat.percentile"),
])
def test_qat_calib_settings_are_checked(key: str, value: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        qat_mod.QATConfig(**{key: value})


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_histogram_calibration_prints_nothing(method: str, capfd: pytest.CaptureFixture[str]) -> None:
    """ORT's histogram collectors print "Collecting tensor data and making histogram ...", "Finding
    optimal threshold ..." and their settings to stdout, per fake-quantizer: ~60 lines of a digits
    recipe's log (`edgecompress run docs/recipes/digits-minimal.yaml`) and, from Python, on the
    caller's stdout. The ONNX exporter silenced them already; QAT's calibration did not."""
    _input_range(method)
    out, err = capfd.readouterr()
    assert "histogram" not in out + err and "optimal threshold" not in out + err, (out + err)[:500]
