"""Models in: module:factory (+weights), .pt2 ExportedProgram, .onnx (export-only), via the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgecompress.models import load_model
from tests.conftest import ROOT, run_cli


def test_factory_with_weights_and_pt2(tmp_path, digits_spec):
    from tests.bad_inputs.badmodels import tiny

    m = tiny()
    torch.save(m.state_dict(), tmp_path / "w.pt")
    spec = load_model("tests.bad_inputs.badmodels:tiny", "1,3,8,8", tmp_path / "w.pt")
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(spec.module(x), m(x))  # the weights were loaded, not the random init

    batch = torch.export.Dim("batch")
    ep = torch.export.export(digits_spec.module, digits_spec.example_inputs(2), dynamic_shapes=({0: batch},))
    torch.export.save(ep, tmp_path / "digits.pt2")
    spec2 = load_model(str(tmp_path / "digits.pt2"))
    assert spec2.input_shape == (1, 1, 8, 8)
    xd = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(spec2.module(xd), digits_spec.module(xd), atol=1e-5)

    # ... and exports (every exporter calls .eval(), which a loaded .pt2's module refused)
    from edgecompress.models.digits import digits_npz

    out = tmp_path / "pt2-out"
    proc = run_cli("export", str(tmp_path / "digits.pt2"), "-f", "onnx", "-f", "tflite", "--eval",
                   f"{digits_npz('test')}[:64]", "--runs", "3", "--warmup", "1", "--out", str(out), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the TFLite converter's C++ start-up lines (absl, oneDNN) are not the CLI's to print
    assert "absl::InitializeLog" not in proc.stderr and "oneDNN" not in proc.stderr, proc.stderr[:2000]
    arts = json.loads((out / "report.json").read_text())["artifacts"]
    assert {a["format"] for a in arts} == {"onnx", "tflite"}
    assert all(a["status"] == "ok" and a["drift"]["cosine"] >= 0.9999 for a in arts), arts

    # a program of two inputs is refused in one line (the loader takes single-input programs)
    class Two(torch.nn.Module):
        def forward(self, a, b):
            return a + b

    torch.export.save(torch.export.export(Two(), (torch.ones(1, 2), torch.ones(1, 2))), tmp_path / "two.pt2")
    from edgecompress.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="takes 2 inputs"):
        load_model(str(tmp_path / "two.pt2"))
    # a fixed batch other than 1 is refused with the fix, not a converter's guard error
    torch.export.save(torch.export.export(digits_spec.module, digits_spec.example_inputs(2)), tmp_path / "b2.pt2")
    with pytest.raises(ModelLoadError, match="fixed batch of 2; re-export it with a dynamic batch"):
        load_model(str(tmp_path / "b2.pt2"))


def test_pt2_and_onnx_exported_at_batch_1(tmp_path, digits_spec):
    """torch.export's default, a fixed batch of 1 (what apps export), was refused. Now it exports
    as it is (its reshapes bake the 1 in), calibrates and evaluates one sample at a time, and the
    report says that --batch 8 was not timed for the files that fix batch 1."""
    from edgecompress.models.digits import digits_npz

    torch.export.save(torch.export.export(digits_spec.module, digits_spec.example_inputs(1)), tmp_path / "b1.pt2")
    spec = load_model(str(tmp_path / "b1.pt2"))
    xd = torch.rand(5, 1, 8, 8)  # a batch of 5 through a batch-1 program: per sample
    with torch.no_grad():
        assert torch.allclose(spec.module(xd), digits_spec.module(xd), atol=1e-5)
    data = digits_npz("test")
    out = tmp_path / "b1-out"
    proc = run_cli("export", str(tmp_path / "b1.pt2"), "-f", "onnx", "-f", "openvino", "-f", "tflite", "--int8",
                   "--calib", f"{data}[:64]", "--eval", f"{data}[:200]", "--batch", "8", "--runs", "3",
                   "--warmup", "1", "--rounds", "1", "--out", str(out), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    arts = {(a["format"], a["precision"]): a for a in json.loads((out / "report.json").read_text())["artifacts"]}
    assert len(arts) == 6 and all(a["status"] == "ok" for a in arts.values()), arts
    assert all(a["drift"]["top1_agreement"] >= 0.97 for a in arts.values())
    for key in (("onnx", "int8"), ("openvino", "int8")):
        assert arts[key]["io"]["inputs"][0]["shape"][0] == 1  # the file keeps batch 1
        assert list(arts[key]["latency_by_batch"]) == ["1"] and arts[key]["settings"]["batches_skipped"] == [8]
    assert set(arts[("tflite", "int8")]["latency_by_batch"]) == {"1", "8"}  # LiteRT resizes its input
    assert "fixes batch 1" in (out / "report.md").read_text()
    # validate of that directory: its fp32 reference runs one sample at a time too (it fed 8)
    again = tmp_path / "again"
    proc = run_cli("validate", str(out), "--eval", f"{data}[:50]", "--runs", "3", "--warmup", "1", "--rounds", "1",
                   "--out", str(again), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads((again / "report.json").read_text())["artifacts"]
    assert all(r["status"] == "ok" and r["drift"]["top1_agreement"] >= 0.97 for r in rows), rows

    # the fp32 ONNX file it wrote, as a model in: ORT calibration fed it batches of 8 before
    onnx_out = tmp_path / "onnx-in"
    proc = run_cli("export", str(out / "b1-fp32.onnx"), "-f", "onnx", "--int8", "--calib", f"{data}[:64]",
                   "--eval", f"{data}[:100]", "--runs", "3", "--warmup", "1", "--rounds", "1",
                   "--out", str(onnx_out), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((onnx_out / "report.json").read_text())["artifacts"]
    assert [r["status"] for r in rows] == ["ok", "ok"] and rows[1]["drift"]["top1_agreement"] >= 0.97


def test_cli_export_digits_and_onnx_in(tmp_path):
    out = tmp_path / "out"
    proc = run_cli("export", "zoo:digits-cnn", "-f", "onnx", "-f", "openvino", "--int8", "--runs", "5",
                   "--warmup", "1", "--calib-method", "percentile", "--out", str(out), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    got = {(a["format"], a["precision"]): a for a in report["artifacts"]}
    assert set(got) == {("onnx", "fp32"), ("onnx", "int8"), ("openvino", "fp32"), ("openvino", "int8")}
    assert all(a["status"] == "ok" and a["drift"]["top1_agreement"] >= 0.97 for a in got.values())
    assert report["command"].startswith("edgecompress export zoo:digits-cnn")
    # stdout is the answer alone (build scripts read it): ORT's calibrator and NNCF's progress
    # bars print to stdout, and used to land there. Known third-party chatter is silenced.
    assert proc.stdout.splitlines() == [str((out / "report.html").resolve())], proc.stdout[-2000:]
    for chatter in ("Collecting tensor data", "Rollback to RangeEstimatorParametersSet",
                    "torchvision is not installed", "INFO:nncf"):
        assert chatter not in proc.stderr, chatter

    # An ONNX model in: int8 ONNX out, compared against the ONNX model's own fp32 outputs.
    out2 = tmp_path / "out2"
    from edgecompress.models.digits import digits_npz

    proc = run_cli("export", str(out / "digits-cnn-fp32.onnx"), "-f", "onnx:int8", "--calib", str(digits_npz("train")),
                   "--eval", str(digits_npz("test")), "--runs", "5", "--warmup", "1", "--out", str(out2), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r2 = json.loads((out2 / "report.json").read_text())
    (a,) = r2["artifacts"]
    assert a["precision"] == "int8" and a["drift"]["top1_agreement"] >= 0.97
    assert r2["reference"]["top1"] >= 0.97


def test_demo_fallback_data_without_shared(monkeypatch, tmp_path, capsys):
    """Without ../shared, the EfficientNet zoo entry calibrates on crops of sklearn's photos, and
    says so once on stderr (export used to switch silently; only demo printed a note)."""
    monkeypatch.setenv("EDGECOMPRESS_SHARED_DATA", str(tmp_path / "absent"))
    from edgecompress.models import zoo
    from edgecompress.models.zoo import ZOO

    monkeypatch.setattr(zoo, "_noted_no_imagenet", False)
    entry = ZOO.get("efficientnet-lite0")
    spec = entry.default_calib()
    entry.default_eval()
    err = capsys.readouterr().err
    assert err.count("note: shared/data/imagenet-sample-1k not found") == 1 and "drift only, no top-1" in err
    assert spec.path.endswith(".npz")
    x = np.load(spec.path)["x"]
    assert x.shape[1:] == (3, 224, 224) and x.shape[0] >= 100
    assert -1.0 <= x.min() < -0.5 and 0.5 < x.max() <= 1.0  # (x-127)/128 of real photo pixels
    assert x.std() > 0.2  # real image content, not a constant
    # the evaluation crops are other crops: no evaluation input was a calibration input
    ev = entry.default_eval()
    assert ev.path == spec.path and (spec.start, spec.stop) == (0, 128) and (ev.start, ev.stop) == (128, None)
    calib, held = x[:128].reshape(128, -1), x[128:].reshape(len(x) - 128, -1)
    assert len(held) >= 100
    assert not any(np.array_equal(h, c) for h in held for c in calib)


def test_digits_reads_image_files_with_its_own_preset(tmp_path, digits_spec):
    """zoo:digits-cnn reads a folder of digit images without --preprocess (it fell back to the
    3-channel efficientnet-lite preset and refused them)."""
    from PIL import Image

    from edgecompress.models.digits import digits_npz
    from edgecompress.passes._common import evaluate
    from edgecompress.pipeline import resolve_data

    test = np.load(digits_npz("test"))
    x, y = test["x"][:60], test["y"][:60]
    rows = ["filename,class_index"]
    for i, (img, label) in enumerate(zip(x, y, strict=True)):
        Image.fromarray(np.round(img[0] * 255).astype(np.uint8), "L").save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,{int(label)}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    ds = resolve_data(digits_spec, str(tmp_path), "evaluation", progress=False)
    assert ds.x.shape == (60, 1, 8, 8)
    assert np.abs(ds.x - x).max() < 0.01  # the training scale (0-1, ink light), not re-normalised
    assert evaluate(digits_spec.module, ds)["top1"] >= 0.95


class _ConvBnPool(torch.nn.Module):
    """Conv + BatchNorm + ReLU + max / average pooling + Linear, one functional ReLU (no module:
    Torch-Pruning's counter counts none for it) and a LayerNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.relu = torch.nn.ReLU()
        self.pool = torch.nn.MaxPool2d(2)
        self.gap = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(8, 4)
        self.ln = torch.nn.LayerNorm(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.bn(self.conv(x))))
        return self.ln(self.fc(torch.flatten(self.gap(torch.relu(x)), 1)))


