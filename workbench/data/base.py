"""Shared pieces of the dataset registry: the info record, the not-found error, option checks."""
from __future__ import annotations

import contextlib
import io
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from ..registry import Registry, unknown_choice

SPLITS = ("train", "test")
#: the dataset registry (each dataset module registers itself; ``workbench.data`` re-exports it)
DATASETS = Registry("dataset")


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are absent (and could not be downloaded). ``str()`` speaks the command
    line (``key=value``); :meth:`in_notebook` says the same with the notebooks' parameter spelling
    (``key = 'value'`` in the parameters cell), so a notebook never tells a Lab user about
    papermill flags or the CLI."""

    def __init__(self, message: str, cli_hint: str = "", notebook_hint: str = ""):
        super().__init__(message)
        self.message, self.cli_hint, self.notebook_hint = message, cli_hint, notebook_hint or cli_hint

    def __str__(self) -> str:
        return " ".join(t for t in (self.message, self.cli_hint) if t)

    def in_notebook(self) -> str:
        return " ".join(t for t in (self.message, self.notebook_hint) if t)


def failure(e: BaseException, max_chars: int = 80) -> str:
    """A download failure in a few words: the exception's class and its first line, cut short."""
    first = (str(e).strip().splitlines() or [""])[0]
    text = f"{type(e).__name__}: {first}" if first else type(e).__name__
    return text if len(text) <= max_chars else text[:max_chars - 3] + "..."


@contextlib.contextmanager
def quiet_download(*paths: Path):
    """Around a torchvision download: one line says it starts, torchvision's progress and retry
    messages are kept out of the output (a failure is reported in one line by the caller), and if
    it fails, every one of ``paths`` (folders or files) that did not exist before is removed again
    -- no empty ``FashionMNIST/raw`` or half-downloaded archive is left behind."""
    print(f"[workbench] downloading into {Path(paths[0])} (may take minutes)", file=sys.stderr, flush=True)
    new = []
    for p in map(Path, paths):  # the outermost folder of each that a download would create
        top = None
        while not p.exists():
            top, p = p, p.parent
        if top is not None and top not in new:
            new.append(top)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    except BaseException:
        for p in new:  # removing the outermost new folder removes what was made inside
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            elif p.exists():
                p.unlink()
        raise


# where to point at other data, and the offline alternative, in each front end's spelling
OTHER_ROOT = {"cli": "or point data_root=<folder> (or $WORKBENCH_DATA) at it",
              "notebook": "or set data_root = '<folder>' (or $WORKBENCH_DATA)"}
OFFLINE = {"cli": "Offline: preset=fashion/demo/<method> runs the CPU demo (`python -m workbench presets` lists them).",
           "notebook": "Offline: dataset = 'fashion_mnist' runs the CPU demo."}


def not_found(name: str, what: str, how: str) -> DatasetNotFoundError:
    """``dataset 'name' not found: <what>. <how>, or point data_root ... Offline: ...`` -- short,
    paths shown relative to the current folder where they can be (:func:`workbench.paths.shown`)."""
    return DatasetNotFoundError(f"dataset {name!r} not found: {what}.",
                                f"{how}, {OTHER_ROOT['cli']}. {OFFLINE['cli']}",
                                f"{how}, {OTHER_ROOT['notebook']}. {OFFLINE['notebook']}")


@dataclass(frozen=True)
class DataIdentity:
    """What a run's data is, resolved: ``source`` (datasets with a choice, e.g. fashion_mnist's
    ``embedded`` | ``full``), ``folder`` (absolute; "" when the data is not read from a folder:
    digits, synthetic, the embedded subset) and ``fingerprint`` (a hash of the contents where they
    are not checked against published checksums: imagefolder's class-to-folder map and file list).
    The run name's hash covers folder and fingerprint; checkpoints record all three and a resume
    compares them (:func:`workbench.experiment.prepare`)."""

    source: str = ""
    folder: str = ""
    fingerprint: str = ""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    in_channels: int
    image_size: int
    source: str = ""  # where the images come from, for datasets with a choice (fashion_mnist: embedded | full)
    class_names: tuple[str, ...] = ()  # name of each label 0..num_classes-1 (figure legends); () if unknown
    #: per-channel normalisation of its images (what another image set trained for it must use: ``train_data``)
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    #: its training augmentation's translation range in pixels and flip (-1: not declared), for ``train_data``
    augment_pad: int = -1
    augment_flip: bool = True

    def class_name(self, label: int) -> str:
        """The name of ``label`` (its number when the dataset names none)."""
        return self.class_names[label] if 0 <= label < len(self.class_names) else str(label)


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

    def __init__(self, name: str, options, build, info, check_available=None, default_root=None, locate=None,
                 fingerprint=None):
        self.name, self.OPTIONS = name, tuple(options)
        self._build, self._info, self._check = build, info, check_available
        self._default_root = default_root  # callable -> Path, for datasets read from a folder
        self._locate = locate  # callable(**options) -> (source, folder or None): where the data really is
        self._fingerprint = fingerprint  # callable(folder, **options) -> str

    def resolved_root(self, root=None) -> Path | None:
        """The folder the data is read from (``root`` or the default), or None if the dataset has none."""
        if self._default_root is None:
            return None
        return Path(root) if root else self._default_root()

    def identity(self, **options) -> DataIdentity:
        """The resolved :class:`DataIdentity` for ``options`` (no download; files are only looked up)."""
        check_options(self.name, options, self.OPTIONS)
        if self._locate is not None:
            source, folder = self._locate(**options)
        else:
            source, folder = "", self.resolved_root(options.get("root"))
        folder = Path(folder).absolute().resolve() if folder is not None else None
        fingerprint = self._fingerprint(folder, **options) if self._fingerprint is not None and folder else ""
        return DataIdentity(source, str(folder) if folder is not None else "", fingerprint)

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
