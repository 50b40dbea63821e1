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
    """What a study table needs from one finished run folder: the results table's numbers of the
    run (``workbench.table.read_run``) plus where the student started (epoch 0)."""
    from workbench.table import read_run

    v = read_run(run_dir).values
    records = read_metrics(run_dir)
    start = {r["role"]: r["top1"] for r in records if r["kind"] == "eval" and r["epoch"] == 0}
    out = {"best": v["s_best"], "last": v["s_last"], "epoch0": start["student"]}
    if "t_s" in v:
        out["T_s"] = v["t_s"]
        out["epoch0_gap"] = start["teacher"] - start["student"]
    if "t_d" in v:
        out["T_d_last"] = v["t_d"]
    if "p1" in v:  # a group method's second network (DML peer, ORC student)
        out["peer_last"] = v["p1"]
    if "t_p" in v:  # ORC's pivot teacher after its online fine-tuning
        out["T_p_last"] = v["t_p"]
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
    """``{row: [numbers per seed]}`` from finished runs under ``out_dir`` trained with exactly the
    row's config (every recorded key equal to the row's value or default, runtime keys aside: a run
    with one more key set, e.g. ``init=inherit``, is another row's); rows with every seed only."""
    from workbench.config import RunConfig
    from workbench.engine.resume import config_diff

    rows = {}
    for name, want in wanted.items():
        found = {}
        for cfg_path in out_dir.glob("*/config.json"):
            cfg = json.loads(cfg_path.read_text())
            expected = RunConfig.from_dict({**want, "seed": cfg.get("seed", 0)}).to_dict()
            if (cfg_path.parent / "summary.json").exists() and not config_diff(cfg, expected):
                found[cfg["seed"]] = numbers(cfg_path.parent)
        if all(s in found for s in seeds):
            rows[name] = [dict(found[s], seconds=float("nan")) for s in seeds]
        else:
            print(f"{name}: finished seeds {sorted(found)} of {seeds}: left out")
    return rows


def study_main(argv, description: str, rows: dict[str, str], labels: dict[str, str], keys, out_dir: str,
               header: str, settings=None) -> dict:
    """The command line every study script shares: ``[--seeds] [--rows] [--json] [--collect DIR]
    [key=value ...]``; trains (or, with ``--collect``, re-reads) each row's seeds, prints the
    markdown table (``header``: its first two lines), writes the JSON. ``settings(values, names)``
    gives the settings recorded in the JSON (default: the rows' presets)."""
    import argparse

    from workbench.config import parse_overrides

    p = argparse.ArgumentParser(description=description)
    p.add_argument("--seeds", default="0,1,2", help="comma list of training seeds")
    p.add_argument("--rows", default=",".join(rows), help=f"comma list of rows ({', '.join(rows)})")
    p.add_argument("--json", default="", help="also write the per-seed numbers to this JSON file")
    p.add_argument("--collect", default="", help="do not train: read the finished runs under this out_dir")
    args, rest = p.parse_known_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    overrides = parse_overrides(rest)
    out_dir = overrides.pop("out_dir", out_dir)
    names = [n for n in args.rows.split(",") if n]
    values = {n: row_values(rows[n], overrides) for n in names}
    print(f"rows: {values}\nseeds: {seeds}; load average at start: {load()}\n", flush=True)
    print(header, flush=True)
    if args.collect:
        found = collect(Path(args.collect), values, seeds)
    else:
        found = {}
        for n in names:
            found[n] = train_row(values[n], seeds, out_dir)
            print(markdown_row(labels[n], found[n], keys), flush=True)
    print(f"\nload average at end: {load()}; runs under {args.collect or out_dir}")
    if args.json:
        recorded = settings(values, names) if settings else {"rows": ", ".join(f"{n}={rows[n]}" for n in names)}
        write_json(args.json, found, {**recorded, **overrides}, seeds)
    return found
