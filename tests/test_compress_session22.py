"""Passes from Python (session 22): a pass's nested `distill:` keys are refused when its config is
built, before any work; unstructured pruning ranks a tied weight once."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import edgecompress
from edgecompress.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


class _Untouchable(nn.Module):
    """Any forward (tracing, calibration, the dependency graph) fails loudly."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        raise RuntimeError("the model was run before its config was checked")


@pytest.mark.parametrize(("call", "key"), [
    (lambda m: edgecompress.prune(m, {"ratio": 0.5, "finetune_epochs": 1, "distill": {"temperature": -1}},
                                  input_shape=(1, 4)), "prune.distill.temperature"),
    (lambda m: edgecompress.lowrank(m, {"distill": {"bogus": 1}}, input_shape=(1, 4)), "lowrank.distill.bogus"),
    (lambda m: edgecompress.qat(m, {"distill": {"alpha": 2}}, input_shape=(1, 4)), "qat.distill.alpha"),
])
def test_nested_distill_keys_are_refused_before_any_work(call, key):
    with pytest.raises(ConfigError, match=rf"^{key}: "):
        call(_Untouchable())


def test_unstructured_ranks_a_tied_weight_once():
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.a, self.b = nn.Linear(64, 48), nn.Linear(48, 32), nn.Linear(48, 32)
            self.b.weight = self.a.weight
            self.head = nn.Linear(64, 10)

        def forward(self, x):
            x = torch.relu(self.stem(x.flatten(1)))
            return self.head(torch.cat([self.a(x), self.b(x)], 1))

    torch.manual_seed(0)
    spec = edgecompress.prune(Tied(), {"method": "unstructured", "ratio": 0.5}, input_shape=(1, 64))
    out = spec.module
    assert out.a.weight is out.b.weight
    unique = {id(p): p for p in out.parameters() if p.dim() > 1}.values()
    total = sum(p.numel() for p in unique)
    zeros = sum(int((p == 0).sum()) for p in unique)
    log = spec.extra["passes"][-1]["log"]
    assert log["weights"] == total == 64 * 48 + 48 * 32 + 64 * 10  # counted twice before
    assert zeros / total == pytest.approx(0.5, abs=1e-3)  # the tied weight took two ranking slots
    assert log["sparsity"] == pytest.approx(zeros / total, abs=1e-6)
