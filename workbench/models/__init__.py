"""The model zoo: RepDistiller's CIFAR nets, torchvision ImageNet nets, a small ViT.

>>> from workbench import models
>>> net = models.build("resnet8x4", num_classes=100)            # logits = net(x)
>>> teacher = models.load("resnet32x4", "ckpt_epoch_240.pth", num_classes=100)
>>> models.available(), models.family("vit_tiny")

Names follow the literature (RepDistiller's ``model_dict``): ``resnet8 resnet14 resnet20 resnet32
resnet44 resnet56 resnet110 resnet8x4 resnet32x4 wrn_16_1 wrn_16_2 wrn_40_1 wrn_40_2 vgg8 vgg11
vgg13 vgg16 vgg19 MobileNetV2 ShuffleV1 ShuffleV2 ResNet18 ResNet34 ResNet50`` (family
``"cifar"``; ``vgg*`` are the BN variants; the capitalised ``ResNet18/34/50`` are the CIFAR
ResNets of RepDistiller's resnetv2.py: 3x3 stride-1 stem, no max-pool), torchvision's ImageNet
``resnet18 resnet34 resnet50 mobilenet_v2`` (lowercase) and the community ``mobilenet_v1``
(``"imagenet"``), and ``vit_nano vit_tiny vit_small`` (``"vit"``). Alias: ``mobile_half`` =
``MobileNetV2`` (the key used by later RepDistiller forks).

``vit_nano_dist vit_tiny_dist vit_small_dist`` (``"vit"``) add DeiT's distillation token
(``vit.DistilledViT``: ``forward_parts`` for training, ``forward`` = the averaged prediction).

Every model's ``forward(x)`` returns logits only; features come from ``models.hooks``.
Building blocks for distillation methods (import them from their modules):
``dense.dense_logits`` (a CNN's classifier at every position of its last map),
``params.decay_groups`` (optimizer groups without decay for norms, biases, tokens),
``inherit.inherit`` / ``inherit.recalibrate_bn`` (weight inheritance as a student init).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from . import cifar_resnet, mobilenetv1, mobilenetv2, shufflenet, tv, vgg, vit, wrn  # noqa: F401  (registration)
from ._registry import MODELS
from .checkpoint import load_state_into, read_state_dict
from .hooks import FeatureTap, classifier_path, penultimate, stage_paths

__all__ = [
    "MODELS", "build", "available", "family", "load", "load_student", "student_file", "StudentFile",
    "read_state_dict", "has_distillation_token", "with_distillation_token", "readout",
    "FeatureTap", "classifier_path", "stage_paths", "penultimate",
]


def _positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return value


def build(name: str, num_classes: int, in_channels: int = 3, image_size: int | None = None, **kwargs) -> nn.Module:
    """A freshly initialised model. ``image_size`` matters only for ViTs (patch size and position
    embedding; default 32); CNNs accept any input size. ``kwargs`` go to the factory (e.g.
    ``widths=`` for CIFAR ResNets, ``depth=``/``dim=``/``patch_size=`` for ViTs)."""
    factory = MODELS.get(name)
    _positive_int(num_classes, "num_classes")
    _positive_int(in_channels, "in_channels")
    if image_size is not None:
        _positive_int(image_size, "image_size")
    return factory(num_classes=num_classes, in_channels=in_channels, image_size=image_size, **kwargs)


def available(include_aliases: bool = False) -> list[str]:
    """Registered model names (canonical names only unless ``include_aliases``)."""
    return [n for n in MODELS.names() if include_aliases or "alias_of" not in MODELS.meta(n)]


def has_distillation_token(name: str) -> bool:
    """Whether model ``name`` is a ViT with DeiT's distillation token (``vit.DistilledViT``)."""
    return bool(MODELS.meta(name).get("distillation_token"))


def with_distillation_token() -> list[str]:
    """The registered names of ViTs with a distillation token."""
    return [n for n in available() if has_distillation_token(n)]


def readout(model: nn.Module) -> dict[str, str]:
    """Which outputs of ``model`` evaluation and probes read (``{"logits_from": ..., "features_from":
    ...}``) for models that say so (the ViTs); ``{}`` for models with one classifier on pooled features."""
    describe = getattr(model, "readout", None)
    return dict(describe()) if callable(describe) else {}


