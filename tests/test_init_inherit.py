"""``init=inherit`` wired into runs: the built student holds the teacher's slices (every
parameter) and BatchNorm statistics re-estimated on the unaugmented training images (only BN
buffers differ from plain inheritance), the epoch-0 records show where inheritance starts the
student (eval, T_s-S gap, the ``init`` record), GPD expands the inherited student exactly (T_d-S
gap 0 at epoch 0), ``inherit:<file>`` equals inheriting from the same teacher, a method without
a teacher still loads it as the source, and bad pairs / values stop in the cheap checks."""
import pytest
import torch
from torch import nn

from workbench import data, embedded_teachers, models
from workbench.config import ConfigError, RunConfig
from workbench.experiment import build_student, load_teacher, prepare, run
from workbench.methods import METHODS, build_method
from workbench.models.inherit import inherit, inheritance_map, recalibrate_bn
from workbench.student_init import bn_batches, parse

torch.set_num_threads(1)

TEACHER = "embedded:fashion_resnet20"
TINY = dict(dataset="fashion_mnist", data_source="embedded", train_per_class=8, teacher=TEACHER, student="resnet8",
            epochs=1, batch_size=20, lr=0.05, schedule="cosine", eval_batch_size=500, probe_samples=100,
            progress=False, init="inherit")


def _cfg(tmp_path, **kw):
    return RunConfig.from_dict(dict(TINY, out_dir=str(tmp_path), **kw))


