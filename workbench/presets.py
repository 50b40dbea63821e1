"""Named presets: a screenful of config overrides per experiment (applied on top of the
defaults in :mod:`workbench.config`, under the user's own keys).

Naming: ``<dataset>/<pair>/<method>``. Where each value comes from:

- CIFAR-100 (``cifar100/<pair>/...``): the RepDistiller/mdistiller protocol (240 epochs, SGD
  momentum 0.9, wd 5e-4, batch 64, x0.1 at 150/180/210 -- our config defaults); per pair the lr
  and the DKD beta of mdistiller's ``configs/cifar100/dkd/<pair>.yaml`` (``SOLVER.LR``: 0.05,
  0.01 for MobileNet/ShuffleNet students; ``DKD.BETA``, mdistiller's default 8.0 where a file
  sets none). DKD warms up over 20 epochs (mdistiller's CIFAR default) except under CTKD (the
  public CTKD code's DKD has no warm-up). There are no published CIFAR GPD recipes: the
  ``cifar100/<pair>/gpd_*`` presets are ours, the pair's protocol plus GPD's reference settings
  (grad clip 5, fp32, model EMA 0.99996 per step). That EMA horizon is set in steps by the
  reference's ImageNet runs: 1 / (1 - 0.99996) = 25,000 steps, ~10 epochs of ImageNet at batch
  512 (2,503 steps per epoch; ~5 at batch 256) but ~32 epochs of CIFAR-100 at batch 64 (782 steps
  per epoch) -- a longer average, relative to the 240-epoch schedule, than the reference's.
  The ``fashion/demo/gpd_*`` presets use 0.99 (~100 steps, ~6 of their 20 epochs): at 0.99996 the
  EMA of a 320-step run would still be ~99 % its initial weights (0.99996^320 = 0.987).
- ImageNet DKD baselines: mdistiller's ``configs/imagenet/{r34_r18,r50_mv1}/dkd.yaml`` (lr 0.2,
  beta 0.5 / 2.0, T 1, ``WARMUP: 1``, which with mdistiller's 1-based ``min(epoch / warmup, 1)``
  is no warm-up: our ``dkd_warmup=0``).
- ImageNet GPD (``docs/published.md``): the official code's ``CNN/train_dkd.py`` defaults and README
  commands (r 2, 6 branches, lambda 3, lr 0.1, batch 512, wd 1e-4, 100 epochs, x0.1 at 30/60/90,
  ``--clip-grad-norm 5``, DKD alpha 1, T 1, beta 0.5 for ResNet18 / 2.0 for MobileNet, no DKD
  warm-up, no AMP); with ReviewKD its ``train_reviewkd.py`` (batch 256). Every ImageNet teacher
  is torchvision's pre-trained network (``teacher=torchvision:resnet34`` / ``resnet50``, read from
  the torch hub cache; 73.31 / 76.13 top-1), as the reference code loads it, so no teacher is
  trained: without the file the run stops at once naming the file and its URL. Fine-tuning: the README's ``--epoch_init 50 --learning_rate 0.01`` (its
  30/60/90 steps leave x0.1 at 30 within 50 epochs) from a pre-trained student (``init``).
- ViT students (``cifar100/r32x4_vit/...``, ``fashion/vit/...``): DeiT's recipe (``VIT_RECIPE``, see
  there for what is and is not taken from facebookresearch/deit); no CIFAR CSKD recipe is published,
  so the CIFAR ViT presets are that recipe with the CIFAR pair (32 px, patch 4: an 8x8 grid, the
  size of resnet32x4's last map).
- ``digits/...`` and ``fashion/...``: the CPU demo settings on the embedded data (measured, see below).
- CTC (``cifar100/ctc/{transferability,discriminability}``): the two commands of the public CTC
  code's README (DTennant/dt-tradeoff: 300 epochs, stage 2 from epoch 201, lr 0.05, batch 64, wd
  5e-4 x2 in stage 1, momentum 0.9 for both memories, beta 1, K 16384 with CRD's NCE; alpha /
  tau_ins / tau_nce 0.5 / 0.1 / 0.1 and 0.1 / 0.5 / 0.4; cosine per stage; the stage-1 projector
  fixed at its random init, as that code never optimises it). Its model,
  resnext32_16x4d, is not in our zoo: the presets use its ``ResNet18`` choice (train_ctc.py's
  ``--model`` list). ``fashion/ctc/...``: the same two settings on the embedded data (5 source
  classes, the held-out 5 as transfer target; exact InfoNCE), as ``bench/ctc_embed_study.py``.

- DM-KD (``dmkd/{cifar100,imagenet}/<pair>``): KD on a generated training set named with
  ``train_data=``; values at ``DMKD_CIFAR`` / ``DMKD_IMAGENET``.

``CIFAR_METHODS`` (method name -> method keys) is also read by the bench scripts and notebooks.
"""
from __future__ import annotations

