"""Recipes: validation errors name the key, the resolved recipe round-trips, and a short chain
runs end to end with every step recorded (ratios, metric change) in the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from edgecompress.data import DataSpec
from edgecompress.errors import ConfigError
from edgecompress.recipe import load_recipe, parse_recipe, run_recipe, save_recipe


@pytest.mark.parametrize(("recipe", "key"), [
    ({"model": "zoo:digits-cnn", "passes": [{"shrink": {}}]}, "passes[0]"),
    ({"model": "zoo:digits-cnn", "passes": [{"prune": {"ratio": 1.5}}]}, "passes[0].prune.ratio"),
    ({"model": "zoo:digits-cnn", "passes": [{"prune": {"ratio": 0.5, "colour": 1}}]}, "passes[0].prune.colour"),
    ({"model": "zoo:digits-cnn", "passes": [{"lowrank": {"rank": -2}}]}, "passes[0].lowrank.rank"),
    ({"model": "zoo:digits-cnn", "passes": [{"distill": {"epochs": "many"}}]}, "passes[0].distill.epochs"),
    ({"model": "zoo:digits-cnn", "passes": [{"qat": {}}, {"prune": {}}]}, "passes[0].qat"),
    ({"model": "zoo:digits-cnn", "passes": [{"prune": {}, "distill": {}}]}, "passes"),
    ({"model": "zoo:digits-cnn", "export": ["onnx:int4"]}, "export"),
    ({"model": "zoo:digits-cnn", "passes": [{"qat": {}}], "export": ["onnx:fp32"]}, "export"),
    ({"model": "mypkg.models:build", "input_shape": [1, 3, 8, 8], "passes": [{"distill": {}}]}, "data.train"),
    ({"model": "mypkg.models:build", "input_shape": [1, 3, 8, 8], "export": ["onnx:int8"]}, "data.calib"),
    ({"passes": []}, "model"),
    ({"model": "zoo:digits-cnn", "exports": ["onnx"]}, "exports"),
    ({"model": "zoo:digits-cnn", "options": {"teacher": "nobody"}}, "options.teacher"),
    # audit: numbers given as true/false or as text were read as 1 and 0.5; nested distill keys
    # failed only when the pass began training
    ({"model": "zoo:digits-cnn", "passes": [{"distill": {"epochs": True}}]}, "passes[0].distill.epochs"),
    ({"model": "zoo:digits-cnn", "passes": [{"prune": {"ratio": "0.5"}}]}, "passes[0].prune.ratio"),
    ({"model": "zoo:digits-cnn", "options": {"runs": True}}, "options.runs"),
    ({"model": "zoo:digits-cnn", "passes": [{"prune": {"ratio": 0.5, "finetune_epochs": 1,
                                                        "distill": {"bogus": 1}}}]}, "passes[0].prune.distill.bogus"),
    ({"model": "zoo:digits-cnn", "passes": [{"qat": {"distill": {"bogus": 1}}}]}, "passes[0].qat.distill.bogus"),
    ({"model": "zoo:digits-cnn", "passes": [{"prune": [1]}]}, "passes[0].prune"),
])
def test_validation_errors_name_the_key(recipe, key):
    with pytest.raises(ConfigError) as e:
        parse_recipe(recipe)
    assert key in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


def test_yaml_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: zoo:digits-cnn\npasses: [prune: {ratio: 0.5}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml"):
        load_recipe(bad)


def test_resolved_recipe_round_trips(tmp_path):
    r = parse_recipe({"model": "zoo:digits-cnn", "passes": ["prune", {"distill": {"epochs": 3}},
                                                            {"qat": None}],
                      "export": ["onnx:int8", "openvino:int8"]})
    path = save_recipe(r, tmp_path / "r.yaml")
    back = load_recipe(path)
    assert back.resolved() == r.resolved()
    assert back.resolved()["passes"][1]["distill"]["epochs"] == 3
    assert back.resolved()["passes"][0]["prune"]["ratio"] == 0.5  # defaults made explicit
    # Saving the loaded one again gives the same text.
    assert save_recipe(back, tmp_path / "r2.yaml").read_text() == path.read_text()
    # the old QAT key `quantizer` still loads, as `backend`, and is not written back
    assert "quantizer" not in back.resolved()["passes"][2]["qat"]
    old = parse_recipe({"model": "zoo:digits-cnn", "passes": [{"qat": {"quantizer": "litert"}}],
                        "export": ["tflite:int8"]})
    assert old.resolved()["passes"][0]["qat"]["backend"] == "litert"
    assert "quantizer" not in old.resolved()["passes"][0]["qat"]


def test_yaml_key_given_twice_is_refused(tmp_path):
    dup = tmp_path / "dup.yaml"
    dup.write_text("model: zoo:digits-cnn\nexport: [onnx:int8]\nmodel: zoo:efficientnet-lite0\n")
    with pytest.raises(ConfigError, match=r"line 3: .*key 'model' given twice"):
        load_recipe(dup)


def test_a_failed_run_leaves_the_last_records_and_no_empty_folder(tmp_path):
    """The resolved recipe and steps.json are written last: a run failing inside a pass left its own
    recipe over the previous run's; a bad data path left an empty --out behind."""
    torch.set_num_threads(1)
    out = tmp_path / "o"
    ok = {"model": "zoo:digits-cnn", "passes": [{"prune": {"ratio": 0.5}}], "options": {"progress": False}}
    run_recipe(ok, out)
    records = ("recipe.resolved.yaml", "steps.json", "report.json", "step1-prune/model.pt")
    before = {name: (out / name).read_bytes() for name in records}
    bad = {**ok, "passes": [{"prune": {"ratio": 0.3, "ignored": ["no_such_layer"]}}]}
    with pytest.raises(ConfigError, match="no_such_layer"):
        run_recipe(bad, out)
    assert {name: (out / name).read_bytes() for name in before} == before
    # a first pass that succeeds at another ratio, then a failing one: step1's weights were
    # overwritten with the failed run's, which the kept steps.json does not describe
    later = {**ok, "passes": [{"prune": {"ratio": 0.3}}, bad["passes"][0]]}
    with pytest.raises(ConfigError, match="no_such_layer"):
        run_recipe(later, out)
    assert {name: (out / name).read_bytes() for name in before} == before
    assert not (out / "step2-prune").exists()
    fresh = tmp_path / "new" / "deeper"
    with pytest.raises(Exception, match="no such file"):
        run_recipe({**ok, "data": {"train": str(tmp_path / "missing.npz")}}, fresh)
    assert not (tmp_path / "new").exists()
    with pytest.raises(ConfigError, match="no_such_layer"):
        run_recipe(bad, fresh)
    assert not (tmp_path / "new").exists()  # its step folder held nothing: removed with it


