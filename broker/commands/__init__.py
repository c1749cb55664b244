"""Subcommand groups of the ``broker`` command, one module each."""