from .methods.dkd import CTKD_DKD_WARMUP_EPOCHS
from .methods.gpd import GPD_AMP, GPD_GRAD_CLIP
from .student_init import INHERIT
from .registry import unknown_among_many

LIST_COMMAND = "`python -m workbench presets`"  # lists every preset, one line each

#: mdistiller configs/cifar100/dkd/*.yaml: SOLVER.LR per student kind, default DKD.BETA
CIFAR_LR, CIFAR_LIGHT_STUDENT_LR = 0.05, 0.01
MDISTILLER_DEFAULT_BETA = 8.0
CIFAR_PAIRS = {  # name: (teacher, student, dkd beta, student lr)      mdistiller config file
    "r32x4_r8x4": ("resnet32x4", "resnet8x4", MDISTILLER_DEFAULT_BETA, CIFAR_LR),  # res32x4_res8x4
    "wrn40_2_wrn16_2": ("wrn_40_2", "wrn_16_2", 6.0, CIFAR_LR),  # wrn40_2_wrn_16_2
    "wrn40_2_wrn40_1": ("wrn_40_2", "wrn_40_1", 6.0, CIFAR_LR),  # wrn40_2_wrn_40_1
    "r56_r20": ("resnet56", "resnet20", 2.0, CIFAR_LR),  # res56_res20
    "vgg13_vgg8": ("vgg13", "vgg8", 6.0, CIFAR_LR),  # vgg13_vgg8
    "r110_r32": ("resnet110", "resnet32", 2.0, CIFAR_LR),  # res110_res32
    "r32x4_shv1": ("resnet32x4", "ShuffleV1", MDISTILLER_DEFAULT_BETA, CIFAR_LIGHT_STUDENT_LR),  # res32x4_shuv1
    "r32x4_shv2": ("resnet32x4", "ShuffleV2", MDISTILLER_DEFAULT_BETA, CIFAR_LIGHT_STUDENT_LR),  # res32x4_shuv2
    "wrn40_2_shv1": ("wrn_40_2", "ShuffleV1", MDISTILLER_DEFAULT_BETA, CIFAR_LIGHT_STUDENT_LR),  # wrn40_2_shuv1
    "vgg13_mv2": ("vgg13", "MobileNetV2", 6.0, CIFAR_LIGHT_STUDENT_LR),  # vgg13_mv2
    "r50_mv2": ("ResNet50", "MobileNetV2", MDISTILLER_DEFAULT_BETA, CIFAR_LIGHT_STUDENT_LR),  # res50_mv2
}
CIFAR_METHODS = {
    "ce": dict(method="ce"),
    "kd": dict(method="kd"),
    "dkd": dict(method="dkd"),
    "kd_dot": dict(method="kd", dot=True),
    "dkd_dot": dict(method="dkd", dot=True),
    "kd_ctkd": dict(method="ctkd", base="kd"),
    "dkd_ctkd": dict(method="ctkd", base="dkd", dkd_warmup=CTKD_DKD_WARMUP_EPOCHS),
    "gpd_kd": dict(method="gpd", base="kd", grad_clip=GPD_GRAD_CLIP),
    "gpd_dkd": dict(method="gpd", base="dkd", grad_clip=GPD_GRAD_CLIP),
    "gpd_scratch": dict(method="gpd", base="none", grad_clip=GPD_GRAD_CLIP),
    "fitnet": dict(method="fitnet"),  # mdistiller configs/cifar100/fitnet.yaml (+ engine/cfg.py FITNET)
    "reviewkd": dict(method="reviewkd"),  # mdistiller configs/cifar100/reviewkd.yaml (+ cfg.py REVIEWKD)
    "gpd_reviewkd": dict(method="gpd", base="reviewkd", grad_clip=GPD_GRAD_CLIP),  # the GPD paper's second base
    # DisCo-style embedding distillation (supervised adaptation, no published CIFAR recipe: our defaults,
    # DisCo's 2048-wide projector hidden layer); GPD on it gives each view its own projector
    "embed": dict(method="embed"),
    "gpd_embed": dict(method="gpd", base="embed", grad_clip=GPD_GRAD_CLIP),
    # online group distillation (methods/dml.py, methods/orc.py): two resnet-sized networks each,
    # their keys' defaults (DML: the paper's T 1; ORC: ours, its code was never released)
    "dml": dict(method="dml"),
    "orc": dict(method="orc"),
}
#: per-pair method settings of mdistiller's configs (others: its defaults)
CIFAR_PAIR_METHOD = {("r32x4_r8x4", "reviewkd"): dict(reviewkd_weight=5.0),  # configs/cifar100/reviewkd.yaml
                     ("r32x4_r8x4", "gpd_reviewkd"): dict(reviewkd_weight=5.0)}
