"""Command line: serve | demo."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """Run the command line."""
    return 0
