"""RecursiveMix's consistency term (Yang et al., 2022; public code implus/RecursiveMix-pytorch, after its
H/W fix), the add-on ``mix=recursivemix`` attaches to any method built on :class:`Distiller` (KD,
DKD, ... on the student; GPD on its student view).

The batch transform (:class:`workbench.engine.batch.RecursiveMix`) pastes the whole previous mixed
batch into one box of the current batch and mixes the targets by area. This term makes the student
see the pasted region as the previous images: ROI features = ``roi_align`` (torchvision) on the last
feature map (the last stage's output, ``stage_paths(student)[-1]``), the box in input pixels, output
1 x 1, spatial scale = feature width / input width, ``sampling_ratio=-1``, ``aligned=True``; ROI
logits through the ROI head -- its own ``nn.Linear`` (feature channels -> classes), or the student's
classifier with ``recursivemix_share_fc=true`` -- and

    loss_rm = omega * (1 - lambda) * softCE(roi logits, softmax(previous full-image logits)),

softCE(z, p) = -sum_k p_k log_softmax(z)_k, batch mean, no temperature; 0 when lambda = 1 (the first
batch of an epoch, an empty box). The task loss on the mixed targets is the method's own CE (on soft
targets), so with KD the distillation term sees the mixed images too.

Where we differ from the reference: the ROI head reads our models' last stage output (the reference
taps its own ResNets' final feature map, the same tensor for ResNets / WRNs; for MobileNetV2's
torchvision layout our last stage is ``features.17``, before the final 1x1 conv);
``recursivemix_share_fc`` with GPD is refused (the student view's classifier lives in the dynamic
teacher); the history and the RNG draws are checkpointed mid-epoch (engine.batch.RecursiveMix).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..engine.batch import RecursiveMix
from ..keys import opt
from ..models.hooks import FeatureTap, classifier_path, stage_paths
from .base import AuxTerm
from .spec import Extension, register_extension

NAME = "recursivemix"
DEFAULT_ALPHA, DEFAULT_OMEGA = 0.5, 0.5  # the reference's ImageNet defaults (CIFAR-10 PyramidNet: omega 0.1)

KEYS = {
    "recursivemix_alpha": opt(DEFAULT_ALPHA, "mix=recursivemix: the pasted box's nominal area is U(0, alpha) of the "
                              "image (reference: 0.5)", low=1e-6, high=1.0),
    "recursivemix_omega": opt(DEFAULT_OMEGA, "mix=recursivemix: weight of the ROI consistency term, times "
                              "(1 - lambda) (reference: 0.5 ImageNet, 0.1 CIFAR-10; 0 = no term)", low=0.0),
    "recursivemix_share_fc": opt(False, "mix=recursivemix: the ROI logits go through the student's classifier "
                                 "instead of their own head"),
    "recursivemix_resize": opt("nearest", "mix=recursivemix: how the previous batch is resized into the box",
                               RecursiveMix.MODES),
}


def soft_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """-sum_k p_k log_softmax(z)_k, batch mean."""
    return -(target * F.log_softmax(logits, dim=1)).sum(1).mean()


def roi_features(feature_map: torch.Tensor, box, input_width: int) -> torch.Tensor:
    """(N, C) ROI features: ``roi_align`` of ``box`` (x1, y1, x2, y2 in input pixels, the same for every
    image) on ``feature_map`` (N, C, h, w), 1 x 1 output, aligned."""
    from torchvision.ops import roi_align

    n = feature_map.shape[0]
    boxes = torch.tensor([box], dtype=feature_map.dtype, device=feature_map.device).expand(n, 4)
    rois = torch.cat([torch.arange(n, dtype=feature_map.dtype, device=feature_map.device)[:, None], boxes], 1)
    out = roi_align(feature_map, rois, output_size=(1, 1), spatial_scale=feature_map.shape[-1] / input_width,
                    sampling_ratio=-1, aligned=True)
    return out.flatten(1)


class RecursiveMixTerm(AuxTerm):
    """The ROI consistency term (see the module docstring), reading the transform's ``current``."""

    intermittent = True  # the ROI head sits out the first step of every epoch (lambda = 1)

    def __init__(self, transform: RecursiveMix, feature: str, channels: int, num_classes: int, omega: float,
                 shared_fc: nn.Module | None = None):
        super().__init__()
        self.transform, self.feature, self.omega = transform, feature, float(omega)
        self.student_features = (feature,)
        self.head = nn.Linear(channels, num_classes) if shared_fc is None else None
        self.__dict__["shared_fc"] = shared_fc  # the student's classifier, not a second copy in this module

    def roi_logits(self, feature_map: torch.Tensor) -> torch.Tensor:
        cur = self.transform.current
        feats = roi_features(feature_map, cur.box, cur.size[1])
        return (self.head if self.head is not None else self.shared_fc)(feats)

    def terms(self, s, y, index, snap) -> dict[str, torch.Tensor]:
        cur = self.transform.current
        if cur is None or cur.lam >= 1.0 or self.omega == 0.0:
            return {"loss_rm": s.logits.new_zeros(())}
        target = F.softmax(cur.prev_logits.to(s.logits.device), dim=1)
        z = self.roi_logits(s.features[self.feature])
        return {"loss_rm": self.omega * (1.0 - cur.lam) * soft_ce(z.to(target.dtype), target)}  # float32 under AMP


