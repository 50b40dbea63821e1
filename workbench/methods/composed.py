"""``composed``: a distiller assembled from parts, after Auto-KD's decomposition (Li et al., ICCV
2023: a distiller = where it reads x how it transforms x how it measures the distance x weights).

    loss = ce_weight * CE + sum over terms of weight * sum over the term's (student, teacher) pairs
           of distance(transform(student side), transform(teacher side))

**Grammar** (one key, ``composed_terms``): terms joined by ``+``, each ``tap:transform:distance:weight``,
e.g. ``logits:none:kl:0.9+stages:sattn:mse:1000`` (KD plus attention transfer).

- ``tap`` -- where to read, on both models: ``logits``; ``penultimate`` (the classifier's input,
  (N, D)); ``stage<N>`` (the N-th stage output, 1-based, the same N on both sides, as
  ``fitnet_hint``); ``stages`` (every stage, stage j against stage j: one comparison per stage,
  summed; the pair must have as many stages).
- ``transform`` -- applied to each side: ``none``; ``sattn`` (spatial attention: mean over
  channels of |A|^p, flattened, L2-normalised: attention transfer's map); ``cattn`` (channel
  attention: mean over positions of |A|^p, L2-normalised); ``mask`` (both maps multiplied by one
  random 0/1 mask over positions, each dropped with probability ``composed_mask_ratio``, a fresh
  mask each step from one CPU generator seeded with ``composed_mask_seed``, whose state is
  checkpointed, so a resumed run draws the same masks); ``pool`` (multi-scale pooling: averages
  on 1x1, 2x2, 4x4 grids concatenated, grids finer than the map skipped). Everything but ``none`` needs a feature
  map (N, C, H, W): logits, penultimate features and ViT tokens take ``none`` only.
- ``distance`` -- on the two results flattened to rows (N, D): ``kl`` (softmax at T =
  ``composed_T`` along D, KL(teacher || student) summed over D, batch mean, times T^2:
  ``losses.kd_loss``), ``mse`` (mean of squared differences), ``cosine`` (mean of 1 - cos),
  ``pearson`` (mean of 1 - Pearson correlation of the rows), ``cka`` (1 - linear CKA of the
  batch: widths and map sizes free).
- ``weight`` -- a number >= 0 (write exponents without '+': ``1e3``).

Maps of different sizes are average-pooled onto the coarser grid before the transform
(mdistiller's AT rule). Widths: ``sattn`` and ``cka`` are width-free; every other
transform/distance compares like entries and needs equal widths, which a *projector* on the
student's side provides (``composed_projector``): ``auto`` = one wherever the widths differ,
``always`` = one on every feature term (FitNet), ``none`` = never (a width mismatch is then an
error). A projector is FitNet's ``ConvReg`` for maps (conv, BN, ReLU onto the teacher's
shape) and a ``Linear`` for vectors (and ViT tokens); it is owned by the loss (optimised,
checkpointed, not in ``student.pt``); ``method=gpd base=composed`` builds one loss per view, each
with projectors sized for its widths. Every term is one record key ``loss_<tap>_<transform>_<distance>``.

**Points of the space** (tested equal, float64): KD = ``logits:none:kl:0.9`` with
``ce_weight=0.1``, ``composed_T=4``; FitNet = ``stage2:none:mse:100`` with
``composed_projector=always`` (``methods/fitnet.py``'s loss with the same regressor weights);
attention transfer as mdistiller's AT = ``stages:sattn:mse:1000`` (p = 2; CE weight 1).

What follows which reference: the decomposition (tap x transformation x distance x weight,
several terms summed) is Auto-KD's description -- its code was never released, so every concrete
choice here (the part lists, the grammar, the mask and pooling definitions, the projector rule)
is ours. ``sattn`` + ``mse`` follows attention transfer as mdistiller implements it exactly
(Q = mean over channels of A^p, ``F.normalize``, squared difference averaged over batch and
positions, summed over stages, weight 1000, the larger map pooled; we take |A|^p as the paper
does, the same for p = 2). The AT paper writes (beta/2) * sum_j ||Q_s/||Q_s|| - Q_t/||Q_t||||_p;
the official code (szagoruyko/attention-transfer, cifar.py) averages the squared difference as
here and multiplies the sum over groups by its ``beta``: only mdistiller's weight is tested. ``kl``
on logits follows Hinton et al. 2015 (T^2 scaling) exactly as ``kd``. The ConvReg projector and
MSE follow mdistiller's FitNet exactly as ``fitnet``. CTKD (``ctkd=true``) learns the temperature
of the ``kl`` terms (a composed loss without one is refused); DOT treats every term as
distillation.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from ..keys import opt
from ..losses import cka_distance, cosine_distance, kd_loss, mse_distance, pearson_distance
from ..losses_spatial import POOL_GRIDS, align_grids, channel_attention, multiscale_pool, position_mask, \
    spatial_attention
from ..models.hooks import PENULTIMATE, stage_paths
from ..registry import unknown_choice
from .base import Criterion, Distiller, feature_shapes
from .fitnet import ConvReg
from .spec import build_criterion, method

LOGITS, STAGES, STAGE = "logits", "stages", "stage"
TAPS = (LOGITS, PENULTIMATE, "stage<N>", STAGES)
TRANSFORMS = ("none", "sattn", "cattn", "mask", "pool")
DISTANCES = ("kl", "mse", "cosine", "pearson", "cka")
PROJECTORS = ("auto", "always", "none")
#: transforms that need a (N, C, H, W) map
MAP_TRANSFORMS = ("sattn", "cattn", "mask", "pool")
#: what compares a student and a teacher of different widths without a projector
WIDTH_FREE_TRANSFORMS, WIDTH_FREE_DISTANCES = ("sattn",), ("cka",)
PARTS = ("tap", "transform", "distance", "weight")
#: '+' separates terms only before a letter (a tap), so '1e+3' stays one weight
TERM_SEPARATOR = re.compile(r"\+(?=\s*[A-Za-z])")
DEFAULT_TERMS = "logits:none:kl:1"
DEFAULT_T, DEFAULT_P, DEFAULT_MASK_RATIO = 4.0, 2.0, 0.5


@dataclass(frozen=True)
class Term:
    tap: str
    transform: str
    distance: str
    weight: float

    @property
    def stage(self) -> Optional[int]:
        """N of ``stage<N>`` (None for the other taps)."""
        return int(self.tap[len(STAGE):]) if self.tap.startswith(STAGE) and self.tap != STAGES else None

    @property
    def reads_features(self) -> bool:
        return self.tap != LOGITS

    def __str__(self) -> str:
        return f"{self.tap}:{self.transform}:{self.distance}:{self.weight:g}"


def format_terms(terms) -> str:
    """The ``composed_terms`` text of ``terms`` (a list of :class:`Term`)."""
    return "+".join(f"{t.tap}:{t.transform}:{t.distance}:{t.weight!r}" for t in terms)


def _tap_ok(tap: str) -> bool:
    if tap in (LOGITS, PENULTIMATE, STAGES):
        return True
    n = tap[len(STAGE):]
    return tap.startswith(STAGE) and n.isdigit() and int(n) >= 1 and n == str(int(n))


def parse_terms(text: str) -> list[Term]:
    """``composed_terms`` -> terms; a bad term raises ``ValueError`` with one line naming the
    term, the bad part and the valid choices."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"composed_terms: {text!r} holds no term; write tap:transform:distance:weight, "
                         f"e.g. {DEFAULT_TERMS}")
    out = []
    for raw in TERM_SEPARATOR.split(text):
        parts = [p.strip() for p in raw.split(":")]
        where = f"composed_terms: term {raw.strip()!r}"
        if len(parts) != len(PARTS):
            raise ValueError(f"{where} has {len(parts)} part(s); a term is {':'.join(PARTS)} "
                             f"(e.g. stage2:none:mse:100), terms are joined by '+'")
        tap, transform, distance, weight = parts
        if not _tap_ok(tap):
            raise ValueError(f"{where}: " + unknown_choice("tap", tap, list(TAPS)) + " (N: a stage number from 1)")
        if transform not in TRANSFORMS:
            raise ValueError(f"{where}: " + unknown_choice("transform", transform, list(TRANSFORMS)))
        if distance not in DISTANCES:
            raise ValueError(f"{where}: " + unknown_choice("distance", distance, list(DISTANCES)))
        try:
            w = float(weight)
        except ValueError:
            w = float("nan")
        if not (w >= 0 and w != float("inf")):
            raise ValueError(f"{where}: weight {weight!r} is not a finite number >= 0")
        if tap in (LOGITS, PENULTIMATE) and transform in MAP_TRANSFORMS:
            raise ValueError(f"{where}: transform {transform} needs a feature map (N, C, H, W) and {tap} is a "
                             f"vector per example; valid transforms for {tap}: none")
        out.append(Term(tap, transform, distance, w))
    return out


