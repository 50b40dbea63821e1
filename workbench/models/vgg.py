"""CIFAR VGGs with BatchNorm of the RepDistiller zoo (``vgg8``, ``vgg11``, ``vgg13``, ``vgg16``,
``vgg19`` = RepDistiller's ``vgg*_bn``; the zoo always uses the BN variants).

Five conv groups ``block0..block4`` (conv3x3 with bias, BN, ReLU; the group's last ReLU is applied
in ``forward``), max-pools ``pool0..pool2`` between groups, ``pool3`` only for 64x64 inputs (as in
the original), a global average pool and the linear ``classifier``. Parameter names and shapes
equal RepDistiller's ``vgg.py``. The max-pools use ``ceil_mode=True``: identical on even sizes
(so 32x32 logits equal the original's) and a 1x1 map stays 1x1 instead of collapsing.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ._registry import register
from .init import repdistiller_init

#: conv widths per group for each depth (RepDistiller's cfg S, A, B, D, E)
VGG_CFGS = {
    8: ((64,), (128,), (256,), (512,), (512,)),
    11: ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    13: ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    16: ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    19: ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512)),
}
#: the original applies pool3 only when the input height is this (Tiny-ImageNet)
POOL3_INPUT_HEIGHT = 64


def _group(widths, c_in: int) -> nn.Sequential:
    """conv-BN-ReLU per width, without the final ReLU (``forward`` applies it)."""
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Conv2d(c_in, w, kernel_size=3, padding=1), nn.BatchNorm2d(w), nn.ReLU()]
        c_in = w
    return nn.Sequential(*layers[:-1])


def _maxpool() -> nn.MaxPool2d:
    return nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)


class VGG(nn.Module):
    classifier_name = "classifier"
    stage_names = ("block0", "block1", "block2", "block3", "block4")

    def __init__(self, cfg, num_classes: int = 100, in_channels: int = 3):
        super().__init__()
        c = in_channels
        for i, widths in enumerate(cfg):
            self.add_module(f"block{i}", _group(widths, c))
            c = widths[-1]
        self.pool0, self.pool1, self.pool2, self.pool3 = (_maxpool() for _ in range(4))
        self.pool4 = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)
        repdistiller_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height = x.shape[2]
        x = self.pool0(F.relu(self.block0(x)))
        x = self.pool1(F.relu(self.block1(x)))
        x = self.pool2(F.relu(self.block2(x)))
        x = F.relu(self.block3(x))
        if height == POOL3_INPUT_HEIGHT:
            x = self.pool3(x)
        x = F.relu(self.block4(x))
        return self.classifier(self.pool4(x).flatten(1))


def _vgg_factory(depth: int):
    def factory(num_classes: int, in_channels: int = 3, image_size=None) -> VGG:
        return VGG(VGG_CFGS[depth], num_classes, in_channels)

    return factory


for _depth in VGG_CFGS:
    register(f"vgg{_depth}", family="cifar")(_vgg_factory(_depth))
