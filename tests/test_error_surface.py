"""Audit finding #12: an error names an option the way the caller spelled it.

The same internals serve the CLI and the Python API. From Python a message names the keyword the
caller passed (`input_shape='1,x'`), never a flag they did not type; through the CLI the same bad
input names the flag (`--input-shape '1,x'`). A recipe names its own keys. Each case below runs
both ways over the shared code that raises.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import edgecompress as ec
from edgecompress.errors import DataError, EdgeCompressError, Surface, named, on_surface, opt, say, surface
from tests.conftest import ROOT, run_cli

TINY = "tests.bad_inputs.badmodels:tiny"  # a factory: 3-channel input, no default data
IDS = "tests.bad_inputs.badmodels:ids_bag"  # nn.Embedding first: taken as int64 ids without a flag
ONE_HOT = "tests.bad_inputs.badmodels:one_hot_ids"  # takes ids, no Embedding to see: needs input_dtype
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]+")


def _job(tmp: Path, **kw):
    """An ExportJob of digits-cnn to ONNX fp32 into tmp/out, with `kw` changed."""
    return ec.ExportJob(**{"model": "zoo:digits-cnn", "formats": ["onnx"], "out_dir": tmp / "out", **kw})


def _resolve_formats(formats: list[str], precisions: list[str]) -> list[tuple[str, str]]:
    from edgecompress.exporters import resolve_formats  # what ExportJob and the CLI's -f / -p go through

    return resolve_formats(formats, precisions)


def _missing(tmp: Path) -> Path:
    return tmp / "missing.pt"


def _a_file(tmp: Path) -> Path:
    (tmp / "afile").write_text("x")
    return tmp / "afile"


def _wide(tmp: Path) -> Path:
    """Four (3, 12, 8) samples: the transposed shape of a model taking 1,3,8,12 (a non-square input)."""
    np.save(tmp / "wide.npy", np.zeros((4, 3, 12, 8), np.float32))
    return tmp / "wide.npy"


def _sizeless(tmp: Path) -> str:
    """An .onnx of input [N, 3, H, W] (no fixed height or width): its size must be given."""
    from tests.test_nonsquare import _dynamic_onnx

    return str(_dynamic_onnx(tmp / "dyn.onnx"))


def _files(tmp: Path) -> None:
    """What the CLI cases read from `{tmp}` (the Python cases write theirs as they go)."""
    _a_file(tmp)
    _wide(tmp)
    _sizeless(tmp)


# id, Python call (tmp -> raises), fragment it names, CLI arguments, fragment the CLI names.
# `{tmp}` in the CLI arguments and fragments is the test's folder.
CASES = [
    ("input-shape", lambda t: ec.load_model(TINY, input_shape="1,x"), "input_shape='1,x': expected integers",
     ["export", TINY, "--input-shape", "1,x"], "--input-shape '1,x': expected integers"),
    ("weights", lambda t: ec.load_model(TINY, input_shape="1,3,8,8", weights=_missing(t)),
     "weights='{tmp}/missing.pt': no such file",
     ["export", TINY, "--input-shape", "1,3,8,8", "--weights", "{tmp}/missing.pt"],
     "--weights {tmp}/missing.pt: no such file"),
    ("preprocess", lambda t: ec.load_model("zoo:digits-cnn", preprocess="sepia"),
     "preprocess='sepia': unknown preprocessing preset (known: ",
     ["export", "zoo:digits-cnn", "--preprocess", "sepia"], "--preprocess 'sepia': unknown preprocessing preset"),
    ("format", lambda t: ec.run_export(_job(t, formats=["coreml"])), "formats='coreml': unknown format (known: ",
     ["export", "zoo:digits-cnn", "-f", "coreml"], "--format 'coreml': unknown format (known: "),
    ("precision", lambda t: _resolve_formats(["onnx:int8"], ["fp16"]),
     "precisions=['fp16']: every item of formats names its own precision (onnx:int8)",
     ["export", "zoo:digits-cnn", "-f", "onnx:int8", "-p", "fp16"], "--precision fp16: every --format names its own"),
    ("calib", lambda t: ec.run_export(_job(t, model=TINY, input_shape="1,3,8,8", formats=["onnx:int8"],
                                           do_validate=False)),
     "int8 needs calibration data and none was given or found (pass calib=)",
     ["export", TINY, "--input-shape", "1,3,8,8", "-f", "onnx:int8", "--no-validate"],
     "int8 needs calibration data and none was given or found (pass --calib)"),
    ("eval", lambda t: ec.run_export(_job(t, eval=str(t / "nowhere"), do_validate=False)),
     "eval='{tmp}/nowhere': no such file or directory (unused by this run: validation is off)",
     ["export", "zoo:digits-cnn", "--eval", "{tmp}/nowhere", "--no-validate"],
     "--eval {tmp}/nowhere: no such file or directory (unused by this run"),
    ("fail-on", lambda t: ec.run_export(_job(t, fail_on=["latency_ms.p5<1"])),
     "fail_on='latency_ms.p5<1': a report row has no latency_ms.p5",
     ["export", "zoo:digits-cnn", "--fail-on", "latency_ms.p5<1"], "--fail-on 'latency_ms.p5<1': a report row has no"),
    ("target", lambda t: ec.run_export(_job(t, target="pdp11")), "target='pdp11': unknown target (known: ",
     ["export", "zoo:digits-cnn", "--target", "pdp11"], "--target 'pdp11': unknown target (known: "),
    ("threads", lambda t: ec.run_export(_job(t, settings=ec.ValidateSettings(threads=4096))),
     "threads=4096: this machine gives edgecompress ",
     ["export", "zoo:digits-cnn", "--threads", "4096"], "--threads 4096: this machine gives edgecompress "),
    ("out", lambda t: ec.run_export(_job(t, out_dir=_a_file(t))), "out_dir='{tmp}/afile': is a file, not a directory",
     ["export", "zoo:digits-cnn", "--out", "{tmp}/afile"], "--out {tmp}/afile: is a file, not a directory"),
    # messages main gained after the first sweep (integer inputs, non-square inputs)
    ("input-dtype", lambda t: ec.load_model(TINY, input_shape="1,3,8,8", input_dtype="int16"),
     "input_dtype='int16': use one of float32, int64, int32",
     ["export", TINY, "--input-shape", "1,3,8,8", "--input-dtype", "int16"],
     "--input-dtype 'int16': use one of float32, int64, int32"),
    ("input-dtype-fixed", lambda t: ec.load_model("zoo:digits-cnn", input_dtype="int64"),
     "input_dtype='int64': zoo:digits-cnn takes input 'x' as float32; leave it out",
     ["export", "zoo:digits-cnn", "--input-dtype", "int64"],
     "--input-dtype int64: zoo:digits-cnn takes input 'x' as float32; leave the flag out"),
    ("input-dtype-hint", lambda t: ec.load_model(ONE_HOT, input_shape="1,16"),
     "it runs on integer input: if it takes ids, pass input_dtype='int64'",
     ["export", ONE_HOT, "--input-shape", "1,16"],
     "it runs on integer input: if it takes ids, pass --input-dtype int64"),
    ("allow-mixed", lambda t: ec.export(ec.load_model(IDS, input_shape="1,16"), "tflite", "int8", t / "x"),
     "accept a mixed file of int8 layers and float ops with ExportOptions(allow_mixed=True)",
     ["export", IDS, "--input-shape", "1,16", "-f", "tflite:int8", "--no-validate"],
     "accept a mixed file of int8 layers and float ops with --allow-mixed"),
    ("non-square-calib", lambda t: ec.run_export(_job(t, model=TINY, input_shape="1,3,8,12", formats=["onnx:int8"],
                                                      calib=str(_wide(t)), do_validate=False)),
     "samples have shape (3, 12, 8) but the model takes (3, 8, 12) (check input_shape= / preprocess=; or the "
     "data's side: Dataset.at_side(N) for images)",
     ["export", TINY, "--input-shape", "1,3,8,12", "-f", "onnx:int8", "--calib", "{tmp}/wide.npy", "--no-validate"],
     "samples have shape (3, 12, 8) but the model takes (3, 8, 12) (check --input-shape / --preprocess)"),
    ("onnx-sizeless", lambda t: ec.load_model(_sizeless(t)),
     "has no fixed H, W; pass its shape with input_shape= (1,3,H,W with numbers for H, W)",
     ["export", "{tmp}/dyn.onnx", "--no-validate"],
     "has no fixed H, W; pass its shape with --input-shape (1,3,H,W with numbers for H, W)"),
    # the positional model: its usage word under the CLI (MODEL x.pt), "model 'x.pt'" from Python
    ("model-missing", lambda t: ec.load_model(str(_missing(t))), "model '{tmp}/missing.pt': no such file",
     ["export", "{tmp}/missing.pt"], "MODEL {tmp}/missing.pt: no such file"),
    ("model-factory", lambda t: ec.load_model("tests.bad_inputs.badmodels:nope", input_shape="1,3,8,8"),
     "model 'tests.bad_inputs.badmodels:nope': module 'tests.bad_inputs.badmodels' has no attribute 'nope'",
     ["export", "tests.bad_inputs.badmodels:nope", "--input-shape", "1,3,8,8"],
     "MODEL tests.bad_inputs.badmodels:nope: module 'tests.bad_inputs.badmodels' has no attribute 'nope'"),
    ("model-zoo", lambda t: ec.load_model("zoo:nope"), "unknown zoo model 'nope' (known: ",
     ["export", "zoo:nope"], "MODEL unknown zoo model 'nope' (known: "),
    ("model-factory-shape", lambda t: ec.load_model(TINY),
     f"model '{TINY}': a factory model needs input_shape=",
     ["export", TINY], f"MODEL {TINY}: a factory model needs --input-shape"),
]
LABEL = re.compile(r"\b(MODEL|ARTIFACT)\b")  # the CLI's usage words


@pytest.mark.parametrize("case_id,call,py_fragment,_args,_cli_fragment", CASES, ids=[c[0] for c in CASES])
def test_python_api_names_the_keyword(tmp_path, case_id, call, py_fragment, _args, _cli_fragment):
    with pytest.raises(EdgeCompressError) as e:
        call(tmp_path)
    msg = str(e.value)
    assert py_fragment.format(tmp=tmp_path) in msg, msg
    assert not FLAG.search(msg), f"a CLI flag in a Python error: {msg}"
    assert not LABEL.search(msg), f"a CLI usage word in a Python error: {msg}"


@pytest.mark.parametrize("case_id,_call,_py_fragment,args,cli_fragment", CASES, ids=[c[0] for c in CASES])
def test_cli_names_the_flag(tmp_path, case_id, _call, _py_fragment, args, cli_fragment):
    _files(tmp_path)
    args = [a.format(tmp=tmp_path) for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "out")]
    r = run_cli(*args, cwd=ROOT)  # from the checkout: TINY's module imports from there
    last = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
    assert r.returncode in (2, 3) and last.startswith("error: "), r.stderr[-800:]
    assert cli_fragment.format(tmp=tmp_path) in last, last
    assert not re.search(r"\b[a-z_]+=(?!\d)", last.split(": ", 1)[1].split(" (known: ")[0]), \
        f"a Python keyword in a CLI error: {last}"


def test_surface_defaults_to_python_and_the_cli_block_is_undone():
    assert surface() == "python"
    assert opt("--input-shape", "input_shape") == "input_shape="
    assert opt("--weights", "weights", "w.pt", quoted=True) == "weights='w.pt'"
    assert say("drop --no-validate", "set do_validate=True") == "set do_validate=True"
    assert named("model", "x.pt") == "model 'x.pt'"
    with on_surface("cli"):
        assert named("artifact", "m.onnx") == "ARTIFACT m.onnx"
        assert opt("--input-shape", "input_shape", "'1,x'") == "--input-shape '1,x'"
        assert opt("--weights", "weights", "w.pt", quoted=True) == "--weights w.pt"
        with on_surface("python"):  # nested: the recipe asks for one surface inside another
            assert opt("--calib", "calib") == "calib="
        assert say("a", "b") == "a"
    assert surface() == "python"  # reset after the block, also when it raised:
    with pytest.raises(RuntimeError), on_surface("cli"):
        raise RuntimeError
    assert surface() == "python"


def test_export_names_its_own_parameter(tmp_path, digits_spec):
    """export(spec, fmt) names `fmt`, the parameter it has, not ExportJob's `formats`."""
    with pytest.raises(EdgeCompressError, match=r"^fmt='coreml': unknown format \(known: "):
        ec.export(digits_spec, "coreml", "fp32", tmp_path)
    with pytest.raises(EdgeCompressError, match=r"^calib_method='median': one of minmax, percentile, entropy"):
        ec.ExportOptions(calib_method="median")


