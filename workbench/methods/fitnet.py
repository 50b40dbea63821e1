"""``fitnet``: FitNets (Romero et al., ICLR 2015) as in mdistiller's CIFAR distiller.

loss = CE + feat_weight * MSE(ConvReg(f_s), f_t), where f_s / f_t are the student's and the
teacher's outputs of one stage (the *hint layer*: ``fitnet_hint`` = 2, the second stage of a
CIFAR ResNet, mdistiller's ``HINT_LAYER: 2`` counted with the stem as feature 0) and ConvReg
maps the student's map to the teacher's shape: a 3x3 conv when the sizes match, a stride-2 conv
when the student's map is twice as large, a stride-2 transposed 4x4 conv when half as large,
otherwise a (1 + H_s - H_t) conv; then BN and ReLU (mdistiller's ``ConvReg``). Defaults: CE
weight 1, feature weight 100 (mdistiller ``FITNET.LOSS``). The regressor trains with the student
and is not part of the deployable student.

Reference-exact (mdistiller): hint choice, regressor layout, MSE (mean), weights, one training
stage. Not reproduced: the original paper's two stages (hint pre-training, then KD). Usable as
GPD's base: each view gets its own regressor, sized for its widths.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from ..keys import opt
from ..models.hooks import stage_paths
from .base import Criterion, Distiller, feature_shapes
from .spec import build_criterion, method

DEFAULT_HINT_STAGE = 2  # mdistiller HINT_LAYER 2 = the second stage (stem = feature 0)
DEFAULT_FEAT_WEIGHT = 100.0  # mdistiller FITNET.LOSS.FEAT_WEIGHT
TRANSPOSED_KERNEL = 4


class ConvReg(nn.Module):
    """Student map (C_s, H_s, W_s) -> teacher map shape (C_t, H_t, W_t)."""

    def __init__(self, s_shape, t_shape):
        super().__init__()
        _, c_s, h_s, w_s = s_shape
        _, c_t, h_t, w_t = t_shape
        if h_s == 2 * h_t:
            self.conv = nn.Conv2d(c_s, c_t, kernel_size=3, stride=2, padding=1)
        elif h_s * 2 == h_t:
            self.conv = nn.ConvTranspose2d(c_s, c_t, kernel_size=TRANSPOSED_KERNEL, stride=2, padding=1)
        elif h_s >= h_t:
            self.conv = nn.Conv2d(c_s, c_t, kernel_size=(1 + h_s - h_t, 1 + w_s - w_t))
        else:
            raise ValueError(f"fitnet: the student's hint map {h_s}x{w_s} is smaller than the teacher's "
                             f"{h_t}x{w_t} and not half of it; choose another fitnet_hint")
        self.bn = nn.BatchNorm2d(c_t)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


class FitNetLoss(Criterion):
    def __init__(self, s_path: str, t_path: str, s_shape, t_shape, weight: float = DEFAULT_FEAT_WEIGHT):
        super().__init__()
        self.student_features, self.teacher_features = (s_path,), (t_path,)
        self.regressor = ConvReg(s_shape, t_shape)
        self.weight = weight

    def terms(self, s, t, y):
        f_s = self.regressor(s.features[self.student_features[0]])
        return {"loss_feat": self.weight * F.mse_loss(f_s, t.features[self.teacher_features[0]])}


KEYS = {
    "fitnet_hint": opt(DEFAULT_HINT_STAGE, "FitNet: hint stage, 1-based (2 = mdistiller's HINT_LAYER 2)", low=1),
    "fitnet_weight": opt(DEFAULT_FEAT_WEIGHT, "FitNet: weight of the hint MSE (mdistiller: 100)", low=0.0),
}


def hint_path(model: nn.Module, stage: int, who: str) -> str:
    stages = stage_paths(model)
    if stage > len(stages):
        raise ValueError(f"fitnet_hint={stage}: the {who} ({type(model).__name__}) has {len(stages)} stages "
                         f"({', '.join(stages)})")
    return stages[stage - 1]


def fitnet_criterion(ctx, model) -> FitNetLoss:
    cfg = ctx.cfg
    s_path = hint_path(model, cfg.fitnet_hint, "student")
    t_path = hint_path(ctx.teacher, cfg.fitnet_hint, "teacher")
    s_shape = feature_shapes(ctx, model, [s_path])[s_path]
    t_shape = feature_shapes(ctx, ctx.teacher, [t_path])[t_path]
    return FitNetLoss(s_path, t_path, s_shape, t_shape, cfg.fitnet_weight)


@method("fitnet", summary="FitNets (Romero et al. 2015): stage-2 hint + ConvReg regressor, MSE x100",
        keys=KEYS, criterion=fitnet_criterion)
def build_fitnet(ctx):
    return Distiller(ctx.student, ctx.teacher, build_criterion("fitnet", ctx, ctx.student), ctx.cfg.ce_weight)
