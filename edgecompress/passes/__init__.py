"""Compression passes: one module per technique, each registered by name in `PASSES`.

A pass is a function `fn(model_or_spec, config=None, *, data=None, ...) -> ModelSpec` plus a typed
config dataclass; `PASSES.get("prune")` returns its `PassInfo`. The recipe runner looks passes up
here, so adding a technique is one new file that calls `register_pass`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgecompress.registry import Registry


@dataclass(frozen=True)
class PassInfo:
    name: str
    config: type  # the config dataclass (fields = the recipe's keys)
    run: Callable[..., Any]  # (model_or_spec, config, *, data, eval_data, teacher, workdir, progress)
    description: str = ""
    # changes the architecture or module names: a checkpoint alone cannot resume it, and (for a
    # plugin pass; the built-in ones are known by name) a recipe checks the module names of the
    # passes after it when they run
    structural: bool = False


PASSES: Registry[PassInfo] = Registry("pass", "edgecompress.passes", "edgecompress.passes")


def register_pass(info: PassInfo) -> PassInfo:
    return PASSES.register(info.name, info)


__all__ = ["PASSES", "PassInfo", "register_pass"]
