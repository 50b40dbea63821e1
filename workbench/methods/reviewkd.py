"""``reviewkd``: Knowledge Review (Chen et al., CVPR 2021) as mdistiller's CIFAR/ImageNet distiller.

The student's stage outputs and its pooled feature are fused top-down by attention-based fusion
(ABF): each level is projected (1x1 conv + BN) to a common width, mixed with the upsampled
fused deeper level by a learned 2-channel sigmoid attention, resized to the teacher's map and
projected to the teacher's width (3x3 conv + BN). The hierarchical context loss (HCL) compares
each fused map with the teacher's stage output *before its final ReLU* (and the teacher's pooled
feature) by MSE at full resolution and after average pooling to 4x4, 2x2, 1x1 (levels smaller
than the map), weighted 1, 1/2, 1/4, 1/8 and normalised by their sum.

loss = CE + w * min(epoch / warmup, 1) * sum_levels HCL; defaults CE 1, w 1, warm-up 20 epochs
(mdistiller's defaults; its CIFAR resnet32x4 -> resnet8x4 config uses w 5, its ImageNet R34 -> R18
config w 1, warm-up 1 epoch and the student's pre-activations: the presets set these).

Reference-exact: ABF layout and init (kaiming-uniform a=1), mid width min(512, deepest student
width), nearest upsampling, HCL levels and weights, teacher pre-activations, warm-up rule.
Adapted: widths and map sizes are read from the models on an example batch instead of
per-pair config tables (same numbers for the reference pairs). Usable as GPD's base (GPD
paper's second base): each view gets ABF modules built for its own widths.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..keys import opt
from ..models.hooks import PENULTIMATE, PREACT, stage_paths
from .base import Criterion, Distiller, feature_shapes
from .spec import build_criterion, method

MAX_MID_CHANNELS = 512  # mdistiller REVIEWKD.MAX_MID_CHANNEL
HCL_LEVELS = (4, 2, 1)  # pooled sizes after the full-resolution term
HCL_DECAY = 0.5  # weight of each further level relative to the previous
DEFAULT_WARMUP = 20  # epochs (mdistiller REVIEWKD.WARMUP_EPOCHS)
ATTENTION_MAPS = 2  # one weight for the level itself, one for the fused deeper level
KAIMING_A = 1


def hcl_loss(student_maps, teacher_maps) -> torch.Tensor:
    """Hierarchical context loss: per level, (MSE + sum_l 2^-k MSE(pool_l)) / (1 + sum_l 2^-k),
    summed over levels; pooled sizes >= the map's height are skipped."""
    total = 0.0
    for fs, ft in zip(student_maps, teacher_maps):
        h = fs.shape[-2]
        loss, weight, norm = F.mse_loss(fs, ft), 1.0, 1.0
        for size in HCL_LEVELS:
            if size >= h:
                continue
            weight *= HCL_DECAY
            loss = loss + weight * F.mse_loss(F.adaptive_avg_pool2d(fs, size), F.adaptive_avg_pool2d(ft, size))
            norm += weight
        total = total + loss / norm
    return total


class ABF(nn.Module):
    """Attention-based fusion of one level with the fused deeper level (``fuse=False``: the
    deepest level, nothing to fuse)."""

    def __init__(self, c_in: int, c_mid: int, c_out: int, fuse: bool):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(c_in, c_mid, 1, bias=False), nn.BatchNorm2d(c_mid))
        self.conv2 = nn.Sequential(nn.Conv2d(c_mid, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))
        self.att = nn.Sequential(nn.Conv2d(2 * c_mid, ATTENTION_MAPS, 1), nn.Sigmoid()) if fuse else None
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=KAIMING_A)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=KAIMING_A)

    def forward(self, x, deeper=None, out_size=None):
        x = self.conv1(x)
        if self.att is not None:
            deeper = F.interpolate(deeper, x.shape[-2:], mode="nearest")
            z = self.att(torch.cat([x, deeper], dim=1))
            x = x * z[:, :1] + deeper * z[:, 1:]
        if out_size is not None and tuple(x.shape[-2:]) != tuple(out_size):
            x = F.interpolate(x, out_size, mode="nearest")
        return self.conv2(x), x


def _as_map(f: torch.Tensor) -> torch.Tensor:
    return f if f.dim() == 4 else f[:, :, None, None]  # the pooled feature as a 1x1 map


class ReviewKDLoss(Criterion):
    def __init__(self, s_names, t_names, s_shapes, t_shapes, weight: float = 1.0, warmup: int = DEFAULT_WARMUP):
        super().__init__()
        if len(s_names) != len(t_names):
            raise ValueError(f"reviewkd: the student has {len(s_names) - 1} stages, the teacher {len(t_names) - 1}")
        self.student_features, self.teacher_features = tuple(s_names), tuple(t_names)
        c_in = [s[1] for s in s_shapes]
        c_mid = min(MAX_MID_CHANNELS, c_in[-1])
        self.out_sizes = [tuple(t[-2:]) if len(t) == 4 else (1, 1) for t in t_shapes]
        # deepest first, as the fusion runs
        self.abfs = nn.ModuleList(ABF(c_in[i], c_mid, t_shapes[i][1], fuse=i < len(c_in) - 1)
                                  for i in reversed(range(len(c_in))))
        self.weight, self.warmup = weight, warmup

    def fuse(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """Student maps (shallow -> deep) -> fused maps aligned with the teacher's."""
        feats = [_as_map(f) for f in feats]
        out, deeper = [], None
        for k, abf in enumerate(self.abfs):
            i = len(feats) - 1 - k
            y, deeper = abf(feats[i], deeper, self.out_sizes[i])
            out.insert(0, y)
        return out

    def terms(self, s, t, y):
        fused = self.fuse([s.features[n] for n in self.student_features])
        target = [_as_map(t.features[n]) for n in self.teacher_features]
        ramp = min(self.epoch / self.warmup, 1.0) if self.warmup > 0 else 1.0
        return {"loss_review": self.weight * ramp * hcl_loss(fused, target)}


KEYS = {
    "reviewkd_weight": opt(1.0, "ReviewKD: weight of the HCL loss (mdistiller CIFAR: 1; resnet32x4 -> resnet8x4: 5)",
                           low=0.0),
    "reviewkd_warmup": opt(DEFAULT_WARMUP, "ReviewKD: epochs of linear warm-up of the HCL weight (0: none)", low=0),
    "reviewkd_student_preact": opt(False, "ReviewKD: fuse the student's stage outputs before their final ReLU "
                                   "(mdistiller's ImageNet setting STU_PREACT)"),
}


def reviewkd_criterion(ctx, model) -> ReviewKDLoss:
    suffix = PREACT if ctx.cfg.reviewkd_student_preact else ""
    s_names = [p + suffix for p in stage_paths(model)] + [PENULTIMATE]
    t_names = [p + PREACT for p in stage_paths(ctx.teacher)] + [PENULTIMATE]
    s_shapes = feature_shapes(ctx, model, s_names)
    t_shapes = feature_shapes(ctx, ctx.teacher, t_names)
    return ReviewKDLoss(s_names, t_names, [s_shapes[n] for n in s_names], [t_shapes[n] for n in t_names],
                        ctx.cfg.reviewkd_weight, ctx.cfg.reviewkd_warmup)


@method("reviewkd", summary="Knowledge Review (Chen et al. 2021): ABF fusion + hierarchical context loss",
        keys=KEYS, criterion=reviewkd_criterion)
def build_reviewkd(ctx):
    return Distiller(ctx.student, ctx.teacher, build_criterion("reviewkd", ctx, ctx.student), ctx.cfg.ce_weight)
