"""The distiller search study of the README: a search's facts, and its best preset re-run at the
full (demo) budget beside the baselines, over seeds, through a sweep and the results table.

    python -m workbench search bench/search_fashion.yaml            # the search (resumable)
    python bench/search_study.py [--search fashion-demo] [--seeds 0:3] [--json docs/search_study.json]
    python docs/render_readme.py --tables                            # the README's search block

The re-run is one sweep (``runs/sweeps/search-<name>-final``): ``preset=search/<name>/best`` and
``fashion/demo/{kd,dkd,gpd_dkd}`` x the seeds, on the test set (the default ``eval_on``); finished
cells (e.g. of an earlier sweep of the same presets: same configs, same run folders) are reused.
Numbers are read with :func:`workbench.table.read_run`, the results table's reader.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BASELINES = ("fashion/demo/kd", "fashion/demo/dkd", "fashion/demo/gpd_dkd")
STATS = ("s_best", "s_last", "s_rep_last", "t_s", "gap_ts")
TOP_TRIALS = 5


def study_facts(name: str) -> dict:
    from optuna.trial import TrialState

    from workbench import search

    folder = search.search_dir(name)
    study = search.load_study(folder)
    trials = study.get_trials(deepcopy=False)
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    best = json.loads((folder / "best.json").read_text())
    done = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: -t.value)
    spec = search.load(folder / "spec.yaml")
    return {"name": name, "counted": search.counted(study), "states": search.summary(study),
            "wall_minutes": (max(ends) - min(starts)).total_seconds() / 60 if starts and ends else None,
            "proxy": spec.proxy, "objective": spec.objective, "study": spec.study,
            "best": {"trial": best["trial"], "value": best["value"], "params": best["params"],
                     "scores": best["scores"]},
            "top": [{"trial": t.number, "value": t.value, "params": t.params,
                     **{k: t.user_attrs.get(k) for k in ("val_top1", "val_loss", "cka_gap")}} for t in done[:TOP_TRIALS]]}


def rerun(name: str, seeds: str, parallel: int) -> dict:
    from workbench import sweep
    from workbench.table import read_run

    presets = [f"search/{name}/best", *BASELINES]
    p = sweep.plan([f"preset={','.join(presets)}", f"seed={seeds}"], name=f"search-{name}-final",
                   parallel=parallel, cpus_per_cell=1)
    sweep.launch(p)
    rows: dict = {}
    for cell in p.cells:
        numbers = read_run(cell.run_dir)
        row = rows.setdefault(cell.values["preset"], {"method": None, "seeds": [], **{k: [] for k in STATS}})
        if numbers is None:
            continue
        row["method"] = numbers.method
        row["seeds"].append(numbers.seed)
        for k in STATS:
            if k in numbers.values:
                row[k].append(numbers.values[k])
    return {"sweep": str(p.dir), "rows": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--search", default="fashion-demo", help="the search's name (runs/searches/<name>/)")
    ap.add_argument("--seeds", default="0:3", help="seeds of the re-run (grid syntax)")
    ap.add_argument("--parallel", type=int, default=1, help="cells at once")
    ap.add_argument("--json", default=str(ROOT / "docs" / "search_study.json"))
    args = ap.parse_args(argv)
    out = {"search": study_facts(args.search)}
    out.update(rerun(args.search, args.seeds, args.parallel))
    out["sweep"] = Path(out["sweep"]).name
    Path(args.json).write_text(json.dumps(out, indent=1, default=str) + "\n")
    print(json.dumps(out["rows"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
