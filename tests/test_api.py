"""The Python API's contract: typed names, inputs left alone, bad arguments refused in one line."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

import edgecompress
from edgecompress.data import Dataset
from edgecompress.errors import ConfigError, DataError, EdgeCompressError, ValidationError
from edgecompress.passes.distill import DistillConfig


def test_public_names_are_declared_for_type_checkers():
    init = Path(edgecompress.__file__)
    assert (init.parent / "py.typed").exists()
    assert set(edgecompress.__all__) == set(edgecompress._LAZY)
    # every lazy name is also imported under TYPE_CHECKING, from the module it loads from
    tree = ast.parse(init.read_text())
    typed = {a.asname or a.name: node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
             for a in node.names}
    for name, (module, attr) in edgecompress._LAZY.items():
        assert typed.get(name) and getattr(edgecompress, name) is getattr(__import__(module, fromlist=[attr]), attr)


def test_type_aliases_are_public_names():
    """What the documented functions' parameters accept: a typed script imports them from the package."""
    from edgecompress import DataLike, ModelLike, ShapeLike, data, models

    assert {"DataLike", "ModelLike", "ShapeLike"} <= set(edgecompress.__all__)
    assert (DataLike, ModelLike, ShapeLike) == (data.DataLike, models.ModelLike, models.ShapeLike)


def test_pass_records_stay_with_their_spec(digits_spec):
    a = edgecompress.prune(digits_spec, ratio=0.3, progress=False)
    b = edgecompress.prune(a, ratio=0.3, progress=False)
    c = edgecompress.lowrank(a, energy=0.9, progress=False)
    # a shallow copy of `extra` made every later pass append to `a`'s history too
    assert [p["pass"] for p in a.extra["passes"]] == ["prune"]
    assert [p["pass"] for p in b.extra["passes"]] == ["prune", "prune"]
    assert [p["pass"] for p in c.extra["passes"]] == ["prune", "lowrank"]
    assert "passes" not in digits_spec.extra or digits_spec.extra["passes"] == []


@pytest.mark.parametrize("x,y,fragment", [
    (np.full((8, 1, 8, 8), np.nan, np.float32), None, "sample 0 contains NaN or Inf"),
    (np.zeros((8, 3, 32, 32), np.float32), None, "samples have shape (3, 32, 32) but the model takes (1, 8, 8)"),
    (np.zeros((8, 1, 8, 8), np.int64), None, "dtype int64 does not match the model input"),
    (np.zeros((8, 1, 8, 8), np.float32), np.full(8, -1), "negative class index (-1)"),
    (np.zeros((8, 1, 8, 8), np.float32), np.zeros(5, np.int64), "must be 8 integer labels"),
    # the default teacher is the model itself: "the model", said to be the teacher
    (np.zeros((8, 1, 8, 8), np.float32), np.full(8, 99),
     "go up to class 99 but the model (the teacher by default) has 10 outputs"),
])
def test_in_memory_data_is_checked_like_files(digits_spec, x, y, fragment):
    """A Dataset built in Python gets the checks a file gets (it went straight to torch: a raw
    RuntimeError / IndexError, or, for NaN, a model trained into all-NaN weights)."""
    with pytest.raises(DataError) as e:
        edgecompress.distill(digits_spec, data=Dataset(x, y, "mine"), epochs=1, progress=False)
    assert fragment in str(e.value)
    if "but the model takes" in fragment:  # the fix from Python, worded for Python (no CLI flag)
        assert "(check input_shape= / preprocess=; or the data's side: Dataset.at_side(N) for images)" in str(e.value)


def test_float64_arrays_are_taken_as_float32(digits_spec):
    from edgecompress.pipeline import resolve_data

    ds = resolve_data(digits_spec, Dataset(np.zeros((4, 1, 8, 8)), None, "f64"), "calibration")
    assert ds.x.dtype == np.float32


