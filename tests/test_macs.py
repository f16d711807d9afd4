"""MACs of layers that subclass the ones Torch-Pruning's counter knows (edgecompress.models.macs)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from edgecompress import load_model
from edgecompress.models import count_params_macs


class PaddedConv(nn.Conv2d):
    """A subclass as EfficientNet-Lite's SameConv2d is: an explicit pad, then the convolution."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (1, 1, 1, 1)))


class Net(nn.Module):
    def __init__(self, conv: type[nn.Conv2d]) -> None:
        super().__init__()
        self.stem = conv(3, 8, 3, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.dw = conv(8, 8, 3, groups=8, bias=False)
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if type(self.stem) is nn.Conv2d:  # the same arithmetic with the pad as the layer's own padding
            x = F.pad(x, (1, 1, 1, 1))
        y = F.relu(self.bn(self.stem(x)))
        y = self.dw(y if type(self.dw) is not nn.Conv2d else F.pad(y, (1, 1, 1, 1)))
        return self.head(y.mean((2, 3)))


def test_a_conv_subclass_counts_as_a_conv():
    plain = count_params_macs(load_model(Net(nn.Conv2d), input_shape="1,3,16,16"))
    sub = count_params_macs(load_model(Net(PaddedConv), input_shape="1,3,16,16"))
    assert sub == plain
    # the two convolutions are most of it: stem 8x8 positions x 8 out x 27, depthwise 8x8 x 8 x 9
    assert sub[1] > 8 * 8 * 8 * 27 + 8 * 8 * 8 * 9


def test_a_pt2_of_conv_subclasses_counts_as_its_module(tmp_path):
    net = Net(PaddedConv).eval()
    path = tmp_path / "net.pt2"
    torch.export.save(torch.export.export(net, (torch.randn(1, 3, 16, 16),)), path)
    assert count_params_macs(load_model(str(path))) == count_params_macs(load_model(net, input_shape="1,3,16,16"))


def test_efficientnet_lite_counts_its_stem_and_depthwise_convs():
    from edgecompress.models.efficientnet_lite import SameConv2d, efficientnet_lite0

    model = efficientnet_lite0(pretrained=False)
    convs = sum(1 for m in model.modules() if type(m) is SameConv2d)
    assert convs >= 17  # the stem and 16 depthwise convs: counted 0 by type before
    params, macs = count_params_macs(load_model(model, input_shape="1,3,224,224"))
    assert params == 4_652_008
    assert 390e6 < macs < 410e6  # published: ~400 M; the stem alone is 10.8 M
