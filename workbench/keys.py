"""The key vocabulary every layer may use, importing nothing from the project: the config error,
how a key is declared (:func:`opt`), the value parsers, and the names of keys and values with a
meaning of their own (runtime keys, ``auto``/``none``, ``snapshot@E``).

A key is declared with :func:`opt` -- the core keys in :mod:`workbench.config`, a method's own keys
in its file (``methods/<name>.py``) -- and converted from a CLI string or a notebook value by
:func:`convert_value`. The run configuration itself (every key together, validation, presets,
naming) is assembled above the methods, in :mod:`workbench.config`.
"""
from __future__ import annotations

import difflib
from dataclasses import field
from typing import Any, Mapping, Optional

#: ``teacher=none``: no static teacher
NO_TEACHER = "none"
#: ``base`` values that are not methods: the method's own choice, and no base loss
AUTO, NO_BASE = "auto", "none"
# Keys that may change between a run and its resumption: they do not change what is trained
# (device_data only changes which random crops/flips are drawn after the switch). They are left
# out of the config comparison on resume and out of the default run name's hash.
RUNTIME_KEYS = frozenset({"device", "workers", "progress", "resume", "out_dir", "name", "probe_every",
                          "probe_samples", "transfer", "eval_batch_size", "compile", "preset",
                          "device_data", "cache_teacher", "download", "log", "dist_timeout"})
#: ``log=``: where a run's records also go (besides ``metrics.jsonl``, the source of truth)
TRACKERS = ("none", "tensorboard", "wandb")
#: words the boolean parser accepts (CLI, notebooks and papermill alike)
TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class ConfigError(ValueError):
    """A bad configuration key or value (raised before any expensive work)."""


#: ``teacher=snapshot@E``: the static teacher is a frozen copy of the student taken at the end of epoch E
SNAPSHOT_TEACHER = "snapshot@"


def snapshot_epoch(teacher: str) -> Optional[int]:
    """E of ``teacher=snapshot@E`` (None for any other teacher); a malformed E is a ConfigError."""
    if not isinstance(teacher, str) or not teacher.startswith(SNAPSHOT_TEACHER):
        return None
    text = teacher[len(SNAPSHOT_TEACHER):]
    if not text.isdigit():
        raise ConfigError(f"teacher: {teacher!r}: expected snapshot@E with E the epoch (a positive integer) "
                          f"after which the student's frozen copy becomes the teacher, e.g. snapshot@10")
    return int(text)


def opt(default, help: str, choices=None, low=None, high=None, kind: str | None = None,
        numbers_as_text: bool = False, list_value: bool = False):
    """A config field with its help text, valid choices and numeric bounds. ``kind`` names the
    type when the default does not tell it (``"Optional[float]"`` / ``"Optional[int]"`` for a
    None default meaning "method default"); ``numbers_as_text``: a text key that also takes a
    number (e.g. ``branches=3`` from a notebook); ``list_value``: one value is itself a comma list
    (``source_classes=0,1,2``), so a sweep separates its alternatives with ``;`` instead of ``,``
    (tuple keys such as ``milestones`` are list-valued by their kind)."""
    meta = {"help": help, "choices": choices, "low": low, "high": high, "kind": kind or _kind(default),
            "numbers_as_text": numbers_as_text, "list_value": list_value or _kind_of(default, kind) == "tuple"}
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: tuple(default), metadata=meta)
    return field(default=default, metadata=meta)


def _kind_of(default, kind: str | None) -> str:
    return kind or ("" if default is None else _kind(default))


def _kind(default) -> str:
    if default is None:
        raise TypeError("a config key with a None default must say its kind (e.g. kind='Optional[float]')")
    return "tuple" if isinstance(default, (list, tuple)) else type(default).__name__


def parse_bool(key: str, value) -> bool:
    """The one boolean parser: bools, 0/1 and the words in TRUE_WORDS / FALSE_WORDS."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS + FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    raise ConfigError(f"{key}: expected a boolean (true/false), got {value!r}")


def parse_int_list(key: str, value) -> tuple[int, ...]:
    if isinstance(value, (list, tuple)):
        items = list(value)
    else:
        items = [s for s in str(value).replace("[", "").replace("]", "").split(",") if s.strip()]
    try:
        return tuple(int(str(s).strip()) for s in items)
    except ValueError:
        raise ConfigError(f"{key}: expected a comma-separated list of integers, got {value!r}") from None


def convert_value(key: str, meta: Mapping[str, Any], value: Any) -> Any:
    """Convert ``value`` (a CLI string or a Python value from a notebook) to the type ``meta``
    (an :func:`opt` field's metadata) declares for ``key``."""
    kind = meta["kind"]
    if kind.startswith("Optional["):
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
            return None
        kind = kind[len("Optional["):-1]
    if kind == "bool":
        return parse_bool(key, value)
    if kind == "int":
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(str(value).strip()) if not isinstance(value, int) else value
        except ValueError:
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
    if kind == "float":
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if kind == "tuple":
        return parse_int_list(key, value)
    if not isinstance(value, str):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and meta.get("numbers_as_text"):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r} ({type(value).__name__})")
    return value


def unknown_key(key: str, known: list[str]) -> str:
    """One line: the bad key, the closest valid one, and where the full list is (not all ~80
    keys inline, which buried the did-you-mean)."""
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown config key {key!r}{hint}; `python -m workbench keys` lists all {len(known)} keys"
