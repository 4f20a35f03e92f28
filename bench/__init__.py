"""Benchmarks: `make bench` (python -m bench) measures the relay against bare baselines."""

from __future__ import annotations
