"""Argument constraints (``where`` in a grant): what values an agent may pass.

Every rule in one ``Constraint`` must hold. Numbers are compared as exact decimals: a limit of
``"5000.00"`` refuses ``5000.001`` and allows ``"5000.000"``; a float never enters. An argument
the call does not carry is not checked here (the tool's JSON Schema says what is required).
Anything a rule cannot read (an email with a display name, a URL with a backslash, a number
written as ``1e3`` in a string) is refused, never guessed at.
"""

from __future__ import annotations

import fnmatch
import operator
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

Scalar = str | bool | int | Decimal

_DECIMAL_TEXT = re.compile(r"^-?[0-9]{1,60}(\.[0-9]{1,60})?$")
_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@([A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})+)$"
)
_DOMAIN = re.compile(r"^(\*\.)?[a-z0-9-]{1,63}(\.[a-z0-9-]{1,63})*$")
_NESTED_QUANTIFIER = re.compile(r"\([^()]*[+*][^()]*\)[+*{]")


def _exact_number(value: Any) -> Decimal:
    if isinstance(value, bool | float):
        raise ValueError('write limits as exact numbers or decimal strings, such as "5000.00"')
    if isinstance(value, int | Decimal):
        return Decimal(value)
    if isinstance(value, str) and _DECIMAL_TEXT.match(value):
        return Decimal(value)
    raise ValueError(f"'{value}' is not a number; write for example 5000 or \"5000.00\"")


ExactNumber = Annotated[Decimal, BeforeValidator(_exact_number)]


def _domains(values: list[str]) -> list[str]:
    cleaned = []
    for value in values:
        domain = value.strip().lower()
        if not _DOMAIN.match(domain):
            raise ValueError(f"'{value}' is not a domain; write example.com or *.example.com")
        cleaned.append(domain)
    return cleaned


Domains = Annotated[list[str], Field(min_length=1), AfterValidator(_domains)]


