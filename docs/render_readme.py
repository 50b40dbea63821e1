"""Regenerate the README's demo numbers and figure from the runs that produce them, so they
cannot drift from what the code gives:

    make demo                                                     # runs/demo: the GPD notebook on fashion_mnist
    python bench/fashion_methods.py --methods ce,kd,dkd,gpd_kd,gpd_dkd,gpd_scratch --json docs/fashion_methods.json
    python bench/fashion_vit.py --json docs/fashion_vit.json probe_every=0
    python bench/fashion_inherit.py --json docs/fashion_inherit.json probe_every=0
    python bench/ctc_embed_study.py                               # -> docs/ctc_embed_study.json (CTC / embed study)
    python bench/fashion_group.py --json docs/fashion_group.json     # DML / ORC at the demo budget
    python bench/bench_sweep.py --repeat 2 --json docs/sweep_bench.json     # sweep overhead, parallel cells
    python bench/td_vs_s_study.py                                 # -> docs/td_vs_s.json (T_d vs S study)
    python -m workbench search bench/search_fashion.yaml && python bench/search_study.py   # -> docs/search_study.json
    python bench/dmkd_study.py                                    # -> docs/dmkd_study.json (DM-KD, kd + recursivemix)
    python bench/dmkd_study.py --rows kd,kd_rm --json docs/recursivemix_demo.json   # the demo budget
    python docs/render_readme.py [runs/demo] [--no-figure]        # -> docs/demo_summary.json, docs/demo_gap_curves.png, README.md
    python docs/render_readme.py --tables                         # README tables from the committed JSON files only

Means and sample standard deviations over seeds and the Markdown tables are those of the results
table (``workbench.table``: ``pm`` and ``markdown``), the code behind ``python -m workbench table``.

The README holds generated blocks between ``<!-- name:start -->`` / ``<!-- name:end -->``
markers; ``tests/test_readme_numbers.py`` checks they equal what this script renders from the
committed JSON files.
"""
from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SUMMARY = ROOT / "docs" / "demo_summary.json"
METHODS_JSON = ROOT / "docs" / "fashion_methods.json"
VIT_JSON = ROOT / "docs" / "fashion_vit.json"
INHERIT_JSON = ROOT / "docs" / "fashion_inherit.json"
FIGURE = ROOT / "docs" / "demo_gap_curves.png"
STUDY_JSON = ROOT / "docs" / "ctc_embed_study.json"
SWEEP_JSON = ROOT / "docs" / "sweep_bench.json"
TD_JSON = ROOT / "docs" / "td_vs_s.json"
SEARCH_JSON = ROOT / "docs" / "search_study.json"
GROUP_JSON = ROOT / "docs" / "fashion_group.json"
DMKD_JSON = ROOT / "docs" / "dmkd_study.json"
RM_JSON = ROOT / "docs" / "recursivemix_demo.json"  # bench/dmkd_study.py --rows kd,kd_rm at the demo budget
FIGURE_SIZE = (900, 560)
LABELS = {"ce": "ce", "kd": "kd", "dkd": "dkd", "gpd_kd": "gpd (base=kd)", "gpd_dkd": "gpd (base=dkd)",
          "gpd_scratch": "gpd (base=none, no teacher)"}


def demo_run(demo_dir: Path) -> Path:
    """The distillation run of ``make demo`` (not a cached teacher)."""
    runs = [p.parent for p in sorted(demo_dir.glob("*/metrics.jsonl")) if p.parent.name != "teachers"]
    if len(runs) != 1:
        raise SystemExit(f"expected one run under {demo_dir}, found {[r.name for r in runs]}: run `make demo` "
                         f"into an empty folder")
    return runs[0]


def summarise(run_dir: Path) -> dict:
    from workbench.engine.metrics import read_metrics
    from workbench.nb.summary import outcome

    records = read_metrics(run_dir)
    out = outcome(records)
    top = {}
    for r in records:
        if r.get("kind") == "eval" and r.get("role") in ("student", "dynamic_teacher", "teacher"):
            top.setdefault(r["epoch"], {})[r["role"]] = r["top1"]
    epochs = [e for e in sorted(top) if e > 0 and len(top[e]) == 3]
    between = [e for e in epochs if top[e]["student"] < top[e]["dynamic_teacher"] < top[e]["teacher"]]
    cfg = json.loads((run_dir / "config.json").read_text())
    cfg = cfg.get("effective", cfg)  # the values the run used (base: dkd where it was asked as auto)
    out.update(td_between_epochs=len(between), epochs_evaluated=len(epochs),
               teacher=cfg["teacher"], student=cfg["student"], method=cfg["method"], base=cfg["base"])
    return out