@pytest.mark.parametrize("call,fragment", [
    (lambda s, d: edgecompress.distill(s, data=42, progress=False),
     "expected a path, a DataSpec, an array / tensor, (x, y) or an iterable of batches, got int"),
    (lambda s, d: edgecompress.export("zoo:digits-cnn", "onnx"), "export: expected a ModelSpec"),
    (lambda s, d: edgecompress.export(s, "onnx", "int8", d, calib=np.zeros((4, 1, 8, 8))), "calib must be a Dataset"),
    (lambda s, d: edgecompress.export(s, "onnx", "int8", d, calib=Dataset(np.zeros((4, 3, 8, 8), np.float32))),
     "samples have shape (3, 8, 8) but the model takes (1, 8, 8)"),
    (lambda s, d: edgecompress.export(s, "onnx", "fp32", d, options={"isolate": True}),
     "options must be an ExportOptions"),
    (lambda s, d: edgecompress.export(s, "onnx", "fp32", d, name="m.tflite"), "onnx files end in .onnx"),
    (lambda s, d: edgecompress.ExportOptions(calib_batch=0), "calib_batch 0: 1 or more"),
    (lambda s, d: edgecompress.ExportOptions(percentile=200), "percentile 200"),
    (lambda s, d: edgecompress.load_data(""), "empty path"),
    # audit: these were AttributeErrors from deep inside the pass
    (lambda s, d: edgecompress.prune(s, DistillConfig(epochs=1), progress=False),
     "prune: expected PruneConfig or a mapping of parameters, got DistillConfig"),
    (lambda s, d: edgecompress.distill(s, epochs=1, teacher="zoo:digits-cnn", progress=False),
     "teacher: expected a ModelSpec or a torch.nn.Module, got str"),
    (lambda s, d: edgecompress.prune(s, ratio="0.3", progress=False), "prune.ratio: '0.3' is not a number"),
])
def test_wrong_arguments_are_one_line_errors(digits_spec, tmp_path, call, fragment):
    with pytest.raises(EdgeCompressError) as e:
        call(digits_spec, tmp_path)
    assert fragment in str(e.value) and "\n" not in str(e.value)
    assert not list(tmp_path.iterdir())


def test_validate_refuses_an_artifact_changed_since_export(tmp_path, digits_spec):
    fp32 = edgecompress.export(digits_spec, "onnx", "fp32", tmp_path)
    other = edgecompress.export(digits_spec, "onnx", "fp32", tmp_path / "o", options=edgecompress.ExportOptions(
        dynamic_batch=False))
    Path(fp32.path).write_bytes(Path(other.path).read_bytes())  # another model under the same name
    (m,) = edgecompress.validate([fp32], "x86-local", settings=edgecompress.ValidateSettings(runs=2, warmup=0),
                                 progress=False)
    assert m.status == "failed" and "changed since export" in m.error
    with pytest.raises(ConfigError):
        edgecompress.ValidateSettings(runs=0)
    assert issubclass(ValidationError, EdgeCompressError)


def test_int8_export_gives_the_callers_logging_back(tmp_path, digits_spec, digits_calib):
    """ORT's quantizer warns through the root logger; we quiet it while it runs, not for good
    (the root logger stayed at ERROR for the rest of the caller's process)."""
    import logging

    root = logging.getLogger()
    before = root.level
    root.setLevel(logging.INFO)
    try:
        art = edgecompress.export(digits_spec, "onnx", "int8", tmp_path, digits_calib)
        assert art.precision == "int8" and root.level == logging.INFO
    finally:
        root.setLevel(before)


def test_reference_outputs_runs_eval_mode_and_gives_the_mode_back(digits_spec, digits_eval):
    """A module left in train mode gave a reference with dropout / batch-statistics noise in it."""
    import copy

    import torch

    from edgecompress.targets import reference_outputs

    ev = digits_eval.take(slice(0, 64))
    m = copy.deepcopy(digits_spec.module).train()  # BatchNorm: train mode uses batch statistics
    a = reference_outputs(m, ev, progress=False)
    assert m.training  # given back
    b = reference_outputs(digits_spec, ev, progress=False)  # a ModelSpec works as well
    assert np.array_equal(a, b) and a.shape == (64, 10)
    with torch.no_grad():
        noisy = m(torch.from_numpy(ev.x)).numpy()  # what it computed before
    assert not np.allclose(noisy, a, atol=1e-3)
    with pytest.raises(ConfigError, match="data must be a Dataset"):
        reference_outputs(m, ev.x)