def test_isolated_export_child_words_errors_as_its_parent(tmp_path):
    """The export child is spawned with a fresh context: it gets the parent's surface, so a CLI run
    with --isolate still names flags (and a Python caller keywords)."""
    bad = ec.load_model("tests.bad_inputs.badmodels:unexportable", input_shape=(1, 3, 8, 8))
    isolate = ec.ExportOptions(isolate=True)
    with pytest.raises(EdgeCompressError) as py:
        ec.export(bad, "onnx", "fp32", tmp_path / "py", options=isolate)
    with on_surface("cli"), pytest.raises(EdgeCompressError) as cli:
        ec.export(bad, "onnx", "fp32", tmp_path / "cli", options=isolate)
    assert "try a fixed input_shape=" in str(py.value) and "--input-shape" not in str(py.value), str(py.value)
    assert "try a fixed --input-shape" in str(cli.value), str(cli.value)


def test_artifact_of_a_non_utf8_name_is_named_as_an_artifact_from_python(tmp_path):
    """validate's ARTIFACT (the CLI's usage word, pinned in test_env_hardening) is "artifact '...'"
    from Python."""
    import os

    from edgecompress.targets.device_report import load_artifacts

    try:
        path = tmp_path / os.fsdecode(b"m\xfe.onnx")
        path.write_bytes(b"x")
    except (OSError, UnicodeError):
        pytest.skip("this file system refuses non-UTF-8 names")
    with pytest.raises(EdgeCompressError) as e:
        load_artifacts([path])
    assert str(e.value).startswith(f"artifact '{tmp_path}/m\\\\xfe.onnx': the path is not valid UTF-8"), str(e.value)
    assert not LABEL.search(str(e.value)), str(e.value)


