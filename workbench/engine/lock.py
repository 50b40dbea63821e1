"""One run per run folder: an exclusive lock held for the whole run (teacher phase included).

The lock is an ``fcntl.flock`` on ``<run folder>/.run.lock``; the file holds the holder's pid so
a second run can name it. The kernel drops a ``flock`` when its process dies (kill -9
included), so a lock file left behind by a killed run is taken over at once: there is no
pid-guessing and no stale lock to clean by hand. After locking, the file is checked to still be
the one at the path (a releasing holder unlinks it), so two processes can never both hold it.

Under DDP only rank 0 writes files, so only rank 0 takes the lock; its outcome is broadcast so
every rank either proceeds or stops with the same message (:func:`run_lock`).

While the lock is held nobody else writes into the folder, so temporary files of a killed
writer (``.last.pt.tmp<pid>`` ...) are removed on acquisition.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

from . import distributed as dist
from .checkpoint import CheckpointError, remove_stale_temp_files

LOCK_FILE = ".run.lock"


class RunLockedError(CheckpointError):
    """Another live process holds the run folder."""


class RunLock:
    """Exclusive, non-blocking lock on a run folder (``acquire`` raises if another process holds it)."""

    def __init__(self, run_dir: str | os.PathLike, what: str = "run folder"):
        self.run_dir, self.what = Path(run_dir), what
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None
        self._created_dir = False

    def acquire(self) -> "RunLock":
        self._created_dir = not self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                raise RunLockedError(self._held_message()) from None
            if _same_file(fd, self.path):  # not unlinked by a holder releasing meanwhile
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        remove_stale_temp_files(self.run_dir)
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # before unlocking: a waiter re-checks the path after locking
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
        if self._created_dir:
            self._forget_created_dir()

    def _forget_created_dir(self) -> None:
        """A folder this lock created and nothing else filled is removed again (no empty run folders)."""
        with contextlib.suppress(OSError):
            if self._created_dir and not any(self.run_dir.iterdir()):
                self.run_dir.rmdir()

    def _held_message(self) -> str:
        pid = holder_pid(self.path)
        who = f"process {pid}" if pid else "another process"
        return (f"{self.what} {self.run_dir} is in use by {who} (lock file {self.path}); two runs must "
                f"not write one folder. Wait for it to finish, stop it, or choose another name=/out_dir=")

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def holder_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike, what: str = "run folder"):
    """Hold the run folder's lock for the ``with`` block: rank 0 locks, every rank learns the
    outcome (one process: a plain :class:`RunLock`)."""
    lock = RunLock(run_dir, what)
    error = None
    if dist.rank() == 0:
        try:
            lock.acquire()
        except RunLockedError as e:
            error = str(e)
    error = dist.broadcast_object(error)
    if error is not None:
        raise RunLockedError(error)
    try:
        yield lock
    finally:
        lock.release()
