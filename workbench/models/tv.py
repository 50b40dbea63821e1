"""torchvision ImageNet models by name (``resnet18``, ``resnet34``, ``resnet50``, ``mobilenet_v2``),
always built with ``weights=None`` (offline); pretrained weights are loaded from local files with
``workbench.models.load`` (torchvision's ``resnet18-f37072fd.pth`` files are plain state dicts).

``in_channels != 3`` replaces the first convolution by one with the same geometry reading
``in_channels`` planes (so a 3-channel weights file then no longer fits that layer).
"""
from __future__ import annotations

from torch import nn

from ._registry import register

TV_NAMES = ("resnet18", "resnet34", "resnet50", "mobilenet_v2")
RGB = 3


def _replace_first_conv(model: nn.Module, path: str, in_channels: int) -> None:
    parent_path, _, leaf = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    old = getattr(parent, leaf)
    new = nn.Conv2d(
        in_channels,
        old.out_channels,
        kernel_size=old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        bias=old.bias is not None,
    )
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    setattr(parent, leaf, new)


def _tv_factory(name: str, first_conv: str):
    def factory(num_classes: int, in_channels: int = 3, image_size=None, **kwargs) -> nn.Module:
        import torchvision.models as tvm  # imported lazily: torchvision is slow to import

        model = getattr(tvm, name)(weights=None, num_classes=num_classes, **kwargs)
        if in_channels != RGB:
            _replace_first_conv(model, first_conv, in_channels)
        return model

    return factory


for _name, _first in (("resnet18", "conv1"), ("resnet34", "conv1"), ("resnet50", "conv1"),
                      ("mobilenet_v2", "features.0.0")):
    register(_name, family="imagenet")(_tv_factory(_name, _first))
