"""An ExportedProgram's module, usable where an `nn.Module` is expected."""

from __future__ import annotations

from typing import Any

import torch


class ExportedModule(torch.nn.Module):
    """`ep.module()` behind a plain `nn.Module`.

    Why: in torch 2.13 the module of a loaded `.pt2` refuses `.eval()` / `.train()` (its graph was
    traced in one mode and stays in it), and every exporter, like any PyTorch code, calls
    `.eval()` first: `export model.pt2` failed with "Calling eval() is not supported yet". Here
    the mode flag is kept on the wrapper and never reaches the graph.
    """

    def __init__(self, graph_module: torch.nn.Module, fixed_batch: int | None = None) -> None:
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