def test_recipe_keeps_its_keys_from_python(tmp_path):
    """A recipe user reads the recipe's keys, from run_recipe as from `edgecompress run`: neither
    the CLI's flags nor Python keywords."""
    from edgecompress.errors import ConfigError, InputFileError
    from edgecompress.recipe import parse_recipe

    cases = [
        ({"export": ["coreml"]}, ConfigError, "recipe: export: 'coreml': unknown format"),
        ({"export": ["onnx"], "options": {"fail_on": ["latency_ms.p5<1"]}}, ConfigError,
         "recipe: options.fail_on: 'latency_ms.p5<1': a report row has no latency_ms.p5"),
        ({"export": ["onnx"], "target": "pdp11"}, ConfigError, "recipe: target: 'pdp11': unknown target"),
        ({"export": ["onnx"], "options": {"threads": 4096}}, ConfigError,
         "recipe: options.threads: 4096: this machine"),
    ]
    for over, exc, fragment in cases:
        with pytest.raises(exc) as e:
            parse_recipe({"model": "zoo:digits-cnn", **over})
        assert fragment in str(e.value) and not FLAG.search(str(e.value)) and "=" not in str(e.value), str(e.value)
    recipe = {"model": TINY, "input_shape": [1, 3, 8, 8], "weights": str(tmp_path / "missing.pt")}
    with pytest.raises(InputFileError) as e:
        ec.run_recipe(recipe, tmp_path / "out", progress=False)
    assert f"recipe: weights: {tmp_path}/missing.pt: no such file" in str(e.value), str(e.value)
    assert not FLAG.search(str(e.value)) and "weights=" not in str(e.value)


