"""Teachers named ``torchvision:<arch>``: torchvision's ImageNet weights of ``<arch>``
(``resnet18``, ``resnet34``, ``resnet50``) from the local torch hub cache
(``$TORCH_HOME/hub/checkpoints``, default ``~/.cache/torch/hub/checkpoints``), where
``torchvision.models.<arch>(weights="IMAGENET1K_V1")`` puts them. Nothing is downloaded here: a
missing file is one line naming the file, the folder and the URL to fetch. The file is checked
against the SHA-256 prefix in its name (torch hub's rule). These are the teachers the GPD reference
code loads (its ``--teacher-weight`` files for ResNet-34 and ResNet-50; it names them by the older
URLs, same weights, also accepted).

What a ``teacher=`` value means is decided in :mod:`workbench.references` (this module's files
are one kind of reference there, beside the shipped ones of :mod:`workbench.embedded_teachers`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .digest import file_sha256
from .keys import ConfigError
from .registry import unknown_choice

PREFIX = "torchvision:"


@dataclass(frozen=True)
class TorchvisionWeights:
    arch: str
    files: tuple[str, ...]  # the current file name first, then older names of the same weights
    url: str
    top1: float  # ImageNet-1K top-1 (%) torchvision publishes for these weights


#: torchvision's IMAGENET1K_V1 weights (torchvision.models.ResNet*_Weights): URL and published top-1;
#: the older file names are the URLs of torchvision < 0.13, which the GPD README's commands use
TORCHVISION_WEIGHTS = {
    "resnet18": TorchvisionWeights("resnet18", ("resnet18-f37072fd.pth", "resnet18-5c106cde.pth"),
                                   "https://download.pytorch.org/models/resnet18-f37072fd.pth", 69.758),
    "resnet34": TorchvisionWeights("resnet34", ("resnet34-b627a593.pth", "resnet34-333f7ec4.pth"),
                                   "https://download.pytorch.org/models/resnet34-b627a593.pth", 73.314),
    "resnet50": TorchvisionWeights("resnet50", ("resnet50-0676ba61.pth", "resnet50-19c8e357.pth"),
                                   "https://download.pytorch.org/models/resnet50-0676ba61.pth", 76.13),
}
_verified: set[Path] = set()


def is_torchvision(teacher: str) -> bool:
    return isinstance(teacher, str) and teacher.startswith(PREFIX)


def entry(teacher: str) -> TorchvisionWeights:
    name = teacher[len(PREFIX):]
    if name not in TORCHVISION_WEIGHTS:
        raise ConfigError("teacher: " + unknown_choice("torchvision teacher", name,
                                                       [PREFIX + n for n in TORCHVISION_WEIGHTS]))
    return TORCHVISION_WEIGHTS[name]


def hub_checkpoints() -> Path:
    """torch hub's download folder (``$TORCH_HOME/hub/checkpoints``)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def path(teacher: str) -> Path:
    """The verified weights file; one clear line if it is missing or damaged."""
    e = entry(teacher)
    folder = hub_checkpoints()
    found = next((folder / f for f in e.files if (folder / f).is_file()), None)
    if found is None:
        raise ConfigError(f"teacher: {teacher} needs torchvision's ImageNet weights {e.files[0]} in {folder} "
                          f"(the torch hub cache, $TORCH_HOME/hub/checkpoints); fetch {e.url} into that folder, "
                          f"or pass teacher=<path to the file>")
    if found not in _verified:
        digest = file_sha256(found)
        prefix = found.stem.rsplit("-", 1)[-1]
        if not digest.startswith(prefix):
            raise ConfigError(f"teacher: {found} is damaged or not torchvision's file (sha256 {digest[:16]}... does "
                              f"not start with {prefix}, the prefix its name carries); fetch {e.url} again")
        _verified.add(found)
    return found
