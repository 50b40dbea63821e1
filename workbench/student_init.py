"""How the student starts (the ``init`` key): random, from a checkpoint, or by weight inheritance.

``init`` values:

- ``""``: the zoo's random initialisation (seeded by ``seed``);
- ``<path>``: a student checkpoint of the same architecture, loaded strictly (fine-tuning);
- ``inherit``: **weight inheritance** from the static teacher (``teacher=``: a checkpoint, an
  embedded teacher, or an architecture that is trained and cached first) -- loaded for this even
  when the method itself uses no teacher (``ce``, ``gpd base=none``);
- ``inherit:<path>``: weight inheritance from that checkpoint (its architecture read from the
  file as for teacher files: our checkpoints' ``arch`` entry or a ``<arch>_vanilla`` folder; a
  ViT's patch size from its patch-embedding kernel, as ``models.load`` reads it).

Inheritance (after TinyCLIP's manual inheritance, Wu et al., ICCV 2023; ``models.inherit``):
student block i of every block container takes the source's block i * (source blocks // student
blocks), every tensor is sliced from the front, attention by whole heads; then every BatchNorm's
running statistics are re-estimated (``recalibrate_bn``: cumulative average, train mode, no
gradient) on up to ``init_bn_batches`` batches of the *unaugmented* training images, in an order
seeded by ``seed`` (the same on every DDP rank), on the run's device. The inherited statistics
belong to the source's deeper computation, which is why the recalibration matters (digits:
8 % random, 21 % inherited, 63 % recalibrated before any training, ``bench/digits_inherit.py``).
A pair that cannot inherit (another family, a student deeper or wider than the source, other
class counts, patch grids or head sizes) is refused by :func:`check_compatible` in the cheap
checks, one line naming both architectures.

Every method receives the inherited student as its ``ctx.student``: GPD expands it (inherit, then
expand), and with ``scale_init=auto`` its branches start at one/zero as for any ``init=``, so the
dynamic teacher starts as the inherited student exactly. The run's ``metrics.jsonl`` gets one
``init`` record at epoch 0 (:func:`inherit_student`'s return value: source, blocks taken, images
used for BN), beside the epoch-0 eval and gap records the trainer writes before training: the
student's (and T_s-S's) starting point.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader

from .keys import ConfigError

INHERIT = "inherit"
INHERIT_PREFIX = INHERIT + ":"
RANDOM, CHECKPOINT = "random", "checkpoint"
#: batches used to re-estimate BN statistics: fvcore's ``precise_bn.update_bn_stats`` default
#: ``num_iters=200`` (at most one pass over the training set)
DEFAULT_BN_BATCHES = 200


@dataclass(frozen=True)
class InitSpec:
    """``kind``: random | checkpoint | inherit; ``path``: the checkpoint (for inherit: the source
    file, or "" = the static teacher)."""

    kind: str
    path: str = ""

    @property
    def from_teacher(self) -> bool:
        return self.kind == INHERIT and not self.path


def parse(value: str) -> InitSpec:
    """The ``init`` value as an :class:`InitSpec` (one-line ``ConfigError`` for ``inherit:``
    without a file)."""
    value = value.strip()
    if not value:
        return InitSpec(RANDOM)
    if value == INHERIT:
        return InitSpec(INHERIT)
    if value.startswith(INHERIT_PREFIX):
        path = value[len(INHERIT_PREFIX):].strip()
        if not path:
            raise ConfigError("init: 'inherit:' needs a checkpoint after the colon (init=inherit:<file>), "
                              "or use init=inherit to inherit from the static teacher")
        return InitSpec(INHERIT, path)
    return InitSpec(CHECKPOINT, value)


def check_compatible(student: str, source: str, info, student_options: dict | None = None,
                     source_model: nn.Module | None = None) -> None:
    """Refuse (``ConfigError``, one line) a student that cannot inherit from ``source`` (both zoo
    names), by inheriting into a freshly built student (cheap: no data, no training) from
    ``source_model`` -- the loaded source file, whose build options (a ViT's patch size) the name
    does not carry -- or, without one, from a fresh build of ``source``. The source is not changed."""
    from . import models
    from .models.inherit import InheritanceError, inherit

    build = dict(num_classes=info.num_classes, in_channels=info.in_channels, image_size=info.image_size)
    s = models.build(student, **build, **(student_options or {}))
    t = source_model if source_model is not None else models.build(source, **build)
    try:
        inherit(s, t, student_name=student, teacher_name=source)
    except InheritanceError as e:
        raise ConfigError(f"init: {e}") from None


def selected_blocks(student: nn.Module, source: nn.Module) -> dict[str, list[int]]:
    """``{container path: [source child index per student child]}`` for the containers where the
    source has more children than the student (where inheritance chose which to take)."""
    from .models.inherit import inheritance_map

    taken: dict[str, dict[int, int]] = {}
    sizes: dict[str, tuple[int, int]] = {}
    for s_key, t_key in inheritance_map(student, source).items():
        s_parts, t_parts = s_key.split("."), t_key.split(".")
        for depth, (a, b) in enumerate(zip(s_parts[:-1], t_parts[:-1])):
            if a.isdigit():
                where = ".".join(s_parts[:depth])
                taken.setdefault(where, {})[int(a)] = int(b)
                sizes[where] = (len(student.get_submodule(where)), len(source.get_submodule(".".join(t_parts[:depth]))))
    return {where: [m[i] for i in sorted(m)] for where, m in taken.items() if sizes[where][1] > sizes[where][0]}


def bn_batches(train_set, batch_size: int, seed: int, limit: int):
    """Up to ``limit`` batches of ``train_set`` in a fixed order seeded by ``seed``."""
    loader = DataLoader(train_set, batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    return itertools.islice(loader, limit)


def inherit_student(student: nn.Module, source: nn.Module, train_set, cfg, device, source_label: str,
                    source_arch: str) -> dict:
    """Inherit ``student``'s weights from ``source`` (in place), recalibrate its BatchNorms on
    ``train_set`` (unaugmented training images) on ``device``; returns the ``init`` record."""
    from .models.inherit import inherit, recalibrate_bn

    inherit(student, source, student_name=cfg.student, teacher_name=source_arch)
    blocks = selected_blocks(student, source)
    student.to(device)
    n_batches = min(cfg.init_bn_batches, -(-len(train_set) // cfg.batch_size))  # at most one pass
    images = 0

    def counted(batches):
        nonlocal images
        for batch in batches:
            images += len(batch[0])
            yield batch

    if n_batches > 0:  # a model without BatchNorm reads no batch (0 images)
        recalibrate_bn(student, counted(bn_batches(train_set, cfg.batch_size, cfg.seed, n_batches)))
    return {"kind": "init", "epoch": 0, "init": INHERIT, "source": source_label, "source_arch": source_arch,
            "student": cfg.student, "blocks": blocks, "bn_images": images}