def _bn_buffers(model):
    bns = {n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    return {n for n, _ in model.named_buffers() if n.rpartition(".")[0] in bns}


def test_init_values():
    assert parse("").kind == "random" and parse("ckpt.pt").kind == "checkpoint"
    assert parse("inherit").from_teacher and parse("inherit:x/t.pt").path == "x/t.pt"
    with pytest.raises(ConfigError, match="needs a checkpoint after the colon"):
        parse("inherit:")


def test_the_built_student_is_inherited_then_bn_recalibrated(tmp_path):
    cfg = _cfg(tmp_path)
    prep = prepare(cfg)
    teacher = load_teacher(prep, log=lambda *_: None)
    student, records = build_student(prep, teacher)
    # by hand: a fresh student, inherit, recalibrate on the same batches of unaugmented images
    plain = data.build("fashion_mnist", "train", **{**cfg.dataset_options(), "augment": False})
    expected = inherit(models.build("resnet8", 10, in_channels=1, image_size=28), teacher)
    only_inherited = {k: v.clone() for k, v in expected.state_dict().items()}
    recalibrate_bn(expected, bn_batches(plain, cfg.batch_size, cfg.seed, 4))  # 80 images / 20 = 4 batches
    got, t_state = student.state_dict(), teacher.state_dict()
    bn = _bn_buffers(student)
    for k, t_key in inheritance_map(student, teacher).items():
        if k in bn:
            assert torch.equal(got[k], expected.state_dict()[k]), k
            if not k.endswith("num_batches_tracked"):
                assert not torch.equal(got[k], only_inherited[k]), k  # re-estimated
        else:  # every parameter is the teacher's slice (same widths here: the whole tensor)
            assert torch.equal(got[k], t_state[t_key]), k
    assert inheritance_map(student, teacher)["layer2.0.conv1.weight"] == "layer2.0.conv1.weight"
    assert student.training
    (rec,) = records
    assert rec == {"kind": "init", "epoch": 0, "init": "inherit", "source": f"teacher {TEACHER}",
                   "source_arch": "resnet20", "student": "resnet8", "bn_images": 80,
                   "blocks": {"layer1": [0], "layer2": [0], "layer3": [0]}}


def _epoch0(records, kind, **match):
    return [r for r in records if r["kind"] == kind and r["epoch"] == 0 and all(r.get(k) == v for k, v in match.items())]


def test_epoch0_records_show_where_inheritance_starts(tmp_path):
    res = run(_cfg(tmp_path, method="kd", name="kd"), log=lambda *_: None)
    (s0,), (t0,) = _epoch0(res.records, "eval", role="student"), _epoch0(res.records, "eval", role="teacher")
    (gap,) = _epoch0(res.records, "gap", pair="T_s-S", metric="acc_gap")
    assert gap["value"] == pytest.approx(t0["top1"] - s0["top1"], abs=1e-4)  # float32 percentages
    (init,) = _epoch0(res.records, "init")
    assert init["source_arch"] == "resnet20"
    # the epoch-0 student is the inherited one: evaluated here independently of the trainer
    prep = prepare(_cfg(tmp_path, method="kd", name="kd_again"))
    student, _ = build_student(prep, load_teacher(prep, log=lambda *_: None))
    test = data.build("fashion_mnist", "test", **prep.cfg.dataset_options())
    x, y = zip(*(test[i] for i in range(len(test))))
    with torch.no_grad():
        top1 = 100.0 * (student.eval()(torch.stack(x)).argmax(1) == torch.tensor(y)).float().mean().item()
    assert s0["top1"] == pytest.approx(top1, abs=0.01)  # one image = 0.1 points
    assert s0["top1"] > 15.0  # far above chance (10 %): inheritance + BN recalibration carry knowledge

    # GPD: inherit, then expand -- T_d starts as the inherited student exactly
    gpd = run(_cfg(tmp_path, method="gpd", base="kd", ema_decay=0.0, name="gpd"), log=lambda *_: None)
    (g0,) = _epoch0(gpd.records, "eval", role="student")
    assert g0["top1"] == s0["top1"] and g0["loss"] == pytest.approx(s0["loss"], rel=1e-5)
    (td_gap,) = _epoch0(gpd.records, "gap", pair="T_d-S", metric="acc_gap")
    (td_kl,) = _epoch0(gpd.records, "gap", pair="T_d-S", metric="kl")
    assert td_gap["value"] == 0.0 and td_kl["value"] < 1e-6  # IR with one/zero scales: same function

    # inherit:<file> from the same teacher file gives the same start
    path = embedded_teachers.path(TEACHER)
    from_file = run(_cfg(tmp_path, method="kd", init=f"inherit:{path}", name="file"), log=lambda *_: None)
    (f0,) = _epoch0(from_file.records, "eval", role="student")
    assert f0["top1"] == s0["top1"] and f0["loss"] == s0["loss"]
    assert _epoch0(from_file.records, "init")[0]["source"] == str(path)

    # a method without a teacher still loads it, as the inheritance source only
    ce = run(_cfg(tmp_path, method="ce", name="ce"), log=lambda *_: None)
    (c0,) = _epoch0(ce.records, "eval", role="student")
    assert c0["top1"] == s0["top1"] and "teacher" not in ce.summary
    assert _epoch0(ce.records, "init")[0]["source"] == f"teacher {TEACHER}"


@pytest.mark.parametrize("kw, words", [
    (dict(student="vgg8"), ["init: cannot inherit vgg8 from resnet20", "different model families"]),
    (dict(student="resnet32"), ["init: cannot inherit resnet32 from resnet20", "deeper"]),
    (dict(student="resnet8x4"), ["init: cannot inherit resnet8x4 from resnet20", "wider"]),
    (dict(init="inherit:nowhere/t.pt"), ["init: inheritance source nowhere/t.pt does not exist"]),
])
def test_pairs_and_files_that_cannot_inherit_stop_in_the_cheap_checks(tmp_path, kw, words):
    cfg = _cfg(tmp_path, name="bad", **kw)
    with pytest.raises(ConfigError) as e:
        prepare(cfg)
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg
    assert not (tmp_path / "bad").exists()


# --- every method starts from the inherited student ------------------------------------------

#: relative to the largest logit: the bound tests/test_gpd_exactness.py uses for T_d / the student
#: view / the extracted student against the student (measured <= 2.4e-6 on every vector unit)
GPD_EXTRACT_TOL = 1e-5


def _vit_file(tmp_path, name="vit.pt"):
    """A vit_nano_dist saved as runs save ``student.pt`` (arch + weights) with patch 4
    on 28 px (a 7x7 grid, as the ``fashion/vit`` presets): the registered name alone would rebuild
    it with the default patch 2, so loading it must read the patch size from the file."""
    torch.manual_seed(3)
    vit = models.build("vit_nano_dist", 10, in_channels=1, image_size=28, patch_size=4)
    path = tmp_path / name
    torch.save({"model": vit.state_dict(), "arch": "vit_nano_dist"}, path)
    return path, vit


def _method_case(name, tmp_path):
    """Config overrides that make ``name`` a valid run with ``init=inherit``: CNN methods inherit
    resnet8 from the shipped resnet20; DeiT a patch-4 ViT from a ViT teacher file of that patch;
    CSKD (whose teacher must be a CNN) from the ViT file through ``inherit:<file>``."""
    if name == "deit":
        return dict(student="vit_nano_dist", patch_size=4, teacher=str(_vit_file(tmp_path)[0]))
    if name == "cskd":
        return dict(student="vit_nano_dist", patch_size=4, init=f"inherit:{_vit_file(tmp_path)[0]}")
    return {"gpd": dict(base="kd"), "ctkd": dict(base="kd"), "ctc": dict(epochs=2)}.get(name, {})


@pytest.mark.parametrize("name", sorted(METHODS.names()))
def test_every_method_starts_from_the_inherited_student_and_trains(tmp_path, name):
    """The built method's deployable student computes what the inherited, BN-recalibrated
    student computes (GPD: expanded with one/zero scales, the same function), its first tensor is
    the source's slice, and one training step runs with finite losses."""
    import copy

    cfg = _cfg(tmp_path, method=name, name=name, **_method_case(name, tmp_path))
    prep = prepare(cfg)
    teacher = load_teacher(prep, log=lambda *_: None)
    student, (record,) = build_student(prep, teacher)
    source = teacher if prep.init.from_teacher else models.load(prep.init_arch, prep.init.path, 10, 1, image_size=28)
    first, t_key = next(iter(inheritance_map(student, source).items()))
    s_first = student.state_dict()[first]
    assert torch.equal(s_first, source.state_dict()[t_key][tuple(slice(0, d) for d in s_first.shape)]), first
    inherited = copy.deepcopy(student).eval()
    train = data.build("fashion_mnist", "train", **cfg.dataset_options())
    x = torch.stack([train[i][0] for i in range(4)])
    y = torch.tensor([train[i][1] for i in range(4)])
    method = build_method(cfg, student, teacher if cfg.uses_teacher else None, example_input=x[:2],
                          train_labels=data.labels(train))
    with torch.no_grad():
        want = inherited(x)
        got = method.eval_models()["student"].eval()(x)
    if name == "gpd":  # extracted from T_d: the same function, other float32 summation orders
        assert (got - want).abs().max() <= GPD_EXTRACT_TOL * want.abs().max()
    else:  # the very student object
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    method.on_epoch_start(1, cfg.epochs)
    method.train()
    _, losses = method(x, y, torch.arange(len(x)) if method.needs().index else None)  # as the trainer calls it
    total = sum(losses.values())
    assert torch.isfinite(total) and total.requires_grad
    total.backward()
    assert record["source_arch"] == ("vit_nano_dist" if name in ("deit", "cskd") else "resnet20")
