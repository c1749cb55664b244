"""What cleaning removed or noticed, one ``Finding`` per observation, and the kinds it can have.

A finding is a signal for the audit log, the approver and the agent framework; it is never the
defence itself (the defence is what cleaning removes, the taint check and human approval).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# Removed from the content:
HIDDEN_TEXT = "hidden_text"  # HTML a reader would not see (display:none, white on white, ...)
INVISIBLE_UNICODE = "invisible_unicode"  # zero-width, bidi controls, tag characters, ...
UNICODE_NORMALISED = "unicode_normalised"  # compatibility letters/digits mapped to ASCII
TRUNCATED = "truncated"  # over a size or depth limit: the rest was dropped
# Noticed, left in place (heuristics):
PROMPT_INJECTION = "prompt_injection"  # text addressed to the model, not to the human reader
ROLE_MARKER = "role_marker"  # fake chat-template or role markers (<|im_start|>, [INST], ...)
ENCODED_INSTRUCTION = "encoded_instruction"  # base64/hex/rot13/tag text that decodes to one
EXFILTRATION_URL = "exfiltration_url"  # URLs built to carry data out (image links, templates)
SUSPICIOUS_CODE = "suspicious_code"  # code that sends local data out, fetches-and-runs, destroys
MIXED_SCRIPT = "mixed_script"  # words mixing Latin with look-alike Cyrillic/Greek letters
TASK_REQUEST = "task_request"  # low confidence: an off-topic task or knowledge question
FINDINGS_TRUNCATED = "findings_truncated"  # more findings than the limit: the rest not listed

# The kinds that say "this text tries to steer the model"; TASK_REQUEST is kept apart because
# an ordinary FAQ can look like one.
INJECTION_KINDS = frozenset(
    {PROMPT_INJECTION, ROLE_MARKER, ENCODED_INSTRUCTION, EXFILTRATION_URL, SUSPICIOUS_CODE}
)


@dataclass(frozen=True)
class Finding:
    """One observation about outside content: its ``kind`` (a constant above), the JSON
    ``path`` of the string it was found in (``$.messages[2].body``), and a short printable
    ``detail`` for people (why, and the first characters of the text concerned)."""

    kind: str
    path: str
    detail: str


_WHITESPACE = re.compile(r"\s+")


def excerpt(text: str, limit: int = 60) -> str:
    """``text`` shortened to ``limit`` characters and made safe to print: whitespace collapsed,
    control and invisible characters shown as ``\\uXXXX`` so a detail cannot itself smuggle."""
    short = _WHITESPACE.sub(" ", text[: limit * 4]).strip()
    if len(short) > limit:
        short = short[: limit - 1].rstrip() + "…"
    return "".join(_printable(c) for c in short)


def _printable(char: str) -> str:
    if char == " " or unicodedata.category(char)[0] not in "CZ":
        return char
    code = ord(char)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