# ---- finding #12b: which network the distill label check names -----------------------------------
def _labels_beyond(n: int = 8, top: int = 9) -> ec.Dataset:
    return ec.Dataset(np.zeros((n, 1, 8, 8), np.float32), np.array([*range(n - 1), top]), "mine")


def test_label_check_names_the_teacher_the_user_gave(digits_spec):
    from torch import nn

    five = nn.Sequential(nn.Flatten(), nn.Linear(64, 5))  # the student has 10 outputs: "the model" misled
    with pytest.raises(DataError) as e:
        ec.distill(digits_spec, epochs=1, data=_labels_beyond(), teacher=five, progress=False)
    assert "labels of mine go up to class 9 but the teacher has 5 outputs" in str(e.value), str(e.value)


def test_label_check_names_the_model_when_it_is_its_own_teacher(digits_spec, tmp_path):
    """No teacher given (the default: the model itself, or the model before compression), and a
    recipe's teacher (options.teacher picks a version of the model; the user named none)."""
    with pytest.raises(EdgeCompressError) as e:
        ec.distill(digits_spec, epochs=1, data=_labels_beyond(top=99), progress=False)
    assert "go up to class 99 but the model (the teacher by default) has 10 outputs" in str(e.value), str(e.value)
    pruned = ec.prune(digits_spec, ratio=0.25, progress=False)
    with pytest.raises(EdgeCompressError) as e:  # the default teacher here is the model before pruning
        ec.distill(pruned, epochs=1, data=_labels_beyond(top=99), progress=False)
    assert "but the model (the teacher by default) has 10 outputs" in str(e.value), str(e.value)
    data = tmp_path / "train.npz"
    np.savez(data, x=np.zeros((8, 1, 8, 8), np.float32), y=np.array([*range(7), 99]))
    recipe = {"model": "zoo:digits-cnn", "data": {"train": str(data)},
              "passes": [{"distill": {"epochs": 1}}]}
    with pytest.raises(EdgeCompressError) as e:
        ec.run_recipe(recipe, tmp_path / "out", progress=False)
    assert "passes[0].distill: " in str(e.value) and "the teacher has" not in str(e.value), str(e.value)
    assert "but the model (the teacher by default) has 10 outputs" in str(e.value), str(e.value)