def test_a_rerun_with_fewer_passes_names_the_step_folders_it_did_not_write(tmp_path, capsys):
    """`compress --prune 0.5 --distill-epochs 1` then `--prune 0.5` into one --out: the first run's
    step2-distill/ (model and checkpoint) stayed, listed nowhere, with no word."""
    torch.set_num_threads(1)
    out = tmp_path / "o"
    two = {"model": "zoo:digits-cnn", "passes": [{"prune": {"ratio": 0.5}}, {"lowrank": {"energy": 0.9}}],
           "options": {"progress": False}}
    run_recipe(two, out)
    assert "step folder" not in capsys.readouterr().err
    run_recipe({**two, "passes": two["passes"][:1]}, out)
    assert (f"note: {out} also holds step folder(s) this run did not write, listed in neither steps.json nor the "
            "report: step2-lowrank") in capsys.readouterr().err
    assert (out / "step2-lowrank").is_dir()  # edgecompress removes nothing of yours


def test_docs_recipes_are_valid():
    from pathlib import Path

    docs = Path(__file__).resolve().parent.parent / "docs" / "recipes"
    files = sorted(docs.glob("*.yaml"))
    assert files
    root = docs.parent.parent
    for f in files:
        recipe = load_recipe(f)
        # Data paths resolve against the recipe's folder: each must land in this repository
        # (benchmarks/.cache is written by benchmarks/compress_effnet.py, so only its parent must
        # exist), not in a docs/recipes/benchmarks/ that is not there.
        for key, text in recipe.data.model_dump().items():
            if isinstance(text, str) and text:
                path = Path(DataSpec.parse(text).path)
                holder = path.parent.parent if path.parent.name == ".cache" else path.parent
                assert holder.is_dir() and holder.resolve().is_relative_to(root), (f.name, key, path)


