"""The outcome of a run in numbers and in one sentence (the report's headline, the README's demo
numbers): read from the run's tidy records, never typed."""
from __future__ import annotations

import html
from typing import Optional

from ..engine.roles import STUDENT, by_rank, gap_pairs, role_label, teachers

HEADLINE_CLASS = "wb-headline"


def _last(records: list[dict], role: str) -> Optional[float]:
    s = [r for r in records if r.get("kind") == "summary" and r.get("role") == role]
    if not s:
        return None
    return s[0].get("last_top1_reported", s[0]["last_top1"])


def outcome(records: list[dict]) -> dict:
    """Final (last-epoch) top-1 in % of S, T_d, T_s -- the reported value, max(raw, EMA), where an
    EMA was evaluated -- and the gaps in points, plus the epoch count."""
    epochs = max((r["epoch"] for r in records if r.get("kind") == "train"), default=0)
    out = {"epochs": epochs}
    for role in by_rank():
        v = _last(records, role)
        if v is not None:
            out[role_label(role)] = round(v, 2)
    s = role_label(STUDENT.name)
    if s in out:
        for t in map(role_label, teachers()):
            if t in out:
                out[f"{t}-{s}"] = round(out[t] - out[s], 2)
    return out


def sentence(o: dict) -> str:
    parts = []
    if "T_s" in o:
        parts.append(f"static teacher T_s {o['T_s']:.2f} %, gap {o['T_s-S']:+.2f} points")
    if "T_d" in o:
        parts.append(f"dynamic teacher T_d {o['T_d']:.2f} %, gap {o['T_d-S']:+.2f} points")
    tail = f" ({'; '.join(parts)})" if parts else ""
    return f"After {o['epochs']} epochs the student S reaches {o['S']:.2f} % top-1 on the test set{tail}."


class Headline:
    """One sentence stating the outcome (HTML paragraph + text); the HTML report repeats it at
    the top of the page (:mod:`workbench.nb.report`)."""

    def __init__(self, records: list[dict]):
        self.numbers = outcome(records)
        self.text = sentence(self.numbers) if "S" in self.numbers else "No finished epoch yet."

    def _repr_html_(self) -> str:
        return f'<div class="{HEADLINE_CLASS}"><p><b>Outcome.</b> {html.escape(self.text)}</p></div>'

    def __str__(self) -> str:
        return self.text

    __repr__ = __str__


def headline(records: list[dict]) -> Headline:
    return Headline(records)


def gap_summary(records: list[dict], metric: str = "acc_gap") -> dict[str, dict[str, float]]:
    """Per pair: the gap at epoch 0, its mean absolute value over the evaluated epochs and its
    final value (``metric`` records; top-1 gap in points by default)."""
    out = {}
    for pair in (p for p, (_, second) in gap_pairs().items() if second == STUDENT.name):  # T_s-S, T_d-S
        pts = sorted((r["epoch"], r["value"]) for r in records if r.get("kind") == "gap" and r.get("pair") == pair
                     and r.get("metric") == metric and r.get("value") is not None)
        if pts:
            out[pair] = {"epoch 0": dict(pts).get(0), "mean abs": sum(abs(v) for _, v in pts) / len(pts),
                         "final": pts[-1][1]}
    return out


#: what a final T_d below S means (bench/td_vs_s_study.py, README "Why T_d does not lead S here")
TD_BELOW_S = ("T_d ended below S: it shares the student's weights and leads only where its extra width buys "
              "accuracy, which on small data and short schedules it does not (README: why T_d does not lead S here).")


def gap_sentence(gaps: dict) -> str:
    """What the numbers say about static vs dynamic gap, worded by the numbers themselves."""
    s, d = gaps["T_s-S"]["mean abs"], gaps["T_d-S"]["mean abs"]
    below = f" {TD_BELOW_S}" if gaps["T_d-S"]["final"] < 0 else ""
    if d < s:
        return (f"Over the run the dynamic gap T_d-S averaged {d:.1f} points against {s:.1f} for the static gap "
                f"T_s-S ({s / max(d, 1e-9):.1f}x smaller); final gaps {gaps['T_d-S']['final']:+.1f} and "
                f"{gaps['T_s-S']['final']:+.1f}.{below}")
    return (f"In this run the dynamic gap T_d-S ({d:.1f} points on average) was not smaller than the static gap "
            f"T_s-S ({s:.1f}).{below}")


LEVEL_POINTS = 0.05  # |final T_d-S| below this (half the 0.1-point rounding shown): "level with"


def gap_takeaway(gaps: dict) -> str:
    """The closing numbers of teaching.ipynb, worded by the numbers alone: each gap's mean size
    and final value, and where T_d ended relative to S (above, below or level)."""
    s, d = gaps["T_s-S"], gaps["T_d-S"]
    final = d["final"]
    where = "level with" if abs(final) < LEVEL_POINTS else ("above" if final > 0 else "below")
    return (f"The static gap T_s-S averaged {s['mean abs']:.1f} points and ended at {s['final']:+.1f}; the dynamic "
            f"gap T_d-S averaged {d['mean abs']:.1f} points in size and ended at {final:+.1f}: T_d finished {where} "
            f"the student in this run.")