def demo_sentence(s: dict) -> str:
    from workbench.nb.summary import sentence

    return (f"{sentence(s)} T_d lay strictly between S and T_s in {s['td_between_epochs']} of the "
            f"{s['epochs_evaluated']} epochs.")


def _pm(xs) -> str:
    """mean +- sample std over seeds, as the results table writes it (workbench.table.pm)."""
    from workbench.table import pm

    return pm(xs, single="zero")


def methods_table(m: dict) -> str:
    from workbench.table import markdown

    rows = [[LABELS.get(name, name), _pm(r["best"]), _pm(r["last"]), _pm(r["T_d_last"]) if "T_d_last" in r else ""]
            for name, r in m["methods"].items()]
    teacher = next((r["T_s"] for r in m["methods"].values() if "T_s" in r), None)
    seeds = ", ".join(str(s) for s in m["seeds"])
    note = f"\n\nSeeds {seeds}; static teacher T_s {teacher:.2f} % top-1." if teacher is not None else ""
    return markdown(["method (student resnet8)", "best epoch", "last epoch", "T_d last"], rows) + note


VIT_LABELS = {"ce": "CE, vit_nano (no teacher)", "deit": "DeiT hard, vit_nano_dist", "cskd": "CSKD, vit_nano_dist"}
INHERIT_LABELS = {"kd": "kd, random init", "kd_inherit": "kd, inherited", "gpd_kd": "gpd (base=kd), random init",
                  "gpd_kd_inherit": "gpd (base=kd), inherited"}


def _cell(r: dict, key: str) -> str:
    return _pm(r[key]) if r.get(key) else ""


def _seeds_note(m: dict) -> str:
    teacher = next((r["T_s"][0] for r in m["rows"].values() if r.get("T_s")), None)
    seeds = ", ".join(str(s) for s in m["seeds"])
    return f"\n\nSeeds {seeds}" + (f"; static teacher T_s (resnet20) {teacher:.2f} % top-1." if teacher is not None else ".")


def vit_table(m: dict) -> str:
    from workbench.table import markdown

    rows = [[VIT_LABELS.get(name, name), _cell(r, "best"), _cell(r, "last")] for name, r in m["rows"].items()]
    return markdown(["student", "best epoch", "last epoch"], rows) + _seeds_note(m)


def inherit_table(m: dict) -> str:
    from workbench.table import markdown

    keys = ("epoch0", "epoch0_gap", "best", "last", "T_d_last")
    rows = [[INHERIT_LABELS.get(name, name)] + [_cell(r, k) for k in keys] for name, r in m["rows"].items()]
    return markdown(["student resnet8", "epoch 0 (before training)", "T_s-S gap at epoch 0", "best epoch", "last epoch",
                     "T_d last"], rows) + _seeds_note(m)


GROUP_LABELS = {"ce": "CE", "kd": "KD", "dml": "DML (2 x resnet8, no teacher)",
                "orc": "ORC (2 x resnet8, pivot resnet20)"}


def group_table(m: dict) -> str:
    """bench/fashion_group.py: the student (network 0) of each method, the group's other network
    and ORC's pivot teacher after its online fine-tuning."""
    from workbench.table import markdown

    keys = ("best", "last", "peer_last", "T_p_last")
    rows = [[GROUP_LABELS.get(name, name)] + [_cell(r, k) for k in keys] for name, r in m["rows"].items()]
    settings = m.get("settings", {})
    budget = f"; {settings.get('train_per_class', '?')} images per class, {settings.get('epochs', '?')} epochs"
    return (markdown(["method (student resnet8)", "S best epoch", "S last epoch", "P1 (other network), last",
                      "T_p (pivot teacher, fine-tuned), last"], rows) + _seeds_note(m)[:-1] + budget + ".")


