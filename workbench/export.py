"""Export a run's plain student for use without the workbench.

    python -m workbench export <run folder | student.pt> [--format torchscript|onnx] [--ema] [--out FILE]

The student file holds the architecture, classes, input channels and the training inputs' shape
(``models.student_file``); the model is exported in eval mode for inputs of that shape with any
batch size, and the exported model's outputs are compared with the eager model's on a random
batch before the file is written (a mismatch is an error, not a file).

- ``torchscript`` (default, nothing to install): ``torch.jit.trace``; load with
  ``torch.jit.load(file)``. (PyTorch marks TorchScript deprecated in favour of ``torch.export``;
  it still loads in C++ and Python without this package.)
- ``onnx``: ``torch.onnx.export`` (opset :data:`ONNX_OPSET`, batch axis dynamic); needs the
  optional ``onnx`` extra (``pip install -e '.[onnx]'``: onnx, onnxscript; onnxruntime for the
  check), one line says so when it is missing.
"""
from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import torch

FORMATS = ("torchscript", "onnx")
SUFFIX = {"torchscript": ".torchscript.pt", "onnx": ".onnx"}
ONNX_OPSET = 18
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
CHECK_BATCH = 3  # the check batch differs from the traced batch of 1: a batch size baked in shows
#: exported vs eager logits, relative to max |logit|: the same float32 ops, possibly fused or
#: reordered by the exporter's graph (the IR exactness bound of tests/test_gpd_exactness.py)
CHECK_RTOL = 1e-5


class ExportError(ValueError):
    """A bad export request or a failed check (one line)."""


def student_path(source, ema: bool = False) -> Path:
    """``source`` itself (a student file) or the student file of the run folder ``source``."""
    from .engine.checkpoint import STUDENT
    from .engine.trainer import STUDENT_EMA

    path = Path(source)
    if path.is_dir():
        name = STUDENT_EMA if ema else STUDENT
        if not (path / name).is_file():
            raise ExportError(f"{path} has no {name}: export a finished run's folder (or pass the file itself)")
        return path / name
    if not path.is_file():
        raise ExportError(f"{path} is neither a run folder nor a student file")
    if ema:
        raise ExportError("--ema selects student_ema.pt in a run folder; pass the run folder, or the file alone")
    return path


def export(source, fmt: str = "torchscript", out=None, ema: bool = False) -> Path:
    """Write the exported student; returns the file's path (default: beside the student file)."""
    from .models import student_file
    from .registry import unknown_choice

    if fmt not in FORMATS:
        raise ExportError(unknown_choice("format", fmt, list(FORMATS)))
    if fmt == "onnx":
        missing = [p for p in ONNX_PACKAGES if importlib.util.find_spec(p) is None]
        if missing:
            raise ExportError(f"format onnx needs {', '.join(missing)} (the optional onnx extra: "
                              f"pip install -e '.[onnx]'); --format torchscript needs nothing more")
    path = student_path(source, ema)
    try:
        sf = student_file(path)
    except ValueError as e:
        raise ExportError(str(e)) from None
    shape = sf.input_shape or _shape_from_run(path)
    if shape is None:
        raise ExportError(f"{path} does not record its input shape (written by an older version) and no readable "
                          f"config.json beside it tells the dataset: export its run folder, or call "
                          f"workbench.export.export_model(model, input_shape, ...)")
    target = Path(out) if out else path.with_name(path.name.split(".")[0] + SUFFIX[fmt])
    export_model(sf.model, shape, fmt, target)
    return target


def _shape_from_run(path: Path):
    """(C, H, W) of the run's dataset, from the ``config.json`` beside an older student file."""
    import json

    from . import data
    from .config import RunConfig

    try:
        saved = json.loads((path.parent / "config.json").read_text())
        keys = set(RunConfig.keys()) - {"preset"}
        cfg = RunConfig.from_dict({k: v for k, v in saved.items() if k in keys})
        info = data.info(cfg.dataset, **cfg.dataset_options())
    except Exception:  # noqa: BLE001 -- no usable config: the caller's one-line error says what to do
        return None
    return (info.in_channels, info.image_size, info.image_size)


def export_model(model: torch.nn.Module, input_shape, fmt: str, target: Path) -> Path:
    """Export ``model`` (eval mode) for inputs ``(N, *input_shape)``; checked against eager first."""
    model = model.eval()
    example = torch.randn(1, *input_shape)
    check = torch.randn(CHECK_BATCH, *input_shape)
    with torch.no_grad():
        want = model(check)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        _write(model, example, check, want, fmt, tmp)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _write(model, example, check, want, fmt: str, tmp: Path) -> None:
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.trace is deprecated" (module docstring)
            traced = torch.jit.trace(model, example)
        with torch.no_grad():
            got = traced(check)
        _check(got, want, fmt)
        traced.save(str(tmp))
    else:
        batch = torch.export.Dim("batch")
        torch.onnx.export(model, (example,), str(tmp), input_names=["images"], output_names=["logits"],
                          opset_version=ONNX_OPSET, dynamo=True, dynamic_shapes=({0: batch},),
                          external_data=False)  # one self-contained file (students are small)
        import onnxruntime

        session = onnxruntime.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(["logits"], {"images": check.numpy()})[0])
        _check(got, want, fmt)


def _check(got: torch.Tensor, want: torch.Tensor, fmt: str) -> None:
    err = float((got - want).abs().max() / want.abs().max().clamp_min(1e-12))
    if got.shape != want.shape or not err <= CHECK_RTOL:
        raise ExportError(f"the {fmt} export does not reproduce the model (shape {tuple(got.shape)} vs "
                          f"{tuple(want.shape)}, max relative difference {err:.2e} > {CHECK_RTOL}); nothing written")
