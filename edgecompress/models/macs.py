"""Parameters and MACs with Torch-Pruning's counter, subclasses of the layers it knows included.

Why a wrapper: the counter (`tp.utils.count_ops_and_params`) picks its formula by exact type, so a
subclass of nn.Conv2d (EfficientNet-Lite's `SameConv2d` for the stem and every depthwise conv,
timm's `Conv2dSame`, a user's own) counted 0 MACs and EfficientNet-Lite0 read 353 M instead of
its 399 M. A subclass now gets the formula of its nearest base the counter knows, through the
counter's own `CUSTOM_MODULES_MAPPING`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


def _mappings() -> tuple[dict[type, Callable[..., Any]], dict[type, Callable[..., Any]]]:
    from torch_pruning.utils import op_counter

    return op_counter.MODULES_MAPPING, op_counter.CUSTOM_MODULES_MAPPING


def counter_hook(cls: type) -> Callable[..., Any] | None:
    """The counter's hook for modules of type `cls`: its own, else its nearest known base's."""
    known, custom = _mappings()
    for base in cls.__mro__:
        hook = custom.get(base) or known.get(base)
        if hook is not None:
            return hook
    return None


def hook_name_for(kind: str) -> str | None:
    """`counter_hook` for a type named `module.QualName` (an exported graph's `nn_module_stack`),
    looked up among the modules already imported (nothing is imported for it), or None."""
    mod, _, qual = kind.rpartition(".")
    obj: Any = sys.modules.get(mod)
    while obj is None and "." in mod:  # a nested class: `module.Outer.Inner`
        mod, _, outer = mod.rpartition(".")
        qual = f"{outer}.{qual}"
        obj = sys.modules.get(mod)
    for part in qual.split("."):
        obj = getattr(obj, part, None)
    hook = counter_hook(obj) if isinstance(obj, type) else None
    return hook.__name__ if hook is not None else None


def count_ops_and_params(module: Any, example: Any) -> tuple[int, int]:
    """(MACs, params) of one run of `module` on `example`, as `tp.utils.count_ops_and_params`
    counts them, with subclasses of the layers it knows counted as those layers."""
    import torch
    import torch_pruning as tp
    from torch_pruning.utils import op_counter

    known, _ = _mappings()
    extra = {type(m): hook for m in module.modules()
             if type(m) not in known and (hook := counter_hook(type(m))) is not None}
    op_counter.CUSTOM_MODULES_MAPPING = extra  # read by the counter's hooks; it resets it itself
    try:
        with torch.no_grad():
            macs, params = tp.utils.count_ops_and_params(module, example)
    finally:
        op_counter.CUSTOM_MODULES_MAPPING = {}
    return int(macs), int(params)
