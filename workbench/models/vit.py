"""A small Vision Transformer for 32x32 (and 8x8) images, built so that parameter surgery can
widen it generically.

Structure (other code relies on these names):
- ``ViT.patch_embed.proj``: ``Conv2d(in_ch, dim, patch, stride=patch)``;
- ``ViT.cls_token`` (1, 1, dim) and ``ViT.pos_embed`` (1, num_patches + 1, dim): direct parameters;
- ``ViT.blocks``: ``nn.Sequential`` of pre-norm ``Block``s
  (``x = x + attn(norm1(x)); x = x + mlp(norm2(x))``);
- ``Attention.qkv``: ``Linear(dim, 3 * dim)`` whose output is laid out [q | k | v], each block
  [head0 | head1 | ...]; ``Attention.proj``: ``Linear(dim, dim)``; ``Attention.head_dim`` is
  fixed and the number of heads is derived at forward time as ``width // head_dim`` (a copy
  widened by whole heads runs unchanged);
- ``Mlp``: ``fc1``, ``act`` (GELU), ``fc2``;
- ``ViT.norm`` (LayerNorm) then ``ViT.head`` (Linear) on the cls token.
No module stores a width that its forward uses: every shape is read from the tensors.

Patch size: given explicitly, or the smallest of 2, 4, 8, 16, 32 that divides ``image_size`` and
gives at most ``MAX_GRID`` patches per side (32x32 -> 4, 8x8 -> 2, 224x224 -> 16).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ._registry import register

DEFAULT_IMAGE_SIZE = 32
PATCH_CANDIDATES = (2, 4, 8, 16, 32)
MAX_GRID = 14
LAYERNORM_EPS = 1e-6
INIT_STD = 0.02
#: (dim, depth, head_dim, mlp_ratio) of the named sizes (DeiT-Tiny / DeiT-Small shapes;
#: ``vit_nano`` is a 4-block, 64-wide ViT for CPU experiments and tests)
VIT_SIZES = {
    "vit_nano": (64, 4, 32, 2.0),
    "vit_tiny": (192, 12, 64, 4.0),
    "vit_small": (384, 12, 64, 4.0),
}


def default_patch_size(image_size: int) -> int:
    """Smallest candidate patch dividing ``image_size`` with a grid side <= ``MAX_GRID``."""
    for p in PATCH_CANDIDATES:
        if image_size % p == 0 and image_size // p <= MAX_GRID:
            return p
    raise ValueError(
        f"no default patch size for image_size={image_size}: pass patch_size= "
        f"(a divisor of the image size); candidates tried: {PATCH_CANDIDATES}"
    )


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens (N, num_patches, dim)."""

    def __init__(self, in_channels: int, dim: int, patch_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention; heads = input width // ``head_dim`` at every call."""

    def __init__(self, dim: int, head_dim: int):
        super().__init__()
        if dim % head_dim != 0:
            raise ValueError(f"dim {dim} is not a multiple of head_dim {head_dim}")
        self.head_dim = head_dim
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, width = x.shape
        heads = width // self.head_dim
        qkv = self.qkv(x).reshape(n, t, 3, heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (n, heads, t, head_dim)
        return self.proj(out.transpose(1, 2).reshape(n, t, heads * self.head_dim))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, dim: int, head_dim: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYERNORM_EPS)
        self.attn = Attention(dim, head_dim)
        self.norm2 = nn.LayerNorm(dim, eps=LAYERNORM_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """Patch embedding + cls token + learned position embedding -> blocks -> norm -> head(cls)."""

    classifier_name = "head"

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        image_size: int = DEFAULT_IMAGE_SIZE,
        patch_size: int | None = None,
        dim: int = 192,
        depth: int = 12,
        head_dim: int = 64,
        mlp_ratio: float = 4.0,
    ):
        super().__init__()
        patch_size = patch_size or default_patch_size(image_size)
        if image_size % patch_size != 0:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        num_patches = (image_size // patch_size) ** 2
        self.patch_embed = PatchEmbed(in_channels, dim, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, dim))
        self.blocks = nn.Sequential(*(Block(dim, head_dim, mlp_ratio) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim, eps=LAYERNORM_EPS)
        self.head = nn.Linear(dim, num_classes)
        self._init_weights()

    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(f"blocks.{i}" for i in range(len(self.blocks)))

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=INIT_STD)
        nn.init.trunc_normal_(self.cls_token, std=INIT_STD)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=INIT_STD)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x)
        if tokens.shape[1] + 1 != self.pos_embed.shape[1]:
            raise ValueError(
                f"input {tuple(x.shape[-2:])} gives {tokens.shape[1]} patches but this ViT was built "
                f"for {self.pos_embed.shape[1] - 1}; build it with the matching image_size"
            )
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        x = torch.cat([cls, tokens], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


def _vit_factory(size: str):
    dim, depth, head_dim, mlp_ratio = VIT_SIZES[size]

    def factory(num_classes: int, in_channels: int = 3, image_size=None, **overrides) -> ViT:
        """``overrides`` may set patch_size, dim, depth, head_dim, mlp_ratio."""
        cfg = dict(dim=dim, depth=depth, head_dim=head_dim, mlp_ratio=mlp_ratio)
        unknown = set(overrides) - set(cfg) - {"patch_size"}
        if unknown:
            raise ValueError(
                f"unknown {size} option(s) {sorted(unknown)}; valid: patch_size, {', '.join(cfg)}"
            )
        cfg.update(overrides)
        return ViT(num_classes, in_channels, image_size or DEFAULT_IMAGE_SIZE, **cfg)

    return factory


for _size in VIT_SIZES:
    register(_size, family="vit")(_vit_factory(_size))
