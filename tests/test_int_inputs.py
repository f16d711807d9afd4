"""[audit #27] A user's own model that takes integer ids (token / class indices), not floats:
`load_model(..., input_dtype="int64")` / `--input-dtype`, detection of an nn.Embedding first
layer, integer .npy / .npz data, export to ONNX / OpenVINO / TFLite at fp32 and int8, validation
on the ids, the passes, and the one-line refusals. Factories are defined here
(`tests.test_int_inputs:NAME`), so the CLI imports them as module:factory.

The models are built, not trained: ids whose value is c modulo 10 point their embedding at
direction c and the head reads direction c as class c, so a sample made mostly of class-c ids is
class c with a logit margin of ~3 (measured below). int8 rounding moves the logits by ~0.05 (max
|diff| measured on these files), so every int8 file must agree with fp32 on (nearly) every sample:
the bound 0.95 on 48 samples allows two flips, and a broken path (ids fed as floats, cast or out
of range, a wrongly quantized table) lands far below it (random: ~0.1).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from torch import nn

from edgecompress.errors import ConfigError, DataError, ExportError, InputShapeError
from edgecompress.models import load_model
from tests.conftest import ROOT, run_cli

HERE = "tests.test_int_inputs"
VOCAB, SEQ, CLASSES, DIM = 1000, 16, 10, 32
INT8_AGREEMENT = 0.95  # see the module docstring


class IdsMean(nn.Module):
    """nn.Embedding -> mean over the tokens -> Linear (a bag-of-ids classifier)."""

    def __init__(self, vocab: int = VOCAB) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, DIM)
        self.head = nn.Linear(DIM, CLASSES)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.emb(ids).mean(1))


class IdsConv(nn.Module):
    """nn.Embedding -> Conv1d over the sequence -> ReLU -> mean -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, DIM)
        self.conv = nn.Conv1d(DIM, DIM, 3, padding=1)
        self.head = nn.Linear(DIM, CLASSES)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(self.emb(ids).transpose(1, 2)))
        return self.head(h.mean(-1))


def _decisive(m: nn.Module) -> nn.Module:
    """The weights described in the module docstring (deterministic)."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        emb = m.emb.weight
        emb.copy_(0.3 * torch.randn(emb.shape, generator=g))
        rows = torch.arange(emb.shape[0])
        emb[rows, rows % CLASSES] += 3.0
        head = m.head
        head.weight.copy_(0.1 * torch.randn(head.weight.shape, generator=g))
        head.weight[torch.arange(CLASSES), torch.arange(CLASSES)] += 2.0
        head.bias.zero_()
        if isinstance(getattr(m, "conv", None), nn.Conv1d):
            conv = m.conv
            conv.weight.copy_(0.02 * torch.randn(conv.weight.shape, generator=g))
            conv.weight[:, :, 1] += torch.eye(DIM)  # the centre tap passes each channel on
            conv.bias.zero_()
    return m.eval()


def ids_mean() -> nn.Module:
    return _decisive(IdsMean())


def ids_conv() -> nn.Module:
    return _decisive(IdsConv())


def ids_data(n: int, seed: int = 0, vocab: int = VOCAB) -> tuple[np.ndarray, np.ndarray]:
    """n samples of SEQ ids, 12 of each of class c (ids = c mod 10), 4 random; labels c."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, n)
    x = rng.integers(0, vocab, (n, SEQ))
    own = rng.integers(0, vocab // CLASSES, (n, 12)) * CLASSES + y[:, None]
    x[:, :12] = own
    return rng.permuted(x, axis=1).astype(np.int64), y.astype(np.int64)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ids")
    x, y = ids_data(80)
    np.savez(d / "ids.npz", x=x, y=y)
    np.save(d / "ids.npy", x)
    np.save(d / "ids32.npy", x.astype(np.int32))
    np.save(d / "floats.npy", x.astype(np.float32))
    bad = x.copy()
    bad[5, 3] = VOCAB + 7
    np.save(d / "out_of_range.npy", bad)
    img = d / "images"
    img.mkdir()
    from PIL import Image

    Image.new("RGB", (8, 8)).save(img / "a.png")
    return {"npz": d / "ids.npz", "npy": d / "ids.npy", "npy32": d / "ids32.npy", "floats": d / "floats.npy",
            "out_of_range": d / "out_of_range.npy", "images": img}


# --- loading ------------------------------------------------------------------------------------

class Recorder(nn.Module):
    """Records what each forward got, to see what the load's probe fed."""

    seen: ClassVar[list[tuple[torch.dtype, int]]] = []

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)  # ids 0..9 only: the probe's ids must stay below 10

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        Recorder.seen.append((ids.dtype, int(ids.max())))
        return self.emb(ids).sum(1)


def test_load_declared_dtype_probes_with_ids_in_range():
    Recorder.seen.clear()
    spec = load_model(Recorder(), input_shape=(1, SEQ), input_dtype="int64")
    assert spec.inputs[0].dtype == "int64" and spec.takes_integers
    assert spec.extra["vocab_size"] == 10
    assert Recorder.seen and all(d == torch.int64 and top < 10 for d, top in Recorder.seen), Recorder.seen
    (x,) = spec.example_inputs(4)
    assert x.dtype == torch.int64 and int(x.max()) < 10 and tuple(x.shape) == (4, SEQ)

    spec32 = load_model(Recorder(), input_shape="1,16", input_dtype="INT32")  # as the CLI spells it, any case
    assert spec32.inputs[0].dtype == "int32" and spec32.example_inputs(1)[0].dtype == torch.int32


def test_embedding_first_is_taken_as_int64_with_a_note(capsys):
    spec = load_model(ids_mean(), input_shape=(1, SEQ))
    assert spec.inputs[0].dtype == "int64" and spec.extra["vocab_size"] == VOCAB
    err = capsys.readouterr().err
    assert "starts with nn.Embedding 'emb'" in err and "int64 ids" in err, err


