"""Errors the API turns into HTTP answers; each message names the field or object."""

from __future__ import annotations


class ApiError(Exception):
    status = 400

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Invalid(ApiError):
    status = 422


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class Unauthorized(ApiError):
    """No detail on purpose: a caller without a valid token learns nothing."""

    status = 401

    def __init__(self) -> None:
        super().__init__("unauthorized")


class Upstream(ApiError):
    """An agent or another component the API relies on failed."""

    status = 502
