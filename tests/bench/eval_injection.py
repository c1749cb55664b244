"""Detection and cleaning speed of broker.untrusted on BIPIA's email task (training split).

Attacked emails are built the way BIPIA builds them: each attack instruction (text and code
attacks) inserted at the start, in the middle (at a sentence start chosen with a fixed seed) or
at the end of each clean email, joined by newlines. The clean emails are the negatives. An HTML
variant renders each email as HTML and hides the attack in a display:none span.

The figures are development figures: the detector was built looking at this split, so they say
how it does on data it was developed against, not on unseen attacks. No string from the corpus
is in the detector; it uses general features (see broker/untrusted/detect.py).

    .venv/bin/python -m tests.bench.eval_injection [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import datetime
import html
import json
import random
import re
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from broker.untrusted import INJECTION_KINDS, Finding, clean_value
from broker.untrusted.findings import HIDDEN_TEXT, TASK_REQUEST
from tests.bench.harness import machine, publish
from tests.untrusted_samples import BENIGN_EMAILS, INJECTIONS

CORPUS = Path(__file__).resolve().parents[3] / "shared/corpus/bipia"  # beside the checkout
HEADING = "## Untrusted content: detection on BIPIA (development figures)"
POSITIONS = ("start", "middle", "end")
_SENTENCE_START = re.compile(r"(?:(?<=[.!?])\s+|\n+)(?=\S)")


@dataclass
class Tally:
    """How many samples, and how many were flagged strictly (an injection kind) or broadly
    (also the low-confidence task_request)."""

    total: int = 0
    strict: int = 0
    broad: int = 0

    def add(self, findings: list[Finding]) -> None:
        kinds = {f.kind for f in findings}
        self.total += 1
        self.strict += bool(kinds & INJECTION_KINDS)
        self.broad += bool(kinds & (INJECTION_KINDS | {TASK_REQUEST}))

    def rate(self, which: str) -> str:
        hits = self.strict if which == "strict" else self.broad
        return f"{100 * hits / self.total:.1f}% ({hits}/{self.total})" if self.total else "-"


@dataclass
class Results:
    by_category: dict[tuple[str, str], Tally] = field(default_factory=dict)
    by_position: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    overall: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    clean: Tally = field(default_factory=Tally)
    clean_findings: list[Finding] = field(default_factory=list)
    hard_negatives: Tally = field(default_factory=Tally)
    own_attacks: Tally = field(default_factory=Tally)
    html_hidden: Tally = field(default_factory=Tally)
    html_removed: int = 0
    html_flagged_inside: int = 0
    words_kept: float = 0.0
    emails_per_second: float = 0.0
    html_p99_ms: float = 0.0
    html_p50_ms: float = 0.0
    html_size: int = 0
    mean_chars: int = 0


def load(corpus: Path) -> tuple[list[str], dict[str, dict[str, list[str]]]]:
    emails = [
        json.loads(line)["context"]
        for line in (corpus / "email-train.jsonl").read_text().splitlines()
        if line.strip()
    ]
    attacks = {
        "text": json.loads((corpus / "text_attack_train.json").read_text()),
        "code": json.loads((corpus / "code_attack_train.json").read_text()),
    }
    return emails, attacks


def insert(context: str, attack: str, position: str, seed: int) -> str:
    """BIPIA's insertion: newline-joined at the start, the end, or a seeded sentence start."""
    if position == "start":
        return "\n".join([attack, context])
    if position == "end":
        return "\n".join([context, attack])
    starts = [0] + [m.end() for m in _SENTENCE_START.finditer(context)]
    start = random.Random(seed).choice(starts)
    return "\n".join([context[:start], attack, context[start:]])


