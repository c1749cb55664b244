"""Findings that are not about sentences: chat-template markers, dangerous code, URLs built to
carry data out, and encoded blocks worth decoding. Linear-time patterns, bounded counts.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from collections.abc import Callable
from itertools import islice
from urllib.parse import parse_qsl, unquote, urlsplit

from broker.untrusted.findings import (
    EXFILTRATION_URL,
    ROLE_MARKER,
    SUSPICIOUS_CODE,
    Finding,
    excerpt,
)

MAX_DECODE = 4096  # characters of one encoded block that are decoded
MAX_BLOCKS = 50  # encoded blocks, URLs and code blocks looked at per text

# ---- role markers --------------------------------------------------------------------------

_ROLE_MARKERS = re.compile(
    r"<\|\s{0,2}+(?:im_start|im_end|im_sep|system|user|assistant|endoftext|eot_id|"
    r"start_header_id|end_header_id|begin_of_text|eom_id|fim_[a-z]{1,10}+)\s{0,2}+\|>"
    r"|\[/?(?:inst|sys|system)\]|<<\s{0,2}+/?\s{0,2}+sys\s{0,2}+>>"
    r"|</?\s{0,2}+(?:system|assistant|instructions?|developer|system[_-]prompt|tool_call|"
    r"tool_result|function_call|im_start|admin_instructions?)\s{0,2}+/?>"
    r"|</\s{0,2}+(?:user|human|context|document|email)\s{0,2}+>"
    r"|^[ \t>#*!-]{0,6}+(?:system|assistant|developer)(?: (?:prompt|message|instructions?|"
    r"note|directive))?\s{0,2}+:[^\n]{0,160}\b(?:you|your|must|ignore|always|never|do not|"
    r"don't|instead|now|stop)\b"
    # "AI: what you need to know" is a newsletter heading; these labels need an order
    r"|^[ \t>#*!-]{0,6}+(?:model|ai|llm|bot)(?: (?:instructions?|note|directive))?\s{0,2}+:"
    r"[^\n]{0,160}\b(?:must|ignore|always|never|do not|don't|instead|stop|from now on)\b"
    r"|^[ \t]{0,4}+#{2,6}+\s{0,2}+(?:instructions?|system(?: prompt)?|response|new "
    r"(?:instructions?|task)|assistant)\s{0,2}+:?[ \t]{0,4}+$"
    r"|\b(?:begin|start|end)(?: of)? (?:the )?(?:system|admin|developer|hidden|new|secret) "
    r"(?:prompt|instructions?|message|mode|override)\b"
    r"|(?<![-=*#\[<])[-=*#\[<]{2,}+\s{0,3}+end of (?:the )?(?:email|message|document|context|"
    r"input|data|text|user input|conversation)\s{0,3}+[-=*#\]>]{2,}+"
    r"|\"role\"\s{0,3}+:\s{0,3}+\"(?:system|assistant|developer)\"",
    re.M,
)
_HUMAN_LABEL = re.compile(r"^[ \t>]{0,4}+(?:human|user)\s{0,2}+:", re.M)
_ASSISTANT_LABEL = re.compile(r"^[ \t>]{0,4}+(?:assistant|ai)\s{0,2}+:", re.M)


def role_markers(lowered: str, text: str, path: str) -> list[Finding]:
    findings = []
    for match in islice(_ROLE_MARKERS.finditer(lowered), MAX_BLOCKS):
        findings.append(Finding(ROLE_MARKER, path, f"role marker: {excerpt(match.group())}"))
    if _HUMAN_LABEL.search(lowered) and (assistant := _ASSISTANT_LABEL.search(lowered)):
        line = text[assistant.start() : assistant.start() + 80]
        findings.append(Finding(ROLE_MARKER, path, f"chat transcript: {excerpt(line)}"))
    return findings


# ---- code ----------------------------------------------------------------------------------

_CODE_LINE = re.compile(
    r"^[ \t]{0,8}+(?:import [a-z_]|from [a-z_][\w.]{0,40}+ import |def |class |\$ |curl |"
    r"wget |sudo |os\.|subprocess\.|requests\.|[a-z_]{1,30}+ = |[a-z_][\w.]{0,40}+\()[^\n]*+",
    re.M,
)
_FENCE = "```"
_SOURCES = re.compile(
    r"os\.environ|getenv|cookie|psutil|platform\.|usb|driver|devices?\b|disk_partitions|"
    r"net_if_addrs|\.ssh|id_rsa|passw|credential|secret|token|wallet|keychain|clipboard|"
    r"contacts|/etc/|open\([^)\n]{0,100}+\)|\.read\(\)|history|home|whoami|hostname"
)
_UPLOAD = re.compile(
    r"requests\.(?:post|put|patch)|\.send(?:all|to|_message|mail)?\(|sendmail|storbinary|"
    r"\.put\(|publish\.|mqtt|\bcurl\b[^\n]{0,200}?(?:-f |-d |--data|-t |--upload|-x post)|"
    r"request\(\s{0,3}+[\"']post|cookies\s?=|fetch\([^)\n]{0,200}?post|sendbeacon|"
    r"invoke-webrequest[^\n]{0,200}?-method post|\bscp\b|nc -|yag\.send"
)
_DOWNLOAD = re.compile(
    r"requests\.get|urlopen|urlretrieve|\bwget\b|\bcurl\b|\.get\(\s{0,3}+[\"']https?:|"
    r"request\(\s{0,3}+[\"']get|httpx\.get|invoke-webrequest|\biwr\b|downloadstring"
)
_EXECUTE = re.compile(
    r"\bexec\(|\beval\(|os\.system|subprocess|popen|check_output|chmod \+x|\|\s{0,2}+(?:ba)?sh\b|"
    r"&& ?\./|powershell|invoke-expression|\biex\b|python3? [^\s]{1,100}+\.py"
)
_DESTRUCTIVE = re.compile(
    r"\bdd if=|of=/dev/(?:sd|nvme|hd|disk)|rm -rf|os\.remove\(\s{0,3}+[\"']/(?:lib|usr|etc|bin|"
    r"boot|sbin)|mkfs|shutdown\b|\breboot\b|systemctl (?:stop|disable|mask)|format c:|"
    r":\(\)\s{0,2}+\{|chmod -r 777|/etc/init\.d|crontab|shutil\.rmtree\(\s{0,3}+[\"']/"
)


def code(lowered: str, path: str) -> list[Finding]:
    findings = []
    for block in _code_blocks(lowered)[:MAX_BLOCKS]:
        why = _dangerous(block)
        if why:
            findings.append(Finding(SUSPICIOUS_CODE, path, f"{why}: {excerpt(block)}"))
    return findings


def _code_blocks(lowered: str) -> list[str]:
    blocks: list[str] = []
    index = 0
    while len(blocks) < MAX_BLOCKS and (start := lowered.find(_FENCE, index)) != -1:
        end = lowered.find(_FENCE, start + 3)
        end = len(lowered) if end == -1 else end
        blocks.append(lowered[start + 3 : min(end, start + 3 + 20_000)])
        index = end + 3
    if not blocks:
        lines = [m.group() for m in islice(_CODE_LINE.finditer(lowered), 400)]
        if len(lines) >= 2:
            blocks.append("\n".join(lines))
    return blocks


def _dangerous(code: str) -> str:
    if _DESTRUCTIVE.search(code):
        return "code that damages the system"
    if _UPLOAD.search(code) and _SOURCES.search(code):
        return "code that sends local data out"
    if _DOWNLOAD.search(code) and _EXECUTE.search(code):
        return "code that downloads and runs a program"
    if _DOWNLOAD.search(code) and _UPLOAD.search(code):
        return "code that fetches content and pushes it elsewhere"
    return ""


# ---- URLs ----------------------------------------------------------------------------------

_MARKDOWN_IMAGE = re.compile(r"!\[[^\]\n]{0,200}+\]\(\s{0,3}+<?(https?://[^\s)>]{1,2048}+)")
_URL = re.compile(r"https?://[^\s<>\"'`)\]]{1,2048}+", re.I)
_PLACEHOLDER = re.compile(
    r"\{[^}]{0,40}+\}|\[[a-z_ ]{2,40}+\]|<[a-z_ ]{2,40}+>|%7b|%5b[a-z_]|\$\{?[a-z_]{2,30}+|"
    r"your_|insert_|placeholder|_here\b|(?-i:=[A-Z][A-Z0-9]{1,20}+_[A-Z0-9_]{2,30}+(?:&|$))|=$",
    re.I,
)
_SENSITIVE_PARAM = re.compile(
    r"data|d|q|p|payload|secret|token|key|pass(?:word)?|pwd|cookie|session|history|conv|"
    r"chat|prompt|content|msg|message|text|body|info|leak|exfil|email|c|x",
    re.I,
)


def urls(text: str, path: str) -> list[Finding]:
    findings = []
    for match in islice(_MARKDOWN_IMAGE.finditer(text), MAX_BLOCKS):
        url = match.group(1)
        if urlsplit(url).query or _PLACEHOLDER.search(url):
            findings.append(
                Finding(EXFILTRATION_URL, path, f"markdown image with a query: {excerpt(url)}")
            )
    for match in islice(_URL.finditer(text), MAX_BLOCKS * 4):
        url = match.group().rstrip(".,;:!?")
        why = _exfiltration(url)
        if why:
            findings.append(Finding(EXFILTRATION_URL, path, f"{why}: {excerpt(url)}"))
    return findings


def _exfiltration(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    if _PLACEHOLDER.search(parts.query) or _PLACEHOLDER.search(unquote(parts.path)):
        return "URL template to fill with data"
    for name, value in parse_qsl(parts.query, keep_blank_values=False)[:20]:
        if len(value) >= 16 and _SENSITIVE_PARAM.fullmatch(name):
            decoded = _readable(value) or _decode_block(value)
            if decoded and " " in decoded.strip():
                return f"query parameter {name!r} carries text"
    return ""


# ---- encoded payloads ----------------------------------------------------------------------

_BASE64 = re.compile(r"(?<![A-Za-z0-9+/=_-])[A-Za-z0-9+/_-]{24,}+={0,2}+(?![A-Za-z0-9+/=_-])")
_HEX = re.compile(
    r"(?<![0-9A-Fa-f])(?<![0-9A-Fa-f][ :])(?:[0-9A-Fa-f]{2}[ :]?+){16,}+(?![0-9A-Fa-f])"
)
# rot13 of words injections need; two different ones make decoding the text worthwhile.
_ROT13_ANCHORS = re.compile(
    r"\b(?:vtaber|qvfertneq|vafgehpgvbaf?|cerivbhf|nffvfgnag|flfgrz|cebzcg|cnffjbeq|"
    r"sbejneq|fraq|erirny|lbhe|erfcbafr)\b"
)


def encoded(text: str, lowered: str) -> list[tuple[str, str]]:
    """(how, text) for each base64 or hex block that decodes to readable text, and for the
    whole text read as rot13 when two rot13-encoded words injections need appear in it."""
    found: list[tuple[str, str]] = []
    candidates: list[tuple[str, str]] = []
    for match in islice(_HEX.finditer(text), MAX_BLOCKS):
        candidates.append(("hex", match.group()))
    for match in islice(_BASE64.finditer(text), MAX_BLOCKS):
        candidates.append(("base64", match.group()))
    for how, block in candidates:
        decoded = _decode_block(block) if how == "base64" else _decode_hex(block)
        if decoded:
            found.append((how, decoded))
    anchors = {m.group() for m in islice(_ROT13_ANCHORS.finditer(lowered), 200)}
    if len(anchors) >= 2:
        found.append(("rot13", codecs.decode(text[:65_536], "rot13")))
    return found


def _decode_block(block: str) -> str:
    block = block[:MAX_DECODE].rstrip("=")
    block = block[: len(block) - len(block) % 4 if len(block) % 4 == 1 else len(block)]
    padded = block + "=" * (-len(block) % 4)
    decoders: tuple[Callable[[str], bytes], ...] = (base64.b64decode, base64.urlsafe_b64decode)
    for decode in decoders:
        try:
            readable = _readable_bytes(decode(padded))
        except (binascii.Error, ValueError):
            continue
        if readable:
            return readable
    return ""


def _decode_hex(block: str) -> str:
    digits = re.sub(r"[ :]", "", block[:MAX_DECODE])
    try:
        return _readable_bytes(bytes.fromhex(digits[: len(digits) - len(digits) % 2]))
    except ValueError:
        return ""


def _readable_bytes(data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return ""
    return _readable(text)


def _readable(text: str) -> str:
    """``text`` if it reads like words (mostly letters and spaces), else ''."""
    if len(text) < 8:
        return ""
    letters = sum(c.isalpha() or c == " " for c in text)
    return text if letters >= 0.75 * len(text) and " " in text else ""
