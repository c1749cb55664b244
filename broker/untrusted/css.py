"""Just enough CSS to tell whether text is visible: colours, inline styles, simple rules.

Not a CSS engine: declarations come from an inline ``style`` attribute or from ``<style>``
rules whose selector is a bare ``tag``, ``.class``, ``#id`` or ``tag.class`` outside any
``@``-block (``@media`` rules differ per device, so we do not guess). Everything is bounded
and scanned in linear time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_STYLE_CHARS = 2000  # of one style attribute
MAX_CSS_RULES = 2000

# ---- colours -------------------------------------------------------------------------------

Colour = tuple[float, float, float, float]  # r, g, b in 0..255, alpha in 0..1

_NAMED: dict[str, Colour] = {
    name: (int(hexa[0:2], 16), int(hexa[2:4], 16), int(hexa[4:6], 16), 1.0)
    for name, hexa in {
        "white": "ffffff", "black": "000000", "red": "ff0000", "green": "008000",
        "blue": "0000ff", "yellow": "ffff00", "gray": "808080", "grey": "808080",
        "silver": "c0c0c0", "maroon": "800000", "olive": "808000", "lime": "00ff00",
        "aqua": "00ffff", "cyan": "00ffff", "teal": "008080", "navy": "000080",
        "fuchsia": "ff00ff", "magenta": "ff00ff", "purple": "800080", "orange": "ffa500",
        "whitesmoke": "f5f5f5", "snow": "fffafa", "ivory": "fffff0", "ghostwhite": "f8f8ff",
        "floralwhite": "fffaf0", "linen": "faf0e6", "mintcream": "f5fffa", "azure": "f0ffff",
        "aliceblue": "f0f8ff", "seashell": "fff5ee", "honeydew": "f0fff0",
        "lightgray": "d3d3d3", "lightgrey": "d3d3d3", "gainsboro": "dcdcdc",
        "darkgray": "a9a9a9", "darkgrey": "a9a9a9", "dimgray": "696969", "dimgrey": "696969",
    }.items()
}  # fmt: skip
_NAMED["transparent"] = (0.0, 0.0, 0.0, 0.0)
WHITE: Colour = (255.0, 255.0, 255.0, 1.0)
_HEX = re.compile(r"#([0-9a-f]{3,8})\b")
_FUNC = re.compile(r"(rgba?|hsla?)\(([^()]{1,80})\)")
_NUMBER = re.compile(r"(-?\d*\.?\d+)\s*(%|[a-z]{1,4})?")


def parse_colour(value: str) -> Colour | None:
    """A CSS colour (#rgb, #rrggbb(aa), rgb()/rgba(), hsl()/hsla(), common names), or None."""
    value = value.strip().lower()
    if value in _NAMED:
        return _NAMED[value]
    if match := _HEX.fullmatch(value) or _HEX.match(value):
        return _hex_colour(match.group(1))
    if match := _FUNC.match(value):
        parts = [p for p in re.split(r"[\s,/]+", match.group(2).strip()) if p]
        if len(parts) in (3, 4):
            try:
                return _func_colour(match.group(1), parts)
            except ValueError:
                return None
    return None


def _hex_colour(digits: str) -> Colour | None:
    if len(digits) in (3, 4):
        digits = "".join(c * 2 for c in digits)
    if len(digits) not in (6, 8):
        return None
    alpha = int(digits[6:8], 16) / 255 if len(digits) == 8 else 1.0
    return (int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16), alpha)


def _func_colour(kind: str, parts: list[str]) -> Colour:
    def channel(text: str, scale: float) -> float:
        return float(text[:-1]) * scale / 100 if text.endswith("%") else float(text)

    alpha = channel(parts[3], 1.0) if len(parts) == 4 else 1.0
    if kind.startswith("rgb"):
        r, g, b = (channel(p, 255) for p in parts[:3])
        return (r, g, b, alpha)
    hue = float(parts[0].removesuffix("deg")) % 360 / 360
    sat, light = (float(p.removesuffix("%")) / 100 for p in parts[1:3])
    return (*_hsl_to_rgb(hue, sat, light), alpha)


