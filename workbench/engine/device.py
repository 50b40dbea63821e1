"""Device, precision and memory-format choices (device-agnostic: cuda, mps, cpu)."""
from __future__ import annotations

import contextlib

import torch

from ..registry import unknown_choice


def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks cuda > mps > cpu; explicit names are checked to exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(unknown_choice("device", name, ["auto", "cpu", "cuda", "cuda:N", "mps"])) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available here; use device=auto or cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {name!r} requested but MPS is not available here; use device=auto or cpu")
    return dev


def amp_dtype(device: torch.device, amp: str):
    """The autocast dtype, or None for full precision. ``auto``: bf16 on CUDA when supported,
    else fp16; off on CPU/MPS (CPU autocast is slower than fp32 for these convnets)."""
    if amp == "off" or device.type != "cuda":
        if amp in ("bf16", "fp16") and device.type != "cuda":
            raise ValueError(f"amp={amp!r} needs a CUDA device (got {device}); use amp=auto or off")
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def use_channels_last(device: torch.device, setting: str) -> bool:
    return setting == "on" or (setting == "auto" and device.type == "cuda")


def autocast(device: torch.device, dtype):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def to_device(batch, device: torch.device, channels_last: bool):
    """``(x, y[, index])`` on ``device`` (no-op for device-resident batches)."""
    non_blocking = device.type == "cuda"
    x, *rest = (t.to(device, non_blocking=non_blocking) for t in batch)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return (x, *rest)