def test_python_only_options_name_their_keyword_or_key(digits_spec):
    """Options with no CLI flag: load_model's `output_names` names the keyword on either surface;
    the QAT pass's `calib_method` names its config key (`qat.calib_method`, as every pass setting
    is named), never the exporters' `--calib-method` / `calib_method=` it shares a word with."""
    surfaces: tuple[Surface, ...] = ("python", "cli")
    for words in surfaces:
        with on_surface(words), pytest.raises(EdgeCompressError) as e:
            ec.load_model(TINY, input_shape="1,3,8,8", output_names="logits")
        assert str(e.value).startswith("output_names='logits': a list of names, one per output"), str(e.value)
        with on_surface(words), pytest.raises(EdgeCompressError) as e:
            ec.qat(digits_spec, calib_method="median", progress=False)
        assert str(e.value) == "qat.calib_method: 'median' is not one of minmax, percentile, entropy", str(e.value)


def test_validate_names_eval_for_artifacts_of_ids(tmp_path):
    """validate's --eval check of a file of integer ids (merged with main's #27 checks): float
    samples are refused naming `eval='...'` from Python and `--eval ...` through the CLI."""
    from edgecompress.targets.device_report import validate_artifacts

    art = ec.export(ec.load_model(IDS, input_shape="1,16"), "onnx", "fp32", tmp_path / "art")
    floats = tmp_path / "floats.npy"
    np.save(floats, np.zeros((4, 16), np.float32))
    with pytest.raises(EdgeCompressError) as e:
        validate_artifacts([art.path], "x86-local", tmp_path / "v", eval=str(floats), progress=False)
    assert str(e.value).startswith(f"eval='{floats}': dtype float32 but the artifacts take int64 ids"), str(e.value)
    r = run_cli("validate", str(art.path), "--eval", str(floats), "--no-progress", "--out", str(tmp_path / "v2"),
                cwd=ROOT)
    last = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
    said = (f"error: --eval {floats}: dtype float32 but the artifacts take int64 ids (save the token / class ids "
            "as integers, x.astype(np.int64))")
    assert r.returncode == 2 and last == said, r.stderr[-800:]


# ---- a recipe's own spelling: the "recipe" surface --------------------------------------------------
def test_recipe_surface_names_the_recipe_key():
    """Under a recipe an option is its YAML key (`input_dtype: int32`, `options.allow_mixed: true`,
    `data.calib`), not `--flag` or `keyword=`; a call site can name its own key."""
    with on_surface("recipe"):
        assert surface() == "recipe"
        assert opt("--input-dtype", "input_dtype", "int32", quoted=True) == "input_dtype: int32"
        assert opt("--allow-mixed", "allow_mixed") == "options.allow_mixed: true"
        assert opt("--calib", "calib") == "data.calib"
        assert opt("--threads", "threads", 4096) == "options.threads: 4096"
        assert opt("--prune", "ratio", 2, key="passes[1].prune.ratio") == "passes[1].prune.ratio: 2"
        assert opt("--no-such-flag", "keyword", True) == "keyword: true"  # no recipe key: the keyword
        assert say("--allow-mixed", "ExportOptions(allow_mixed=True)") == "options.allow_mixed: true"
        assert say("drop --no-validate", "set do_validate=True") == "set do_validate=True"
        assert say("a", "b", "c") == "c"
        assert named("model", "x.pt") == "model: x.pt"
    assert surface() == "python" and say("a", "b", "c") == "b"


def _ids_recipe(tmp: Path, **over) -> dict:
    """A recipe of the nn.Embedding model (int64 ids, taken without an input_dtype) to `over`'s exports."""
    return {"model": IDS, "input_shape": [1, 16], "options": {"validate_artifacts": False}, **over}


def test_recipe_of_ids_to_tflite_int8_names_the_recipe_keys(tmp_path, capsys):
    """The Embedding note and the tflite int8 refusal name the recipe's keys, from run_recipe as
    from `edgecompress run`: `input_dtype: int32`, `options.allow_mixed: true`; not the CLI's
    --input-dtype / --allow-mixed / --int8, nor input_dtype= / ExportOptions(allow_mixed=True)."""
    calib = tmp_path / "ids.npy"
    np.save(calib, np.random.default_rng(0).integers(0, 50, (8, 16)).astype(np.int64))
    recipe = _ids_recipe(tmp_path, export=["tflite:int8"], data={"calib": str(calib)})
    with pytest.raises(EdgeCompressError) as e:
        ec.run_recipe(recipe, tmp_path / "out", progress=False)
    msg, note = str(e.value), capsys.readouterr().err
    said = ("recipe: export: tflite int8 of ids_bag: full-integer int8 does not apply to a model of int64 ids (the "
            "embedding lookup / the ops reading the ids stay float in LiteRT); export tflite:dynamic-int8 (int8 "
            "weights), or accept a mixed file of int8 layers and float ops with options.allow_mixed: true")
    assert msg == said, msg
    assert "its input is taken as int64 ids (input_dtype: int32 for int32 ones)" in note, note
    assert not FLAG.search(note) and "input_dtype=" not in note, note

    import yaml

    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    r = run_cli("run", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "cli"), "--no-progress", cwd=ROOT)
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 3 and last == f"error: {said.replace('recipe:', f'recipe {tmp_path}/r.yaml:')}", \
        r.stderr[-1500:]
    assert "(input_dtype: int32 for int32 ones)" in r.stderr and "--input-dtype" not in r.stderr, r.stderr[-1500:]


