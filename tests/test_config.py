"""RunConfig: conversion, validation errors that name key/value/choices, presets."""
import pytest

from workbench.methods.dkd import dkd_warmup
from workbench.methods.gpd import gpd_branches
from workbench.config import ConfigError, RunConfig, help_text, parse_overrides
from workbench.presets import PRESETS, get_preset
from workbench.methods import METHODS


def cfg(**kw):
    return RunConfig.from_dict(kw)


def test_defaults_are_the_cifar100_protocol():
    c = RunConfig()
    assert (c.dataset, c.teacher, c.student, c.epochs, c.batch_size, c.lr) == ("cifar100", "resnet32x4", "resnet8x4", 240, 64, 0.05)
    assert c.milestones == (150, 180, 210) and c.weight_decay == 5e-4 and c.momentum == 0.9


def test_string_values_are_converted():
    c = RunConfig.from_dict(parse_overrides(["epochs=3", "lr=0.1", "dot=true", "milestones=2,3",
                                             "train_per_class=none", "dataset=digits"]))
    assert c.epochs == 3 and c.lr == 0.1 and c.dot is True and c.milestones == (2, 3) and c.train_per_class is None


@pytest.mark.parametrize("kw, words", [
    (dict(epochs="ten"), ["epochs", "integer", "'ten'"]),
    (dict(epochs=0), ["epochs", "0", "range"]),
    (dict(lr="fast"), ["lr", "number", "'fast'"]),
    (dict(method="kdd"), ["method", "'kdd'", "ce, composed, cskd, ctc, ctkd, deit, dkd, dml, embed, fitnet, gpd, kd, orc, reviewkd",
                          "did you mean 'kd'"]),
    (dict(amp="fp8"), ["amp", "'fp8'", "bf16"]),
    (dict(dot="maybe"), ["dot", "boolean", "'maybe'"]),
    (dict(epochs=True), ["epochs", "integer", "True"]),
    (dict(method="kd", base="dkd"), ["base", "'dkd'", "kd"]),
    (dict(method="kd", teacher="none"), ["teacher", "needs a static teacher"]),
    (dict(method="ce", dot=True), ["dot", "method=ce"]),
    (dict(method="gpd", base="none", ctkd=True), ["ctkd", "base=none"]),
    (dict(method="gpd", branches="3x3"), ["branches", "'3x3'", "1x1_avg"]),
    (dict(method="gpd", base="cskd", student="vit_nano_dist"), ["base", "'cskd'", "GPD's dynamic-teacher views", "kd"]),
    (dict(method="gpd", base="ce"), ["base", "'ce'", "no loss usable as a base"]),
    (dict(method="gpd", sync_bn=True), ["sync_bn", "widening=reference", "widening=full_scale"]),
    (dict(init="inherit", method="ce", teacher="none"), ["init", "teacher=none", "inherit:<checkpoint>"]),
    (dict(init="inherit:"), ["init", "needs a checkpoint"]),
    (dict(method="deit", student="resnet8"), ["student", "distillation token", "vit_nano_dist", "'resnet8'"]),
    (dict(train_per_class=5), ["train_per_class", "digits and fashion_mnist only"]),
    (dict(sce_eps=1.5), ["sce_eps", "1.5"]),
    (dict(milestones="a,b"), ["milestones", "integers"]),
    (dict(ema_eval_every=0), ["ema_eval_every", "0"]),
    (dict(method="ctc", teacher="none", ctc_projector="frozen"), ["ctc_projector", "'frozen'", "trained", "fixed"]),
    (dict(preset="cifar100/nope/kd"), ["preset", "cifar100/nope/kd", "did you mean 'cifar100/", "`python -m workbench presets` lists all"]),
])
def test_bad_values_name_key_value_and_choices(kw, words):
    with pytest.raises(ConfigError) as e:
        cfg(**kw)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_unknown_key_suggests_the_close_one():
    with pytest.raises(ConfigError, match=r"unknown config key 'epoch'.*did you mean 'epochs'"):
        parse_overrides(["epoch=3"])
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["epochs"])
    with pytest.raises(ConfigError, match="unknown config key 'lrr'"):
        RunConfig.from_dict({"lrr": 1})


def test_method_ctkd_turns_on_the_learnable_temperature_and_base_auto_resolves():
    c = cfg(method="ctkd")
    assert c.ctkd is True and c.resolved_base == "kd"
    assert cfg(method="gpd").resolved_base == "dkd" and cfg(method="ce").uses_teacher is False
    assert cfg(method="gpd", base="none", teacher="none").uses_teacher is False


def test_presets_apply_under_explicit_keys():
    c = cfg(preset="cifar100/r56_r20/dkd", epochs=5)
    assert (c.teacher, c.student, c.method, c.dkd_beta, c.epochs) == ("resnet56", "resnet20", "dkd", 2.0, 5)
    for name in PRESETS:  # every preset is a valid config
        RunConfig.from_dict({"preset": name})
    assert get_preset("imagenet/r34_r18/gpd_dkd")["dkd_beta"] == 0.5


