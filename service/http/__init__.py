"""The HTTP edge: one module per resource, thin (parse, call the domain, answer JSON)."""

from __future__ import annotations
