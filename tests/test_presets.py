"""Presets carry the published recipes: mdistiller's CIFAR-100 lr/beta per pair, the ImageNet DKD
baselines, GPD's reference settings (clip 5, fp32, no DKD warm-up, fine-tuning schedule), CTKD's
DKD without warm-up; ``python -m workbench presets`` lists them."""
import pytest

from workbench import models, references
from workbench.cli import main
from workbench.methods.dkd import dkd_warmup
from workbench.config import RunConfig
from workbench.engine.schedule import lr_factor
from workbench.presets import CIFAR_METHODS, PRESETS

# (teacher, student, SOLVER.LR, DKD.BETA) as written in mdistiller's configs/cifar100/dkd/*.yaml
# (beta 8.0 = mdistiller's CFG.DKD.BETA default where the file sets none)
MDISTILLER_CIFAR = {
    "r32x4_r8x4": ("resnet32x4", "resnet8x4", 0.05, 8.0),
    "wrn40_2_wrn16_2": ("wrn_40_2", "wrn_16_2", 0.05, 6.0),
    "wrn40_2_wrn40_1": ("wrn_40_2", "wrn_40_1", 0.05, 6.0),
    "r56_r20": ("resnet56", "resnet20", 0.05, 2.0),
    "vgg13_vgg8": ("vgg13", "vgg8", 0.05, 6.0),
    "r110_r32": ("resnet110", "resnet32", 0.05, 2.0),
    "r32x4_shv1": ("resnet32x4", "ShuffleV1", 0.01, 8.0),
    "r32x4_shv2": ("resnet32x4", "ShuffleV2", 0.01, 8.0),
    "wrn40_2_shv1": ("wrn_40_2", "ShuffleV1", 0.01, 8.0),
    "vgg13_mv2": ("vgg13", "MobileNetV2", 0.01, 6.0),
    "r50_mv2": ("ResNet50", "MobileNetV2", 0.01, 8.0),
}


def preset(name: str) -> RunConfig:
    return RunConfig.from_dict({"preset": name})


@pytest.mark.parametrize("pair", sorted(MDISTILLER_CIFAR))
def test_cifar_pairs_use_mdistillers_lr_and_beta_for_every_method(pair):
    teacher, student, lr, beta = MDISTILLER_CIFAR[pair]
    for method in CIFAR_METHODS:
        c = preset(f"cifar100/{pair}/{method}")
        assert (c.teacher, c.student, c.lr, c.dkd_beta) == (teacher, student, lr, beta)
        assert (c.epochs, c.batch_size, c.milestones, c.weight_decay) == (240, 64, (150, 180, 210), 5e-4)


def test_every_preset_names_registered_models():
    for name, values in PRESETS.items():
        for key in ("teacher", "student"):
            value = values.get(key, "none")
            if key == "teacher":  # shipped / torchvision's: the entry names the model
                value = references.teacher_ref(value, check=False).arch or "none"
            if value != "none":
                assert value in models.MODELS, (name, key, value)


def test_cifar_methods_keep_their_shape():
    """Bench scripts and notebooks read these entries: method name -> dict of config keys."""
    assert set(CIFAR_METHODS) == {"ce", "kd", "dkd", "kd_dot", "dkd_dot", "kd_ctkd", "dkd_ctkd",
                                  "gpd_kd", "gpd_dkd", "gpd_scratch", "fitnet", "reviewkd", "gpd_reviewkd",
                                  "embed", "gpd_embed", "dml", "orc"}
    assert all(isinstance(m, dict) and "method" in m for m in CIFAR_METHODS.values())


def test_gpd_presets_clip_at_5_in_fp32_and_others_keep_the_defaults():
    for name in PRESETS:
        c = preset(name)
        if c.method == "gpd":
            assert (c.resolved_grad_clip, c.amp, c.resolved_amp) == (5.0, "off", "off"), name
        else:
            assert (c.resolved_grad_clip, c.amp) == (0.0, "auto"), name


