"""tests/typing_usage.py's calls run (mypy checks the same file through .ci/typecheck.py): what the
annotations admit, the functions take, on digits-size (1, 8, 8) data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from tests import typing_usage as usage

pytestmark = pytest.mark.usefixtures("one_thread")


def test_every_data_form_loads_the_same_samples(tmp_path: Path) -> None:
    x, y = usage.samples()
    npz = tmp_path / "d.npz"
    np.savez(npz, x=x, y=y)
    sets = usage.data_forms(x, y, npz)
    for ds in sets:
        assert not isinstance(ds.x, dict)
        n = len(ds)
        assert np.array_equal(ds.x, x[:n]), ds.source
        assert ds.y is None or np.array_equal(ds.y, y[:n]), ds.source
    assert [len(ds) for ds in sets] == [32, 32, 8, 8, *[32] * 8]


def test_model_forms_and_names() -> None:
    specs = usage.model_forms()
    assert [s.input_shape for s in specs] == [usage.SHAPE] * 5
    assert [s.inputs[0].name for s in specs] == ["pixels"] * 3 + ["image"] * 2
    assert specs[3].output_names == ["logits"] and specs[4].preprocess == "imagenet"


def test_passes_export_validate_and_job(tmp_path: Path) -> None:
    x, y = usage.samples()
    small = usage.compress(usage.Tiny(), x, y)
    assert small.input_shape == usage.SHAPE
    ms = usage.export_and_validate(small, x, y, tmp_path)
    assert [m.status for m in ms] == ["ok", "ok"] and ms[0].drift["top1_agreement"] == 1.0
    assert (tmp_path / "report" / "report.json").is_file() and (tmp_path / "job" / "manifest.json").is_file()
    (path,) = (tmp_path / "job").glob("*.onnx")
    assert [i.name for i in onnx.load(str(path)).graph.input] == ["pixels"]
