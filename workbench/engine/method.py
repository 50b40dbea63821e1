"""What the engine needs from a method: the loss-dict convention (and, below, the interface).

A method's training forward returns ``(student_logits, {name: loss})``; the trainer sums the
dict. Keys starting with :data:`TASK_PREFIX` are task losses, every other key a distillation
loss (DOT keeps separate momentum for the two groups).
"""
from __future__ import annotations

TASK_PREFIX = "loss_ce"
