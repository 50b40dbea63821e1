"""CIFAR ResNets of the RepDistiller zoo (``resnet8`` ... ``resnet110``, ``resnet8x4``,
``resnet32x4``) and the CIFAR ``ResNet50`` of RepDistiller's ``resnetv2.py``.

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


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
    downsample = None
    if stride != 1 or c_in != planes:
        downsample = nn.Sequential(
            nn.Conv2d(c_in, planes, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(planes)
        )
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


# --- ResNet50 of RepDistiller's resnetv2.py (ImageNet-style stages on a CIFAR stem) -------------


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
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


#: (planes, blocks, stride) of the four ResNet50 stages
RESNET50_STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))
RESNET50_STEM = 64


class CifarResNetV2(nn.Module):
    """RepDistiller's CIFAR ``ResNet50``: 3x3 stride-1 stem, four bottleneck stages, ``linear``."""

    classifier_name = "linear"
    stage_names = ("layer1", "layer2", "layer3", "layer4")

    def __init__(self, num_classes: int = 100, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, RESNET50_STEM, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(RESNET50_STEM)
        self.relu = nn.ReLU()
        c = RESNET50_STEM
        for i, (planes, blocks, stride) in enumerate(RESNET50_STAGES, start=1):
            layers = []
            for s in [stride] + [1] * (blocks - 1):
                layers.append(Bottleneck(c, planes, s))
                c = planes * Bottleneck.expansion
            self.add_module(f"layer{i}", nn.Sequential(*layers))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(c, num_classes)
        _kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.linear(self.avgpool(x).flatten(1))


@register("ResNet50", family="cifar")
def resnet50_cifar(num_classes: int, in_channels: int = 3, image_size=None) -> CifarResNetV2:
    return CifarResNetV2(num_classes, in_channels)
