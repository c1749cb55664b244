"""A detector from outside the broker, named in a config as ``tests.detector_doubles:Shouting``
the way a team would name a model-based one: it flags any text written in capitals."""

from __future__ import annotations

from broker.untrusted.findings import PROMPT_INJECTION, Finding


class Shouting:
    """Flags text in capitals, and nothing else."""

    def scan(self, text: str, path: str) -> list[Finding]:
        words = [w.strip(":,.!?") for w in text.split()]
        shouted = [w for w in words if len(w) > 3 and w.isalpha() and w.isupper()]
        return (
            [Finding(PROMPT_INJECTION, path, "shouting: " + " ".join(shouted))] if shouted else []
        )

    def scan_decoded(self, decoded: str, how: str, path: str) -> list[Finding]:
        return []


NOT_A_DETECTOR = 42
