"""One registry pattern, reused by datasets, models and methods.

>>> MODELS = Registry("model")
>>> @MODELS.register("resnet8")
... def resnet8(num_classes): ...
>>> MODELS.get("resnet8")            # unknown names raise a ValueError listing the valid ones
"""
from __future__ import annotations

import difflib
from typing import Any, Callable, Iterator


class Registry:
    """A name -> object mapping with a decorator and helpful errors."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Any] = {}
        self._meta: dict[str, dict] = {}

    def register(self, name: str, obj: Any = None, **meta) -> Callable:
        """Register ``obj`` under ``name`` (usable as a decorator when ``obj`` is omitted).

        Extra keyword arguments are stored as metadata, readable with :meth:`meta`."""

        def add(o):
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = o
            self._meta[name] = dict(meta)
            return o

        return add(obj) if obj is not None else add

    def get(self, name: str) -> Any:
        self.check(name)
        return self._items[name]

    def find(self, name: object) -> Any:
        """The object registered as ``name``, or None (no error: for code that checks elsewhere)."""
        return self._items.get(name)

    def meta(self, name: str) -> dict:
        self.check(name)
        return self._meta[name]

    def check(self, name: str) -> None:
        """Raise a ValueError naming ``name`` and the valid choices if it is not registered."""
        if name not in self._items:
            raise ValueError(unknown_choice(self.kind, name, self.names()))

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)


def unknown_choice(kind: str, value: object, choices: list[str]) -> str:
    """The one wording for 'bad value, here are the valid ones' used across the package."""
    msg = f"unknown {kind} {value!r}; valid choices: {', '.join(map(str, choices))}"
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    if close:
        msg += f" (did you mean {close[0]!r}?)"
    return msg


def did_you_mean(value: object, choices: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices`` to ``value``, or ``""``."""
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_among_many(kind: str, value: object, choices: list[str], listed_by: str) -> str:
    """The wording for a bad name among many (presets, notebook parameters): the closest valid
    one and where the whole list is, instead of all of them on one line (which buried the
    did-you-mean)."""
    return f"unknown {kind} {value!r}{did_you_mean(value, choices)}; {listed_by} lists all {len(choices)} {kind}s"
