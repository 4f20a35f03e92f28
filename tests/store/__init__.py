"""The store contract: one suite that every storage engine passes."""

from __future__ import annotations
