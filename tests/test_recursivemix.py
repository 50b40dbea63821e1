"""RecursiveMix (mix=recursivemix): the box, the pasted previous batch and the mixed targets against a
hand-made case; the ROI consistency term against a hand computation (float64); history per epoch;
resume after SIGTERM and kill -9 mid-epoch equal to an uninterrupted run; bad values and
incompatible combinations one line before any training."""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from workbench.config import ConfigError, RunConfig
from workbench.engine import Preempted, Trainer, read_metrics
from workbench.engine.batch import BATCH_TRANSFORMS, RecursiveMix, make_transform
from workbench.engine.checkpoint import LAST, STUDENT, load_checkpoint
from workbench.experiment import prepare, run
from workbench.methods.recursivemix import RecursiveMixTerm, roi_features, soft_ce
from workbench.methods.outputs import Outputs

ROOT = Path(__file__).resolve().parents[1]
QUIET = dict(log=lambda *_: None)
VOLATILE = {"time", "images_per_s"}
K = 3


def strip(records):
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in records]


def _fixed_box(rm: RecursiveMix, box):
    rm.draw_box = lambda h, w: box
    return rm


# ------------------------------------------------------------------ the transform, by hand
def test_first_batch_of_an_epoch_is_plain_and_the_history_is_cleared_at_each_epoch_start():
    rm = make_transform("recursivemix")
    assert isinstance(rm, RecursiveMix) and rm is not make_transform("recursivemix")  # one per trainer
    x, y = torch.randn(4, 1, 6, 6), torch.tensor([0, 1, 2, 0])
    xm, ym = rm(x, y, K)
    assert xm is x and torch.equal(ym, F.one_hot(y, K).float()) and rm.current is None
    rm.observe(xm, ym, torch.randn(4, K))
    rm(x, y, K)
    assert rm.current is not None
    rm.start_epoch(2)
    xm, ym = rm(x, y, K)
    assert xm is x and rm.current is None


