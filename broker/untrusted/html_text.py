"""HTML from outside -> the text a person would see, plus a record of what was hidden.

Parsed with the stdlib ``html.parser``: no new dependency, tolerant of broken markup, and fast
enough (about 1 ms for a 5 KB email; the whole cleaning, detector included, is in
BENCHMARKS.md). nh3 (html5ever) parses closer to a browser but returns sanitised HTML, not a
tree: we would parse its output again, and it cannot keep <style> blocks. We never build a
tree: one pass keeps a stack of open elements with what each passes to its children. Python
3.11 before 3.11.13 has quadratic cases in ``html.parser`` (CVE-2025-6069); ``defuse`` removes
them before parsing.

Visibility is decided as a mail client would render the page, without any CSS but inline
styles and simple rules, so a hiding trick built on unsupported CSS (complex selectors,
``@media``, external sheets) is missed; its text then stays visible and is still scanned.

Dropped with their content: script, style, head, title, template, noscript, iframe, object,
comments (their text is scanned, not returned). Dropped as hidden, and reported: elements
with the ``hidden`` attribute or ``aria-hidden="true"``, and elements whose style (inline, or
a simple ``tag``/``.class``/``#id`` rule in a ``<style>`` block outside ``@media``) makes them
invisible:

- sticky (a child cannot undo it): display:none, opacity <= 0.05, transform:scale(0),
  off-screen placement (absolute/fixed at a far negative left/top, a far negative
  text-indent or margin), clip:rect(0 0 0 0) / clip-path:inset(50%+), a zero width/height or
  max-width/max-height together with overflow:hidden (without it the text spills out and is
  seen, so we keep it);
- computed (a child can undo it): visibility:hidden, a font size of at most 1px (0 in any
  unit, or a relative size of a tiny parent), transparent text, and text whose colour is
  (nearly) its background colour. The background is the nearest declared one, white by
  default; a background image, or a background set by a rule we cannot resolve, makes it
  unknown and the colour test is skipped: we would rather keep white text on a banner than
  drop a real button label.

Block elements and ``<br>`` become line breaks, cells are separated by spaces, and a link
keeps its target as ``text (url)`` for http(s)/mailto/tel targets. Tags that only a chat
template would use (``<system>``, ``<assistant>``, ...) are kept as literal text so the
detector sees them; a browser shows their content anyway.

``sanitize_html`` re-emits only the visible part and passes it through nh3 (no images, no
style attributes, only http/https/mailto links), for tools that must return HTML.
"""

from __future__ import annotations

import html as html_lib
import re
from collections import Counter
from dataclasses import dataclass, field
from html.parser import HTMLParser

import nh3

from broker.untrusted.css import (
    WHITE,
    Colour,
    Rules,
    background,
    parse_colour,
    parse_style,
    same_colour,
    sticky_reason,
    tiny_font,
)

MAX_STACK = 256  # deeper elements inherit their parent's state but are not tracked
MAX_HIDDEN_CHUNKS = 50
MAX_CHUNK_CHARS = 4000  # of each hidden chunk, kept for the finding and the detector
MAX_CSS_CHARS = 100_000  # of all <style> blocks together
MAX_URL_CHARS = 2048

_DROP = frozenset(
    {"script", "style", "head", "title", "template", "noscript", "iframe", "object", "frameset"}
)
_VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
     "source", "track", "wbr", "keygen"}
)  # fmt: skip
_BLOCK = frozenset(
    {"address", "article", "aside", "blockquote", "body", "caption", "center", "dd", "details",
     "dialog", "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "h1",
     "h2", "h3", "h4", "h5", "h6", "header", "hr", "html", "li", "main", "nav", "ol", "p", "pre",
     "section", "summary", "table", "tbody", "tfoot", "thead", "tr", "ul", "option", "legend"}
)  # fmt: skip
_CELL = frozenset({"td", "th"})
# Closing rules a browser applies without an end tag (the ones that matter for hiding).
_CLOSED_BY = {
    "p": _BLOCK,
    "li": frozenset({"li"}),
    "td": frozenset({"td", "th", "tr"}),
    "th": frozenset({"td", "th", "tr"}),
    "tr": frozenset({"tr"}),
    "option": frozenset({"option"}),
    "dt": frozenset({"dt", "dd"}),
    "dd": frozenset({"dt", "dd"}),
}
_ROLE_TAGS = frozenset(
    {"system", "assistant", "instruction", "instructions", "developer", "system_prompt",
     "system-prompt", "im_start", "im_end", "tool_call", "tool_result", "function_call"}
)  # fmt: skip
HTML_TAGS = (
    "html|head|body|div|span|p|br|a|table|tbody|thead|tr|td|th|img|font|b|i|u|s|em|strong|ul|"
    "ol|li|h[1-6]|style|script|meta|link|center|blockquote|pre|code|section|article|header|"
    "footer|hr|small|big|sup|sub|label|input|form|button|iframe|svg|template|noscript|title|"
    "nav|main|abbr|strike|del|ins|mark|dl|dt|dd|figure|figcaption|caption|tfoot|col|colgroup"
)
_LOOKS_LIKE_HTML = re.compile(
    rf"<(?:{HTML_TAGS})(?:\s[^<>]{{0,2000}}+)?/?>|</(?:{HTML_TAGS})\s*+>|<!--|<!doctype\s", re.I
)
_SPACES = re.compile(r"[ \t\r\n\f\v]+")
_MANY_NEWLINES = re.compile(r"\n{3,}")
_MANY_SPACES = re.compile(r"[ \t]{2,}")


