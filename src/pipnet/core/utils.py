"""Small helpers shared across layers: atomic file writes, safe tensor loading, CSV cells safe to open in a spreadsheet."""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

__all__ = ["FORMULA_STARTS", "MissingExtraError", "atomic_write", "load_tensors", "release_free_memory", "spreadsheet_safe"]


class MissingExtraError(ImportError):
    """An optional feature's packages are not installed; the message names the `pip install` that adds them."""


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` atomically.

    An interruption at any moment leaves either the old file or the new one, never a half-written file.
    A failure (a full disk, say) removes the temporary file and re-raises, leaving the old file intact.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; a saved file gets the usual permissions
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def load_tensors(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """`torch.load(path, weights_only=True)`: tensors, numbers, strings and plain containers only.

    A file holding any other Python object (a pickle that could run code when loaded) is refused with a
    short `pickle.UnpicklingError` naming the object, in place of torch's advice to load it unsafely.

    Args:
        path: the file.
        map_location: where tensors go.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"WeightsUnpickler error:\s*(.+?)(?: was not an allowed global|\n\n|$)", str(e), re.S)
        what = " ".join(found.group(1).split()) if found else "an unsupported object"
        raise pickle.UnpicklingError(f"it holds Python objects other than tensors ({what}); refusing to unpickle it") from None


def release_free_memory() -> None:
    """Return the C heap's free pages to the system (glibc's `malloc_trim`; nothing elsewhere).

    A decoded image of tens of megapixels is freed after use, but glibc keeps the freed pages of its heap
    for later, so a long-running server would stay at its peak; trimming gives them back.
    """
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        import ctypes
        import ctypes.util

        try:
            _MALLOC_TRIM = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc (macOS, musl, Windows)
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM: Any = None


#: The first characters that make a spreadsheet read a cell as a formula (OWASP, "CSV Injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(cell: str) -> str:
    """`cell` with a single quote in front when a spreadsheet would run it as a formula (OWASP's rule).

    A cell starting with `=`, `+`, `-`, `@`, a tab or a carriage return is prefixed with `'`, which
    spreadsheets show as text and do not display; numbers (`-0.5`, `+3`) are left as they are, so that
    they stay numbers. The raw text is what the JSON Lines output keeps.

    Examples:
        >>> spreadsheet_safe('=HYPERLINK("http://x", "y").png')
        '\\'=HYPERLINK("http://x", "y").png'
        >>> spreadsheet_safe("-0.25"), spreadsheet_safe("photos/a.png")
        ('-0.25', 'photos/a.png')
    """
    if not cell.startswith(FORMULA_STARTS):
        return cell
    try:
        float(cell)
    except ValueError:
        return "'" + cell
    return cell
