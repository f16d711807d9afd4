"""Quantization-aware training with torchao PT2E, trained with the KD objective.

torch.export.export (dynamic batch) -> prepare_qat_pt2e(m, X86InductorQuantizer(is_qat)) ->
fine-tune with `distill.finetune` (teacher = the float model before the pass) -> convert_pt2e.
The result is a GraphModule with real quantize/dequantize ops; the spec is marked
`extra["quantized"] = "qat"` so the exporters lower it as it is (QDQ ONNX, OpenVINO int8 from
that ONNX) instead of running their own post-training quantization.

Prepared / converted models reject .train()/.eval(): mode switches go through
`move_exported_model_to_train/eval`. QAT must be the last pass of a chain.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from edgecompress.errors import ConfigError
from edgecompress.passes import PassInfo, register_pass
from edgecompress.passes._common import (
    as_spec,
    check_range,
    config_dict,
    make_config,
    model_stats,
    resolve_dataset,
)
from edgecompress.passes.distill import DistillConfig, finetune, teacher_module

if TYPE_CHECKING:
    from edgecompress.models import ModelSpec


@dataclass
class QATConfig:
    epochs: int = 1
    lr: float = 1e-4
    batch_size: int = 64
    quantizer: Literal["x86"] = "x86"  # litert-torch quantizer (TFLite) is the TFLite exporter's
    distill: dict[str, Any] = field(default_factory=dict)  # other DistillConfig keys

    def __post_init__(self) -> None:
        check_range("qat.epochs", self.epochs, 0)
        check_range("qat.lr", self.lr, 0, lo_open=True)
        check_range("qat.batch_size", self.batch_size, 2)


def _wrapper_class() -> type:
    from torch import nn

    class _QuantizedModule(nn.Module):
        """The converted int8 graph behind a plain nn.Module: exporters and evaluators call
        .eval(), which a converted PT2E graph refuses; after convert there is no mode to switch."""

        def __init__(self, graph_module: Any) -> None:
            super().__init__()
            self.graph_module = graph_module

        def forward(self, x: Any) -> Any:  # one input: the exporters' dynamic_shapes match it
            return self.graph_module(x)

        def train(self, mode: bool = True) -> _QuantizedModule:
            return self

    return _QuantizedModule


def prepare(module: Any, example: tuple, cfg: QATConfig) -> Any:
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    batch = torch.export.Dim("batch", min=1, max=4096)
    dyn = tuple({0: batch} for _ in example)
    try:
        gm = torch.export.export(module.eval(), example, dynamic_shapes=dyn).module()
    except Exception as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ConfigError(f"qat: torch.export.export of the model failed: {first}") from e
    quantizer = X86InductorQuantizer()
    quantizer.set_global(get_default_x86_inductor_quantization_config(is_qat=True))
    return prepare_qat_pt2e(gm, quantizer)


def qat(model: Any, config: QATConfig | dict | None = None, *, data: Any = None,
        teacher: Any = None, workdir: Path | str | None = None, progress: bool = True,
        input_shape: Any = None, **overrides: Any) -> ModelSpec:
    """QAT of `model` with the KD objective; returns a spec whose module is the converted int8
    PT2E graph, marked `extra["quantized"] = "qat"`."""
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    cfg = make_config(QATConfig, config, "qat", **overrides)
    spec = as_spec(model, input_shape)
    if len(spec.inputs) != 1:
        raise ConfigError(f"qat: model {spec.name} has {len(spec.inputs)} inputs; QAT supports one")
    before = model_stats(spec)
    teach = teacher_module(teacher, spec)
    ds = resolve_dataset(spec, data, "train", progress)
    prepared = prepare(spec.module, spec.example_inputs(2), cfg)
    kd = make_config(DistillConfig, cfg.distill, "qat.distill", epochs=cfg.epochs, lr=cfg.lr,
                     batch_size=cfg.batch_size)
    ck = Path(workdir) / "checkpoints" / "qat.pt" if workdir else None
    if cfg.epochs == 0:
        # Observers still need ranges: one pass over the data in eval mode is plain calibration.
        import numpy as np
        import torch

        move_exported_model_to_eval(prepared)
        with torch.no_grad():
            for xb in ds.batches(cfg.batch_size):
                prepared(torch.from_numpy(np.ascontiguousarray(xb)))
        log: dict[str, Any] = {"epochs": 0, "note": "no training: observers calibrated only"}
    else:
        log = finetune(prepared, teach, ds, kd, ck, "qat (KD)", progress)
    move_exported_model_to_eval(prepared)
    converted = convert_pt2e(prepared)
    move_exported_model_to_eval(converted)
    spec.module = _wrapper_class()(converted)
    spec.extra["quantized"] = "qat"
    spec.extra["qat_quantizer"] = cfg.quantizer
    # Torch-Pruning cannot count a converted graph: keep the float model's counts.
    spec.extra["params"], spec.extra["macs"] = before["params"], before["macs"]
    spec.extra.setdefault("passes", []).append({"pass": "qat", "config": config_dict(cfg), "log": log})
    if progress:
        print("qat: converted to int8 (PT2E, x86 quantizer)", file=sys.stderr)
    return spec


register_pass(PassInfo("qat", QATConfig, qat,
                       "torchao PT2E quantization-aware training (x86 quantizer) with the KD loss",
                       structural=True))
