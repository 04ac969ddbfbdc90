"""Robust image loading: every file becomes an 8-bit RGB `PIL.Image` or an `ImageLoadError` naming it.

Handles grayscale, palette, transparency (composited over white), CMYK and 16-bit / float grayscale.
Only the formats of `IMAGE_FORMATS` are decoded (the web page and `pipnet predict` share this
list). Truncated, corrupt, empty and non-image files, files of other formats, unreadable files, broken
links, and images with more pixels than the limit (`set_max_pixels`, which moves Pillow's own
decompression-bomb guard) all raise an `ImageLoadError` whose `reason` says which. A caller that needs
the image only at a small size can ask for it reduced while decoding (JPEG's draft mode, else
`Image.reduce`), so that a large photo costs a fraction of its full size in memory.
"""

from __future__ import annotations

import os
import re
import stat
import warnings

import numpy as np
from PIL import Image

from pipnet.data.errors import ImageLoadError

__all__ = ["IMAGE_EXTENSIONS", "IMAGE_FORMATS", "FORMAT_NAMES", "is_image_file", "load_image", "max_pixels", "megapixels",
           "set_max_pixels", "to_rgb"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
#: The formats decoded (Pillow's names; JPEG includes MPO, the JPEG that cameras write with a preview
#: inside). No PostScript, PDF or other format whose decoder runs an outside program or is rarely exercised.
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")
FORMAT_NAMES = "PNG, JPEG, GIF, BMP, WebP or TIFF"  # for messages

_WIDE_GRAY_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """True when the file name ends with one of `IMAGE_EXTENSIONS` (case-insensitive)."""
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


def set_max_pixels(pixels: int | None) -> None:
    """Set the one limit on an image's pixels (width x height) for every image this process opens.

    It is Pillow's own decompression-bomb guard, `PIL.Image.MAX_IMAGE_PIXELS`, raised or lowered: so a limit
    above Pillow's default (89,478,485 pixels, 89.48 megapixels) is really accepted, and one below it really
    refuses. `load_image` refuses a larger image from its header, before decoding it. `None`
    removes the limit.
    """
    Image.MAX_IMAGE_PIXELS = pixels


def max_pixels() -> int | None:
    """The limit that `set_max_pixels` sets (Pillow's default until then)."""
    return Image.MAX_IMAGE_PIXELS


def megapixels(pixels: int) -> str:
    """A pixel count as megapixels, as precise as a limit needs: `89.48`, `200`, `2`."""
    return f"{pixels / 1e6:.4g}"


def load_image(path: str | os.PathLike[str], *, reduce_to: int | None = None) -> Image.Image:
    """Open, fully decode and convert one image file to RGB.

    Args:
        path: the image file.
        reduce_to: the smallest side the caller needs; a larger image is reduced while decoding to at
            most about twice that (JPEG: decoded at 1/2, 1/4 or 1/8 scale; others: `Image.reduce` after
            decoding). None keeps the full size.

    Returns:
        An 8-bit RGB image, detached from the file.

    Raises:
        ImageLoadError: the file is missing, a broken link, not a regular file, unreadable, empty, not an
            image, of a format outside `IMAGE_FORMATS`, truncated or corrupt, or has more pixels than
            `max_pixels` (checked from its header, before decoding).
    """
    path = os.fspath(path)
    _check_file(path)
    Image.init()  # registers every plugin (once), so that each of IMAGE_FORMATS is known to `open`
    limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, with the numbers
            with Image.open(path, formats=IMAGE_FORMATS) as img:
                width, height = img.size
                if limit is not None and width * height > limit:
                    raise ImageLoadError(path, _too_many_pixels(width * height, limit, f"{width} x {height} = "))
                if reduce_to is not None and img.format in ("JPEG", "MPO"):
                    img.draft("RGB", (2 * reduce_to, 2 * reduce_to))
                img.load()  # decode now, so that truncation is detected here
                rgb = _reduced(img, reduce_to) if reduce_to is not None else to_rgb(img)
                return rgb.copy() if rgb is img else rgb  # closing the file closes `img` too
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as e:  # more than twice the limit: Pillow refuses it while opening
        found = re.search(r"\((\d+) pixels\)", str(e))
        raise ImageLoadError(path, _too_many_pixels(int(found.group(1)), limit) if found and limit
                             else f"too many pixels, possibly a decompression bomb ({e})") from e  # fmt: skip
    except Image.UnidentifiedImageError as e:
        raise ImageLoadError(path, _not_an_image(path)) from e
    except FileNotFoundError as e:
        raise ImageLoadError(path, "no such file") from e
    except PermissionError as e:
        raise ImageLoadError(path, "unreadable: permission denied") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageLoadError(path, f"corrupt or truncated image ({e})") from e


def _too_many_pixels(pixels: int, limit: int, size: str = "") -> str:
    return (f"too many pixels: {size}{pixels / 1e6:.1f} megapixels, more than the limit of {megapixels(limit)} "
            "(possibly a decompression bomb)")


def _check_file(path: str) -> None:
    """Refuse, with the reason, what is not a non-empty regular file (never open a FIFO: it would block)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise ImageLoadError(path, f"broken symlink (to {os.readlink(path)!r}, which does not exist)") from None
        raise ImageLoadError(path, "no such file") from None
    except PermissionError:
        raise ImageLoadError(path, "unreadable: permission denied") from None
    except OSError as e:  # ELOOP: a link to itself, or a circle of links
        what = "broken symlink (a loop of links)" if os.path.islink(path) else f"unreadable ({e.strerror})"
        raise ImageLoadError(path, what) from None
    if stat.S_ISDIR(info.st_mode):
        raise ImageLoadError(path, "not a file: a folder")
    if not stat.S_ISREG(info.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(info.st_mode) else "a socket" if stat.S_ISSOCK(info.st_mode) else "a device"
        raise ImageLoadError(path, f"not a regular file: {kind}")
    if info.st_size == 0:
        raise ImageLoadError(path, "the file is empty (0 bytes)")


def _not_an_image(path: str) -> str:
    """The reason a file none of `IMAGE_FORMATS` recognises is refused: another format, or no image."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:  # reads the header only; nothing of it is decoded
                other = img.format
    except Exception:  # noqa: BLE001 (any failure means: no image format Pillow knows)
        other = None
    if other:
        return f"unsupported format ({other}): only {FORMAT_NAMES} files are read"
    return f"not an image (not a {FORMAT_NAMES} file)"


def _reduced(img: Image.Image, reduce_to: int) -> Image.Image:
    """`img` in RGB, reduced by a whole factor when its smaller side is at least twice `reduce_to`."""
    factor = min(img.size) // reduce_to
    if factor < 2:
        return to_rgb(img)
    try:
        return to_rgb(img.reduce(factor))
    except ValueError:  # a mode `reduce` does not handle (palette, 16-bit): convert first
        return to_rgb(img).reduce(factor)
