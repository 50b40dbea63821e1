"""CIFAR ResNets of the RepDistiller zoo (``resnet8`` ... ``resnet110``, ``resnet8x4``,
``resnet32x4``) and the CIFAR ``ResNet18``, ``ResNet34``, ``ResNet50`` of RepDistiller's
``resnetv2.py`` (also mdistiller's; capitalised names, unlike torchvision's ImageNet ``resnet18``
etc. in :mod:`workbench.models.tv`).

Guarantees (checked in ``tests/test_models.py``):
- parameter names and shapes equal RepDistiller's, so its ``ckpt_epoch_240.pth`` files load with
  ``strict=True``; on 32x32 inputs the logits equal the original code's (the original fixed
  ``AvgPool2d(8)`` is replaced by a global average pool, which is the same map on an 8x8 grid
  and has no parameters);
- ``forward(x)`` returns logits only and works on any input size >= 1x1 (e.g. 8x8 digits);
- every reshape derives its sizes from tensors, and no forward op works in place, so widened
  copies made by replacing leaf layers run unchanged and forward hooks see faithful values.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ._registry import register

#: channel widths (stem, stage1, stage2, stage3) of the thin and the x4 CIFAR ResNets
THIN_WIDTHS = (16, 16, 32, 64)
X4_WIDTHS = (32, 64, 128, 256)
#: depth = 6 n + 2 for basic blocks: n blocks per stage, 3 stages of 2 convs, stem and classifier
BASIC_DEPTH_STEP, BASIC_DEPTH_OFFSET = 6, 2


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)


def _shortcut(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    """The residual path: empty (identity) while the shape is kept, else 1x1 conv (strided) + BN."""
    if stride == 1 and c_in == c_out:
        return nn.Sequential()
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(c_out))


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus the (optionally projected) input, then ReLU."""

    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(c_in, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.downsample is None else self.downsample(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.residual(x))


class CifarResNet(nn.Module):
    """Stem conv3x3 -> three stages (stride 1, 2, 2) of basic blocks -> global pool -> ``fc``."""

    classifier_name = "fc"
    stage_names = ("layer1", "layer2", "layer3")

    def __init__(self, depth: int, widths: Sequence[int], num_classes: int = 100, in_channels: int = 3):
        super().__init__()
        if (depth - BASIC_DEPTH_OFFSET) % BASIC_DEPTH_STEP != 0 or depth < 8:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (8, 14, 20, ...), got {depth}")
        if len(widths) != 4:
            raise ValueError(f"widths must be (stem, stage1, stage2, stage3), got {tuple(widths)}")
        blocks = (depth - BASIC_DEPTH_OFFSET) // BASIC_DEPTH_STEP
        stem, w1, w2, w3 = widths
        self.conv1 = nn.Conv2d(in_channels, stem, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU()
        self.layer1, c = _stage(stem, w1, blocks, stride=1)
        self.layer2, c = _stage(c, w2, blocks, stride=2)
        self.layer3, c = _stage(c, w3, blocks, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)
        _kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x).flatten(1))


def _stage(c_in: int, planes: int, blocks: int, stride: int) -> tuple[nn.Sequential, int]:
    """``blocks`` basic blocks; the first one strides and projects when the shape changes."""
    downsample = None if stride == 1 and c_in == planes else _shortcut(c_in, planes, stride)
    layers = [BasicBlock(c_in, planes, stride, downsample)]
    layers += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*layers), planes


def _kaiming_init(model: nn.Module) -> None:
    """RepDistiller's ResNet init: He-normal (fan_out) convs, BN weight 1 and bias 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _resnet_factory(depth: int, default_widths: Sequence[int]):
    def factory(num_classes: int, in_channels: int = 3, image_size=None, widths=None) -> CifarResNet:
        """``widths`` (stem, stage1, stage2, stage3) overrides the standard widths (e.g. a thinner
        resnet8 for tiny data); the standard widths give the RepDistiller architecture."""
        return CifarResNet(depth, widths or default_widths, num_classes, in_channels)

    return factory


for _depth in (8, 14, 20, 32, 44, 56, 110):
    register(f"resnet{_depth}", family="cifar")(_resnet_factory(_depth, THIN_WIDTHS))
register("resnet8x4", family="cifar")(_resnet_factory(8, X4_WIDTHS))
register("resnet32x4", family="cifar")(_resnet_factory(32, X4_WIDTHS))


# --- ResNet18/34/50 of RepDistiller's resnetv2.py (ImageNet-style stages on a CIFAR stem) --------
# Not torchvision's ImageNet ResNets (7x7 stride-2 stem + max-pool, ``fc``; registered in
# lowercase as ``resnet18`` ...): these keep the 32x32 resolution in the stem and name the
# classifier ``linear``, as in RepDistiller/mdistiller's ``resnetv2.py``.


class ShortcutBasicBlock(BasicBlock):
    """resnetv2.py's basic block: the map of :class:`BasicBlock` with the projection named
    ``shortcut`` (an empty ``nn.Sequential`` = identity) instead of resnet.py's ``downsample``."""

    def __init__(self, c_in: int, planes: int, stride: int = 1):
        super().__init__(c_in, planes, stride)
        self.shortcut = _shortcut(c_in, planes * self.expansion, stride)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (strided) -> 1x1 expand (x4), plus ``shortcut`` (empty = identity)."""

    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int = 1):
        super().__init__()
        c_out = planes * self.expansion
        self.conv1 = nn.Conv2d(c_in, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, c_out, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()
        self.shortcut = _shortcut(c_in, c_out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


#: planes and first-block strides of resnetv2.py's four stages, and its stem width
RESNETV2_PLANES = (64, 128, 256, 512)
RESNETV2_STRIDES = (1, 2, 2, 2)
RESNETV2_STEM = 64
#: name -> (block, blocks per stage), as in resnetv2.py's ResNet18 / ResNet34 / ResNet50
RESNETV2_DEPTHS = {
    "ResNet18": (ShortcutBasicBlock, (2, 2, 2, 2)),
    "ResNet34": (ShortcutBasicBlock, (3, 4, 6, 3)),
    "ResNet50": (Bottleneck, (3, 4, 6, 3)),
}


class CifarResNetV2(nn.Module):
    """RepDistiller's CIFAR ``ResNet18/34/50``: 3x3 stride-1 stem (no max-pool), four stages of
    basic or bottleneck blocks (64-128-256-512 planes), global pool, ``linear``."""

    classifier_name = "linear"
    stage_names = ("layer1", "layer2", "layer3", "layer4")

    def __init__(self, block: type[nn.Module], blocks: Sequence[int], num_classes: int = 100, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, RESNETV2_STEM, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(RESNETV2_STEM)
        self.relu = nn.ReLU()
        c = RESNETV2_STEM
        for i, (planes, n, stride) in enumerate(zip(RESNETV2_PLANES, blocks, RESNETV2_STRIDES), start=1):
            layers = []
            for s in [stride] + [1] * (n - 1):
                layers.append(block(c, planes, s))
                c = planes * block.expansion
            self.add_module(f"layer{i}", nn.Sequential(*layers))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(c, num_classes)
        _kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.linear(self.avgpool(x).flatten(1))


def _resnetv2_factory(block: type[nn.Module], blocks: Sequence[int]):
    def factory(num_classes: int, in_channels: int = 3, image_size=None) -> CifarResNetV2:
        return CifarResNetV2(block, blocks, num_classes, in_channels)

    return factory


for _name, (_block, _blocks) in RESNETV2_DEPTHS.items():
    register(_name, family="cifar")(_resnetv2_factory(_block, _blocks))
