"""What comes from outside: clean it, say what was in it, and remember its values.

The untrusted stage calls ``clean_value`` on a tool's parsed output (for actions marked
``untrusted_output``) and ``extract_taint`` on the same output; before a later write it calls
``find_tainted`` on the call's arguments. Modules, each with one job:

- ``html``: HTML to the text a reader sees (hidden parts reported); ``sanitize_html`` (nh3)
- ``css``: colours and the little CSS needed to know what is visible
- ``unicode``: invisible characters stripped, safe NFKC, mixed-script words
- ``detect``: a feature-based detector of text addressed to the model
- ``taint``: emails, URLs, hosts, IBANs, accounts, phones, tokens; matching across formats
- ``clean``: the walk over a JSON value, with size, depth and findings limits
- ``findings`` / ``paths``: the Finding record and its kinds; JSON paths
"""

from broker.untrusted.clean import Cleaned, clean_text, clean_value
from broker.untrusted.findings import INJECTION_KINDS, Finding
from broker.untrusted.html_text import html_to_text, sanitize_html
from broker.untrusted.taint import TaintedValue, extract_taint, find_tainted

__all__ = [
    "INJECTION_KINDS",
    "Cleaned",
    "Finding",
    "TaintedValue",
    "clean_text",
    "clean_value",
    "extract_taint",
    "find_tainted",
    "html_to_text",
    "sanitize_html",
]
