"""Compression passes and the Python API, audit 21C (B2-B4, M1-M3, P2, P3): tied weights stay tied
and a budget never grows the model, bad values are refused in one line naming the recipe's key, and
what a pass left undone is said."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import edgecompress
from edgecompress.errors import ConfigError
from edgecompress.passes._common import model_stats
from edgecompress.recipe import parse_recipe

pytestmark = pytest.mark.usefixtures("one_thread")
SHAPE = (1, 1, 8, 8)


class Tied(nn.Module):
    """Two Linear layers sharing one weight; `stem` (optional) feeds both, so pruning its channels
    slices their inputs."""

    def __init__(self, stem: bool = False) -> None:
        super().__init__()
        self.stem = nn.Linear(64, 48) if stem else None
        fan_in = 48 if stem else 64
        self.a, self.b = nn.Linear(fan_in, 32), nn.Linear(fan_in, 32)
        self.b.weight = self.a.weight
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        x = x.flatten(1)
        if self.stem is not None:
            x = torch.relu(self.stem(x))
        return self.head(torch.cat([torch.relu(self.a(x)), torch.tanh(self.b(x))], 1))


def _small() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 10))


def _warnings(spec) -> list[str]:
    return spec.extra["passes"][-1]["log"]["warnings"]


# --- B2: tied weights ---------------------------------------------------------------------------------
def test_lowrank_budget_leaves_tied_weights_whole_and_never_grows():
    torch.manual_seed(0)
    net = Tied()
    before = model_stats(edgecompress.load_model(net, SHAPE))["params"]
    out = edgecompress.lowrank(net, energy=None, param_budget=0.9, input_shape=SHAPE, progress=False)
    assert model_stats(out)["params"] <= 0.9 * before  # was 1.63x: the shared weight saved twice
    assert out.module.a.weight is out.module.b.weight
    assert "a.weight is shared with b: left whole" in _warnings(out)


@pytest.mark.parametrize("stem", [False, True])
def test_prune_keeps_tied_weights_tied(stem):
    torch.manual_seed(0)
    net = Tied(stem)
    out = edgecompress.prune(net, ratio=0.5, input_shape=SHAPE, progress=False)
    m = out.module
    assert m.a.weight is m.b.weight  # Torch-Pruning gave each its own, different weight
    assert "a.weight is shared with b: left whole" in _warnings(out)
    if stem:  # the stem's channels went from both users' inputs: tied again, and it runs
        assert m.a.weight.shape[1] == m.stem.weight.shape[0] < 48
        assert m(torch.randn(2, *SHAPE[1:])).shape == (2, 10)


# --- B3: (tensor, tensor) ------------------------------------------------------------------------------
def test_load_data_takes_a_tuple_of_tensors():
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    ds = edgecompress.load_data((x, y))
    assert isinstance(ds.x, np.ndarray) and np.array_equal(ds.x, x.numpy())
    assert np.array_equal(ds.y, y.numpy())


# --- B4: ranges refused in one line while the recipe is checked ---------------------------------------
@pytest.mark.parametrize(("params", "key"), [
    ({"prune": {"ratio": 0.5, "importance": "taylor", "taylor_batches": 0}}, r"passes\[0\]\.prune\.taylor_batches: 0"),
    ({"distill": {"epochs": 1, "weight_decay": -1}}, r"passes\[0\]\.distill\.weight_decay: -1"),
    ({"prune": {"ratio": 0.5, "finetune_epochs": 1, "distill": {"weight_decay": -0.5}}},
     r"passes\[0\]\.prune\.distill\.weight_decay: -0\.5"),
    ({"distill": {"epochs": 1, "seed": 2**62}}, r"passes\[0\]\.distill\.seed: \d+"),  # overflowed in torch
])
def test_out_of_range_values_are_refused_up_front(params, key):
    with pytest.raises(ConfigError, match=rf"^recipe: {key}\S* is out of range \[") as e:
        parse_recipe({"model": "zoo:digits-cnn", "passes": [params]})
    assert "\n" not in str(e.value)


# --- M1: layers bn-scale leaves whole are said ---------------------------------------------------------
def test_bn_scale_notes_the_layers_it_left_whole(digits_spec):
    out = edgecompress.prune(digits_spec, ratio=0.5, importance="bn-scale", progress=False)
    assert out.module.fc1.out_features == 64  # no BatchNorm after it: bn-scale cannot rank it
    notes = [w for w in _warnings(out) if "left whole" in w]
    assert notes and "fc1" in notes[0] and "BatchNorm" in notes[0], _warnings(out)


# --- M2: container names and the classifier in per_layer / lowrank.ignored -----------------------------
def test_per_layer_container_name_applies_inside(digits_spec):
    out = edgecompress.prune(digits_spec, ratio=0.1, per_layer={"res_a": 0.8}, progress=False)
    assert out.module.res_a[0].out_channels == 6  # 32 at 0.8; it was 29 (the ratio 0.1)


def test_per_layer_on_the_classifier_is_noted(digits_spec):
    out = edgecompress.prune(digits_spec, ratio=0.1, per_layer={"fc2": 0.5}, progress=False)
    assert out.module.fc2.out_features == 10
    assert any(w.startswith("prune.per_layer.fc2: not used; the classifier") for w in _warnings(out))


def test_lowrank_ignored_container_covers_its_layers(digits_spec):
    out = edgecompress.lowrank(digits_spec, energy=0.8, ignored=["res_a"], progress=False)
    assert isinstance(out.module.res_a[0], nn.Conv2d)  # was factorized into a Sequential anyway
    assert isinstance(out.module.res_b[0], nn.Sequential)


# --- M3: a ratio with a target ------------------------------------------------------------------------
@pytest.mark.parametrize(("params", "msg"), [
    ({"ratio": 0.3, "target_macs": 0.5}, "give ratio or target_macs, not both"),
    ({"ratio": 0.5, "target_params": 0.5}, "give ratio or target_params, not both"),  # 0.5 is the default
    ({"ratio": 0.3, "method": "block", "blocks": 1}, "method block removes whole blocks"),
])
def test_ratio_with_a_target_is_refused(params, msg):
    with pytest.raises(ConfigError, match=rf"^recipe: passes\[0\]\.prune\.ratio: {msg}"):
        parse_recipe({"model": "zoo:digits-cnn", "passes": [{"prune": params}]})


def test_ratio_default_is_written_as_a_number():
    r = parse_recipe({"model": "zoo:digits-cnn", "passes": ["prune", {"prune": {"target_params": 0.2}}]})
    passes = r.resolved()["passes"]
    assert passes[0]["prune"]["ratio"] == 0.5 and type(passes[0]["prune"]["ratio"]) is float
    assert passes[1]["prune"]["ratio"] is None


# --- P2: a checkpoint of another configuration ---------------------------------------------------------
def test_checkpoint_of_other_settings_is_noted(tmp_path, capsys):
    x, y = np.random.default_rng(0).standard_normal((32, 1, 8, 8), dtype=np.float32), np.arange(32) % 10
    edgecompress.distill(_small(), epochs=1, data=(x, y), input_shape=SHAPE, workdir=tmp_path, progress=False)
    capsys.readouterr()
    edgecompress.distill(_small(), epochs=1, lr=2e-3, data=(x, y), input_shape=SHAPE, workdir=tmp_path,
                         progress=False)
    assert "is of another configuration" in capsys.readouterr().err


# --- P3: a teacher with other outputs ------------------------------------------------------------------
def test_teacher_with_other_outputs_is_refused_without_labels():
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(64, 5))
    with pytest.raises(ConfigError, match=r"teacher gives 5 outputs and the student 10"):
        edgecompress.distill(_small(), epochs=1, data=torch.randn(32, 1, 8, 8), teacher=teacher,
                             input_shape=SHAPE, progress=False)
