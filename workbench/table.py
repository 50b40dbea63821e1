"""One results table from run folders: the study a sweep (or any set of runs) adds up to.

    python -m workbench table runs/sweeps/table1 [--format md|csv|latex]
    python -m workbench table runs/ [more run folders ...]

One row per dataset, teacher -> student pair, method *and every other setting*: runs are grouped
by their config identity (what the run folder's hash covers, :func:`workbench.naming.identity`)
minus the seed, so runs that differ in anything but the seed are never averaged together; when
several rows share a dataset, pair and method, a ``settings`` column names what tells them apart.
Per row: ``n`` seeds and, as mean +- *sample* standard deviation over the seeds (n - 1 in the
denominator; one seed shows its value alone):

- ``S best`` / ``S last``: the student's top-1 at its best epoch / after the last epoch;
- ``S rep. best`` / ``S rep. last``: the same for max(raw, EMA) (GPD's reported metric, runs with EMA);
- ``T_s``: the static teacher's top-1; ``T_s-S``: the final accuracy gap (T_s - S after the last epoch);
- ``T_d`` / ``T_d-S``: GPD's dynamic teacher after the last epoch and its final gap to the student;
  every teaching role a method registers gets these two columns, named from its label
  (:mod:`workbench.engine.roles`: ORC's fine-tuned pivot teacher ``T_p``, the other networks of a
  DML / ORC group ``P1`` ...);
- ``published`` and ``diff`` (ours - published, on the statistic the paper reports) where the row
  was trained exactly with the settings of a preset that reproduces a published protocol
  (:mod:`workbench.published`; :func:`protocol_match` says which keys may differ).

Numbers come from each run's ``summary.json`` (written from ``metrics.jsonl``) and its config;
unfinished runs are left out and counted. The same table renders as Markdown, CSV (means and
stds in separate columns, run folders listed) and LaTeX (booktabs), and in notebooks as HTML.
:func:`pm` and :func:`markdown` are also what the README's study tables are rendered with
(``docs/render_readme.py``).
"""
from __future__ import annotations

import csv
import html
import io
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

from . import published as pub
from .engine.roles import role_label, teachers

FORMATS = ("md", "csv", "latex")
SUMMARY, CONFIG, SWEEP = "summary.json", "config.json", "sweep.json"
#: (key, column title): the student's statistics of a row, in table order
STUDENT_STATS = (("s_best", "S best"), ("s_last", "S last"), ("s_rep_best", "S rep. best"),
                 ("s_rep_last", "S rep. last"))


def teacher_stats(role: str) -> tuple[tuple[str, str], tuple[str, str]]:
    """A teaching role's two statistics, named from its label (``T_s`` -> ``t_s`` and ``gap_ts``):
    its last-epoch top-1 and its final gap to the student."""
    label = role_label(role)
    return (label.lower(), label), ("gap_" + label.lower().replace("_", ""), f"{label}-S")


def stats() -> tuple[tuple[str, str], ...]:
    """(key, column title) of every statistic, in table order: the student's, then each teaching
    role's as registered (:mod:`workbench.engine.roles`: T_s, then a method's, e.g. GPD's T_d)."""
    from . import methods  # noqa: F401 -- the methods register their roles when imported

    return STUDENT_STATS + tuple(st for role in teachers() for st in teacher_stats(role))
#: which statistic of ours a published number is compared with
COMPARED = {pub.LAST: "s_last", pub.BEST: "s_best", pub.BEST_REPORTED: "s_rep_best"}
#: keys that may differ from a preset's while the run still follows the published protocol: the
#: seed, where the teacher comes from (a file or trained on the fly -- its architecture must
#: match), where the data lives, and numerics/speed switches that do not change the recipe
PROTOCOL_FREE = frozenset({"seed", "teacher", "teacher_arch", "teacher_epochs", "teacher_data", "data_root",
                           "download", "data_source", "amp", "channels_last", "sync_bn"})
PM = " +- "


# ----------------------------------------------------------------------------- statistics
def mean_std(values: Sequence[float]) -> tuple[float, Optional[float]]:
    """Mean and *sample* standard deviation (n - 1 denominator; None for one value)."""
    values = list(values)
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)


def pm(values: Sequence[float], digits: int = 2, single: str = "value") -> str:
    """``"mean +- std"`` (sample std); one value: the value alone (``single="zero"``: ``+- 0.00``)."""
    if not values:
        return ""
    m, s = mean_std(values)
    if s is None:
        return f"{m:.{digits}f}" + (f"{PM}{0.0:.{digits}f}" if single == "zero" else "")
    return f"{m:.{digits}f}{PM}{s:.{digits}f}"


