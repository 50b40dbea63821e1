"""Teacher-student gap records, during training (:class:`GapProbe`) or after the fact
(:func:`gap_records` on any ``dict[role, RoleOutputs]``, e.g. from
:func:`workbench.probes.features.collect_outputs` on saved checkpoints).

One record per (pair, metric), long format (schema in :mod:`workbench.engine.metrics`)::

    {"kind": "gap", "epoch": 3, "pair": "T_d-S", "metric": "kl", "value": 0.041}

Pairs are :func:`workbench.engine.roles.gap_pairs` (``T_s-S``, ``T_d-S``, ``T_s-T_d``); a pair
is reported when both of its roles are in the outputs. The first role of a pair plays the
teacher: ``acc_gap = top1(first) - top1(second)`` in percentage points (the unit of the
published top-1 tables), ``kl = KL(p_first || p_second)``.

Metrics (registry :data:`GAP_METRICS`): ``acc_gap``, ``agreement`` (fraction), ``kl`` (nats,
temperature ``T``), ``cka`` (linear CKA of penultimate features; skipped when either role has
no features), ``dist_inter``, ``dist_intra`` (DIST correlation gaps, off by default).
"""
from __future__ import annotations

from typing import Iterable, Optional

from .. import methods  # noqa: F401  (every method registers the roles it evaluates)
from ..engine.callbacks import Callback, RoleOutputs
from ..engine.roles import gap_pairs
from ..registry import Registry, unknown_choice
from . import metrics as M

GAP_METRICS = Registry("gap metric")
DEFAULT_GAP_METRICS = ("acc_gap", "agreement", "kl", "cka")
PERCENT = 100.0  # acc_gap is reported in percentage points


def _check_aligned(a: RoleOutputs, b: RoleOutputs, pair: str) -> None:
    if a.logits.shape != b.logits.shape:
        raise ValueError(f"pair {pair}: logit shapes differ {tuple(a.logits.shape)} vs {tuple(b.logits.shape)}")
    if not bool((a.targets.reshape(-1) == b.targets.reshape(-1)).all()):
        raise ValueError(f"pair {pair}: the two roles were evaluated on different examples (targets differ)")


@GAP_METRICS.register("acc_gap")
def _acc_gap(t: RoleOutputs, s: RoleOutputs, T: float) -> float:
    return PERCENT * M.accuracy_gap(t.logits, s.logits, t.targets)


@GAP_METRICS.register("agreement")
def _agreement(t: RoleOutputs, s: RoleOutputs, T: float) -> float:
    return M.agreement(t.logits, s.logits)


@GAP_METRICS.register("kl")
def _kl(t: RoleOutputs, s: RoleOutputs, T: float) -> float:
    return M.predictive_kl(t.logits, s.logits, T=T)


@GAP_METRICS.register("cka", needs_features=True)
def _cka(t: RoleOutputs, s: RoleOutputs, T: float) -> Optional[float]:
    if t.features is None or s.features is None:
        return None
    m = min(len(t.features), len(s.features))  # both hold the first probe_samples examples
    return M.linear_cka(t.features[:m], s.features[:m])


@GAP_METRICS.register("dist_inter")
def _dist_inter(t: RoleOutputs, s: RoleOutputs, T: float) -> float:
    return M.dist_inter_gap(t.logits, s.logits, T=T)


@GAP_METRICS.register("dist_intra")
def _dist_intra(t: RoleOutputs, s: RoleOutputs, T: float) -> float:
    return M.dist_intra_gap(t.logits, s.logits, T=T)


def _check_pairs(pairs: Optional[Iterable[str]]) -> tuple[str, ...]:
    known = gap_pairs()
    pairs = tuple(known) if pairs is None else tuple(pairs)
    for p in pairs:
        if p not in known:
            raise ValueError(unknown_choice("gap pair", p, list(known)))
    return pairs


def gap_records(outputs: dict[str, RoleOutputs], epoch: Optional[int] = None,
                metrics: Iterable[str] = DEFAULT_GAP_METRICS, pairs: Optional[Iterable[str]] = None,
                T: float = 1.0) -> list[dict]:
    """Gap records for every requested pair whose two roles are both in ``outputs``.

    Plain function: works on the trainer's eval outputs or on outputs computed after the
    fact. ``epoch=None`` leaves the key out (the trainer fills it in). Metrics that cannot be
    computed (CKA without features) are skipped, never written as fake values."""
    metrics = tuple(metrics)
    for m in metrics:
        GAP_METRICS.check(m)
    records = []
    for pair in _check_pairs(pairs):
        first, second = gap_pairs()[pair]
        if first not in outputs or second not in outputs:
            continue
        t, s = outputs[first], outputs[second]
        _check_aligned(t, s, pair)
        for m in metrics:
            value = GAP_METRICS.get(m)(t, s, T)
            if value is None:
                continue
            rec = {"kind": "gap", "pair": pair, "metric": m, "value": float(value)}
            if epoch is not None:
                rec["epoch"] = epoch
            records.append(rec)
    return records


class GapProbe(Callback):
    """Writes :func:`gap_records` after each due evaluation (``every`` epochs, plus epoch 0
    and the last epoch). Needs penultimate features (trainer ``probe_samples`` > 0) for CKA.

    >>> GapProbe(every=1, metrics=("acc_gap", "agreement", "kl", "cka"), pairs=None, T=1.0)
    """

    def __init__(self, every: int = 1, metrics: Iterable[str] = DEFAULT_GAP_METRICS,
                 pairs: Optional[Iterable[str]] = None, T: float = 1.0):
        if int(every) < 1:
            raise ValueError(f"every must be >= 1, got {every!r}")
        self.every = int(every)
        self.metrics = tuple(metrics)
        for m in self.metrics:
            GAP_METRICS.check(m)
        self.needs_features = any(GAP_METRICS.meta(m).get("needs_features") for m in self.metrics)
        self.pairs = _check_pairs(pairs)
        if not T > 0:
            raise ValueError(f"temperature T must be > 0, got {T!r}")
        self.T = float(T)

    def on_eval_end(self, state, epoch: int, outputs: dict[str, RoleOutputs]) -> list[dict]:
        last = getattr(state, "epochs", epoch) if state is not None else epoch
        if not self.due(epoch, last):
            return []
        return gap_records(outputs, epoch, self.metrics, self.pairs, self.T)

    def compute(self, outputs: dict[str, RoleOutputs], epoch: Optional[int] = None) -> list[dict]:
        """After-the-fact use with this probe's settings (ignores ``every``)."""
        return gap_records(outputs, epoch, self.metrics, self.pairs, self.T)


def logit_diff_matrix(outputs: dict[str, RoleOutputs], pair: str = "T_d-S"):
    """Class-mean logit difference ``(K, K)`` of a pair (first role minus second), for the
    heatmap figure; see :func:`workbench.probes.metrics.class_mean_logit_diff`."""
    first, second = gap_pairs()[_check_pairs([pair])[0]]
    for role in (first, second):
        if role not in outputs:
            raise ValueError(unknown_choice("role in outputs", role, sorted(outputs)))
    t, s = outputs[first], outputs[second]
    _check_aligned(t, s, pair)
    return M.class_mean_logit_diff(t.logits, s.logits, t.targets)