def _hsl_to_rgb(h: float, s: float, light: float) -> tuple[float, float, float]:
    def f(n: float) -> float:
        k = (n + h * 12) % 12
        a = s * min(light, 1 - light)
        return 255 * (light - a * max(-1, min(k - 3, 9 - k, 1)))

    return f(0), f(8), f(4)


def same_colour(a: Colour, b: Colour) -> bool:
    return max(abs(a[0] - b[0]), abs(a[1] - b[1]), abs(a[2] - b[2])) <= 10


# ---- style ---------------------------------------------------------------------------------


def parse_style(style: str) -> dict[str, str]:
    """Declarations of an inline style or rule body: lower-cased, ``!important`` dropped."""
    declarations: dict[str, str] = {}
    for item in style[:MAX_STYLE_CHARS].split(";"):
        name, colon, value = item.partition(":")
        if colon:
            value = value.strip().lower().removesuffix("!important").strip()
            declarations[name.strip().lower()] = value
    return declarations


def _length(value: str) -> tuple[float, str] | None:
    match = _NUMBER.match(value.strip())
    if not match:
        return None
    return float(match.group(1)), (match.group(2) or "")


def tiny_font(value: str) -> bool | None:
    """True for a font size nobody can read, False for a readable absolute one, None for a
    relative one (it scales the parent's size) or one we cannot read."""
    parsed = _length(value)
    if parsed is None:
        return None
    number, unit = parsed
    if number <= 0:
        return True
    limits = {"px": 1.0, "pt": 0.75, "": 0.0, "em": 0.1, "rem": 0.1, "%": 10.0, "ex": 0.2,
              "ch": 0.2, "vw": 0.1, "vh": 0.1, "mm": 0.3, "q": 1.0}  # fmt: skip
    if unit not in limits:
        return None
    tiny = number <= limits[unit]
    return True if tiny else (None if unit in ("em", "%", "ex", "ch") else False)


def _far_negative(value: str) -> bool:
    parsed = _length(value)
    if parsed is None:
        return False
    number, unit = parsed
    limits = {"px": -500.0, "pt": -375.0, "em": -30.0, "rem": -30.0, "%": -90.0, "vw": -50.0,
              "vh": -50.0, "cm": -13.0, "mm": -130.0, "in": -5.0}  # fmt: skip
    return unit in limits and number <= limits[unit]


def _zero_size(value: str) -> bool:
    parsed = _length(value)
    return parsed is not None and parsed[0] <= (1.0 if parsed[1] in ("px", "") else 0.0)


def sticky_reason(decl: dict[str, str]) -> str | None:
    """Why an element and all its descendants are invisible, from its own declarations."""
    if decl.get("display") == "none":
        return "display:none"
    opacity = _length(decl.get("opacity", ""))
    if opacity is not None and opacity[0] / (100 if opacity[1] == "%" else 1) <= 0.05:
        return "opacity:0"
    if re.search(r"opacity\(\s*0*\.?0*%?\s*\)", decl.get("filter", "")):
        return "filter:opacity(0)"
    if re.match(r"scale[xy]?\(\s*0*\.?0*\s*[,)]", decl.get("transform", "")):
        return "transform:scale(0)"
    if decl.get("text-indent") and _far_negative(decl["text-indent"]):
        return "off-screen (text-indent)"
    if any(_far_negative(decl.get(side, "")) for side in ("margin-left", "margin-top")):
        return "off-screen (negative margin)"
    positioned = decl.get("position") in ("absolute", "fixed")
    if positioned and any(_far_negative(decl.get(s, "")) for s in ("left", "top", "right")):
        return "off-screen (position)"
    clip = decl.get("clip", "")
    if positioned and clip.startswith("rect(") and _all_tiny(clip[5:]):
        return "clip:rect(0 0 0 0)"
    clip_path = decl.get("clip-path", "")
    inset = re.match(r"inset\(\s*(\d+(?:\.\d+)?)%", clip_path)
    if (inset and float(inset.group(1)) >= 50) or re.match(r"circle\(\s*0", clip_path):
        return "clip-path"
    if decl.get("overflow", decl.get("overflow-y", decl.get("overflow-x", ""))) == "hidden":
        for prop in ("width", "height", "max-width", "max-height"):
            if prop in decl and _zero_size(decl[prop]):
                return f"{prop}:0 with overflow:hidden"
    return None