# ------------------------------------------------------------------ one comparison of one term
@dataclass(frozen=True)
class Comparison:
    """Student feature ``s_name`` against teacher feature ``t_name`` (None = the logits), through
    the projector ``projector`` (a key of the loss's ``projectors``, or None)."""

    s_name: Optional[str]
    t_name: Optional[str]
    projector: Optional[str] = None


def _stage_path(model: nn.Module, n: int, who: str, term: Term) -> str:
    try:
        stages = stage_paths(model)
    except ValueError:
        stages = []
    if n > len(stages):
        raise ValueError(f"composed_terms: term '{term}': the {who} ({type(model).__name__}) has {len(stages)} "
                         f"stage(s) ({', '.join(stages) or 'none'}); valid stage taps: "
                         f"{', '.join(f'stage{i}' for i in range(1, len(stages) + 1)) or 'none'}")
    return stages[n - 1]


def _pairs(term: Term, student: nn.Module, teacher: nn.Module) -> list[tuple[Optional[str], Optional[str]]]:
    """The (student feature, teacher feature) names a term compares."""
    if term.tap == LOGITS:
        return [(None, None)]
    if term.tap == PENULTIMATE:
        return [(PENULTIMATE, PENULTIMATE)]
    if term.tap == STAGES:
        s, t = stage_paths(student), stage_paths(teacher)
        if len(s) != len(t):
            raise ValueError(f"composed_terms: term '{term}': the student ({type(student).__name__}) has {len(s)} "
                             f"stages, the teacher ({type(teacher).__name__}) {len(t)}; tap stages pairs stage j "
                             f"with stage j: use stage<N> taps instead")
        return list(zip(s, t))
    return [(_stage_path(student, term.stage, "student", term), _stage_path(teacher, term.stage, "teacher", term))]


