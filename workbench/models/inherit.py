"""Weight inheritance as a student initialisation (after TinyCLIP's manual inheritance, Wu et al.,
ICCV 2023), followed by BatchNorm recalibration.

``inherit(student, source) -> student`` copies into ``student`` **in place** (and returns it):

- *depth*: inside every block container (an ``nn.Sequential``/``nn.ModuleList``: a ResNet stage,
  a WRN ``blockN.layer``, the ViT's ``blocks``, a VGG conv group) student block ``i`` takes
  teacher block ``i * (teacher blocks // student blocks)``, as in TinyCLIP (so resnet110 -> resnet32,
  18 -> 5 blocks per stage, takes blocks 0, 3, 6, 9, 12 and never uses 13-17). A block is a
  child with sub-modules (a residual block, a transformer block) or, in a container of plain
  layers (a VGG group: conv, BN, ReLU, conv, BN), a conv/linear layer with the layers after it;
- *width*: every tensor is sliced from the front along each dim (``t[:d0, :d1, ...]``), with
  these exceptions: ``qkv`` of a ViT ``Attention`` is sliced segment by segment ([q | k | v],
  the first heads of each: whole heads, because both models have the same ``head_dim``), conv
  kernels and ``pos_embed``'s token count must be equal, and so must the class count of the
  classifier (a head cannot be sliced to other classes).

``source`` is the teacher module or its state dict (e.g. ``checkpoint.read_state_dict(path)``);
only a module lets the family and ``head_dim`` be checked before copying. Every mismatch is a
``ValueError`` of one line naming both architectures and the reason.

Which zoo pairs work: resnet56 -> resnet20 (blocks 0, 3, 6 of 9), resnet110 -> resnet32 (0, 3,
6, 9, 12 of 18), resnet32x4 -> resnet8x4 (block 0 of 5), wrn_40_2 -> wrn_16_2 (0, 3 of 6),
vgg13 -> vgg8 (the first conv of each two-conv group), vit_small -> vit_tiny (all 12 blocks,
widths 384 -> 192, heads 6 -> 3, MLP 1536 -> 768): all sliceable (same family, student no
deeper and no wider). Not sliceable: different families (e.g. wrn -> resnet), a student wider
or deeper than its teacher (e.g. resnet8 -> resnet8x4), grouped convs of different widths
(ShuffleNet: front slicing breaks the group structure), ViTs of different patch grids or
``head_dim``, a plain ViT <-> one with a distillation token.

``recalibrate_bn(model, batches)`` then re-estimates every BatchNorm's running statistics on
training data: statistics reset, cumulative average over the given batches (``momentum=None``),
train mode, ``torch.no_grad()``; only BN buffers change (parameters, other buffers, the
momentum and the train/eval mode are as before). The inherited running statistics are those
of the teacher's (deeper) computation, which is why recalibration matters so much.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from .hooks import classifier_path
from .vit import Attention

#: ``pos_embed`` (1, tokens, dim): its token dim must match (the patch grid), only dim is sliced
POS_EMBED_NAME, POS_EMBED_TOKEN_DIM = "pos_embed", 1
#: conv weights (out, in / groups, *kernel): the kernel dims from here on must match
CONV_KERNEL_DIMS_FROM = 2
#: the ViT's ``Attention.qkv`` output is [q | k | v]: sliced segment by segment
QKV_NAME, QKV_SEGMENTS = "qkv", 3
#: a layer whose ``weight`` has at least this many dims starts a block in a container of plain layers
MATRIX_DIMS = 2


class _Tree:
    """A state dict's keys as paths, for container/block queries."""

    def __init__(self, state: Mapping[str, torch.Tensor]):
        self.state = state
        self.paths = [tuple(k.split(".")) for k in state]

    def indices(self, prefix: tuple[str, ...]) -> list[int]:
        n = len(prefix)
        return sorted({int(p[n]) for p in self.paths if p[:n] == prefix and len(p) > n + 1 and p[n].isdigit()})

    def _starts_block(self, prefix: tuple[str, ...], index: int) -> bool:
        child = (*prefix, str(index))
        n = len(child)
        under = [p for p in self.paths if p[:n] == child]
        if any(len(p) > n + 1 for p in under):  # the child has sub-modules: a block
            return True
        weight = self.state.get(".".join((*child, "weight")))
        return weight is not None and weight.ndim >= MATRIX_DIMS

    def blocks(self, prefix: tuple[str, ...]) -> list[list[int]]:
        """The container's child indices grouped into blocks (see the module docstring)."""
        blocks: list[list[int]] = []
        for i in self.indices(prefix):
            if not blocks or self._starts_block(prefix, i):
                blocks.append([i])
            else:
                blocks[-1].append(i)
        return blocks


