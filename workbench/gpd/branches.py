"""Multi-branch convolutions (structural reparameterisation, OREPA-style) for GPD.

A ``MultiBranchConv2d`` is a kxk conv whose kernel is the per-output-channel scaled sum of the
original kernel and extra *branches*; every branch is linear in its input and bias-free, so its
composite map is exactly a kxk conv with zero padding, and the forward FOLDS all branches into
one kernel and runs a single conv. ``Branch.explicit(x, conv)`` runs a branch as its own op
sequence (the definition; tests check the fold against it).

The fold is a pure function of the branch tensors (``MultiBranchConv2d.fold(get, ...)`` reads
every tensor through ``get(name)``), so the same code folds T_d's wide tensors and the student
block sliced out of them (CBR: slice first, then fold -- the reference order).

Branch kinds (``BRANCH_KINDS``; ``G`` = groups, 1 or depthwise):
- ``"1x1_avg"``: 1x1 conv then kxk average pool (``count_include_pad=True``);
- ``"prior"``: 1x1 conv weights times a fixed per-output-channel cosine (DCT-like) kxk pattern;
- ``"1x1_kxk"``: 1x1 conv (identity + learnable delta, delta starts at 0) then kxk conv; its
  internal width equals the input width;
- ``"kxk"``: a second kxk kernel;
- ``"dws"``: kxk depthwise conv with ``DWS_EXPANSION`` filters per input channel, then 1x1;
- ``"1x1"``: 1x1 conv (the centre tap); ``"kx1"`` / ``"1xk"``: asymmetric convs (ACNet) --
  our extensions, not in the reference code.

``DEFAULT_BRANCHES`` are the five extra branches of the official GPD code (OREPA's origin + 5 = its
"6 branches"): avg, prior, 1x1-kxk, a second kxk (the official code declares its "1x1" branch
with a 3x3 kernel) and the depthwise-separable branch. Depthwise convs get the depthwise analogue
of each kind (every kernel is grouped the same way as the conv), as in the official code.

Scales (``SCALE_INITS``): ``"reference"`` = the official code's vector for distillation and
from-scratch runs (``REFERENCE_SCALES``: origin 0.25, avg 0.25, prior 0, 1x1-kxk 0.5, kxk 0.05,
dws 0.5; our extra kinds get ``REFERENCE_SCALE_OTHER``); ``"one_zero"`` = origin 1, extras 0
(the official code's init when fine-tuning a pre-trained student: the function is unchanged).
With ``bias=True`` the conv gets a learnable bias initialised to zero (or to the conv's own
bias), as every branched conv of the reference code has.

Every tensor declares how IR widens it (``TENSOR_DIMS``: per dim, which channel map it follows
-- ``"out"``, ``"in"`` or ``"rows"`` (the dws branch's in*8 rows) -- and whether it is an output
or input dim of the channel-mixing stage it belongs to); the plan turns that into divisions.
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from workbench.registry import Registry, unknown_choice

#: filters per input channel in the depthwise stage of the "dws" branch (official code: 8)
DWS_EXPANSION = 8
ORIGIN = "origin"
DEFAULT_BRANCHES = ("1x1_avg", "prior", "1x1_kxk", "kxk", "dws")
REFERENCE_SCALES = {ORIGIN: 0.25, "1x1_avg": 0.25, "prior": 0.0, "1x1_kxk": 0.5, "kxk": 0.05, "dws": 0.5}
REFERENCE_SCALE_OTHER = 0.05
SCALE_INITS = ("reference", "one_zero")
#: kaiming-uniform slope used for random extra-branch weights (official code: a=0)
KAIMING_A = 0.0

Getter = Callable[[str], torch.Tensor]
#: per-dim widening spec of a tensor: (dim, channel map key, side); side "out"/"in" is the
#: dim's role in the channel-mixing stage it belongs to, "none" for per-channel stages
DimSpec = tuple[int, str, str]

BRANCHES = Registry("branch kind")


def _kaiming(shape) -> nn.Parameter:
    w = torch.empty(shape)
    nn.init.kaiming_uniform_(w, a=KAIMING_A)
    return nn.Parameter(w)


class Branch(nn.Module):
    """One extra branch of a ``groups``-grouped ``in_ch -> out_ch`` kxk conv. Subclasses define
    ``kernel(get, in_ch, out_ch, k, groups)`` (the unscaled composite kxk kernel, shape
    (out, in/groups, k, k), from the tensors ``get`` returns) and ``explicit(x, conv)`` (the
    same map run as separate ops, unscaled), and declare their tensors' dims in ``DIMS``."""

    kind = ""
    DIMS: dict[str, tuple[DimSpec, ...]] = {}

    def __init__(self, in_ch: int, out_ch: int, k: int, groups: int):
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(out_ch))

    def kernel(self, get: Getter, in_ch: int, out_ch: int, k: int, groups: int) -> torch.Tensor:
        raise NotImplementedError

    def explicit(self, x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return self.kind


#: the dims of a plain conv weight (out, in/groups, kh, kw); map keys: "out"/"in" the output /
#: input channels, "in_g" the input channels per group (not widened for a depthwise conv),
#: "rows"/"rows_g" the dws branch's in*8 rows (all / per group)
CONV_DIMS = ((0, "out", "out"), (1, "in_g", "in"))


def _conv(x, w, conv, padding=None):
    return F.conv2d(x, w, None, conv.stride, conv.padding if padding is None else padding, conv.dilation, conv.groups)


@BRANCHES.register("kxk")
class KxKBranch(Branch):
    kind = "kxk"
    DIMS = {"weight": CONV_DIMS}

    def __init__(self, in_ch, out_ch, k, groups):
        super().__init__(in_ch, out_ch, k, groups)
        self.weight = _kaiming((out_ch, in_ch // groups, k, k))

    def kernel(self, get, in_ch, out_ch, k, groups):
        return get("weight")

    def explicit(self, x, conv):
        return _conv(x, self.weight, conv)


class _PaddedBranch(Branch):
    """A (kh, kw) kernel centred in the kxk window (1x1, kx1, 1xk)."""

    kh_kw = (1, 1)
    DIMS = {"weight": CONV_DIMS}

    def __init__(self, in_ch, out_ch, k, groups):
        super().__init__(in_ch, out_ch, k, groups)
        kh, kw = (k if s == "k" else 1 for s in self.kh_kw)
        self.weight = _kaiming((out_ch, in_ch // groups, kh, kw))

    def kernel(self, get, in_ch, out_ch, k, groups):
        w = get("weight")
        kh, kw = w.shape[-2:]
        ph, pw = (k - kh) // 2, (k - kw) // 2
        return F.pad(w, [pw, pw, ph, ph])

    def explicit(self, x, conv):
        kh, kw = self.weight.shape[-2:]
        k = conv.kernel_size[0]
        pad = (conv.padding[0] - (k - kh) // 2, conv.padding[1] - (k - kw) // 2)
        return _conv(x, self.weight, conv, padding=pad)


@BRANCHES.register("1x1")
class OneByOneBranch(_PaddedBranch):
    kind, kh_kw = "1x1", ("1", "1")


@BRANCHES.register("kx1")
class KxOneBranch(_PaddedBranch):
    kind, kh_kw = "kx1", ("k", "1")


@BRANCHES.register("1xk")
class OneByKBranch(_PaddedBranch):
    kind, kh_kw = "1xk", ("1", "k")


@BRANCHES.register("1x1_avg")
class AvgBranch(Branch):
    """1x1 conv then kxk average pooling (zero padding counted), i.e. the 1x1 weight spread
    uniformly over the kxk window."""

    kind = "1x1_avg"
    DIMS = {"weight": CONV_DIMS}

    def __init__(self, in_ch, out_ch, k, groups):
        super().__init__(in_ch, out_ch, k, groups)
        self.weight = _kaiming((out_ch, in_ch // groups, 1, 1))

    def kernel(self, get, in_ch, out_ch, k, groups):
        return get("weight").expand(-1, -1, k, k) / (k * k)

    def explicit(self, x, conv):
        y = F.conv2d(x, self.weight, None, 1, 0, 1, conv.groups)
        k = conv.kernel_size[0]
        return F.avg_pool2d(y, k, conv.stride, conv.padding, count_include_pad=True)


def cosine_prior(out_ch: int, k: int) -> torch.Tensor:
    """Fixed (out_ch, k, k) patterns: the first half of the channels vary along rows with
    frequency (o + 1) / k, the second half along columns (OREPA's frequency prior). Returned in
    float64; the conv that owns the branch casts it to its own dtype (a float64 model keeps the
    exact pattern)."""
    half = out_ch / 2
    pos = (torch.arange(k, dtype=torch.float64) + 0.5) * math.pi / k
    rows = []
    for o in range(out_ch):
        freq = o + 1 if o < half else o + 1 - half
        wave = torch.cos(pos * freq)
        rows.append(wave[:, None].expand(k, k) if o < half else wave[None, :].expand(k, k))
    return torch.stack(rows)


@BRANCHES.register("prior")
class PriorBranch(Branch):
    """1x1 weights times a fixed per-output-channel pattern. The pattern is a buffer that IR
    replicates with the output channels (as the reference does), so a wide channel carries the
    pattern of the student channel it copies."""

    kind = "prior"
    DIMS = {"weight": CONV_DIMS, "prior": ((0, "out", "none"),)}

    def __init__(self, in_ch, out_ch, k, groups):
        super().__init__(in_ch, out_ch, k, groups)
        self.weight = _kaiming((out_ch, in_ch // groups, 1, 1))
        self.register_buffer("prior", cosine_prior(out_ch, k))

    def kernel(self, get, in_ch, out_ch, k, groups):
        return get("weight") * get("prior")[:, None]

    def explicit(self, x, conv):
        return _conv(x, self.weight * self.prior[:, None], conv)


def _grouped_identity(ch: int, groups: int) -> torch.Tensor:
    per = ch // groups
    eye = torch.zeros(ch, per, 1, 1)
    eye[torch.arange(ch), torch.arange(ch) % per] = 1.0
    return eye


@BRANCHES.register("1x1_kxk")
class OneByOneKxKBranch(Branch):
    """1x1 conv (in -> in, weight = ``identity`` + learnable ``delta``, delta starts at 0) then
    kxk. ``identity`` is a buffer that IR widens like ``delta`` (the reference widens its
    id_tensor the same way), so the wide first stage is the widened student stage."""

    kind = "1x1_kxk"
    MID = ((0, "in", "out"), (1, "in_g", "in"))  # internal width == input width
    DIMS = {"delta": MID, "identity": MID, "weight": CONV_DIMS}

    def __init__(self, in_ch, out_ch, k, groups):
        super().__init__(in_ch, out_ch, k, groups)
        self.delta = nn.Parameter(torch.zeros(in_ch, in_ch // groups, 1, 1))
        self.register_buffer("identity", _grouped_identity(in_ch, groups))
        self.weight = _kaiming((out_ch, in_ch // groups, k, k))

    def kernel(self, get, in_ch, out_ch, k, groups):
        g = groups
        first = (get("identity") + get("delta")).reshape(g, in_ch // g, in_ch // g)  # g,t,i
        second = get("weight").reshape(g, out_ch // g, in_ch // g, k, k)  # g,o,t
        return torch.einsum("gti,gothw->goihw", first, second).reshape(out_ch, in_ch // g, k, k)

    def explicit(self, x, conv):
        y = F.conv2d(x, self.identity + self.delta, None, 1, 0, 1, conv.groups)
        return _conv(y, self.weight, conv)


@BRANCHES.register("dws")
class DepthwiseSeparableBranch(Branch):
    """kxk depthwise conv (``DWS_EXPANSION`` filters per input channel) then a 1x1 conv."""

    kind = "dws"
    DIMS = {"depthwise": ((0, "rows", "none"),), "pointwise": ((0, "out", "out"), (1, "rows_g", "in"))}

    def __init__(self, in_ch, out_ch, k, groups):
        super().__init__(in_ch, out_ch, k, groups)
        e = DWS_EXPANSION
        self.depthwise = _kaiming((in_ch * e, 1, k, k))
        self.pointwise = _kaiming((out_ch, in_ch * e // groups, 1, 1))

    def kernel(self, get, in_ch, out_ch, k, groups):
        g, e = groups, DWS_EXPANSION
        dw = get("depthwise").reshape(g, in_ch // g, e, k, k)
        pw = get("pointwise").reshape(g, out_ch // g, in_ch // g, e)
        return torch.einsum("goie,giekl->goikl", pw, dw).reshape(out_ch, in_ch // g, k, k)

    def explicit(self, x, conv):
        in_ch = x.shape[1]
        y = F.conv2d(x, self.depthwise, None, conv.stride, conv.padding, conv.dilation, in_ch)
        return F.conv2d(y, self.pointwise, None, 1, 0, 1, conv.groups)


BRANCH_KINDS = tuple(BRANCHES.names())
#: the order ``branches=n`` takes kinds in: the official five first, then ours
BRANCH_ORDER = DEFAULT_BRANCHES + tuple(k for k in ("1x1", "kx1", "1xk") if k not in DEFAULT_BRANCHES)


def resolve_branches(branches) -> tuple[str, ...]:
    """``branches`` as a tuple of kinds: an int n takes the first n of ``BRANCH_ORDER``."""
    if isinstance(branches, bool):
        raise ValueError(f"branches must be an int or a sequence of kinds, got {branches!r}")
    if isinstance(branches, int):
        if not 0 <= branches <= len(BRANCH_ORDER):
            raise ValueError(f"branches={branches} is not in 0..{len(BRANCH_ORDER)} (the number of kinds)")
        return BRANCH_ORDER[:branches]
    if isinstance(branches, str):
        branches = (branches,)
    kinds = tuple(branches)
    for kind in kinds:
        if kind not in BRANCHES:
            raise ValueError(unknown_choice("branch kind", kind, list(BRANCH_KINDS)))
    return kinds


def branchable(conv: nn.Module) -> bool:
    """Whether a conv is turned into a ``MultiBranchConv2d``: square odd k > 1, stride 1,
    'same' zero padding, dilation 1, groups 1 or depthwise (the reference: k = 3 only)."""
    if type(conv) is not nn.Conv2d:
        return False
    k = conv.kernel_size[0]
    return (
        conv.kernel_size == (k, k) and k > 1 and k % 2 == 1
        and conv.stride == (1, 1) and conv.padding == (k // 2, k // 2) and conv.dilation == (1, 1)
        and conv.padding_mode == "zeros" and conv.groups in (1, conv.in_channels)
    )


class MultiBranchConv2d(nn.Conv2d):
    """A kxk conv whose kernel is ``origin_scale * weight + sum_b b.scale * b.kernel()``.

    ``weight``/``bias`` are the original branch (same names as the plain conv it replaces, so
    module paths and the ``weight`` parameter path are unchanged); ``forward`` folds and runs
    ONE conv. NOTE: ``.weight`` alone is not the effective kernel; use ``folded_weight()``.
    """

    #: dims of the module's own tensors (branch tensors: each ``Branch.DIMS``)
    DIMS = {"weight": CONV_DIMS, "bias": ((0, "out", "out"),), "origin_scale": ((0, "out", "none"),)}

    def __init__(self, conv: nn.Conv2d, kinds, scale_init: str = "reference", bias: bool = False):
        if scale_init not in SCALE_INITS:
            raise ValueError(unknown_choice("scale_init", scale_init, list(SCALE_INITS)))
        super().__init__(
            conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
            conv.dilation, conv.groups, False, conv.padding_mode,
            device=conv.weight.device, dtype=conv.weight.dtype,
        )
        self.depthwise = conv.groups > 1
        with torch.no_grad():
            self.weight.copy_(conv.weight)
        if bias or conv.bias is not None:  # registered by hand: random draws do not depend on it
            start = conv.bias.detach().clone() if conv.bias is not None else torch.zeros_like(self.weight[:, 0, 0, 0])
            self.bias = nn.Parameter(start)
        k = conv.kernel_size[0]
        self.kinds = tuple(kinds)
        self.branches = nn.ModuleList(
            BRANCHES.get(kind)(conv.in_channels, conv.out_channels, k, conv.groups) for kind in kinds
        ).to(device=conv.weight.device, dtype=conv.weight.dtype)
        self.origin_scale = nn.Parameter(torch.ones_like(self.weight[:, 0, 0, 0]))
        with torch.no_grad():
            if scale_init == "reference":
                self.origin_scale.fill_(REFERENCE_SCALES[ORIGIN])
                for b in self.branches:
                    b.scale.fill_(REFERENCE_SCALES.get(b.kind, REFERENCE_SCALE_OTHER))
            else:
                for b in self.branches:
                    b.scale.zero_()
        self._fold_cache: list | None = None  # set by DynamicTeacher for one "both" forward

    def tensor_dims(self) -> dict[str, tuple[DimSpec, ...]]:
        """Every tensor of this module (relative name -> its dims), branches included."""
        dims = {n: d for n, d in self.DIMS.items() if getattr(self, n) is not None}
        for i, b in enumerate(self.branches):
            dims.update({f"branches.{i}.{n}": d for n, d in b.DIMS.items()})
            dims[f"branches.{i}.scale"] = ((0, "out", "none"),)
        return dims

    def fold(self, get: Getter, in_ch: int, out_ch: int, groups: int) -> torch.Tensor:
        """The single kxk kernel equal to the sum of all scaled branches, computed from the
        tensors ``get`` returns (differentiable; widths given, so it folds any slice).

        With gradients on, the fold keeps none of its intermediate kernels for backward (every
        branch's composite kernel, the sliced and rescaled CBR tensors ``get`` makes): backward
        recomputes them (``torch.utils.checkpoint``), which costs one more fold -- a small
        fraction of the conv it feeds -- and saves their memory. Values and gradients are the
        same ops on the same tensors, so they are identical."""
        if torch.is_grad_enabled():
            return checkpoint(self._fold, get, in_ch, out_ch, groups, use_reentrant=False,
                              preserve_rng_state=False)  # the fold draws no random numbers
        return self._fold(get, in_ch, out_ch, groups)

    def _fold(self, get: Getter, in_ch: int, out_ch: int, groups: int) -> torch.Tensor:
        k = self.kernel_size[0]
        w = get("weight") * get("origin_scale")[:, None, None, None]
        for i, b in enumerate(self.branches):
            sub = (lambda n, _i=i: get(f"branches.{_i}.{n}"))
            w = w + b.kernel(sub, in_ch, out_ch, k, groups) * get(f"branches.{i}.scale")[:, None, None, None]
        return w

    def folded_weight(self) -> torch.Tensor:
        """This module's effective kernel (differentiable)."""
        if self._fold_cache:
            return self._fold_cache[0]
        w = self.fold(self._getter(), self.in_channels, self.out_channels, self.groups)
        if self._fold_cache is not None:
            self._fold_cache.append(w)
        return w

    def _getter(self) -> Getter:
        tensors = dict(self.named_parameters())
        tensors.update(self.named_buffers())
        return tensors.__getitem__

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.folded_weight(), self.bias)

    def explicit_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run every branch as its own op sequence and sum (slow; the reference semantics)."""
        y = _conv(x, self.weight, self) * self.origin_scale[:, None, None]
        for b in self.branches:
            y = y + b.explicit(x, self) * b.scale[:, None, None]
        if self.bias is not None:
            y = y + self.bias[:, None, None]
        return y

    def extra_repr(self) -> str:
        return super().extra_repr() + f", branches={list(self.kinds)}"


def add_branches(model: nn.Module, kinds: tuple[str, ...], scale_init: str,
                 bias_paths: frozenset[str] = frozenset()) -> list[str]:
    """Replace every branchable conv of ``model`` (in place) by a ``MultiBranchConv2d`` at the
    same width; convs in ``bias_paths`` get a zero-initialised learnable bias. Returns the
    converted paths."""
    if not kinds:
        return []
    paths = [path for path, m in model.named_modules() if branchable(m)]
    for path in paths:
        parent_path, _, leaf = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        setattr(parent, leaf, MultiBranchConv2d(getattr(parent, leaf), kinds, scale_init, bias=path in bias_paths))
    return paths


@contextlib.contextmanager
def fold_once(*models: nn.Module):
    """Within the block, every multi-branch conv of ``models`` folds its kernel once and reuses
    it (for gradient-free passes whose parameters do not change, e.g. evaluation: the same
    tensor is computed every batch otherwise, so results are identical)."""
    convs = [m for model in models for m in model.modules()
             if isinstance(m, MultiBranchConv2d) and m._fold_cache is None]
    for m in convs:
        m._fold_cache = []
    try:
        yield
    finally:
        for m in convs:
            m._fold_cache = None
