"""Shared fixtures: tiny, fast settings (2 CPU cores)."""
import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

FAST = dict(dataset="digits", train_per_class=10, teacher="resnet8", student="resnet8", epochs=2,
            teacher_epochs=2, batch_size=32, lr=0.05, schedule="cosine", eval_batch_size=512,
            probe_samples=200, progress=False)


@pytest.fixture
def fast_cfg(tmp_path):
    """Config values for a seconds-long digits run writing under tmp_path."""
    return dict(FAST, out_dir=str(tmp_path / "runs"))
