"""Scenario: the adapter (polled, no callbacks) and the upload of a user's media as an asset."""

from __future__ import annotations

from service.providers.scenario.adapter import Scenario

__all__ = ["Scenario"]
