"""Shared by the small study scripts (``fashion_vit.py``, ``fashion_inherit.py``): train one
named row (a preset plus overrides) for several seeds, read the numbers a table needs from each
run's records, print markdown rows, write / re-read the JSON the README tables are rendered from.

Per seed a row keeps: the student's best- and last-epoch top-1, its epoch-0 top-1 and T_s-S
top-1 gap (before any training step), T_d's last top-1 (GPD), T_s's top-1 and the wall time.
"""
from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

from workbench.engine.metrics import read_metrics
from workbench.experiment import run
from workbench.presets import get_preset


def fmt(xs) -> str:
    return f"{statistics.mean(xs):.2f} +- {statistics.stdev(xs) if len(xs) > 1 else 0.0:.2f}"


def load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def numbers(run_dir: Path) -> dict:
    """What a study table needs from one finished run folder."""
    summary = json.loads((run_dir / "summary.json").read_text())
    records = read_metrics(run_dir)
    start = {r["role"]: r["top1"] for r in records if r["kind"] == "eval" and r["epoch"] == 0}
    out = {"best": summary["student"]["best_top1"], "last": summary["student"]["last_top1"],
           "epoch0": start["student"]}
    if "teacher" in summary:
        out["T_s"] = summary["teacher"]["last_top1"]
        out["epoch0_gap"] = start["teacher"] - start["student"]
    if "dynamic_teacher" in summary:
        out["T_d_last"] = summary["dynamic_teacher"]["last_top1"]
    return out


def train_row(values: dict, seeds: list[int], out_dir: str) -> list[dict]:
    """``values`` (may name a ``preset``) for every seed; the per-seed numbers (+ ``seconds``)."""
    per_seed = []
    for s in seeds:
        t0 = time.perf_counter()
        res = run({**values, "seed": s, "out_dir": out_dir, "progress": False}, log=lambda *_: None)
        per_seed.append(dict(numbers(res.run_dir), seconds=time.perf_counter() - t0))
    return per_seed


def row_values(preset: str, overrides: dict) -> dict:
    return {**get_preset(preset), **overrides}


def column(per_seed: list[dict], key: str) -> list[float]:
    return [r[key] for r in per_seed if key in r]


def markdown_row(label: str, per_seed: list[dict], keys) -> str:
    cells = [fmt(column(per_seed, k)) if column(per_seed, k) else "" for k in keys]
    return f"| {label} | " + " | ".join(cells) + f" | {statistics.mean(column(per_seed, 'seconds')):.0f} |"


def write_json(path: str, rows: dict, settings: dict, seeds: list[int]) -> None:
    out = {"settings": {k: str(v) for k, v in settings.items()}, "seeds": seeds,
           "rows": {name: {k: column(per_seed, k) for k in per_seed[0] if k != "seconds"}
                    for name, per_seed in rows.items()}}
    Path(path).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")


def collect(out_dir: Path, wanted: dict[str, dict], seeds: list[int]) -> dict:
    """``{row: [numbers per seed]}`` from finished runs under ``out_dir`` whose config has every
    key of ``wanted[row]`` (rows with every seed finished only)."""
    rows = {}
    for name, want in wanted.items():
        found = {}
        for cfg_path in out_dir.glob("*/config.json"):
            cfg = json.loads(cfg_path.read_text())
            if (cfg_path.parent / "summary.json").exists() and all(str(cfg.get(k)) == str(v) for k, v in want.items()):
                found[cfg["seed"]] = numbers(cfg_path.parent)
        if all(s in found for s in seeds):
            rows[name] = [dict(found[s], seconds=float("nan")) for s in seeds]
        else:
            print(f"{name}: finished seeds {sorted(found)} of {seeds}: left out")
    return rows
