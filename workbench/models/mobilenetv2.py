"""The CIFAR MobileNetV2 of the RepDistiller zoo (``MobileNetV2`` = RepDistiller's
``mobile_half``: expansion 6, width multiplier 0.5; alias ``mobile_half``).

Parameter names and shapes equal RepDistiller's ``mobilenetv2.py`` (``conv1.0``, ``blocks.i.j.conv.k``,
``conv2.0``, ``classifier.0``). The original's ``AvgPool2d(2, ceil_mode=True)`` for 32x32 inputs
(a 2x2 final map) becomes a global average pool: same values on 32x32, any input size works.
"""
from __future__ import annotations

import torch
from torch import nn

from ._registry import register
from .init import repdistiller_init

#: (expansion t, channels c, repeats n, first stride s) per block group; t=None means "use T"
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
)
STEM_CHANNELS = 32
LAST_CHANNELS = 1280
STEM_STRIDE = 2
#: RepDistiller's mobile_half
HALF_EXPANSION, HALF_WIDTH = 6, 0.5


def _conv_bn_relu(c_in: int, c_out: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()
    )


class InvertedResidual(nn.Module):
    """1x1 expand-BN-ReLU, 3x3 depthwise-BN-ReLU, 1x1 linear projection-BN (``self.conv``);
    the input is added when the block keeps stride 1 and the width."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int):
        super().__init__()
        hidden = c_in * expand
        self.use_res_connect = stride == 1 and c_in == c_out
        self.conv = nn.Sequential(
            nn.Conv2d(c_in, hidden, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, c_out, 1, 1, 0, bias=False),
            nn.BatchNorm2d(c_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_res_connect else out


class MobileNetV2(nn.Module):
    classifier_name = "classifier.0"
    # Ends of block groups 1, 2, 4, 6 (24, 32, 96, 320 channels x width): RepDistiller's f1..f4.
    stage_names = ("blocks.1", "blocks.2", "blocks.4", "blocks.6")

    def __init__(self, expansion: int, width_mult: float, num_classes: int = 100, in_channels: int = 3):
        super().__init__()
        c = int(STEM_CHANNELS * width_mult)
        self.conv1 = _conv_bn_relu(in_channels, c, 3, STEM_STRIDE)
        self.blocks = nn.ModuleList()
        for t, width, n, s in INVERTED_RESIDUAL_SETTING:
            c_out = int(width * width_mult)
            layers = []
            for stride in [s] + [1] * (n - 1):
                layers.append(InvertedResidual(c, c_out, stride, expansion if t is None else t))
                c = c_out
            self.blocks.append(nn.Sequential(*layers))
        last = int(LAST_CHANNELS * width_mult) if width_mult > 1.0 else LAST_CHANNELS
        self.conv2 = _conv_bn_relu(c, last, 1, 1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(last, num_classes))
        repdistiller_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        for group in self.blocks:
            x = group(x)
        x = self.conv2(x)
        return self.classifier(self.avgpool(x).flatten(1))


@register("MobileNetV2", family="cifar", aliases=("mobile_half",))
def mobile_half(num_classes: int, in_channels: int = 3, image_size=None) -> MobileNetV2:
    return MobileNetV2(HALF_EXPANSION, HALF_WIDTH, num_classes, in_channels)
