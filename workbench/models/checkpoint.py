"""Reading weight files into zoo models.

Accepted layouts (detected automatically):
- a plain state dict (name -> tensor), e.g. torchvision's ``resnet18-f37072fd.pth``;
- a dict with ``"model"`` holding the state dict (RepDistiller's ``ckpt_epoch_240.pth``,
  mdistiller's, and this project's own checkpoints);
- a dict with ``"state_dict"`` holding it;
and in each case keys prefixed ``module.`` (DataParallel / DDP) are stripped. RepDistiller keys
need no conversion: the zoo reproduces its names. Files are read with ``weights_only=True``
(no arbitrary code runs; ``argparse.Namespace`` entries are allowed) unless the caller opts out
for a trusted file.

Errors are ``ValueError``s naming the file: unreadable or corrupt files, files holding no state
dict, and state dicts that do not fit the model (the first offending keys with expected and
found shapes, plus missing / unexpected keys).
"""
from __future__ import annotations

import argparse
import os
import zipfile
from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

STATE_DICT_ENTRIES = ("model", "state_dict")
DDP_PREFIX = "module."
#: how many offending keys an error message lists per kind
MAX_LISTED_KEYS = 5
#: BatchNorm fills a missing counter itself (files saved before torch 0.4.1 lack it)
OPTIONAL_SUFFIXES = ("num_batches_tracked",)
#: harmless classes found in common KD checkpoints, allowed under ``weights_only=True``
#: (RepDistiller's ``*_last.pth`` stores its argparse options as ``"opt"``)
SAFE_GLOBALS = (argparse.Namespace,)
#: torch's weights-only refusal: the part after UNPICKLER_ERROR and before its documentation pointer
UNPICKLER_ERROR, TORCH_DOC_POINTER = "WeightsUnpickler error:", "Check the documentation"
MAX_DETAIL = 300  # characters of torch's own error kept in the one-line message


def read_state_dict(path, map_location="cpu", weights_only: bool = True) -> dict[str, torch.Tensor]:
    """The state dict inside the file at ``path`` (layouts above), ``module.`` prefix removed."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"checkpoint file not found: {path}")
    try:
        if zipfile.is_zipfile(path):  # torch >= 1.6 format; legacy pickle files (old zoos) have no CRCs
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
            if bad is not None:
                raise ValueError(f"archive member {bad!r} fails its CRC check")
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            obj = torch.load(path, map_location=map_location, weights_only=weights_only)
    except Exception as err:  # torch raises many types for corrupt/unsafe files
        detail, hint = " ".join(str(err).split()), ""  # one line: torch's messages span several
        if weights_only and "weights_only" in detail:
            detail = detail.split(UNPICKLER_ERROR)[-1].split(TORCH_DOC_POINTER)[0].strip() if UNPICKLER_ERROR in detail \
                else "the weights-only loader refused it"
            hint = " (the file holds non-tensor Python objects; pass weights_only=False if you trust it)"
        raise ValueError(f"cannot read checkpoint {path}: {type(err).__name__}: {detail[:MAX_DETAIL]}{hint}") from err
    state = _find_state_dict(obj, path)
    state = dict(state) if not hasattr(state, "_metadata") else state.copy()
    consume_prefix_in_state_dict_if_present(state, DDP_PREFIX)
    return state


def _is_state_dict(obj) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def _find_state_dict(obj, path: str):
    if _is_state_dict(obj):
        return obj
    if isinstance(obj, Mapping):
        for entry in STATE_DICT_ENTRIES:
            if entry in obj and _is_state_dict(obj[entry]):
                return obj[entry]
        keys = ", ".join(map(repr, list(obj)[:10]))
        raise ValueError(
            f"checkpoint {path} holds a dict without a state dict: expected tensors by name or a "
            f"{' / '.join(map(repr, STATE_DICT_ENTRIES))} entry holding them; found keys {keys}"
        )
    raise ValueError(f"checkpoint {path} holds a {type(obj).__name__}, not a state dict")


def check_fits(model: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """Raise a ValueError describing every way ``state`` does not fit ``model`` (strict)."""
    expected = model.state_dict()
    mismatched = [
        f"{k}: expected {tuple(expected[k].shape)}, found {tuple(v.shape)}"
        for k, v in state.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    missing = [k for k in expected if k not in state and not k.endswith(OPTIONAL_SUFFIXES)]
    unexpected = [k for k in state if k not in expected]
    if not (mismatched or missing or unexpected):
        return
    parts = []
    if mismatched:
        parts.append(f"{len(mismatched)} shape mismatch(es): " + "; ".join(mismatched[:MAX_LISTED_KEYS]))
    if missing:
        parts.append(f"{len(missing)} missing key(s): " + ", ".join(missing[:MAX_LISTED_KEYS]))
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): " + ", ".join(unexpected[:MAX_LISTED_KEYS]))
    raise ValueError(f"{what} does not fit the model: " + " | ".join(parts))


def load_state_into(model: nn.Module, state: dict, path, what: str = "") -> nn.Module:
    """Load ``state`` (read from the file at ``path``) into ``model`` strictly; returns ``model``."""
    check_fits(model, state, f"checkpoint {os.fspath(path)}" + (f" for {what}" if what else ""))
    model.load_state_dict(state, strict=True)
    return model