@pytest.mark.parametrize("over,fragment", [
    # gates without measurements: refused before the passes, in the recipe's keys
    ({"model": "zoo:digits-cnn", "export": ["onnx"],
      "options": {"fail_on": ["latency_ms.p50<100"], "validate_artifacts": False}},
     "recipe: options.fail_on: 'latency_ms.p50<100': gates need measurements; set options.validate_artifacts: true"),
    # a batch in input_shape: the recipe's list, and options.batch to time it
    ({"model": "zoo:digits-cnn", "input_shape": [2, 1, 8, 8]},
     "recipe: input_shape: [2, 1, 8, 8]: the first dimension is the batch and must be 1 (the files take a "
     "dynamic batch or batch 1); to time batch 2 set options.batch: [2], with input_shape: [1, 1, 8, 8]"),
    ({"model": "zoo:digits-cnn", "export": ["onnx"], "options": {"fail_on": ["latency_by_batch.4.p50<1"]}},
     "options.fail_on: 'latency_by_batch.4.p50<1': batch 4 is not timed; add 4 to options.batch"),
    ({"model": "zoo:digits-cnn", "export": ["onnx:int8"], "options": {"float_first": 99, "validate_artifacts": False}},
     "options.float_first: 99 leaves all "),
    ({"model": TINY, "input_shape": [1, 3, 8, 8], "passes": [{"distill": {"epochs": 1}}], "data": {"eval": "{tmp}/x"}},
     "recipe: data.train: pass 'distill' fine-tunes and model"),
    ({"model": "zoo:digits-cnn", "data": {"calib": "{tmp}/nowhere.npy"}, "export": ["onnx:int8"]},
     "recipe: data.calib: train data {tmp}/nowhere.npy: no such file or directory"),
    # no Python-only advice (Dataset.at_side) in a recipe
    ({"model": TINY, "input_shape": [1, 3, 8, 12], "export": ["onnx:int8"], "data": {"calib": "{tmp}/wide.npy"},
      "options": {"validate_artifacts": False}},
     "samples have shape (3, 12, 8) but the model takes (3, 8, 12) (check input_shape / preprocess)"),
])
def test_recipe_mistakes_name_recipe_keys(tmp_path, over, fragment):
    """A recipe run's mistakes name the recipe's keys, never a CLI flag or a Python keyword."""
    _wide(tmp_path)
    recipe = {k: ({kk: vv.format(tmp=tmp_path) for kk, vv in v.items()} if k == "data" else v) for k, v in over.items()}
    with pytest.raises(EdgeCompressError) as e:
        ec.run_recipe(recipe, tmp_path / "out", progress=False)
    msg = str(e.value)
    assert fragment.format(tmp=tmp_path) in msg, msg
    assert not FLAG.search(msg) and not re.search(r"\b[a-z_]+=", msg), msg
    assert msg.startswith("recipe: "), msg  # which recipe: the export step's too (float_first 99)


def _gated_recipe_report(tmp_path: Path):
    """A recipe's onnx:int8-only digits-cnn export (no fp32 reference), a gate and float_first."""
    recipe = {"model": "zoo:digits-cnn", "export": ["onnx:int8"],
              "options": {"float_first": 1, "fail_on": ["size_bytes>1e9"], "runs": 2, "warmup": 0, "rounds": 1}}
    report, paths = ec.run_recipe(recipe, tmp_path / "out", progress=False, command="python make.py")
    return report, paths