def test_dict_outputs_compare_their_first_value(tmp_path, digits_spec, digits_eval):
    """A model returning a dict crashed the reference ('dict' has no .float); a batch-1 .pt2 of it
    crashed when fed a larger batch one sample at a time."""
    import torch

    from edgecompress.models import load_model
    from edgecompress.targets import reference_outputs

    class DictOut(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            y = self.inner(x)
            return {"logits": y, "aux": y.sum(1, keepdim=True)}

    ev = digits_eval.take(slice(0, 16))
    m = DictOut(digits_spec.module).eval()
    got = reference_outputs(m, ev, progress=False)
    assert np.array_equal(got, reference_outputs(digits_spec.module, ev, progress=False))
    ep = torch.export.export(m, (torch.from_numpy(ev.x[:1]),))  # batch 1 fixed: fed per sample
    torch.export.save(ep, tmp_path / "dict.pt2")
    spec = load_model(str(tmp_path / "dict.pt2"))
    out = spec.module(torch.from_numpy(ev.x[:5]))
    assert set(out) == {"logits", "aux"} and out["logits"].shape == (5, 10) and out["aux"].shape == (5, 1)
    assert np.allclose(reference_outputs(spec.module, ev, progress=False), got, atol=1e-5)


def test_write_report_makes_its_folder_and_drops_a_stale_plot(tmp_path):
    from edgecompress.report import Report, write_report

    out = tmp_path / "new" / "dir"
    (tmp_path / "new").mkdir()
    paths = write_report(Report(model={"name": "x"}, target="x86-local", artifacts=[]), str(out))
    assert paths["json"].is_file() and "png" not in paths
    (out / "report.png").write_bytes(b"old plot")  # a previous run's
    write_report(Report(model={"name": "x"}, target="x86-local", artifacts=[]), out)
    assert not (out / "report.png").exists()


def test_a_callers_module_keeps_its_mode_and_weights():
    """load_model and the passes worked on the caller's module: a training loop that called
    prune() went on in eval mode."""
    import torch

    m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.BatchNorm1d(32),
                            torch.nn.ReLU(), torch.nn.Linear(32, 10)).train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    spec = edgecompress.load_model(m, input_shape=(1, 1, 8, 8))
    assert m.training and not spec.module.training and spec.module is not m
    pruned = edgecompress.prune(m, ratio=0.5, input_shape=(1, 1, 8, 8), progress=False)
    assert m.training and all(torch.equal(v, m.state_dict()[k]) for k, v in before.items())
    assert pruned.module[1].out_features < 32


def test_single_artifact_and_measurement_are_accepted(tmp_path, digits_spec):
    """validate(art) and artifact_row(m) were TypeErrors; export(spec, "ONNX") was unknown."""
    from edgecompress.report import artifact_row

    art = edgecompress.export(digits_spec, "ONNX", "FP32", tmp_path)
    assert art.format == "onnx" and art.precision == "fp32"
    (m,) = edgecompress.validate(art, "x86-local", settings=edgecompress.ValidateSettings(runs=2, warmup=0, rounds=1),
                                 progress=False)
    row = artifact_row(m)
    assert row == artifact_row(m.to_dict()) and row["status"] == "ok" and row["latency_ms"]["p50"] > 0