def study_table(m: dict) -> str:
    """The CTC / embed study (bench/ctc_embed_study.py): mean +- std over seeds per method (a
    single seed's value alone: no invented spread)."""
    from workbench.table import markdown, pm

    body = []
    for name, per_seed in m["methods"].items():
        cells = [pm([r[k] for r in per_seed]) for k in ("source_top1", "transfer_peak", "transfer_last", "cka_teacher")]
        peaks = ", ".join(str(r["transfer_peak_epoch"]) for r in per_seed)
        body.append([m["labels"].get(name, name), cells[0], cells[1], peaks, cells[2], cells[3]])
    rows = [markdown(["method (student resnet8)", "source top-1, last epoch (%)", "transfer probe, peak (%)",
                      "peak epoch per seed", "transfer probe, last epoch (%)", "linear CKA to the teacher"], body)]
    seeds = ", ".join(str(s) for s in m["seeds"])
    n = {len(v) for v in m["methods"].values()}
    walls = [w for ws in m.get("seconds_per_run", {}).values() for w in ws]
    wall = f"; {statistics.mean(walls) / 60:.1f} min per run on the shared 2-core machine" if walls else ""
    note = (f"\n\nSeed{'s' if len(m['seeds']) > 1 else ''} {seeds}"
            f"{'' if n == {len(m['seeds'])} else ' (not every method finished every seed)'}; "
            f"transfer target {m['target']}; teacher (resnet20 on the 2500 source training images) "
            f"{m['teacher_top1']:.2f} % source top-1{wall}.")
    return "\n".join(rows) + note


def dmkd_table(m: dict) -> str:
    """bench/dmkd_study.py: DM-KD's protocol and KD + RecursiveMix, mean +- std over seeds (a single
    seed's value alone), best and last epoch, the train record's top-1 on the images trained on."""
    from workbench.table import markdown, pm

    body = []
    for name, rs in m["rows"].items():
        seeds = ", ".join(str(r["seed"]) for r in rs)
        per_seed = " / ".join(f"{r['last']:.1f}" for r in rs)
        train = [r["train_top1_last"] for r in rs if r.get("train_top1_last") is not None]
        teacher = pm([r["T_s"] for r in rs if r.get("T_s") is not None], single="value")
        body.append([m["labels"].get(name, name), seeds, pm([r["best"] for r in rs], single="value"),
                     pm([r["last"] for r in rs], single="value"), per_seed, pm(train, single="value") if train else "",
                     teacher])
    table = markdown(["row (student resnet8)", "seeds", "best epoch (%)", "last epoch (%)", "last, per seed",
                      "train top-1, last epoch (%)", "T_s (%)"], body)
    over = ", ".join(f"{k}={v}" for k, v in m.get("overrides", {}).items())
    walls = [r["seconds"] for rs in m["rows"].values() for r in rs if r.get("seconds")]
    dmkd = any(name.startswith("dmkd") for name in m["rows"])
    data = (f"; other images: {m['per_class']} per class of the full Fashion-MNIST training file outside the "
            f"embedded subset; low fidelity: down to {m['degrade_size']} px and back; weak teacher: "
            f"{m['weak_teacher']['teacher']} trained {m['weak_teacher']['teacher_epochs']} epochs on the 5000 subset "
            f"images") if dmkd else ""
    return (table + f"\n\nPreset `{m['preset']}`" + (f" with {over}" if over else " (its 20 epochs)") + data +
            (f"; {statistics.mean(walls) / 60:.1f} min per run on the shared 2-core machine" if walls else "") + ".")