#: keys every GPD preset sets (fp32 as the reference; not in CIFAR_METHODS so that a notebook's
#: own ``amp`` parameter is not overridden by a method entry)
GPD_PRESET_KEYS = dict(amp=GPD_AMP)

IMAGENET = dict(dataset="imagefolder", epochs=100, batch_size=512, lr=0.1, weight_decay=1e-4,
                milestones=(30, 60, 90), eval_batch_size=256, image_size=224)
NO_WARMUP = 0.0  # mdistiller's ImageNet WARMUP 1 / the GPD code's DKD: full weight from epoch 1
#: the pre-trained teachers of the reference code (GPD's --teacher-weight, mdistiller's torchvision
#: models): torchvision's ImageNet weights from the local torch hub cache (workbench.torchvision_teachers)
IMAGENET_TEACHERS = {"resnet34": "torchvision:resnet34", "resnet50": "torchvision:resnet50"}
IMAGENET_PAIRS = {  # name: (teacher, student, dkd beta)
    "r34_r18": (IMAGENET_TEACHERS["resnet34"], "resnet18", 0.5),
    "r50_mbv1": (IMAGENET_TEACHERS["resnet50"], "mobilenet_v1", 2.0),
}
IMAGENET_STUDENTS = {"r18": "resnet18", "mbv1": "mobilenet_v1"}
DKD_IMAGENET = dict(method="dkd", lr=0.2, dkd_T=1.0, dkd_warmup=NO_WARMUP)
GPD_IMAGENET = dict(method="gpd", ratio=2.0, branches="default", gpd_lambda=3.0, grad_clip=GPD_GRAD_CLIP,
                    dkd_alpha=1.0, dkd_T=1.0, kd_T=1.0, dkd_warmup=NO_WARMUP, **GPD_PRESET_KEYS)
FINETUNE = dict(epochs=50, lr=0.01, milestones=(30,))
#: mdistiller configs/imagenet/r34_r18/reviewkd.yaml: weight 1, 1 warm-up epoch, student pre-activations
#: (reviewkd_warmup=1 with its 1-based min(epoch / warmup, 1): full weight from epoch 1)
REVIEWKD_IMAGENET = dict(method="reviewkd", reviewkd_weight=1.0, reviewkd_warmup=1, reviewkd_student_preact=True)
#: batch 256 at lr 0.1: mdistiller's reviewkd.yaml (SOLVER.BATCH_SIZE 256, LR 0.1) and the GPD code's
#: train_reviewkd.py (--batch_size default 256, --learning_rate 0.1; its README command sets neither),
#: where train_dkd.py's default is 512
REVIEWKD_IMAGENET_BATCH = 256
#: pre-trained students the fine-tuning presets start from (the GPD README's files in its
#: ``pretrained/`` folder: torchvision's ResNet18, the authors' MobileNet); override with init=
FINETUNE_INIT = {"resnet18": "pretrained/resnet18-f37072fd.pth",
                 "mobilenet_v1": "pretrained/mobilenet_sgd_68.848.pth.tar"}