def _pair_name(student: nn.Module, source, student_name: str | None, teacher_name: str | None) -> str:
    """'<student> from <teacher>' for error messages: registry names when given, else class names."""
    teacher = type(source).__name__ if isinstance(source, nn.Module) else "the given teacher state dict"
    return f"{student_name or type(student).__name__} from {teacher_name or teacher}"


class InheritanceError(ValueError):
    """A student that cannot inherit from the given teacher (one-line message)."""


def inheritance_map(student: nn.Module, source, *, student_name: str | None = None,
                    teacher_name: str | None = None) -> dict[str, str]:
    """Student state-dict key -> teacher state-dict key (the depth selection above); ``source`` is
    the teacher module or its state dict; the names only label error messages."""
    t_state = source.state_dict() if isinstance(source, nn.Module) else source
    return dict(_iter_map(student, t_state, _pair_name(student, source, student_name, teacher_name)))


def _iter_map(student: nn.Module, t_state: Mapping[str, torch.Tensor], names: str):
    """``(student key, teacher key)`` in the student's state-dict order (lazily, so that a caller
    slicing as it goes reports the first offending tensor)."""
    s_tree, t_tree = _Tree(student.state_dict()), _Tree(t_state)
    cache: dict[tuple, dict[int, int]] = {}
    for s_path in s_tree.paths:
        t_path: list[str] = []
        for depth, part in enumerate(s_path):
            if part.isdigit() and depth < len(s_path) - 1:  # a child index inside a container
                key = (s_path[:depth], tuple(t_path))
                if key not in cache:
                    cache[key] = _index_map(s_tree.blocks(s_path[:depth]), t_tree.blocks(tuple(t_path)),
                                            ".".join(s_path[:depth]), names)
                part = str(cache[key][int(part)])
            t_path.append(part)
        t_key = ".".join(t_path)
        if t_key not in t_state:
            raise InheritanceError(
                f"cannot inherit {names}: the teacher has no {t_key!r} for the student's {'.'.join(s_path)!r} "
                f"(different architectures?)"
            )
        yield ".".join(s_path), t_key


def _index_map(s_blocks: list[list[int]], t_blocks: list[list[int]], where: str, names: str) -> dict[int, int]:
    """Student child index -> teacher child index: student block i <- teacher block i * step, the
    k-th layer of a block from the k-th layer of the chosen teacher block."""
    if not t_blocks:
        raise InheritanceError(f"cannot inherit {names}: the teacher has no {where or 'blocks'} (different architectures?)")
    if len(s_blocks) > len(t_blocks):
        raise InheritanceError(
            f"cannot inherit {names}: {where or 'the model'} has {len(s_blocks)} blocks in the student but "
            f"{len(t_blocks)} in the teacher (a student cannot be deeper than its teacher)"
        )
    step = len(t_blocks) // len(s_blocks)
    out = {}
    for i, block in enumerate(s_blocks):
        chosen = t_blocks[i * step]
        if len(block) > len(chosen):
            raise InheritanceError(
                f"cannot inherit {names}: block {where}.{block[0]} has {len(block)} layers but teacher block "
                f"{where}.{chosen[0]} only {len(chosen)}"
            )
        out.update(zip(block, chosen))
    return out


def _rule(student: nn.Module, key: str, ndim: int, head: str) -> tuple[set[int], int, str]:
    """``(fixed dims, qkv segments, why the fixed dims are fixed)`` for the student tensor ``key``."""
    module_path, _, name = key.rpartition(".")
    module = student.get_submodule(module_path)
    owner_path, _, leaf = module_path.rpartition(".")
    if name == POS_EMBED_NAME:
        return {POS_EMBED_TOKEN_DIM}, 1, "the token count (patch grid) must match"
    if isinstance(module, _ConvNd) and name == "weight":
        if 1 < module.groups < module.in_channels:
            return set(range(ndim)), 1, f"a grouped conv (groups={module.groups}) cannot be sliced from the front"
        return set(range(CONV_KERNEL_DIMS_FROM, ndim)), 1, "conv kernel sizes must match"
    if module_path == head:
        return {0}, 1, "the class count must match"
    if leaf == QKV_NAME and isinstance(student.get_submodule(owner_path), Attention):
        return set(), QKV_SEGMENTS, ""
    return set(), 1, ""


