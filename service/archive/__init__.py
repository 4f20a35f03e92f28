"""Output archiving (RELAY_ARCHIVE): outputs copied to the team's own storage in time."""

from __future__ import annotations
