"""FastHistogramCollector (exporters/_fast_histogram.py) against ORT's own HistogramCollector."""

from __future__ import annotations

import numpy as np
import pytest
from onnxruntime.quantization.calibrate import HistogramCollector

from edgecompress.exporters._fast_histogram import FastHistogramCollector


def _pair(method: str = "percentile") -> tuple[HistogramCollector, FastHistogramCollector]:
    kw = dict(method=method, symmetric=False, num_bins=512, num_quantized_bins=128, percentile=99.99,
              scenario="same")
    return HistogramCollector(**kw), FastHistogramCollector(**kw)


def _feed(chunks: list[dict[str, list[np.ndarray]]]) -> tuple[HistogramCollector, FastHistogramCollector]:
    ort, ours = _pair()
    for c in chunks:
        ort.collect({k: [a.copy() for a in v] for k, v in c.items()})
        ours.collect(c)
    return ort, ours


def _same(ort: HistogramCollector, ours: FastHistogramCollector) -> None:
    assert ort.histogram_dict.keys() == ours.histogram_dict.keys()
    for name, (h, e, lo, hi, th) in ort.histogram_dict.items():
        h2, e2, lo2, hi2, th2 = ours.histogram_dict[name]
        np.testing.assert_array_equal(e, e2)  # the same bins, grown the same way
        assert e.dtype == e2.dtype and (lo, hi, th) == (lo2, hi2, th2)
        assert h.sum() == h2.sum()
        # only values within rounding of a bin edge may land one bin over
        assert np.abs(h - h2).sum() <= 2e-4 * h.sum() + 2, name


def test_matches_ort_as_ranges_grow_and_shrink():
    rng = np.random.default_rng(0)
    scales = [1.0, 0.5, 3.0, 3.0, 10.0, 0.1]  # first, narrower, wider (grow), same, wider, narrower
    chunks = [{"relu6": [np.clip(rng.normal(2, s, (8, 16, 12, 12)), 0, 6).astype(np.float32) for _ in range(2)],
               "signed": [rng.normal(0, s, (8, 32)).astype(np.float32), rng.normal(1, s, (8, 32)).astype(np.float32)]}
              for s in scales]
    ort, ours = _feed(chunks)
    _same(ort, ours)
    assert len(ours.histogram_dict["signed"][0]) > 512  # the histogram did grow
    a, b = ort.compute_collection_result(), ours.compute_collection_result()
    for name in a:
        width = float(ours.histogram_dict[name][1][1] - ours.histogram_dict[name][1][0])
        assert abs(float(a[name][0]) - float(b[name][0])) <= width
        assert abs(float(a[name][1]) - float(b[name][1])) <= width


def test_batches_of_different_sizes_in_one_chunk():
    # ORT stacks a chunk's arrays and fails on a short last batch; ours counts each where it lies
    rng = np.random.default_rng(2)
    full, short = rng.normal(0, 1, (8, 5)).astype(np.float32), rng.normal(0, 2, (3, 5)).astype(np.float32)
    ort, ours = _pair()
    ort.collect({"t": [np.concatenate([full, short])]})
    ours.collect({"t": [full, short]})
    _same(ort, ours)


def test_entropy_thresholds_match_ort():
    rng = np.random.default_rng(1)
    chunks = [{"t": [rng.laplace(0, 1 + i, (4, 8, 10, 10)).astype(np.float32)]} for i in range(3)]
    ort, ours = _pair("entropy")
    for c in chunks:
        ort.collect(c)
        ours.collect(c)
    _same(ort, ours)
    a, b = ort.compute_collection_result(), ours.compute_collection_result()
    width = float(ours.histogram_dict["t"][1][1] - ours.histogram_dict["t"][1][0])
    assert abs(float(a["t"][1]) - float(b["t"][1])) <= 2 * width


def test_zero_nan_and_float16_chunks_take_orts_path():
    chunks = [{"z": [np.zeros((2, 3), np.float32)], "n": [np.array([1.0, np.nan, -2.0], np.float32)],
               "h": [np.array([0.5, -1.5], np.float16)]},
              {"z": [np.array([[0.0, 4.0, -1.0]], np.float32)], "n": [np.array([3.0, -0.5], np.float32)],
               "h": [np.array([2.5], np.float16)]}]
    ort, ours = _feed(chunks)
    for name in ("z", "n", "h"):
        h, e, lo, hi, th = ort.histogram_dict[name]
        h2, e2, lo2, hi2, th2 = ours.histogram_dict[name]
        np.testing.assert_array_equal(h, h2)
        np.testing.assert_array_equal(e, e2)
        assert (lo, hi, th) == (lo2, hi2, th2)


@pytest.mark.parametrize("extra", [0, 7])
def test_counts_stay_exact_past_float32_integers(extra):
    # torch.histc counts in float32, exact only up to 2**24: one bin gets more than that here
    n = (1 << 24) + extra + 3
    a = np.zeros(n, np.float32)
    a[:3] = [1.0, -1.0, 0.25]
    ours = FastHistogramCollector(method="percentile", symmetric=False, num_bins=8, num_quantized_bins=4,
                                  percentile=99.0, scenario="same")
    ours.collect({"t": [a]})
    hist = ours.histogram_dict["t"][0]
    assert hist.sum() == n
    assert hist.max() == n - 3  # the zeros, counted one by one
