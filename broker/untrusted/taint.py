"""Values that came from outside, so that a later call using them can be noticed.

``extract_taint`` lists the addresses, links, bank details, phone numbers and tokens found in
outside content; ``find_tainted`` finds them again in the arguments of a later call, also when
written differently. Matching is normalised per kind:

=========  ===============================================  ====================================
kind       extracted                                        matches in an argument
=========  ===============================================  ====================================
email      local@domain.tld                                 the same address, any letter case
url        http(s)://... (trailing punctuation dropped)     the URL inside the text, host case-free
host       the host of each URL, and bare domains with a    the domain or any subdomain of it
           common TLD (``evil.com``, ``www.`` dropped)      (``mail.evil.com``, ``x@evil.com``)
iban       country + check digits + BBAN of the country's   the same IBAN with or without spaces
           length, mod-97 checksum valid                    or dashes, any letter case
account    8-18 digits, spaces/dashes allowed; dates,       the digits inside a digit run (an
           amounts, phones and IBANs excluded               IBAN containing it matches too)
phone      +/00 international, or 8-12 digits with at       its last 9 digits inside a digit run
           least two separators; dates and IPs excluded     (national and international forms)
token      >= 24 characters of base64/hex-like text that    the exact string
           mixes letters and digits
=========  ===============================================  ====================================

All patterns are linear: bounded repetitions and possessive runs.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import islice
from typing import Any
from urllib.parse import urlsplit

from broker.untrusted.paths import leaves

MAX_TAINTED = 500  # distinct values per extraction
MAX_TEXT = 1_000_000  # characters of one string looked at
MAX_MATCHES = 2000  # per pattern and string

_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9._%+-]{1,64}+@(?:[A-Za-z0-9-]{1,63}+\.){1,8}[A-Za-z]{2,24}+(?![\w-])"
)
_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"'`\]\[{}|\\^]{1,2048}+", re.I)
_TLDS = (
    "com|net|org|io|co|ai|app|dev|xyz|info|biz|me|us|uk|de|fr|nl|eu|ru|cn|jp|in|br|au|ca|es|"
    "it|ch|se|no|pl|online|site|top|shop|store|tech|cloud|email|link|live|club|gov|edu"
)
_DOMAIN = re.compile(
    rf"(?<![\w@.-])(?:[a-z0-9-]{{1,63}}+\.){{1,6}}(?:{_TLDS})(?![\w-]|\.[a-z0-9])", re.I
)
_IBAN = re.compile(r"\b[A-Z]{2}[0-9]{2}(?:[ -]?[A-Z0-9]){11,30}\b", re.I)
_PHONE_INTL = re.compile(r"(?<![\w+])(?:\+|00)[0-9]{1,3}+(?:[ .-]?\(?[0-9]{1,4}+\)?){2,6}(?!\w)")
_PHONE_NATIONAL = re.compile(
    r"(?<![\w+$€£.,/])\(?[0-9]{2,4}+\)?[ .-][0-9]{2,4}+[ .-][0-9]{2,5}+(?:[ .-][0-9]{2,5}+)?"
    r"(?![\w/]|[.,][0-9])"
)
_ACCOUNT = re.compile(r"(?<![\w.,/+$€£-])(?:[0-9][ -]?){7,17}[0-9](?![\w/]|[.,][0-9])")
_TOKEN = re.compile(r"(?<![\w+/=.-])[A-Za-z0-9_+/=.-]{24,}+(?![\w+/=.-])")
_DATE = re.compile(
    r"(?:19|20)[0-9]{2}[ -]?(?:0[1-9]|1[0-2])[ -]?(?:0[1-9]|[12][0-9]|3[01])"
    r"|(?:0[1-9]|[12][0-9]|3[01])[ -]?(?:0[1-9]|1[0-2])[ -]?(?:19|20)[0-9]{2}"
    r"|(?:0[1-9]|1[0-2])[ -]?(?:0[1-9]|[12][0-9]|3[01])[ -]?(?:19|20)[0-9]{2}"
)
_IPV4 = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")
_NON_DIGITS = re.compile(r"[^0-9]")
_DIGIT = re.compile(r"[0-9]")
_DIGIT_RUN = re.compile(r"[0-9](?:[ \-.()/]{0,2}+[0-9])*+")
_NON_ALNUM = re.compile(r"[^A-Za-z0-9]")

# IBAN length per country (ISO 13616 registry).
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30,
    "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22,
    "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip

KINDS = ("email", "url", "host", "iban", "account", "phone", "token")


@dataclass(frozen=True)
class TaintedValue:
    """A value found in outside content: its ``kind`` (one of KINDS), the ``value``
    normalised for matching (see the module docstring), and the JSON ``path`` it came from."""

    kind: str
    value: str
    path: str


def extract_taint(value: Any, *, path: str = "$") -> list[TaintedValue]:
    """Every email address, URL, host, IBAN, account number, phone number and long token in
    the strings of ``value``; each distinct (kind, value) once, with the first path seen."""
    found: dict[tuple[str, str], TaintedValue] = {}
    for where, text in leaves(value, path):
        for kind, normalised in _extract(text[:MAX_TEXT]):
            if len(found) >= MAX_TAINTED:
                return list(found.values())
            found.setdefault((kind, normalised), TaintedValue(kind, normalised, where))
    return list(found.values())


def find_tainted(arguments: Any, tainted: Iterable[TaintedValue]) -> list[tuple[str, TaintedValue]]:
    """(argument path, taint) for each tainted value that appears in ``arguments`` (strings and
    numbers), in any of the formats its kind allows."""
    taints = list(tainted)
    matches: list[tuple[str, TaintedValue]] = []
    if not taints:
        return matches
    for where, text in leaves(arguments, "$", numbers=True):
        views = _Views(text[:MAX_TEXT])
        matches.extend((where, taint) for taint in taints if views.contains(taint))
    return matches


# ---- extraction ----------------------------------------------------------------------------


def _extract(text: str) -> list[tuple[str, str]]:
    values: list[tuple[str, str]] = []
    taken = _Spans()  # parts already explained by a more specific kind
    # Each pattern needs a character (or a length) that most short fields (names, states,
    # amounts) lack; looking for it first skips the pattern, the same answer for less work.
    dotted, has_digit = "." in text, _DIGIT.search(text) is not None

    def free(match: re.Match[str]) -> bool:
        return taken.free(match.start(), match.end())

    urls = _URL.finditer(text) if dotted or ":" in text else ()  # "www." or "://"
    for match in islice(urls, MAX_MATCHES):
        url = _trim_url(match.group())
        taken.add((match.start(), match.start() + len(url)))
        values.append(("url", _normal_url(url)))
        host = _host(url)
        if host:
            values.append(("host", host))
    for match in islice(_EMAIL.finditer(text) if "@" in text else (), MAX_MATCHES):
        if free(match):
            taken.add(match.span())
            values.append(("email", match.group().lower()))
    for match in islice(_DOMAIN.finditer(text) if dotted else (), MAX_MATCHES):
        if free(match):
            values.append(("host", match.group().lower().removeprefix("www.")))
    if has_digit:
        _extract_numbers(text, taken, values)
    for match in islice(_TOKEN.finditer(text) if len(text) >= 24 else (), MAX_MATCHES):
        token = match.group().rstrip(".")
        if taken.free(match.start(), match.end()) and _token_like(token):
            values.append(("token", token[:512]))
    return values


def _extract_numbers(text: str, taken: _Spans, values: list[tuple[str, str]]) -> None:
    """IBANs, phone numbers and account numbers: only in text with a digit."""

    def free(match: re.Match[str]) -> bool:
        return taken.free(match.start(), match.end())

    for start, end, iban in _ibans(text):
        if taken.free(start, end):
            taken.add((start, end))
            values.append(("iban", iban))
    for pattern in (_PHONE_INTL, _PHONE_NATIONAL):
        for match in islice(pattern.finditer(text), MAX_MATCHES):
            phone = _phone(match.group(), international=pattern is _PHONE_INTL)
            if phone and free(match):
                taken.add(match.span())
                values.append(("phone", phone))
                if not phone.startswith("+"):  # 12-3456-7890: a phone or an account number
                    values.append(("account", phone))
    for match in islice(_ACCOUNT.finditer(text), MAX_MATCHES):
        if free(match) and not _DATE.fullmatch(match.group()):
            values.append(("account", _NON_DIGITS.sub("", match.group())))


class _Spans:
    """Disjoint [start, end) spans, kept sorted, with a logarithmic overlap test."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def free(self, start: int, end: int) -> bool:
        index = bisect_right(self.starts, start)
        if index and self.ends[index - 1] > start:
            return False
        return index == len(self.starts) or self.starts[index] >= end

    def add(self, span: tuple[int, int]) -> None:
        if self.free(*span):
            index = bisect_right(self.starts, span[0])
            self.starts.insert(index, span[0])
            self.ends.insert(index, span[1])