def family(name: str) -> str:
    """``"cifar"`` | ``"imagenet"`` | ``"vit"``."""
    return MODELS.meta(name)["family"]


def load(name: str, path, num_classes: int, in_channels: int = 3, map_location="cpu",
         image_size: int | None = None, weights_only: bool = True, **kwargs) -> nn.Module:
    """``build(name, ...)`` then load the weights file at ``path`` strictly (layouts and errors:
    see ``workbench.models.checkpoint``). Returns the model in eval mode. A ViT is built with the
    patch size the file holds (its patch-embedding kernel) unless ``patch_size`` is given: the
    registered names fix every size but the patch, so a run's ``student.pt`` trained with
    ``patch_size=4`` loads as a teacher or inheritance source."""
    is_vit = family(name) == "vit"  # (an unknown name is refused before the file is read)
    state = read_state_dict(path, map_location, weights_only)
    patch = vit.patch_size_of(state) if is_vit and "patch_size" not in kwargs else None
    if patch is not None:
        kwargs["patch_size"] = patch
    model = build(name, num_classes, in_channels, image_size, **kwargs)
    what = f"{name}(num_classes={num_classes}, in_channels={in_channels})"
    load_state_into(model, state, path, what)
    return model.eval()


@dataclass
class StudentFile:
    """A run's ``student.pt`` / ``student_ema.pt`` read back: the model (eval mode) and what the
    file says about it."""

    model: nn.Module
    arch: str
    num_classes: int
    in_channels: int
    input_shape: Optional[tuple[int, ...]]  # (C, H, W) of the training inputs; None in older files
    options: dict


def student_file_entries(model: nn.Module, input_shape=None, options: Optional[dict] = None) -> dict:
    """What a student file records beside ``model``/``arch`` so that :func:`load_student` needs
    nothing else: classes, input channels, the training inputs' shape and the build options."""
    classes, channels = _classes_and_channels(model.state_dict(), model)
    return {"num_classes": classes, "in_channels": channels,
            "input_shape": list(input_shape) if input_shape is not None else None, "options": dict(options or {})}


def student_file(path, map_location="cpu") -> StudentFile:
    """Read a student file written by a run (``student.pt``, ``student_ema.pt``)."""
    from .checkpoint import load_state_into

    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for unreadable files
        raise ValueError(f"cannot read student file {path} ({type(e).__name__}: {str(e)[:120]})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("arch"), str) or "model" not in obj:
        raise ValueError(f"{path} is not a student file of a run (no 'arch'/'model' entries); for other weight "
                         f"files use models.load(name, path, num_classes, in_channels)")
    arch, state = obj["arch"], obj["model"]
    if arch not in MODELS:
        raise ValueError(f"{path}: its architecture {arch!r} is not in the model zoo")
    classes, channels = obj.get("num_classes"), obj.get("in_channels")
    if classes is None or channels is None:  # written before student files recorded them
        classes, channels = _classes_and_channels(state, build(arch, 2, 3))
    shape = tuple(obj["input_shape"]) if obj.get("input_shape") else None
    options = dict(obj.get("options") or {})
    if family(arch) == "vit" and "patch_size" not in options:
        options["patch_size"] = vit.patch_size_of(state)
    model = build(arch, classes, channels, shape[-1] if shape else None, **options)
    load_state_into(model, state, path, f"{arch}(num_classes={classes}, in_channels={channels})")
    return StudentFile(model.eval(), arch, classes, channels, shape, options)


def load_student(path, map_location="cpu") -> nn.Module:
    """A run's ``student.pt`` as a ready model in eval mode: architecture, classes, input
    channels and build options are read from the file."""
    return student_file(path, map_location).model


def _classes_and_channels(state: dict, model: nn.Module) -> tuple[int, int]:
    """Classes (the classifier's rows) and input channels (the first conv's) of ``state``, located
    by the module paths of ``model`` (an instance of the same architecture, any size)."""
    classes = state[f"{classifier_path(model)}.weight"].shape[0]
    first = next(name for name, m in model.named_modules() if isinstance(m, nn.Conv2d))
    return int(classes), int(state[f"{first}.weight"].shape[1])

