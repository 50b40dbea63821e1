"""Frozen feature extraction for probes: one model, a checkpoint path, or several at once.

Guarantees
- The model runs in eval mode under ``torch.no_grad``; BatchNorm statistics and weights are
  never changed, and the model's train/eval flags and device are restored afterwards.
- ``layer="penultimate"`` is the classifier's input ``(N, D)``; any other name is a module path
  (``"layer2"``, ``"layer3.0.bn2"``) whose output is pooled to ``(N, C)``: global average over
  the spatial axes of a ``(N, C, H, W)`` map, mean over tokens of a ``(N, T, C)`` sequence.
- Examples are the first ``max_samples`` of the dataset (the same ones the trainer keeps as
  ``probe_samples``), or a seeded random subset (``sample="random"``), or explicit ``indices``.
- Results are cached on disk (see :mod:`workbench.probes.cache`) under a key made of the
  model fingerprint (checkpoint path + size + mtime, or a hash of an in-memory model's state
  dict), a hash of the exact input tensors, the layer and the batch-independent options.

Layers are tapped with :class:`workbench.models.hooks.FeatureTap` (unknown layer names raise a
ValueError listing the valid module paths).
"""
from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from ..engine.callbacks import RoleOutputs
from ..models.hooks import PENULTIMATE, FeatureTap
from ..registry import unknown_choice
from . import cache as C

SAMPLING = ("first", "random")
DEFAULT_BATCH_SIZE = 256
ModelLike = Union[nn.Module, str, os.PathLike]


@dataclass
class FeatureSet:
    """Plain arrays for one model on one set of examples (rows aligned across arrays)."""

    features: np.ndarray  # (N, D) float32
    labels: np.ndarray  # (N,) int64
    logits: np.ndarray  # (N, K) float32
    index: np.ndarray  # (N,) positions in the dataset

    @property
    def predictions(self) -> np.ndarray:
        return self.logits.argmax(axis=1)

    def __len__(self) -> int:
        return len(self.labels)


# --------------------------------------------------------------------------- layer taps
def _pool(t: torch.Tensor) -> torch.Tensor:
    if t.dim() == 4:
        return t.mean(dim=(2, 3))
    if t.dim() == 3:
        return t.mean(dim=1)
    return t.flatten(1)


@torch.no_grad()
def forward_features(model: nn.Module, x: torch.Tensor, layer: str = PENULTIMATE):
    """``(logits, pooled features)`` of one batch; the caller sets eval mode and device."""
    with FeatureTap(model, [layer]) as tap:
        logits = model(x)
    return logits, _pool(tap[layer])


@contextmanager
def frozen(model: nn.Module, device: Optional[Union[str, torch.device]] = None):
    """Eval mode (and ``device`` if given) for the duration; flags and device restored."""
    flags = {m: m.training for m in model.modules()}
    p = next(iter(model.parameters()), None)
    home = p.device if p is not None else torch.device("cpu")
    target = torch.device(device) if device is not None else home
    model.eval()
    if target != home:
        model.to(target)
    try:
        yield target
    finally:
        if target != home:
            model.to(home)
        for m, flag in flags.items():
            m.training = flag


# ------------------------------------------------------------------------------- inputs
@dataclass
class _Inputs:
    batches: list  # list of (x, y) tensors
    index: np.ndarray
    digest: str

    @property
    def labels(self) -> np.ndarray:
        return torch.cat([y for _, y in self.batches]).numpy().astype(np.int64)


def select_indices(n: int, max_samples: Optional[int] = None, sample: str = "first", seed: int = 0) -> np.ndarray:
    """The first ``max_samples`` of ``range(n)``, or a sorted seeded random subset."""
    if sample not in SAMPLING:
        raise ValueError(unknown_choice("sampling", sample, list(SAMPLING)))
    m = n if max_samples is None else min(int(max_samples), n)
    if m < 0:
        raise ValueError(f"max_samples must be >= 0, got {max_samples!r}")
    if sample == "first" or m == n:
        return np.arange(m)
    return np.sort(np.random.default_rng(seed).choice(n, size=m, replace=False))


def load_inputs(dataset, indices: Sequence[int], batch_size: int = DEFAULT_BATCH_SIZE) -> _Inputs:
    """Materialise ``dataset[i]`` for ``indices`` in batches and hash them (for cache keys)."""
    h = hashlib.sha1()
    batches = []
    idx = np.asarray(indices, dtype=np.int64)
    for s in range(0, len(idx), batch_size):
        items = [dataset[int(i)] for i in idx[s:s + batch_size]]
        x = torch.stack([torch.as_tensor(it[0]) for it in items])
        y = torch.as_tensor([int(it[1]) for it in items], dtype=torch.int64)
        C.hash_update_array(h, x)
        C.hash_update_array(h, y)
        batches.append((x, y))
    return _Inputs(batches, idx, h.hexdigest())


# ------------------------------------------------------------------------------- models
def load_model(path: Union[str, os.PathLike], arch: Optional[str] = None, num_classes: Optional[int] = None,
               in_channels: int = 3, loader: Optional[Callable] = None) -> nn.Module:
    """A model from a checkpoint: ``loader(path)`` if given, else ``workbench.models.load``."""
    if loader is not None:
        return loader(path)
    if arch is None or num_classes is None:
        raise ValueError(f"checkpoint {str(path)!r}: pass arch= and num_classes= (or loader=) to load it")
    from ..models import load

    return load(arch, path, num_classes, in_channels=in_channels)