def sweep_bench(m: dict) -> str:
    """bench/bench_sweep.py's figures: the sweep's overhead per cell and parallel cells' speed-up."""
    med = {k: statistics.median(v) for k, v in m["seconds"].items()}
    n = m["cells"]
    over = (med["parallel 1"] - med["direct"]) / n
    runs = f"median of {m['repeat']} rounds" if m["repeat"] > 1 else "one round"
    return (f"Measured by `python bench/bench_sweep.py --repeat {m['repeat']} --json docs/sweep_bench.json` ({runs}; "
            f"{n} cells: `{' '.join(m['grid'])}`) on the {m['cores']}-core machine while other work loaded it (load "
            f"average {m['load_start'].split()[0]} at the start, {m['load_end'].split()[0]} at the end; an idle machine "
            f"will differ): the {n} runs one after the other in one process took {med['direct']:.0f} s; as a local "
            f"sweep with `parallel=1` {med['parallel 1']:.0f} s, so the sweep adds {over:.1f} s per cell "
            f"({100 * over / (med['direct'] / n):.0f} % of a {med['direct'] / n:.0f} s run: validation, submitit's "
            f"processes, a fresh Python and torch per cell); with `parallel=2` (one thread each) "
            f"{med['parallel 2']:.0f} s, {med['parallel 1'] / med['parallel 2']:.2f}x faster than `parallel=1`."
            + (" More than the 2 cores can explain: among the other processes on the busy machine, two cells got a "
               "larger share of the CPU than one, and one thread per cell escapes the OpenMP spinning that "
               "oversubscribed 2-thread cells suffer; on an idle machine expect at most 2x."
               if float(m["load_start"].split()[0]) > m["cores"] else ""))
TD_COLUMNS = (("S_raw_best", "S best"), ("S_raw_last", "S last"), ("S_ema_last", "S EMA last"),
              ("T_d_raw_best", "T_d best"), ("T_d_raw_last", "T_d last"), ("T_d_ema_last", "T_d EMA last"),
              ("gap_last5", "T_d - S, last 5 epochs"), ("td_ahead_epochs", "epochs with T_d > S"))


def td_table(m: dict) -> str:
    """The T_d vs S study (bench/td_vs_s_study.py): mean +- std over seeds; per-seed T_d - S."""
    rows = ["| configuration | " + " | ".join(h for _, h in TD_COLUMNS) + " |", "|---" * (len(TD_COLUMNS) + 1) + "|"]
    for r in m["rows"].values():
        cells = [_pm(r[k]) if r.get(k) else "" for k, _ in TD_COLUMNS]
        rows.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    seeds = ", ".join(str(s) for s in m["seeds"])
    per_seed = [f"{r['label']}: {', '.join(f'{g:+.1f}' for g in r['gap_last5'])} (T_d ahead in "
                f"{', '.join(str(n) for n in r['td_ahead_epochs'])} of {r['epochs'][0]} epochs; by quarter of the "
                f"run {_quarters(r['gap_curve'])})" for r in m["rows"].values() if r.get("gap_last5")]
    return ("\n".join(rows) + f"\n\nSeeds {seeds}; top-1 (%) on the 1000 test images; raw = the trained weights, EMA = "
            f"their moving average (decay 0.99 per step). T_d - S (raw) over the last 5 epochs per seed: "
            + "; ".join(per_seed) + ".")


