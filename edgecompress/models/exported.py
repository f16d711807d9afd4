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

    def __init__(self, graph_module: torch.nn.Module) -> None:
        super().__init__()
        self.graph_module = graph_module

    def forward(self, x: torch.Tensor) -> Any:  # one input: what the .pt2 loader accepts
        return self.graph_module(x)

    def train(self, mode: bool = True) -> ExportedModule:
        self.training = mode  # the exported graph has a fixed mode; do not recurse into it
        return self
