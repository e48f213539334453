"""The command line: commands, terminal rendering, exit codes. Nothing imports it.

Layer: may import everything below it (builtins are reached through entry points).
"""

from ._app import app, main

__all__ = ["app", "main"]
