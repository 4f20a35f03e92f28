"""The dashboard under /ui: server-rendered pages over the same store calls the /v1 routes make.

`service.ui.entry.mount()` is what the app adds; the pages load on the first request.
"""

from __future__ import annotations

from service.ui.paths import PREFIX

__all__ = ["PREFIX"]
