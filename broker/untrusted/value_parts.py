"""Which parts of an argument value the taint check looks for in outside text.

An attacker chooses the shape of the value it wants used, so the check does not ask what a
value looks like; it asks whether the value, or a significant part of it, came from outside.
Parts, each compared compacted (case-folded letters and digits only, see ``outside_text``):

- the whole value;
- each whitespace-separated word holding a digit and 5 or more letters and digits (account
  numbers, references, wallets: ``XQ-99812-ZZ``), an ``@`` (addresses, handles), or a dot
  between letters (hosts, URLs);
- in a value of up to 12 words, each run of 3 words of 12 or more letters and digits (a
  recipient's name inside a longer sentence).

Exempt, because they are common and harmless, or chosen by the tool rather than by the text:

- anything of fewer than 5 letters and digits: such short strings occur in any text by
  chance;
- amounts (up to 7 digits before the decimal point, optional currency sign or code) and
  dates: a payment of 120.00 on 2026-12-04 is not an attacker's choice of recipient, and
  amounts are what approval conditions (``above``) are for;
- booleans and numbers of up to 7 digits.

Where the policy names a value explicitly (``equals``, ``one_of``, ``email_domains``,
``url_hosts``) or the tool's schema fixes it (``enum``, ``const``), the policy layer exempts it.
"""

from __future__ import annotations

import re

from broker.untrusted.outside_text import NOT_ALNUM as _NOT_ALNUM
from broker.untrusted.text_index import MIN_NEEDLE

MIN_WORD = 5  # a single word without digits: shorter ones are common words
MAX_WINDOW_WORDS = 12  # longer values are text, where 3 words in a row match by chance
WINDOW = 3
MIN_WINDOW_CHARS = 12
MAX_PARTS = 64  # per argument value: bounded work whatever its size

_AMOUNT = re.compile(
    r"[+-]?(?:[$€£¥]\s?)?(?:[0-9]{1,3}(?:[, ][0-9]{3}){1,2}|[0-9]{1,7})(?:[.,][0-9]{1,2})?"
    r"(?:\s?[A-Za-z]{3})?"
)
_DATE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,9})?)?"
    r"(?:Z|[+-][0-9]{2}:?[0-9]{2})?)?"
)
_HOSTLIKE = re.compile(r"[^\W_]\.[^\W\d_]{2}")
_EDGES = "\"'()[]{}<>.,;:!?"


def is_harmless(text: str) -> bool:
    """An amount, a date or a number of up to 7 digits (see the module docstring)."""
    stripped = text.strip()
    return bool(_AMOUNT.fullmatch(stripped) or _DATE.fullmatch(stripped))


def significant_parts(text: str) -> list[str]:
    """The compact parts of one argument string that must not come from outside text,
    longest first (see the module docstring)."""
    if is_harmless(text):
        return []
    parts: dict[str, None] = {}
    words = text.casefold().split()[: MAX_PARTS * 4]
    smalls = [word if word.isalnum() else _NOT_ALNUM.sub("", word) for word in words]
    whole = "".join(smalls)
    if _counts(text, whole, len(words)):
        parts[whole] = None
    if len(words) == 1:  # the whole value is its only word
        return list(parts)
    for word, small in zip(words, smalls, strict=True):
        if len(small) < MIN_NEEDLE:
            continue
        if small.isalpha():  # no digit: only an address or a host counts
            if "@" in word or ("." in word and _HOSTLIKE.search(word)):
                parts[small] = None
        elif (len(small) >= MIN_WORD or "@" in word or "." in word) and not is_harmless(
            word.strip(_EDGES)
        ):
            parts[small] = None
    present = [small for small in smalls if small]
    if len(present) <= MAX_WINDOW_WORDS:
        for start in range(len(present) - WINDOW + 1):
            window = "".join(present[start : start + WINDOW])
            if len(window) >= MIN_WINDOW_CHARS:
                parts[window] = None
    return sorted(parts, key=len, reverse=True)[:MAX_PARTS]


def _counts(text: str, whole: str, words: int) -> bool:
    if len(whole) < MIN_NEEDLE:
        return False
    if words > 1 or not whole.isalpha() or "@" in text:
        return True
    return len(whole) >= MIN_WORD
