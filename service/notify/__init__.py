"""Notification bodies for webhooks, Slack, Discord, Teams and Google Chat; message templates."""

from __future__ import annotations

from service.notify.template import *  # noqa: F403 - moved whole; split in the next step
