"""The Python API as a script uses it (audit 22D): weights given with an nn.Module are loaded,
numbered class folders are their class, validate() refuses what the CLI refuses, a QAT or ONNX
spec's reference is the pipeline's, 16-bit images keep their picture, and a recipe built in
Python reruns from its resolved file."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import edgecompress as ec
from edgecompress.errors import ConfigError, DeviceError, EdgeCompressError, InputFileError, RuntimeMissingError

pytestmark = pytest.mark.usefixtures("one_thread")


def _small() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 10))


# --- 9: weights with an nn.Module --------------------------------------------------------------------
def test_weights_given_with_a_module_are_loaded_into_its_copy(tmp_path):
    trained = _small()
    with torch.no_grad():
        trained[4].weight.zero_()
    torch.save(trained.state_dict(), tmp_path / "sd.pt")
    user = _small()
    spec = ec.load_model(user, input_shape=(1, 1, 8, 8), weights=tmp_path / "sd.pt")
    assert float(spec.module[4].weight.abs().sum()) == 0.0  # the checkpoint, not the module's own
    assert float(user[4].weight.abs().sum()) > 0  # the caller's module is untouched
    with pytest.raises(InputFileError, match="no such file"):
        ec.load_model(user, input_shape=(1, 1, 8, 8), weights=tmp_path / "missing.pt")


# --- 24: numbered class folders ---------------------------------------------------------------------
def test_numbered_class_folders_are_their_class(tmp_path):
    img = Image.fromarray(np.full((8, 8), 128, np.uint8))
    for c in (3, 5, 7, 10, 2):
        (tmp_path / "num" / str(c)).mkdir(parents=True)
        img.save(tmp_path / "num" / str(c) / "a.png")
    ds = ec.load_data(tmp_path / "num", preprocess="gray-unit", image_size=8, progress=False)
    # folders in numeric order, each its own class; by rank they read 0..4, and "10" sorted before "2"
    assert ds.y.tolist() == [2, 3, 5, 7, 10]
    for c in ("cat", "dog"):  # names: the position in sorted order, as torchvision's ImageFolder
        (tmp_path / "named" / c).mkdir(parents=True)
        img.save(tmp_path / "named" / c / "a.png")
    named = ec.load_data(tmp_path / "named", preprocess="gray-unit", image_size=8, progress=False)
    assert sorted(named.y.tolist()) == [0, 1]


# --- 19: 16-bit images --------------------------------------------------------------------------------
def test_16_bit_images_keep_their_picture(tmp_path):
    grad = np.tile(np.linspace(0, 65535, 8).astype(np.uint16), (8, 1))
    (tmp_path / "g").mkdir()
    Image.fromarray(grad).save(tmp_path / "g" / "a16.png")
    Image.fromarray((grad // 257).astype(np.uint8)).save(tmp_path / "g" / "b8.png")
    assert Image.open(tmp_path / "g" / "a16.png").mode.startswith("I")
    for preset in ("gray-unit", "efficientnet-lite", "imagenet"):
        ds = ec.load_data(tmp_path / "g", preprocess=preset, image_size=8, progress=False)
        assert np.abs(ds.x[0] - ds.x[1]).max() < 0.05, preset  # it was white where the 8-bit is grey


# --- 6, 7: validate() refuses what the CLI refuses -----------------------------------------------------
@pytest.fixture(scope="module")
def small_files(tmp_path_factory):
    spec = ec.load_model(_small(), input_shape=(1, 1, 8, 8))
    out = tmp_path_factory.mktemp("files")
    return (ec.export(spec, "onnx", "fp32", out, options=ec.ExportOptions(progress=False)),
            ec.export(spec, "openvino", "fp32", out, options=ec.ExportOptions(progress=False)))


def test_validate_refuses_a_format_the_target_does_not_run(small_files):
    onnx, xml = small_files
    with pytest.raises(ConfigError, match=r"^validate: target rpi5 runs onnx, tflite; not openvino \(.*fp32\.xml\)"):
        ec.validate([onnx, xml], "rpi5", settings=ec.ValidateSettings(runs=2, warmup=0), progress=False)


def test_validate_on_a_device_that_cannot_run_raises_as_the_cli_does(small_files, tmp_path, monkeypatch):
    monkeypatch.setenv("ARM64_ROOTFS", str(tmp_path / "no-rootfs"))
    with pytest.raises(RuntimeMissingError, match="no arm64 rootfs") as e:  # was a "failed, measured" row
        ec.validate([small_files[0]], "arm64-qemu", settings=ec.ValidateSettings(runs=2, warmup=0), progress=False)
    assert e.value.exit_code == DeviceError.exit_code == 3  # the CLI's "device unusable"


def test_validate_says_when_eval_data_is_not_used(small_files, capsys):
    ev = ec.Dataset(np.zeros((4, 1, 8, 8), np.float32))
    (m,) = ec.validate([small_files[0]], "rpi5", ev, settings=ec.ValidateSettings(runs=2, warmup=0), progress=False)
    assert m.latency_kind == "estimated" and "eval_data is not used" in capsys.readouterr().err


# --- 25, 26: the reference of a QAT spec and of an ONNX spec --------------------------------------------
def test_reference_of_an_onnx_spec_is_its_own_outputs(small_files):
    onnx = small_files[0]
    spec = ec.load_model(str(onnx.path))
    ev = ec.Dataset(np.random.default_rng(0).standard_normal((5, 1, 8, 8)).astype(np.float32))
    ref = ec.reference_outputs(spec, ev, progress=False)
    with torch.no_grad():
        want = _small()(torch.from_numpy(ev.x)).numpy()
    assert ref.shape == (5, 10) and np.allclose(ref, want, atol=1e-5)


def test_reference_of_a_spec_with_a_float_reference_uses_it():
    """A QAT spec's module is its int8 graph; the pipeline compares with extra["fp32_reference"],
    and reference_outputs(spec) now does too (an int8 file agreed 100 % with its own graph)."""
    spec = ec.load_model(_small(), input_shape=(1, 1, 8, 8))
    other = _small()
    with torch.no_grad():
        other[4].bias.add_(1.0)
    spec.extra["fp32_reference"] = other
    ev = ec.Dataset(np.ones((2, 1, 8, 8), np.float32))
    with torch.no_grad():
        want = other(torch.from_numpy(ev.x)).numpy()
    assert np.allclose(ec.reference_outputs(spec, ev, progress=False), want)


# --- 1: a recipe built in Python reruns from its resolved file ------------------------------------------
def test_a_recipe_built_in_python_reruns_from_anywhere(tmp_path, monkeypatch):
    from edgecompress.recipe import anchored

    work = tmp_path / "work"
    (work / "mypkg").mkdir(parents=True)
    (work / "mypkg" / "nets.py").write_text(
        "import torch\nfrom torch import nn\n\ndef build():\n    torch.manual_seed(0)\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))\n")
    rng = np.random.default_rng(0)
    np.savez(work / "xy.npz", x=rng.standard_normal((16, 1, 8, 8)).astype(np.float32), y=rng.integers(0, 10, 16))
    monkeypatch.chdir(work)
    monkeypatch.syspath_prepend(str(work))
    r = ec.Recipe(model="mypkg.nets:build", input_shape=[1, 1, 8, 8], data={"train": "xy.npz"},
                  passes=[{"lowrank": {"rank": 2}}], options={"validate_artifacts": False, "progress": False})
    (tmp_path / "elsewhere").mkdir()
    ec.save_recipe(r, tmp_path / "elsewhere" / "r.yaml")
    back = ec.load_recipe(tmp_path / "elsewhere" / "r.yaml")
    assert back.resolved() == anchored(r).resolved()
    assert back.data.train == str(work / "xy.npz") and back.model_dir == str(work)  # re-based on elsewhere/
    ec.run_recipe(r, tmp_path / "out")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # as a fresh process elsewhere: mypkg only via model_dir
    import sys

    for name in [m for m in sys.modules if m == "mypkg" or m.startswith("mypkg.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(work)])
    rep, _ = ec.run_recipe(tmp_path / "out" / "recipe.resolved.yaml", tmp_path / "out2")
    assert [s["name"] for s in rep.steps] == ["original", "lowrank"]
    assert os.path.isfile(tmp_path / "out2" / "recipe.resolved.yaml")


# --- 4: ExportJob with a ModelSpec ----------------------------------------------------------------------
def test_export_job_applies_or_refuses_its_fields_for_a_spec(tmp_path):
    from edgecompress.pipeline import ExportJob, run_export

    spec = ec.load_model(_small(), input_shape=(1, 1, 8, 8))
    for field, value, err in (("input_shape", "1,1,6,6", "InputShapeError"), ("weights", "nowhere.pt", "ConfigError")):
        job = ExportJob(model=spec, formats=[("onnx", "fp32")], out_dir=str(tmp_path / field), do_validate=False,
                        progress=False, **{field: value})
        with pytest.raises(EdgeCompressError) as e:  # they were dropped: a passing export of the spec as is
            run_export(job)
        assert type(e.value).__name__ == err and not (tmp_path / field).exists()


# --- 5: at_side with a transform of your own -------------------------------------------------------------
def test_at_side_resizes_what_a_custom_transform_returned_at_its_own_side(tmp_path):
    (tmp_path / "imgs").mkdir()
    for i in range(3):
        Image.fromarray(np.full((20, 20, 3), 40 * i, np.uint8)).save(tmp_path / "imgs" / f"{i}.png")

    def tf(im):
        return np.asarray(im.convert("RGB").resize((16, 16)), dtype=np.float32).transpose(2, 0, 1) / 255

    ds = ec.load_data(tmp_path / "imgs", preprocess=tf, progress=False)
    small = ds.at_side(8)
    assert small.x.shape == (3, 3, 8, 8)  # it was (3, 3, 16, 16): "at side 8", silently
    assert "your transform ignores the side" in small.source


# --- 8: settings checked when built ------------------------------------------------------------------------
@pytest.mark.parametrize(("make", "said"), [
    (lambda: ec.ExportOptions(percentile="99"), "percentile '99': a number"),
    (lambda: ec.ExportOptions(extra=None), "extra None: a dict"),
    (lambda: ec.ExportOptions(dynamic_batch="no"), "dynamic_batch 'no': True or False"),
    (lambda: ec.ExportOptions(float_first=True), "float_first True: an integer"),
    (lambda: ec.ValidateSettings(batches=8), "batches 8: a tuple of batch sizes"),
    (lambda: ec.ValidateSettings(openvino_fp32_hint="bogus"), "openvino_fp32_hint 'bogus': one of"),
    (lambda: ec.ValidateSettings(cpus=["0"]), "cpus ['0']: a list of CPU numbers"),
    (lambda: ec.reference_outputs(_small(), ec.Dataset(np.zeros((2, 1, 8, 8), np.float32)), batch=0),
     "reference_outputs: batch 0: 1 or more"),
])
def test_settings_are_checked_when_built(make, said):
    with pytest.raises(ConfigError) as e:
        make()
    assert said in str(e.value) and "\n" not in str(e.value)


def test_cpus_this_process_may_not_use_are_refused_before_any_work(small_files):
    with pytest.raises(ConfigError, match=r"cpus \[99\]: this process may use CPUs"):
        ec.validate([small_files[0]], settings=ec.ValidateSettings(cpus=[99], runs=2, warmup=0), progress=False)


# --- 11, 15: export() leaves no empty folders behind, and the caller's random streams alone --------------
class _Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        y = self.fc(x.flatten(1))
        if y.sum() > 0:  # data-dependent: the exporters refuse it
            y = y * 2
        return y


def test_a_failed_export_removes_the_folders_it_made(tmp_path):
    spec = ec.load_model(_Branchy(), input_shape=(1, 1, 8, 8))
    with pytest.raises(EdgeCompressError):
        ec.export(spec, "onnx", "fp32", tmp_path / "new" / "a" / "b", options=ec.ExportOptions(progress=False))
    assert not (tmp_path / "new").exists()  # an empty tree new/a/b was left


def test_export_leaves_the_callers_random_streams(tmp_path):
    import random

    spec = ec.load_model(_small(), input_shape=(1, 1, 8, 8))
    calib = ec.Dataset(np.random.default_rng(0).standard_normal((8, 1, 8, 8)).astype(np.float32))
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    want = (torch.rand(1).item(), np.random.rand(), random.random())
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    ec.export(spec, "tflite", "int8", tmp_path, calib, ec.ExportOptions(progress=False))
    assert (torch.rand(1).item(), np.random.rand(), random.random()) == want


# --- 13, 14, 21: arguments that were taken as anything ------------------------------------------------------
def test_validate_refuses_an_unknown_task(small_files):
    with pytest.raises(ConfigError, match=r"^validate: task 'embeding': one of classification, embedding"):
        ec.validate([small_files[0]], task="embeding", progress=False)


@pytest.mark.parametrize("stem", ["../escape", "", "a/b", ".hidden"])
def test_write_report_refuses_a_stem_that_is_no_plain_name(stem, tmp_path):
    report = ec.Report(model={"name": "m"}, target="x86-local", artifacts=[], machine={}, versions={})
    with pytest.raises(ConfigError, match="a plain file name"):
        ec.write_report(report, tmp_path / "out", stem=stem)
    assert not any(tmp_path.rglob("*.json"))


def test_report_target_is_the_measurements_unless_named(small_files):
    ms = ec.validate([small_files[0]], "rpi5", settings=ec.ValidateSettings(runs=2, warmup=0), progress=False)
    assert ec.Report.from_measurements(ms, model={"name": "m"}).target == "rpi5"
    with pytest.raises(ConfigError, match=r"target 'x86-local', but the measurements are of rpi5"):
        ec.Report.from_measurements(ms, model={"name": "m"}, target="x86-local")


# --- 12: messages that misled -----------------------------------------------------------------------------
def test_messages_name_what_was_wrong(tmp_path):
    from edgecompress.errors import DataError

    spec = ec.load_model(_small(), input_shape=(1, 1, 8, 8))
    with pytest.raises(ConfigError, match=r"not 'dynamic-int8' \(did you mean int8-dynamic\?\)"):
        ec.export(spec, "onnx", "dynamic-int8", tmp_path)
    with pytest.raises(ConfigError, match=r"not 'int8-dynamic' \(did you mean dynamic-int8\?\)"):
        ec.export(spec, "tflite", "int8-dynamic", tmp_path)
    with pytest.raises(DataError, match=r"^onnx int8: needs calibration data and none was given"):  # not "empty"
        ec.export(spec, "onnx", "int8", tmp_path, None)