def pair_taps(student: nn.Module, teacher: nn.Module) -> list[str]:
    """The taps valid for a teacher-student pair: ``logits``, ``penultimate``, ``stage1`` ..
    ``stageN`` for the stages both models have, and ``stages`` when they have as many (what a
    distiller search may offer for the pair)."""
    def count(model):
        try:
            return len(stage_paths(model))
        except ValueError:
            return 0

    s, t = count(student), count(teacher)
    return [LOGITS, PENULTIMATE] + [f"{STAGE}{i}" for i in range(1, min(s, t) + 1)] + ([STAGES] if s == t and s else [])


def _width(shape) -> int:
    """Channels of a map (N, C, H, W) / width of a vector (N, D) / of tokens (N, T, D)."""
    return shape[1] if len(shape) in (2, 4) else shape[-1]


def _describe(shape) -> str:
    """``map: 64 channels, 8x8`` / ``vector: width 256`` / ``tokens: 65 of width 64``."""
    if len(shape) == 4:
        return f"map: {shape[1]} channels, {shape[2]}x{shape[3]}"
    if len(shape) == 2:
        return f"vector: width {shape[1]}"
    return f"tokens: {shape[1]} of width {shape[-1]}" if len(shape) == 3 else f"shape {tuple(shape[1:])}"


def _needs_projector(term: Term, s_shape, t_shape) -> bool:
    """Whether, without a projector, the two sides cannot be compared entry by entry."""
    if term.distance in WIDTH_FREE_DISTANCES or term.transform in WIDTH_FREE_TRANSFORMS:
        return False
    if len(s_shape) == 4 and len(t_shape) == 4:
        return s_shape[1] != t_shape[1]  # grids are pooled onto the coarser one
    return tuple(s_shape[1:]) != tuple(t_shape[1:])


def _projector(term: Term, s_shape, t_shape, where: str) -> nn.Module:
    if len(s_shape) == 4 and len(t_shape) == 4:
        h_s, h_t = s_shape[2], t_shape[2]
        if h_s < h_t and 2 * h_s != h_t:
            raise ValueError(f"{where}: the student's {h_s}x{s_shape[3]} map cannot be projected onto the teacher's "
                             f"{h_t}x{t_shape[3]} (ConvReg maps larger, equal or half-size maps); use another "
                             f"stage, a width-free transform (sattn) or distance (cka)")
        return ConvReg(s_shape, t_shape)
    if len(s_shape) == len(t_shape) in (2, 3) and s_shape[1:-1] == t_shape[1:-1]:
        return nn.Linear(s_shape[-1], t_shape[-1])  # vectors, or tokens of the same count
    raise ValueError(f"{where}: no projector maps the student's features ({_describe(s_shape)}) onto the "
                     f"teacher's ({_describe(t_shape)}); use the cka distance (shape-free) or another tap")


