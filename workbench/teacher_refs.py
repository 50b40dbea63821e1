"""Teachers named by a reference instead of a path: the one place that knows the kinds.

- ``embedded:<name>``: a teacher shipped with the package (:mod:`workbench.embedded_teachers`,
  SHA-256 checked);
- ``torchvision:<arch>``: torchvision's ImageNet weights of ``<arch>`` (``resnet18``, ``resnet34``,
  ``resnet50``) from the local torch hub cache (``$TORCH_HOME/hub/checkpoints``, default
  ``~/.cache/torch/hub/checkpoints``), where ``torchvision.models.<arch>(weights="IMAGENET1K_V1")``
  puts them. Nothing is downloaded here: a missing file is one line naming the file, the folder
  and the URL to fetch. The file is checked against the SHA-256 prefix in its name (torch hub's
  rule). These are the teachers the GPD reference code loads (its ``--teacher-weight`` files for
  ResNet-34 and ResNet-50; it names them by the older URLs, same weights, also accepted).

Everything else asks here: :func:`is_named`, :func:`arch`, :func:`path` (verified), and
:func:`identity` (what a run name's hash records about the file).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from . import embedded_teachers
from .config import ConfigError
from .registry import unknown_choice

TORCHVISION = "torchvision:"
HASH_CHUNK = 1 << 20


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


def is_named(teacher: str) -> bool:
    return isinstance(teacher, str) and (embedded_teachers.is_embedded(teacher) or teacher.startswith(TORCHVISION))


def torchvision_entry(teacher: str) -> TorchvisionWeights:
    name = teacher[len(TORCHVISION):]
    if name not in TORCHVISION_WEIGHTS:
        raise ConfigError("teacher: " + unknown_choice("torchvision teacher", name,
                                                       [TORCHVISION + n for n in TORCHVISION_WEIGHTS]))
    return TORCHVISION_WEIGHTS[name]


def arch(teacher: str) -> str:
    """The zoo architecture a named teacher holds."""
    if embedded_teachers.is_embedded(teacher):
        return embedded_teachers.entry(teacher).arch
    return torchvision_entry(teacher).arch


def hub_checkpoints() -> Path:
    """torch hub's download folder (``$TORCH_HOME/hub/checkpoints``)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def path(teacher: str) -> Path:
    """The verified weights file of a named teacher; one clear line if it is missing or damaged."""
    if embedded_teachers.is_embedded(teacher):
        return embedded_teachers.path(teacher)
    e = torchvision_entry(teacher)
    folder = hub_checkpoints()
    found = next((folder / f for f in e.files if (folder / f).is_file()), None)
    if found is None:
        raise ConfigError(f"teacher: {teacher} needs torchvision's ImageNet weights {e.files[0]} in {folder} "
                          f"(the torch hub cache, $TORCH_HOME/hub/checkpoints); fetch {e.url} into that folder, "
                          f"or pass teacher=<path to the file>")
    if found not in _verified:
        digest = _sha256(found)
        prefix = found.stem.rsplit("-", 1)[-1]
        if not digest.startswith(prefix):
            raise ConfigError(f"teacher: {found} is damaged or not torchvision's file (sha256 {digest[:16]}... does "
                              f"not start with {prefix}, the prefix its name carries); fetch {e.url} again")
        _verified.add(found)
    return found


def identity(teacher: str) -> dict:
    """What a run name's hash records about a named teacher's file (another file: another run)."""
    if embedded_teachers.is_embedded(teacher):
        return {"teacher_sha256": embedded_teachers.entry(teacher).sha256}
    return {"teacher_file": torchvision_entry(teacher).files[0]}


def _sha256(file: Path) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as f:
        for chunk in iter(lambda: f.read(HASH_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()
