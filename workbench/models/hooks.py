"""Feature access through forward hooks, addressed by module path; forwards are never rewritten.

- ``classifier_path(model)``: dotted path of the final classifier ``nn.Linear``;
- ``stage_paths(model)``: dotted paths of the named stage outputs;
- ``FeatureTap``: context manager capturing ``"penultimate"`` (the classifier's input, flattened
  to (N, D), via a forward *pre*-hook) and the outputs of any module paths;
- ``penultimate(model, x) -> (logits, features)``.

Guarantees: hooks are removed when the ``with`` block exits (also on errors); captures are
clones of the hooked tensors, so later in-place ops in the model (e.g. torchvision's
``ReLU(inplace=True)``) cannot change them; ``detach=True`` (default) cuts the graph,
``detach=False`` keeps it (gradients flow into the model). Each forward inside the block
overwrites the previous capture.
"""
from __future__ import annotations

import difflib

import torch
from torch import nn

from workbench.registry import unknown_choice

PENULTIMATE = "penultimate"
#: list every module path in an error message only below this many modules
MAX_LISTED_PATHS = 60
#: RepDistiller-style stage ends for torchvision's MobileNetV2 (24, 32, 96, 320 channels)
TV_MOBILENET_STAGES = ("features.3", "features.6", "features.13", "features.17")
TV_RESNET_STAGES = ("layer1", "layer2", "layer3", "layer4")


def classifier_path(model: nn.Module) -> str:
    """Path of the final classifier: the model's declared ``classifier_name`` when it names an
    ``nn.Linear``, else the last ``nn.Linear`` in module registration order."""
    declared = getattr(model, "classifier_name", None)
    if isinstance(declared, str):
        try:
            if isinstance(model.get_submodule(declared), nn.Linear):
                return declared
        except AttributeError:
            pass
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    if last is None:
        raise ValueError(f"{type(model).__name__} has no nn.Linear classifier")
    return last


def stage_paths(model: nn.Module) -> list[str]:
    """Paths of the model's stage outputs (e.g. ``["layer1", "layer2", "layer3"]``)."""
    declared = getattr(model, "stage_names", None)
    if declared is not None:
        return list(declared)
    import torchvision.models as tvm

    if isinstance(model, tvm.ResNet):
        return list(TV_RESNET_STAGES)
    if isinstance(model, tvm.MobileNetV2):
        return list(TV_MOBILENET_STAGES)
    raise ValueError(
        f"no known stages for {type(model).__name__}; pass module paths from model.named_modules() "
        f"to FeatureTap instead"
    )


#: feature-name suffixes: ``"<path>:input"`` is the module's input (its last call), and
#: ``"<path>:preact"`` the stage output before its final ReLU (ReviewKD's teacher features): the
#: input of the last ReLU run inside ``<path>`` when that ReLU's output is ``<path>``'s output,
#: else ``<path>``'s output itself (a stage that does not end with a ReLU)
INPUT, PREACT = ":input", ":preact"


def split_name(name: str) -> tuple[str, str]:
    """``("layer2", ":preact")`` for ``"layer2:preact"``; ``(name, "")`` for a plain path."""
    for suffix in (INPUT, PREACT):
        if name.endswith(suffix):
            return name[: -len(suffix)], suffix
    return name, ""


def _check_paths(model: nn.Module, names: list[str]) -> None:
    paths = [n for n, _ in model.named_modules() if n]
    known = set(paths)
    for name in names:
        if name == PENULTIMATE or split_name(name)[0] in known:
            continue
        if len(paths) <= MAX_LISTED_PATHS:
            raise ValueError(unknown_choice("feature name", name, [PENULTIMATE, *paths]))
        short = [PENULTIMATE, *_safe_stages(model), classifier_path(model)]
        msg = unknown_choice("feature name", name, short) + " or any path from model.named_modules()"
        close = difflib.get_close_matches(name, paths, n=1)
        if close and close[0] not in short:
            msg += f" (closest module path: {close[0]!r})"
        raise ValueError(msg)


def _safe_stages(model: nn.Module) -> list[str]:
    try:
        return stage_paths(model)
    except ValueError:
        return []


class FeatureTap:
    """Capture features during forwards inside a ``with`` block.

    >>> with FeatureTap(model, ["penultimate", "layer2"]) as tap:
    ...     logits = model(x)
    >>> tap["penultimate"].shape   # (N, D): the classifier's input, flattened
    """

    def __init__(self, model: nn.Module, names, detach: bool = True):
        if isinstance(names, str):
            names = [names]
        self.model = model
        self.names = list(names)
        self.detach = detach
        _check_paths(model, self.names)
        self._features: dict[str, torch.Tensor] = {}
        self._handles: list = []

    def _keep(self, name: str, value: torch.Tensor) -> None:
        value = value.detach() if self.detach else value
        self._features[name] = value.clone()

    def __enter__(self) -> "FeatureTap":
        try:
            for name in self.names:
                if name == PENULTIMATE:
                    target = self.model.get_submodule(classifier_path(self.model))
                    hook = lambda _m, args, _n=name: self._keep(_n, args[0].flatten(1))  # noqa: E731
                    self._handles.append(target.register_forward_pre_hook(hook))
                    continue
                path, suffix = split_name(name)
                target = self.model.get_submodule(path)
                if suffix == INPUT:
                    hook = lambda _m, args, _n=name: self._keep(_n, args[0])  # noqa: E731
                    self._handles.append(target.register_forward_pre_hook(hook))
                elif suffix == PREACT:
                    self._tap_preact(name, target)
                else:
                    hook = lambda _m, _args, out, _n=name: self._keep(_n, out)  # noqa: E731
                    self._handles.append(target.register_forward_hook(hook))
        except BaseException:
            self.remove()
            raise
        return self

    def _tap_preact(self, name: str, stage: nn.Module) -> None:
        last: dict = {}

        def before(_m, args):  # copy: an in-place ReLU overwrites its input
            last["input"] = args[0].clone()

        def after(_m, _args, out):
            last["output"] = out

        for m in stage.modules():
            if isinstance(m, nn.ReLU):
                self._handles += [m.register_forward_pre_hook(before), m.register_forward_hook(after)]

        def stage_done(_m, _args, out):
            ends_with_relu = last.get("output") is out
            self._keep(name, last["input"] if ends_with_relu else out)
            last.clear()

        self._handles.append(stage.register_forward_hook(stage_done))

    def __exit__(self, *exc) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook this tap registered (idempotent)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._features:
            if name in self.names:
                raise KeyError(f"feature {name!r} was not captured: run a forward inside the with block")
            raise KeyError(unknown_choice("captured feature", name, self.names))
        return self._features[name]

    def __contains__(self, name: object) -> bool:
        return name in self._features

    def items(self):
        return self._features.items()


def penultimate(model: nn.Module, x: torch.Tensor, detach: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, features)`` where ``features`` (N, D) is the classifier's flattened input."""
    with FeatureTap(model, [PENULTIMATE], detach=detach) as tap:
        logits = model(x)
    return logits, tap[PENULTIMATE]
