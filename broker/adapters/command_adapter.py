"""The command adapter: one tool action becomes one sandboxed process (``broker.sandbox``).

Arguments reach the program only as argv items or as JSON on stdin, never through a shell:
each ``{name}`` in an argv item is replaced by that argument's value within that one item. A
path argument named in the action's ``paths`` is normalised and must stay inside its folder.
Exit status 0 is DONE; any other is the tool's own failure (TOOL_ERROR) with its output.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from broker import errors, jsonexact
from broker.adapters.command_answers import interpret
from broker.manifest import CommandAction, CommandTool, ToolAction
from broker.outcome import Outcome
from broker.sandbox import SandboxSpec, run_sandboxed
from broker.vault import Injected
from broker.workers import Workers

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class CommandAdapter:
    """Runs command tools in bubblewrap; fails closed (SANDBOX_UNAVAILABLE) without it."""

    def __init__(self, workers: Workers, bwrap: str = "bwrap") -> None:
        self._workers = workers  # what a big output means is worked out there
        self._bwrap = bwrap

    async def execute(
        self,
        action: ToolAction,
        arguments: dict[str, Any],
        time_left: float | None,
        credentials: Sequence[Injected] = (),
    ) -> Outcome:
        """Run the action's argv with ``arguments`` and say what its exit means."""
        tool, spec = action.tool, action.spec
        assert isinstance(tool, CommandTool)
        assert isinstance(spec, CommandAction)
        argv = build_argv(spec, arguments)
        stdin = jsonexact.dumps(arguments).encode() if spec.stdin == "json" else b""
        sandbox = sandbox_spec(tool, credentials)
        deadline = None if time_left is None else time.monotonic() + time_left
        result = await run_sandboxed(
            argv, sandbox, stdin=stdin, deadline=deadline, bwrap=self._bwrap
        )
        return await self._workers.run(len(result.stdout), interpret, result)


def sandbox_spec(tool: CommandTool, credentials: Sequence[Injected] = ()) -> SandboxSpec:
    """The sandbox of a tool, with the call's credentials in its environment."""
    config = tool.sandbox
    env = dict(config.env)
    for injected in credentials:
        assert injected.spec.env is not None
        env[injected.spec.env] = injected.secret.value
    return SandboxSpec(
        network=config.network,
        timeout=config.timeout,
        cpu_seconds=config.cpu_seconds,
        memory_mb=config.memory_mb,
        max_file_mb=config.max_file_mb,
        max_processes=config.max_processes,
        max_stdout=config.max_stdout_kb * 1024,
        max_stderr=config.max_stderr_kb * 1024,
        read_only=tuple(config.read_only),
        read_write=tuple(config.read_write),
        env=env,
    )


def build_argv(spec: CommandAction, arguments: dict[str, Any]) -> list[str]:
    """The argv: placeholders filled from the arguments, path arguments confined."""
    values = {name: _text(name, arguments[name]) for name in spec.placeholders}
    for name, root in spec.paths.items():
        values[name] = confine(name, values[name], root)
    return [_PLACEHOLDER.sub(lambda m: values[m.group(1)], item) for item in spec.command]


def confine(name: str, value: str, root: str) -> str:
    """``value`` as an absolute, normalised path inside ``root``; refused if it leaves it."""
    if not value or "\0" in value:
        raise errors.InvalidArguments(f"$.{name}: an empty path or a NUL byte (rule: path)")
    joined = os.path.normpath(os.path.join(root, value))
    if joined != root and not joined.startswith(root.rstrip("/") + "/"):
        raise errors.InvalidArguments(
            f"$.{name}: '{value[:100]}' leads outside {root} (rule: path)"
        )
    return joined


def _text(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | Decimal):
        return str(value)
    raise errors.InvalidArguments(f"$.{name}: a command argument must be a string or a number")
