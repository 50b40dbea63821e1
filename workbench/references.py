"""What a ``teacher=`` value refers to, decided here and nowhere else (the run's cheap checks, its
name, the methods' teacher checks and the teacher phase all read a :class:`TeacherRef`).

``teacher=`` values, in the order they are recognised:

- ``none`` (or empty): no static teacher;
- ``snapshot@E``: a frozen copy of the student taken at the end of epoch E (made during training,
  :meth:`workbench.methods.Distiller.use_snapshot_teacher`);
- ``embedded:<name>``: a teacher file shipped with the package (:mod:`workbench.embedded_teachers`,
  SHA-256 checked before use);
- ``torchvision:<arch>``: torchvision's ImageNet weights from the local torch hub cache
  (:mod:`workbench.torchvision_teachers`; never downloaded here, checked against the SHA-256 prefix
  in the file's name);
- a checkpoint path (a value with a path separator, a checkpoint suffix, or an existing file):
  ours, or a RepDistiller-style ``ckpt_epoch_240.pth``; its architecture is ``teacher_arch=``, the
  file's ``arch`` entry, or the ``<arch>_vanilla`` folder it sits in;
- a zoo architecture name: a teacher of that architecture trained once under the student's data
  protocol and cached (:func:`workbench.experiment.teacher_config`).

What ``init=`` means (random, a student checkpoint, inheritance) is :func:`workbench.student_init.parse`;
an inheritance source file's architecture is read by :func:`infer_arch` as for teacher files.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from . import embedded_teachers, models, torchvision_teachers
from .keys import NO_TEACHER, ConfigError, snapshot_epoch
from .registry import unknown_choice

NONE, SNAPSHOT, EMBEDDED, TORCHVISION, FILE, ARCH = "none", "snapshot", "embedded", "torchvision", "file", "arch"
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".pth.tar", ".ckpt")


@dataclass(frozen=True)
class TeacherRef:
    """A resolved ``teacher=`` value: its ``kind`` (none, snapshot, embedded, torchvision, file,
    arch), the architecture (a snapshot's is the student's), the weights file (embedded,
    torchvision, file), the snapshot epoch, a shipped file's SHA-256 and a torchvision file's name."""

    kind: str
    arch: Optional[str] = None
    path: Optional[Path] = None
    epoch: Optional[int] = None
    sha256: Optional[str] = None
    file_name: Optional[str] = None

    @property
    def is_file(self) -> bool:
        """The teacher's weights come from a file (given or shipped), not from training."""
        return self.kind in (FILE, EMBEDDED, TORCHVISION)

    def name_part(self) -> str:
        """How the teacher appears in a run name: its architecture, or ``snapshot<E>``."""
        return f"snapshot{self.epoch}" if self.kind == SNAPSHOT else str(self.arch)

    def identity(self) -> dict:
        """What of the teacher enters the run name's hash: the architecture, and which file
        (a shipped file by its digest, torchvision's by its file name, any other by its resolved path)."""
        out = {"teacher_arch": self.name_part()}
        if self.kind == EMBEDDED:
            out["teacher_sha256"] = self.sha256
        elif self.kind == TORCHVISION:
            out["teacher_file"] = self.file_name
        elif self.kind == FILE:
            out["teacher"] = str(self.path.resolve())
        return out


def is_path(value: str) -> bool:
    """Whether a ``teacher=`` / ``init=`` value names a file rather than an architecture."""
    return os.sep in value or value.endswith(CHECKPOINT_SUFFIXES) or Path(value).is_file()


def infer_arch(path: Path, given: str = "") -> str:
    """Architecture of a checkpoint file: ``given`` (``teacher_arch=``), our checkpoints' ``arch``
    entry, or a RepDistiller-style folder name (``save/models/resnet32x4_vanilla/ckpt_epoch_240.pth``)."""
    if given:
        return given
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        if isinstance(ckpt, dict) and isinstance(ckpt.get("arch"), str):
            return ckpt["arch"]
    except Exception:  # noqa: BLE001 -- unreadable files get their clear error from models.load
        pass
    for part in (path.parent.name, path.stem):
        for name in sorted(models.available(include_aliases=True), key=len, reverse=True):
            if re.match(rf"^{re.escape(name)}(_|$)", part):
                return name
    raise ConfigError(f"teacher: cannot tell the architecture of {path}; pass teacher_arch=<name> "
                      f"(one of: {', '.join(models.available())})")


def check_model(key: str, name: str) -> None:
    """One line naming the valid models when ``name`` is not one."""
    if name not in models.MODELS:
        raise ConfigError(f"{key}: " + unknown_choice("model", name, models.available()))


def teacher_ref(value: str, teacher_arch: str = "", student: str = "", check: bool = True) -> TeacherRef:
    """Resolve a ``teacher=`` value. With ``check`` every problem is one :class:`ConfigError` line
    (a missing or damaged file, an unknown architecture); without it (naming a run before the
    checks) nothing is read that need not be, and an unknown file architecture raises ConfigError
    for the caller to fall back on."""
    if value.strip().lower() in ("", NO_TEACHER):
        return TeacherRef(NONE)
    epoch = snapshot_epoch(value)
    if epoch is not None:
        return TeacherRef(SNAPSHOT, arch=student or None, epoch=epoch)
    if embedded_teachers.is_embedded(value):
        entry = embedded_teachers.entry(value)
        path = embedded_teachers.path(value) if check else None  # checksum verified: a damaged file is one line
        return TeacherRef(EMBEDDED, entry.arch, path, sha256=entry.sha256)
    if torchvision_teachers.is_torchvision(value):
        weights = torchvision_teachers.entry(value)
        path = torchvision_teachers.path(value) if check else None  # present, prefix-checked: else one line
        return TeacherRef(TORCHVISION, weights.arch, path, file_name=weights.files[0])
    if is_path(value):
        path = Path(value)
        if check and not path.is_file():
            raise ConfigError(f"teacher: checkpoint file {path} does not exist")
        arch = infer_arch(path, teacher_arch)
        if check:
            check_model("teacher_arch", arch)
        return TeacherRef(FILE, arch, path)
    if check:
        check_model("teacher", value)
    return TeacherRef(ARCH, value)