def _quarters(curves: list[list[float]]) -> str:
    """Mean T_d - S over seeds and the epochs of each quarter of the run: '+3.7 (epochs 1-5), ...'."""
    n = len(curves[0])
    bounds = [(q * n // 4, (q + 1) * n // 4) for q in range(4)]
    return ", ".join(f"{statistics.mean(g for c in curves for g in c[lo:hi]):+.1f} (epochs {lo + 1}-{hi})"
                     for lo, hi in bounds)


def _params(params: dict) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def search_table(m: dict) -> str:
    """bench/search_study.py: the best preset of a search re-run beside the baselines (mean +- std
    over seeds, the results table's statistics), the search's facts and its best trials."""
    from workbench.table import markdown

    body = []
    for preset, r in m["rows"].items():
        label = f"`{preset}`" + (f" ({r['method']})" if r.get("method") else "")
        body.append([label, str(len(r["seeds"])), ", ".join(map(str, r["seeds"]))]
                    + [_pm(r[k]) if r.get(k) else "" for k in ("s_best", "s_last", "s_rep_last", "gap_ts")])
    main = markdown(["preset (resnet20 -> resnet8, demo budget, test set)", "n", "seeds", "S best", "S last",
                     "S rep. last", "T_s-S"], body)
    s = m["search"]
    states = ", ".join(f"{v} {k}" for k, v in s["states"].items())
    proxy = ", ".join(f"{k}={v}" for k, v in s["proxy"].items())
    wall = f"{s['wall_minutes']:.0f} min wall on the shared 2-core machine" if s.get("wall_minutes") else ""
    weights = ", ".join(f"{k} {v:g}" for k, v in s["objective"].items())
    study = s["study"]
    facts = (f"\n\nSearch `{s['name']}`: {s['counted']} trials counted ({states}), sampler {study['sampler']}, "
             f"pruner {study['pruner']} (from epoch {study['warmup_epochs']}), {study['parallel']} at once, {wall}; "
             f"proxy {proxy}; objective weights {weights}. Best trial #{s['best']['trial']} "
             f"(score {s['best']['value']:.4f}): {_params(s['best']['params'])}.")
    top = markdown(["trial", "score", "val top-1 (%)", "1 - CKA(T_s, S)", "parameters"],
                   [[str(t["trial"]), f"{t['value']:.4f}", f"{t['val_top1']:.1f}" if t.get("val_top1") is not None else "",
                     f"{t['cka_gap']:.3f}" if t.get("cka_gap") is not None else "", _params(t["params"])]
                    for t in s["top"]])
    return main + facts + "\n\nThe best trials on the validation split (proxy budget):\n\n" + top


def replace_block(text: str, name: str, body: str) -> str:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    i, j = text.find(start), text.find(end)
    if i < 0 or j < 0:
        raise SystemExit(f"README.md has no {start} ... {end} block")
    return text[: i + len(start)] + "\n" + body + "\n" + text[j:]


def blocks() -> dict[str, str]:
    """The README's generated blocks, rendered from the committed JSON files."""
    out = {}
    if SUMMARY.exists():
        out["demo-outcome"] = demo_sentence(json.loads(SUMMARY.read_text()))
    if METHODS_JSON.exists():
        out["fashion-table"] = methods_table(json.loads(METHODS_JSON.read_text()))
    if VIT_JSON.exists():
        out["vit-table"] = vit_table(json.loads(VIT_JSON.read_text()))
    if INHERIT_JSON.exists():
        out["inherit-table"] = inherit_table(json.loads(INHERIT_JSON.read_text()))
    if STUDY_JSON.exists():
        out["ctc-table"] = study_table(json.loads(STUDY_JSON.read_text()))
    if SWEEP_JSON.exists():
        out["sweep-bench"] = sweep_bench(json.loads(SWEEP_JSON.read_text()))
    if TD_JSON.exists():
        out["td-table"] = td_table(json.loads(TD_JSON.read_text()))
    if SEARCH_JSON.exists():
        out["search-table"] = search_table(json.loads(SEARCH_JSON.read_text()))
    if GROUP_JSON.exists():
        out["group-table"] = group_table(json.loads(GROUP_JSON.read_text()))
    if DMKD_JSON.exists():
        out["dmkd-table"] = dmkd_table(json.loads(DMKD_JSON.read_text()))
    if RM_JSON.exists():
        out["recursivemix-table"] = dmkd_table(json.loads(RM_JSON.read_text()))
    return out


def render_figure(run_dir: Path, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    from workbench.probes import figures

    fig = figures.gap_curves(run_dir, metrics=["acc_gap", "kl"])
    fig.update_layout(width=FIGURE_SIZE[0], height=FIGURE_SIZE[1],
                      title="make demo: teacher-student gaps on Fashion-MNIST, GPD on DKD (T_s: resnet20, S: resnet8)")
    page = Path(tempfile.mkdtemp()) / "fig.html"
    page.write_text(fig.to_html(include_plotlyjs=True, full_html=True))
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=args)
        tab = browser.new_page()
        tab.goto(page.as_uri())
        tab.wait_for_selector(".js-plotly-plot .main-svg")
        tab.locator(".js-plotly-plot").first.screenshot(path=str(out))
        browser.close()


def write_blocks() -> None:
    text = README.read_text()
    for name, body in blocks().items():
        text = replace_block(text, name, body)
    README.write_text(text)


def main(argv: list[str]) -> int:
    if "--tables" in argv:  # only the generated blocks, from the committed JSON files
        write_blocks()
        print(f"wrote {README}")
        return 0
    demo_dir = Path(next((a for a in argv if not a.startswith("--")), "runs/demo"))
    run_dir = demo_run(demo_dir)
    SUMMARY.write_text(json.dumps(summarise(run_dir), indent=1) + "\n")
    if "--no-figure" not in argv:
        render_figure(run_dir, FIGURE)
    write_blocks()
    print(f"wrote {SUMMARY}, {'' if '--no-figure' in argv else str(FIGURE) + ', '}{README}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
