"""Recipes and model loading, audit 21C (M4-M6, P1, P4): model / weights errors name the recipe and
its key, a missing file says so, a factory beside the recipe imports from anywhere, a float64 model
is named, quoted numbers are refused at the top level, and the chain total lists its passes."""

from __future__ import annotations

import sys

import pytest
from torch import nn

import edgecompress
from edgecompress.errors import ConfigError, InputFileError, ModelLoadError
from edgecompress.recipe import load_recipe, parse_recipe, run_recipe

pytestmark = pytest.mark.usefixtures("one_thread")
SHAPE = (1, 1, 8, 8)


# --- M4: model / weights errors in the recipe's words; a missing .pt --------------------------------
@pytest.mark.parametrize(("lines", "cls", "msg"), [
    ("model: zoo:digits-cn\n", ConfigError, r"model: unknown zoo model 'digits-cn'"),
    ("model: nosuch.pt\n", InputFileError, r"model: \S+/nosuch\.pt: no such file$"),
    ("model: zoo:digits-cnn\nweights: w.pt\n", ConfigError, r"weights: \S+/w\.pt: zoo:digits-cnn carries its own"),
])
def test_recipe_model_errors_name_the_recipe_and_key(tmp_path, lines, cls, msg):
    (tmp_path / "w.pt").write_bytes(b"")
    (tmp_path / "r.yaml").write_text(lines)
    with pytest.raises(cls, match=rf"^recipe \S*r\.yaml: {msg}") as e:
        run_recipe(tmp_path / "r.yaml", tmp_path / "out", progress=False)
    assert "MODEL" not in str(e.value) and "--weights" not in str(e.value)


def test_missing_checkpoint_file_is_no_such_file(tmp_path):
    with pytest.raises(InputFileError, match=r"^model '.*nosuch\.pt': no such file$"):
        edgecompress.load_model(str(tmp_path / "nosuch.pt"))


# --- M5: a module:factory beside the recipe ------------------------------------------------------------
def test_factory_beside_the_recipe_runs_from_anywhere(tmp_path, monkeypatch):
    sub, elsewhere = tmp_path / "sub", tmp_path / "elsewhere"
    sub.mkdir()
    elsewhere.mkdir()
    (sub / "ec_audit21c_factory.py").write_text(
        "import torch.nn as nn\n\ndef make():\n    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))\n")
    (sub / "r.yaml").write_text("model: ec_audit21c_factory:make\ninput_shape: [1, 1, 8, 8]\n")
    monkeypatch.chdir(elsewhere)
    path = list(sys.path)
    try:
        _, paths = run_recipe(sub / "r.yaml", tmp_path / "out1", progress=False)
        assert sys.path == path  # the recipe's folder only while the model loads
        resolved = load_recipe(paths["recipe"])
        assert resolved.model_dir == str(sub)
        sys.modules.pop("ec_audit21c_factory", None)  # imported again, from model_dir
        run_recipe(paths["recipe"], tmp_path / "out2", progress=False)
    finally:
        sys.modules.pop("ec_audit21c_factory", None)


# --- M6: a float64 model -------------------------------------------------------------------------------
def test_float64_model_is_named_as_such():
    with pytest.raises(ModelLoadError, match=r"has float64 parameters; .* take float32 \(call model\.float\(\)\)"):
        edgecompress.prune(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).double(), ratio=0.5, input_shape=SHAPE,
                           progress=False)


# --- P1: quoted numbers at the top level ---------------------------------------------------------------
@pytest.mark.parametrize(("extra", "key"), [({"input_shape": ["1", "1", "8", "8"]}, r"input_shape\[0\]"),
                                            ({"version": "1"}, "version")])
def test_top_level_quoted_numbers_are_refused(extra, key):
    with pytest.raises(ConfigError, match=rf"^recipe: {key}: Input should be a valid integer"):
        parse_recipe({"model": "zoo:digits-cnn", **extra})


def test_options_seed_out_of_torch_range_is_refused():
    with pytest.raises(ConfigError, match=r"^recipe: options\.seed: Input should be less than"):
        parse_recipe({"model": "zoo:digits-cnn", "options": {"seed": 2**64}})


def test_top_level_shape_tuple_from_python_is_a_shape():
    assert parse_recipe({"model": "zoo:digits-cnn", "input_shape": (1, 1, 28, 28)}).input_shape == [1, 1, 28, 28]


# --- P4: the chain total's config ----------------------------------------------------------------------
def test_chain_total_lists_the_passes(tmp_path):
    report, _ = run_recipe({"model": "zoo:digits-cnn", "passes": [{"prune": {"ratio": 0.5}},
                                                                   {"lowrank": {"energy": 0.9}}]},
                           tmp_path / "out", progress=False)
    total = report.steps[-1]
    assert total["name"] == "chain total"
    assert total["params_config"] == {"passes": ["prune", "lowrank"]}