def test_dkd_warmup_20_on_cifar_none_under_ctkd_and_on_imagenet():
    assert dkd_warmup(preset("cifar100/r32x4_r8x4/dkd")) == 20.0
    assert dkd_warmup(preset("cifar100/r32x4_r8x4/gpd_dkd")) == 20.0
    for name in PRESETS:
        c = preset(name)
        if c.ctkd:
            assert dkd_warmup(c) == 0.0, name
        if name.startswith("imagenet/") and "dkd" in (c.method, c.resolved_base):
            assert dkd_warmup(c) == 0.0, name


def test_feature_method_presets_follow_mdistiller():
    """configs/cifar100/{fitnet,reviewkd}.yaml (resnet32x4 -> resnet8x4; ReviewKD weight 5) and
    configs/imagenet/r34_r18/reviewkd.yaml (weight 1, 1 warm-up epoch, student pre-activations)."""
    fit, rev, grev = (preset(f"cifar100/r32x4_r8x4/{m}") for m in ("fitnet", "reviewkd", "gpd_reviewkd"))
    assert (fit.method, fit.fitnet_hint, fit.fitnet_weight, fit.lr) == ("fitnet", 2, 100.0, 0.05)
    assert (rev.reviewkd_weight, rev.reviewkd_warmup, rev.reviewkd_student_preact) == (5.0, 20, False)
    assert (grev.method, grev.resolved_base, grev.reviewkd_weight, grev.resolved_grad_clip) == ("gpd", "reviewkd", 5.0, 5.0)
    assert preset("cifar100/r56_r20/reviewkd").reviewkd_weight == 1.0  # mdistiller's default elsewhere
    for name in ("imagenet/r34_r18/reviewkd", "imagenet/r34_r18/gpd_reviewkd"):
        c = preset(name)
        assert (c.teacher, c.student, c.reviewkd_weight, c.reviewkd_warmup, c.reviewkd_student_preact) == \
            ("torchvision:resnet34", "resnet18", 1.0, 1, True), name
        # batch 256 at lr 0.1: mdistiller's reviewkd.yaml and GPD's train_reviewkd.py (train_dkd.py: 512)
        assert (c.batch_size, c.lr, c.epochs, c.weight_decay) == (256, 0.1, 100, 1e-4), name


@pytest.mark.parametrize("pair, teacher, student, beta", [
    ("r34_r18", "torchvision:resnet34", "resnet18", 0.5), ("r50_mbv1", "torchvision:resnet50", "mobilenet_v1", 2.0)])
def test_imagenet_pairs(pair, teacher, student, beta):
    dkd, gpd = preset(f"imagenet/{pair}/dkd"), preset(f"imagenet/{pair}/gpd_dkd")
    for c in (dkd, gpd):
        assert (c.teacher, c.student, c.dkd_beta, c.dkd_T, c.dkd_alpha) == (teacher, student, beta, 1.0, 1.0)
        assert (c.epochs, c.batch_size, c.weight_decay, c.milestones) == (100, 512, 1e-4, (30, 60, 90))
    assert (dkd.method, dkd.lr) == ("dkd", 0.2)  # mdistiller configs/imagenet/*/dkd.yaml
    assert (gpd.method, gpd.resolved_base, gpd.lr, gpd.ratio, gpd.gpd_lambda) == ("gpd", "dkd", 0.1, 2.0, 3.0)
    assert "imagenet/r50_mbv2/gpd_dkd" not in PRESETS  # the paper's MobileNet is V1


@pytest.mark.parametrize("short, student", [("r18", "resnet18"), ("mbv1", "mobilenet_v1")])
def test_imagenet_scratch_and_finetune(short, student):
    scratch, ft = preset(f"imagenet/{short}/gpd_scratch"), preset(f"imagenet/{short}/gpd_finetune")
    for c in (scratch, ft):
        assert (c.method, c.resolved_base, c.student, c.uses_teacher) == ("gpd", "none", student, False)
    assert (scratch.epochs, scratch.lr, scratch.init) == (100, 0.1, "")
    assert (ft.epochs, ft.lr) == (50, 0.01) and ft.init.endswith((".pth", ".pth.tar"))
    # lr x0.1 at 30 and never again within the 50 epochs (0-based epoch index, as in the GPD code)
    factors = [lr_factor(ft.schedule, e, ft.epochs, ft.milestones, ft.lr_decay) for e in range(ft.epochs)]
    assert factors[:30] == [1.0] * 30 and factors[30:] == pytest.approx([0.1] * 20)


