"""Helpers of teaching.ipynb: the equality measure of the surgery demo and a per-layer view of
what inverse reparameterization built."""
from __future__ import annotations

from .tables import Table

EQUAL_LOGITS = 1e-5  # the spec's "equal logits": max |a - b| / max |a| in float32


def max_logit_diff(a, b, x) -> float:
    """``max |a(x) - b(x)| / max |a(x)|`` in eval mode (the spec's equality measure; <= 1e-5
    means "equal logits")."""
    import torch

    with torch.no_grad():
        za, zb = a(x), b(x)
    return float((za - zb).abs().max() / za.abs().max().clamp_min(1e-12))


def surgery_table(dt, student) -> Table:
    """One row per widened layer of T_d: student vs T_d shape and the number of conv branches."""
    from ..gpd import MultiBranchConv2d

    rows = []
    s_mods = dict(student.named_modules())
    for path, m in dt.wide.named_modules():
        w = getattr(m, "weight", None)
        if w is None or not hasattr(w, "shape") or path not in s_mods or not hasattr(s_mods[path], "weight"):
            continue
        n_branches = len(m.branches) if isinstance(m, MultiBranchConv2d) else 0
        rows.append((path, type(s_mods[path]).__name__, tuple(s_mods[path].weight.shape), tuple(w.shape), n_branches))
    return Table(["layer", "type", "student weight", "T_d weight", "extra branches"], rows,
                 title=f"IR: ratio {dt.plan.ratio}, {len(dt.branched_paths)} multi-branch convs")


def param_count(model) -> int:
    return sum(p.numel() for p in model.parameters())