#: DeiT's recipe for ViT students (facebookresearch/deit main.py defaults): AdamW (torch's betas and
#: eps = DeiT's --opt-betas None / --opt-eps 1e-8), lr 5e-4 at a batch of 512 (DeiT scales lr by
#: batch / 512), weight decay 0.05 except norms, biases, tokens and position embeddings (its
#: no_weight_decay), cosine schedule, 5 linear warm-up epochs, 300 epochs. DeiT mixes each batch
#: with timm's Mixup (mixup 0.8 or cutmix 1.0, switched at random); our batch transforms draw one
#: kind per run: cutmix, alpha 1.0. Not taken (not in the engine): label smoothing 0.1,
#: RandAugment, random erasing, repeated augmentation, stochastic depth 0.1, model EMA.
DEIT_LR, DEIT_LR_BATCH, DEIT_WEIGHT_DECAY, DEIT_WARMUP_EPOCHS, DEIT_EPOCHS = 5e-4, 512, 0.05, 5.0, 300
DEIT_CUTMIX_ALPHA = 1.0
VIT_RECIPE = dict(optimizer="adamw", lr=DEIT_LR, batch_size=DEIT_LR_BATCH, weight_decay=DEIT_WEIGHT_DECAY,
                  wd_exempt=True, schedule="cosine", warmup_epochs=DEIT_WARMUP_EPOCHS, epochs=DEIT_EPOCHS,
                  mix="cutmix", mix_alpha=DEIT_CUTMIX_ALPHA)
#: ViT-student method entries: the CE baseline trains the plain ViT (no distillation token), DeiT and
#: CSKD its distillation-token twin
VIT_METHODS = {"ce": dict(method="ce"), "deit": dict(method="deit"), "cskd": dict(method="cskd")}


def vit_student(size: str, method: str) -> str:
    """``vit_<size>`` for the CE baseline, ``vit_<size>_dist`` for the token methods."""
    from .models.vit import DIST_SUFFIX

    return f"vit_{size}" if method == "ce" else f"vit_{size}{DIST_SUFFIX}"


#: the composed distiller's KD + attention-transfer point (terms and the KD recipe's CE weight)
COMPOSED_KD_AT, COMPOSED_KD_CE_WEIGHT = "logits:none:kl:0.9+stages:sattn:mse:1000", 0.1
FASHION_TEACHER = "embedded:fashion_resnet20"
FASHION_DKD_WARMUP = 2.0
FASHION_EMA_DECAY = 0.99  # an EMA horizon of ~100 steps (6 of the demo's 20 epochs)
#: DeiT's optimiser settings on the CPU demo (vit_nano, the demo's 100 images per class, batch 64,
#: 20 epochs): patch 4 makes a 7x7 grid on 28 px, the shipped resnet20's last map. Ours, not
#: tuned: lr 1e-3 (DeiT's batch scaling would give 6e-5 at batch 64, little for 20 epochs from
#: scratch; 1e-3 is the one value tried: CE 50.1 % after 20 epochs, seed 0), 2 warm-up epochs, and
#: the demo's plain augmentation instead of cutmix (not compared here).
FASHION_VIT = dict(optimizer="adamw", lr=2 * DEIT_LR, weight_decay=DEIT_WEIGHT_DECAY, wd_exempt=True,
                   warmup_epochs=2.0, patch_size=4)


