"""Wide ResNets of the RepDistiller zoo (``wrn_16_1``, ``wrn_16_2``, ``wrn_40_1``, ``wrn_40_2``).

Pre-activation blocks (BN-ReLU-conv); a block whose width changes projects the *activated* input
with ``convShortcut``. Parameter names and shapes equal RepDistiller's ``wrn.py``; the original's
``F.avg_pool2d(out, 8)`` and ``view(-1, nChannels)`` become a global average pool and
``flatten(1)`` (same values on 32x32 inputs; any input size works; no stored width is used to
reshape). The residual structure is read from the modules (``convShortcut is None``), never from
stored widths, so widened copies run with the same forward.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ._registry import register

#: depth = 6 n + 4: n blocks per stage, 3 stages of 2 convs, stem conv, classifier, and the final BN
WRN_DEPTH_STEP, WRN_DEPTH_OFFSET = 6, 4
WRN_BASE_WIDTHS = (16, 16, 32, 64)


class WideBasic(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus the input (projected when the width/stride changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, kernel_size=3, stride=1, padding=1, bias=False)
        self.convShortcut = None
        if c_in != c_out:
            self.convShortcut = nn.Conv2d(c_in, c_out, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.relu1(self.bn1(x))
        out = self.conv2(self.relu2(self.bn2(self.conv1(act))))
        # As in the original: an identity block adds the raw input, a projecting block the
        # projection of the activated input.
        shortcut = x if self.convShortcut is None else self.convShortcut(act)
        return out + shortcut


class NetworkBlock(nn.Module):
    """A stage of ``n`` wide blocks held in ``self.layer`` (RepDistiller's key layout)."""

    def __init__(self, n: int, c_in: int, c_out: int, stride: int):
        super().__init__()
        blocks = [WideBasic(c_in, c_out, stride)] + [WideBasic(c_out, c_out, 1) for _ in range(n - 1)]
        self.layer = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """conv3x3 stem -> block1/2/3 (stride 1, 2, 2) -> BN-ReLU -> global pool -> ``fc``."""

    classifier_name = "fc"
    stage_names = ("block1", "block2", "block3")

    def __init__(self, depth: int, widen_factor: int, num_classes: int = 100, in_channels: int = 3):
        super().__init__()
        if (depth - WRN_DEPTH_OFFSET) % WRN_DEPTH_STEP != 0 or depth < 10:
            raise ValueError(f"WRN depth must be 6n+4 (10, 16, 22, 28, 40, ...), got {depth}")
        n = (depth - WRN_DEPTH_OFFSET) // WRN_DEPTH_STEP
        stem = WRN_BASE_WIDTHS[0]
        w1, w2, w3 = (w * widen_factor for w in WRN_BASE_WIDTHS[1:])
        self.conv1 = nn.Conv2d(in_channels, stem, kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, stem, w1, 1)
        self.block2 = NetworkBlock(n, w1, w2, 2)
        self.block3 = NetworkBlock(n, w2, w3, 2)
        self.bn1 = nn.BatchNorm2d(w3)
        self.relu = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w3, num_classes)
        _wrn_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.relu(self.bn1(out))
        return self.fc(self.avgpool(out).flatten(1))


def _wrn_init(model: nn.Module) -> None:
    """RepDistiller's WRN init: conv ~ N(0, 2/(k*k*c_out)), BN 1/0, classifier bias 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


def _wrn_factory(depth: int, widen_factor: int):
    def factory(num_classes: int, in_channels: int = 3, image_size=None) -> WideResNet:
        return WideResNet(depth, widen_factor, num_classes, in_channels)

    return factory


for _depth, _k in ((16, 1), (16, 2), (40, 1), (40, 2)):
    register(f"wrn_{_depth}_{_k}", family="cifar")(_wrn_factory(_depth, _k))
