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

``DistilledViT`` (registered as ``vit_nano_dist``, ``vit_tiny_dist``, ``vit_small_dist``) adds
DeiT's distillation token (Touvron et al., ICML 2021): a direct parameter ``dist_token``
(1, 1, dim) placed right after the cls token, a ``pos_embed`` covering cls + dist + patches
(1, num_patches + 2, dim), and a second classifier ``head_dist`` (Linear) on the dist token.
``forward_parts(x)`` gives the training-time pieces; ``forward(x)`` the averaged prediction of
the heads named in ``eval_heads`` (see the class docstring).

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


def _init_linear(m: nn.Linear) -> None:
    """DeiT/timm's Linear init: truncated normal weight (std ``INIT_STD``), zero bias."""
    nn.init.trunc_normal_(m.weight, std=INIT_STD)
    nn.init.zeros_(m.bias)


class ViT(nn.Module):
    """Patch embedding + cls token + learned position embedding -> blocks -> norm -> head(cls)."""

    classifier_name = "head"
    #: tokens in front of the patch tokens (cls), each with its own position embedding row
    num_prefix_tokens = 1
    #: direct parameters an optimizer should not decay (read by ``models.params.decay_groups``)
    no_weight_decay_names = ("cls_token", "pos_embed")

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
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + self.num_prefix_tokens, dim))
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
                _init_linear(m)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _prefix_tokens(self) -> list[torch.Tensor]:
        """The (1, 1, dim) tokens put in front of the patch tokens, in order."""
        return [self.cls_token]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Final-normed token sequence (N, num_prefix_tokens + num_patches, dim): prefix tokens
        (cls[, dist]) first, then the patch tokens in row-major grid order."""
        tokens = self.patch_embed(x)
        built_for = self.pos_embed.shape[1] - self.num_prefix_tokens
        if tokens.shape[1] != built_for:
            raise ValueError(
                f"input {tuple(x.shape[-2:])} gives {tokens.shape[1]} patches but this ViT was built "
                f"for {built_for}; build it with the matching image_size"
            )
        prefix = [t.expand(tokens.shape[0], -1, -1) for t in self._prefix_tokens()]
        x = torch.cat([*prefix, tokens], dim=1) + self.pos_embed
        return self.norm(self.blocks(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode(x)[:, 0])

    def readout(self) -> dict[str, str]:
        """What evaluation reads (recorded in eval and probe records, ``models.readout``): the
        logits of the cls head; penultimate features = the final-normed cls token."""
        return {"logits_from": "cls", "features_from": "cls_token"}


#: the heads ``DistilledViT.forward`` can average: the cls head, the dist head, and the dense
#: prediction (the dist head applied to every patch token, averaged over the patches)
EVAL_HEADS = ("cls", "dist", "dense")
#: DeiT's inference: mean of the cls and dist heads (the facebookresearch/deit definition)
DEIT_EVAL_HEADS = ("cls", "dist")
#: CSKD's inference: mean of the cls head, the dist head and the pooled dense prediction
CSKD_EVAL_HEADS = ("cls", "dist", "dense")


def check_eval_heads(heads) -> tuple[str, ...]:
    """``heads`` as a tuple after checking it is a non-empty, duplicate-free subset of
    ``EVAL_HEADS`` (one-line ``ValueError`` otherwise)."""
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    bad = [h for h in heads if h not in EVAL_HEADS]
    if not heads or bad or len(set(heads)) != len(heads):
        raise ValueError(
            f"eval_heads must be distinct names from {', '.join(EVAL_HEADS)} (at least one), got {heads!r}"
        )
    return heads


class DistilledViT(ViT):
    """A ``ViT`` with DeiT's distillation token and head.

    Token order: [cls, dist, patch_0 ... patch_{P-1}] (patches in row-major grid order), each
    with its own ``pos_embed`` row, as in DeiT.

    - ``forward_parts(x)`` -> ``{"cls": (N, K), "dist": (N, K), "patches": (N, P, dim)}``: the
      cls-head logits, the dist-head logits and the final-normed patch tokens (what a training
      method needs; ``patch_logits`` turns the patches into per-patch logits);
    - ``patch_logits(patches)`` -> (N, P, K): ``head_dist`` applied to every patch token (CSKD's
      dense student prediction; reshape with ``losses_spatial.tokens_to_grid``);
    - ``forward(x)`` -> (N, K), in train and eval mode alike (every zoo forward returns logits
      only): the mean of the logits of the heads in ``eval_heads``. DeiT averages the cls and
      dist heads (``DEIT_EVAL_HEADS``, the default); CSKD also averages the dense prediction
      (``CSKD_EVAL_HEADS``: the dist head on every patch token, averaged over the patches, our
      reading of "mean of cls head, dist head and pooled dense prediction"). ``eval_heads`` can
      be set after construction (e.g. by a method).

    Probes (``models.hooks.penultimate`` / ``FeatureTap("penultimate")``) read the input of
    ``classifier_name = "head"``: the final-normed **cls token**; the logits ``penultimate``
    returns are ``forward``'s averaged prediction, so ``head(features)`` equals
    ``forward_parts(x)["cls"]``, not ``forward(x)``.
    """

    num_prefix_tokens = 2
    no_weight_decay_names = ("cls_token", "dist_token", "pos_embed")

    def __init__(self, num_classes: int, *args, eval_heads=DEIT_EVAL_HEADS, **kwargs):
        super().__init__(num_classes, *args, **kwargs)
        dim = self.cls_token.shape[-1]
        self.dist_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.head_dist = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.dist_token, std=INIT_STD)
        _init_linear(self.head_dist)
        self.eval_heads = eval_heads

    @property
    def eval_heads(self) -> tuple[str, ...]:
        return self._eval_heads

    @eval_heads.setter
    def eval_heads(self, heads) -> None:
        self._eval_heads = check_eval_heads(heads)

    def _prefix_tokens(self) -> list[torch.Tensor]:
        return [self.cls_token, self.dist_token]

    def forward_parts(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        seq = self.encode(x)
        return {
            "cls": self.head(seq[:, 0]),
            "dist": self.head_dist(seq[:, 1]),
            "patches": seq[:, self.num_prefix_tokens:],
        }

    def patch_logits(self, patches: torch.Tensor) -> torch.Tensor:
        """(N, P, dim) final-normed patch tokens -> (N, P, K) logits of ``head_dist``."""
        return self.head_dist(patches)

    def combine(self, parts: dict[str, torch.Tensor]) -> torch.Tensor:
        """The mean of the ``eval_heads`` logits computed from ``forward_parts``'s output."""
        logits = {"cls": lambda: parts["cls"], "dist": lambda: parts["dist"],
                  "dense": lambda: self.patch_logits(parts["patches"]).mean(dim=1)}
        return torch.stack([logits[h]() for h in self.eval_heads]).mean(dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.combine(self.forward_parts(x))

    def readout(self) -> dict[str, str]:
        """Logits: the mean of the ``eval_heads`` (e.g. ``"cls+dist+dense"``); penultimate
        features (CKA, kNN, linear probes): the final-normed cls token."""
        return {"logits_from": "+".join(self.eval_heads), "features_from": "cls_token"}


#: the patch embedding's kernel in a ViT state dict: (dim, in_channels, patch, patch)
PATCH_WEIGHT_KEY = "patch_embed.proj.weight"


def patch_size_of(state) -> int | None:
    """The patch size a ViT state dict was built with (its patch-embedding kernel side), or None
    when ``state`` holds no such kernel. The registered names fix every size but the patch (the
    ``patch_size`` key of a run), so a saved ViT is rebuilt from its name plus this."""
    w = state.get(PATCH_WEIGHT_KEY)
    return int(w.shape[-1]) if w is not None and w.ndim == 4 else None


#: registered name suffix of the distillation-token variant of each size
DIST_SUFFIX = "_dist"


def _vit_factory(size: str, distilled: bool):
    dim, depth, head_dim, mlp_ratio = VIT_SIZES[size]
    name = size + DIST_SUFFIX if distilled else size
    extra = ("eval_heads",) if distilled else ()

    def factory(num_classes: int, in_channels: int = 3, image_size=None, **overrides) -> ViT:
        """``overrides`` may set patch_size, dim, depth, head_dim, mlp_ratio (and eval_heads for
        the ``_dist`` variants)."""
        cfg = dict(dim=dim, depth=depth, head_dim=head_dim, mlp_ratio=mlp_ratio)
        unknown = set(overrides) - set(cfg) - {"patch_size", *extra}
        if unknown:
            raise ValueError(
                f"unknown {name} option(s) {sorted(unknown)}; valid: patch_size, {', '.join((*cfg, *extra))}"
            )
        cfg.update(overrides)
        cls = DistilledViT if distilled else ViT
        return cls(num_classes, in_channels, image_size or DEFAULT_IMAGE_SIZE, **cfg)

    return factory


for _size in VIT_SIZES:
    register(_size, family="vit", distillation_token=False)(_vit_factory(_size, distilled=False))
    register(_size + DIST_SUFFIX, family="vit", distillation_token=True)(_vit_factory(_size, distilled=True))
