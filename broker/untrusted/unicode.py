"""Invisible and look-alike characters: strip what a reader cannot see, map what dodges filters.

Removed (and counted):

- zero-width characters U+200B-U+200F, U+2060-U+2064, U+FEFF, U+180E;
- bidi controls U+202A-U+202E, U+2066-U+2069, U+061C (they reorder what the reader sees);
- tag characters U+E0000-U+E007F: invisible ASCII look-alikes, a known way to smuggle a whole
  instruction past a human. Their text is decoded for the finding so reviewers see it;
- variation selectors beyond the one a visible character may carry: runs of them (and every
  supplementary selector U+E0100-U+E01EF) encode bytes after an innocent emoji; decoded too;
- every other format (Cf) character (soft hyphen, interlinear annotation, ...) and the Hangul
  fillers U+3164/U+FFA0 that render as nothing.

Kept, because real text needs them: ZWJ between two emoji or two letters of a script that
joins (Arabic, Indic, ...), ZWNJ between two such letters (Persian, Hindi), one VS15/VS16 after
a visible character (emoji presentation, keycaps), the emoji flag tag sequences
(U+1F3F4 + lowercase tags + U+E007F), and Arabic prepended number marks (they are visible).

NFKC, only where safe: a character is replaced by its NFKC form only when that form is plain
ASCII letters/digits (fullwidth ``ｉｇｎｏｒｅ``, mathematical ``𝐢𝐠𝐧𝐨𝐫𝐞``, ligatures ``ﬁ``,
circled ``ⓘ``), and any space character becomes a space. Everything else keeps its form:
superscripts and fractions (``m²`` keeps its meaning), ``™``, halfwidth katakana, Arabic
presentation forms and CJK punctuation; so non-Latin scripts are never rewritten.

Words mixing Latin with Cyrillic/Greek letters are reported (``pаypal`` with a Cyrillic
``а``), not changed: we cannot know which spelling was meant. ``detection_view`` gives the
detector a copy with those look-alikes mapped to Latin.

Removal and mapping use ``str.translate`` (C speed, linear); Python looks at single characters
only for the context-dependent ones (ZWJ/ZWNJ, variation selectors, tag runs).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

_TAGS = "\U000e0000-\U000e007f"
_VS = "\ufe00-\ufe0f\U000e0100-\U000e01ef"


def _span(first: int, last: int) -> str:
    return "".join(map(chr, range(first, last + 1)))


# Characters removed wherever they are, by what the finding calls them; deleted with
# str.translate (C speed) and counted by the length difference. "format character" is the
# rest of Unicode 15's Cf category, minus the visible Arabic/Kaithi number marks.
_ALWAYS_REMOVED = {
    "zero-width": "\u200b\u200e\u200f\ufeff\u180e" + _span(0x2060, 0x2064),
    "bidi control": "\u061c" + _span(0x202A, 0x202E) + _span(0x2066, 0x2069),
    "format character": "\u00ad\ufff9\ufffa\ufffb"
    + _span(0x206A, 0x206F)
    + _span(0x13430, 0x1343F)
    + _span(0x1BCA0, 0x1BCA3)
    + _span(0x1D173, 0x1D17A),
    "invisible filler": "\u3164\uffa0\u115f\u1160\u17b4\u17b5\u034f",
}
_DELETE = {name: str.maketrans("", "", chars) for name, chars in _ALWAYS_REMOVED.items()}
_ANY_REMOVED = re.compile("[" + "".join(_ALWAYS_REMOVED.values()) + "\u2028\u2029]")
_SEPARATORS_TO_NEWLINE = str.maketrans({"\u2028": "\n", "\u2029": "\n"})
# Removed or kept depending on their neighbours (see the module docstring).
_CONTEXTUAL = re.compile(f"[{_TAGS}]++|[{_VS}]++|[\u200c\u200d]")
# Where NFKC can turn something into ASCII letters, digits or a space: spaces, letterlike
# symbols, enclosed and fullwidth forms, ligatures, mathematical alphanumerics.
_COMPAT_RANGES = (
    "\u00a0\u017f\u1680\u1d2c-\u1d6a\u2000-\u200a\u202f\u205f\u2100-\u214f"
    "\u2460-\u24ff\u3000\ufb00-\ufb06\uff01-\uff5e\U0001d400-\U0001d7ff"
    "\U0001f130-\U0001f189"
)
_COMPAT = re.compile(f"[{_COMPAT_RANGES}]")
_MIXED_WORD = re.compile(
    r"[A-Za-z][\u0370-\u03ff\u0400-\u04ff]|[\u0370-\u03ff\u0400-\u04ff][A-Za-z]"
)
_WORD_CHAR = re.compile(r"[\w\u0300-\u036f]")

_KEPT_VS = frozenset("\ufe0e\ufe0f")
_ZWJ, _ZWNJ = "\u200d", "\u200c"
_BLACK_FLAG = "\U0001f3f4"
_CANCEL_TAG = "\U000e007f"

# Cyrillic and Greek letters that look like Latin ones; used only for the detector's view.
_CONFUSABLES = str.maketrans(
    "аеорсухіјѕԁһԛԝАВЕКМНОРСТХІЈЅαοικνρτυχΑΒΕΖΗΙΚΜΝΟΡΤΥΧ",
    "aeopcyxijsdhqwABEKMHOPCTXIJSaoikvptuxABEZHIKMNOPTYX",
)

MAX_DECODED = 200  # characters of smuggled text kept for the finding and the detector


@dataclass
class UnicodeCleaned:
    """The cleaned text and what was done to it: ``removed`` counts by what was removed,
    ``smuggled`` the text decoded from tag characters and variation-selector runs,
    ``normalised`` the letters/digits mapped to ASCII with one example, ``mixed`` the
    mixed-script words found."""

    text: str
    removed: Counter[str] = field(default_factory=Counter)
    smuggled: list[str] = field(default_factory=list)
    normalised: int = 0
    normalised_example: str = ""
    mixed: list[str] = field(default_factory=list)


def clean_unicode(text: str) -> UnicodeCleaned:
    """Strip invisible characters and apply the safe part of NFKC; see the module docstring."""
    result = UnicodeCleaned(text)
    if text.isascii():
        return result
    if _ANY_REMOVED.search(text):
        text = text.translate(_SEPARATORS_TO_NEWLINE)
        for name, table in _DELETE.items():
            shorter = text.translate(table)
            if len(shorter) != len(text):
                result.removed[name] += len(text) - len(shorter)
                text = shorter
    if _CONTEXTUAL.search(text):
        text = _CONTEXTUAL.sub(lambda m: _replace(m, result), text)
    if not unicodedata.is_normalized("NFKC", text) and (first := _COMPAT_LETTER.search(text)):
        result.normalised = len(text) - len(text.translate(_COMPAT_LETTER_DELETE))
        result.normalised_example = f"{first.group()}->{_COMPAT_TABLE[ord(first.group())]}"
    if _COMPAT.search(text):
        text = text.translate(_COMPAT_TABLE)
    result.text = text
    if not text.isascii():
        result.mixed = _mixed_words(text)
    return result


def detection_view(text: str) -> str:
    """``text`` with Cyrillic/Greek look-alikes mapped to Latin, for the detector only."""
    return text.translate(_CONFUSABLES)


def _replace(match: re.Match[str], result: UnicodeCleaned) -> str:
    run = match.group()
    text, start, end = match.string, match.start(), match.end()
    before = text[start - 1] if start else ""
    after = text[end] if end < len(text) else ""
    first = run[0]
    if "\U000e0000" <= first <= "\U000e007f":
        if before == _BLACK_FLAG and run.endswith(_CANCEL_TAG) and _is_flag_tags(run):
            return run
        result.removed["tag character"] += len(run)
        _keep_smuggled(result, "".join(_tag_to_ascii(c) for c in run))
        return ""
    if _is_vs(first):
        if len(run) == 1 and _vs_may_stay(first, before):
            return run
        result.removed["variation selector"] += len(run)
        if len(run) > 1 or ord(first) > 0xFFFF:
            _keep_smuggled(result, _vs_payload(run))
        return ""
    if _joiner_may_stay(first, before, after):
        return run
    result.removed["zero-width"] += 1
    return ""


def _keep_smuggled(result: UnicodeCleaned, decoded: str) -> None:
    decoded = decoded.strip()
    if decoded and len(result.smuggled) < 20:
        result.smuggled.append(decoded[:MAX_DECODED])


def _tag_to_ascii(char: str) -> str:
    code = ord(char) - 0xE0000
    return chr(code) if 0x20 <= code < 0x7F else ""


def _is_flag_tags(run: str) -> bool:
    body = run[:-1]
    return 0 < len(body) <= 6 and all(c.isalnum() for c in map(_tag_to_ascii, body))


def _is_vs(char: str) -> bool:
    return "\ufe00" <= char <= "\ufe0f" or "\U000e0100" <= char <= "\U000e01ef"


def _vs_may_stay(char: str, before: str) -> bool:
    if not before or before.isspace() or _is_vs(before) or ord(char) > 0xFFFF:
        return False
    # VS15/VS16 pick text or emoji style (also for keycaps 1️⃣); the others only mean
    # something after a non-ASCII character (CJK and maths variants).
    return char in _KEPT_VS or not before.isascii()


def _vs_payload(run: str) -> str:
    # The published trick: byte b is U+FE00+b for b < 16, else U+E0100+(b-16).
    data = bytes(ord(c) - 0xFE00 if ord(c) <= 0xFE0F else ord(c) - 0xE0100 + 16 for c in run[:800])
    decoded = data.decode("utf-8", errors="replace")
    printable = sum(c.isprintable() and c != "\ufffd" for c in decoded)
    return decoded if decoded and printable >= 0.8 * len(decoded) else ""


def _joiner_may_stay(joiner: str, before: str, after: str) -> bool:
    if not before or not after:
        return False
    if joiner == _ZWJ and _is_pictograph(before) and _is_pictograph(after):
        return True
    return _joining_letter(before) and _joining_letter(after)


def _is_pictograph(char: str) -> bool:
    code = ord(char)
    return code >= 0x1F000 or (0x2190 <= code <= 0x2BFF) or char in _KEPT_VS


def _joining_letter(char: str) -> bool:
    # Scripts from Hebrew onwards use ZWJ/ZWNJ inside words; Latin, Greek, Cyrillic never do.
    return ord(char) >= 0x0590 and unicodedata.category(char)[0] in "LM"


def _safe_nfkc(char: str) -> tuple[str, bool]:
    """The replacement for one character and whether it was a letter/digit (a change worth a
    finding); the character itself when its NFKC form would not be plain ASCII."""
    category = unicodedata.category(char)
    if category == "Zs":
        return " ", False
    mapped = unicodedata.normalize("NFKC", char)
    if mapped == char or not mapped.isascii() or not mapped.isalnum():
        return char, False
    if category in ("Lu", "Ll", "Lt", "Lm", "Lo", "Nd"):
        return mapped, True
    if category == "So" and len(mapped) == 1:  # circled and squared letters
        return mapped, True
    return char, False


def _compat_tables() -> tuple[dict[int, str], dict[int, None]]:
    """The NFKC replacements we apply, and a table deleting those that are letters/digits."""
    table: dict[int, str] = {}
    letters: dict[int, None] = {}
    for char in map(chr, _compat_codes()):
        mapped, letter = _safe_nfkc(char)
        if mapped != char:
            table[ord(char)] = mapped
            if letter:
                letters[ord(char)] = None
    return table, letters


def _compat_codes() -> list[int]:
    codes: list[int] = []
    for part in re.findall(r"(.)-(.)|(.)", _COMPAT_RANGES):
        low, high, single = part
        codes += range(ord(low), ord(high) + 1) if low else [ord(single)]
    return codes


_COMPAT_TABLE, _COMPAT_LETTER_DELETE = _compat_tables()
_COMPAT_LETTER = re.compile("[" + "".join(re.escape(chr(c)) for c in _COMPAT_LETTER_DELETE) + "]")


def _mixed_words(text: str) -> list[str]:
    words: list[str] = []
    last_end = -1
    for match in _MIXED_WORD.finditer(text):
        if len(words) >= 10:
            break
        if match.start() < last_end:
            continue
        start = match.start()
        while start > 0 and match.start() - start < 40 and _WORD_CHAR.match(text[start - 1]):
            start -= 1
        end = match.end()
        while end < len(text) and end - match.end() < 40 and _WORD_CHAR.match(text[end]):
            end += 1
        last_end = end
        words.append(text[start:end])
    return words