def test_chain_runs_and_records_every_step(tmp_path):
    torch.set_num_threads(1)
    recipe = {
        "model": "zoo:digits-cnn",
        "passes": [{"prune": {"ratio": 0.5}}, {"distill": {"epochs": 4, "lr": 0.003}}],
        "export": ["onnx:fp32"],
        "options": {"runs": 3, "warmup": 1, "progress": False},
    }
    report, paths = run_recipe(recipe, tmp_path)
    names = [s["name"] for s in report.steps]
    assert names == ["original", "prune", "distill", "chain total"]
    orig, pr, di, total = report.steps
    assert orig["ratios"] == {"alpha": 1.0, "beta": 1.0, "gamma": 1.0}
    assert pr["ratios"]["alpha"] < 0.32 and pr["ratios"]["beta"] < 0.32 and pr["ratios"]["gamma"] < 0.35
    assert di["step_ratios"]["alpha"] == 1.0  # distillation changes weights, not size
    assert pr["delta_metric"] < -0.05  # pruning without fine-tuning costs accuracy ...
    assert di["metric"] > pr["metric"] + 0.05  # ... and KD wins most of it back
    assert total["delta_metric"] == di["delta_metric"]
    # the chain's own step is the whole chain (it carried the last step's change)
    assert total["step_delta_metric"] == total["delta_metric"] and total["step_ratios"] == total["ratios"]
    saved = json.loads(paths["json"].read_text())
    assert [s["name"] for s in saved["steps"]] == names
    md = paths["md"].read_text()
    assert "Compression steps" in md
    # the artifacts' reference is the compressed float model, and the report says so, with the original
    assert f"the original scored {100 * orig['metric']:.1f} %" in md and "agreement vs original %" in md
    from edgecompress.report.render import _steps_rows

    # the original's agreement with itself (100.0) read like a measurement
    assert [r["agreement vs original %"] == "the reference" for r in _steps_rows(report)] == [True] + [False] * 3
    assert "fp32 PyTorch reference" not in md
    assert load_recipe(paths["recipe"]).resolved()["passes"][1]["distill"]["epochs"] == 4
    art = report.artifacts[0]
    assert art["status"] == "ok" and art["drift"]["top1_agreement"] > 0.99
    assert (tmp_path / "step1-prune" / "model.pt").is_file()
    torch.load(tmp_path / "step2-distill" / "model.pt", weights_only=True)
    # the manifest is the last file of a complete run (steps.json and the resolved recipe came after it)
    last = paths["manifest"].stat().st_mtime_ns
    for other in (paths["steps"], paths["recipe"], paths["json"], tmp_path / "step2-distill" / "model.pt"):
        assert other.stat().st_mtime_ns <= last, other


