"""Where the dashboard is mounted: a leaf module, so the pages import it without a cycle."""

from __future__ import annotations

PREFIX = "/ui"
