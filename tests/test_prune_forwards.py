"""The prune pass finds the layers a model returns as they are, and the order its convolutions run
in (`_run_once`, a forward pass), once per model: `_ignored` is asked for every dependency graph it
builds (plan, pruner, channels after) and on every copy a MACs target bisects, and ran the model
each time."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import edgecompress
from edgecompress.models import load_model
from edgecompress.passes import prune as P

pytestmark = pytest.mark.usefixtures("one_thread")


class _TwoHeads(nn.Module):
    """Two outputs, so `_run_once` has work: both heads stay whole."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3)
        self.c2 = nn.Conv2d(16, 16, 3)
        self.fc = nn.Linear(16, 4)
        self.aux = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.relu(self.c2(torch.relu(self.c1(x)))).mean((2, 3))
        return self.fc(y), self.aux(y)


def _counted(module: nn.Module) -> list[int]:
    """Forward passes of `module` (and of its deep copies, which keep the hook) run without grad:
    `_run_once`'s (and the MAC counter's); Torch-Pruning's graph tracing runs with grad."""
    calls = [0]
    module.register_forward_hook(lambda _m, _i, _o: calls.__setitem__(0, calls[0] + (not torch.is_grad_enabled())))
    return calls


def test_ignored_runs_the_model_once():
    torch.manual_seed(0)
    m = _TwoHeads().eval()
    calls = _counted(m)
    cfg = P.PruneConfig(ratio=0.5)
    example = (torch.randn(1, 3, 12, 12),)
    first = P._ignored(m, cfg, example)
    assert all(P._ignored(m, cfg, example) == first for _ in range(3))
    assert calls[0] == 1 and m.aux in first and m.fc in first
    # a model whose layers change (another pass swapped one) is run again
    m.aux = nn.Sequential(nn.Linear(16, 2))
    assert m.aux[0] in P._ignored(m, cfg, example) and calls[0] == 2


def test_prune_at_a_ratio_runs_the_model_once_for_its_outputs():
    torch.manual_seed(0)
    spec = load_model(_TwoHeads(), input_shape=(1, 3, 12, 12))
    calls = _counted(spec.module)
    out = edgecompress.prune(spec, ratio=0.5, progress=False)
    assert calls[0] == 1  # plan, pruner and the channels after: 3 runs before
    assert out.module.fc.out_features == 4 and out.module.aux.out_features == 2


def test_prune_to_a_macs_target_runs_the_model_once_for_its_outputs(monkeypatch):
    torch.manual_seed(0)
    spec = load_model(_TwoHeads(), input_shape=(1, 3, 12, 12))
    calls = _counted(spec.module)
    counts = [0]  # the MAC counter's forward passes (one per _count call), counted apart
    count = P._count

    def counting(module, example):
        counts[0] += 1
        return count(module, example)

    monkeypatch.setattr(P, "_count", counting)
    edgecompress.prune(spec, target_macs=0.3, progress=False)
    assert counts[0] > 5  # the bisection ran
    # one for the outputs, however many copies were bisected (each ran the model twice before)
    assert calls[0] == counts[0] + 1


class _HeadFirst(nn.Module):
    """Registers its head convolution first and its stem last: registration order is not run order."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(16, 32, 1)  # runs last
        self.mid = nn.Conv2d(16, 16, 3, padding=1)
        self.stem = nn.Conv2d(3, 16, 3, padding=1)  # runs first
        self.fc = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.mid(torch.relu(self.stem(x))))
        return self.fc(torch.relu(self.head(y)).mean((2, 3)))


@pytest.mark.parametrize("keep", ["ignore_stem", "ignore_head"])
def test_stem_and_head_are_the_first_and_last_convolutions_to_run(keep):
    """ignore_stem / ignore_head keep the convolution that runs first / last whole, not the first /
    last registered (which kept the head whole for ignore_stem and pruned the stem)."""
    torch.manual_seed(0)
    spec = load_model(_HeadFirst(), input_shape=(1, 3, 12, 12))
    calls = _counted(spec.module)
    m = edgecompress.prune(spec, ratio=0.5, progress=False, **{keep: True}).module
    assert calls[0] == 1  # the run order comes from the forward the output layers are found in
    kept, cut = (m.stem, m.head) if keep == "ignore_stem" else (m.head, m.stem)
    assert (kept.out_channels, cut.out_channels) == ((16, 16) if keep == "ignore_stem" else (32, 8))
    assert m.mid.out_channels == 8


class _ClassifierFirst(nn.Module):
    """Registers its classifier before its feature layers: the last *registered* Linear is a
    feature layer (`proj`), the last to run is `classifier`."""

    def __init__(self) -> None:
        super().__init__()
        self.classifier = nn.Linear(32, 10)
        self.conv = nn.Conv2d(3, 16, 3)
        self.proj = nn.Linear(16, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv(x)).mean((2, 3))
        return self.classifier(torch.relu(self.proj(y)))


def test_the_classifier_is_the_last_linear_to_run_not_the_last_registered():
    torch.manual_seed(0)
    m = _ClassifierFirst().eval()
    calls = _counted(m)
    example = (torch.randn(1, 3, 12, 12),)
    assert P._classifier(m, example) is m.classifier
    ignored = P._ignored(m, P.PruneConfig(ratio=0.5), example)
    assert m.classifier in ignored and m.proj not in ignored and calls[0] == 1  # the same cached forward

    spec = load_model(_ClassifierFirst(), input_shape=(1, 3, 12, 12))
    calls = _counted(spec.module)
    out = edgecompress.prune(spec, ratio=0.5, progress=False)
    assert calls[0] == 1
    assert out.module.classifier.out_features == 10, "the classes were pruned"
    assert out.module.proj.out_features < 32  # a feature layer, pruned as the others
    assert out.module(torch.randn(2, 3, 12, 12)).shape == (2, 10)
