"""Command group (to be filled in): registers its subcommands on the top-level parser."""
from __future__ import annotations


def register(subparsers) -> None:
    """Add this group's subcommands to ``subparsers``."""
