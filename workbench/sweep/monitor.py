"""Progress of a sweep, per cell: the terminal prints a line whenever a cell changes state
(``done``/``failed`` with the numbers or the error); the notebook's display
(:class:`workbench.nb.sweep.NotebookSweepProgress`) redraws one table in place. Both read the
same :class:`~workbench.sweep.folder.CellStatus` list."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from . import folder as sf


def status_line(s: sf.CellStatus) -> str:
    what = f"{s.status}" + (f" ({s.detail})" if s.detail else "")
    if s.status == sf.RUNNING or (s.status == sf.PENDING and s.epoch):
        what += f", epoch {s.epoch}/{s.epochs}"
    if s.status == sf.DONE:
        what += _numbers(Path(s.run_dir))
    if s.status == sf.FAILED:
        what += f": {s.error} (log: {s.log})"
    return f"{s.id:>4} {s.label}: {what}"


def _numbers(run_dir: Path) -> str:
    summary = sf.read_json(run_dir / sf.SUMMARY_FILE) or {}
    st = summary.get("student")
    return f" -- S top-1 best {st['best_top1']:.2f} / last {st['last_top1']:.2f}" if st else ""


def counts(statuses: list[sf.CellStatus]) -> str:
    n = {k: sum(s.status == k for s in statuses) for k in sf.STATUSES}
    return ", ".join(f"{v} {k}" for k, v in n.items() if v) or "no cells"


class TerminalMonitor:
    """One line per state change, and a count line at most every ``every_s`` seconds."""

    def __init__(self, sweep_dir: Path, stream=None, every_s: float = 60.0):
        self.dir, self.stream, self.every_s = Path(sweep_dir), stream or sys.stdout, every_s
        self.seen: dict[str, tuple] = {}
        self.last_count = time.monotonic()

    def __call__(self) -> list[sf.CellStatus]:
        statuses = sf.sweep_statuses(self.dir)
        for s in statuses:
            key = (s.status, s.detail, s.error)
            if self.seen.get(s.id) != key and not (s.status == sf.PENDING and s.id not in self.seen):
                print(f"[sweep] {status_line(s)}", file=self.stream, flush=True)
            self.seen[s.id] = key
        if time.monotonic() - self.last_count > self.every_s:
            self.last_count = time.monotonic()
            print(f"[sweep] {counts(statuses)}", file=self.stream, flush=True)
        return statuses


def status_report(sweep_dir: Path) -> tuple[str, list[sf.CellStatus]]:
    """``sweep status``: one line per cell and the counts."""
    statuses = sf.sweep_statuses(sweep_dir)
    lines = [status_line(s) for s in statuses]
    return "\n".join(lines + [f"{counts(statuses)} -- {sweep_dir}"]), statuses
