"""Error types and the one JSON envelope: {"error": {"code", "message", "details"}}."""

from __future__ import annotations

from typing import Any


class RelayError(Exception):
    """Something went wrong in upscale-relay."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ApiError(RelayError):
    """The request cannot be served."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON envelope."""
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class StorageUnavailable(ApiError):
    """The database refuses writes (full disk, read-only or unreadable file): try again later."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            503,
            "storage_unavailable",
            "the database cannot store this now; nothing was changed, try again later",
            details={"reason": reason},
            headers={"Retry-After": "5"},
        )
        self.reason = reason