def test_presets_command_lists_them(capsys):
    """One line per preset (name, teacher -> student, method, data); ``presets <name>`` = its values."""
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip() and "/" in line.split()[0]}
    assert set(lines) == set(PRESETS)
    assert "resnet50 -> mobilenet_v1" in lines["imagenet/r50_mbv1/gpd_dkd"] and "gpd (base dkd)" in lines["imagenet/r50_mbv1/gpd_dkd"]
    assert main(["presets", "cifar100/wrn40_2_shv1/dkd"]) == 0
    values = capsys.readouterr().out
    assert "lr=0.01" in values and "dkd_beta=8.0" in values
    assert main(["presets", "imagenet/r50_mbv1/gpd_dkd"]) == 0 and "amp=off" in capsys.readouterr().out


def test_shipped_teacher_is_verified_and_a_damaged_copy_is_one_line(tmp_path, monkeypatch):
    import shutil

    import workbench.embedded_teachers as et
    from workbench.config import ConfigError

    good = et.path("embedded:fashion_resnet20")
    assert et.sha256(good) == et.TEACHERS["fashion_resnet20"].sha256
    bad_dir = tmp_path / "teachers"
    bad_dir.mkdir()
    shutil.copyfile(good, bad_dir / good.name)
    with open(bad_dir / good.name, "r+b") as f:  # one flipped byte
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    monkeypatch.setattr(et, "FOLDER", bad_dir)
    monkeypatch.setattr(et, "_verified", set())
    with pytest.raises(ConfigError, match="damaged or not the shipped file.*make_teachers.py"):
        et.path("embedded:fashion_resnet20")
    with pytest.raises(ConfigError, match="unknown embedded teacher 'fashion_resnet2'.*did you mean"):
        et.path("embedded:fashion_resnet2")


def test_vit_presets_follow_deits_recipe_and_match_the_teachers_grid():
    """DeiT's main.py defaults (AdamW, lr 5e-4 at batch 512, wd 0.05 without norms/biases/tokens,
    cosine, 5 warm-up epochs, 300 epochs, cutmix 1.0); CE trains the plain ViT, DeiT/CSKD the
    distillation-token twin; each student's patch grid is its teacher's last map."""
    import torch

    from workbench.models.dense import dense_logits

    for m in ("ce", "deit", "cskd"):
        c = preset(f"cifar100/r32x4_vit/{m}")
        assert (c.optimizer, c.lr, c.batch_size, c.weight_decay, c.wd_exempt, c.schedule, c.warmup_epochs,
                c.epochs, c.mix, c.mix_alpha) == ("adamw", 5e-4, 512, 0.05, True, "cosine", 5.0, 300, "cutmix", 1.0)
        assert (c.method, c.teacher, c.student) == (m, "resnet32x4", "vit_tiny" if m == "ce" else "vit_tiny_dist")
        f = preset(f"fashion/vit/{m}")
        assert (f.optimizer, f.wd_exempt, f.patch_size, f.teacher, f.student) == \
            ("adamw", True, 4, "embedded:fashion_resnet20", "vit_nano" if m == "ce" else "vit_nano_dist")
    for teacher, student, side, in_ch, patch in (("resnet32x4", "vit_tiny_dist", 32, 3, 0), ("resnet20", "vit_nano_dist", 28, 1, 4)):
        s = models.build(student, 10, in_channels=in_ch, image_size=side, depth=1, **({"patch_size": patch} if patch else {}))
        with torch.no_grad():
            _, dense = dense_logits(models.build(teacher, 10, in_channels=in_ch).eval(), torch.randn(1, in_ch, side, side))
        grid = s.pos_embed.shape[1] - s.num_prefix_tokens
        assert grid == dense.shape[-2] * dense.shape[-1], (teacher, student)


def test_inherit_presets_are_the_demo_started_from_the_teacher():
    for m in ("ce", "kd", "gpd_kd"):
        inherit, demo = PRESETS[f"fashion/inherit/{m}"], PRESETS[f"fashion/demo/{m}"]
        assert inherit == dict(demo, init="inherit")
