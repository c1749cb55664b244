"""HTML for the console: the page frame, forms that carry their CSRF token, times, and the
exact arguments of a call pretty-printed with its risky values marked.

Everything that came from an agent, a tool or a person goes through ``esc`` (quotes too), and
nothing of theirs is ever put in an ``href``, a ``src`` or a script: a ``<script>`` tag or a
``javascript:`` URL in an argument is text on the page.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from broker import jsonexact
from broker.untrusted.paths import child

NAV = (
    ("queue", "/console/", "Queue"),
    ("agents", "/console/agents", "Agents"),
    ("audit", "/console/audit", "Audit"),
    ("reconcile", "/console/reconcile", "Reconcile"),
)


def esc(value: object) -> str:
    """Text made safe for HTML content and quoted attributes."""
    return html.escape(str(value), quote=True)


def url(path: str, **query: object) -> str:
    """A console URL with ``query`` (values percent-encoded; empty ones left out)."""
    given = {key: str(value) for key, value in query.items() if value not in (None, "")}
    return path + ("?" + urlencode(given) if given else "")


def segment(value: str) -> str:
    """One path segment (a call id, an agent name) percent-encoded."""
    return quote(value, safe="")


def page(
    title: str,
    body: str,
    *,
    user: str | None = None,
    csrf: str = "",
    current: str = "",
    notice: str = "",
    refresh: str = "",
) -> str:
    """A whole page: skip link, header with navigation and sign-out, the notice, ``body``;
    ``refresh``: a console path the page moves on to by itself."""
    nav = ""
    if user is not None:
        here = ' aria-current="page"'
        links = "".join(
            f'<li><a href="{href}"{here if key == current else ""}>{label}</a></li>'
            for key, href, label in NAV
        )
        signout = form("/console/logout", csrf, "", "Sign out", style="link")
        nav = (
            f'<nav aria-label="Console"><ul>{links}</ul></nav>'
            f'<p class="who"><span>Signed in as <strong>{esc(user)}</strong></span> {signout}</p>'
        )
    note = f'<p class="notice" role="status">{esc(notice)}</p>' if notice else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        + (f'<meta http-equiv="refresh" content="0;url={esc(refresh)}">' if refresh else "")
        + '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)} · toolbroker</title>"
        '<link rel="stylesheet" href="/console/static/console.css">'
        '<script src="/console/static/console.js" defer></script></head><body>'
        '<a class="skip" href="#main">Skip to content</a>'
        f'<header><p class="brand">toolbroker console</p>{nav}</header>'
        f'<main id="main">{note}{body}</main></body></html>'
    )


def form(
    action: str,
    csrf: str,
    fields: str,
    button: str,
    *,
    style: str = "",
    label: str = "",
) -> str:
    """A POST form with its CSRF token, ``fields`` (markup) and one submit button."""
    kind = f' class="{style}"' if style else ""
    named = f' aria-label="{esc(label)}"' if label else ""
    return (
        f'<form method="post" action="{esc(action)}"{kind}{named}>'
        f'<input type="hidden" name="csrf" value="{esc(csrf)}">{fields}'
        f'<button type="submit">{esc(button)}</button></form>'
    )


def text_field(name: str, label: str, field_id: str, *, required: bool = False) -> str:
    """A labelled one-line text input."""
    need = " required" if required else ""
    mark = " (required)" if required else " (optional)"
    return (
        f'<label for="{esc(field_id)}">{esc(label)}{mark}</label>'
        f'<input type="text" id="{esc(field_id)}" name="{esc(name)}" maxlength="2000"{need}>'
    )


def moment(ms: int) -> str:
    """A time for people, in UTC, inside a <time> element."""
    when = datetime.fromtimestamp(ms / 1000, UTC)
    return f'<time datetime="{when.isoformat()}">{when.strftime("%Y-%m-%d %H:%M:%S")}Z</time>'


def span(seconds: float) -> str:
    """A duration for people: 45s, 12m, 3h 5m, 2d 4h."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600}h"


def ago(ms: int) -> str:
    """How long ago ``ms`` was."""
    return span(time.time() - ms / 1000)


def left(ms: int) -> str:
    """How long until ``ms``; 'passed' once it has."""
    seconds = ms / 1000 - time.time()
    return "passed" if seconds <= 0 else f"in {span(seconds)}"


def table(caption: str, headers: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    """A table of already escaped cells, with a caption and column headers."""
    head = "".join(f'<th scope="col">{esc(h)}</th>' for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return (
        f'<div class="scroll" tabindex="0" role="region" aria-label="{esc(caption)}">'
        f"<table><caption>{esc(caption)}</caption><thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table></div>"
    )


def facts(pairs: Mapping[str, str]) -> str:
    """A definition list of (name, already escaped value)."""
    items = "".join(f"<dt>{esc(name)}</dt><dd>{value}</dd>" for name, value in pairs.items())
    return f"<dl>{items}</dl>"


def arguments_block(arguments_json: str, risky: Mapping[str, str]) -> str:
    """The arguments exactly, pretty-printed (two spaces, as ``json.dumps(indent=2)``), never
    cut; a value whose path is in ``risky`` is marked, with why in its title."""
    try:
        value = jsonexact.loads(arguments_json)  # 4200.00 stays 4200.00
    except jsonexact.JsonError:
        return f'<pre class="arguments">{esc(arguments_json)}</pre>'
    return f'<pre class="arguments">{"".join(_pretty(value, risky))}</pre>'


def _pretty(value: Any, risky: Mapping[str, str]) -> Iterator[str]:
    # iterative, like broker.untrusted.paths.leaves: any nesting depth renders
    stack: list[tuple[str, Any, str, int]] = [("value", value, "$", 0)]
    while stack:
        kind, item, path, depth = stack.pop()
        if kind == "text":
            yield item
            continue
        pad = "  " * depth
        if isinstance(item, dict) and item:
            yield "{\n"
            entries = list(item.items())
            stack.append(("text", f"\n{pad}}}", path, depth))
            for index in range(len(entries) - 1, -1, -1):
                key, member = entries[index]
                if index < len(entries) - 1:
                    stack.append(("text", ",\n", path, depth))
                stack.append(("value", member, child(path, str(key)), depth + 1))
                name = esc(json.dumps(key, ensure_ascii=False))
                stack.append(("text", f"{pad}  {name}: ", path, depth))
        elif isinstance(item, list) and item:
            yield "[\n"
            stack.append(("text", f"\n{pad}]", path, depth))
            for index in range(len(item) - 1, -1, -1):
                if index < len(item) - 1:
                    stack.append(("text", ",\n", path, depth))
                stack.append(("value", item[index], child(path, index), depth + 1))
                stack.append(("text", f"{pad}  ", path, depth))
        else:
            shown = esc(jsonexact.dumps(item))
            why = risky.get(path.removeprefix("$.")) or risky.get(path)
            yield f'<mark title="{esc(why)}">{shown}</mark>' if why else shown