class PositionalFloat(nn.Module):
    """A float model whose first registered module is an Embedding over positions (torch.arange):
    it runs on floats today and must stay float32."""

    def __init__(self) -> None:
        super().__init__()
        self.pos = nn.Embedding(SEQ, 4)
        self.proj = nn.Linear(1, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(x.unsqueeze(-1)) + self.pos(torch.arange(x.shape[1]))
        return h.mean(1)


class OneHot(nn.Module):
    """Takes ids, but with no nn.Embedding to see (F.one_hot): the error says what to pass."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(100, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc(nn.functional.one_hot(ids, 100).float().mean(1))


def test_float_models_stay_float_and_hints():
    assert load_model(PositionalFloat(), input_shape=(1, SEQ)).inputs[0].dtype == "float32"
    with pytest.raises(InputShapeError, match="it runs on integer input: if it takes ids, pass input_dtype='int64'"):
        load_model(OneHot(), input_shape=(1, SEQ))
    assert load_model(OneHot(), input_shape=(1, SEQ), input_dtype="int64").inputs[0].dtype == "int64"


def test_bad_dtypes_are_one_line():
    with pytest.raises(ConfigError) as e:
        load_model(ids_mean(), input_shape=(1, SEQ), input_dtype="float16")
    assert str(e.value) == "input_dtype='float16': use one of float32, int64, int32"
    # a zoo model fixes its dtype: a different one is refused, not ignored
    with pytest.raises(InputShapeError,
                       match=r"^input_dtype='int64': zoo:digits-cnn takes input 'x' as float32; leave it out"):
        load_model("zoo:digits-cnn", input_dtype="int64")
    # an Embedding model declared float fails as it would have, naming the dtype problem
    with pytest.raises(InputShapeError, match="does not fit model IdsMean: Expected tensor for argument #1 'indices'"):
        load_model(ids_mean(), input_shape=(1, SEQ), input_dtype="float32")


def test_pt2_of_ids_keeps_its_dtype(tmp_path):
    m = ids_mean()
    x = torch.from_numpy(ids_data(2)[0])
    torch.export.save(torch.export.export(m, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},)),
                      tmp_path / "ids.pt2")
    spec = load_model(str(tmp_path / "ids.pt2"))
    assert spec.inputs[0].dtype == "int64" and spec.extra["vocab_size"] == VOCAB
    with pytest.raises(InputShapeError, match="takes input 'ids' as int64"):
        load_model(str(tmp_path / "ids.pt2"), input_dtype="int32")


# --- data ---------------------------------------------------------------------------------------

def test_data_for_an_ids_model(files):
    from edgecompress.data.resolve import resolve_data

    spec = load_model(ids_mean(), input_shape=(1, SEQ), input_dtype="int64")
    ds = resolve_data(spec, str(files["npz"]), "calibration", progress=False)
    assert ds.x.dtype == np.int64 and ds.y is not None and len(ds) == 80
    ds32 = resolve_data(spec, str(files["npy32"]), "calibration", progress=False)
    assert ds32.x.dtype == np.int64  # int32 ids cast to what the model takes
    with pytest.raises(DataError, match=r"dtype float32 but the model takes int64 ids .*x.astype\(np.int64\)"):
        resolve_data(spec, str(files["floats"]), "calibration", progress=False)
    with pytest.raises(DataError, match=r"sample 5 holds id 1007, outside the model's embedding table of 1000 rows"):
        resolve_data(spec, str(files["out_of_range"]), "evaluation", progress=False)
    with pytest.raises(DataError, match=r"images: an image folder, but model IdsMean takes int64 ids \(1, 16\); "
                                        r"give a \.npy / \.npz of integer ids"):
        resolve_data(spec, str(files["images"]), "calibration", progress=False)
    # samples in memory too (what export() and validate() check)
    from edgecompress.data import Dataset
    from edgecompress.exporters import export

    with pytest.raises(DataError, match="dtype float64 but the model takes int64 ids"):
        export(spec, "onnx", "int8", files["npz"].parent / "never", Dataset(np.zeros((4, SEQ))))
    assert not (files["npz"].parent / "never").exists()


# --- export and validation ----------------------------------------------------------------------

def _rows(out: Path) -> dict[tuple[str, str], dict]:
    return {(a["format"], a["precision"]): a for a in json.loads((out / "report.json").read_text())["artifacts"]}


def test_cli_export_every_format_and_validate(files, tmp_path):
    """The whole path from the CLI: a factory declared int64, .npz ids with labels; --int8 gives ONNX
    and OpenVINO int8 and TFLite dynamic-int8 (full-integer int8 cannot apply, a note says so)."""
    out = tmp_path / "out"
    proc = run_cli("export", f"{HERE}:ids_conv", "--input-shape", "1,16", "--input-dtype", "int64",
                   "-f", "onnx", "-f", "openvino", "-f", "tflite", "--int8",
                   "--calib", f"{files['npz']}[:32]", "--eval", f"{files['npz']}[32:]",
                   "--runs", "3", "--warmup", "1", "--rounds", "1", "--no-progress", "--out", str(out), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tflite uses dynamic-int8" in proc.stderr, proc.stderr[-2000:]
    rows = _rows(out)
    assert set(rows) == {("onnx", "fp32"), ("onnx", "int8"), ("openvino", "fp32"), ("openvino", "int8"),
                         ("tflite", "fp32"), ("tflite", "dynamic-int8")}, rows.keys()
    for key, a in rows.items():
        assert a["status"] == "ok", (key, a.get("error"))
        d = a["drift"]
        if key[1] == "fp32":
            assert d["cosine"] >= 0.9999 and d["top1_agreement"] == 1.0, (key, d)
        else:
            assert d["top1_agreement"] >= INT8_AGREEMENT and d["cosine"] >= 0.99, (key, d)
            assert a["metrics"]["top1"] >= INT8_AGREEMENT, (key, a["metrics"])  # the labels: class c
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["input_dtype"] == "int64" and report["reference"]["top1"] == 1.0
    assert "[1, 16] int64 ids" in (out / "report.md").read_text()
    # each file takes integer ids: int64 in ONNX and OpenVINO, int32 in the .tflite (LiteRT's)
    from edgecompress.targets.device_report import load_artifacts

    arts = {(a.format, a.precision): a for a in load_artifacts([out])[0]}
    assert arts["onnx", "int8"].inputs[0].dtype == "int64" and arts["openvino", "int8"].inputs[0].dtype == "int64"
    assert arts["tflite", "dynamic-int8"].inputs[0].dtype == "int32"
    assert all(a.details.get("vocab_size") == VOCAB for a in arts.values())

    # `validate` of the folder on the ids (int32 ones: each runner casts to its file's type)
    vout = tmp_path / "val"
    proc = run_cli("validate", str(out), "--eval", str(files["npy32"]), "--runs", "2", "--warmup", "0",
                   "--rounds", "1", "--no-progress", "--out", str(vout), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    vrows = _rows(vout)
    assert all(a["status"] == "ok" for a in vrows.values()), vrows
    assert vrows["onnx", "int8"]["drift"]["top1_agreement"] >= INT8_AGREEMENT
    # float samples or images for those files: one line, exit 2, no report
    for bad, says in ((files["floats"], "dtype float32 but the artifacts take int64 ids"),
                      (files["images"], "an image folder, but")):
        proc = run_cli("validate", str(out), "--eval", str(bad), "--no-progress", "--out", str(tmp_path / "v2"),
                       cwd=ROOT)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and lines[-1].startswith("error: ") and says in lines[-1], proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr and not (tmp_path / "v2").exists()


def test_python_export_int8_and_tflite_mixed(files, tmp_path):
    """From Python, on the mean model: ONNX int8 (ORT quantizes the Gather's table too) and
    int8-dynamic, a TFLite full-int8 refused up front (nothing written, no calibration) and
    accepted mixed with allow_mixed, and validate() on int64 ids against the PyTorch reference."""
    from edgecompress.data import load_data
    from edgecompress.exporters import ExportOptions, export
    from edgecompress.targets import ValidateSettings, reference_outputs, validate

    spec = load_model(ids_mean(), input_shape=(1, SEQ), input_dtype="int64")
    calib, ev = load_data(f"{files['npz']}[:32]"), load_data(f"{files['npz']}[32:]")
    with pytest.raises(ExportError, match=r"^tflite int8 of IdsMean: full-integer int8 does not apply to a model of "
                                          r"int64 ids .* export tflite:dynamic-int8"):
        export(spec, "tflite", "int8", tmp_path / "strict", calib, ExportOptions(progress=False))
    assert not (tmp_path / "strict").exists()
    opts = ExportOptions(progress=False)
    arts = [export(spec, "onnx", "int8", tmp_path, calib, opts),
            export(spec, "onnx", "int8-dynamic", tmp_path, calib, opts),
            export(spec, "tflite", "int8", tmp_path, calib, ExportOptions(progress=False, allow_mixed=True))]
    import onnx

    ops = {n.op_type for n in onnx.load(str(arts[0].path)).graph.node}
    assert "Gather" in ops and "DequantizeLinear" in ops
    tfl = arts[2]
    assert tfl.inputs[0].dtype == "int32" and tfl.inputs[0].scale is None and tfl.outputs[0].dtype == "int8"
    assert "EMBEDDING_LOOKUP" in {o.split("#")[0] for o in tfl.details["float_ops"]}  # the float lookup
    ref = reference_outputs(spec, ev, progress=False)
    ms = validate(arts, "x86-local", ev, ref, ValidateSettings(runs=2, warmup=0, rounds=1), progress=False)
    for m in ms:
        assert m.status == "ok", m.error
        assert m.drift["top1_agreement"] >= INT8_AGREEMENT and m.metrics["top1"] >= INT8_AGREEMENT, m.drift
    # without evaluation data, the random latency inputs are ids below the vocabulary too
    small = load_model(IdsMean(vocab=12), input_shape=(1, SEQ))
    art = export(small, "onnx", "fp32", tmp_path / "small", None, opts)
    m = validate([art], "x86-local", settings=ValidateSettings(runs=2, warmup=0, rounds=1), progress=False)[0]
    assert m.status == "ok" and m.latency_ms["1"]["p50"] > 0, m.error


@pytest.mark.parametrize("case", ["dtype", "floats", "images", "tflite-int8"])
def test_cli_refusals_are_one_line_and_leave_nothing(files, tmp_path, case):
    args = {
        "dtype": (["--input-dtype", "int16", "--calib", str(files["npy"])], 2, "--input-dtype 'int16': use one of "
                  "float32, int64, int32"),
        "floats": (["--calib", str(files["floats"])], 2, "dtype float32 but the model takes int64 ids"),
        "images": (["--calib", str(files["images"])], 2, "an image folder, but model ids_mean takes int64 ids"),
        "tflite-int8": (["-f", "tflite:int8", "--calib", str(files["npy"])], 3,
                        "tflite int8 of ids_mean: full-integer int8 does not apply"),
    }
    extra, code, says = args[case]
    out = tmp_path / "out"
    fmt = [] if "-f" in extra else ["-f", "onnx:int8"]
    proc = run_cli("export", f"{HERE}:ids_mean", "--input-shape", "1,16", *fmt, *extra, "--no-validate",
                   "--no-progress", "--out", str(out), cwd=ROOT)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == code, proc.stderr[-2000:]
    assert lines[-1].startswith("error: ") and says in lines[-1], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not out.exists() or not any(out.iterdir()), list(out.iterdir())


# --- passes -------------------------------------------------------------------------------------

DISTILL_EPOCHS, DISTILL_TOP1 = 10, 0.9


class EmbedMlp(nn.Module):
    """An Embedding, then a hidden layer prune can narrow."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, DIM)
        self.fc1 = nn.Linear(DIM, 64)
        self.head = nn.Linear(64, CLASSES)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc1(self.emb(ids).mean(1))))


