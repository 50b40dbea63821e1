"""The roles a run evaluates (the ``role`` of eval, gap and probe records) and how they are shown.

The engine knows two: the student ``S`` and the static teacher ``T_s``. A method that evaluates
other models registers their roles in its own file (GPD: the dynamic teacher ``T_d``), so no
generic code names a method's roles. A role's ``rank`` says how far it stands from the student:
the gap pairs (:func:`gap_pairs`) go from the higher to the lower rank -- every teacher against
the student first, then the teachers against each other (``T_s-S``, ``T_d-S``, ``T_s-T_d``).
The EMA twin of a role is ``<role>_ema`` (label ``<label>_ema``).

Roles are registered when their method's module is imported; :mod:`workbench.methods` imports
every method, and everything that reads roles from records (probes, notebooks, tables) imports it.
"""
from __future__ import annotations

from dataclasses import dataclass

EMA_SUFFIX = "_ema"  # eval roles of the EMA model: student_ema, dynamic_teacher_ema


@dataclass(frozen=True)
class Role:
    name: str  # the records' role
    label: str  # how logs, tables and figures show it
    rank: int  # distance from the student (0): gap pairs go from higher to lower
    description: str = ""


_ROLES: dict[str, Role] = {}


def register_role(name: str, label: str, rank: int, description: str = "") -> Role:
    """Declare a role a method evaluates (idempotent for the same declaration)."""
    role = Role(name, label, rank, description)
    if _ROLES.get(name, role) != role:
        raise ValueError(f"role {name!r} is registered twice with different declarations")
    _ROLES[name] = role
    return role


STUDENT = register_role("student", "S", 0, "the student")
TEACHER = register_role("teacher", "T_s", 100, "the static teacher")


def roles() -> tuple[str, ...]:
    """Every registered role, in registration order: the engine's (S, T_s), then the methods' (T_d)."""
    return tuple(_ROLES)


def by_rank() -> tuple[str, ...]:
    """Every registered role from the student up (S, T_d, T_s)."""
    return tuple(sorted(_ROLES, key=lambda n: _ROLES[n].rank))


def teachers() -> tuple[str, ...]:
    """The roles that teach the student, highest rank first (T_s, T_d)."""
    return tuple(n for n in reversed(by_rank()) if _ROLES[n].rank > 0)


def role_label(role: str) -> str:
    """``S``, ``T_s``, ``T_d`` (``S_ema``, ``T_d_ema`` for EMA twins); unknown roles unchanged."""
    if role.endswith(EMA_SUFFIX) and role[: -len(EMA_SUFFIX)] in _ROLES:
        return _ROLES[role[: -len(EMA_SUFFIX)]].label + EMA_SUFFIX
    return _ROLES[role].label if role in _ROLES else role


def role_labels() -> dict[str, str]:
    return {n: _ROLES[n].label for n in roles()}


def gap_pairs() -> dict[str, tuple[str, str]]:
    """``{"T_s-S": ("teacher", "student"), ...}``: every teacher against the student (highest rank
    first), then every teacher against each lower-ranked teacher."""
    ts = teachers()
    pairs = [(t, STUDENT.name) for t in ts] + [(a, b) for i, a in enumerate(ts) for b in ts[i + 1:]]
    return {f"{role_label(a)}-{role_label(b)}": (a, b) for a, b in pairs}
