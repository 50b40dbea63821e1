"""Disk cache for probe arrays (features, embeddings): content-addressed ``.npz`` files.

Keys are SHA-1 digests of a JSON description of everything the result depends on
(checkpoint fingerprint or model-weights hash, input-data hash, layer, parameters, seed), so a
changed input can never return a stale result. Writes are atomic (temporary file in the
same directory, then ``os.replace``), so a crash or a parallel writer never leaves a torn file;
two processes computing the same key write the same bytes and the last rename wins.

``cache_dir`` convention shared by the probes: a path = use that directory; ``None`` = the
default (``<run_dir>/cache`` when a run directory is known, else ``.cache/workbench`` under the
current directory); ``False`` = no caching.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Optional, Union

import numpy as np

DEFAULT_CACHE_DIR = Path(".cache") / "workbench"
CacheDir = Union[str, os.PathLike, None, bool]


def resolve_cache_dir(cache_dir: CacheDir, run_dir: Optional[Union[str, os.PathLike]] = None) -> Optional[Path]:
    """Apply the convention above; returns None when caching is off."""
    if cache_dir is False:
        return None
    if cache_dir is None or cache_dir is True:
        return Path(run_dir) / "cache" if run_dir is not None else DEFAULT_CACHE_DIR
    return Path(cache_dir)


def hash_update_array(h, a) -> None:
    """Feed dtype, shape and the raw bytes of an array/tensor into hash ``h``."""
    if hasattr(a, "detach"):
        a = a.detach().cpu()
        if a.dtype.is_floating_point and a.element_size() == 2:
            a = a.float()  # numpy cannot hold bfloat16
        a = a.numpy()
    a = np.ascontiguousarray(a)
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())


def hash_arrays(*arrays) -> str:
    h = hashlib.sha1()
    for a in arrays:
        hash_update_array(h, a)
    return h.hexdigest()


def module_fingerprint(module) -> str:
    """Hash of a module's class name and full state dict (parameters and buffers)."""
    h = hashlib.sha1(type(module).__name__.encode())
    for name, t in module.state_dict().items():
        h.update(name.encode())
        hash_update_array(h, t)
    return h.hexdigest()


def file_fingerprint(path: Union[str, os.PathLike]) -> str:
    """``absolute path : size : mtime_ns`` of a checkpoint (cheap; changes when it is rewritten)."""
    p = Path(path).resolve()
    st = p.stat()
    return f"{p}:{st.st_size}:{st.st_mtime_ns}"


def make_key(**parts) -> str:
    """Stable key from JSON-able parts (dict order does not matter)."""
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _path(cache_dir: Path, kind: str, key: str) -> Path:
    return Path(cache_dir) / kind / f"{key}.npz"


def load(cache_dir: Optional[Path], kind: str, key: str) -> Optional[dict]:
    """The arrays stored under ``key`` or None (no cache, missing or unreadable file)."""
    if cache_dir is None:
        return None
    p = _path(cache_dir, kind, key)
    if not p.exists():
        return None
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError):  # torn/foreign file: recompute and overwrite
        return None


def save(cache_dir: Optional[Path], kind: str, key: str, **arrays) -> Optional[Path]:
    """Atomically write ``arrays`` under ``key``; no-op when caching is off."""
    if cache_dir is None:
        return None
    p = _path(cache_dir, kind, key)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{key}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return p
