"""Provider adapters."""

from __future__ import annotations
