"""Policies: which agent may call which tool, with which keys. Deny by default."""

from broker.policy.evaluate import Decision, GrantRef, PolicySet
from broker.policy.loader import load_policies
from broker.policy.model import AgentKey, Grant, Policy

__all__ = ["AgentKey", "Decision", "Grant", "GrantRef", "Policy", "PolicySet", "load_policies"]
