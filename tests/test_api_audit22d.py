"""Python API (audit 22D): passes on a .pt2 program and on layer-less models, lowrank that
factorizes nothing, multi-output models in fine-tuning and TFLite int8, Dataset / Recipe built in
Python. Every error is one line and an EdgeCompressError."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import edgecompress
from edgecompress.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


class _Small(nn.Module):
    """Conv -> BN -> ReLU -> mean -> Linear: something every pass can work on."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.b(self.c(x))).mean((2, 3)))


def _small() -> nn.Module:
    torch.manual_seed(0)
    return _Small().eval()


@pytest.fixture(scope="module")
def pt2_spec(tmp_path_factory):
    path = tmp_path_factory.mktemp("pt2") / "small.pt2"
    torch.export.save(torch.export.export(_small(), (torch.randn(1, 3, 8, 8),)), str(path))
    return edgecompress.load_model(str(path))


def _data(n: int = 8, side: int = 8):
    import numpy as np

    rng = np.random.default_rng(0)
    return edgecompress.Dataset(rng.standard_normal((n, 3, side, side)).astype("float32"), rng.integers(0, 10, n))


# --- 2: unstructured pruning of a model without Conv2d / Linear layers ---------------------------

def test_unstructured_prune_without_layers_is_one_config_error():
    class NoLayers(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(4))

        def forward(self, x):
            return x * self.w

    # was: ValueError "torch.cat(): expected a non-empty list of Tensors" from torch's global ranking
    with pytest.raises(ConfigError, match=r"^prune\.method unstructured: model NoLayers has no Conv2d / Linear"):
        edgecompress.prune(NoLayers(), method="unstructured", ratio=0.5, input_shape=(1, 4), progress=False)


# --- 3: passes on a .pt2 program ------------------------------------------------------------------

@pytest.mark.parametrize("call", [
    pytest.param(lambda s: edgecompress.prune(s, ratio=0.5, progress=False), id="prune"),
    pytest.param(lambda s: edgecompress.prune(s, method="unstructured", ratio=0.5, progress=False),
                 id="prune-unstructured"),
    pytest.param(lambda s: edgecompress.lowrank(s, progress=False), id="lowrank"),
    pytest.param(lambda s: edgecompress.qat(s, {"epochs": 1}, data=_data(), progress=False), id="qat"),
    pytest.param(lambda s: edgecompress.resolution(s, size=4, progress=False), id="resolution"),
])
def test_restructuring_passes_refuse_a_pt2_program(pt2_spec, call, request):
    # were: "nothing pruned (... the classifier, ignored or tied layers)", an unchanged model with no
    # word (lowrank), torch's "Constraints violated (batch)" (qat) or "Guard failed" (resolution)
    name = request.node.callspec.id.split("-")[0]
    with pytest.raises(ConfigError, match=rf"^{name}: model small is an exported program \(small\.pt2\)") as e:
        call(pt2_spec)
    assert "\n" not in str(e.value) and "module:factory" in str(e.value)


def test_distill_still_fine_tunes_a_pt2_program(pt2_spec):
    out = edgecompress.distill(pt2_spec, epochs=1, data=_data(), progress=False)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert not torch.equal(out.module(x), pt2_spec.module(x))  # its weights trained


def test_recipe_refuses_a_pt2_before_any_pass(pt2_spec, tmp_path):
    import numpy as np

    np.savez(tmp_path / "xy.npz", x=_data().x, y=_data().y)
    recipe = {"model": pt2_spec.source, "data": {"train": str(tmp_path / "xy.npz")},
              "passes": [{"distill": {"epochs": 1}}, {"lowrank": {}}], "options": {"progress": False}}
    with pytest.raises(ConfigError, match=r"passes\[1\]\.lowrank: model small is an exported program"):
        edgecompress.run_recipe(recipe, tmp_path / "out")
    assert not (tmp_path / "out" / "checkpoints").exists()  # refused before the distill pass trained


def test_pt2_macs_are_counted(pt2_spec):
    from edgecompress.models import count_params_macs

    params, macs = count_params_macs(pt2_spec)
    # conv 8*3*9 MACs per output pixel on 8x8, Linear 8*10 (the hooks' counter saw no layer: 0)
    assert params == sum(p.numel() for p in _small().parameters())
    assert macs == 8 * 3 * 9 * 8 * 8 + 8 * 10