# ----------------------------------------------------------------------------- one run
@dataclass
class RunNumbers:
    """What the table needs from one finished run folder."""

    run_dir: Path
    dataset: str
    pair: str
    method: str
    seed: int
    epochs: int
    identity: dict  # the config identity minus the seed (the grouping key)
    values: dict  # stats() key -> float
    cfg: object = None


def method_label(cfg) -> str:
    """``kd``, ``dkd + dot``, ``ctkd (kd)``, ``gpd (dkd)``, ``gpd (no teacher)``, ``kd + ctc`` ..."""
    from .methods import EXTENSIONS

    base = cfg.resolved_base
    own = base == cfg.method or len(cfg.spec.valid_bases()) == 1  # ce, kd, dkd ...: no base to name
    label = cfg.method if own else f"{cfg.method} ({'no teacher' if base == 'none' else base})"
    extras = [name for name in EXTENSIONS if name != cfg.method and EXTENSIONS.get(name).active(cfg)]
    extras += ["dot"] if cfg.dot else []
    return " + ".join([label] + extras)


def load_config(run_dir: Path):
    """The run's ``config.json`` as a RunConfig (keys this version does not know are dropped)."""
    from .config import RunConfig, fields_by_name

    saved = json.loads((Path(run_dir) / CONFIG).read_text())
    known = fields_by_name()
    return RunConfig.from_dict({k: v for k, v in saved.items() if k in known and k != "preset"})


def read_run(run_dir: Path) -> Optional[RunNumbers]:
    """The numbers of a finished run (None when ``summary.json`` or ``config.json`` is missing)."""
    from .naming import identity, teacher_arch

    run_dir = Path(run_dir)
    if not (run_dir / SUMMARY).is_file() or not (run_dir / CONFIG).is_file():
        return None
    summary = json.loads((run_dir / SUMMARY).read_text())
    cfg = load_config(run_dir)
    s = summary.get("student", {})
    v = {"s_best": s.get("best_top1"), "s_last": s.get("last_top1"),
         "s_rep_best": s.get("best_top1_reported"), "s_rep_last": s.get("last_top1_reported")}
    for role in teachers():
        t = summary.get(role)
        if t:
            (top1, _), (gap, _) = teacher_stats(role)
            v.update({top1: t["last_top1"], gap: t["last_top1"] - s["last_top1"]})
    ident = {k: val for k, val in identity(cfg).items() if k != "seed"}
    pair = f"{teacher_arch(cfg)} -> {cfg.student}" if cfg.uses_teacher else cfg.student
    return RunNumbers(run_dir, cfg.dataset, pair, method_label(cfg), cfg.seed, cfg.epochs, ident,
                      {k: x for k, x in v.items() if x is not None}, cfg)


def protocol_match(cfg) -> Optional[pub.Published]:
    """The published number whose preset ``cfg`` follows exactly (every key equal to the
    preset's but :data:`PROTOCOL_FREE`, the teacher architecture equal), else None."""
    from .config import RUNTIME_KEYS
    from .naming import teacher_arch

    table = pub.by_preset()
    if not table:
        return None
    mine = _protocol(cfg, RUNTIME_KEYS)
    for name, entry in table.items():
        ref = _preset_config(name)
        if ref is None or ref.dataset != cfg.dataset or ref.student != cfg.student or ref.method != cfg.method:
            continue
        if ref.uses_teacher != cfg.uses_teacher or (cfg.uses_teacher and teacher_arch(ref) != teacher_arch(cfg)):
            continue
        if _protocol(ref, RUNTIME_KEYS) == mine:
            return entry
    return None


def _protocol(cfg, runtime) -> dict:
    d = {k: v for k, v in cfg.to_dict().items() if k not in runtime and k not in PROTOCOL_FREE}
    d["base"] = cfg.resolved_base
    return d


_PRESETS: dict = {}


def _preset_config(name: str):
    if name not in _PRESETS:
        from .config import ConfigError, RunConfig

        try:
            _PRESETS[name] = RunConfig.from_dict({"preset": name})
        except (ConfigError, ValueError):
            _PRESETS[name] = None
    return _PRESETS[name]


