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


#: ``channels_last=auto`` on CPU: image inputs of at least this many pixels per channel go
#: channels_last. Measured with ``bench/bench_layout.py`` (CPU time, 1 thread, AVX-512; figures in
#: bench/README.md): at 28x28 (fashion_mnist) and 32x32 (CIFAR) a channels_last training step
#: took 0.57-0.93x the contiguous time for every model measured (resnet8/20/56, resnet8x4,
#: resnet32x4, wrn_16_2, wrn_40_2, vgg8/13, MobileNetV2, ShuffleV1/V2, GPD's T_d), an eval
#: forward 0.65-0.94x (resnet8x4 at 32x32: 1.02, a tie); at 8x8 (digits) it was a tie
#: (resnet8x4, T_d: 0.92-1.02x), so digits runs keep the contiguous layout.
CPU_CHANNELS_LAST_MIN_PIXELS = 28 * 28


def use_channels_last(device: torch.device, setting: str, input_shape: tuple[int, ...] | None = None) -> bool:
    """Whether models and batches use the channels_last memory format. ``on``/``off`` as given;
    ``auto``: on for CUDA; on CPU for image inputs (``input_shape`` = one example's (C, H, W))
    of at least :data:`CPU_CHANNELS_LAST_MIN_PIXELS` pixels. A pure function of the device type
    and the input shape, so a run makes the same choice on every machine and at every resume."""
    if setting != "auto":
        return setting == "on"
    if device.type == "cuda":
        return True
    if device.type != "cpu" or input_shape is None or len(input_shape) != 3:
        return False
    return input_shape[1] * input_shape[2] >= CPU_CHANNELS_LAST_MIN_PIXELS


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