def resolve(terms: list[Term], ctx, model: nn.Module, projector_mode: str):
    """Feature names, comparisons and projectors of ``terms`` for ``model`` (the student or a view
    of GPD's) against ``ctx.teacher``, sized from the build context's example batch. Every
    problem of the pair (a stage it lacks, a map transform on tokens, widths that differ without
    a projector, a projector that cannot exist) raises one line naming the term."""
    teacher = ctx.teacher
    pairs = [_pairs(term, model, teacher) for term in terms]
    s_names = list(dict.fromkeys(s for ps in pairs for s, _ in ps if s is not None))
    t_names = list(dict.fromkeys(t for ps in pairs for _, t in ps if t is not None))
    s_shapes = feature_shapes(ctx, model, s_names) if s_names else {}
    t_shapes = feature_shapes(ctx, teacher, t_names) if t_names else {}
    projectors, comparisons = nn.ModuleDict(), []
    for i, (term, ps) in enumerate(zip(terms, pairs)):
        where = f"composed_terms: term '{term}'"
        out = []
        for s_name, t_name in ps:
            if s_name is None:
                out.append(Comparison(None, None))
                continue
            s_shape, t_shape = tuple(s_shapes[s_name]), tuple(t_shapes[t_name])
            for who, name, shape in (("student", s_name, s_shape), ("teacher", t_name, t_shape)):
                if term.transform in MAP_TRANSFORMS and len(shape) != 4:
                    raise ValueError(f"{where}: transform {term.transform} needs a feature map (N, C, H, W), the "
                                     f"{who}'s {name} is not one ({_describe(shape)}); valid transforms there: none")
            needed = _needs_projector(term, s_shape, t_shape)
            if projector_mode == "always" or (projector_mode == "auto" and needed):
                key = f"{i}_{len(out)}"
                projectors[key] = _projector(term, s_shape, t_shape, where)
                out.append(Comparison(s_name, t_name, key))
                continue
            if needed:
                free = "a width-free transform (sattn) or distance (cka)" if len(s_shape) == len(t_shape) == 4 \
                    else "the cka distance (shape-free)"
                raise ValueError(f"{where}: the student's {s_name} ({_describe(s_shape)}) and the teacher's "
                                 f"{t_name} ({_describe(t_shape)}) do not match; {term.transform}+{term.distance} "
                                 f"compares them entry by entry: use composed_projector=auto (or always), or {free}")
            out.append(Comparison(s_name, t_name))
        comparisons.append(tuple(out))
    return tuple(s_names), tuple(t_names), comparisons, projectors


# ------------------------------------------------------------------ the loss
class ComposedLoss(Criterion):
    """``terms`` with their ``comparisons`` (one tuple per term) and owned ``projectors``."""

    def __init__(self, terms, s_names, t_names, comparisons, projectors: nn.ModuleDict,
                 temperature: float = DEFAULT_T, p: float = DEFAULT_P, mask_ratio: float = DEFAULT_MASK_RATIO,
                 mask_seed: int = 0):
        super().__init__(temperature if any(t.distance == "kl" for t in terms) else None)
        self.student_features, self.teacher_features = tuple(s_names), tuple(t_names)
        self.term_list, self.comparisons, self.projectors = list(terms), list(comparisons), projectors
        self.p, self.mask_ratio, self.mask_seed = float(p), float(mask_ratio), int(mask_seed)
        self.loss_keys = _loss_keys(self.term_list)
        #: the mask transform's draws (one generator, seeded once; its state is checkpointed)
        self.mask_rng = torch.Generator().manual_seed(self.mask_seed) if self._masks() else None

    def _masks(self) -> bool:
        return any(t.transform == "mask" for t in self.term_list)

    def get_extra_state(self):
        return {"mask_rng": self.mask_rng.get_state()} if self.mask_rng is not None else {}

    def set_extra_state(self, state) -> None:
        if self.mask_rng is not None:
            self.mask_rng.set_state(state["mask_rng"])

    def _side(self, out, name):
        return out.logits if name is None else out.features[name]

    def compare(self, term: Term, a: torch.Tensor, b: torch.Tensor, generator=None) -> torch.Tensor:
        """distance(transform(a), transform(b)) for one pair (after any projector)."""
        if a.dim() == 4 and b.dim() == 4 and a.shape[-2:] != b.shape[-2:]:
            a, b = align_grids(a, b)
        if term.transform == "sattn":
            a, b = spatial_attention(a, self.p), spatial_attention(b, self.p)
        elif term.transform == "cattn":
            a, b = channel_attention(a, self.p), channel_attention(b, self.p)
        elif term.transform == "pool":
            a, b = multiscale_pool(a, POOL_GRIDS), multiscale_pool(b, POOL_GRIDS)
        elif term.transform == "mask":
            m = position_mask(a.shape, self.mask_ratio, generator).to(device=a.device, dtype=a.dtype)
            a, b = a * m, b * m
        if term.distance == "kl":
            return kd_loss(a.flatten(1), b.flatten(1), self.temperature())
        if term.distance == "mse":
            return mse_distance(a, b)
        if term.distance == "cosine":
            return cosine_distance(a, b)
        if term.distance == "pearson":
            return pearson_distance(a, b)
        return cka_distance(a, b)

    def terms(self, s, t, y):
        generator = self.mask_rng
        out = {}
        for key, term, comps in zip(self.loss_keys, self.term_list, self.comparisons):
            total = 0.0
            for c in comps:
                a, b = self._side(s, c.s_name), self._side(t, c.t_name)
                if c.projector is not None:
                    a = self.projectors[c.projector](a)
                total = total + self.compare(term, a, b, generator)
            out[key] = term.weight * total
        return out


