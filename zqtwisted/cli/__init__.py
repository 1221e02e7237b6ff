"""The ``zqctl`` command."""

from zqtwisted.cli.zqctl import main

__all__ = ["main"]
