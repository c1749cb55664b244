"""toolbroker: a sandboxed tool-execution broker for AI agents."""

__version__ = "0.1.0"
