"""Shared pieces of the dataset registry: the info record, the not-found error, option checks."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..registry import Registry, unknown_choice

SPLITS = ("train", "test")
#: the dataset registry (each dataset module registers itself; ``workbench.data`` re-exports it)
DATASETS = Registry("dataset")


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are absent (and could not be downloaded)."""


def looked_for(root: Path) -> str:
    """Where data is looked for and how to point elsewhere (part of every not-found message)."""
    return (f"Data is looked for under {root} (data_root=<folder> if given, else $WORKBENCH_DATA, else "
            f"datasets/ of the checkout); pass data_root=<folder> (papermill: -p data_root <folder>) or set "
            f"WORKBENCH_DATA to use another folder.")


def not_found(name: str, where: str, how: str, root: Path | None = None) -> DatasetNotFoundError:
    where_text = f" {looked_for(root)}" if root is not None else ""
    return DatasetNotFoundError(
        f"dataset {name!r} not found at {where}. {how}{where_text} "
        f"Offline, run an embedded-data demo preset instead (a whole recipe, not just the dataset): "
        f"preset=fashion/demo/<method> (papermill: -p dataset fashion_mnist, whose auto preset does the same) "
        f"or preset=digits/demo/<method>; `python -m workbench presets` lists them."
    )


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    in_channels: int
    image_size: int
    source: str = ""  # where the images come from, for datasets with a choice (fashion_mnist: embedded | full)


def check_options(dataset: str, options: dict, allowed) -> None:
    bad = sorted(set(options) - set(allowed))
    if bad:
        raise ValueError(
            f"dataset {dataset!r} got unknown option {bad[0]!r}; "
            + unknown_choice(f"{dataset} option", bad[0], sorted(allowed)).split("; ", 1)[1]
        )


class DatasetEntry:
    """What the registry stores per dataset: option names plus build/info/availability functions.
    Unknown options are rejected here, once, for every dataset."""

    def __init__(self, name: str, options, build, info, check_available=None, default_root=None):
        self.name, self.OPTIONS = name, tuple(options)
        self._build, self._info, self._check = build, info, check_available
        self._default_root = default_root  # callable -> Path, for datasets read from a folder

    def resolved_root(self, root=None) -> Path | None:
        """The folder the data is read from (``root`` or the default), or None if the dataset has none."""
        if self._default_root is None:
            return None
        return Path(root) if root else self._default_root()

    def build(self, split: str, **options):
        check_options(self.name, options, self.OPTIONS)
        return self._build(split, **options)

    def info(self, **options) -> DatasetInfo:
        check_options(self.name, options, self.OPTIONS)
        return self._info(**options)

    def check_available(self, **options) -> None:
        self.info(**options)
        if self._check is not None:
            self._check(**options)