def _trim_url(url: str) -> str:
    url = url.rstrip(".,;:!?'\"")
    while url.endswith(")") and url.count(")") > url.count("("):
        url = url[:-1]
    return url


def _normal_url(url: str) -> str:
    if url[:4].lower() == "www.":
        url = "http://" + url
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.lower()
    rest = url[len(parts.scheme) + 3 + len(parts.netloc) :]
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{rest}".rstrip("/")


def _host(url: str) -> str:
    try:
        host = urlsplit(url if "://" in url else "http://" + url).hostname or ""
    except ValueError:
        return ""
    return host.lower().removeprefix("www.")


def _ibans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, IBAN) for each valid IBAN. A candidate runs on greedily ("GB82 ... 32 AND
    DE89 ..."), so it is cut at its country's length; after a failed one the search resumes
    just past its start, so an IBAN right after a wrong one is still found."""
    found: list[tuple[int, int, str]] = []
    position = 0
    attempts = 0
    while attempts < MAX_MATCHES and (match := _IBAN.search(text, position)):
        attempts += 1
        candidate = match.group()
        length = _IBAN_LENGTHS.get(candidate[:2].upper(), 0)
        kept = _first_alnum(candidate, length)
        compact = _NON_ALNUM.sub("", kept).upper()
        if length and len(compact) == length and _mod97(compact):
            found.append((match.start(), match.start() + len(kept), compact))
            position = match.start() + len(kept)
        else:
            position = match.start() + 1
    return found


def _first_alnum(text: str, count: int) -> str:
    """The shortest prefix of ``text`` holding ``count`` letters and digits."""
    seen = 0
    for index, char in enumerate(text):
        seen += char.isalnum()
        if seen == count:
            return text[: index + 1]
    return text


def _mod97(iban: str) -> bool:
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _phone(candidate: str, *, international: bool) -> str:
    digits = _NON_DIGITS.sub("", candidate)
    if _DATE.fullmatch(candidate.strip("()")) or _IPV4.fullmatch(candidate):
        return ""
    if international:
        digits = digits[2:] if candidate.startswith("00") else digits
        return "+" + digits if 8 <= len(digits) <= 15 else ""
    separators = sum(c in " .-" for c in candidate)
    return digits if 8 <= len(digits) <= 12 and separators >= 2 else ""


def _token_like(text: str) -> bool:
    has_digit = any(c.isdigit() for c in text)
    has_lower = any(c.islower() for c in text)
    has_upper = any(c.isupper() for c in text)
    punctuation = sum(not c.isalnum() for c in text)
    if not has_digit or punctuation > len(text) // 5:
        return False
    hexlike = all(c in "0123456789abcdefABCDEF" for c in text)
    return (has_lower and has_upper) or (hexlike and len(text) >= 32)


# ---- matching ------------------------------------------------------------------------------


class _Views:
    """One argument string in the forms the kinds are compared in, computed on demand."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._lower: str | None = None
        self._compact: str | None = None
        self._runs: list[str] | None = None

    @property
    def lower(self) -> str:
        if self._lower is None:
            self._lower = self.text.lower()
        return self._lower

    @property
    def compact(self) -> str:
        if self._compact is None:
            self._compact = _NON_ALNUM.sub("", self.text).upper()
        return self._compact

    @property
    def digit_runs(self) -> list[str]:
        if self._runs is None:
            runs = islice(_DIGIT_RUN.finditer(self.text), 10_000)
            self._runs = [_NON_DIGITS.sub("", m.group()) for m in runs]
        return self._runs

    def contains(self, taint: TaintedValue) -> bool:
        kind, value = taint.kind, taint.value
        if kind == "email":
            return _bounded(self.lower, value, "a-z0-9._%+-", "a-z0-9-")
        if kind == "url":
            return value.lower() in self.lower
        if kind == "host":
            return _bounded(self.lower, value, "a-z0-9-", "a-z0-9-")
        if kind == "iban":
            return value in self.compact
        if kind in ("account", "phone"):
            key = value.lstrip("+")[-9:] if kind == "phone" else value
            return any(key in run for run in self.digit_runs)
        return value in self.text


def _bounded(text: str, value: str, before: str, after: str) -> bool:
    """Whether ``value`` occurs in ``text`` with no character of the ``before``/``after``
    classes touching it (a domain may be followed by a dot only at the end of a sentence)."""
    pattern = rf"(?<![{before}]){re.escape(value)}(?![{after}]|\.[a-z0-9])"
    return re.search(pattern, text) is not None