# ----------------------------------------------------------------------------- collecting
def run_folders(paths: Iterable) -> tuple[list[Path], list[str]]:
    """Run folders named by ``paths``: a sweep folder (its cells), a run folder, or a folder of
    run folders (its direct children; ``teachers/`` and ``sweeps/`` are not descended into).
    Returns the folders and notes about paths that hold none."""
    out, notes = [], []
    for p in map(Path, paths):
        if (p / SWEEP).is_file():
            record = json.loads((p / SWEEP).read_text())
            out += [Path(c["run_dir"]) for c in record.get("cells", [])]
        elif (p / CONFIG).is_file():
            out.append(p)
        elif p.is_dir():
            found = sorted(d.parent for d in p.glob(f"*/{CONFIG}"))
            out += found
            if not found:
                notes.append(f"{p}: no run folders")
        else:
            notes.append(f"{p}: not found")
    seen, unique = set(), []
    for d in out:
        if d.resolve() not in seen:
            seen.add(d.resolve())
            unique.append(d)
    return unique, notes


@dataclass
class Row:
    dataset: str
    pair: str
    method: str
    epochs: int
    runs: list  # RunNumbers, by seed
    settings: str = ""
    published: Optional[pub.Published] = None

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs]

    def values(self, key: str) -> list[float]:
        return [r.values[key] for r in self.runs if key in r.values]

    def stat(self, key: str) -> tuple[Optional[float], Optional[float], int]:
        xs = self.values(key)
        if not xs:
            return None, None, 0
        m, s = mean_std(xs)
        return m, s, len(xs)

    def diff(self) -> Optional[float]:
        if self.published is None:
            return None
        m, _, n = self.stat(COMPARED[self.published.statistic])
        return None if n == 0 else m - self.published.top1


@dataclass(repr=False)
class ResultsTable:
    rows: list
    notes: list = field(default_factory=list)

    # -- rendering -------------------------------------------------------------------------------
    def columns(self, every: bool = False) -> list[str]:
        """Statistic keys shown: those some row has (``every``: all, for CSV)."""
        return [k for k, _ in stats() if every or any(r.values(k) for r in self.rows)]

    def _cells(self, row: Row, keys: list[str], fmt) -> list[str]:
        out = [row.dataset, row.pair, row.method]
        if self.has_settings:
            out.append(row.settings)
        out += [str(row.epochs), str(len(row.runs)), ",".join(map(str, row.seeds))]
        out += [fmt(row.values(k)) for k in keys]
        if self.has_published:
            p, d = row.published, row.diff()
            out += [f"{p.top1:.2f} ({p.statistic}) [{p.source}]" if p else "", f"{d:+.2f}" if d is not None else ""]
        return out

    @property
    def has_settings(self) -> bool:
        return any(r.settings for r in self.rows)

    @property
    def has_published(self) -> bool:
        return any(r.published for r in self.rows)

    def header(self, keys: list[str]) -> list[str]:
        titles = dict(stats())
        return (["dataset", "T_s -> S", "method"] + (["settings"] if self.has_settings else [])
                + ["epochs", "n", "seeds"] + [titles[k] for k in keys]
                + (["published", "diff"] if self.has_published else []))

    def footer(self) -> list[str]:
        lines = ["top-1 in %, mean +- sample std (n - 1) over seeds; gaps are final-epoch accuracy gaps (points)"]
        used = sorted({r.published.source for r in self.rows if r.published})
        lines += [f"[{s}] {pub.SOURCES[s]}" for s in used]
        if used:
            lines.append("published: shown where a row's settings equal the preset reproducing the paper's protocol; "
                         "diff = ours - published on the same statistic (last, best, or best of max(raw, EMA))")
        return lines + list(self.notes)

    def markdown(self) -> str:
        keys = self.columns()
        body = markdown(self.header(keys), [self._cells(r, keys, pm) for r in self.rows])
        return body + "\n\n" + "\n".join(f"- {line}" for line in self.footer())

    def csv(self) -> str:
        keys = self.columns(every=True)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["dataset", "pair", "method", "settings", "epochs", "n", "seeds"]
                   + [f"{k}_{s}" for k in keys for s in ("mean", "std")]
                   + ["published", "published_statistic", "published_source", "diff", "run_dirs"])
        for r in self.rows:
            stats = []
            for k in keys:
                m, s, n = r.stat(k)
                stats += [_num(m), _num(s)]
            p, d = r.published, r.diff()
            w.writerow([r.dataset, r.pair, r.method, r.settings, r.epochs, len(r.runs), " ".join(map(str, r.seeds))]
                       + stats + ([_num(p.top1), p.statistic, p.source] if p else ["", "", ""]) + [_num(d)]
                       + [";".join(str(x.run_dir) for x in r.runs)])
        return buf.getvalue()

    def latex(self) -> str:
        keys = self.columns()
        head = self.header(keys)
        lines = [r"\begin{tabular}{" + "l" * (3 + self.has_settings) + "r" * (len(head) - 3 - self.has_settings) + "}",
                 r"\toprule", " & ".join(_tex(h) for h in head) + r" \\", r"\midrule"]
        for r in self.rows:
            cells = self._cells(r, keys, lambda xs: pm(xs).replace(PM, r" $\pm$ "))
            lines.append(" & ".join(c if r" $\pm$ " in c else _tex(c) for c in cells) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}"]
        return "\n".join(lines) + "\n" + "\n".join(f"% {line}" for line in self.footer())

    def render(self, fmt: str = "md") -> str:
        if fmt not in FORMATS:
            raise ValueError(f"format: unknown format {fmt!r}; valid choices: {', '.join(FORMATS)}")
        return {"md": self.markdown, "csv": self.csv, "latex": self.latex}[fmt]()

    def __str__(self) -> str:
        return self.markdown()

    __repr__ = __str__  # what a notebook's text/plain output and papermill logs show

    def _repr_html_(self) -> str:
        keys = self.columns()
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.header(keys))
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in self._cells(r, keys, pm)) + "</tr>"
                       for r in self.rows)
        foot = "".join(f"<li>{html.escape(line)}</li>" for line in self.footer())
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table><ul>{foot}</ul>"


