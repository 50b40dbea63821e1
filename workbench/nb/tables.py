"""Small tables for notebook cells (HTML in Jupyter, aligned text in papermill logs), built from
the tidy records of ``metrics.jsonl``."""
from __future__ import annotations

import html
import math
from typing import Sequence

from ..engine.roles import gap_pairs, role_label


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


class Tables:
    """Several tables shown one after the other (HTML and text)."""

    def __init__(self, *tables: Table):
        self.tables = list(tables)

    def _repr_html_(self) -> str:
        return "".join(t._repr_html_() for t in self.tables)

    def __str__(self) -> str:
        return "\n\n".join(str(t) for t in self.tables)

    __repr__ = __str__


class Collapsed:
    """A table folded under a one-line summary in HTML (``<details>``); in full as text."""

    def __init__(self, table: Table, summary: str):
        self.table, self.summary = table, summary

    def _repr_html_(self) -> str:
        return f"<details><summary>{html.escape(self.summary)}</summary>{self.table._repr_html_()}</details>"

    def __str__(self) -> str:
        return str(self.table)

    __repr__ = __str__


def accuracy_table(records: list[dict]) -> Table:
    """Per model (S, T_d, T_s and EMA twins): best top-1 (epoch) and last top-1 in %, from the
    ``summary`` records; with EMA, the reported max(raw, EMA) columns too."""
    summ = [r for r in records if r.get("kind") == "summary"]
    reported = any("best_top1_reported" in r for r in summ)
    cols = ["model", "best top-1 (%)", "best epoch", "last top-1 (%)"]
    cols += ["best reported top-1 (%)", "last reported top-1 (%)"] if reported else []
    rows = []
    for r in summ:
        row = [role_label(r["role"]), r["best_top1"], r["best_epoch"], r["last_top1"]]
        rows.append(row + ([r.get("best_top1_reported"), r.get("last_top1_reported")] if reported else []))
    return Table(cols, rows, title="top-1 on the test set" + (" (reported = max(raw, EMA))" if reported else ""))


#: gap table columns: (record metric, column title with unit)
GAP_COLUMNS = (("acc_gap", "top-1 gap (points)"), ("kl", "KL (nats)"), ("agreement", "agreement (fraction)"),
               ("cka", "CKA (0-1)"))


def gap_table(records: list[dict]) -> Table:
    """Per pair (T_s-S, T_d-S, T_s-T_d): the gap metrics at the last epoch that has gap records."""
    gaps = [r for r in records if r.get("kind") == "gap"]
    last = max((r["epoch"] for r in gaps), default=None)
    rows = []
    for pair in gap_pairs():
        vals = {r["metric"]: r["value"] for r in gaps if r["epoch"] == last and r["pair"] == pair}
        if vals:
            rows.append([pair] + [vals.get(m) for m, _ in GAP_COLUMNS])
    return Table(["pair"] + [c for _, c in GAP_COLUMNS], rows, title=f"gaps at epoch {last}", float_format=".3g")


def final_table(records: list[dict]) -> Tables:
    """The end of a run: the accuracy table, then the gap table (two tables: their columns mean
    different things)."""
    return Tables(accuracy_table(records), gap_table(records))


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