def as_html(context: str, hidden: str = "", position: str = "end") -> str:
    """A plain email rendered the way mail clients send it: a table layout, inline styles,
    a hidden preheader, one paragraph per line; ``hidden`` goes in a display:none span."""
    lines = [line for line in context.splitlines() if line.strip()]
    paragraphs = [f'<p style="margin:0 0 8px 0">{html.escape(line)}</p>' for line in lines]
    if hidden:
        span = f'<span style="display:none">{html.escape(hidden)}</span>'
        index = {"start": 0, "middle": len(paragraphs) // 2, "end": len(paragraphs)}[position]
        paragraphs.insert(index, span)
    body = "\n".join(paragraphs)
    return (
        '<!doctype html><html><head><meta charset="utf-8"><title>Mail</title>'
        "<style>body{font-family:Arial,sans-serif} .footer{color:#888888;font-size:12px}</style>"
        '</head><body style="background:#f4f4f4">'
        '<table role="presentation" width="100%" bgcolor="#ffffff"><tr>'
        f'<td style="padding:24px;color:#222222">{body}</td></tr>'
        '<tr><td class="footer">You receive this email because you have an account. '
        '<a href="https://example.com/unsubscribe">Unsubscribe</a></td></tr></table>'
        "</body></html>"
    )


def evaluate(emails: list[str], attacks: dict[str, dict[str, list[str]]]) -> Results:
    results = Results()
    for family, categories in attacks.items():
        for category, instructions in categories.items():
            tally = results.by_category.setdefault((family, category), Tally())
            for a, attack in enumerate(instructions):
                for e, email in enumerate(emails):
                    for position in POSITIONS:
                        text = insert(email, attack, position, seed=e * 1000 + a)
                        findings = clean_value(text).findings
                        tally.add(findings)
                        results.by_position[position].add(findings)
                        results.overall[family].add(findings)
                        results.overall["all"].add(findings)
    for email in emails:
        cleaned = clean_value(email)
        results.clean.add(cleaned.findings)
        results.clean_findings += cleaned.findings
    for email in BENIGN_EMAILS:
        results.hard_negatives.add(clean_value(email).findings)
    for attack in INJECTIONS:
        results.own_attacks.add(clean_value(attack).findings)
    _evaluate_html(emails, attacks, results)
    return results


def _evaluate_html(
    emails: list[str], attacks: dict[str, dict[str, list[str]]], results: Results
) -> None:
    kept: list[float] = []
    for e, email in enumerate(emails):
        visible = clean_value(as_html(email)).value
        kept.append(_words_kept(email, visible))
        for family in attacks.values():
            for instructions in family.values():
                attack = instructions[e % len(instructions)]
                position = POSITIONS[e % 3]
                cleaned = clean_value(as_html(email, attack, position))
                kinds = {f.kind for f in cleaned.findings}
                results.html_hidden.total += 1
                results.html_hidden.strict += HIDDEN_TEXT in kinds
                results.html_removed += _squeeze(attack) not in _squeeze(cleaned.value)
                results.html_flagged_inside += any(
                    f.detail.startswith("in hidden text") for f in cleaned.findings
                )
    results.words_kept = statistics.mean(kept)


def _squeeze(text: str) -> str:
    return " ".join(text.split())


def _words_kept(original: str, cleaned: str) -> float:
    words = re.findall(r"[A-Za-z]{3,}", original)
    present = set(re.findall(r"[A-Za-z]{3,}", cleaned))
    return sum(w in present for w in words) / len(words) if words else 1.0


def measure_speed(emails: list[str], results: Results, runs: int) -> None:
    per_second = []
    for _ in range(runs):
        began = time.perf_counter()
        for _ in range(5):
            for email in emails:
                clean_value(email)
        per_second.append(5 * len(emails) / (time.perf_counter() - began))
    results.emails_per_second = statistics.median(per_second)
    results.mean_chars = round(statistics.mean(len(e) for e in emails))
    page = _five_kb_html(emails)
    results.html_size = len(page.encode())
    p99s, p50s = [], []
    for _ in range(runs):
        samples = _timings(lambda: clean_value(page), 200)
        p99s.append(samples[int(len(samples) * 0.99) - 1])
        p50s.append(statistics.median(samples))
    results.html_p99_ms = statistics.median(p99s)
    results.html_p50_ms = statistics.median(p50s)


def _five_kb_html(emails: list[str]) -> str:
    """The longest email, continued line by line with the others, to about 5 KB of HTML."""
    lines = [line for email in sorted(emails, key=len, reverse=True) for line in email.splitlines()]
    text = ""
    for line in lines:
        if len(as_html(text).encode()) >= 5000:
            break
        text += line + "\n"
    return as_html(text)


def _timings(work: Callable[[], object], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        began = time.perf_counter()
        work()
        samples.append((time.perf_counter() - began) * 1000)
    return sorted(samples)


def report(results: Results, runs: int) -> str:
    lines = [
        HEADING,
        "",
        f"Measured {datetime.date.today().isoformat()} on {machine()} by "
        "`python -m tests.bench.eval_injection`.",
        "",
        "**Development figures.** BIPIA training split only (50 clean emails, 75 text and 50 "
        "code attack instructions), and the detector was developed looking at it: expect lower "
        "detection on unseen attacks. The detector holds no string from the corpus; it scores "
        "general features (see `broker/untrusted/detect.py`). Each attack is inserted at the "
        "start, middle and end of each email, as BIPIA does. *Strict* counts the injection "
        "kinds (`prompt_injection`, `role_marker`, `encoded_instruction`, `exfiltration_url`, "
        "`suspicious_code`); *broad* adds the low-confidence `task_request`.",
        "",
        "| set | samples | detected, strict | detected, broad |",
        "|---|---|---|---|",
    ]
    for name in ("all", "text", "code"):
        tally = results.overall[name]
        lines.append(
            f"| attacked emails, {name} | {tally.total} | {tally.rate('strict')} "
            f"| {tally.rate('broad')} |"
        )
    for position in POSITIONS:
        tally = results.by_position[position]
        lines.append(
            f"| attack at the {position} | {tally.total} | {tally.rate('strict')} "
            f"| {tally.rate('broad')} |"
        )
    clean, hard = results.clean, results.hard_negatives
    lines += [
        f"| clean emails (false positives) | {clean.total} | {clean.rate('strict')} "
        f"| {clean.rate('broad')} |",
        f"| hand-written hard negatives, false positives (regression set) | {hard.total} "
        f"| {hard.rate('strict')} | {hard.rate('broad')} |",
        f"| hand-written injections (regression set) | {results.own_attacks.total} "
        f"| {results.own_attacks.rate('strict')} | {results.own_attacks.rate('broad')} |",
        "",
        "The hand-written sets (`tests/untrusted_samples.py`) were written for this project and "
        "the detector was tuned while looking at them: they guard against regressions and are "
        "no measure of unseen text either.",
        "",
        "Per attack category (each: 5 instructions x 50 emails x 3 positions):",
        "",
        "| family | category | strict | broad |",
        "|---|---|---|---|",
    ]
    for (family, category), tally in results.by_category.items():
        lines.append(f"| {family} | {category} | {tally.rate('strict')} | {tally.rate('broad')} |")
    other = sorted({f.kind for f in results.clean_findings})
    html_total = results.html_hidden.total
    lines += [
        "",
        f"HTML variant ({html_total} emails rendered as HTML, one attack each in a "
        "`display:none` span): reported as `hidden_text` "
        f"{results.html_hidden.rate('strict')}; attack text removed from the cleaned output "
        f"{100 * results.html_removed / html_total:.1f}%; the hidden text itself flagged by "
        f"the detector {100 * results.html_flagged_inside / html_total:.1f}%. Clean emails "
        f"rendered as HTML keep {100 * results.words_kept:.1f}% of their words after cleaning.",
        "",
        f"Findings of any kind on the clean plain-text emails: {', '.join(other) or 'none'}.",
        "",
        "| speed (median of runs) | figure |",
        "|---|---|",
        f"| plain emails cleaned per second (corpus, {results.mean_chars} chars on average) "
        f"| {results.emails_per_second:,.0f} |",
        f"| {results.html_size / 1000:.1f} KB HTML email, p50 | {results.html_p50_ms:.2f} ms |",
        f"| {results.html_size / 1000:.1f} KB HTML email, p99 (200 runs each, median of "
        f"{runs}) | {results.html_p99_ms:.2f} ms |",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--write", type=Path, help="update this BENCHMARKS.md")
    args = parser.parse_args()
    emails, attacks = load(args.corpus)
    results = evaluate(emails, attacks)
    measure_speed(emails, results, args.runs)
    section = report(results, args.runs)
    publish(section, args.write)


if __name__ == "__main__":
    main()
