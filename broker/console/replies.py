"""The console's HTTP answers: pages, redirects, and the headers every answer carries."""

from __future__ import annotations

from aiohttp import web

from broker.console.markup import page
from broker.console.pages import Viewer, problem

# No inline script or style anywhere, no framing, no plugins, forms only back to the console.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # a sign-in link's token never leaves in a Referer; "no-referrer" would also make
    # Chromium send "Origin: null" with the console's own forms
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def html(
    body: str,
    title: str,
    *,
    status: int = 200,
    viewer: Viewer | None = None,
    current: str = "",
    notice: str = "",
    refresh: str = "",
) -> web.Response:
    """A whole page, with the navigation when someone is signed in."""
    text = page(
        title,
        body,
        user=viewer.name if viewer else None,
        csrf=viewer.csrf if viewer else "",
        current=current,
        notice=notice,
        refresh=refresh,
    )
    return web.Response(status=status, text=text, content_type="text/html", charset="utf-8")


def refused(status: int, title: str, message: str, viewer: Viewer | None = None) -> web.Response:
    """A page saying what was wrong and what to do."""
    return html(problem(title, message), title, status=status, viewer=viewer)


def see_other(location: str) -> web.Response:
    """303 to ``location`` (a console path: never a URL an agent or a form supplied)."""
    return web.Response(status=303, headers={"Location": location})


def secured(response: web.StreamResponse) -> web.StreamResponse:
    """``response`` with the console's security headers."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response
