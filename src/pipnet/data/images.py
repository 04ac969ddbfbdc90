"""Robust image loading: every file becomes an 8-bit RGB ``PIL.Image`` or an ``ImageLoadError`` naming it.

Handles grayscale, palette, transparency (composited over white), CMYK and 16-bit / float grayscale.
Truncated, corrupt, empty and non-image files, and decompression bombs (PIL's ``MAX_IMAGE_PIXELS``
guard, whose warning is turned into an error here without changing the global setting) all raise.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image

from pipnet.data.errors import ImageLoadError

__all__ = ["IMAGE_EXTENSIONS", "is_image_file", "load_image", "to_rgb"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")

_WIDE_GRAY_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """True when the file name ends with one of ``IMAGE_EXTENSIONS`` (case-insensitive)."""
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def _wide_gray_to_rgb(img: Image.Image) -> Image.Image:
    """16-bit, 32-bit or float grayscale -> 8-bit RGB.

    16-bit values (0..65535) scale by 1/257; float images and integers outside 0..65535 are stretched
    from their minimum to their maximum.
    """
    arr = np.asarray(img, dtype=np.float64)
    if img.mode == "F" or (arr.size and (arr.max() > 65535 or arr.min() < 0)):
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
    else:
        arr = arr / 257.0
    gray = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL image to 8-bit RGB; transparency is composited over white.

    Args:
        img: a decoded PIL image in any mode.
    """
    if img.mode == "RGB":
        return img
    if img.mode in _WIDE_GRAY_MODES:
        return _wide_gray_to_rgb(img)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open, fully decode and convert one image file to RGB.

    Args:
        path: the image file.

    Returns:
        An 8-bit RGB image, detached from the file.

    Raises:
        ImageLoadError: the file is missing, empty, not an image, truncated or corrupt, or larger than
            ``PIL.Image.MAX_IMAGE_PIXELS`` (a decompression bomb).
    """
    path = os.fspath(path)
    try:
        if os.path.getsize(path) == 0:
            raise ImageLoadError(path, "the file is empty (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()  # decode now, so that truncation is detected here
                rgb = to_rgb(img)
                return rgb.copy() if rgb is img else rgb  # closing the file closes ``img`` too
    except ImageLoadError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise ImageLoadError(path, f"too many pixels, possibly a decompression bomb ({e})") from e
    except Image.UnidentifiedImageError as e:
        raise ImageLoadError(path, "not a recognised image format") from e
    except FileNotFoundError as e:
        raise ImageLoadError(path, "no such file") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageLoadError(path, f"corrupt or truncated image ({e})") from e
