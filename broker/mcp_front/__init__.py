"""The MCP front: agent runtimes that speak the Model Context Protocol reach the broker
through it, as a client that signs every request with the agent's key. Every check, limit,
approval and audit record is the broker's own; nothing here decides what may run.

``names`` maps tool names, ``tool_results`` turns the broker's answers into MCP tool results,
``front`` serves ``tools/list`` and ``tools/call``, ``http_front`` serves streamable HTTP
with a bearer token per agent, and ``broker.commands.mcp_command`` is ``broker mcp``.
"""
