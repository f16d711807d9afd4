"""Train / eval flags of a caller's module, given back after we switch it to eval."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def kept_modes(module: Any) -> Iterator[None]:
    """Restore every submodule's `training` flag on exit, not only the top one's.

    Why: `module.train(was_training)` put a BatchNorm the caller had frozen (`bn.eval()` inside a
    module in train mode) back into training. PT2E graphs (fx.GraphModule) switch modes by
    rewriting their graph, so they are left as they are.
    """
    import torch

    if not isinstance(module, torch.nn.Module) or isinstance(module, torch.fx.GraphModule):
        yield
        return
    flags = [(m, m.training) for m in module.modules()]
    try:
        yield
    finally:
        for m, training in flags:
            m.training = training