def _num(x) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else repr(float(x))


def _tex(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("->", r"$\to$"), ("+-", r"$\pm$")):
        text = text.replace(a, b)
    return text


def markdown(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table (``| a | b |`` lines; the README's tables are rendered with it)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the table
def build(paths: Iterable) -> ResultsTable:
    """The results table of the run folders under ``paths`` (see :func:`run_folders`)."""
    folders, notes = run_folders(paths)
    runs, unfinished = [], 0
    for d in folders:
        try:
            r = read_run(d)
        except (ValueError, KeyError, TypeError, OSError) as e:  # ConfigError is a ValueError
            notes.append(f"{d}: left out, its config or summary cannot be read ({str(e).splitlines()[0]})")
            continue
        if r is None:
            unfinished += 1
        else:
            runs.append(r)
    if unfinished:
        notes.append(f"{unfinished} run folder(s) without summary.json (not finished) left out")
    return table(runs, notes)


def table(runs: list[RunNumbers], notes: Optional[list] = None) -> ResultsTable:
    notes = list(notes or [])
    groups: dict[str, list[RunNumbers]] = {}
    for r in runs:
        key = json.dumps([r.dataset, r.pair, r.method, r.identity], sort_keys=True, default=str)
        groups.setdefault(key, []).append(r)
    rows = []
    for members in groups.values():
        by_seed: dict[int, RunNumbers] = {}
        for m in sorted(members, key=lambda m: (m.seed, str(m.run_dir))):
            if m.seed in by_seed:
                notes.append(f"{m.run_dir}: the same run as {by_seed[m.seed].run_dir} (same settings and seed): counted once")
                continue
            by_seed[m.seed] = m
        first = next(iter(by_seed.values()))
        rows.append(Row(first.dataset, first.pair, first.method, first.epochs, list(by_seed.values()),
                        published=protocol_match(first.cfg) if first.cfg is not None else None))
    _label_settings(rows)
    rows.sort(key=lambda r: (r.dataset, r.pair, r.method, r.settings))
    return ResultsTable(rows, notes)


def _label_settings(rows: list[Row]) -> None:
    """Rows sharing dataset, pair and method: name the identity keys whose values differ."""
    by_name: dict[tuple, list[Row]] = {}
    for r in rows:
        by_name.setdefault((r.dataset, r.pair, r.method), []).append(r)
    for same in by_name.values():
        if len(same) < 2:
            continue
        idents = [r.runs[0].identity for r in same]
        keys = sorted({k for i in idents for k in i if any(j.get(k) != i.get(k) for j in idents)})
        for r, ident in zip(same, idents):
            r.settings = " ".join(f"{k}={_short(ident[k] if k in ident else _default(k))}" for k in keys)


def _default(key: str):
    from .config import RunConfig, fields_by_name

    return RunConfig.default(key) if key in fields_by_name() else "-"


def _short(v) -> str:
    return ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