def test_box_pasted_previous_batch_and_targets_on_a_hand_made_case():
    """A non-square image (8 x 12) and box (4 rows x 6 columns at rows 1..4, columns 2..7): a swap of
    H and W anywhere (the reference's bug before its fix) puts other pixels there."""
    rm = _fixed_box(RecursiveMix(alpha=0.5), (2, 1, 8, 5))  # x1, y1, x2, y2
    prev_x = torch.arange(2 * 2 * 3, dtype=torch.float32).view(2, 1, 2, 3)  # 2 x 3 images
    prev_y = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    prev_logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    rm.observe(prev_x, prev_y, prev_logits)
    x = torch.zeros(2, 1, 8, 12) - 1.0
    y = torch.tensor([1, 2])
    xm, ym = rm(x, y, K)
    # by hand: nearest resize of a 2 x 3 image to 4 x 6 repeats every pixel in a 2 x 2 block
    for n in range(2):
        for r in range(8):
            for c in range(12):
                inside = 1 <= r < 5 and 2 <= c < 8
                want = float(prev_x[n, 0, (r - 1) // 2, (c - 2) // 2]) if inside else -1.0
                assert float(xm[n, 0, r, c]) == want, (n, r, c)
    lam = 1 - 24 / 96  # exact in binary floating point
    assert rm.current.lam == lam and rm.current.box == (2, 1, 8, 5) and rm.current.size == (8, 12)
    want_y = torch.tensor([[0.125, 0.875, 0.0], [0.0, 0.0, 1.0]])  # 0.75 one-hot + 0.25 prev
    assert torch.equal(ym, want_y)
    assert torch.equal(rm.current.prev_logits, prev_logits)
    assert float(x.min()) == -1.0 and float(x.max()) == -1.0  # the caller's batch is not written into


def test_box_draws_follow_the_formula_and_are_clipped():
    """Side ratio sqrt(U(0, alpha)), int(H r) x int(W r), centre (column, row) uniform, clipped: the
    same three draws redone by hand from the same RNG state."""
    rm = RecursiveMix(alpha=0.7)
    h, w = 10, 14
    for seed in range(200):
        torch.manual_seed(seed)
        got = rm.draw_box(h, w)
        torch.manual_seed(seed)
        r = math.sqrt(float(torch.rand(())) * 0.7)
        bh, bw = int(h * r), int(w * r)
        cx, cy = int(torch.randint(w, ())), int(torch.randint(h, ()))
        want = (max(cx - bw // 2, 0), max(cy - bh // 2, 0), min(cx + bw // 2, w), min(cy + bh // 2, h))
        assert got == want
        x1, y1, x2, y2 = got
        assert 0 <= x1 <= x2 <= w and 0 <= y1 <= y2 <= h
        assert (x2 - x1) * (y2 - y1) <= 0.7 * h * w + 1e-9  # the nominal area is at most alpha


def test_a_smaller_previous_batch_is_reused_cyclically_and_an_empty_box_pastes_nothing():
    rm = _fixed_box(RecursiveMix(), (3, 3, 3, 6))  # zero columns
    rm.observe(torch.ones(2, 1, 6, 6), torch.eye(K)[:2], torch.zeros(2, K))
    x = torch.zeros(3, 1, 6, 6)
    xm, ym = rm(x, torch.tensor([2, 2, 2]), K)
    assert rm.current.lam == 1.0 and float(xm.abs().sum()) == 0.0
    assert torch.equal(ym, torch.eye(K)[[2, 2, 2]])
    rm.draw_box = lambda h, w: (0, 0, 6, 6)  # the whole image: targets all from the previous batch
    rm.observe(torch.ones(2, 1, 6, 6), torch.eye(K)[:2], torch.zeros(2, K))
    xm, ym = rm(x, torch.tensor([2, 2, 2]), K)
    assert rm.current.lam == 0.0 and torch.equal(ym, torch.eye(K)[[0, 1, 0]])


def test_bad_transform_values_are_refused():
    with pytest.raises(ValueError, match="recursivemix_alpha"):
        RecursiveMix(alpha=0.0)
    with pytest.raises(ValueError, match="recursivemix_resize"):
        RecursiveMix(mode="bicubic")
    assert "recursivemix" in BATCH_TRANSFORMS


# ------------------------------------------------------------------ the consistency term, by hand
def test_soft_cross_entropy_against_a_hand_computation_float64():
    z = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]], dtype=torch.float64)
    p = torch.tensor([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]], dtype=torch.float64)
    want = 0.0
    for zi, pi in zip(z.tolist(), p.tolist()):
        lse = math.log(sum(math.exp(v) for v in zi))
        want += -sum(pk * (zk - lse) for pk, zk in zip(pi, zi))
    assert soft_ce(z, p).item() == pytest.approx(want / 2, rel=1e-12)  # float64 throughout, 6 terms


