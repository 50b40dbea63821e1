"""Settings recorded as used: config.json keeps the asked values and, under ``effective``, every
key as the run used it; run names hash the effective values, so one recipe spelled two ways (the
notebook's ``grad_clip=None`` vs the preset's ``grad_clip=5``) is one run folder, resumed, not
trained twice; folders named before that are found again."""
import json
from pathlib import Path

import torch

from workbench.config import RunConfig
from workbench.experiment import run

QUIET = dict(log=lambda *_: None)
#: GPD from scratch on digits: no teacher to train, seconds per run
TINY_GPD = dict(dataset="digits", train_per_class=5, method="gpd", base="none", teacher="none", student="resnet8",
                epochs=1, batch_size=25, lr=0.05, ratio=1.5, branches=1, eval_batch_size=512, probe_every=0,
                progress=False)


def test_notebook_and_preset_spellings_of_the_demo_name_one_folder(tmp_path):
    from workbench.nb import params, setup

    defaults = params.defaults("gpd")
    nb = setup.setup(dict(defaults, dataset="fashion_mnist", out_dir=str(tmp_path)), defaults, check_files=False).cfg
    cli = RunConfig.from_dict(dict(preset="fashion/demo/gpd_dkd", out_dir=str(tmp_path)))
    assert (nb.grad_clip, cli.grad_clip, nb.base, cli.base) == (None, 5.0, "auto", "dkd")  # spelled apart
    assert nb.effective() == {**cli.effective(), "preset": nb.preset}
    assert nb.run_dir() == cli.run_dir()


def test_effective_values_resolve_what_the_method_decides():
    cfg = RunConfig.from_dict(dict(TINY_GPD, branches="default"))
    eff = cfg.effective()
    assert (cfg.grad_clip, cfg.amp, cfg.ema_decay, cfg.scale_init, cfg.noise, cfg.base) == (None, "auto", None, "auto",
                                                                                            -1.0, "none")
    assert (eff["grad_clip"], eff["amp"], eff["ema_decay"], eff["scale_init"], eff["noise"]) == (
        5.0, "off", 0.99996, "reference", 1e-6)
    assert eff["branches"] == "1x1_avg,prior,1x1_kxk,kxk,dws" and eff["teacher_epochs"] == cfg.epochs
    kd = RunConfig.from_dict(dict(method="kd", dataset="digits", teacher="resnet8", student="resnet8"))
    assert (kd.effective()["grad_clip"], kd.effective()["ema_decay"], kd.effective()["amp"]) == (0.0, 0.0, "auto")
    # the same values spelled out are the same run; another value is another run
    spelled = RunConfig.from_dict(dict(TINY_GPD, branches="5", grad_clip=5, amp="off", ema_decay=0.99996,
                                       scale_init="reference", noise=1e-6, teacher_epochs=1))
    assert spelled.default_name() == cfg.default_name()
    assert RunConfig.from_dict(dict(TINY_GPD, branches="default", grad_clip=4)).default_name() != cfg.default_name()


def test_config_json_records_asked_and_effective_values_and_the_other_spelling_resumes(tmp_path):
    res = run(dict(TINY_GPD, out_dir=str(tmp_path)), **QUIET)
    recorded = json.loads((res.run_dir / "config.json").read_text())
    assert (recorded["grad_clip"], recorded["amp"], recorded["ema_decay"], recorded["scale_init"]) == (
        None, "auto", None, "auto")
    eff = recorded["effective"]
    assert (eff["grad_clip"], eff["amp"], eff["ema_decay"], eff["scale_init"], eff["base"]) == (
        5.0, "off", 0.99996, "reference", "none")
    assert (eff["device"], eff["channels_last"], eff["device_data"], eff["workers"], eff["ce_weight"]) == (
        "cpu", "off", "off", 0, 1.0)
    assert set(eff) >= set(RunConfig.keys())
    # the explicit spelling finds the same folder and continues it (here: already complete)
    again = run(dict(TINY_GPD, out_dir=str(tmp_path), grad_clip=5.0, amp="off", scale_init="reference"), **QUIET)
    assert again.run_dir == res.run_dir and again.summary == res.summary
    assert [p.name for p in Path(tmp_path).iterdir()] == [res.run_dir.name]


def test_a_folder_named_before_effective_hashing_is_resumed(tmp_path):
    """A run folder written under another hash of the same settings (the old asked-value hash),
    with a checkpoint that predates the recorded effective values, is found and continued."""
    from workbench.engine.checkpoint import LAST

    preset_like = dict(TINY_GPD, grad_clip=5.0, amp="off", out_dir=str(tmp_path))
    own = RunConfig.from_dict(preset_like).default_name()
    old_name = own.rsplit("-", 1)[0] + "-0badc0de"
    first = run(dict(preset_like, name=old_name), **QUIET)
    ckpt = torch.load(first.run_dir / LAST, weights_only=False)
    del ckpt["effective"]  # as written before effective values were recorded
    torch.save(ckpt, first.run_dir / LAST)
    notebook_like = dict(TINY_GPD, out_dir=str(tmp_path))  # grad_clip None, amp auto: same recipe
    assert RunConfig.from_dict(notebook_like).run_dir() == first.run_dir
    again = run(notebook_like, **QUIET)
    assert again.run_dir == first.run_dir and again.summary == first.summary
    assert [p.name for p in Path(tmp_path).iterdir()] == [old_name]
    # other settings are not adopted
    assert RunConfig.from_dict(dict(notebook_like, lr=0.1)).run_dir() != first.run_dir
