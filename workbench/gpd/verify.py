"""Module-by-module check that a widened model is the student, replicated.

Both models run ``example_input`` in eval mode; every module's input and output is recorded (in
call order, as seen from outside the module: before its pre-hooks, after its hooks) and each
wide tensor must equal the student tensor copied along its widened dims (with the plan's map for
planned layers, e.g. the segmented ``qkv``; the plain map otherwise) and, in the reference
convention, divided by the copy count (q and k of ``qkv`` stay full-scale).
The first mismatch names the culprit: an *input* mismatch means parameter-free code before that
module (concat, channel shuffle, split, ...) broke the channel layout; an *output* mismatch
means the module's own forward did. This guards every architecture, including ones nobody
listed, against a silently non-equivalent T_d.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .channels import ChannelMap, wide_width
from .plan import QK_SEGMENTS, SEGMENTED_LINEARS, UnsupportedLayerError, WideningPlan, unsupported

#: a structural error moves values by O(1); float32 reordering by ~1e-6 relative
VERIFY_RTOL = 1e-3


@dataclass
class _Event:
    path: str
    kind: str  # "in" | "out"
    tensors: list
    enclosing: str  # innermost module whose forward was running when the event happened


def _tensors(obj) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj.detach().clone()]
    if isinstance(obj, (tuple, list)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []


def _record(model: nn.Module, x: torch.Tensor) -> tuple[list[_Event], BaseException | None]:
    events: list[_Event] = []
    stack: list[str] = []
    handles = []
    for path, m in model.named_modules():
        def pre(_m, args, kwargs, _p=path):
            events.append(_Event(_p, "in", _tensors((args, kwargs)), stack[-1] if stack else ""))
            stack.append(_p)

        def post(_m, _args, _kwargs, out, _p=path):
            stack.pop()
            events.append(_Event(_p, "out", _tensors(out), stack[-1] if stack else ""))

        # prepended pre-hook / appended hook: what the module's callers see, around IR's hooks
        handles.append(m.register_forward_pre_hook(pre, with_kwargs=True, prepend=True))
        handles.append(m.register_forward_hook(post, with_kwargs=True))
    error = None
    try:
        with torch.no_grad():
            model(x)
    except Exception as exc:  # noqa: BLE001 -- reported with the module that was running
        error = exc
        events.append(_Event(stack[-1] if stack else "", "error", [], stack[-2] if len(stack) > 1 else ""))
    finally:
        for h in handles:
            h.remove()
    return events, error


def _expected(student: torch.Tensor, wide_shape, plan: WideningPlan, layer_map: ChannelMap | None, layer_dim: int,
              full_scale_segments: tuple[int, ...] = ()):
    """The student tensor replicated to ``wide_shape`` and, in the reference convention, divided
    by the copy counts (except the listed segments); None when no replication explains it."""
    if student.ndim != len(wide_shape):
        return None
    out = student
    for d, (s, w) in enumerate(zip(student.shape, wide_shape)):
        if s == w:
            continue
        use_layer = layer_map is not None and d == layer_dim % student.ndim and layer_map.wide_size == w
        cmap = layer_map if use_layer else ChannelMap(s, wide_width(s, plan.ratio))
        if cmap.student_size != s or cmap.wide_size != w:
            return None
        out = out.index_select(d, cmap.source_index())
        if plan.divides_outputs:
            counts = cmap.wide_counts().to(out.dtype).reshape(cmap.segments, cmap.wide)
            if cmap.segments > 1:
                counts[[i for i in full_scale_segments if i < cmap.segments]] = 1.0
            shape = [1] * out.ndim
            shape[d] = -1
            out = out / counts.reshape(shape)
    return out


def verify_widening(student: nn.Module, wide: nn.Module, plan: WideningPlan, x: torch.Tensor) -> float:
    """Raise ``UnsupportedLayerError`` at the first module whose wide input/output is not the
    replicated student one; return the max relative error of the logits otherwise."""
    s_events, s_err = _record(student, x)
    if s_err is not None:
        raise ValueError(f"the student failed on the example input {tuple(x.shape)}: {s_err}; "
                         f"pass example_input= shaped like real inputs") from s_err
    w_events, w_err = _record(wide, x)
    modules = dict(wide.named_modules())
    for s_ev, w_ev in zip(s_events, w_events):
        where = modules.get(w_ev.path)
        if w_ev.kind == "error":
            raise unsupported(w_ev.path, where, f"the widened model fails here ({w_err}); this layer or the code "
                              f"around it depends on the width in a way replication cannot follow") from w_err
        if (s_ev.path, s_ev.kind) != (w_ev.path, w_ev.kind) or len(s_ev.tensors) != len(w_ev.tensors):
            raise unsupported(w_ev.path, where, "the widened model takes a different path through its modules "
                              "(control flow depends on the width)")
        lp = plan.layers.get(s_ev.path) if s_ev.kind == "out" else None
        qk = QK_SEGMENTS if lp and s_ev.path.rpartition(".")[2] in SEGMENTED_LINEARS else ()
        for s_t, w_t in zip(s_ev.tensors, w_ev.tensors):
            exp = _expected(s_t, w_t.shape, plan, lp.out_map if lp else None, lp.out_dim if lp else 1, qk)
            if exp is None or not _close(exp, w_t):
                raise _mismatch(s_ev, w_ev, modules)
    if len(s_events) != len(w_events):
        raise unsupported("", wide, "the widened model calls a different number of modules")
    rel = _rel_err(s_events[-1].tensors[0], w_events[-1].tensors[0])
    return rel


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape:
        return False
    if not a.is_floating_point():
        return bool(torch.equal(a, b))
    return _rel_err(a, b) <= VERIFY_RTOL


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        return float("inf")
    if a.numel() == 0:
        return 0.0
    scale = a.abs().max().clamp_min(torch.finfo(a.dtype).tiny)
    return float((a - b).abs().max() / scale)


def _mismatch(s_ev: _Event, w_ev: _Event, modules) -> UnsupportedLayerError:
    where = modules.get(w_ev.path)
    if w_ev.kind == "in":
        parent = w_ev.enclosing
        return unsupported(
            w_ev.path, where,
            f"its input is not a channel-replicated copy of the student's; the code of "
            f"{parent or '<root>'!r} ({type(modules.get(parent)).__name__}) that feeds it rearranges "
            f"channels (concat, split, channel shuffle, ...), which widening by replication cannot follow",
        )
    return unsupported(w_ev.path, where, "its widened output is not a channel-replicated copy of the student's "
                       "(a concat, split, channel shuffle or width-dependent op inside it?)")
