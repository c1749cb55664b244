"""Count the words, lines and characters of a text: an example `kind: command` tool.

Reads one JSON object from stdin, ``{"text": "..."}``, and prints one JSON object on stdout,
``{"words": 4, "lines": 2, "characters": 19}``. Bad input is a message on stderr and exit
status 2 (the broker reports it as TOOL_ERROR). Standard library only, so it runs under the
system ``/usr/bin/python3 -I`` inside the sandbox, with no network and no files of its own.
"""

from __future__ import annotations

import json
import sys


def count(text: str) -> dict[str, int]:
    """Words split on any whitespace; lines as `wc -l` would see them plus a last open line."""
    return {
        "words": len(text.split()),
        "lines": len(text.splitlines()),
        "characters": len(text),
    }


def main() -> int:
    try:
        request = json.load(sys.stdin)
    except ValueError as exc:
        print(f"stdin is not JSON: {exc}", file=sys.stderr)
        return 2
    if not isinstance(request, dict) or not isinstance(request.get("text"), str):
        print('expected {"text": "<string>"} on stdin', file=sys.stderr)
        return 2
    json.dump(count(request["text"]), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