def _slice(key: str, s_shape: torch.Size, t: torch.Tensor, rule: tuple[set[int], int, str], names: str) -> torch.Tensor:
    """The teacher tensor ``t`` cut to ``s_shape`` from the front (segment by segment for qkv)."""
    fixed, segments, why = rule
    if len(s_shape) != t.ndim:
        raise InheritanceError(f"cannot inherit {names}: {key} has {len(s_shape)} dims in the student, {t.ndim} in the teacher")
    for d, (s, n) in enumerate(zip(s_shape, t.shape)):
        if d in fixed and s != n:
            raise InheritanceError(f"cannot inherit {names}: {key} is {tuple(s_shape)} in the student but "
                                   f"{tuple(t.shape)} in the teacher; {why}")
        if s > n:
            raise InheritanceError(f"cannot inherit {names}: {key} is {tuple(s_shape)} in the student but "
                                   f"{tuple(t.shape)} in the teacher (a student cannot be wider than its teacher)")
    if segments > 1:  # [q | k | v]: the first heads of each segment
        per_segment = s_shape[0] // segments
        t = torch.cat([part[:per_segment] for part in t.chunk(segments, dim=0)], dim=0)
    return t[tuple(slice(0, s) for s in s_shape)]


def _check_modules(student: nn.Module, teacher: nn.Module, names: str) -> None:
    if type(student) is not type(teacher):
        raise InheritanceError(f"cannot inherit {names}: different model families (inheritance needs the same architecture)")
    s_dims = sorted({m.head_dim for m in student.modules() if isinstance(m, Attention)})
    t_dims = sorted({m.head_dim for m in teacher.modules() if isinstance(m, Attention)})
    if s_dims != t_dims:
        raise InheritanceError(f"cannot inherit {names}: attention head_dim {s_dims} vs {t_dims} (heads are inherited whole)")


def inherit(student: nn.Module, source, *, student_name: str | None = None, teacher_name: str | None = None) -> nn.Module:
    """Initialise ``student`` in place from ``source`` (teacher module or state dict) by uniform
    block selection and front slicing (module docstring); returns ``student``. BN running
    statistics are copied (sliced) too: follow with ``recalibrate_bn``. ``student_name`` /
    ``teacher_name`` (e.g. the registry names) only label error messages. Nothing is written
    unless every tensor can be inherited."""
    names = _pair_name(student, source, student_name, teacher_name)
    if isinstance(source, nn.Module):
        _check_modules(student, source, names)
        t_state = source.state_dict()
    elif isinstance(source, Mapping):
        t_state = source
    else:
        raise TypeError(f"inherit source must be an nn.Module or a state dict, got {type(source).__name__}")
    s_state = student.state_dict()
    head = classifier_path(student)
    new = {s_key: _slice(s_key, s_state[s_key].shape, t_state[t_key], _rule(student, s_key, s_state[s_key].ndim, head), names)
           for s_key, t_key in _iter_map(student, t_state, names)}
    student.load_state_dict(new)
    return student


def recalibrate_bn(model: nn.Module, batches: Iterable) -> nn.Module:
    """Re-estimate the running mean/var of every BatchNorm (with running stats) of ``model`` as the
    cumulative average over ``batches`` (tensors, or ``(inputs, targets)`` pairs), in train mode
    under ``torch.no_grad()``. Only BN buffers change; if ``batches`` is empty (ValueError) or a
    forward fails, the BN buffers are restored. Returns ``model``; a model without BN is returned
    untouched (the batches are not read)."""
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not bns:
        return model
    was_training = model.training
    momenta = [m.momentum for m in bns]
    saved = [{k: b.clone() for k, b in m.named_buffers(recurse=False)} for m in bns]
    device = next(model.parameters()).device
    seen = 0
    try:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average: every batch weighs the same
        model.train()
        with torch.no_grad():
            for batch in batches:
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                model(x.to(device))
                seen += 1
        if seen == 0:
            raise ValueError("recalibrate_bn got no batches: pass an iterable of input tensors or (inputs, targets) pairs")
    except BaseException:
        with torch.no_grad():
            for m, buffers in zip(bns, saved):
                for k, b in buffers.items():
                    getattr(m, k).copy_(b)
        raise
    finally:
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
        model.train(was_training)
    return model