@pytest.mark.parametrize("dynamic", [False, True])
def test_pt2_macs_equal_the_eager_models(tmp_path, dynamic):
    """A .pt2's MACs are the same model's as module:factory (torch's FLOP counter left BatchNorm,
    pooling and activations out of the .pt2's)."""
    from edgecompress.models import count_params_macs

    torch.manual_seed(0)
    m = _ConvBnPool().eval()
    kw = {"dynamic_shapes": ({0: torch.export.Dim("batch")},)} if dynamic else {}
    torch.export.save(torch.export.export(m, (torch.randn(2 if dynamic else 1, 3, 12, 16),), **kw),
                      tmp_path / "m.pt2")
    eager = count_params_macs(load_model(m, input_shape=(1, 3, 12, 16)))
    assert count_params_macs(load_model(str(tmp_path / "m.pt2"))) == eager
    # by hand, as the hooks count: conv + its bias, BN (affine: x2), ReLU, max pool (its input),
    # average pool, Linear + its bias, LayerNorm (x2); the functional ReLU and flatten count 0
    px = 12 * 16
    assert eager[1] == (8 * 3 * 9 * px + 8 * px) + 2 * 8 * px + 8 * px + 8 * px + 8 * 6 * 8 + (8 * 4 + 4) + 2 * 4
