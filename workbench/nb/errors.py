"""The notebooks' one-line errors: IPython renders these as ``<class>: <message>`` (no traceback)."""
from __future__ import annotations

from ..keys import ConfigError


class OneLine:
    """Mixin: IPython shows the exception as one line ``<class name>: <message>`` (no traceback)."""

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


class ParameterError(OneLine, ConfigError):
    """A bad notebook parameter. Shown by IPython as one clear line (no traceback)."""


class RunError(OneLine, RuntimeError):
    """A run that stopped for a reason its message states (shown as one line)."""
