"""Discriminability vs transferability (Cui et al., ECCV 2022), per epoch or on checkpoints.

Discriminability (source task, from the trainer's eval outputs): ``top1`` (test top-1 of the
logits), ``knn_top1`` (leave-one-out k-NN accuracy of the penultimate features kept for the
first ``probe_samples`` test examples) and ``separability`` (tr(S_B)/tr(S_W) of those features).

Transferability: top-1 of a linear classifier trained on FROZEN penultimate features of a
*different* target dataset (target train split -> target test split).

- default ``protocol="lbfgs"``: multinomial logistic regression (scikit-learn, L-BFGS) on
  standardised features (standardising is a linear map of the features, so the probe's model
  class is the paper's; it only makes L-BFGS converge fast);
- opt-in ``protocol="sgd"``: the paper's probe -- a linear layer, SGD lr 0.4 (momentum 0.9),
  cosine schedule, 30 epochs, weight decay 5e-4, batch 512, no augmentation, raw features,
  best test accuracy over epochs.
- ``bn="frozen"`` (default): strictly frozen backbone -- eval mode, BatchNorm running statistics
  untouched. ``bn="adapt"`` (the paper's code lets BN adapt to target data): BN running
  statistics are re-estimated on the target train split (one pass, cumulative average), the
  features are extracted in eval mode, and every BN buffer, momentum and train flag is restored
  afterwards.

Pairings. Offline (embedded data): source ``digits classes=(0,1,2,3,4)`` -> target ``digits
classes=(5,6,7,8,9)``, label ``"digits[5-9]"``. GPU: source CIFAR-100 -> target CIFAR-10
(CINIC-10 in the paper; not available offline), label ``"cifar10"``.

Records (``kind="probe"``; accuracies in percent, like ``top1`` of eval records)::

    {"kind": "probe", "probe": "discriminability", "role": "student", "metric": "knn_top1", "value": 93.1, "k": 5}
    {"kind": "probe", "probe": "transferability", "role": "student", "metric": "linear_top1",
     "value": 88.2, "target": "digits[5-9]", "protocol": "lbfgs", "bn": "frozen", "n_train": 450, "n_test": 441}

For a ViT both kinds also say what they read (``models.readout``): ``features_from`` (``cls_token``)
and, for the discriminability ``top1`` (from the eval logits), ``logits_from`` (e.g. ``cls+dist``).
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterable, Optional, Sequence

import numpy as np
import torch
from torch import nn

from .. import methods  # noqa: F401  (every method registers the roles it evaluates)
from ..engine.callbacks import Callback, RoleOutputs
from ..engine.roles import roles as known_roles
from ..models import readout
from ..registry import unknown_choice
from . import cache as C
from . import metrics as M
from .features import (DEFAULT_BATCH_SIZE, PENULTIMATE, ModelLike, _Inputs, _run, as_module, frozen, load_inputs,
                       select_indices)

PERCENT = 100.0
PROTOCOLS = ("lbfgs", "sgd")
BN_MODES = ("frozen", "adapt")
DEFAULT_KNN_K = 5
LBFGS_MAX_ITER = 1000
LBFGS_C = 1.0  # inverse L2 strength of the logistic-regression probe
#: the paper's linear-probe recipe
SGD_PROTOCOL = dict(lr=0.4, momentum=0.9, weight_decay=5e-4, epochs=30, batch_size=512)
DIGITS_SOURCE = dict(classes=(0, 1, 2, 3, 4))
DIGITS_TARGET = dict(classes=(5, 6, 7, 8, 9))


def _choice(kind: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(unknown_choice(kind, value, list(choices)))


# ------------------------------------------------------------------------ discriminability
def discriminability_records(outputs: dict[str, RoleOutputs], epoch: Optional[int] = None,
                             roles: Optional[Iterable[str]] = None, k: int = DEFAULT_KNN_K,
                             knn_metric: str = "cosine") -> list[dict]:
    """Source-task records for each role in ``outputs`` (or in ``roles``): ``top1`` always;
    ``knn_top1`` and ``separability`` when the role has features (>= k + 1 of them)."""
    records = []
    for role in (roles if roles is not None else outputs):
        if role not in outputs:
            continue
        o = outputs[role]
        vals = {"top1": PERCENT * M.accuracy(o.logits, o.targets)}
        if o.features is not None and len(o.features) > k:
            y = o.targets[: len(o.features)]
            vals["knn_top1"] = PERCENT * M.knn_accuracy(o.features, y, k=k, metric=knn_metric)
            vals["separability"] = M.separability_ratio(o.features, y)
        for metric, value in vals.items():
            rec = {"kind": "probe", "probe": "discriminability", "role": role, "metric": metric,
                   "value": float(value), **o.readout}
            if metric == "knn_top1":
                rec["k"] = k
            if epoch is not None:
                rec["epoch"] = epoch
            records.append(rec)
    return records


class DiscriminabilityProbe(Callback):
    """Writes :func:`discriminability_records` after each due evaluation (kNN and separability
    read penultimate features)."""

    needs_features = True

    def __init__(self, every: int = 1, roles: Optional[Sequence[str]] = None, k: int = DEFAULT_KNN_K,
                 knn_metric: str = "cosine"):
        if int(every) < 1 or int(k) < 1:
            raise ValueError(f"every and k must be >= 1, got every={every!r}, k={k!r}")
        for r in roles or ():
            _choice("role", r, known_roles())
        _choice("kNN metric", knn_metric, M.KNN_METRICS)
        self.every, self.roles, self.k, self.knn_metric = int(every), roles, int(k), knn_metric

    def on_eval_end(self, state, epoch: int, outputs: dict[str, RoleOutputs]) -> list[dict]:
        if not self.due(epoch, getattr(state, "epochs", epoch)):
            return []
        return discriminability_records(outputs, epoch, self.roles, self.k, self.knn_metric)


# ---------------------------------------------------------------------------- linear probe
def _lbfgs_probe(Xtr, ytr, Xte, yte, seed, C_reg=LBFGS_C, max_iter=LBFGS_MAX_ITER, standardize=True) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = LogisticRegression(C=C_reg, max_iter=max_iter, random_state=seed)
    model = make_pipeline(StandardScaler(), clf) if standardize else clf
    model.fit(Xtr, ytr)
    return {"linear_top1": float(np.mean(model.predict(Xte) == yte)),
            "linear_train_top1": float(np.mean(model.predict(Xtr) == ytr))}


def _sgd_probe(Xtr, ytr, Xte, yte, seed, lr, momentum, weight_decay, epochs, batch_size,
               standardize=False, device=None) -> dict:
    """The paper's protocol; returns the best test accuracy over epochs (and that epoch)."""
    dev = torch.device(device or "cpu")
    if standardize:
        mu, sd = Xtr.mean(0), Xtr.std(0) + 1e-8
        Xtr, Xte = (Xtr - mu) / sd, (Xte - mu) / sd
    Xtr_t = torch.as_tensor(Xtr, dtype=torch.float32, device=dev)
    Xte_t = torch.as_tensor(Xte, dtype=torch.float32, device=dev)
    ytr_t, yte_t = torch.as_tensor(ytr, device=dev), torch.as_tensor(yte, device=dev)
    num_classes = int(max(ytr.max(), yte.max())) + 1
    g = torch.Generator().manual_seed(seed)
    head = nn.Linear(Xtr.shape[1], num_classes).to(dev)
    with torch.no_grad():  # seeded init, independent of the global RNG
        bound = 1.0 / math.sqrt(Xtr.shape[1])
        head.weight.copy_(torch.empty_like(head.weight, device="cpu").uniform_(-bound, bound, generator=g))
        head.bias.copy_(torch.empty_like(head.bias, device="cpu").uniform_(-bound, bound, generator=g))
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    steps = max(1, math.ceil(len(Xtr) / batch_size)) * epochs
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    best, best_epoch, train_acc = -1.0, 0, math.nan
    for ep in range(1, epochs + 1):
        perm = torch.randperm(len(Xtr), generator=g).to(dev)
        for s in range(0, len(Xtr), batch_size):
            b = perm[s:s + batch_size]
            loss = nn.functional.cross_entropy(head(Xtr_t[b]), ytr_t[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        with torch.no_grad():
            acc = float((head(Xte_t).argmax(1) == yte_t).float().mean())
            if acc > best:
                best, best_epoch = acc, ep
                train_acc = float((head(Xtr_t).argmax(1) == ytr_t).float().mean())
    return {"linear_top1": best, "linear_train_top1": train_acc, "linear_best_epoch": best_epoch}


def _check_probe_options(protocol: str, options: dict) -> None:
    _choice("linear-probe protocol", protocol, PROTOCOLS)
    allowed = {"C_reg", "max_iter", "standardize"} if protocol == "lbfgs" else set(SGD_PROTOCOL) | {"standardize", "device"}
    bad = sorted(set(options) - allowed)
    if bad:
        raise ValueError(unknown_choice(f"{protocol} probe option", bad[0], sorted(allowed)))


def linear_probe(train_feats, train_y, test_feats, test_y, protocol: str = "lbfgs", seed: int = 0,
                 **options) -> dict:
    """Train a linear classifier on ``train_feats`` and score it on ``test_feats``.

    Returns fractions: ``{"linear_top1", "linear_train_top1"}`` (+ ``"linear_best_epoch"`` for
    ``sgd``). ``options``: lbfgs -> ``C_reg``, ``max_iter``, ``standardize`` (True);
    sgd -> ``lr``, ``momentum``, ``weight_decay``, ``epochs``, ``batch_size`` (defaults
    :data:`SGD_PROTOCOL`), ``standardize`` (False), ``device``."""
    _choice("linear-probe protocol", protocol, PROTOCOLS)
    Xtr, Xte = M.to_numpy(train_feats), M.to_numpy(test_feats)
    ytr, yte = M.to_numpy(train_y, None).astype(np.int64), M.to_numpy(test_y, None).astype(np.int64)
    if Xtr.ndim != 2 or Xte.ndim != 2 or Xtr.shape[1] != Xte.shape[1]:
        raise ValueError(f"feature shapes do not match: {Xtr.shape} vs {Xte.shape}")
    if len(np.unique(ytr)) < 2:
        raise ValueError("the linear probe needs at least two classes in the target train split")
    _check_probe_options(protocol, options)
    if protocol == "lbfgs":
        return _lbfgs_probe(Xtr, ytr, Xte, yte, seed, **options)
    return _sgd_probe(Xtr, ytr, Xte, yte, seed, **{**SGD_PROTOCOL, **options})


# ------------------------------------------------------------------------- BN adaptation
def _bn_modules(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@contextmanager
def adapted_bn(model: nn.Module, inputs: _Inputs, device=None):
    """Within the block, BN running statistics are re-estimated on ``inputs`` (one pass,
    cumulative average) and the model is in eval mode; on exit every BN buffer, momentum and
    train flag is restored exactly."""
    bns = _bn_modules(model)
    saved = [({k: v.clone() for k, v in m.named_buffers(recurse=False)}, m.momentum) for m in bns]
    try:
        with frozen(model, device) as dev:
            for m in bns:
                if m.track_running_stats:
                    m.reset_running_stats()
                    m.momentum = None  # cumulative moving average over the pass
                    m.train()
            with torch.no_grad():
                for x, _ in inputs.batches:
                    model(x.to(dev))
            model.eval()
            yield dev
    finally:
        for m, (bufs, mom) in zip(bns, saved):
            for k, v in bufs.items():
                getattr(m, k).copy_(v)
            m.momentum = mom


def _features(model: nn.Module, inputs: _Inputs, device) -> np.ndarray:
    feats, _ = _run(model, inputs, PENULTIMATE, device)
    return feats


# ---------------------------------------------------------------------------- transferability
class TransferabilityProbe(Callback):
    """Linear probe on frozen penultimate features of a target dataset, every ``every`` epochs.

    ``target_train``/``target_test``: map-style datasets of ``(image, label)`` (e.g.
    ``workbench.data.build("digits", "train", classes=(5,6,7,8,9), augment=False)``; see
    :func:`target_datasets`). Target images are loaded once per probe and reused every epoch.
    ``roles``: which evaluated models to probe (default the student only; each costs two feature
    passes over the target data plus one probe fit). ``max_train``/``max_test`` cap the target
    examples (seeded random subsets). Use :meth:`compute` after the fact on a model/checkpoint."""

    def __init__(self, target_train, target_test, target: str = "target", roles: Sequence[str] = ("student",),
                 every: int = 1, protocol: str = "lbfgs", bn: str = "frozen", max_train: Optional[int] = None,
                 max_test: Optional[int] = None, batch_size: int = DEFAULT_BATCH_SIZE, seed: int = 0,
                 **probe_options):
        _check_probe_options(protocol, probe_options)
        _choice("BN mode", bn, BN_MODES)
        for r in roles:
            _choice("role", r, known_roles())
        if int(every) < 1:
            raise ValueError(f"every must be >= 1, got {every!r}")
        self.target_train, self.target_test, self.target = target_train, target_test, target
        self.roles, self.every, self.protocol, self.bn = tuple(roles), int(every), protocol, bn
        self.max_train, self.max_test, self.batch_size, self.seed = max_train, max_test, batch_size, seed
        self.probe_options = probe_options
        self._inputs: Optional[tuple[_Inputs, _Inputs]] = None

    def _target_inputs(self) -> tuple[_Inputs, _Inputs]:
        if self._inputs is None:
            def load(ds, cap):
                return load_inputs(ds, select_indices(len(ds), cap, "random" if cap else "first", self.seed),
                                   self.batch_size)
            self._inputs = (load(self.target_train, self.max_train), load(self.target_test, self.max_test))
        return self._inputs

    def compute(self, model: ModelLike, role: str = "student", epoch: Optional[int] = None, device=None,
                **load_kw) -> list[dict]:
        """Records for one model (``nn.Module`` or checkpoint path + ``arch=``/``num_classes=``/
        ``in_channels=``/``loader=``). The model's weights and BN buffers are left unchanged."""
        module = as_module(model, **load_kw)
        tr, te = self._target_inputs()
        if self.bn == "adapt":
            with adapted_bn(module, tr, device) as dev:
                Xtr, Xte = _features(module, tr, dev), _features(module, te, dev)
        else:
            Xtr, Xte = _features(module, tr, device), _features(module, te, device)
        options = dict(self.probe_options)
        if self.protocol == "sgd":
            options.setdefault("device", device)  # the SGD probe trains where the model runs
        res = linear_probe(Xtr, tr.labels, Xte, te.labels, self.protocol, self.seed, **options)
        base = {"kind": "probe", "probe": "transferability", "role": role, "target": self.target,
                "protocol": self.protocol, "bn": self.bn, "n_train": len(tr.index), "n_test": len(te.index)}
        features_from = readout(module).get("features_from")
        if features_from is not None:  # a ViT: which token the penultimate features are
            base["features_from"] = features_from
        if epoch is not None:
            base["epoch"] = epoch
        out = []
        for metric, value in res.items():
            scale = 1.0 if metric == "linear_best_epoch" else PERCENT
            out.append({**base, "metric": metric, "value": float(value) * scale})
        return out

    def on_eval_end(self, state, epoch: int, outputs: dict[str, RoleOutputs]) -> list[dict]:
        if not self.due(epoch, getattr(state, "epochs", epoch)):
            return []
        models = state.eval_models()
        device = getattr(state, "device", None)
        records = []
        for role in self.roles:
            if role in models:
                records += self.compute(models[role], role, epoch, device)
        return records


def target_datasets(name: str = "digits", holdout=None, **options):
    """``(train, test)`` target splits without augmentation via :func:`workbench.data.build`;
    ``holdout=(per_class, seed)``: the target's training split minus a validation split, and that
    validation split instead of its test split (:func:`workbench.data.splits`)."""
    from .. import data

    options.setdefault("augment", False)
    if holdout is not None:
        return data.splits(name, options, holdout[0], holdout[1], eval_on="val")
    return data.build(name, "train", **options), data.build(name, "test", **options)


def target_label(name: str, classes: Optional[Sequence[int]] = None) -> str:
    """Record label of a target: ``"digits[5-9]"`` for contiguous classes, ``"digits[1,3]"`` else."""
    if not classes:
        return name
    c = list(classes)
    if c == list(range(c[0], c[0] + len(c))) and len(c) > 1:
        return f"{name}[{c[0]}-{c[-1]}]"
    return f"{name}[{','.join(map(str, c))}]"


def checkpoint_curve(checkpoints: dict, source_test, probe: Optional[TransferabilityProbe] = None,
                     role: str = "student", probe_samples: int = 500, k: int = DEFAULT_KNN_K,
                     batch_size: int = DEFAULT_BATCH_SIZE, device=None, cache_dir: C.CacheDir = None,
                     **load_kw) -> list[dict]:
    """After the fact, the paper's curve: for ``{epoch: model or checkpoint path}``,
    discriminability on ``source_test`` and (if ``probe``) transferability, as records."""
    from .features import collect_outputs

    records = []
    for epoch, ckpt in checkpoints.items():
        outs = collect_outputs({role: ckpt}, source_test, probe_samples, batch_size, device, cache_dir, **load_kw)
        records += discriminability_records(outs, epoch, k=k)
        if probe is not None:
            records += probe.compute(ckpt, role, epoch, device, **load_kw)
    return records