def fingerprint(model_or_ckpt: ModelLike) -> str:
    """Cache identity of a model: file path + size + mtime for checkpoints (no loading), a hash
    of the state dict for in-memory modules."""
    if isinstance(model_or_ckpt, nn.Module):
        return "module:" + C.module_fingerprint(model_or_ckpt)
    if isinstance(model_or_ckpt, (str, os.PathLike)):
        path = Path(model_or_ckpt)
        if not path.exists():
            raise FileNotFoundError(f"no checkpoint at {path}")
        return "file:" + C.file_fingerprint(path)
    raise ValueError(f"expected an nn.Module or a checkpoint path, got {type(model_or_ckpt).__name__}")


def as_module(model_or_ckpt: ModelLike, **load_kw) -> nn.Module:
    """The module itself, or the model loaded from a checkpoint path (see :func:`load_model`)."""
    if isinstance(model_or_ckpt, nn.Module):
        return model_or_ckpt
    fingerprint(model_or_ckpt)  # validates the type and that the file exists
    return load_model(model_or_ckpt, **load_kw)


def _run(model: nn.Module, inputs: _Inputs, layer: str, device) -> tuple[np.ndarray, np.ndarray]:
    feats, logits = [], []
    with frozen(model, device) as dev:
        for x, _ in inputs.batches:
            z, f = forward_features(model, x.to(dev), layer)
            logits.append(z.float().cpu())
            feats.append(f.float().cpu())
    return torch.cat(feats).numpy(), torch.cat(logits).numpy()


def _extract_one(model_or_ckpt, inputs: _Inputs, layer, device, cache_dir, load_kw) -> FeatureSet:
    key = C.make_key(model=fingerprint(model_or_ckpt), data=inputs.digest, layer=layer)
    hit = C.load(cache_dir, "features", key)
    if hit is not None:  # a checkpoint is not even loaded on a hit
        return FeatureSet(hit["features"], hit["labels"], hit["logits"], hit["index"])
    feats, logits = _run(as_module(model_or_ckpt, **load_kw), inputs, layer, device)
    out = FeatureSet(feats, inputs.labels, logits, inputs.index)
    C.save(cache_dir, "features", key, features=out.features, labels=out.labels, logits=out.logits,
           index=out.index)
    return out


def extract_many(models: dict[str, ModelLike], dataset, layer: str = PENULTIMATE,
                 max_samples: Optional[int] = None, batch_size: int = DEFAULT_BATCH_SIZE,
                 device=None, cache_dir: C.CacheDir = None, sample: str = "first", seed: int = 0,
                 indices: Optional[Iterable[int]] = None, arch: Optional[str] = None,
                 num_classes: Optional[int] = None, in_channels: int = 3,
                 loader: Optional[Callable] = None) -> dict[str, FeatureSet]:
    """:func:`extract_features` for several models on the SAME examples (inputs loaded once)."""
    if indices is None:
        indices = select_indices(len(dataset), max_samples, sample, seed)
    inputs = load_inputs(dataset, list(indices), batch_size)
    cache_dir = C.resolve_cache_dir(cache_dir)
    load_kw = dict(arch=arch, num_classes=num_classes, in_channels=in_channels, loader=loader)
    return {name: _extract_one(m, inputs, layer, device, cache_dir, load_kw) for name, m in models.items()}


def extract_features(model_or_ckpt: ModelLike, dataset, layer: str = PENULTIMATE,
                     max_samples: Optional[int] = None, batch_size: int = DEFAULT_BATCH_SIZE,
                     device=None, cache_dir: C.CacheDir = None, **kw) -> FeatureSet:
    """Frozen features (and logits) of ``model_or_ckpt`` on ``dataset``.

    ``model_or_ckpt``: an ``nn.Module`` or a checkpoint path (then ``arch=``, ``num_classes=``,
    ``in_channels=`` or ``loader=``). ``cache_dir``: ``None`` (default:
    ``.cache/workbench``), a path, or ``False`` (no cache). Other keywords as in :func:`extract_many`."""
    return extract_many({"_": model_or_ckpt}, dataset, layer, max_samples, batch_size, device,
                        cache_dir, **kw)["_"]


def collect_outputs(models: dict[str, ModelLike], dataset, probe_samples: Optional[int] = None,
                    batch_size: int = DEFAULT_BATCH_SIZE, device=None, cache_dir: C.CacheDir = None,
                    **kw) -> dict[str, RoleOutputs]:
    """What the trainer hands to ``on_eval_end``, computed after the fact (e.g. on checkpoints):
    ``{role: RoleOutputs(logits of all examples, targets, penultimate features of the first
    probe_samples examples)}``. Feed it to :func:`workbench.probes.gap.gap_records`."""
    sets = extract_many(models, dataset, PENULTIMATE, None, batch_size, device, cache_dir, **kw)
    m = len(dataset) if probe_samples is None else int(probe_samples)
    return {role: RoleOutputs(torch.from_numpy(fs.logits), torch.from_numpy(fs.labels),
                              torch.from_numpy(fs.features[:m]) if m > 0 else None)
            for role, fs in sets.items()}
