"""Loopback simulators of the providers and of subscribers, used by the demo and the tests."""

from __future__ import annotations
