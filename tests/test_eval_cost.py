"""Evaluation does no redundant work: T_d's multi-branch convs fold their kernels once per
evaluation pass (not once per batch), with exactly the records of folding every batch."""
import contextlib

from workbench.engine import Trainer, read_metrics
from workbench.experiment import run
from workbench.gpd import branches

VOLATILE = {"time", "images_per_s"}


def _evals(d):
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in read_metrics(d) if r["kind"] in ("eval", "gap")]


def test_eval_folds_each_branched_conv_once_with_identical_records(fast_cfg, monkeypatch):
    folds = []
    orig_fold = branches.MultiBranchConv2d.fold
    monkeypatch.setattr(branches.MultiBranchConv2d, "fold",
                        lambda self, *a, **k: (folds.append(id(self)), orig_fold(self, *a, **k))[1])
    orig_eval = Trainer.evaluate
    per_eval = []

    def counting(self, epoch):
        n = len(folds)
        out = orig_eval(self, epoch)
        per_eval.append((len(folds) - n, len(set(folds[n:]))))
        return out

    monkeypatch.setattr(Trainer, "evaluate", counting)
    cfg = dict(fast_cfg, method="gpd", eval_batch_size=64)  # several test batches per pass
    once = _evals(run(dict(cfg, out_dir=fast_cfg["out_dir"] + "/a")).run_dir)
    # T_d's convs fold once each per pass; extracting the student folds each once more
    assert per_eval and all(calls <= 2 * convs for calls, convs in per_eval)
    monkeypatch.setattr(branches, "fold_once", lambda *m: contextlib.nullcontext())
    every = _evals(run(dict(cfg, out_dir=fast_cfg["out_dir"] + "/b")).run_dir)
    assert once == every  # exact: the same tensor is folded either way