def test_distill_and_passes_on_ids(files, tmp_path):
    """distill fine-tunes a model of ids on integer data (no image augmentation touches them): a
    randomly initialised student learns the decisive teacher; lowrank and prune run on such a
    model; resolution refuses it in one line."""
    import edgecompress as ec
    from edgecompress.data import load_data

    data = load_data(str(files["npz"]))
    torch.manual_seed(0)
    student = load_model(IdsMean(), input_shape=(1, SEQ))

    def top1(spec) -> float:
        with torch.no_grad():
            return float((spec.module(torch.from_numpy(data.x)).argmax(1).numpy() == data.y).mean())

    before = top1(student)
    out = ec.distill(student, data=data, teacher=ids_mean(), epochs=DISTILL_EPOCHS, batch_size=16, lr=0.05,
                     progress=False)
    log = out.extra["passes"][-1]["log"]
    assert out.inputs[0].dtype == "int64" and log["epochs"] == DISTILL_EPOCHS and log["teacher"] == "given"
    assert before < 0.3 and top1(out) >= DISTILL_TOP1, (before, top1(out))
    mlp = load_model(EmbedMlp(), input_shape=(1, SEQ))  # random weights: low-rank energy to cut
    low = ec.lowrank(mlp, energy=0.8, progress=False)
    assert low.inputs[0].dtype == "int64" and "fc1" in low.extra["passes"][-1]["log"]["ranks"]
    pruned = ec.prune(mlp, ratio=0.5, progress=False)
    assert pruned.module.fc1.out_features < 64 and pruned.inputs[0].dtype == "int64"
    with pytest.raises(ConfigError, match="the pass needs one image input"):
        ec.resolution(mlp, size=8, progress=False)