class Constraint(BaseModel):
    """Rules for one argument; all that are written must hold."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    equals: Scalar | None = Field(None, description="The value must be exactly this.")
    one_of: list[Scalar] | None = Field(None, min_length=1, description="One of these values.")
    pattern: str | None = Field(
        None, description="Glob the string must match (fnmatch, case sensitive), e.g. INV-*."
    )
    regex: str | None = Field(
        None, description="Python regular expression the whole string must match."
    )
    min: ExactNumber | None = Field(None, description="Number or decimal string, at least this.")
    max: ExactNumber | None = Field(None, description="Number or decimal string, at most this.")
    above: ExactNumber | None = Field(None, description="Strictly more than this.")
    below: ExactNumber | None = Field(None, description="Strictly less than this.")
    max_length: int | None = Field(
        None, ge=0, description="Characters of a string, items of a list."
    )
    email_domains: Domains | None = Field(
        None,
        description="A plain email address at one of these domains (*.example.com for subdomains).",
    )
    url_hosts: Domains | None = Field(
        None,
        description="An http(s) URL whose host is one of these (*.example.com for subdomains).",
    )
    every: Constraint | None = Field(
        None, description="The value is a list; every item must meet this."
    )

    @model_validator(mode="after")
    def _prepare(self) -> Constraint:
        if not self.model_fields_set:
            raise ValueError("an empty constraint allows everything; write at least one rule")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"regex does not compile: {exc}") from None
        return self

    @property
    def risky_regex(self) -> bool:
        """True when the regex nests a quantifier inside a repeated group (slow on bad input)."""
        return bool(self.regex and _NESTED_QUANTIFIER.search(self.regex))

    def compile(self) -> Rules:
        """The checking form of this constraint (plain attributes, only the checks it uses)."""
        return Rules(self)

    def violation(self, value: Any) -> str | None:
        """None when ``value`` meets every rule, else the first rule it breaks, in words."""
        return self.compile().violation(value)


class Rules:
    """A compiled Constraint. Policies are compiled once per load; checking a call then reads
    plain slots and runs only the checks this constraint uses (pydantic's attribute access
    measured ~1.5 us a private attribute, several times a decision)."""

    __slots__ = (
        "_checks",
        "_compiled",
        "_glob",
        "above",
        "below",
        "email_domains",
        "equals",
        "every",
        "max",
        "max_length",
        "min",
        "one_of",
        "pattern",
        "regex",
        "url_hosts",
    )

    def __init__(self, spec: Constraint) -> None:
        self.equals = spec.equals
        self.one_of = spec.one_of
        self.min, self.max, self.above, self.below = spec.min, spec.max, spec.above, spec.below
        self.max_length = spec.max_length
        self.pattern, self.regex = spec.pattern, spec.regex
        self.email_domains, self.url_hosts = spec.email_domains, spec.url_hosts
        self.every = spec.every.compile() if spec.every is not None else None
        self._glob = re.compile(fnmatch.translate(spec.pattern)) if spec.pattern else None
        self._compiled = re.compile(spec.regex) if spec.regex is not None else None
        groups: tuple[tuple[tuple[str, ...], Callable[[Any], str | None]], ...] = (
            (("equals", "one_of"), self._check_equals),
            (("min", "max", "above", "below"), self._check_numbers),
            (("max_length", "pattern", "regex"), self._check_text),
            (("email_domains", "url_hosts"), self._check_addresses),
            (("every",), self._check_items),
        )
        self._checks = tuple(
            check for names, check in groups if any(getattr(self, n) is not None for n in names)
        )

    def violation(self, value: Any) -> str | None:
        """None when ``value`` meets every rule, else the first rule it breaks, in words."""
        for check in self._checks:
            problem = check(value)
            if problem:
                return problem
        return None

    # each check returns None or "<rule>: <why>"

    def _check_equals(self, value: Any) -> str | None:
        if self.equals is not None and not same_value(value, self.equals):
            return f"equals: must be {show(self.equals)}"
        if self.one_of is not None and not any(same_value(value, o) for o in self.one_of):
            return f"one_of: must be one of {', '.join(show(o) for o in self.one_of)}"
        return None

    def _check_numbers(self, value: Any) -> str | None:
        bounds = (
            ("min", self.min, operator.ge),
            ("max", self.max, operator.le),
            ("above", self.above, operator.gt),
            ("below", self.below, operator.lt),
        )
        if all(bound is None for _, bound, _ in bounds):
            return None
        number = as_number(value)
        if number is None:
            return "min/max: not a number or a plain decimal string"
        for rule, bound, holds in bounds:
            if bound is not None and not holds(number, bound):
                return f"{rule}: must be {_WORDS[rule]} {bound}"
        return None

    def _check_text(self, value: Any) -> str | None:
        if self.max_length is not None:
            if not isinstance(value, str | list):
                return "max_length: not a string or list"
            if len(value) > self.max_length:
                return f"max_length: longer than {self.max_length}"
        if self._glob is None and self._compiled is None:
            return None
        if not isinstance(value, str):
            return "pattern/regex: not a string"
        if self._glob is not None and not self._glob.match(value):
            return f"pattern: does not match {self.pattern}"
        if self._compiled is not None and not self._compiled.fullmatch(value):
            return f"regex: does not match {self.regex}"
        return None

    def _check_addresses(self, value: Any) -> str | None:
        if self.email_domains is not None:
            domain = email_domain(value)
            if domain is None:
                return "email_domains: not a single plain email address"
            if not host_allowed(domain, self.email_domains):
                return f"email_domains: {domain} is not one of {', '.join(self.email_domains)}"
        if self.url_hosts is not None:
            host = url_host(value)
            if host is None:
                return "url_hosts: not a plain http(s) URL"
            if not host_allowed(host, self.url_hosts):
                return f"url_hosts: {host} is not one of {', '.join(self.url_hosts)}"
        return None

    def _check_items(self, value: Any) -> str | None:
        if self.every is None:
            return None
        if not isinstance(value, list):
            return "every: not a list"
        for index, item in enumerate(value):
            problem = self.every.violation(item)
            if problem:
                return f"every: item [{index}] breaks {problem}"
        return None

    def allows_explicitly(self, value: str) -> bool:
        """True when a rule names this value or its domain/host outright (equals, one_of,
        email_domains, url_hosts), which is what lets a value from outside be used."""
        if self.every is not None:
            return self.every.allows_explicitly(value)
        if self.equals is not None and same_value(value, self.equals):
            return True
        if self.one_of is not None and any(same_value(value, o) for o in self.one_of):
            return True
        if self.email_domains is not None:
            domain = email_domain(value)
            return domain is not None and host_allowed(domain, self.email_domains)
        if self.url_hosts is not None:
            host = url_host(value)
            return host is not None and host_allowed(host, self.url_hosts)
        return False


_WORDS = {"min": "at least", "max": "at most", "above": "more than", "below": "less than"}


def same_value(value: Any, expected: Scalar) -> bool:
    """Equal without crossing types: True is not 1, "5" is not 5; 5 equals 5.00."""
    if isinstance(expected, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(expected, bool) and value == expected
    if isinstance(expected, int | Decimal):
        return isinstance(value, int | Decimal) and Decimal(value) == Decimal(expected)
    return isinstance(value, str) and value == expected


def as_number(value: Any) -> Decimal | None:
    """An exact Decimal from a JSON number or a plain decimal string, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | Decimal):
        try:
            number = Decimal(value)
        except InvalidOperation:
            return None
        return number if number.is_finite() else None
    if isinstance(value, str) and _DECIMAL_TEXT.match(value):
        return Decimal(value)
    return None


def email_domain(value: Any) -> str | None:
    """The lower-cased domain of a single plain address (``a@b.example``), else None."""
    if not isinstance(value, str):
        return None
    match = _EMAIL.match(value)
    return match.group(1).lower() if match else None


def url_host(value: Any) -> str | None:
    """The lower-cased host of a plain http(s) URL, else None (backslashes, spaces, control
    characters and user-info are refused: browsers and servers read those differently)."""
    if not isinstance(value, str) or len(value) > 8192:
        return None
    if any(c in value for c in "\\ \t\r\n") or any(ord(c) < 32 or ord(c) == 127 for c in value):
        return None
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not host or "@" in parts.netloc:
        return None
    return host.rstrip(".").lower()


def host_allowed(host: str, allowed: list[str]) -> bool:
    """``example.com`` allows exactly that host; ``*.example.com`` allows its subdomains."""
    for entry in allowed:
        if entry.startswith("*."):
            if host.endswith(entry[1:]) and len(host) > len(entry) - 1:
                return True
        elif host == entry:
            return True
    return False


def show(value: Scalar) -> str:
    """A value as a reader would write it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"'{value}'" if isinstance(value, str) else str(value)


def lookup(arguments: dict[str, Any], path: str) -> tuple[bool, Any]:
    """``(True, value)`` at a dotted path (``recipient.email``), or ``(False, None)``."""
    current: Any = arguments
    for part in path.split("."):
        if not isinstance(current, dict) or part not in current:
            return False, None
        current = current[part]
    return True, current