def _method(name: str) -> dict:
    """A ``CIFAR_METHODS`` entry plus the keys every preset of its method sets."""
    m = CIFAR_METHODS[name]
    return dict(m, **(GPD_PRESET_KEYS if m["method"] == "gpd" else {}))


def _cifar(pair: str, method: str) -> dict:
    teacher, student, beta, lr = CIFAR_PAIRS[pair]
    return dict(dataset="cifar100", teacher=teacher, student=student, lr=lr, dkd_beta=beta, **_method(method),
                **CIFAR_PAIR_METHOD.get((pair, method), {}))


def _imagenet() -> dict[str, dict]:
    presets = {}
    for pair, (teacher, student, beta) in IMAGENET_PAIRS.items():
        presets[f"imagenet/{pair}/dkd"] = dict(IMAGENET, **DKD_IMAGENET, teacher=teacher, student=student,
                                               dkd_beta=beta)
        presets[f"imagenet/{pair}/gpd_dkd"] = dict(IMAGENET, **GPD_IMAGENET, base="dkd", teacher=teacher,
                                                   student=student, dkd_beta=beta)
    teacher, student, _ = IMAGENET_PAIRS["r34_r18"]
    presets["imagenet/r34_r18/reviewkd"] = dict(IMAGENET, **REVIEWKD_IMAGENET, teacher=teacher, student=student,
                                                batch_size=REVIEWKD_IMAGENET_BATCH)
    review_keys = {k: v for k, v in REVIEWKD_IMAGENET.items() if k != "method"}
    presets["imagenet/r34_r18/gpd_reviewkd"] = dict(IMAGENET, **GPD_IMAGENET, **review_keys, base="reviewkd",
                                                    teacher=teacher, student=student, batch_size=REVIEWKD_IMAGENET_BATCH)
    for short, student in IMAGENET_STUDENTS.items():
        scratch = dict(IMAGENET, **GPD_IMAGENET, base="none", teacher="none", student=student)
        presets[f"imagenet/{short}/gpd_scratch"] = scratch
        presets[f"imagenet/{short}/gpd_finetune"] = dict(scratch, **FINETUNE, init=FINETUNE_INIT[student])
    return presets


