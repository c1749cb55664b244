"""Load the policies in force: every check passes, or the set is refused with file and line."""

from __future__ import annotations

from pathlib import Path

from broker.policy.check import check_folders
from broker.policy.evaluate import PolicySet


def load_policies(policies: Path, tools: Path) -> PolicySet:
    """The checked set; raises ConfigError for the first error, logs warnings."""
    return check_folders(policies, tools).policy_set()
