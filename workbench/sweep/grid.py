"""Grid syntax: ``key=value`` arguments whose values expand into several, and their product.

    preset=cifar100/{r32x4_r8x4,wrn40_2_wrn16_2}/{kd,dkd} seed=0:5 epochs=240

- **Braces** ``{a,b}`` expand in place, as in bash, and may appear anywhere in a value, several
  times (their product) and nested: ``cifar100/{r32x4_r8x4,r56_r20}/{kd,dkd}`` is four values.
- **Comma lists** ``seed=0,1,2`` are the same as ``seed={0,1,2}``.
- **Ranges** ``seed=0:5`` are 0, 1, 2, 3, 4 -- Python's ``range(0, 5)``: the end is *excluded*;
  ``0:10:2`` steps by 2. Ranges apply to integer keys only (``init=inherit:<file>`` stays a
  value) and may sit inside braces or lists (``seed={0:3,10}``).
- **List-valued keys** (``milestones``, ``source_classes``, ``branches``, ``vit_eval_heads``:
  one value is itself a comma list) separate alternatives with ``;`` instead of ``,``:
  ``milestones="150,180,210;100,150"`` (quote it for the shell).

The cells are the product of every key's values, in the order the keys are given (the last
key varies fastest). A key given twice, an unknown key, or a value that expands to nothing is a
:class:`GridError` naming it -- before anything is validated, created or submitted.
"""
from __future__ import annotations

import itertools
import re
from typing import Any

from ..keys import ConfigError, unknown_key

RANGE = re.compile(r"^(-?\d+):(-?\d+)(?::(-?\d+))?$")
LIST_ALTERNATIVES = ";"  # the alternative separator of list-valued keys


class GridError(ConfigError):
    """A grid that cannot be expanded (one line, naming the key and the value)."""


def split_top(text: str, sep: str) -> list[str]:
    """``text`` split on ``sep`` outside braces."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def expand_braces(text: str, sep: str = ",") -> list[str]:
    """Bash-style brace expansion: ``a{b,c}d{e,f}`` -> abde, abdf, acde, acdf (nested allowed)."""
    start = text.find("{")
    if start < 0:
        if "}" in text:
            raise ValueError(f"unbalanced '}}' in {text!r}")
        return [text]
    depth = 0
    for end in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[end], 0)
        if depth == 0:
            break
    else:
        raise ValueError(f"unbalanced '{{' in {text!r}")
    head, body, tail = text[:start], text[start + 1:end], text[end + 1:]
    options = [o for part in split_top(body, sep) for o in expand_braces(part, sep)]
    return [head + o + t for o in options for t in expand_braces(tail, sep)]


def _config():
    """The assembled run-config keys, imported when a grid is read: importing them imports every
    method (and torch), which a cell's job process must not pay for."""
    from .. import config

    return config


def is_list_valued(key: str) -> bool:
    return _config().is_list_valued(key)


def fields_by_name() -> dict:
    return _config().fields_by_name()


def _is_int_key(key: str) -> bool:
    return fields_by_name()[key].metadata["kind"] in ("int", "Optional[int]")


def expand_value(key: str, value: Any) -> list[Any]:
    """Every value ``key=value`` stands for (strings expanded; other Python values as given,
    a list or tuple meaning alternatives unless the key is list-valued)."""
    if not isinstance(value, str):
        if isinstance(value, (list, tuple)) and not is_list_valued(key):
            out = [v for item in value for v in expand_value(key, item)]
        else:
            out = [value]
        if not out:
            raise GridError(f"{key}={value!r} expands to no value")
        return out
    sep = LIST_ALTERNATIVES if is_list_valued(key) else ","
    try:
        items = [v for part in split_top(value, sep) for v in expand_braces(part, sep)]
    except ValueError as e:
        raise GridError(f"{key}={value}: {e}") from None
    out: list[Any] = []
    for item in items:
        m = RANGE.match(item.strip()) if _is_int_key(key) else None
        if m:
            a, b, step = int(m[1]), int(m[2]), int(m[3] or 1)
            if step == 0:
                raise GridError(f"{key}={value}: a range step cannot be 0")
            out.extend(range(a, b, step))
        else:
            out.append(item)
    if not out:
        raise GridError(f"{key}={value} expands to no value (a range a:b is empty when b <= a; "
                        f"ranges exclude the end, as Python's range)")
    return out


def parse_grid(args: list[str] | dict) -> dict[str, list]:
    """``["preset=a/{x,y}", "seed=0:2"]`` (or a dict of values) -> ``{"preset": ["a/x", "a/y"],
    "seed": [0, 1]}``, keys checked against the run config's."""
    known = fields_by_name()
    items = list(args.items()) if isinstance(args, dict) else [_split_arg(a) for a in args]
    grid: dict[str, list] = {}
    for key, value in items:
        if key not in known:
            raise GridError(unknown_key(key, list(known)))
        if key in grid:
            raise GridError(f"{key}: given twice; list its values once, e.g. {key}={{a,b}}")
        grid[key] = expand_value(key, value)
    return grid


def _split_arg(arg: str) -> tuple[str, str]:
    if "=" not in arg:
        raise GridError(f"expected key=value, got {arg!r} (see `python -m workbench sweep --help`)")
    key, value = arg.split("=", 1)
    return key.strip().lstrip("-").replace("-", "_"), value


def cells(grid: dict[str, list]) -> list[dict]:
    """The product of the grid's values: one dict of values per cell (last key fastest)."""
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def varying(grid: dict[str, list]) -> list[str]:
    """The keys that take more than one value (what tells cells apart)."""
    return [k for k, v in grid.items() if len(v) > 1]