def test_roi_term_against_a_hand_computation_float64():
    """A feature map linear in (row, column): bilinear sampling of a linear function is exact, so the
    aligned 1x1 ROI average is the function at the box centre in feature coordinates
    (x * scale - 0.5, y * scale - 0.5); then the head, softmax of the previous logits, softCE,
    times omega (1 - lambda)."""
    n, c, fh, fw, h, w = 2, 2, 4, 6, 8, 12  # feature stride 2
    rows = torch.arange(fh, dtype=torch.float64)[:, None].expand(fh, fw)
    cols = torch.arange(fw, dtype=torch.float64)[None, :].expand(fh, fw)
    a = torch.tensor([[1.0, 2.0], [-0.5, 0.25]], dtype=torch.float64)  # per (image, channel): slope in x
    b = torch.tensor([[0.5, -1.0], [3.0, 0.0]], dtype=torch.float64)   # slope in y
    fmap = a[..., None, None] * cols + b[..., None, None] * rows + 0.1
    box = (2, 2, 8, 6)  # x1, y1, x2, y2 in input pixels -> feature box (0.5, 0.5)-(3.5, 2.5) after -0.5
    feats = roi_features(fmap, box, w)
    scale = fw / w
    cx, cy = (box[0] + box[2]) / 2 * scale - 0.5, (box[1] + box[3]) / 2 * scale - 0.5
    want = a * cx + b * cy + 0.1
    assert torch.allclose(feats, want, rtol=1e-12, atol=1e-12)

    rm = RecursiveMix()
    prev_logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5]], dtype=torch.float64)
    lam = 0.75
    from workbench.engine.batch import RecursiveBatch
    rm.current = RecursiveBatch(box, lam, prev_logits, (h, w))
    term = RecursiveMixTerm(rm, "layer", c, K, omega=0.5).double()
    with torch.no_grad():
        term.head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]]))
        term.head.bias.copy_(torch.tensor([0.0, 0.5, -0.5]))
    out = term.terms(Outputs(torch.zeros(n, K, dtype=torch.float64), {"layer": fmap}), None, None, None)
    z = want.tolist()
    total = 0.0
    for i in range(n):
        logits = [z[i][0], z[i][1] + 0.5, z[i][0] - z[i][1] - 0.5]
        lse = math.log(sum(math.exp(v) for v in logits))
        q = [math.exp(v) for v in prev_logits[i].tolist()]
        q = [v / sum(q) for v in q]
        total += -sum(qk * (lk - lse) for qk, lk in zip(q, logits))
    assert out["loss_rm"].item() == pytest.approx(0.5 * (1 - lam) * total / n, rel=1e-12)
    rm.current = RecursiveBatch(box, 1.0, prev_logits, (h, w))  # nothing pasted: no term
    assert term.terms(Outputs(torch.zeros(n, K)), None, None, None)["loss_rm"].item() == 0.0


# ------------------------------------------------------------------ in a run
RM = dict(method="kd", mix="recursivemix", recursivemix_omega=0.5, epochs=2, probe_every=0)


def test_kd_with_recursivemix_trains_the_roi_head_and_logs_its_term(fast_cfg):
    res = run(dict(fast_cfg, **RM, name="rm"), **QUIET)
    train = [r for r in res.records if r["kind"] == "train"]
    assert all(r["loss_rm"] > 0 for r in train)
    ckpt = load_checkpoint(res.run_dir / LAST)
    assert any(k.startswith("aux_terms.0.head.") for k in ckpt["method"])  # its own head, checkpointed
    assert not any("head" in k for k in torch.load(res.run_dir / STUDENT)["model"])  # not in the student
    assert "_kd+recursivemix_" in RunConfig(**dict(fast_cfg, **RM)).default_name()


def test_shared_fc_has_no_head_of_its_own(fast_cfg):
    res = run({**fast_cfg, **RM, "recursivemix_share_fc": True, "epochs": 1, "name": "shared"}, **QUIET)
    assert not any(k.startswith("aux_terms.0.head.") for k in load_checkpoint(res.run_dir / LAST)["method"])


def _signal_at_step(monkeypatch, run_name: str, epoch: int, step: int, sig=signal.SIGTERM):
    real = Trainer._backward_step
    seen = {}

    def backward_step(self, loss, losses):
        real(self, loss, losses)
        if self.run_dir.name == run_name:
            seen[self.epoch] = seen.get(self.epoch, 0) + 1
            if self.epoch == epoch and seen[self.epoch] == step:
                os.kill(os.getpid(), sig)
    monkeypatch.setattr(Trainer, "_backward_step", backward_step)


def assert_same_run(run_dir: Path, ref_dir: Path) -> None:
    assert strip(read_metrics(run_dir)) == strip(read_metrics(ref_dir))
    a, b = load_checkpoint(ref_dir / LAST), load_checkpoint(run_dir / LAST)
    for part in ("method", "model"):
        assert a[part].keys() == b[part].keys()
        for k, v in a[part].items():
            assert torch.equal(v, b[part][k]), (part, k)
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    for k, v in a["optimizer"]["state"].items():
        assert torch.equal(v["momentum_buffer"], b["optimizer"]["state"][k]["momentum_buffer"]), k


@pytest.fixture(scope="module")
def rm_ref(tmp_path_factory):
    from conftest import FAST

    out = tmp_path_factory.mktemp("rm") / "runs"
    cfg = dict(FAST, out_dir=str(out), **RM)
    run(dict(cfg, name="ref"), **QUIET)
    return cfg, out / "ref"