def test_report_of_a_recipe_names_its_keys(tmp_path):
    """report.md / .html of a recipe run name the recipe's keys (options.fail_on, options.float_first,
    the recipe's `export`), not the CLI's --fail-on / --float-first / -f; report.json records the
    surface (a field added, nothing removed), and an older report.json without it is read by its command."""
    import json

    from edgecompress.report import Report
    from edgecompress.report.render import to_html, to_markdown

    report, paths = _gated_recipe_report(tmp_path)
    md, page = paths["md"].read_text(), paths["html"].read_text()
    assert json.loads(paths["json"].read_text())["surface"] == "recipe"
    assert "## Gates (options.fail_on)" in md and "<h2>Gates (options.fail_on)</h2>" in page
    assert "first layers left float (options.float_first)" in md, md
    assert "add onnx:fp32 to the recipe's `export`" in md, md
    for text in (md, page):
        assert not FLAG.search(text.replace("python make.py", "")), FLAG.search(text)

    old = Report.from_dict({k: v for k, v in report.to_dict().items() if k != "surface"})
    assert old.surface == "" and old.spoken_as() == "python"  # its command: a Python script
    old.command = "edgecompress run r.yaml"
    assert old.spoken_as() == "recipe" and "## Gates (options.fail_on)" in to_markdown(old, None)
    old.command = "edgecompress export zoo:digits-cnn -f onnx:int8 --fail-on 'size_bytes>1e9'"
    assert "## Gates (--fail-on)" in to_markdown(old, None) and "`-f onnx:fp32`" in to_markdown(old, None)
    old.surface, old.command = "python", "python make.py"
    md = to_markdown(old, None)
    assert "## Gates (fail_on)" in md and "first layers left float (float_first)" in md, md
    assert "add onnx:fp32 to formats" in md and "--fail-on" not in to_html(old)


# ---- leftovers: Python report hints, format advice, recipe prefixes ----------------------------------
DANGLING = re.compile(r"\b[a-z_]+=(?=[)\s,.<]|$)")  # `fail_on=` with no value after it


def test_python_report_hints_name_keywords_without_a_dangling_equals(tmp_path, digits_calib):
    """A Python run's report.md / .html name an option as a Python reader does (`Gates (fail_on)`,
    `float_first`), not as a keyword with nothing after its `=`: from run_export, and from
    export + validate + write_report."""
    from edgecompress.report.render import to_html, to_markdown

    settings = ec.ValidateSettings(runs=2, warmup=0, rounds=1)
    job = ec.ExportJob(model="zoo:digits-cnn", formats=["onnx:int8"], out_dir=tmp_path / "job",
                       options=ec.ExportOptions(float_first=1), fail_on=["size_bytes>1e9"], settings=settings)
    report, paths = ec.run_export(job)
    md, page = paths["md"].read_text(), paths["html"].read_text()
    assert report.surface == "python"
    assert "## Gates (fail_on)" in md and "<h2>Gates (fail_on)</h2>" in page, md
    assert "first layers left float (float_first)" in md, md
    for text in (md, page):
        assert not DANGLING.search(text), DANGLING.search(text)
        assert not FLAG.search(text), FLAG.search(text)

    spec = ec.load_model("zoo:digits-cnn")
    art = ec.export(spec, "onnx", "int8", tmp_path / "art", digits_calib, options=ec.ExportOptions(float_first=1))
    ms = ec.validate([art], "x86-local", settings=settings, progress=False)
    own = ec.Report.from_measurements(ms, model={"name": spec.name})
    written = ec.write_report(own, tmp_path / "own")
    for text in (written["md"].read_text(), written["html"].read_text(), to_markdown(own, None), to_html(own)):
        assert "first layers left float (float_first)" in text and "(give evaluation data (eval) and" in text, text
        assert not DANGLING.search(text), DANGLING.search(text)


def test_advice_to_use_another_format_reads_as_each_caller_asks_for_formats():
    """"try onnx" names the option as the caller gives formats: `--format onnx` on the CLI,
    `fmt='onnx'` from export(), `formats=['onnx']` from an ExportJob, `` `onnx` in export `` in a
    recipe (it read `try export: onnx`)."""
    from edgecompress.errors import formats_given_as, use_format
    from edgecompress.exporters.openvino import _conversion_cause

    unconvertible = RuntimeError("Check 'false' failed\nNo conversion rule found for operations: aten::foo")
    said = {}
    for words in ("cli", "python", "recipe"):
        with on_surface(words):  # type: ignore[arg-type]
            said[words] = _conversion_cause(unconvertible)[1]
    assert said == {"cli": "an op OpenVINO cannot convert; try --format onnx",
                    "python": "an op OpenVINO cannot convert; try fmt='onnx'",
                    "recipe": "an op OpenVINO cannot convert; try `onnx` in export"}, said
    with formats_given_as("formats"):
        assert use_format("onnx") == "formats=['onnx']"
        with on_surface("cli"):
            assert use_format("onnx") == "--format onnx"
    assert use_format("openvino") == "fmt='openvino'"