def _all_tiny(arguments: str) -> bool:
    numbers = re.findall(r"-?\d+(?:\.\d+)?", arguments[:100])
    return len(numbers) == 4 and all(abs(float(n)) <= 1 for n in numbers)


def background(decl: dict[str, str]) -> Colour | bool | None:
    """The background this element declares: a colour, None when it becomes unknown (an
    image or a gradient), or False when it declares none."""
    image = decl.get("background-image", "")
    if "url(" in image or "gradient(" in image:
        return None
    for prop in ("background-color", "background"):
        if prop in decl:
            value = decl[prop]
            if "url(" in value or "gradient(" in value:
                return None
            for token in re.findall(r"#[0-9a-f]{3,8}\b|(?:rgba?|hsla?)\([^()]{1,80}\)|[a-z]+",
                                    value):  # fmt: skip
                colour = parse_colour(token)
                if colour is not None:
                    return None if colour[3] < 1 else colour
    return False


# ---- <style> rules -------------------------------------------------------------------------

_SIMPLE_SELECTOR = re.compile(r"([a-z][a-z0-9-]*)?(?:([.#])([\w-]+))?")


@dataclass
class Rules:
    """Declarations from <style> blocks for simple selectors, and the classes/ids whose
    background a rule we cannot resolve may set."""

    by_tag: dict[str, dict[str, str]] = field(default_factory=dict)
    by_class: dict[str, dict[str, str]] = field(default_factory=dict)
    by_id: dict[str, dict[str, str]] = field(default_factory=dict)
    unknown_bg_names: set[str] = field(default_factory=set)
    unknown_bg_everywhere: bool = False
    count: int = 0

    def add_css(self, css: str) -> None:
        for selectors, body in top_level_rules(css):
            if self.count >= MAX_CSS_RULES:
                return
            self.count += 1
            declarations = parse_style(body)
            for selector in selectors.split(","):
                self._add(selector.strip().lower(), declarations)

    def _add(self, selector: str, declarations: dict[str, str]) -> None:
        match = _SIMPLE_SELECTOR.fullmatch(selector)
        if not selector or not match or not (match.group(1) or match.group(3)):
            if background(declarations) is not False:
                names = re.findall(r"[.#]([\w-]+)", selector)
                self.unknown_bg_names.update(names)
                self.unknown_bg_everywhere |= not names
            return
        tag, sigil, name = match.groups()
        if sigil == ".":
            target = self.by_class.setdefault(name, {})
        elif sigil == "#":
            target = self.by_id.setdefault(name, {})
        else:
            target = self.by_tag.setdefault(tag, {})
        target.update(declarations)

    def for_element(self, tag: str, classes: list[str], ident: str) -> dict[str, str]:
        declarations = dict(self.by_tag.get(tag, {}))
        for name in classes:
            declarations.update(self.by_class.get(name, {}))
        if ident:
            declarations.update(self.by_id.get(ident, {}))
        return declarations


def top_level_rules(css: str) -> list[tuple[str, str]]:
    """(selectors, body) of each rule outside @-blocks; comments removed. Linear time."""
    css = _strip_css_comments(css)
    rules: list[tuple[str, str]] = []
    depth, start, selector, in_at = 0, 0, "", False
    for match in re.finditer(r"[{}]", css):
        if match.group() == "{":
            if depth == 0:
                selector = css[start : match.start()].strip()
                in_at = selector.startswith("@")
                start = match.end()
            depth += 1
        else:
            depth = max(0, depth - 1)
            if depth == 0:
                if not in_at:
                    rules.append((selector, css[start : match.start()]))
                start = match.end()
    return rules


def _strip_css_comments(css: str) -> str:
    parts, index = [], 0
    while (begin := css.find("/*", index)) != -1:
        parts.append(css[index:begin])
        end = css.find("*/", begin + 2)
        if end == -1:
            return "".join(parts)
        index = end + 2
    parts.append(css[index:])
    return "".join(parts)
