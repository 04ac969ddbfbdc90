"""The files of `pipnet explain`: the images read one by one, and the folder the explanations go to.

As in `pipnet predict`, a file that cannot be read is one error entry (a line on standard error, and with
`--out` a JSON file holding the reason) and the others are explained; the command's exit status says
whether some failed. With `--out`, each image gets `NAME.json` and `NAME.png`, where NAME is unique per
input path (`unique_names`: `a/x.png`, `b/x.png` and `a/x.jpg` give three), and
nothing is written when one of those files would be an input (an image, or a file of the model folder).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from pipnet.data.errors import ImageLoadError
from pipnet.data.images import load_image
from pipnet.use.outputs import refuse_overwriting, unique_names
from pipnet.use.predict import printable_path

__all__ = ["EXIT_SOME_FAILED", "ExplanationFolder", "ImageFile", "finish", "read_images", "report_error"]

EXIT_SOME_FAILED = 1  # some files could not be read; the others were explained


@dataclass(frozen=True)
class ImageFile:
    """One input of the command: its image, or why it could not be read."""

    index: int  # its place among the inputs
    path: str
    image: Image.Image | None
    error: str | None = None

    @property
    def printable(self) -> str:
        """The path as text any UTF-8 writer accepts (bytes of a name that are not UTF-8 become `\\xNN`)."""
        return printable_path(self.path)


def read_images(paths: Sequence[str | os.PathLike[str]]) -> Iterator[ImageFile]:
    """Each path's image (RGB), or the reason it cannot be read (`load_image`), in order."""
    for index, path in enumerate(paths):
        try:
            image = load_image(path)
        except ImageLoadError as e:
            yield ImageFile(index, os.fspath(path), None, e.reason)
        else:
            yield ImageFile(index, os.fspath(path), image)


class ExplanationFolder:
    """The `--out` folder: `NAME.json` and `NAME.png` per input, NAME unique per input path.

    Args:
        out: the folder (made when missing).
        paths: the inputs, in the order `read_images` reads them.
        protect: more inputs that must not be written over: files, or a model folder (its own files,
            `model_files`).

    Raises:
        FileExistsError: one of the files to write is one of the inputs (nothing is written then).
    """

    def __init__(self, out: str | os.PathLike[str], paths: Sequence[str | os.PathLike[str]],
                 protect: Sequence[str | os.PathLike[str]] = ()):  # fmt: skip
        self.path = Path(out)
        self.files = [(self.path / f"{name}.json", self.path / f"{name}.png") for name in unique_names(paths)]
        refuse_overwriting([f for pair in self.files for f in pair], [*paths, *protect])
        self.path.mkdir(parents=True, exist_ok=True)

    def write(self, item: ImageFile, record: dict[str, Any], figure: Image.Image) -> None:
        """The explanation of `item` as JSON (`record`) and its picture (`figure`)."""
        record_path, figure_path = self.files[item.index]
        record_path.write_text(json.dumps(record, indent=2))
        figure.save(figure_path, format="PNG")

    def write_error(self, item: ImageFile) -> None:
        """The error entry of an input that could not be read: its path and the reason, as JSON."""
        record_path, _ = self.files[item.index]
        record_path.write_text(json.dumps({"image_id": item.path, "error": item.error}, indent=2))


def finish(failed: Sequence[ImageFile], total: int) -> int:
    """After explaining `total` inputs of which `failed` could not be read: the exit status.

    Each failure was reported as it came (`cannot read PATH: REASON`, on standard error); this adds the
    count. Returns 0 when every file was explained, `EXIT_SOME_FAILED` when some could not be read.

    Raises:
        FileNotFoundError: none could be read (the command's one `error:` line).
    """
    if not failed:
        return 0
    if len(failed) == total:
        raise FileNotFoundError(f"none of the {total} files could be read as an image (listed above)")
    sys.stderr.write(f"explained {total - len(failed)} images; {len(failed)} files could not be read (listed above)\n")
    return EXIT_SOME_FAILED


def report_error(item: ImageFile) -> None:
    """The error entry on standard error, as `pipnet predict` writes it."""
    sys.stderr.write(f"cannot read {item.printable}: {item.error}\n")
