"""The model registry shared by every zoo module.

Each family module registers factories with ``MODELS.register(name, family=...)``; a factory is
called as ``factory(num_classes=..., in_channels=..., image_size=..., **kwargs)`` and returns an
``nn.Module`` whose ``forward(x)`` returns logits only.

Metadata stored per name: ``family`` (``"cifar"`` | ``"imagenet"`` | ``"vit"``), for alternative
spellings ``alias_of`` (the canonical name), and whatever else a family module declares (the ViTs:
``distillation_token``).
"""
from __future__ import annotations

from workbench.registry import Registry

MODELS = Registry("model")

FAMILIES = ("cifar", "imagenet", "vit")


def register(name: str, family: str, aliases: tuple[str, ...] = (), **meta):
    """Decorator: register a factory under ``name`` (and each alias) with its family and ``meta``."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; valid choices: {', '.join(FAMILIES)}")

    def add(factory):
        MODELS.register(name, factory, family=family, **meta)
        for alias in aliases:
            MODELS.register(alias, factory, family=family, alias_of=name, **meta)
        return factory

    return add