def _build() -> dict[str, dict]:
    presets = {f"cifar100/{pair}/{m}": _cifar(pair, m) for pair in CIFAR_PAIRS for m in CIFAR_METHODS}
    presets.update(_imagenet())
    # CPU demo on the embedded dataset: 30 training images per class, the rest (~1500) as test
    # set; a resnet8x4 teacher measurably stronger than a thin resnet8 student (README).
    # Measured (3 seeds): with 15 images/class the resnet8x4 teacher (96.7 %) is clearly stronger
    # than a CE-trained resnet8 (95.1 +- 0.5 %); with the full split every method sits at 99 %+.
    digits = dict(dataset="digits", train_per_class=15, teacher="resnet8x4", student="resnet8",
                  epochs=60, teacher_epochs=60, batch_size=64, lr=0.05, schedule="cosine",
                  eval_batch_size=512, probe_samples=500)
    for mname in ("ce", "kd", "dkd", "kd_dot", "kd_ctkd", "gpd_kd", "gpd_dkd", "gpd_scratch"):
        presets[f"digits/demo/{mname}"] = dict(digits, **_method(mname))
    # CPU demo on the embedded Fashion-MNIST subset (500 train / 100 test images per class): a resnet20
    # teacher trained on all its training images (90.4 %), a resnet8 student on 100 images per class.
    # Measured over 3 seeds (bench/README.md, bench/fashion_methods.py): student last-epoch top-1
    # CE 75.2 +- 0.6 %, KD 78.2 +- 0.2 %; a teacher trained on the student's 100/class gives no useful gap.
    # The teacher ships with the package (embedded:fashion_resnet20, checksum-verified): it is this
    # preset's teacher phase with teacher=resnet20 (teacher_data/teacher_epochs below say how it was
    # trained; scripts/make_teachers.py rebuilds it), so the demo trains none.
    # DKD's warm-up is scaled to the 20-epoch budget (mdistiller: 20 of 240 epochs -> 2 of 20).
    fashion = dict(dataset="fashion_mnist", data_source="embedded", train_per_class=100,
                   teacher=FASHION_TEACHER, teacher_data="all", teacher_epochs=30, student="resnet8", epochs=20,
                   batch_size=64, lr=0.05, schedule="cosine", eval_batch_size=500, probe_samples=500)
    for mname in ("ce", "kd", "dkd", "gpd_kd", "gpd_dkd", "gpd_scratch", "dml", "orc"):
        entry = dict(fashion, **_method(mname))
        if "dkd" in mname:
            entry["dkd_warmup"] = FASHION_DKD_WARMUP
        if entry["method"] == "gpd":  # ~320 steps: the reference's per-step 0.99996 would average the init
            entry["ema_decay"] = FASHION_EMA_DECAY
        presets[f"fashion/demo/{mname}"] = entry
    # The composed distiller (methods/composed.py) at a point no single method covers: KD and
    # attention transfer summed at their references' weights (mdistiller: CE 0.1 + KD 0.9 at T 4;
    # AT 1000 over every stage, p 2), alone and as GPD's base. Ours, not tuned on this data.
    kd_at = dict(ce_weight=COMPOSED_KD_CE_WEIGHT, composed_terms=COMPOSED_KD_AT)
    presets["fashion/demo/composed_kd_at"] = dict(fashion, method="composed", **kd_at)
    presets["fashion/demo/gpd_composed_kd_at"] = dict(fashion, method="gpd", base="composed", **kd_at, **GPD_PRESET_KEYS,
                                                      grad_clip=GPD_GRAD_CLIP, ema_decay=FASHION_EMA_DECAY)
    # weight inheritance for the same-family pair resnet20 -> resnet8 (block 0 of each stage):
    # the demo settings, started from the shipped teacher's weights (bench/fashion_inherit.py)
    for mname in ("ce", "kd", "gpd_kd"):
        presets[f"fashion/inherit/{mname}"] = dict(presets[f"fashion/demo/{mname}"], init=INHERIT)
    for mname, entry in VIT_METHODS.items():
        presets[f"cifar100/r32x4_vit/{mname}"] = dict(VIT_RECIPE, dataset="cifar100", teacher="resnet32x4",
                                                     student=vit_student("tiny", mname), **entry)
        presets[f"fashion/vit/{mname}"] = dict(fashion, **FASHION_VIT, student=vit_student("nano", mname), **entry)
    presets.update(_ctc())
    return presets


#: DTennant/dt-tradeoff README commands (both presets share everything but alpha / tau_ins / tau_nce)
CTC_PAPER = dict(method="ctc", teacher="none", dataset="cifar100", student="ResNet18", epochs=300, ctc_stage_epoch=200,
                 lr=0.05, batch_size=64, weight_decay=5e-4, momentum=0.9, schedule="cosine", ctc_nce="crd",
                 ctc_nce_k=16384, ctc_momentum=0.9, ctc_beta=1.0, ctc_stage2_lr=0.1, ctc_wd_factor=2.0,
                 ctc_projector="fixed")
#: bench/ctc_embed_study.py's source task: Fashion-MNIST classes 0-4, the held-out 5-9 as transfer target
FASHION_TRANSFER = dict(dataset="fashion_mnist", data_source="embedded", source_classes="0,1,2,3,4",
                        train_per_class=100, student="resnet8", epochs=20, batch_size=64, lr=0.05, schedule="cosine",
                        eval_batch_size=500, probe_samples=500)


def _ctc() -> dict[str, dict]:
    from .methods.ctc import PRESETS as CTC_SETTINGS

    out = {}
    for name, keys in CTC_SETTINGS.items():
        out[f"cifar100/ctc/{name}"] = dict(CTC_PAPER, **keys)
        out[f"fashion/ctc/{name}"] = dict(FASHION_TRANSFER, method="ctc", teacher="none", ctc_nce="exact", **keys)
    return out