def last_feature_map(model: nn.Module, example_input) -> tuple[str, tuple]:
    """The last stage's path and its output shape on ``example_input``; ValueError (one line) when the
    model has no spatial feature map there (a ViT's tokens)."""
    name = type(model).__name__
    try:
        path = stage_paths(model)[-1]
    except ValueError:
        raise ValueError(f"mix=recursivemix: the student {name} declares no stages, so there is no last feature map "
                         f"for the ROI head; use a convolutional student or another mix") from None
    if example_input is None:
        return path, ()
    was = model.training
    model.eval()
    try:
        with torch.no_grad(), FeatureTap(model, [path]) as tap:
            model(example_input)
        shape = tuple(tap[path].shape)
    finally:
        model.train(was)
    if len(shape) != 4:
        raise ValueError(f"mix=recursivemix: the student {name} has no spatial feature map (its last stage {path!r} "
                         f"gives shape {shape}, not N x C x H x W), so RecursiveMix's ROI head cannot read it; "
                         f"use a convolutional student or another mix (mixup, cutmix)")
    return path, shape


def _check(cfg) -> None:
    if cfg.mix != NAME:  # its keys are inert without it (as every method's keys are without the method)
        return
    if cfg.recursivemix_share_fc and cfg.method == "gpd":
        raise ValueError("recursivemix_share_fc: with method=gpd the student view's classifier lives in the dynamic "
                         "teacher and cannot be called on ROI features; use recursivemix_share_fc=false")


def _check_build(cfg, student, example_input, train_size) -> None:
    last_feature_map(student, example_input)


def attach(built, cfg, ctx) -> RecursiveMixTerm:
    """Give ``built`` the RecursiveMix transform and its consistency term (on the deployable student's
    last feature map; under GPD the same path of its student view)."""
    student = built.deployable_student()
    path, shape = last_feature_map(student, ctx.example_input)
    fc = student.get_submodule(classifier_path(student))
    channels = shape[1] if shape else fc.in_features
    if cfg.recursivemix_share_fc and channels != fc.in_features:
        raise ValueError(f"recursivemix_share_fc: the last feature map has {channels} channels but the classifier "
                         f"takes {fc.in_features}; use recursivemix_share_fc=false")
    transform = RecursiveMix(cfg.recursivemix_alpha, cfg.recursivemix_resize)
    built.batch_transform = transform
    return built.add_term(RecursiveMixTerm(transform, path, channels, fc.out_features, cfg.recursivemix_omega,
                                           fc if cfg.recursivemix_share_fc else None))


register_extension(Extension(NAME, KEYS, active=lambda cfg: cfg.mix == NAME, apply=attach, validate=_check,
                             check_build=_check_build))