def looks_like_html(text: str) -> bool:
    """Whether ``text`` contains a real HTML tag (``<b>``, ``</div>``, a comment, a doctype);
    ``<john@example.com>`` and ``a < b`` do not count, nor do chat-template tags."""
    return _LOOKS_LIKE_HTML.search(text) is not None


@dataclass(frozen=True)
class HiddenChunk:
    """The text of one hidden element (its hidden descendants included) and why it was hidden."""

    reason: str
    text: str


@dataclass(frozen=True)
class HtmlText:
    """The visible text of an HTML document and the hidden chunks that were dropped from it;
    ``hidden_total`` counts every hidden chunk, also those past MAX_HIDDEN_CHUNKS. ``comments``
    holds the text of the first comments, dropped too (comments are markup, not reported as
    hidden text, but their text is worth a scan)."""

    text: str
    hidden: list[HiddenChunk]
    hidden_total: int
    comments: list[str] = field(default_factory=list)


def html_to_text(html: str) -> HtmlText:
    """The text a reader would see in ``html``; hidden parts are reported, not returned."""
    comments: list[str] = []
    parser = _VisibleText(keep_html=False)
    parser.feed(defuse(html, comments))
    parser.close()
    return HtmlText(_tidy("".join(parser.out)), parser.chunks, parser.hidden_total, comments)


def sanitize_html(html: str) -> str:
    """``html`` reduced to its visible part and sanitised with nh3: safe tags and attributes,
    no images (a remote image is a beacon), no styles, only http/https/mailto links."""
    parser = _VisibleText(keep_html=True)
    parser.feed(defuse(html))
    parser.close()
    return nh3.clean(
        "".join(parser.out),
        tags=_SAFE_TAGS,
        attributes={"a": {"href", "title"}, "td": {"colspan", "rowspan"}, "th": {"colspan"}},
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )


_COMMENT_OR_CDATA = re.compile(r"<!--|<!\[cdata\[", re.I)


def defuse(html: str, comments: list[str] | None = None) -> str:
    """``html`` without the constructs that make ``html.parser`` slow: before Python 3.11.13 it
    rescans the rest of the document for each comment, CDATA section or tag left open
    (CVE-2025-6069), which is quadratic. Comments and CDATA sections are removed (an unclosed
    one runs to the end, as in a browser) and each '<' after the last '>' is escaped, so every
    construct the parser meets is closed. Linear time. The text of the first comments is added
    to ``comments`` when given: never shown to a reader, but worth scanning."""
    parts: list[str] = []
    index = 0
    while match := _COMMENT_OR_CDATA.search(html, index):
        parts.append(html[index : match.start()])
        closer = "-->" if match.group() == "<!--" else "]]>"
        end = html.find(closer, match.end())
        stop = len(html) if end == -1 else end
        if comments is not None and len(comments) < MAX_HIDDEN_CHUNKS:
            comments.append(html[match.end() : min(stop, match.end() + MAX_CHUNK_CHARS)])
        if end == -1:
            index = len(html)
            break
        index = end + len(closer)
    parts.append(html[index:])
    text = "".join(parts)
    last = text.rfind(">")
    return text[: last + 1] + text[last + 1 :].replace("<", "&lt;")