def test_sigterm_mid_epoch_resumes_bit_identically_with_the_history(rm_ref, monkeypatch):
    """SIGTERM after step 2 of epoch 2 (history: step 2's mixed batch and logits): the mid-epoch
    checkpoint keeps it, so the rerun's step 3 pastes what the uninterrupted run pasted."""
    cfg, ref = rm_ref
    _signal_at_step(monkeypatch, "termed", epoch=2, step=2)
    with pytest.raises(Preempted):
        run(dict(cfg, name="termed"), **QUIET)
    run_dir = Path(cfg["out_dir"]) / "termed"
    position = load_checkpoint(run_dir / LAST)["position"]
    assert position["step"] == 2 and position["ranks"][0]["transform"]["prev"]["x"].shape[0] == cfg["batch_size"]
    monkeypatch.undo()
    run(dict(cfg, name="termed"), **QUIET)
    assert_same_run(run_dir, ref)


KILL_SCRIPT = """
import os, signal, sys
from workbench import cli
from workbench.engine import Trainer

real, seen = Trainer._backward_step, {}

def backward_step(self, loss, losses):
    real(self, loss, losses)
    if self.run_dir.name == "killed":
        seen[self.epoch] = seen.get(self.epoch, 0) + 1
        if self.epoch == 2 and seen[self.epoch] == 2:
            os.kill(os.getpid(), signal.SIGKILL)

Trainer._backward_step = backward_step
sys.exit(cli.main(sys.argv[1:]))
"""


def test_kill_9_mid_epoch_resumes_bit_identically(rm_ref, tmp_path):
    """SIGKILL after step 2 of epoch 2 (no mid-epoch checkpoint: the rerun repeats epoch 2 from its
    start, where the history is empty in the uninterrupted run too)."""
    cfg, ref = rm_ref
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)
    args = ["train", *[f"{k}={v}" for k, v in dict(cfg, name="killed").items()]]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(script), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    run_dir = Path(cfg["out_dir"]) / "killed"
    assert load_checkpoint(run_dir / LAST)["epoch"] == 1 and not (run_dir / "summary.json").exists()
    run(dict(cfg, name="killed"), **QUIET)
    assert_same_run(run_dir, ref)


# ------------------------------------------------------------------ refusals, before any training
@pytest.mark.parametrize("overrides, match", [
    (dict(mix="recursivemix", recursivemix_alpha=1.5), "recursivemix_alpha"),
    (dict(mix="recursivemix", recursivemix_omega=-1.0), "recursivemix_omega"),
    (dict(mix="recursivemix", recursivemix_resize="cubic"), "recursivemix_resize"),
    (dict(mix="recursivemix", method="gpd", base="kd", recursivemix_share_fc=True), "recursivemix_share_fc"),
])
def test_bad_values_and_combinations_are_one_line(fast_cfg, overrides, match):
    with pytest.raises(ConfigError, match=match) as err:
        RunConfig(**{**fast_cfg, "method": "kd", **overrides}).validate()
    assert "\n" not in str(err.value)


def test_vit_student_is_refused_before_any_training(fast_cfg, monkeypatch):
    monkeypatch.setattr(Trainer, "fit", lambda self: pytest.fail("training started"))
    cfg = RunConfig(**dict(fast_cfg, method="kd", mix="recursivemix", student="vit_tiny", teacher="resnet8",
                           name="vit"))
    with pytest.raises(ConfigError, match="no spatial feature map") as err:
        prepare(cfg)
    assert "\n" not in str(err.value)
    assert not cfg.run_dir().exists()


def test_composes_with_gpd_on_its_student_view(fast_cfg):
    res = run({**fast_cfg, **RM, "method": "gpd", "base": "kd", "branches": 2, "epochs": 1, "name": "gpd_rm"}, **QUIET)
    train = [r for r in res.records if r["kind"] == "train"]
    assert train[0]["loss_rm"] > 0 and "dynamic_teacher" in res.summary
