"""The CIFAR ShuffleNets of the RepDistiller zoo (``ShuffleV1``: groups 3, widths 240/480/960;
``ShuffleV2``: net size 1, widths 116/232/464, 1024-channel head).

Parameter names and shapes equal RepDistiller's ``ShuffleNetv1.py`` / ``ShuffleNetv2.py``. The
original ``F.avg_pool2d(out, 4)`` (a 4x4 final map on 32x32 inputs) becomes a global average
pool: same values on 32x32, any input size works. Channel shuffles and splits read the channel
count from the tensor; only the (structural) group count is stored. Concatenations, splits and shuffles are modules (``Concat``,
``SplitBlock``, ``ShuffleBlock``) so that GPD's IR can follow the channel layout.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ._registry import register

STEM_CHANNELS = 24
#: ShuffleNet V1 bottlenecks squeeze to a quarter of their output width
V1_BOTTLENECK_DIVISOR = 4
V1_OUT_PLANES, V1_BLOCKS, V1_GROUPS = (240, 480, 960), (4, 8, 4), 3
V2_OUT_CHANNELS, V2_BLOCKS, V2_HEAD_CHANNELS = (116, 232, 464), (3, 7, 3), 1024
V2_SPLIT_RATIO = 0.5


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """[N, g*c, H, W] -> interleave the g groups channel by channel (sizes read from ``x``)."""
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class Concat(nn.Module):
    """``torch.cat`` along the channel dim as a module, so that model surgery (GPD's IR) can see
    and follow the channel layout of a concatenation."""

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, 1)


class ShuffleBlock(nn.Module):
    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_shuffle(x, self.groups)


class ShuffleV1Unit(nn.Module):
    """Grouped 1x1 - shuffle - depthwise 3x3 - grouped 1x1. Stride 2 concatenates an avg-pooled
    input (so the unit adds ``c_in`` channels); stride 1 adds the input."""

    def __init__(self, c_in: int, c_out: int, stride: int, groups: int, first_group_dense: bool):
        super().__init__()
        mid = int(c_out / V1_BOTTLENECK_DIVISOR)
        g1 = 1 if first_group_dense else groups  # the network's first unit reads the dense stem
        self.stride = stride
        self.conv1 = nn.Conv2d(c_in, mid, kernel_size=1, groups=g1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.shuffle1 = ShuffleBlock(groups=g1)
        self.conv2 = nn.Conv2d(mid, mid, kernel_size=3, stride=stride, padding=1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, c_out, kernel_size=1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride == 2:
            self.shortcut = nn.Sequential(nn.AvgPool2d(3, stride=2, padding=1))
        self.cat = Concat()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.shuffle1(F.relu(self.bn1(self.conv1(x))))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        res = self.shortcut(x)
        return F.relu(self.cat(out, res) if self.stride == 2 else out + res)


class ShuffleNetV1(nn.Module):
    classifier_name = "linear"
    stage_names = ("layer1", "layer2", "layer3")

    def __init__(self, num_classes: int = 100, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, STEM_CHANNELS, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS)
        c = STEM_CHANNELS
        for i, (c_out, blocks) in enumerate(zip(V1_OUT_PLANES, V1_BLOCKS), start=1):
            units = []
            for j in range(blocks):
                # a strided unit concatenates its input, so its branch makes c_out - c_in channels
                branch = c_out - c if j == 0 else c_out
                units.append(
                    ShuffleV1Unit(c, branch, 2 if j == 0 else 1, V1_GROUPS, first_group_dense=(i == 1 and j == 0))
                )
                c = c_out
            self.add_module(f"layer{i}", nn.Sequential(*units))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(self.avgpool(x).flatten(1))


class SplitBlock(nn.Module):
    """Split channels at ``int(C * ratio)`` (C read from the input)."""

    def __init__(self, ratio: float):
        super().__init__()
        self.ratio = ratio

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = int(x.shape[1] * self.ratio)
        return x[:, :c], x[:, c:]


class ShuffleV2Unit(nn.Module):
    """Keep half the channels, transform the other half (1x1-BN-ReLU, dw3x3-BN, 1x1-BN-ReLU),
    concatenate and shuffle."""

    def __init__(self, channels: int, split_ratio: float = V2_SPLIT_RATIO):
        super().__init__()
        c = int(channels * split_ratio)
        self.split = SplitBlock(split_ratio)
        self.conv1 = nn.Conv2d(c, c, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, kernel_size=3, stride=1, padding=1, groups=c, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.conv3 = nn.Conv2d(c, c, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(c)
        self.cat = Concat()
        self.shuffle = ShuffleBlock(groups=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep, work = self.split(x)
        out = F.relu(self.bn1(self.conv1(work)))
        out = self.bn2(self.conv2(out))
        out = F.relu(self.bn3(self.conv3(out)))
        return self.shuffle(self.cat(keep, out))


class ShuffleV2Down(nn.Module):
    """Stride-2 unit: left = dw3x3-BN, 1x1-BN-ReLU; right = 1x1-BN-ReLU, dw3x3-BN, 1x1-BN-ReLU;
    concatenate (each half ``c_out // 2``) and shuffle."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        mid = c_out // 2
        self.conv1 = nn.Conv2d(c_in, c_in, kernel_size=3, stride=2, padding=1, groups=c_in, bias=False)
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv2 = nn.Conv2d(c_in, mid, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(c_in, mid, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, kernel_size=3, stride=2, padding=1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, kernel_size=1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)
        self.cat = Concat()
        self.shuffle = ShuffleBlock(groups=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return self.shuffle(self.cat(left, right))


class ShuffleNetV2(nn.Module):
    classifier_name = "linear"
    stage_names = ("layer1", "layer2", "layer3")

    def __init__(self, num_classes: int = 100, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, STEM_CHANNELS, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS)
        c = STEM_CHANNELS
        for i, (c_out, blocks) in enumerate(zip(V2_OUT_CHANNELS, V2_BLOCKS), start=1):
            units = [ShuffleV2Down(c, c_out)] + [ShuffleV2Unit(c_out) for _ in range(blocks)]
            self.add_module(f"layer{i}", nn.Sequential(*units))
            c = c_out
        self.conv2 = nn.Conv2d(c, V2_HEAD_CHANNELS, kernel_size=1, stride=1, padding=0, bias=False)
        self.bn2 = nn.BatchNorm2d(V2_HEAD_CHANNELS)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(V2_HEAD_CHANNELS, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.linear(self.avgpool(x).flatten(1))


@register("ShuffleV1", family="cifar")
def shuffle_v1(num_classes: int, in_channels: int = 3, image_size=None) -> ShuffleNetV1:
    return ShuffleNetV1(num_classes, in_channels)


@register("ShuffleV2", family="cifar")
def shuffle_v2(num_classes: int, in_channels: int = 3, image_size=None) -> ShuffleNetV2:
    return ShuffleNetV2(num_classes, in_channels)