def test_help_lists_every_key_with_choices():
    text = help_text()
    for key in RunConfig.keys():
        assert f"  {key}=" in text
    assert "{ce|composed|cskd|ctc|ctkd|deit|dkd|dml|embed|fitnet|gpd|kd|orc|reviewkd}" in text


def test_round_trip_through_dict():
    c = cfg(method="gpd", base="kd", ratio=1.5, branches="2", milestones="5,8")
    assert RunConfig.from_dict(c.to_dict()) == c
    assert gpd_branches(c) == ("1x1_avg", "prior")


# --- method defaults: keys left at None/auto resolve in RunConfig.resolved_* (one place) ----------

@pytest.mark.parametrize("kw, clip", [
    (dict(method="gpd"), 5.0),                       # every GPD run clips at 5 (reference)
    (dict(method="gpd", base="none", teacher="none"), 5.0),
    (dict(method="kd"), 0.0), (dict(method="ce"), 0.0), (dict(method="ctkd"), 0.0),
    (dict(method="gpd", grad_clip=0), 0.0),          # explicit values win, 0 turns clipping off
    (dict(method="kd", grad_clip=2.5), 2.5),
    (dict(method="gpd", grad_clip="none"), 5.0),     # the CLI spelling of "method default"
])
def test_grad_clip_defaults_to_the_methods(kw, clip):
    assert cfg(**kw).resolved_grad_clip == clip


def test_grad_clip_default_on_the_command_line_and_in_keys():
    c = RunConfig.from_dict(parse_overrides(["method=gpd"]))
    assert c.grad_clip is None and c.resolved_grad_clip == 5.0
    text = help_text()
    # the help states the defaults the methods declare (MethodSpec.defaults), not a copy of them
    gpd = METHODS.get("gpd").defaults
    assert "  grad_clip=None\n" in text and f"gpd: {gpd['grad_clip']}" in text
    assert f"gpd: {gpd['amp']}" in text and f"gpd: {gpd['ema_decay']}" in text  # amp: what auto means for GPD
    assert "kd: 0.1" in text  # ce_weight: KD's reference weight


@pytest.mark.parametrize("kw, amp", [
    (dict(method="gpd"), "off"), (dict(method="gpd", amp="bf16"), "bf16"), (dict(method="gpd", amp="fp16"), "fp16"),
    (dict(method="kd"), "auto"), (dict(method="dkd", amp="off"), "off"),
])
def test_amp_auto_is_fp32_for_gpd_only(kw, amp):
    assert cfg(**kw).resolved_amp == amp


@pytest.mark.parametrize("kw, warmup", [
    (dict(method="dkd"), 20.0), (dict(method="gpd", base="dkd"), 20.0),
    (dict(method="ctkd", base="dkd"), 0.0),          # the public CTKD code's DKD has no warm-up
    (dict(method="dkd", ctkd=True), 0.0), (dict(method="gpd", base="dkd", ctkd=True), 0.0),
    (dict(method="ctkd", base="dkd", dkd_warmup=5), 5.0), (dict(method="dkd", dkd_warmup=0), 0.0),
])
def test_dkd_warmup_defaults_to_none_under_ctkd(kw, warmup):
    c = cfg(**kw)
    assert dkd_warmup(c) == warmup
    from workbench.methods import BuildContext
    from workbench.methods.dkd import dkd_criterion

    assert dkd_criterion(BuildContext(c, None)).warmup == warmup  # what the loss actually uses


def test_teacher_trained_on_the_fly_drops_the_students_method_settings():
    from workbench.experiment import teacher_config

    student = cfg(method="gpd", grad_clip=5.0, ctkd=True, dot=True)
    teacher = teacher_config(student, "resnet32x4")
    assert (teacher.method, teacher.ctkd, teacher.dot, teacher.resolved_grad_clip) == ("ce", False, False, 0.0)


def test_cli_polish(capsys):
    """Issue 15 item 6: unknown key = one line with the did-you-mean first; help without reST
    backticks; presets one line each; a closed pipe is not a traceback."""
    from workbench import cli

    assert cli.main(["train", "epoch=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown config key 'epoch' (did you mean 'epochs'?)") and len(err.splitlines()) == 1
    assert "valid choices" not in err and "`python -m workbench keys`" in err
    assert cli.main(["--help"]) == 0 and "``" not in capsys.readouterr().out
    assert cli.main(["presets"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    from workbench.presets import PRESETS

    assert len(lines) == len(PRESETS) + 2 and lines[0].startswith("cifar100/") and "milestones" not in lines[0]
    assert cli.main(["presets", "fashion/demo/gpd_dkd"]) == 0 and "teacher=embedded:fashion_resnet20" in capsys.readouterr().out


def test_help_through_a_closed_pipe_exits_quietly():
    import subprocess
    import sys

    proc = subprocess.run(f"{sys.executable} -m workbench train --help | head -1", shell=True, capture_output=True,
                          text=True)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr
