"""The one checkpoint format: a dict written atomically with ``torch.save``.

Keys: ``format`` / ``version``; ``epoch`` (last finished epoch); ``config`` (RunConfig dict);
``model`` (the plain, deployable student state dict -- for GPD the student extracted by CBR --
so ``workbench.models.load`` and RepDistiller-style tooling read it directly); ``arch`` and
``num_classes`` / ``in_channels`` (to rebuild it); ``method`` (the method's trainable state:
student, or GPD's dynamic teacher with both BN statistic sets, CTKD temperature, ...);
``optimizer``, ``scaler``, ``rng``, ``best`` (best student top-1 and its epoch).
A *mid-epoch* ``last.pt`` (written when a stop signal came, :mod:`workbench.engine.preempt`) holds
the weights after step ``position["step"]`` of epoch ``position["epoch"]`` (= ``epoch`` + 1) and
``position``: ``steps`` (per epoch), ``world`` (processes) and ``ranks`` (per rank: ``rng`` at that
step, ``loader_rng`` of a device-resident loader, the epoch's partial ``sums``, ``correct``,
``seen``); ``best.pt`` is only written at epoch ends. ``provenance`` (what the run was made from:
the resolved data and the teacher file's sha256) is compared when a run resumes.
Everything is plain Python/tensors so files load with ``weights_only=True``.
"""
from __future__ import annotations

import errno
import os
import re
import zipfile
import random
from pathlib import Path

import numpy as np
import torch

FORMAT, VERSION = "gpd-workbench-checkpoint", 1
LAST, BEST, STUDENT = "last.pt", "best.pt", "student.pt"


class CheckpointError(ValueError):
    """A run file (checkpoint, metrics log, run folder) that cannot be used or written: corrupt,
    truncated, wrong format, incompatible, or a failed write."""


TEMP_NAME = re.compile(r"^\..+\.tmp\d+$")  # what temp_path() makes: .<name>.tmp<pid>


def temp_path(path: Path) -> Path:
    """The temporary sibling an atomic write goes through (unique per process)."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def remove_stale_temp_files(run_dir: Path) -> list[Path]:
    """Delete temporary files left by a writer that was killed mid-write. Only safe while the
    run folder's lock is held (nobody else is writing); returns what was removed."""
    stale = [p for p in Path(run_dir).iterdir() if TEMP_NAME.match(p.name) and p.is_file()]
    for p in stale:
        p.unlink()
    return stale


def write_failed(path: Path, err: OSError, kept: bool) -> CheckpointError:
    """The one error for a failed write of any run file (checkpoint or metrics)."""
    note = " (the previous contents are kept intact)" if kept else ""
    remedy = "Raise the file-size limit (ulimit -f)" if err.errno == errno.EFBIG else "Free disk space"
    return CheckpointError(f"could not write {path}{note}: {err.strerror or err}. "
                           f"{remedy} or choose another out_dir=, then rerun to resume.")


class _Writes:
    """A file's ``write`` as torch.save calls it, keeping the OSError of a failed write: torch turns
    it into a RuntimeError that no longer says why (disk full, file too large)."""

    def __init__(self, f):
        self.f, self.error = f, None
        self.name = getattr(f, "name", None)

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.f.flush()


def atomic_save(obj, path: str | os.PathLike) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``: a
    reader (or a crash) never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            writes = _Writes(f)
            try:
                torch.save(obj, writes)
            except RuntimeError:
                if writes.error is None:
                    raise
                raise writes.error from None
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise write_failed(path, e, kept=path.exists()) from None
    finally:
        if tmp.exists():
            tmp.unlink()


def verify_archive(path: Path) -> None:
    """Check every member's CRC-32 (torch.load does not): a flipped bit in tensor data would
    otherwise load silently as different weights. Raises on a damaged archive."""
    with zipfile.ZipFile(path) as archive:
        bad = archive.testzip()
    if bad is not None:
        raise ValueError(f"CRC mismatch in archive member {bad!r}")


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read one of our checkpoints, with a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        verify_archive(path)
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated and cannot be read "
                              f"({type(e).__name__}: {str(e)[:200]}). Delete it to start the run "
                              f"afresh, or point to another file.") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a workbench checkpoint (no format={FORMAT!r} entry); "
                              f"model weight files are loaded with workbench.models.load instead")
    if ckpt.get("version", 0) > VERSION:
        raise CheckpointError(f"{path} has checkpoint version {ckpt['version']}, newer than this "
                              f"workbench ({VERSION}); upgrade the workbench")
    return ckpt


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                       "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(x):
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x
