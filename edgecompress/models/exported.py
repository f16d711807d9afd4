"""An ExportedProgram's module, usable where an `nn.Module` is expected."""

from __future__ import annotations

import math
from typing import Any

import torch


class ExportedModule(torch.nn.Module):
    """`ep.module()` behind a plain `nn.Module`.

    Why: in torch 2.13 the module of a loaded `.pt2` refuses `.eval()` / `.train()` (its graph was
    traced in one mode and stays in it), and every exporter, like any PyTorch code, calls
    `.eval()` first: `export model.pt2` failed with "Calling eval() is not supported yet". Here
    the mode flag is kept on the wrapper and never reaches the graph.
    """

    def __init__(self, graph_module: torch.fx.GraphModule, fixed_batch: int | None = None) -> None:
        super().__init__()
        self.graph_module = graph_module
        # A program exported at a fixed batch (torch.export's default, batch 1) refuses any other:
        # calibration, evaluation and the fp32 reference feed batches, so they run it per sample.
        self.fixed_batch = fixed_batch

    def forward(self, x: torch.Tensor) -> Any:  # one input: what the .pt2 loader accepts
        # traced (OpenVINO's converter) or exported: the example batch is the fixed one, and a
        # shape test would read as a branch on tensor values
        if self.fixed_batch is None or torch.jit.is_tracing() or x.shape[0] == self.fixed_batch:
            return self.graph_module(x)
        outs = [self.graph_module(x[i:i + 1]) for i in range(x.shape[0])]
        if isinstance(outs[0], torch.Tensor):
            return torch.cat(outs)
        if isinstance(outs[0], dict):
            return {k: torch.cat([o[k] for o in outs]) for k in outs[0]}
        return type(outs[0])(torch.cat(parts) for parts in zip(*outs, strict=True))  # a tuple / list of tensors

    def train(self, mode: bool = True) -> ExportedModule:
        self.training = mode  # the exported graph has a fixed mode; do not recurse into it
        return self


def program_macs(graph_module: torch.fx.GraphModule, example: torch.Tensor) -> int:
    """MACs of one run of an exported program's graph, counted as Torch-Pruning's counter counts
    the eager model (`tp.utils.count_ops_and_params`, what `count_params_macs` uses for modules).

    Why: the counter hooks modules by exact type (Conv2d, BatchNorm2d, MaxPool2d, ReLU, ...), and a
    program has no modules; torch's FLOP counter saw its convolutions and matmuls only, so a .pt2
    read a few % fewer MACs than the same model as module:factory. Here every aten op carries its
    module call (`nn_module_stack`), and each call of a type the counter hooks is counted with that
    hook's formula from the call's input and output, ops outside such calls (a functional F.relu)
    not at all, as in eager. Types whose hooks read module internals (RNNs, attention) count their
    ops' FLOPs / 2. Shapes come from running the graph at `example` (a dynamic batch is symbolic).
    """
    import torch_pruning as tp
    from torch.utils.flop_counter import FlopCounterMode

    from edgecompress.models.macs import hook_name_for

    params = dict(graph_module.named_parameters())
    hooks = {**tp.utils.op_counter.MODULES_MAPPING, **tp.utils.op_counter.CUSTOM_MODULES_MAPPING}
    kinds: dict[str, str | None] = {f"{t.__module__}.{t.__qualname__}": h.__name__ for t, h in hooks.items()}
    calls: dict[str, dict[str, Any]] = {}  # module call -> path, hook name, first input, last output
    other = 0  # FLOPs of ops in calls of hooked types without a formula here

    class Walk(torch.fx.Interpreter):
        def run_node(self, n: torch.fx.Node) -> Any:
            nonlocal other
            stack = n.meta.get("nn_module_stack") if n.op == "call_function" else None
            key, (path, kind) = next(reversed(stack.items())) if stack else ("", ("", ""))
            if kind and kind not in kinds:  # a subclass (SameConv2d): its base's formula, as in eager
                kinds[kind] = hook_name_for(kind)
            hook = kinds.get(kind)
            if hook is None:
                return super().run_node(n)
            if hook not in _FORMULAS:
                with FlopCounterMode(display=False) as counter:
                    out = super().run_node(n)
                other += counter.get_total_flops()
                return out
            out = super().run_node(n)
            call = calls.setdefault(key, {"path": path, "hook": hook})
            if "input" not in call:  # the call's input: its first op's first tensor argument
                call["input"] = next((self.env[a] for a in n.all_input_nodes if isinstance(self.env[a], torch.Tensor)
                                      and a.op != "get_attr"), None)
            call["output"] = out[0] if isinstance(out, tuple | list) else out
            return out

    Walk(graph_module).run(example)
    total = other // 2
    for c in calls.values():
        x, y = c["input"], c["output"]
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            continue
        weight, bias = params.get(f"{c['path']}.weight"), params.get(f"{c['path']}.bias")
        total += _hook_macs(c["hook"], x, y, weight, bias)
    return int(total)


# The Torch-Pruning op_counter hooks `_hook_macs` has the formula of (the others read module internals)
_FORMULAS = frozenset({"conv_flops_counter_hook", "linear_flops_counter_hook", "bn_flops_counter_hook",
                       "ln_flops_counter_hook", "pool_flops_counter_hook", "relu_flops_counter_hook",
                       "upsample_flops_counter_hook"})


def _hook_macs(hook: str, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None,
               bias: torch.Tensor | None) -> int:
    """What Torch-Pruning's `hook` adds for a module call of input `x` and output `y`, with the
    module's attributes read from its parameters: `affine` / `elementwise_affine` is "has a
    weight", and a convolution's kernel * in_channels * out_channels / groups is its weight's size."""
    if hook == "conv_flops_counter_hook":
        per_position = weight.numel() if weight is not None else 0
        return per_position * y.shape[0] * math.prod(y.shape[2:]) + (y.numel() if bias is not None else 0)
    if hook == "linear_flops_counter_hook":  # (its bias term is not times the rows: the hook's own rule)
        return x.numel() * y.shape[-1] + (y.shape[-1] if bias is not None else 0)
    if hook in ("bn_flops_counter_hook", "ln_flops_counter_hook"):
        return x.numel() * (2 if weight is not None else 1)
    if hook == "pool_flops_counter_hook":
        return x.numel()
    if hook == "relu_flops_counter_hook":
        return y.numel()
    if hook == "upsample_flops_counter_hook":
        return y[0].numel()  # the hook counts the first sample's output
    return 0
