"""Tool names as MCP clients see them.

The broker names an action ``tool.action``. The MCP spec allows the dot, but some clients
(and the model APIs behind them) accept only ``[A-Za-z0-9_-]``; for those, ``underscore``
writes ``tool__action``. Tool and action names are lower-case letters, digits, ``_`` and
``-``, so a name with ``__`` in it could be read two ways: the front then maps back only
names it listed, never by splitting.
"""

from __future__ import annotations

from typing import Literal

NameStyle = Literal["dotted", "underscore"]
STYLES: tuple[NameStyle, ...] = ("dotted", "underscore")


def mcp_name(full_name: str, style: NameStyle) -> str:
    """The name a client sees for the broker's ``tool.action``."""
    if style == "dotted":
        return full_name
    tool, _, action = full_name.partition(".")
    return f"{tool}__{action}"


class ToolNames:
    """Maps the names a client saw back to the broker's, from the last list served."""

    def __init__(self, style: NameStyle) -> None:
        self.style = style
        self._broker_names: dict[str, str] = {}

    def listed(self, full_names: list[str]) -> dict[str, str]:
        """Remember a list just served; returns broker name -> client name. Two actions
        that would show under one name are both left out (never a guess which one runs)."""
        seen: dict[str, list[str]] = {}
        for full in full_names:
            seen.setdefault(mcp_name(full, self.style), []).append(full)
        self._broker_names = {shown: fulls[0] for shown, fulls in seen.items() if len(fulls) == 1}
        return {full: shown for shown, full in self._broker_names.items()}

    def broker_name(self, shown: str) -> str | None:
        """The broker's name for a name the client sends; None when it cannot be known."""
        if self.style == "dotted":
            return shown if "." in shown else None
        return self._broker_names.get(shown)
