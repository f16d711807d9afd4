"""The arithmetic the compression passes and recipes decide with, at exact values and boundaries.

Each test kills a hand-made bug the rest of the suite let through (mutation audit): channels
floored instead of rounded, the max_layer_ratio cap ignored, an SVD rank one short of the asked
energy, a factorization kept at break-even, the KD term without T^2 or with alpha swapped, qat
accepted before another pass, a zero input dimension, a resolution pass refused at the model's own
side, a registry that silently replaced an entry, gray-unit images left at 0-255, the last partial
batch dropped.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgecompress.errors import ConfigError


def test_prune_keeps_the_nearest_channel_count_and_honours_the_layer_cap():
    from edgecompress.passes.prune import _kept

    assert _kept(10, 0.25, 1.0, None) == 8  # 7.5 rounds to 8 (a floor took 7)
    assert _kept(10, 0.24, 1.0, None) == 8 and _kept(10, 0.26, 1.0, None) == 7
    assert _kept(64, 0.9, 0.6, None) == 26  # 0.9 asked, at most 60 % of a layer goes: 64 - 38
    assert _kept(64, 0.9, 1.0, None) == 6


def test_lowrank_rank_reaches_the_energy_and_factorizes_only_what_saves():
    from torch import nn

    from edgecompress.passes.lowrank import _rank_for, _saves

    s = torch.tensor([2.0, 1.0, 1.0], dtype=torch.float64)  # energies 4/6, 5/6, 1
    assert [_rank_for(s, e, 1) for e in (0.5, 4 / 6, 0.8, 5 / 6, 0.99)] == [1, 1, 2, 2, 3]
    assert _rank_for(s, 0.1, 2) == 2  # min_rank
    square = nn.Linear(4, 4)
    assert not _saves(square, 2)  # 2 * (4 + 4) == 16 == 4 * 4: break-even is no saving
    assert _saves(square, 1)
    stem = nn.Conv2d(1, 32, 3)  # 288 weights; rank 7: 7 * (9 + 32) = 287, one parameter saved
    assert _saves(stem, 7) and not _saves(stem, 7, 0.1) and _saves(stem, 3, 0.1)  # 123 <= 259.2


def test_kd_loss_is_hintons_t_squared_kl_mixed_by_alpha():
    from edgecompress.passes.distill import DistillConfig, kd_loss, softmax_kl

    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    T = 4.0
    p_t = F.softmax(t / T, 1)
    manual = (p_t * (p_t.log() - F.log_softmax(s / T, 1))).sum(1).mean() * T * T
    assert softmax_kl(s, t, T) == pytest.approx(float(manual), rel=1e-5)
    cfg = DistillConfig(temperature=T, alpha=0.9)
    expected = 0.9 * manual + 0.1 * F.cross_entropy(s, y)
    assert kd_loss(s, t, y, cfg) == pytest.approx(float(expected), rel=1e-5)
    assert kd_loss(s, t, None, cfg) == pytest.approx(float(manual), rel=1e-5)  # unlabelled: KD alone


def test_recipe_order_shape_and_resolution_boundaries():
    from edgecompress.passes.resolution import ResolutionConfig
    from edgecompress.recipe import _check_sizes, parse_recipe

    with pytest.raises(ConfigError, match=r"passes\[0\]\.qat: qat must be the last pass"):
        parse_recipe({"model": "zoo:digits-cnn", "passes": [{"qat": {}}, {"prune": {"ratio": 0.5}}]}, "r")
    parse_recipe({"model": "zoo:digits-cnn", "passes": [{"prune": {"ratio": 0.5}}, {"qat": {}}]}, "r")
    with pytest.raises(ConfigError, match="input_shape: dimensions must be positive"):
        parse_recipe({"model": "zoo:digits-cnn", "input_shape": [1, 0, 8, 8]}, "r")
    recipe = parse_recipe({"model": "zoo:digits-cnn"}, "r")
    _check_sizes(recipe, [("resolution", ResolutionConfig(size=8))], (1, 1, 8, 8))  # its own side: allowed
    with pytest.raises(ConfigError, match=r"resolution\.size 9: larger than the model's input side 8"):
        _check_sizes(recipe, [("resolution", ResolutionConfig(size=9))], (1, 1, 8, 8))


def test_registry_refuses_a_second_entry_of_one_name():
    from edgecompress.registry import Registry

    r: Registry[object] = Registry("thing")
    a, b = object(), object()
    r.register("x", a)
    r.register("x", a)  # the same object again (a module imported twice): fine
    with pytest.raises(ValueError, match="thing 'x' registered twice"):
        r.register("x", b)
    assert r.get("x") is a


def test_gray_unit_scales_to_unit_range_and_batches_keep_the_last_partial_one():
    from PIL import Image

    from edgecompress.data import Dataset
    from edgecompress.data.presets import get_transform

    x = get_transform("gray-unit", 8)(Image.new("L", (16, 16), 255))
    assert x.shape == (1, 8, 8) and np.allclose(x, 1.0)
    ds = Dataset(np.arange(10, dtype=np.float32).reshape(10, 1))
    sizes = [len(b) for b in ds.batches(4)]
    assert sizes == [4, 4, 2]
