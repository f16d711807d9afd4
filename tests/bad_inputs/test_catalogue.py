"""Bad-input catalogue: each case names the culprit in one line, exits non-zero, writes nothing.

Table-driven over the CLI (as build pipelines call it). Each row: arguments, expected exit code,
a fragment the one-line message must contain. `{tmp}` is a fresh directory with fixtures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, run_cli

DIGITS = ["zoo:digits-cnn"]


def _fixtures(tmp: Path) -> None:
    (tmp / "empty").mkdir()
    (tmp / "corrupt.onnx").write_bytes(b"\x08\x07garbage-not-onnx" * 10)
    (tmp / "truncated.pt2").write_bytes(b"PK\x03\x04" + b"\x00" * 20)
    bad_img = tmp / "badimg"
    bad_img.mkdir()
    (bad_img / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png")
    np.save(tmp / "nan.npy", np.full((4, 1, 8, 8), np.nan, np.float32))
    np.save(tmp / "wrongshape.npy", np.zeros((4, 3, 8, 8), np.float32))
    np.save(tmp / "zero.npy", np.zeros((0, 1, 8, 8), np.float32))
    (tmp / "afile").write_text("x")
    csvdir = tmp / "csvset"
    csvdir.mkdir()
    (csvdir / "labels.csv").write_text("filename,class_index\nmissing.png,1\n")
    import argparse

    import torch

    # A checkpoint that needs pickle beyond tensors: weights_only=True must refuse it.
    torch.save({"conv.weight": torch.zeros(4, 3, 3, 3), "cfg": argparse.Namespace(a=1)}, tmp / "pickle.pt")
    (tmp / "garbage.pt").write_bytes(b"not a checkpoint at all")


CASES = [
    # (id, args, exit code, fragment of the message)
    ("missing-onnx", ["{tmp}/nope.onnx", "--no-validate", "--out", "{out}"], 2, "nope.onnx: no such file"),
    ("corrupt-onnx", ["{tmp}/corrupt.onnx", "--no-validate", "--out", "{out}"], 2, "corrupt.onnx: not a valid ONNX"),
    ("truncated-pt2", ["{tmp}/truncated.pt2", "--no-validate", "--out", "{out}"], 2, "truncated.pt2: not a readable"),
    ("bare-checkpoint", ["{tmp}/model.pt", "--out", "{out}"], 2, "bare checkpoint has no architecture"),
    ("factory-missing-module", ["nosuchpkg.mod:build", "--input-shape", "1,3,8,8", "--out", "{out}"], 2,
     "cannot import module 'nosuchpkg.mod'"),
    ("factory-not-callable", ["tests.bad_inputs.badmodels:NOT_CALLABLE", "--input-shape", "1,3,8,8", "--out", "{out}"],
     2, "'NOT_CALLABLE' is a int, not callable"),
    ("factory-raises", ["tests.bad_inputs.badmodels:raises", "--input-shape", "1,3,8,8", "--out", "{out}"], 2,
     "factory exploded"),
    ("factory-not-module", ["tests.bad_inputs.badmodels:not_a_module", "--input-shape", "1,3,8,8", "--out", "{out}"],
     2, "returned str, not a torch.nn.Module"),
    ("wrong-input-shape", ["tests.bad_inputs.badmodels:tiny", "--input-shape", "1,5,8,8", "--out", "{out}"], 2,
     "input shape (1, 5, 8, 8) does not fit model tiny"),
    ("bad-shape-text", ["tests.bad_inputs.badmodels:tiny", "--input-shape", "1,three", "--out", "{out}"], 2,
     "--input-shape '1,three'"),
    ("empty-calib-folder", [*DIGITS, "--int8", "--calib", "{tmp}/empty", "--out", "{out}"], 2,
     "empty: no images found"),
    ("unreadable-image", [*DIGITS, "--int8", "--calib", "{tmp}/badimg", "--preprocess", "gray-unit", "--out", "{out}"],
     2, "a.png: cannot read image"),
    ("missing-calib", [*DIGITS, "--int8", "--calib", "{tmp}/nothere", "--out", "{out}"], 2,
     "nothere: no such file or directory"),
    ("nan-calib", [*DIGITS, "--int8", "--calib", "{tmp}/nan.npy", "--out", "{out}"], 2, "contains NaN or Inf"),
    ("zero-calib", [*DIGITS, "--int8", "--calib", "{tmp}/zero.npy", "--out", "{out}"], 2, "holds no samples"),
    ("calib-shape", [*DIGITS, "--int8", "--calib", "{tmp}/wrongshape.npy", "--out", "{out}"], 2,
     "samples have shape (3, 8, 8) but the model takes (1, 8, 8)"),
    ("empty-range", [*DIGITS, "--int8", "--calib", "{tmp}/wrongshape.npy[10:20]", "--out", "{out}"], 2,
     "holds no samples"),
    ("csv-unknown-file", [*DIGITS, "--int8", "--calib", "{tmp}/csvset", "--out", "{out}"], 2,
     "labels.csv:2: image 'missing.png' not found"),
    ("unknown-format", [*DIGITS, "-f", "coreml", "--out", "{out}"], 2, "--format unknown format 'coreml'"),
    ("unknown-precision", [*DIGITS, "-f", "onnx:int4", "--out", "{out}"], 2, "onnx supports precisions fp32, int8"),
    ("unknown-calib-method", [*DIGITS, "--int8", "--calib-method", "magic", "--out", "{out}"], 2,
     "--calib-method 'magic'"),
    ("unknown-target", [*DIGITS, "--target", "pdp11", "--out", "{out}"], 2, "--target 'pdp11': unknown target"),
    ("unknown-zoo", ["zoo:resnet9000", "--out", "{out}"], 2, "unknown zoo model 'resnet9000'"),
    ("unknown-preset", [*DIGITS, "--preprocess", "sepia", "--int8", "--calib", "{tmp}/badimg", "--out", "{out}"], 2,
     "unknown preprocessing preset 'sepia'"),
    ("out-not-writable", [*DIGITS, "--out", "{tmp}/afile/sub"], 2, "cannot create directory"),
    ("pickle-checkpoint", ["tests.bad_inputs.badmodels:tiny", "--input-shape", "1,3,8,8", "--weights",
                           "{tmp}/pickle.pt", "--out", "{out}"], 2, "refused, it needs pickle beyond plain tensors"),
    ("garbage-checkpoint", ["tests.bad_inputs.badmodels:tiny", "--input-shape", "1,3,8,8", "--weights",
                            "{tmp}/garbage.pt", "--out", "{out}"], 2, "garbage.pt: not a readable PyTorch checkpoint"),
    ("missing-weights", ["tests.bad_inputs.badmodels:tiny", "--input-shape", "1,3,8,8", "--weights",
                         "{tmp}/none.pt", "--out", "{out}"], 2, "none.pt: no such file"),
    ("unexportable-op", ["tests.bad_inputs.badmodels:unexportable", "--input-shape", "1,3,8,8", "--no-validate",
                         "--out", "{out}"], 3, "onnx export of unexportable failed: unsupported op prims.bessel_j0"),
]


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    _fixtures(d)
    (d / "model.pt").write_bytes(b"\x80\x02}q\x00.")
    return d


@pytest.mark.parametrize("case_id,args,code,fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input(tmp, tmp_path, case_id, args, code, fragment):
    out = tmp_path / "out"
    argv = ["export", *(a.format(tmp=tmp, out=out) for a in args)]
    proc = run_cli(*argv, cwd=ROOT)
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("error:")]
    assert proc.returncode == code, (proc.returncode, proc.stderr[-2000:])
    assert len(lines) == 1, proc.stderr[-2000:]
    assert fragment in lines[0], lines[0]
    left = [p for p in out.rglob("*")] if out.exists() else []
    assert left == [], f"{case_id} left files behind: {left}"
