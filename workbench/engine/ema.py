"""Model EMA: an exponential moving average of the trained module's state, updated after every
optimizer step (the GPD reference code uses timm's ``ModelEmaV2`` with decay 0.99996 in every
CNN run; each epoch it evaluates the raw and the EMA model and reports the better one).

Rule (timm's, per step, no warm-up): every floating-point entry of the state dict -- parameters
AND buffers such as BatchNorm statistics -- becomes ``decay * ema + (1 - decay) * current``;
integer entries (``num_batches_tracked``) are copied (timm blends those too, truncating).
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEMA:
    def __init__(self, module: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be in (0, 1), got {decay!r}")
        self.decay = float(decay)
        self.module = copy.deepcopy(module).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        for ema, now in zip(self.module.state_dict().values(), module.state_dict().values()):
            if not torch.is_tensor(ema):
                continue  # extra state (e.g. a DynamicTeacher's config)
            if ema.is_floating_point():
                ema.lerp_(now.to(ema.dtype), 1.0 - self.decay)  # decay * ema + (1 - decay) * now
            else:
                ema.copy_(now)

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)
