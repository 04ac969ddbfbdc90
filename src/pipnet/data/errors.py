"""Errors raised by the data layer, shared by every source (planted, folders, CUB)."""

from __future__ import annotations

__all__ = ["DataError", "ImageLoadError"]


class DataError(ValueError):
    """A data source is missing, empty or inconsistent; the message names the path and what was expected."""


class ImageLoadError(ValueError):
    """One image file could not be decoded; the message names the file.

    Args:
        path: the file that failed.
        reason: what went wrong (truncated, not an image, too large, ...).
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot load image {path!r}: {reason}")
        self.path = path
        self.reason = reason