def test_openvino_keeps_models_that_only_check_shapes(tmp_path):
    """A shape check warns under tracing like a branch on values does; it was refused too. The
    IR is compared with PyTorch instead (tests/bad_inputs: a branch on values is refused)."""
    import torch

    class ShapeCheck(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(64, 10)

        def forward(self, x):
            if x.shape[-1] != 8:
                raise ValueError("8x8 inputs only")
            return self.fc(x.flatten(1))

    art = edgecompress.export(edgecompress.load_model(ShapeCheck(), input_shape=(1, 1, 8, 8)), "openvino", "fp32",
                              tmp_path)
    assert Path(art.path).is_file() and art.format == "openvino"


# ---- from the Python-API audit (2026-12-01): what a calibration script meets -----------------------

class _Frozen(__import__("torch").nn.Module):
    """A small conv net with a BatchNorm the caller froze and a Dropout: modes and RNG matter."""

    def __init__(self) -> None:
        from torch import nn

        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.fc(self.drop(self.bn(self.conv(x)).relu().mean((2, 3))))


def _modes(m) -> dict[str, bool]:  # type: ignore[no-untyped-def]
    return {n: sub.training for n, sub in m.named_modules()}


def test_in_memory_samples_load_as_datasets(digits_calib, digits_spec, tmp_path):
    """Arrays, tensors, (x, y) and a DataLoader's batches all give the same Dataset (load_data
    refused anything but a path: users concatenated DataLoader batches by hand)."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    x, y = digits_calib.x[:50], np.arange(50) % 10
    loader = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=16)
    for given, labelled in ((x, False), (torch.from_numpy(x), False), ((x, y), True), (loader, True),
                            ([torch.from_numpy(x[:20]), torch.from_numpy(x[20:])], False)):
        ds = edgecompress.load_data(given)
        assert np.array_equal(ds.x, x) and (np.array_equal(ds.y, y) if labelled else ds.y is None), type(given)
    assert isinstance(Dataset(torch.from_numpy(x)).x, np.ndarray)  # was refused only at export
    # single samples: a torch Dataset, or (x, scalar label) pairs, stack (a list of (1, 8, 8)
    # samples was concatenated into (N, 8, 8), and scalar labels failed as "different shapes")
    pairs = TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    int_pairs = [(s, int(c)) for s, c in zip(x, y, strict=True)]
    for given, labelled in ((pairs, True), (list(pairs), True), (TensorDataset(torch.from_numpy(x)), False),
                            (DataLoader(pairs, batch_size=None), True), (int_pairs, True)):
        ds = edgecompress.load_data(given)
        assert np.array_equal(ds.x, x) and (np.array_equal(ds.y, y) if labelled else ds.y is None), type(given)
    with pytest.raises(DataError, match=r"in-memory list of 50 batches: samples have shape \(8, 8\)"):
        # a list of bare samples is read as batches, and the error says so
        edgecompress.export(digits_spec, "onnx", "int8", tmp_path, calib=edgecompress.load_data(list(x)))
    for bad, fragment in (([], "gave no batches"), (x[:0], "holds no samples"),
                          ([x[:4], x[:4, :, :4]], "batches of different shapes"),
                          ([(x[:4], y[:4]), x[:4]], "some batches have labels")):
        with pytest.raises(DataError, match=fragment):
            edgecompress.load_data(bad)


def test_export_job_takes_the_cli_spellings(tmp_path, digits_spec):
    from edgecompress.pipeline import ExportJob

    job = ExportJob(digits_spec, ["onnx:int8", "openvino", ("tflite", "fp32")], str(tmp_path))  # type: ignore[arg-type]
    assert job.formats == [("onnx", "int8"), ("openvino", "fp32"), ("tflite", "fp32")]
    assert job.out_dir == tmp_path
    assert ExportJob(digits_spec, "onnx:int8", tmp_path).formats == [("onnx", "int8")]  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"ExportJob\.formats: expected"):
        ExportJob(digits_spec, [("onnx",)], tmp_path)  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="onnx supports precisions"):
        ExportJob(digits_spec, ["onnx:int4"], tmp_path)  # type: ignore[list-item]


def test_load_model_applies_name_and_preprocess_to_a_spec(digits_spec):
    renamed = edgecompress.load_model(digits_spec, name="renamed", preprocess="imagenet")
    assert (renamed.name, renamed.preprocess) == ("renamed", "imagenet")
    assert digits_spec.name == "digits-cnn" and digits_spec.preprocess != "imagenet"  # a copy was changed
    assert edgecompress.load_model(digits_spec) is digits_spec
    renamed.extra["passes"].append({"pass": "mine"})
    renamed.extra["note"] = 1
    assert "note" not in digits_spec.extra and {"pass": "mine"} not in digits_spec.extra.get("passes", [])
    with pytest.raises(EdgeCompressError, match="takes"):
        edgecompress.load_model(digits_spec, input_shape="1,3,8,8")


def test_caller_modes_survive_reference_export_and_distill(tmp_path, digits_calib):
    """`module.train(was_training)` unfroze a BatchNorm the caller had set to eval; export() left
    a hand-built ModelSpec's module in eval mode."""
    from edgecompress.models import InputSpec, ModelSpec
    from edgecompress.targets import reference_outputs

    m = _Frozen().train()
    m.bn.eval()
    before = _modes(m)
    data = Dataset(digits_calib.x[:16])
    reference_outputs(m, data, progress=False)
    assert _modes(m) == before
    edgecompress.export(ModelSpec(name="hand", module=m, inputs=[InputSpec((1, 1, 8, 8))]), "onnx", "fp32", tmp_path)
    assert _modes(m) == before
    student = edgecompress.load_model(_Frozen(), input_shape=(1, 1, 8, 8))
    edgecompress.distill(student, data=Dataset(digits_calib.x[:32]), teacher=m, epochs=1, progress=False)
    assert _modes(m) == before


def test_distill_with_dropout_is_seeded_and_leaves_the_callers_rng(digits_calib):
    import torch

    data = Dataset(digits_calib.x[:64], np.arange(64) % 10)
    teacher = edgecompress.load_model(_Frozen(), input_shape=(1, 1, 8, 8))
    weights = []
    torch.manual_seed(7)
    start = _Frozen().state_dict()
    for caller_seed in (123, 999):  # the caller's seed does not decide the student, cfg.seed does
        student = _Frozen()
        student.load_state_dict(start)
        torch.manual_seed(caller_seed)
        out = edgecompress.distill(edgecompress.load_model(student, input_shape=(1, 1, 8, 8)), data=data,
                                   teacher=teacher, epochs=1, progress=False)
        weights.append(out.module.fc.weight.detach().clone())
        after = torch.rand(1)
        torch.manual_seed(caller_seed)
        assert torch.equal(after, torch.rand(1))  # the caller's stream was not advanced
    assert torch.equal(weights[0], weights[1])


def test_qat_leaves_the_callers_rng(digits_spec, digits_calib):
    """torch.export and PT2E's prepare draw from torch's global generator; qat() advanced it."""
    import torch

    data = Dataset(digits_calib.x[:32], np.arange(32) % 10)
    torch.manual_seed(5)
    expected = torch.rand(1)
    torch.manual_seed(5)
    edgecompress.qat(digits_spec, data=data, epochs=1, progress=False)
    assert torch.equal(torch.rand(1), expected)


def test_reference_outputs_names_data_mistakes(digits_spec, digits_calib):
    from edgecompress.targets import reference_outputs

    x = digits_calib.x[:8]
    ref = reference_outputs(digits_spec, Dataset(x), progress=False)
    assert np.allclose(reference_outputs(digits_spec.module, Dataset(x.astype(np.float64)), progress=False), ref)
    for data, fragment in ((Dataset(x[:0]), "holds no samples"),
                           (Dataset(x.transpose(0, 2, 3, 1)), "the model fails on samples of shape (8, 8, 1)")):
        with pytest.raises(DataError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
            reference_outputs(digits_spec.module, data, progress=False)
    with pytest.raises(DataError, match="samples have shape"):
        reference_outputs(digits_spec, Dataset(x.transpose(0, 2, 3, 1)), progress=False)


def test_validate_takes_paths_and_checks_the_samples(tmp_path, digits_spec, digits_eval, digits_reference):
    import torch

    from edgecompress.targets import ValidateSettings, validate

    fast = ValidateSettings(runs=2, warmup=0, rounds=1, batches=(1,))
    art = edgecompress.export(digits_spec, "onnx", "fp32", tmp_path / "e")
    f64 = Dataset(digits_eval.x.astype(np.float64), digits_eval.y)
    (m,) = validate([str(art.path)], "x86-local", f64, torch.from_numpy(digits_reference), fast, progress=False)
    assert m.status == "ok" and m.drift["top1_agreement"] == 1.0, m.error  # ORT refused float64
    (m,) = validate(tmp_path / "e" / Path(art.path).name, "x86-local", Dataset(digits_eval.x.transpose(0, 2, 3, 1)),
                    None, fast, progress=False)
    assert m.status == "failed" and "evaluation samples have shape (8, 8, 1) but the file takes (1, 8, 8)" in m.error
    with pytest.raises(DataError, match="holds no samples"):
        validate([art], "x86-local", Dataset(digits_eval.x[:0]), None, fast, progress=False)
    with pytest.raises(ConfigError, match="eval_data must be a Dataset"):
        validate([art], "x86-local", digits_eval.x, None, fast, progress=False)  # type: ignore[arg-type]


def test_a_precision_in_the_other_formats_word_order_is_named():
    """ONNX spells dynamic int8 `int8-dynamic`, TFLite `dynamic-int8`: the swap gets the right one."""
    from edgecompress.exporters import resolve_formats

    with pytest.raises(ConfigError, match=r"not 'int8-dynamic'; did you mean 'dynamic-int8'\?"):
        resolve_formats(["tflite:int8-dynamic"])
    with pytest.raises(ConfigError, match=r"not 'dynamic-int8'; did you mean 'int8-dynamic'\?"):
        resolve_formats(["onnx:dynamic-int8"])
    with pytest.raises(ConfigError, match=r"not 'int9'; did you mean 'int8'\?"):
        resolve_formats(["onnx:int9"])
    with pytest.raises(ConfigError, match=r"not 'nf4'$"):  # nothing close: no guess
        resolve_formats(["openvino:nf4"])
