"""Small tables for notebook cells (HTML in Jupyter, aligned text in papermill logs), built from
the tidy records of ``metrics.jsonl``."""
from __future__ import annotations

import html
import math
from typing import Sequence

from ..engine.callbacks import PAIRS, role_label


class Table:
    """A small table: rich HTML in Jupyter, aligned text in a terminal / papermill log."""

    def __init__(self, columns: Sequence[str], rows: Sequence[Sequence], title: str = "", float_format: str = ".2f"):
        self.columns, self.rows, self.title = list(columns), [list(r) for r in rows], title
        self.float_format = float_format

    def _fmt(self, v) -> str:
        if isinstance(v, float):
            return "nan" if math.isnan(v) else format(v, self.float_format)
        return "" if v is None else str(v)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(self._fmt(v))}</td>" for v in r) + "</tr>" for r in self.rows)
        cap = f"<caption>{html.escape(self.title)}</caption>" if self.title else ""
        return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def __str__(self) -> str:
        cells = [self.columns] + [[self._fmt(v) for v in r] for r in self.rows]
        w = [max(len(row[i]) for row in cells) for i in range(len(self.columns))]
        lines = ["  ".join(c.ljust(w[i]) for i, c in enumerate(row)) for row in cells]
        return "\n".join(([self.title] if self.title else []) + lines[:1] + ["-" * len(lines[0])] + lines[1:])

    __repr__ = __str__

    def as_dicts(self) -> list[dict]:
        return [dict(zip(self.columns, r)) for r in self.rows]


def final_table(records: list[dict]) -> Table:
    """Per role: best top-1 (epoch) and last top-1 from the ``summary`` records, plus the last
    epoch's gaps (accuracy gap, KL) of each pair."""
    summ = [r for r in records if r.get("kind") == "summary"]
    rows = [(role_label(r["role"]), r["best_top1"], r["best_epoch"], r["last_top1"]) for r in summ]
    gaps = [r for r in records if r.get("kind") == "gap"]
    last = max((r["epoch"] for r in gaps), default=None)
    for pair in PAIRS:
        vals = {r["metric"]: r["value"] for r in gaps if r["epoch"] == last and r["pair"] == pair}
        if vals:
            rows.append((f"gap {pair}", vals.get("acc_gap"), last, vals.get("kl")))
    return Table(["model / pair", "best top-1 (gap: acc gap)", "epoch", "last top-1 (gap: KL)"], rows,
                 title="final results")


def compare_table(results: dict) -> Table:
    """``{method label: [records of each seed]}`` -> student best/last top-1 as mean +- std."""
    import numpy as np

    rows = []
    for label, runs in results.items():
        best, last = [], []
        for recs in runs:
            s = [r for r in recs if r.get("kind") == "summary" and r.get("role") == "student"]
            if s:
                best.append(s[0]["best_top1"])
                last.append(s[0]["last_top1"])
        pm = lambda v: f"{np.mean(v):.2f} ± {np.std(v, ddof=1) if len(v) > 1 else 0.0:.2f}" if v else "n/a"  # noqa: E731
        rows.append((label, len(best), pm(best), pm(last)))
    return Table(["method", "seeds", "best top-1 (mean ± std)", "last top-1 (mean ± std)"], rows,
                 title="student top-1 over seeds")