def test_a_pytorch_only_format_of_an_onnx_model_names_the_callers_parameter(tmp_path):
    """tflite converts from PyTorch only: the advice names export()'s fmt, an ExportJob's formats."""
    onnx_model = ec.export(ec.load_model("zoo:digits-cnn"), "onnx", "fp32", tmp_path / "src").path
    spec = ec.load_model(str(onnx_model))
    with pytest.raises(EdgeCompressError) as e:
        ec.export(spec, "tflite", "fp32", tmp_path / "x")
    assert "use fmt='onnx' or fmt='openvino' for ONNX inputs" in str(e.value), str(e.value)
    with pytest.raises(EdgeCompressError) as e:
        ec.run_export(ec.ExportJob(model=str(onnx_model), formats=["tflite"], out_dir=tmp_path / "job"))
    assert "use formats=['onnx'] or formats=['openvino'] for ONNX inputs" in str(e.value), str(e.value)


def test_every_recipe_error_names_its_recipe_file(tmp_path):
    """An error from the export step of `edgecompress run r.yaml` names r.yaml as the recipe's own
    checks do (it began with "onnx int8 of digits-cnn: nothing to quantize: ...")."""
    import yaml

    recipe = {"model": "zoo:digits-cnn", "export": ["onnx:int8"],
              "options": {"float_first": 99, "validate_artifacts": False}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(EdgeCompressError) as e:
        ec.run_recipe(tmp_path / "r.yaml", tmp_path / "out", progress=False)
    assert str(e.value).startswith(f"recipe {tmp_path}/r.yaml: onnx int8 of digits-cnn: nothing to quantize: "
                                   "options.float_first: 99 leaves all "), str(e.value)
    r = run_cli("run", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "cli"), "--no-progress", cwd=ROOT)
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 2 and last.startswith(f"error: recipe {tmp_path}/r.yaml: onnx int8 of digits-cnn: "), last
    with pytest.raises(EdgeCompressError) as e:  # a Recipe built in Python: checked when it runs, named as a dict's
        ec.run_recipe(ec.Recipe(model="zoo:digits-cnn", export=["coreml"]), tmp_path / "obj", progress=False)
    assert str(e.value).startswith("recipe: export: 'coreml': unknown format"), str(e.value)


@pytest.mark.parametrize("args,said", [
    (["--prune", "1.5"], "error: compress: --prune: 1.5 is out of range (0, 1)"),
    ([TINY, "--input-shape", "1,3,8,8", "--prune", "0.3", "--prune-method", "reconstruct"],
     "error: compress: --prune: train data: none given and model tiny has no default (pass --train)"),
    (["--prune", "0.3", "-f", "onnx:int8", "--calib", "{tmp}/nowhere.npy"],
     "error: compress: --calib: train data {tmp}/nowhere.npy: no such file or directory"),
    (["-f", "coreml"], "error: compress: --export 'coreml': unknown format (known: "),
    (["-f", "onnx:fp16"], "error: compress: --export onnx:fp16: onnx supports precisions "),
    (["--qat-epochs", "1", "-f", "onnx:fp32"], "error: compress: --export onnx:fp32 after qat; "),
    (["-f", "onnx", "--threads", "4096"], "error: compress: --threads 4096: this machine gives edgecompress "),
    # compress's errors start with `compress:` (its recipe's all did; its measuring flags' did not)
    (["-f", "onnx", "--runs", "0"], "error: compress: --runs 0: 1 or more"),
    (["-f", "onnx", "--batch", "0"], "error: compress: --batch 0: 1 or more"),
    ([IDS, "--input-shape", "1,16", "-f", "tflite:int8", "--calib", "{tmp}/ids.npy"],
     "error: compress: --export tflite int8 of ids_bag: full-integer int8 does not apply to a model of int64 ids "
     "(the embedding lookup / the ops reading the ids stay float in LiteRT); export tflite:dynamic-int8 (int8 "
     "weights), or accept a mixed file of int8 layers and float ops with --allow-mixed"),
])
def test_compress_names_its_own_flags(tmp_path, args, said):
    """`compress` turns its flags into a recipe: its errors name those flags (--export, --threads N,
    --prune), not the recipe's keys (export:, options.threads: N, passes[0].prune), export's
    --format / --int8 it does not have, or a recipe's pydantic wording (options.runs: Input should ...)."""
    np.save(tmp_path / "ids.npy", np.random.default_rng(0).integers(0, 50, (8, 16)).astype(np.int64))
    args = [a.format(tmp=tmp_path) for a in args]
    model = [] if args[0] in (TINY, IDS) else ["zoo:digits-cnn"]
    r = run_cli("compress", *model, *args, "--out", str(tmp_path / "out"), "--no-progress", cwd=ROOT)
    last = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
    assert r.returncode in (2, 3) and last.startswith(said.format(tmp=tmp_path)), r.stderr[-1500:]
    assert not re.search(r"\b(options|data|passes)[.\[]|: export: |--format|--int8|Input should", last), last
