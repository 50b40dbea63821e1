"""Published top-1 numbers the results table (:mod:`workbench.table`) puts beside ours, each with
its source, the statistic it reports, and the preset that reproduces its protocol.

A published number is shown only where a table row was trained *exactly* with that preset's
settings (every config key equal, :func:`workbench.table.protocol_match`), so a 2-epoch test run
or a run with another lr never sits next to a 240-epoch paper number.

Statistics: ``last`` = the student's top-1 after the last epoch; ``best`` = the best epoch's;
``best_reported`` = the best epoch of max(raw, EMA) top-1 (GPD's reported metric, gpd.md).
The anchors' CIFAR-100 KD rows are last-epoch numbers and its DKD rows best-epoch means over 5
seeds; for KD+DOT and CTKD we compare the best epoch (what mdistiller's and the public CTKD
code's logs report as their result).

Sources
- [DKD] Zhao et al., Decoupled Knowledge Distillation, CVPR 2022, Tables 1-2 (the KD and DKD
  CIFAR-100 rows; also in the megvii-research/mdistiller README, which prints WRN-40-2 ->
  WRN-16-2 DKD as 76.23 and labels the ResNet32x4 -> ShuffleNet-V2 column "MobileNet-V2").
- [DOT] Zhao et al., DOT: A Distillation-Oriented Trainer, ICCV 2023 (mdistiller README).
- [CTKD] Li et al., Curriculum Temperature for Knowledge Distillation, AAAI 2023 (CTKD+KD rows).
- [GPD] Guo et al., Gap Preserving Distillation, ICLR 2025 (ImageNet; DKD and ReviewKD baselines
  as that paper reports them).
ReviewKD's CIFAR-100 numbers are not in the mdistiller README nor the ReviewKD repository's
README; they are left out rather than typed from memory.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

LAST, BEST, BEST_REPORTED = "last", "best", "best_reported"
SOURCES = {
    "DKD": "Zhao et al., Decoupled Knowledge Distillation, CVPR 2022, Tables 1-2 (also the mdistiller README)",
    "DOT": "Zhao et al., DOT: A Distillation-Oriented Trainer, ICCV 2023 (mdistiller README)",
    "CTKD": "Li et al., Curriculum Temperature for Knowledge Distillation, AAAI 2023",
    "GPD": "Guo et al., Gap Preserving Distillation, ICLR 2025",
}


@dataclass(frozen=True)
class Published:
    preset: str  # the preset whose settings reproduce the published protocol
    top1: float
    statistic: str  # last | best | best_reported
    source: str  # a key of SOURCES
    teacher_top1: Optional[float] = None  # the published teacher, for reference


def _cifar(pair: str, teacher: float, rows: dict) -> list[Published]:
    return [Published(f"cifar100/{pair}/{m}", v, stat, src, teacher) for m, (v, stat, src) in rows.items()]


PUBLISHED: tuple[Published, ...] = tuple(
    _cifar("r32x4_r8x4", 79.42, {"kd": (73.33, LAST, "DKD"), "dkd": (76.32, BEST, "DKD"),
                                 "kd_dot": (75.12, BEST, "DOT")})
    + _cifar("wrn40_2_wrn16_2", 75.61, {"kd": (74.92, LAST, "DKD"), "dkd": (76.24, BEST, "DKD"),
                                        "kd_ctkd": (75.45, BEST, "CTKD")})
    + _cifar("r56_r20", 72.34, {"kd": (70.66, LAST, "DKD"), "dkd": (71.97, BEST, "DKD"),
                                "kd_ctkd": (71.19, BEST, "CTKD")})
    + _cifar("vgg13_vgg8", 74.64, {"kd": (72.98, LAST, "DKD"), "dkd": (74.68, BEST, "DKD"),
                                   "kd_dot": (73.77, BEST, "DOT"), "kd_ctkd": (73.52, BEST, "CTKD")})
    + _cifar("r110_r32", 74.31, {"kd": (73.08, LAST, "DKD"), "dkd": (74.11, BEST, "DKD"),
                                 "kd_ctkd": (73.52, BEST, "CTKD")})
    + _cifar("wrn40_2_wrn40_1", 75.61, {"kd": (73.54, LAST, "DKD"), "dkd": (74.81, BEST, "DKD")})
    + _cifar("r32x4_shv1", 79.42, {"kd": (74.07, LAST, "DKD"), "dkd": (76.45, BEST, "DKD")})
    + _cifar("r32x4_shv2", 79.42, {"kd": (74.45, LAST, "DKD"), "dkd": (77.07, BEST, "DKD"),
                                   "kd_dot": (75.55, BEST, "DOT")})
    + _cifar("wrn40_2_shv1", 75.61, {"kd": (74.83, LAST, "DKD"), "dkd": (76.70, BEST, "DKD")})
    + _cifar("vgg13_mv2", 74.64, {"kd": (67.37, LAST, "DKD"), "dkd": (69.71, BEST, "DKD")})
    + _cifar("r50_mv2", None, {"kd": (67.35, LAST, "DKD"), "dkd": (70.35, BEST, "DKD")})
    + [
        # ImageNet (GPD paper): ResNet34 (73.31) -> ResNet18 (69.75); ResNet50 -> MobileNetV1
        Published("imagenet/r34_r18/dkd", 71.70, BEST, "GPD", 73.31),
        Published("imagenet/r34_r18/gpd_dkd", 72.71, BEST_REPORTED, "GPD", 73.31),
        Published("imagenet/r34_r18/reviewkd", 71.61, BEST, "GPD", 73.31),
        Published("imagenet/r34_r18/gpd_reviewkd", 72.50, BEST_REPORTED, "GPD", 73.31),
        Published("imagenet/r50_mbv1/dkd", 72.05, BEST, "GPD"),
        Published("imagenet/r50_mbv1/gpd_dkd", 73.63, BEST_REPORTED, "GPD"),
        Published("imagenet/r18/gpd_scratch", 71.87, BEST_REPORTED, "GPD"),
        Published("imagenet/mbv1/gpd_scratch", 73.07, BEST_REPORTED, "GPD"),
        Published("imagenet/r18/gpd_finetune", 71.12, BEST_REPORTED, "GPD"),
        Published("imagenet/mbv1/gpd_finetune", 69.47, BEST_REPORTED, "GPD"),
    ]
)


def by_preset() -> dict[str, Published]:
    return {p.preset: p for p in PUBLISHED}
