"""Optimizers: SGD / AdamW, and DOT (Distillation-Oriented Trainer, Zhao et al., ICCV 2023).

DOT is an optimizer, not a loss: it keeps two momentum buffers per parameter, one for the
task-loss gradient (momentum ``m - delta``) and one for the distillation-loss gradient
(momentum ``m + delta``), and steps with their sum. Weight decay joins the task gradient (the
distillation gradient when a parameter has no task gradient); a parameter that has only one of
the two gradients uses momentum ``m`` for it (as the reference code does). With ``delta = 0``
DOT is exactly SGD with momentum on the summed gradient (tested step for step).

Usage (what the trainer does)::

    opt.zero_grad()
    opt.set_distill_grads(torch.autograd.grad(distill_loss, params, retain_graph=True, allow_unused=True))
    task_loss.backward()
    opt.step()
"""
from __future__ import annotations

import torch

OPTIMIZERS = ("sgd", "adamw")


class DOT(torch.optim.Optimizer):
    def __init__(self, params, lr: float, momentum: float = 0.9, delta: float = 0.075, weight_decay: float = 0.0):
        if not 0.0 <= delta <= momentum:
            raise ValueError(f"DOT delta must be in [0, momentum={momentum}], got {delta!r}")
        super().__init__(params, dict(lr=lr, momentum=momentum, delta=delta, weight_decay=weight_decay))
        self._distill_grads: dict[torch.Tensor, torch.Tensor] = {}

    def params(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    def set_distill_grads(self, grads) -> None:
        """Gradients of the distillation loss, one per parameter in :meth:`params` order
        (None where unused)."""
        self._distill_grads = {p: g for p, g in zip(self.params(), grads) if g is not None}

    def distill_grads(self) -> dict:
        return self._distill_grads

    @staticmethod
    def _momentum_step(state: dict, key: str, grad: torch.Tensor, momentum: float) -> torch.Tensor:
        buf = state.get(key)
        if buf is None:
            buf = state[key] = grad.detach().clone()
        else:
            buf.mul_(momentum).add_(grad)
        return buf

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            m, d, wd, lr = group["momentum"], group["delta"], group["weight_decay"], group["lr"]
            for p in group["params"]:
                g_task, g_kd = p.grad, self._distill_grads.get(p)
                if g_task is None and g_kd is None:
                    continue
                state = self.state[p]
                update = torch.zeros_like(p)
                if g_task is not None:
                    g = g_task.add(p, alpha=wd) if wd else g_task
                    update += self._momentum_step(state, "task_buffer", g, m - d if g_kd is not None else m)
                if g_kd is not None:
                    g = g_kd.add(p, alpha=wd) if (wd and g_task is None) else g_kd
                    update += self._momentum_step(state, "distill_buffer", g, m + d if g_task is not None else m)
                p.add_(update, alpha=-lr)
        self._distill_grads = {}


def build_optimizer(name: str, param_groups, lr: float, momentum: float, weight_decay: float,
                    dot: bool = False, dot_delta: float = 0.075) -> torch.optim.Optimizer:
    if dot:
        return DOT(param_groups, lr=lr, momentum=momentum, delta=dot_delta, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(param_groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(param_groups, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; valid choices: {', '.join(OPTIMIZERS)}")
