"""Subcommands of the ``confidence-router`` CLI, one module each."""
