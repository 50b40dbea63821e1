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
