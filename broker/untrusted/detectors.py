"""The detector seam: what finds text addressed to the model in outside content.

A detector is a signal, not the defence (the defence is what cleaning removes, the taint check
and a human's approval): its findings go to the audit trail, the approver and the agent, and a
policy may ask for a human when there are some. The broker uses one, chosen by the config's
``detector``: a name registered here, or ``package.module:Name`` for one from elsewhere (a
class or factory taking no arguments), so a model-based classifier can replace the built-in
feature detector without a change to the broker. It runs in the broker's cleaning worker
processes as well as on the event loop, so it must be importable there and fast on short text.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Protocol

from broker.untrusted import detect
from broker.untrusted.findings import Finding


class Detector(Protocol):
    """Finds text addressed to the model rather than to the human reader."""

    def scan(self, text: str, path: str) -> list[Finding]:
        """Findings for ``text``, the string at JSON ``path``."""

    def scan_decoded(self, decoded: str, how: str, path: str) -> list[Finding]:
        """Findings for text the cleaner decoded from ``how`` (e.g. tag characters): at most
        one ``encoded_instruction`` saying what it decodes to."""


class FeatureDetector:
    """The built-in detector: grammatical and structural features (``broker.untrusted.detect``,
    where its figures and how they were obtained are given)."""

    def scan(self, text: str, path: str) -> list[Finding]:
        """Findings for ``text``."""
        return detect.scan(text, path)

    def scan_decoded(self, decoded: str, how: str, path: str) -> list[Finding]:
        """An ``encoded_instruction`` when the decoded text trips the detector."""
        return detect.scan_decoded(decoded, how, path)


class NoDetector:
    """No detection: cleaning still removes hidden text and invisible characters and reports
    them, and taint still follows outside values; only injected instructions go unreported."""

    def scan(self, text: str, path: str) -> list[Finding]:
        """Nothing."""
        return []

    def scan_decoded(self, decoded: str, how: str, path: str) -> list[Finding]:
        """Nothing."""
        return []


DETECTORS: dict[str, Callable[[], Detector]] = {"features": FeatureDetector, "none": NoDetector}
DEFAULT = "features"


class DetectorError(ValueError):
    """A detector the config names cannot be had: what was wrong, and what to write."""


def load_detector(spec: str) -> Detector:
    """The detector ``spec`` names: a registered name or ``package.module:Name``."""
    if spec in DETECTORS:
        return DETECTORS[spec]()
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise DetectorError(
            f"no detector '{spec}': use one of {', '.join(sorted(DETECTORS))}, or "
            "package.module:Name for one installed beside the broker"
        )
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
        detector = factory()
    except Exception as exc:  # its import or constructor: any failure is the config's to fix
        raise DetectorError(
            f"detector '{spec}' cannot be loaded: {type(exc).__name__}: {exc}"
        ) from None
    if not callable(getattr(detector, "scan", None)) or not callable(
        getattr(detector, "scan_decoded", None)
    ):
        raise DetectorError(f"detector '{spec}' has no scan and scan_decoded methods")
    loaded: Detector = detector
    return loaded
