"""MobileNet V1 for ImageNet (Howard et al. 2017), the student of the GPD paper's and mdistiller's
ResNet50 -> MobileNet pair (``mobilenet_v1``; torchvision has no V1).

The standard architecture: a 3x3 stride-2 stem conv to 32 channels, 13 depthwise-separable
blocks (3x3 depthwise conv, ``groups == in_channels``, then 1x1 pointwise conv; each conv
followed by BatchNorm and ReLU), widths 64 ... 1024, global average pool, ``fc``. At 1000
classes it has 4,231,976 parameters (checked in ``tests/test_models.py``).

Follows the community definition (GPD's ``CNN/models/mobilenet.py``, mdistiller's
``models/imagenet/mobilenetv1.py``) exactly in parameter names and shapes (``model.<i>.<j>``,
``fc``), so their checkpoints load with ``strict=True``, and in initialisation (PyTorch's
default layer init). Our adaptations, none with parameters: the fixed ``AvgPool2d(7)`` (224x224
inputs) is a global average pool (the same map on the 7x7 grid, any input size works), the
ReLUs are not in place (faithful forward hooks), and ``in_channels`` sets the stem's input.
Only plain ``nn.Conv2d`` / ``nn.BatchNorm2d`` / ``nn.ReLU`` / ``nn.Linear`` layers, so GPD's
IR/CBR handles the net like any other CNN.
"""
from __future__ import annotations

import torch
from torch import nn

from ._registry import register

STEM_CHANNELS = 32
STEM_STRIDE = 2
#: (output channels, stride) of the 13 depthwise-separable blocks (paper's Table 1)
DEPTHWISE_SEPARABLE_SETTING = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)
#: indices in ``model`` of the blocks ending the four strided stages (128, 256, 512, 1024
#: channels), the reference's feature taps
STAGE_ENDS = (3, 5, 11, 13)


def _conv_bn_relu(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    """The stem: 3x3 conv-BN-ReLU."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


def _depthwise_separable(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    """3x3 depthwise conv-BN-ReLU, then 1x1 pointwise conv-BN-ReLU (indices 0-5)."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_in, 3, stride, 1, groups=c_in, bias=False), nn.BatchNorm2d(c_in), nn.ReLU(),
        nn.Conv2d(c_in, c_out, 1, 1, 0, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
    )


class MobileNetV1(nn.Module):
    """``model`` (stem, 13 blocks, global pool) -> flatten -> ``fc``."""

    classifier_name = "fc"
    stage_names = tuple(f"model.{i}" for i in STAGE_ENDS)

    def __init__(self, num_classes: int = 1000, in_channels: int = 3):
        super().__init__()
        layers = [_conv_bn_relu(in_channels, STEM_CHANNELS, STEM_STRIDE)]
        c = STEM_CHANNELS
        for c_out, stride in DEPTHWISE_SEPARABLE_SETTING:
            layers.append(_depthwise_separable(c, c_out, stride))
            c = c_out
        layers.append(nn.AdaptiveAvgPool2d(1))
        self.model = nn.Sequential(*layers)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.model(x).flatten(1))


@register("mobilenet_v1", family="imagenet")
def mobilenet_v1(num_classes: int, in_channels: int = 3, image_size=None) -> MobileNetV1:
    return MobileNetV1(num_classes, in_channels)