def test_cli_run_reports_a_bad_recipe_in_one_line(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    bad = tmp_path / "r.yaml"
    bad.write_text("model: zoo:digits-cnn\npasses:\n  - prune: {ratio: 2}\n")
    exe = Path(sys.executable).parent / "edgecompress"
    res = subprocess.run([str(exe), "run", str(bad), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip().startswith("error:") and "passes[0].prune.ratio" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    # `compress` says it with the flag the user typed, not the recipe key it sets
    res = subprocess.run([str(exe), "compress", "zoo:digits-cnn", "--prune", "0.5", "--round-to", "0",
                          "--out", str(tmp_path / "c")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "--round-to: 0 is out of range" in res.stderr, res.stderr
    assert "passes[" not in res.stderr and not (tmp_path / "c").exists()


def test_cli_compress_picks_the_qat_backend_from_the_formats(tmp_path):
    """`compress --qat-epochs` with only TFLite exports trains for LiteRT (backend litert), and
    the resolved recipe next to the results says so; the TFLite int8 file then exports."""
    from conftest import run_cli

    out = tmp_path / "o"
    r = run_cli("compress", "zoo:digits-cnn", "--qat-epochs", "0", "-f", "tflite:int8", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    qat = load_recipe(out / "recipe.resolved.yaml").resolved()["passes"][0]["qat"]
    assert qat["backend"] == "litert" and "quantizer" not in qat
    report = json.loads((out / "report.json").read_text())
    assert [(a["format"], a["precision"], a["status"]) for a in report["artifacts"]] == [("tflite", "int8", "ok")]


@pytest.mark.parametrize(("qat_teacher", "want"), [(None, "pruned"), ("original", "original")])
def test_qat_distils_toward_the_model_it_quantizes(tmp_path, monkeypatch, qat_teacher, want):
    """[issue #4] In a chain, QAT's KD teacher is the float model QAT starts from (int8 fidelity),
    unless `options.qat_teacher: original`; the other passes keep `options.teacher` (original)."""
    import dataclasses

    from edgecompress.passes import PASSES

    seen = {}
    real_get = PASSES.get

    def get(name, *a):
        info = real_get(name, *a)
        if name != "qat":
            return info

        def run(spec, cfg, *, teacher=None, **kw):  # record the teacher, leave the model float
            seen["teacher_params"] = sum(p.numel() for p in teacher.parameters())
            seen["student_params"] = sum(p.numel() for p in spec.module.parameters())
            return spec
        return dataclasses.replace(info, run=run)

    monkeypatch.setattr(PASSES, "get", get)
    options = {"progress": False, **({"qat_teacher": qat_teacher} if qat_teacher else {})}
    recipe = {"model": "zoo:digits-cnn", "passes": [{"prune": {"ratio": 0.5}}, "qat"], "options": options}
    report, _ = run_recipe(recipe, tmp_path)
    original = report.steps[0]["params"]
    assert seen["student_params"] < 0.5 * original  # QAT got the pruned model ...
    expected = seen["student_params"] if want == "pruned" else original
    assert seen["teacher_params"] == expected  # ... and the teacher asked for


def test_an_onnx_model_in_a_recipe_is_one_line(tmp_path, digits_spec):
    """An .onnx recipe model raised AttributeError ('NoneType' object has no attribute 'eval')."""
    from edgecompress.exporters import ExportOptions, export

    art = export(digits_spec, "onnx", "fp32", tmp_path, None, ExportOptions(progress=False))
    with pytest.raises(ConfigError, match=r"digits-cnn-fp32\.onnx: a recipe runs PyTorch passes.*edgecompress export"):
        run_recipe({"model": str(art.path), "input_shape": [1, 1, 8, 8], "export": ["onnx:fp32"]},
                   tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_cli_compress_takes_exports_model_and_measuring_flags(tmp_path, digits_spec):
    """`compress` had no --weights (a factory's random weights were compressed, exit 0), no
    --preprocess, and none of export's --batch / --runs / --rounds / --fail-on; they map to the
    recipe's keys (options.batch / options.fail_on are new) and the run honours them."""
    from conftest import run_cli

    from edgecompress.models.digits import digits_npz

    weights = tmp_path / "w.pt"
    torch.save(digits_spec.module.state_dict(), weights)
    base = ["compress", "edgecompress.models.digits:DigitsCNN", "--input-shape", "1,1,8,8", "--weights",
            str(weights), "--preprocess", "gray-unit", "--train", str(digits_npz("train")), "--eval",
            str(digits_npz("test")), "-f", "onnx:fp32", "--runs", "3", "--warmup", "1", "--rounds", "1",
            "--batch", "4"]
    out = tmp_path / "o"
    r = run_cli(*base, "--fail-on", "drift.top1_agreement<0.5", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["steps"][0]["metrics"]["top1"] > 0.95  # the trained weights, not a random init
    (row,) = report["artifacts"]
    assert row["settings"]["runs"] == 3 and row["settings"]["rounds"] == 1 and "4" in row["latency_by_batch"]
    assert [g["passed"] for g in report["gates"]] == [True]
    resolved = load_recipe(out / "recipe.resolved.yaml")
    assert resolved.weights == str(weights) and resolved.preprocess == "gray-unit"
    assert resolved.options.batch == [4] and resolved.options.fail_on == ["drift.top1_agreement<0.5"]
    gate = run_cli(*base, "--fail-on", "size_bytes>1", "--out", str(tmp_path / "g"))
    assert gate.returncode == 4 and "gate failed: size_bytes>1" in gate.stderr, gate.stderr[-2000:]
    bad = run_cli(*base, "--fail-on", "drift.bogus<1", "--out", str(tmp_path / "b"))
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith(
        "error: compress: --fail-on 'drift.bogus<1': a report row has no drift.bogus"), bad.stderr[-2000:]
    assert not (tmp_path / "b").exists()


def test_resolved_recipe_writes_non_ascii_paths_as_utf8(tmp_path):
    """`data: {calib: 'with space ü/train.npz'}` was written as `with space \\xFC/train.npz`:
    valid YAML, but not the path the user reads. Written as UTF-8, it loads back the same; a name
    that is not UTF-8 (surrogate escapes) still round-trips."""
    import os

    folder = tmp_path / "with space ü"
    folder.mkdir()
    odd = os.fsdecode(b"lat\xe9.npz")  # a Latin-1 file name: '\udce9' in Python
    r = parse_recipe({"model": "zoo:digits-cnn", "export": ["onnx:int8"],
                      "data": {"calib": f"{folder / 'train.npz'}[:64]", "eval": str(tmp_path / odd)}})
    path = save_recipe(r, tmp_path / "r.yaml")
    raw = path.read_bytes()
    # (YAML may fold the long quoted path at its space: compare the name, not the whole path)
    assert "ü/train.npz".encode() in raw and b"\\xFC" not in raw
    back = load_recipe(path)
    assert back.resolved()["data"] == r.resolved()["data"]
    assert back.resolved()["data"]["calib"] == f"{folder / 'train.npz'}[:64]"


def test_resolved_recipe_keeps_a_long_path_on_one_line():
    """YAML folds scalars at 80 columns: a long data path was split at a space across two lines
    of recipe.resolved.yaml (it loaded back, but a grep for the path missed it)."""
    import yaml

    from edgecompress.recipe import recipe_yaml

    long = "/data/" + "a folder name with spaces " * 5 + "train.npz"
    text = recipe_yaml(parse_recipe({"model": "zoo:digits-cnn", "data": {"train": long}}))
    assert any(long in line for line in text.splitlines())
    assert yaml.safe_load(text)["data"]["train"] == long


def _no_pass_may_run(monkeypatch):
    import edgecompress.passes.distill as distill_mod

    def boom(*a, **k):
        raise AssertionError("distill trained before the target checks")

    monkeypatch.setattr(distill_mod, "finetune", boom)


def test_recipe_checks_the_target_before_the_passes_train(tmp_path, monkeypatch):
    """`run` / `compress` reached an unreachable device, and refused a drift gate on an estimated
    target, only after the passes had trained (export checks both before any work)."""
    import socket

    from edgecompress.errors import DeviceError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rpi5 = (Path(__file__).resolve().parent.parent / "targets" / "profiles" / "rpi5.toml").read_text()
    closed = tmp_path / "closed.toml"
    closed.write_text(rpi5.replace('host = ""', 'host = "127.0.0.1"').replace("port = 22", f"port = {port}")
                      .replace("connect_timeout_s = 10", "connect_timeout_s = 3"))
    base = {"model": "zoo:digits-cnn", "passes": [{"distill": {"epochs": 1}}], "export": ["onnx:int8"]}
    unreachable = parse_recipe({**base, "target": str(closed)})
    estimated = parse_recipe({**base, "target": "rpi5", "options": {"fail_on": ["drift.top1_agreement<0.97"]}})
    _no_pass_may_run(monkeypatch)
    with pytest.raises(DeviceError, match=r"[Cc]onnection refused"):
        run_recipe(unreachable, tmp_path / "a", progress=False)
    # which recipe, as every error of a run says (a dict's: "recipe"); the target mid-sentence without a colon
    with pytest.raises(ConfigError, match=r"^recipe: options.fail_on: 'drift.top1_agreement<0.97': target rpi5 is "
                                          r"estimated here .* no drift"):
        run_recipe(estimated, tmp_path / "b", progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_recipe_target_file_is_relative_to_the_recipe(tmp_path, monkeypatch):
    """A recipe's `target: prof/mine.toml` was read from the working directory (and kept relative
    in recipe.resolved.yaml, which then failed from any other folder), unlike its data paths."""
    folder = tmp_path / "proj"
    (folder / "prof").mkdir(parents=True)
    x86 = Path(__file__).resolve().parent.parent / "targets" / "profiles" / "x86-local.toml"
    (folder / "prof" / "mine.toml").write_text(x86.read_text().replace('name = "x86-local"', 'name = "mine"'))
    (folder / "r.yaml").write_text("model: zoo:digits-cnn\nexport: [onnx:fp32]\ntarget: prof/mine.toml\n")
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(folder / "r.yaml")
    assert recipe.target == str(folder / "prof" / "mine.toml")
    assert parse_recipe({"model": "zoo:digits-cnn", "target": "x86-local"}).target == "x86-local"  # a name


def test_recipe_target_file_it_cannot_read_names_the_recipe(tmp_path):
    """A recipe's target .toml that is missing or unreadable said `error: target: ...` without the
    `recipe r.yaml: ` every other error of a recipe starts with: parse_recipe prefixed ConfigError
    only, and these are InputFileError."""
    from conftest import run_cli

    from edgecompress.errors import InputFileError

    (tmp_path / "d.toml").mkdir()
    (tmp_path / "d.yaml").write_text("model: zoo:digits-cnn\nexport: [onnx:fp32]\ntarget: d.toml\n")
    with pytest.raises(InputFileError, match=r"^recipe .*d\.yaml: target: .*d\.toml: cannot read"):
        load_recipe(tmp_path / "d.yaml")
    (tmp_path / "r.yaml").write_text("model: zoo:digits-cnn\nexport: [onnx:fp32]\ntarget: nope.toml\n")
    r = run_cli("run", "r.yaml", "--out", "o", cwd=tmp_path)
    assert r.returncode == 2, r.stderr[-1500:]
    assert r.stderr.strip().splitlines() == [f"error: recipe r.yaml: target: {tmp_path}/nope.toml: no such file"]


def test_int8_recipe_calibrates_on_its_training_data():
    """An int8 export of a model with no default data was refused ("set data.calib") although
    data.train was given, which the runner calibrates on (its first 300 samples)."""
    recipe = parse_recipe({"model": "edgecompress.models.digits:DigitsCNN", "input_shape": [1, 1, 8, 8],
                           "data": {"train": "train.npz"}, "export": ["onnx:int8"]})
    assert recipe.data.train == "train.npz" and recipe.data.calib is None
    with pytest.raises(ConfigError, match=r"data.calib: int8 export needs calibration data; set data.calib \(or "
                                          r"data.train"):
        parse_recipe({"model": "edgecompress.models.digits:DigitsCNN", "input_shape": [1, 1, 8, 8],
                      "export": ["onnx:int8"]})


def test_run_recipe_leaves_the_callers_rng_and_threads(tmp_path):
    """run_recipe seeded torch's global stream (options.seed) and left options.torch_threads set
    after it returned."""
    threads = torch.get_num_threads()
    want = 2 if threads != 2 else 3
    torch.set_num_threads(want)
    try:
        torch.manual_seed(123)
        state = torch.random.get_rng_state()
        run_recipe(parse_recipe({"model": "zoo:digits-cnn", "passes": [{"lowrank": {"energy": 0.9}}],
                                 "options": {"seed": 7, "torch_threads": 1}}), tmp_path / "o", progress=False)
        assert torch.equal(torch.random.get_rng_state(), state)
        assert torch.get_num_threads() == want
    finally:
        torch.set_num_threads(threads)


def test_save_recipe_refuses_a_dict(tmp_path):
    with pytest.raises(ConfigError, match=r"save_recipe: recipe must be a Recipe .*got dict \(parse_recipe\(d\)"):
        save_recipe({"model": "zoo:digits-cnn"}, tmp_path / "r.yaml")
    assert not (tmp_path / "r.yaml").exists()


def test_calibration_head_of_a_sliced_source_reads_as_one_range():
    """The report named a recipe's calibration set (the first 300 training samples) as
    "train.npz[:500][0:300]", which is no PATH[start:stop] one can pass back."""
    import numpy as np

    from edgecompress.data import Dataset
    from edgecompress.recipe import _head

    def src(source: str, n: int = 500) -> str:
        return _head(Dataset(np.zeros((n, 1, 2, 2), np.float32), None, source), 300).source

    assert src("/d/train.npz[:500]") == "/d/train.npz[:300]"
    assert src("/d/train.npz[100:600]") == "/d/train.npz[100:400]"
    assert src("/d/train.npz") == "/d/train.npz[0:300]"
    assert src("/d/train.npz[:200]", 200) == "/d/train.npz[:200]"  # all of it: as it was


def test_recipe_target_errors_name_the_recipes_keys():
    """A recipe's format the target does not run said "drop that --format" (a CLI flag the recipe
    does not have)."""
    with pytest.raises(ConfigError, match=r"target: rpi5 runs onnx, tflite; not openvino \(drop it from export, or"):
        parse_recipe({"model": "zoo:digits-cnn", "export": ["openvino:fp32"], "target": "rpi5"})


def test_compress_words_a_target_error_in_its_flags(tmp_path):
    """compress said the recipe's words ("target: ...", "drop it from export") for its --target and -f."""
    from conftest import run_cli

    r = run_cli("compress", "zoo:digits-cnn", "-f", "openvino:fp32", "--target", "rpi5", "--out", str(tmp_path / "o"))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == ("error: compress: --target rpi5 runs onnx, tflite; not openvino "
                                                 "(drop that -f, or pick a target that lists it)")