def _loss_keys(terms) -> list[str]:
    """``loss_<tap>_<transform>_<distance>`` per term, ``_2``, ``_3`` ... on repeats."""
    keys, seen = [], {}
    for t in terms:
        base = f"loss_{t.tap}_{t.transform}_{t.distance}"
        seen[base] = seen.get(base, 0) + 1
        keys.append(base if seen[base] == 1 else f"{base}_{seen[base]}")
    return keys


KEYS = {
    "composed_terms": opt(DEFAULT_TERMS, "composed: terms tap:transform:distance:weight joined by '+' (taps logits, "
                          "penultimate, stage<N>, stages; transforms none, sattn, cattn, mask, pool; distances kl, "
                          "mse, cosine, pearson, cka; e.g. logits:none:kl:0.9+stages:sattn:mse:1000; grammar in "
                          "workbench/methods/composed.py)"),
    "composed_T": opt(DEFAULT_T, "composed: temperature of the kl terms (learned under ctkd)", low=1e-6),
    "composed_p": opt(DEFAULT_P, "composed: exponent p of the attention maps (sattn, cattn: mean of |A|^p; AT: 2)",
                      low=1e-6),
    "composed_projector": opt("auto", "composed: a projector on the student's features (FitNet's ConvReg for maps, "
                              "Linear for vectors): auto (where widths differ), always (every feature term, FitNet), "
                              "none", PROJECTORS),
    "composed_mask_ratio": opt(DEFAULT_MASK_RATIO, "composed: share of positions the mask transform drops, each step",
                               low=0.0, high=1.0),
    "composed_mask_seed": opt(0, "composed: seed of the mask transform's generator (its state is checkpointed)", low=0),
}


def _check(cfg) -> None:
    """Grammar and the pair-free rules (the pair's stages and widths: at build, which ``prepare``
    runs early for this method)."""
    terms = parse_terms(cfg.composed_terms)
    if cfg.composed_mask_ratio >= 1.0 and any(t.transform == "mask" for t in terms):
        raise ValueError(f"composed_mask_ratio: {cfg.composed_mask_ratio} would drop every position; use a "
                         f"value in [0, 1)")
    if cfg.ctkd and not any(t.distance == "kl" for t in terms):
        raise ValueError(f"ctkd: composed_terms={cfg.composed_terms!r} has no kl term whose temperature CTKD "
                         f"could learn; add one (e.g. logits:none:kl:1) or use ctkd=false")
    if cfg.cache_teacher and any(t.reads_features for t in terms):
        raise ValueError("cache_teacher: caches the teacher's logits only, and composed_terms reads features "
                         f"({', '.join(str(t) for t in terms if t.reads_features)}); use cache_teacher=false "
                         f"or logit terms only")


def composed_criterion(ctx, model) -> ComposedLoss:
    """``model``: the network whose features the terms read (the student, or a view of GPD's)."""
    cfg = ctx.cfg
    terms = parse_terms(cfg.composed_terms)
    s_names, t_names, comparisons, projectors = resolve(terms, ctx, model, cfg.composed_projector)
    return ComposedLoss(terms, s_names, t_names, comparisons, projectors, cfg.composed_T, cfg.composed_p,
                        cfg.composed_mask_ratio, cfg.composed_mask_seed)


@method("composed", summary="Composed distiller (after Auto-KD): terms tap:transform:distance:weight summed "
        "(KD, FitNet hints, attention transfer, ... as points)", keys=KEYS, criterion=composed_criterion,
        validate=_check, early_build=True)
def build_composed(ctx):
    return Distiller(ctx.student, ctx.teacher, build_criterion("composed", ctx, ctx.student), ctx.cfg.ce_weight)
