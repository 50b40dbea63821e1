"""``cache_teacher``: the static teacher's logits of every training example, computed once before
training, in dataset order, so a method reads them by example index instead of running the teacher
at every step (valid only for unaugmented, unmixed inputs: the config refuses the rest)."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from .device import autocast, to_device


@torch.no_grad()
def teacher_logits(teacher: torch.nn.Module, dataset, batch_size: int, device: torch.device,
                   channels_last: bool, amp, bar=lambda loader, desc: loader) -> torch.Tensor:
    """Float32 logits of ``teacher`` on every example of ``dataset`` (row i = example i);
    ``bar`` wraps the loader in a progress display."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    out = []
    for batch in bar(loader, desc="teacher logits"):
        x, _ = to_device(batch, device, channels_last)
        with autocast(device, amp):
            out.append(teacher(x).float())
    return torch.cat(out)
