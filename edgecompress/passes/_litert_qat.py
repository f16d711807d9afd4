"""The `litert` QAT backend: prepare a model for QAT with litert-torch's PT2E quantizer (TFLite).

[issue #4] The same quantizer the TFLite exporter's full-int8 PTQ uses (`_FusedActQuantizer`:
conv + ReLU/ReLU6 observed after the clamp, a following SAME pad kept in the pattern, integer
ops skipped), configured for QAT (`get_symmetric_quantization_config(is_per_channel=True,
is_qat=True)`: FusedMovingAvgObsFakeQuantize everywhere, int8 per-tensor affine activations,
int8 per-channel symmetric weights in [-127, 127]). The QAT pass then runs the same calibrate /
freeze / KD fine-tune / pin_qparams as for x86 and converts with `fold_quantize=False`; the TFLite
exporter lowers that graph with `litert_torch.convert(quant_config=...)` to int8 kernels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from edgecompress.errors import ConfigError, first_line

if TYPE_CHECKING:
    from edgecompress.passes.qat import QATConfig


def make_qat_quantizer() -> Any:
    """litert-torch's PT2E quantizer with the exporter's annotation fixes, for QAT."""
    from litert_torch.quantize.pt2e_quantizer import get_symmetric_quantization_config

    from edgecompress.exporters._litert_convert import _FusedActQuantizer

    class _QATQuantizer(_FusedActQuantizer):
        # The QAT-only conv+BN(+ReLU) annotators of litert-torch 0.10 fail on torchao 0.18
        # (`_get_aten_graph_module_for_pattern` hands torch.export a function: "Expected `mod` to
        # be an instance of torch.nn.Module"). They would match nothing anyway: BatchNorm is folded
        # into the convolutions before prepare (see `prepare`).
        STATIC_QAT_ONLY_OPS: ClassVar[list[str]] = []

    q = _QATQuantizer()
    q.set_global(get_symmetric_quantization_config(is_per_channel=True, is_qat=True))
    return q


def prepare(module: Any, example: tuple, cfg: QATConfig) -> Any:
    """Strict torch.export (dynamic batch) -> fold BatchNorm -> prepare_qat_pt2e with the litert
    quantizer. Strict, as the TFLite PTQ route: a non-strict export leaves residual adds
    un-annotated, and they would stay float in the .tflite."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e
    from torchao.quantization.pt2e.utils import _fuse_conv_bn_

    from edgecompress.exporters._litert_convert import _drop_inference_dropout

    batch = torch.export.Dim("batch", min=1, max=4096)
    dyn = tuple({0: batch} for _ in example)
    try:
        gm = torch.export.export(module.eval(), example, dynamic_shapes=dyn, strict=True).module()
    except Exception as e:
        first = first_line(e)
        raise ConfigError(f"qat (litert): torch.export.export(strict=True) of the model failed: {first}") from e
    # BatchNorm folded with its own eps, as for x86 (qat.prepare explains why).
    _fuse_conv_bn_(gm)
    _drop_inference_dropout(gm)  # exported in eval mode, so identities; the .tflite got them wrong
    return prepare_qat_pt2e(gm, make_qat_quantizer())
