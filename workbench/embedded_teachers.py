"""Trained teachers shipped with the package, so the offline demos need no teacher training.

A run names one with ``teacher=embedded:<name>``. The file is verified against its SHA-256
before use (a mismatch is one clear line: what was expected, what was found, how to rebuild);
``scripts/make_teachers.py`` reproduces them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .digest import file_sha256 as sha256  # noqa: F401 -- embedded_teachers.sha256: the scripts' and tests' name
from .keys import ConfigError
from .registry import unknown_choice

PREFIX = "embedded:"
FOLDER = Path(__file__).resolve().parent / "data" / "embedded" / "teachers"
REBUILD = "python scripts/make_teachers.py"


@dataclass(frozen=True)
class EmbeddedTeacher:
    file: str
    arch: str
    sha256: str
    made_by: str  # the preset whose teacher phase trained it


TEACHERS = {
    # resnet20 on all 5000 training images of the embedded Fashion-MNIST subset, 30 epochs, seed 0
    # (the teacher phase of preset fashion/demo/kd with teacher=resnet20)
    "fashion_resnet20": EmbeddedTeacher("fashion_mnist_resnet20.pt", "resnet20",
                                        "c9fa95aba913c34387fb1f1b3412bf992149896778dee43358cc41ae8dedafae",
                                        "fashion/demo/kd"),
}
_verified: set[Path] = set()


def is_embedded(teacher: str) -> bool:
    return teacher.startswith(PREFIX)


def entry(teacher: str) -> EmbeddedTeacher:
    name = teacher[len(PREFIX):]
    if name not in TEACHERS:
        raise ConfigError("teacher: " + unknown_choice("embedded teacher", name, [PREFIX + n for n in TEACHERS]))
    return TEACHERS[name]


def path(teacher: str) -> Path:
    """The verified file of ``teacher`` (``embedded:<name>``)."""
    e = entry(teacher)
    p = FOLDER / e.file
    if p in _verified:
        return p
    if not p.is_file():
        raise ConfigError(f"teacher: {teacher} is missing ({p}); rebuild it with {REBUILD}")
    found = sha256(p)
    if found != e.sha256:
        raise ConfigError(f"teacher: {p} is damaged or not the shipped file (sha256 {found[:16]}..., expected "
                          f"{e.sha256[:16]}...); restore it from git or rebuild it with {REBUILD}")
    _verified.add(p)
    return p