#: DM-KD (Li et al. 2023; zhengli97/DM-KD train_student.py and scripts/imagenet_distill.sh): KD alone on
#: generated images (CE off: labels only feed the train top-1), teacher in eval mode, evaluation on the
#: real test set. The generated set is the user's: ``train_data=<folder of class folders>`` (nothing is
#: generated here). CIFAR-100: 240 epochs, lr 0.1 x0.1 at 150/180/210, wd 5e-4, batch 128, T 4, KD
#: weight 0.9 (its ``-a`` default); the ImageNet-class samples resized to 32 px (our train_data resize).
#: ImageNet: the script's 100 epochs (the README's tables: 200), lr 0.1 x0.1 at 30/60/90, wd 1e-4, batch
#: 256, T 10, KD weight 1 (``-r 0 -a 1``), ResNet18 -> ResNet18 (its weaker-teacher finding) and 34 -> 18.
DMKD_CIFAR = dict(dataset="cifar100", method="kd", ce_weight=0.0, kd_weight=0.9, kd_T=4.0, epochs=240, lr=0.1,
                  milestones=(150, 180, 210), weight_decay=5e-4, batch_size=128)
DMKD_CIFAR_PAIRS = {"r34_r18": ("ResNet34", "ResNet18"), "wrn40_2_wrn16_2": ("wrn_40_2", "wrn_16_2")}
DMKD_IMAGENET = dict(IMAGENET, method="kd", ce_weight=0.0, kd_weight=1.0, kd_T=10.0, epochs=100, lr=0.1,
                     milestones=(30, 60, 90), weight_decay=1e-4, batch_size=256)
DMKD_IMAGENET_PAIRS = {"r18_r18": ("resnet18", "resnet18"), "r34_r18": ("resnet34", "resnet18")}


def _dmkd() -> dict[str, dict]:
    out = {f"dmkd/cifar100/{pair}": dict(DMKD_CIFAR, teacher=t, student=s) for pair, (t, s) in DMKD_CIFAR_PAIRS.items()}
    out.update({f"dmkd/imagenet/{pair}": dict(DMKD_IMAGENET, teacher=t, student=s)
                for pair, (t, s) in DMKD_IMAGENET_PAIRS.items()})
    return out


PRESETS = {**_build(), **_dmkd()}


#: presets written by a distiller search (``python -m workbench search``): ``search/<name>/best`` is
#: the ``config`` of ``<runs>/searches/<name>/best.json`` (the runs root: ``WORKBENCH_RUNS`` or
#: ``runs/`` of the checkout), read when asked for -- a user preset source beside the built-in ones
SEARCH_PREFIX, SEARCH_BEST, SEARCHES_DIR, SEARCH_BEST_FILE = "search/", "best", "searches", "best.json"


def search_preset_file(name: str):
    """The file behind ``search/<name>/best`` (None for another name)."""
    parts = name.split("/")
    if len(parts) != 3 or parts[0] + "/" != SEARCH_PREFIX or parts[2] != SEARCH_BEST or not parts[1]:
        return None
    from .paths import runs_root

    return runs_root() / SEARCHES_DIR / parts[1] / SEARCH_BEST_FILE


def _search_preset(name: str) -> dict:
    import json

    path = search_preset_file(name)
    try:
        record = json.loads(path.read_text())
    except OSError:
        raise ValueError(f"unknown preset {name!r}: no search wrote {path} (run `python -m workbench search "
                         f"<spec>` with name {name.split('/')[1]!r}; searches live under <runs>/{SEARCHES_DIR}/)") from None
    except ValueError:
        raise ValueError(f"preset {name!r}: {path} is not valid JSON") from None
    config = record.get("config")
    if not isinstance(config, dict):
        raise ValueError(f"preset {name!r}: {path} holds no 'config' mapping")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}


def get_preset(name: str) -> dict:
    if search_preset_file(name) is not None:
        return _search_preset(name)
    if name not in PRESETS:
        raise ValueError(unknown_among_many("preset", name, sorted(PRESETS), LIST_COMMAND))
    return dict(PRESETS[name])


def available() -> list[str]:
    return sorted(PRESETS)