def test_compress_records_input_dtype(files, tmp_path):
    out = tmp_path / "c"
    proc = run_cli("compress", f"{HERE}:ids_mean", "--input-shape", "1,16", "--input-dtype", "int64",
                   "--distill-epochs", "1", "--train", str(files["npz"]), "--eval", str(files["npz"]),
                   "-f", "onnx:int8", "--runs", "2", "--warmup", "0", "--rounds", "1", "--no-progress",
                   "--out", str(out), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import yaml

    assert yaml.safe_load((out / "recipe.resolved.yaml").read_text())["input_dtype"] == "int64"
    (row,) = _rows(out).values()
    assert row["status"] == "ok" and row["drift"]["top1_agreement"] >= INT8_AGREEMENT, row
    # a recipe asking for tflite:int8 of ids is refused before its passes train
    from edgecompress.recipe import run_recipe

    with pytest.raises(ExportError, match=r"^recipe: export: tflite int8 of ids_mean: full-integer"):
        run_recipe({"model": f"{HERE}:ids_mean", "input_shape": [1, 16], "passes": [{"distill": {"epochs": 1}}],
                    "data": {"train": str(files["npz"])}, "export": ["tflite:int8"]}, tmp_path / "r")
    assert not (tmp_path / "r" / "step1-distill").exists()
    with pytest.raises(ConfigError, match=r"input_dtype: 'int8': use one of float32, int64, int32"):
        run_recipe({"model": f"{HERE}:ids_mean", "input_shape": [1, 16], "input_dtype": "int8"}, tmp_path / "r2")


# --- leftovers: the detected dtype recorded, allow_mixed in recipes / compress, tflite int8 of ids,
# an .onnx of ids checked against its table, channel pruning of a Conv1d stack -----------------------

def test_detected_dtype_is_recorded_in_resolved_recipe_and_report(tmp_path):
    """An Embedding-first factory without input_dtype: the resolved recipe holds the dtype the run
    used (it was `input_dtype: null`), with a comment saying it was detected, and reruns as it is;
    report.json / report.md say so too."""
    import yaml

    from edgecompress.recipe import RESOLVED_NAME, load_recipe, run_recipe

    out = tmp_path / "r"
    run_recipe({"model": f"{HERE}:ids_mean", "input_shape": [1, SEQ], "export": ["onnx:fp32"],
                "options": {"validate_artifacts": False, "progress": False}}, out)
    text = (out / RESOLVED_NAME).read_text()
    assert "input_dtype: int64  # detected: nn.Embedding 'emb' first, 1000 rows\n" in text, text
    assert yaml.safe_load(text)["input_dtype"] == "int64"
    assert load_recipe(out / RESOLVED_NAME).input_dtype == "int64"
    model = json.loads((out / "report.json").read_text())["model"]
    assert model["input_dtype"] == "int64" and model["input_dtype_detected"] == "nn.Embedding 'emb' first, 1000 rows"
    assert "[1, 16] int64 ids (detected: nn.Embedding 'emb' first, 1000 rows)" in (out / "report.md").read_text()
    # declared: nothing detected, nothing said
    declared = load_model(ids_mean(), input_shape=(1, SEQ), input_dtype="int64")
    assert declared.input_dtype_fields() == {"input_dtype": "int64"}


def test_recipe_allow_mixed_is_validated_and_round_trips(files, tmp_path):
    from edgecompress.recipe import anchored, load_recipe, parse_recipe, run_recipe, save_recipe

    base = {"model": f"{HERE}:ids_mean", "input_shape": [1, SEQ], "export": ["tflite:int8"],
            "data": {"calib": str(files["npz"])}}
    with pytest.raises(ConfigError, match=r"^recipe: options\.allow_mixed: Input should be a valid boolean"):
        parse_recipe({**base, "options": {"allow_mixed": "yes"}})
    r = parse_recipe({**base, "options": {"allow_mixed": True}})
    assert r.export_options().allow_mixed
    back = load_recipe(save_recipe(r, tmp_path / "r.yaml"))
    assert back.options.allow_mixed is True and back.resolved() == anchored(r).resolved()
    # refused in the recipe's own words (its key, not the flag), before any work
    with pytest.raises(ExportError, match=r"^recipe: export: tflite int8 of ids_mean: .*dynamic-int8 \(int8 weights\), "
                                          r"or accept .* with options\.allow_mixed: true$"):
        run_recipe(base, tmp_path / "refused")


def test_compress_allow_mixed(files, tmp_path):
    """`compress --allow-mixed` means what `export --allow-mixed` means: a mixed tflite int8 of ids
    (int32 ids in, int8 layers after the float lookup), written into the resolved recipe."""
    import yaml

    common = ["compress", f"{HERE}:ids_mean", "--input-shape", "1,16", "-f", "tflite:int8",
              "--calib", f"{files['npz']}[:32]", "--eval", f"{files['npz']}[32:]", "--runs", "2", "--warmup", "0",
              "--rounds", "1", "--no-progress"]
    proc = run_cli(*common, "--out", str(tmp_path / "strict"), cwd=ROOT)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 3 and "full-integer int8 does not apply" in lines[-1] and "--allow-mixed" in lines[-1], \
        proc.stderr[-2000:]
    out = tmp_path / "mixed"
    proc = run_cli(*common, "--allow-mixed", "--out", str(out), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "has no effect" not in proc.stderr, proc.stderr[-2000:]  # a tflite int8 it applies to
    assert yaml.safe_load((out / "recipe.resolved.yaml").read_text())["options"]["allow_mixed"] is True
    rows = _rows(out)
    mixed = rows["tflite", "int8"]
    assert mixed["status"] == "ok" and mixed["details"]["mixed"], mixed
    assert mixed["drift"]["top1_agreement"] >= INT8_AGREEMENT, mixed["drift"]


def test_int8_for_tflite_of_ids():
    """`--int8` on a model of ids gives tflite dynamic-int8 (full integer cannot apply), and the
    mixed int8 file when --allow-mixed says a mixed file is wanted; an image model keeps int8."""
    from edgecompress.exporters import ExportOptions
    from edgecompress.pipeline import adapt_int8

    spec = load_model(ids_mean(), input_shape=(1, SEQ))
    pairs = [("tflite", "int8"), ("onnx", "int8")]
    assert adapt_int8(spec, pairs, ("tflite", "onnx"), progress=False) == [("tflite", "dynamic-int8"), ("onnx", "int8")]
    assert adapt_int8(spec, pairs, ("tflite", "onnx"), progress=False,
                      options=ExportOptions(allow_mixed=True)) == pairs


ALLOW_MIXED_UNUSED = ("note: --allow-mixed has no effect: it only applies to tflite int8, which this run does not "
                      "export")


@pytest.mark.parametrize("command", ["export", "compress"])
def test_allow_mixed_without_tflite_int8_says_so(files, tmp_path, command):
    """--allow-mixed with no tflite int8 to apply to did nothing without a word: a one-line note
    (not an error), from `export` and from `compress` (whose recipe sets options.allow_mixed)."""
    args = [command, f"{HERE}:ids_mean", "--input-shape", "1,16", "-f", "onnx", "--allow-mixed", "--no-progress",
            "--out", str(tmp_path / "out")]
    args += ["--no-validate"] if command == "export" else ["--runs", "1", "--warmup", "0", "--rounds", "1"]
    proc = run_cli(*args, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    notes = [ln for ln in proc.stderr.splitlines() if "--allow-mixed" in ln]
    assert notes == [ALLOW_MIXED_UNUSED], proc.stderr[-2000:]  # once, as compress's recipe exports too


def test_recipe_allow_mixed_without_tflite_int8_says_so_in_its_key(files, tmp_path, capsys):
    from edgecompress.recipe import run_recipe

    recipe = {"model": f"{HERE}:ids_mean", "input_shape": [1, SEQ], "export": ["onnx"],
              "options": {"allow_mixed": True, "validate_artifacts": False}}
    run_recipe(recipe, tmp_path / "out", progress=False)
    err = capsys.readouterr().err
    assert "note: options.allow_mixed: true has no effect: it only applies to tflite int8" in err, err
    assert err.count("has no effect") == 1, err


def test_int8_note_gives_advice_that_works_for_tflite_of_ids(files, tmp_path):
    """The --int8 note on a model of ids named `tflite:int8` explicitly as the other route, which is
    refused unless --allow-mixed: it says so; the advice it gives is then taken and works."""
    common = ["export", f"{HERE}:ids_mean", "--input-shape", "1,16", "--no-validate", "--no-progress"]
    proc = run_cli(*common, "-f", "tflite", "--int8", "--out", str(tmp_path / "auto"), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    note = "note: --int8 on ids_mean (classification): tflite uses dynamic-int8 (or tflite:int8 with --allow-mixed " \
           "for a mixed file of int8 layers and float ops)"
    assert note in proc.stderr.splitlines(), proc.stderr[-2000:]
    proc = run_cli(*common, "-f", "tflite:int8", "--allow-mixed", "--calib", f"{files['npz']}[:16]",
                   "--out", str(tmp_path / "mixed"), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "mixed" / "manifest.json").exists()


def test_int8_note_from_python_names_the_option(capsys):
    from edgecompress.pipeline import adapt_int8

    spec = load_model(ids_mean(), input_shape=(1, SEQ))
    adapt_int8(spec, [("tflite", "int8")], ("tflite",), progress=False)
    err = capsys.readouterr().err
    assert "tflite uses dynamic-int8 (or tflite:int8 with ExportOptions(allow_mixed=True) for a mixed file" in err, err
    assert "--" not in err, err


class IdsConvStack(nn.Module):
    """nn.Embedding -> two Conv1d over the sequence (the second of kernel `k2`) -> mean -> Linear."""

    def __init__(self, k2: int = 3) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, DIM)
        self.conv1 = nn.Conv1d(DIM, 64, 3, padding=1)
        self.conv2 = nn.Conv1d(64, 64, k2, padding=k2 // 2)
        self.head = nn.Linear(64, CLASSES)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv1(self.emb(ids).transpose(1, 2)))
        return self.head(torch.relu(self.conv2(h)).mean(-1))


def test_prune_embedding_conv1d_stack(files, tmp_path):
    """Channel pruning reaches Conv1d layers (it rooted its groups at Conv2d / Linear only and
    pruned nothing here): params drop, the model runs on ids and exports to ONNX, which agrees."""
    import edgecompress as ec
    from edgecompress.exporters import ExportOptions, export

    torch.manual_seed(0)
    spec = load_model(IdsConvStack(), input_shape=(1, SEQ))
    before = sum(p.numel() for p in spec.module.parameters())
    pruned = ec.prune(spec, ratio=0.5, progress=False)
    m = pruned.module
    assert m.conv1.out_channels == 32 and m.conv2.in_channels == 32 and m.conv2.out_channels == 32
    assert m.head.in_features == 32 and m.head.out_features == CLASSES and m.emb.num_embeddings == VOCAB
    assert sum(p.numel() for p in m.parameters()) < 0.8 * before
    assert pruned.inputs[0].dtype == "int64"
    x = torch.from_numpy(ids_data(8)[0])
    with torch.no_grad():
        y = m(x)
    assert y.shape == (8, CLASSES)
    art = export(pruned, "onnx", "fp32", tmp_path, None, ExportOptions(progress=False))
    import onnxruntime as ort

    sess = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    assert np.abs(got - y.numpy()).max() < 1e-4


def test_unstructured_prune_reaches_conv1d():
    """method unstructured ranks Conv1d weights with the rest (it took Conv2d / Linear only, so
    the convolutions of this model kept every weight and the head lost most of its own)."""
    import edgecompress as ec

    torch.manual_seed(0)
    pruned = ec.prune(load_model(IdsConvStack(), input_shape=(1, SEQ)), method="unstructured", ratio=0.5,
                      progress=False).module
    zeros = {n: float((m.weight == 0).float().mean()) for n, m in pruned.named_modules()
             if isinstance(m, nn.Conv1d | nn.Linear)}
    assert zeros["conv1"] > 0.2 and zeros["conv2"] > 0.2, zeros
    total = sum(m.weight.numel() for n, m in pruned.named_modules() if n in zeros)
    zeroed = sum(zeros[n] * m.weight.numel() for n, m in pruned.named_modules() if n in zeros)
    assert abs(zeroed / total - 0.5) < 0.01


def test_prune_ignore_stem_and_head_of_conv1d(files):
    """ignore_stem / ignore_head keep the first / last Conv1d whole, as they do a Conv2d (they looked
    for Conv2d layers only, and pruned both convolutions of this model)."""
    import edgecompress as ec

    torch.manual_seed(0)
    spec = load_model(IdsConvStack(), input_shape=(1, SEQ))
    stem = ec.prune(spec, ratio=0.5, ignore_stem=True, progress=False).module
    assert (stem.conv1.out_channels, stem.conv2.out_channels) == (64, 32)
    head = ec.prune(spec, ratio=0.5, ignore_head=True, progress=False).module
    assert (head.conv1.out_channels, head.conv2.out_channels) == (32, 64) and head.head.in_features == 64


def test_prune_reconstruct_of_conv1d_chains(files):
    """method reconstruct finds Conv1d chains (conv1 -> the 1x1 conv2, conv2 -> mean -> head) and
    refits their consumers: its outputs stay closer to the model's than magnitude pruning's at the
    same ratio (it rooted chains at Conv2d / Linear only, and pruned nothing here)."""
    import edgecompress as ec
    from edgecompress.data import Dataset
    from edgecompress.passes._reconstruct import find_chains
    from edgecompress.passes.prune import PruneConfig, _ignored

    torch.manual_seed(0)
    spec = load_model(IdsConvStack(k2=1), input_shape=(1, SEQ))
    m, example = spec.module, spec.example_inputs(1)
    chains, _ = find_chains(m, example, _ignored(m, PruneConfig(), example))
    assert [(c.root, c.consumer) for c in chains] == [("conv1", "conv2"), ("conv2", "head")]
    x, y = ids_data(256)
    rec = ec.prune(spec, ratio=0.5, method="reconstruct", data=Dataset(x, y, "ids"), progress=False).module
    mag = ec.prune(spec, ratio=0.5, progress=False).module
    assert (rec.conv1.out_channels, rec.conv2.in_channels, rec.conv2.out_channels, rec.head.in_features) == \
        (32, 32, 32, 32)
    held = torch.from_numpy(ids_data(64, seed=1)[0])
    with torch.no_grad():
        ref, got, magnitude = m(held), rec(held), mag(held)
    assert got.shape == (64, CLASSES)
    err, mag_err = float(((got - ref) ** 2).mean()), float(((magnitude - ref) ** 2).mean())
    assert err < 0.5 * mag_err, (err, mag_err)
    # a MACs target: the cost model counts Conv1d MACs (kernel x in channels per output)
    from edgecompress.passes._common import model_stats

    to = ec.prune(spec, ratio=None, target_macs=0.3, method="reconstruct", round_to=None,
                  data=Dataset(x, y, "ids"), progress=False)
    removed = 1 - model_stats(to)["macs"] / model_stats(spec)["macs"]
    assert 0.25 < removed < 0.35, removed


def _ids_onnx(path: Path, rows: int) -> Path:
    """A hand-written .onnx: int32 ids -> Cast(int64) -> Gather from a (rows, 4) initializer -> mean."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    table = numpy_helper.from_array(np.random.default_rng(0).normal(size=(rows, 4)).astype(np.float32), "table")
    graph = helper.make_graph(
        [helper.make_node("Cast", ["ids"], ["ids64"], to=TensorProto.INT64),
         helper.make_node("Gather", ["table", "ids64"], ["emb"]),
         helper.make_node("ReduceMean", ["emb"], ["out"], axes=[1], keepdims=0)],
        "ids", [helper.make_tensor_value_info("ids", TensorProto.INT32, ["batch", SEQ])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 4])], [table])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_onnx_of_ids_checks_its_table(files, tmp_path):
    """An .onnx whose input is first a Gather from an initializer (straight, through a Cast, or
    through an int8 file's DequantizeLinear): calibration / evaluation ids are checked against the
    table's rows, in the words a torch model's nn.Embedding gets."""
    from edgecompress.data import Dataset
    from edgecompress.data.resolve import resolve_data
    from edgecompress.exporters import ExportOptions, export

    fp32 = export(load_model(ids_mean(), input_shape=(1, SEQ)), "onnx", "fp32", tmp_path, None,
                  ExportOptions(progress=False))
    spec = load_model(str(fp32.path))
    assert spec.inputs[0].dtype == "int64" and spec.extra["vocab_size"] == VOCAB
    for purpose in ("calibration", "evaluation"):
        with pytest.raises(DataError, match=r"sample 5 holds id 1007, outside the model's embedding table of 1000 "
                                            r"rows \(ids 0\.\.999\)"):
            resolve_data(spec, str(files["out_of_range"]), purpose, progress=False)
    calib = resolve_data(spec, f"{files['npz']}[:32]", "calibration", progress=False)
    int8 = export(spec, "onnx", "int8", tmp_path / "q", calib, ExportOptions(progress=False))
    assert load_model(str(int8.path)).extra["vocab_size"] == VOCAB  # Gather of DequantizeLinear(table)
    small = load_model(str(_ids_onnx(tmp_path / "small.onnx", 50)))
    assert small.inputs[0].dtype == "int32" and small.extra["vocab_size"] == 50
    ids = np.load(files["npy"])[:8]
    assert int(ids.max()) >= 50
    with pytest.raises(DataError, match="outside the model's embedding table of 50 rows"):  # samples in memory
        export(small, "onnx", "int8", tmp_path / "never", Dataset(ids))
    assert not (tmp_path / "never").exists()


def _three_input_onnx(path: Path, words: int = 50, types: int = 2, head: bool = False) -> Path:
    """input_ids -> Gather(words x 4), token_type_ids -> Gather(types x 4), attention_mask multiplied
    in (it indexes no table), mean over the sequence: a text encoder's inputs in a few nodes.
    `head`: a MatMul (4 -> 3) after the mean, so int8 has a layer to quantize."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    ids = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", 8])
           for n in ("input_ids", "attention_mask", "token_type_ids")]
    inits = [numpy_helper.from_array(rng.standard_normal((words, 4)).astype(np.float32), "words"),
             numpy_helper.from_array(rng.standard_normal((types, 4)).astype(np.float32), "types"),
             numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2")]
    nodes = [helper.make_node("Gather", ["words", "input_ids"], ["w"]),
             helper.make_node("Gather", ["types", "token_type_ids"], ["t"]),
             helper.make_node("Add", ["w", "t"], ["e"]),
             helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["m", "axis2"], ["m3"]),
             helper.make_node("Mul", ["e", "m3"], ["em"]),
             helper.make_node("ReduceMean", ["em"], ["pooled" if head else "output"], axes=[1], keepdims=0)]
    if head:
        inits.append(numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "proj"))
        nodes.append(helper.make_node("MatMul", ["pooled", "proj"], ["output"]))
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 3 if head else 4])
    model = helper.make_model(helper.make_graph(nodes, "three", ids, [out], inits),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_onnx_of_several_inputs_checks_each_table(tmp_path):
    """An .onnx of several integer inputs: each input gathered from a table is bounded by its rows
    (input_ids by 50, token_type_ids by 2); the attention mask indexes none, so it has no bound to
    check. Data in memory is checked input by input; random latency inputs stay inside the tables
    (token_type_ids of 0..99 failed in ONNX Runtime's Gather)."""
    from edgecompress.data import Dataset
    from edgecompress.data.resolve import resolve_data
    from edgecompress.exporters import ExportOptions, export
    from edgecompress.targets import ValidateSettings, validate

    spec = load_model(str(_three_input_onnx(tmp_path / "three.onnx")))
    assert spec.extra.get("input_vocab") == {"input_ids": 50, "token_type_ids": 2}
    assert "vocab_size" not in spec.extra  # (one bound for every input would be wrong for two of them)
    ex = dict(zip([i.name for i in spec.inputs], spec.example_inputs(4), strict=True))
    assert int(ex["input_ids"].max()) < 50 and int(ex["token_type_ids"].max()) < 2

    rng = np.random.default_rng(1)
    good = {"input_ids": rng.integers(0, 50, (16, 8)), "attention_mask": np.ones((16, 8), np.int64),
            "token_type_ids": rng.integers(0, 2, (16, 8))}
    for name, bad_id, rows in (("input_ids", 57, 50), ("token_type_ids", 2, 2)):
        x = {k: v.copy() for k, v in good.items()}
        x[name][3, 5] = bad_id
        match = (rf"input '{name}': sample 3 holds id {bad_id}, outside the model's embedding table of {rows} "
                 rf"rows \(ids 0\.\.{rows - 1}\)")
        with pytest.raises(DataError, match=match):
            resolve_data(spec, Dataset(x), "calibration", progress=False)
        with pytest.raises(DataError, match=match):
            export(spec, "onnx", "int8", tmp_path / "never", Dataset(x), ExportOptions(progress=False))
    assert not (tmp_path / "never").exists()
    x = {k: v.copy() for k, v in good.items()}
    x["attention_mask"][0, 0] = 7  # no table: not checked (nothing in the file bounds it)
    resolve_data(spec, Dataset(x), "calibration", progress=False)

    art = export(spec, "onnx", "fp32", tmp_path / "out", None, ExportOptions(progress=False))
    assert art.details["input_vocab"] == {"input_ids": 50, "token_type_ids": 2}
    m = validate([art], "x86-local", settings=ValidateSettings(runs=2, warmup=0, rounds=1), progress=False)[0]
    assert m.status == "ok" and m.latency_ms["1"]["p50"] > 0, m.error


def test_validate_refuses_evaluation_ids_beyond_the_table(tmp_path):
    """validate()'s evaluation ids were checked for their dtype only, not against the table they
    index: an id beyond it reached ONNX Runtime's Gather, and the file came back as a failed row.
    Refused up front in one line naming the input and its rows, as calibration data is: a single
    input's ids against the model's vocab_size, each input of several against its own table."""
    from edgecompress.data import Dataset
    from edgecompress.exporters import ExportOptions, export
    from edgecompress.targets import ValidateSettings, validate

    quiet, settings = ExportOptions(progress=False), ValidateSettings(runs=2, warmup=0, rounds=1)
    small = export(load_model(IdsMean(vocab=12), input_shape=(1, SEQ)), "onnx", "fp32", tmp_path / "small", None,
                   quiet)
    x = np.random.default_rng(0).integers(0, 12, (4, SEQ))
    (m,) = validate([small], "x86-local", eval_data=Dataset(x), settings=settings, progress=False)
    assert m.status == "ok", m.error
    x[2, 7] = 12
    with pytest.raises(DataError, match=r"^evaluation data .*: sample 2 holds id 12, outside the model's embedding "
                                        r"table of 12 rows \(ids 0\.\.11\)$"):
        validate([small], "x86-local", eval_data=Dataset(x), settings=settings, progress=False)

    three = export(load_model(str(_three_input_onnx(tmp_path / "three.onnx"))), "onnx", "fp32", tmp_path / "three",
                   None, quiet)
    rng = np.random.default_rng(1)
    x = {"input_ids": rng.integers(0, 50, (4, 8)), "attention_mask": np.ones((4, 8), np.int64),
         "token_type_ids": rng.integers(0, 2, (4, 8))}
    x["token_type_ids"][1, 3] = 2
    with pytest.raises(DataError, match=r"^evaluation data .*: input 'token_type_ids': sample 1 holds id 2, outside "
                                        r"the model's embedding table of 2 rows \(ids 0\.\.1\)$"):
        validate([three], "x86-local", eval_data=Dataset(x), settings=settings, progress=False)


def test_several_inputs_take_int32_ids_and_bool_masks_and_refuse_floats(tmp_path):
    """Data of several inputs (a dict of arrays) was range-checked but not cast: int32 ids (an .npz
    written from int32 arrays) for the file's int64 inputs failed ONNX int8 mid-calibration with
    ORT's "Unexpected input data type. Actual: (tensor(int32))", and a bool mask failed validate
    as the artifact's "benchmark failed". Integers are now cast to each input's type, as a single
    input's ids are; floats under an input of ids are refused, integral or not, naming the input
    and the file (OpenVINO truncated a 0.5 mask to 0 without a word)."""
    import re

    from edgecompress.data import Dataset
    from edgecompress.data.resolve import resolve_data
    from edgecompress.exporters import ExportOptions, export
    from edgecompress.targets import ValidateSettings, validate

    quiet, settings = ExportOptions(progress=False), ValidateSettings(runs=2, warmup=0, rounds=1)
    spec = load_model(str(_three_input_onnx(tmp_path / "three.onnx", head=True)))
    assert [i.dtype for i in spec.inputs] == ["int64"] * 3
    rng = np.random.default_rng(1)
    good = {"input_ids": rng.integers(0, 50, (16, 8)), "attention_mask": (rng.random((16, 8)) < 0.8).astype(np.int64),
            "token_type_ids": rng.integers(0, 2, (16, 8))}
    npz = tmp_path / "ids32.npz"
    np.savez(npz, **{k: v.astype(np.int32) for k, v in good.items()})
    with np.load(npz) as z:
        x32 = {k: z[k] for k in z.files}
    x32["attention_mask"] = x32["attention_mask"].astype(bool)
    given = Dataset(x32, source=str(npz))

    ds = resolve_data(spec, Dataset(dict(x32), source=str(npz)), "calibration", progress=False)
    assert {k: v.dtype for k, v in ds.x.items()} == dict.fromkeys(good, np.dtype(np.int64))
    assert all(np.array_equal(ds.x[k], good[k]) for k in good)  # the same ids
    arts = {fmt: export(spec, fmt, "int8", tmp_path / fmt, given, quiet) for fmt in ("onnx", "openvino")}
    assert given.x["input_ids"].dtype == np.int32  # (a copy was cast, not the caller's set)
    fp32 = export(spec, "onnx", "fp32", tmp_path / "fp32", None, quiet)
    m = validate([fp32, *arts.values()], "x86-local", eval_data=given, settings=settings, progress=False)
    assert [r.status for r in m] == ["ok"] * 3, [r.error for r in m]

    for bad in (good["attention_mask"].astype(np.float32), good["attention_mask"] * 0.5):
        x = {**good, "attention_mask": bad}
        match = (rf"^calibration data {re.escape(str(npz))}: input 'attention_mask': dtype {bad.dtype} but the "
                 r"model takes int64 ids")
        with pytest.raises(DataError, match=match):
            export(spec, "onnx", "int8", tmp_path / "never", Dataset(x, source=str(npz)), quiet)
        with pytest.raises(DataError, match=match):
            resolve_data(spec, Dataset(x, source=str(npz)), "calibration", progress=False)
        with pytest.raises(DataError, match=match.replace("^calibration", "^evaluation")):
            validate([fp32], "x86-local", eval_data=Dataset(x, source=str(npz)), settings=settings, progress=False)
    assert not (tmp_path / "never").exists()


def test_validate_of_a_loose_onnx_of_several_inputs_keeps_ids_in_each_table(tmp_path):
    """`edgecompress validate three.onnx` with no export report beside it: its random latency ids
    stay below each input's own table, read from the file (`Format.read_vocab`); token_type_ids of
    0..99 into a table of 2 rows failed in ONNX Runtime's Gather."""
    from edgecompress.targets import ValidateSettings
    from edgecompress.targets.device_report import load_artifacts, validate_artifacts

    loose = _three_input_onnx(tmp_path / "three.onnx")
    (art,), _ = load_artifacts([loose])
    assert art.details["input_vocab"] == {"input_ids": 50, "token_type_ids": 2}
    settings = ValidateSettings(runs=2, warmup=0, rounds=1)
    report, _, _ = validate_artifacts([loose], "x86-local", tmp_path / "v", settings=settings, progress=False)
    (row,) = report.artifacts
    assert row["status"] == "ok" and row["latency_ms"]["p50"] > 0, row.get("error")
    proc = run_cli("validate", str(loose), "--runs", "2", "--warmup", "0", "--rounds", "1", "--no-progress",
                   "--out", str(tmp_path / "cli"), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-1500:]