_SAFE_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "caption", "code", "dd", "del", "div", "dl", "dt", "em",
    "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "ins", "li", "mark", "ol", "p", "pre", "s",
    "small", "span", "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr",
    "u", "ul",
}  # fmt: skip


# ---- the parser ----------------------------------------------------------------------------


@dataclass
class _Chunk:
    reason: str
    parts: list[str] = field(default_factory=list)
    size: int = 0


@dataclass
class _Element:
    tag: str
    sticky: str | None = None  # hidden with all descendants, and why
    reason: str | None = None  # why the text directly inside is hidden (sticky or computed)
    tiny_font: bool = False
    invisible: bool = False  # visibility:hidden (a child may say visible)
    colour: Colour | None = None
    background: Colour | None = WHITE
    chunk: _Chunk | None = None
    owns_chunk: bool = False
    drop: bool = False
    href: str = ""
    emitted: bool = False  # keep_html: whether its start tag was written


class _VisibleText(HTMLParser):
    def __init__(self, *, keep_html: bool) -> None:
        super().__init__(convert_charrefs=True)
        self.keep_html = keep_html
        self.out: list[str] = []
        self.chunks: list[HiddenChunk] = []
        self.hidden_total = 0
        self.stack: list[_Element] = [_Element("#root")]
        self.rules = Rules()
        self.css_chars = 0
        self.drop_depth = 0
        self.pre_depth = 0
        self.untracked = 0  # elements opened past MAX_STACK
        self.open_tags: Counter[str] = Counter()  # tag -> how many are on the stack

    # -- HTMLParser hooks

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _ROLE_TAGS:
            self._text(f"<{tag}>")
            return
        self._implicit_close(tag)
        if tag == "br":
            self._visible_html_void()
            self._text("\n")
            return
        if tag in _VOID:
            self._visible_html_void()
            if tag == "hr":
                self._text("\n")
            return
        if len(self.stack) >= MAX_STACK:
            self.untracked += 1
            return
        element = self._element(tag, dict(attrs))
        self.stack.append(element)
        self.open_tags[tag] += 1
        if element.drop:
            self.drop_depth += 1
            return
        if tag == "pre":
            self.pre_depth += 1
        if tag in _BLOCK:
            self._text("\n")
        elif tag in _CELL:
            self._text(" ")
        if self.keep_html and element.reason is None and not self.drop_depth:
            self.out.append(self.get_starttag_text() or "")
            element.emitted = True

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # A browser ignores "/>" on a non-void element: <span style="display:none"/> opens it.
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag in _ROLE_TAGS:
            self._text(f"</{tag}>")
            return
        if tag in _VOID:
            return
        if self.untracked:  # closes one of the elements opened past MAX_STACK
            self.untracked -= 1
            return
        if not self.open_tags[tag]:
            return  # a stray end tag: browsers ignore it too
        while len(self.stack) > 1:
            element = self._pop()
            if element.tag == tag:
                break

    def handle_data(self, data: str) -> None:
        top = self.stack[-1]
        if self.drop_depth:
            if top.tag == "style" and self.css_chars < MAX_CSS_CHARS:
                self.css_chars += len(data)
                self.rules.add_css(data[:MAX_CSS_CHARS])
            return
        if not self.pre_depth:
            data = _SPACES.sub(" ", data)
        self._text(data)

    def handle_comment(self, data: str) -> None:
        pass  # never rendered; conditional comments (<!--[if mso]>) carry only markup

    def close(self) -> None:
        super().close()
        while len(self.stack) > 1:
            self._pop()

    # -- helpers

    def _element(self, tag: str, attrs: dict[str, str | None]) -> _Element:
        parent = self.stack[-1]
        element = _Element(
            tag,
            sticky=parent.sticky,
            tiny_font=parent.tiny_font,
            invisible=parent.invisible,
            colour=parent.colour,
            background=parent.background,
            chunk=parent.chunk,
        )
        if tag in _DROP:
            element.drop = True
            return element
        classes = (attrs.get("class") or "").lower().split()[:20]
        ident = (attrs.get("id") or "").lower()
        declarations = self.rules.for_element(tag, classes, ident)
        declarations.update(parse_style(attrs.get("style") or ""))
        self._apply(element, tag, attrs, declarations)
        if self.rules.unknown_bg_names.intersection([*classes, ident]):
            element.background = None
        if element.sticky is None:
            element.sticky = _attribute_reason(attrs) or sticky_reason(declarations)
        element.reason = element.sticky or self._computed_reason(element)
        if element.reason is not None and parent.reason is None:
            element.chunk = _Chunk(element.reason)
            element.owns_chunk = True
        if tag == "a" and element.reason is None:
            element.href = (attrs.get("href") or "").strip()[:MAX_URL_CHARS]
            element.chunk = None
        return element

    def _apply(
        self, element: _Element, tag: str, attrs: dict[str, str | None], decl: dict[str, str]
    ) -> None:
        if self.rules.unknown_bg_everywhere and element.background is WHITE:
            element.background = None  # some rule we cannot resolve sets backgrounds
        if (bgcolor := attrs.get("bgcolor")) and (colour := parse_colour(bgcolor)):
            element.background = colour if colour[3] >= 1 else element.background
        if attrs.get("background"):
            element.background = None
        declared = background(decl)
        if declared is not False:
            element.background = declared if isinstance(declared, tuple) else None
        if tag == "font" and (colour_attr := attrs.get("color")):
            element.colour = parse_colour(colour_attr) or element.colour
        if "color" in decl:
            element.colour = parse_colour(decl["color"]) or element.colour
        if "font-size" in decl:
            tiny = tiny_font(decl["font-size"])
            if tiny is not None:
                element.tiny_font = tiny
        if "visibility" in decl:
            element.invisible = decl["visibility"] in ("hidden", "collapse")

    def _computed_reason(self, element: _Element) -> str | None:
        if element.invisible:
            return "visibility:hidden"
        if element.tiny_font:
            return "font-size:0"
        colour = element.colour
        if colour is not None and colour[3] <= 0.05:
            return "transparent text"
        if colour is None or element.background is None:
            return None
        return "text colour equals background" if same_colour(colour, element.background) else None

    def _implicit_close(self, tag: str) -> None:
        while len(self.stack) > 1:
            closers = _CLOSED_BY.get(self.stack[-1].tag)
            if closers is None or tag not in closers:
                return
            if tag in ("td", "th") and self.stack[-1].tag == "tr":
                return
            self._pop()

    def _pop(self) -> _Element:
        element = self.stack.pop()
        self.open_tags[element.tag] -= 1
        if element.drop:
            self.drop_depth -= 1
            return element
        if element.tag == "pre":
            self.pre_depth -= 1
        if element.owns_chunk and element.chunk is not None:
            self._record(element.chunk)
        if element.emitted:
            self.out.append(f"</{element.tag}>")
        if element.tag == "a" and element.href and element.reason is None:
            self._link_target(element.href)
        if element.tag in _BLOCK:
            self._text("\n")
        return element

    def _record(self, chunk: _Chunk) -> None:
        text = _SPACES.sub(" ", "".join(chunk.parts)).strip()
        if not text:
            return
        self.hidden_total += 1
        if len(self.chunks) < MAX_HIDDEN_CHUNKS:
            self.chunks.append(HiddenChunk(chunk.reason, text[:MAX_CHUNK_CHARS]))

    def _link_target(self, href: str) -> None:
        if not re.match(r"(?:https?:|mailto:|tel:)", href, re.I):
            return
        shown = href.split(":", 1)[1] if href[:7].lower() in ("mailto:",) else href
        recent = "".join(self.out[-8:])
        if shown.rstrip("/") not in recent:
            self._text(f" ({href})")

    def _text(self, text: str) -> None:
        if self.drop_depth:
            return
        top = self.stack[-1]
        if top.reason is None:
            self.out.append(html_lib.escape(text, quote=False) if self.keep_html else text)
        elif top.chunk is not None and top.chunk.size < MAX_CHUNK_CHARS:
            top.chunk.parts.append(text)
            top.chunk.size += len(text)

    def _visible_html_void(self) -> None:
        if self.keep_html and self.stack[-1].reason is None and not self.drop_depth:
            self.out.append(self.get_starttag_text() or "")


def _attribute_reason(attrs: dict[str, str | None]) -> str | None:
    if "hidden" in attrs:
        return "hidden attribute"
    if (attrs.get("aria-hidden") or "").strip().lower() == "true":
        return 'aria-hidden="true"'
    return None


def _tidy(text: str) -> str:
    lines = (line.strip(" \t") for line in _MANY_SPACES.sub(" ", text).split("\n"))
    return _MANY_NEWLINES.sub("\n\n", "\n".join(lines)).strip()
