"""The files the commands write: one name per input path, never an input overwritten, cells a spreadsheet
would run escaped.

`unique_names` gives each input file a name that no other input of the same run gets (`a/x.png`,
`b/x.png` and `a/x.jpg` get three); `refuse_overwriting` stops a command before it writes over one
of its inputs (an image, a file of the model folder: `model_files`); `spreadsheet_safe` is the OWASP rule against
formula injection for a CSV cell (a file named `=HYPERLINK(...).png` is text, not a formula, when the
table is opened in a spreadsheet).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from pipnet.core.utils import FORMULA_STARTS, spreadsheet_safe
from pipnet.model.run_folder import RunFolder

__all__ = ["FORMULA_STARTS", "model_files", "refuse_overwriting", "spreadsheet_safe", "unique_names"]

def unique_names(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """A name per input path, different for every path of `paths` (without a case difference counting).

    The rule: the file's stem (`x` for `a/x.png`); where inputs share it, the file name with its suffix
    (`x.png`, `x.jpg`); where they still share that, as many folders above it as tell them apart, joined by
    `_` (`a_x.png`, `b_x.png`); and where nothing does (one path given twice), `-2`, `-3`... in the
    order given. So a name stays as short as the inputs allow, and a single file is named by its stem.

    Examples:
        >>> unique_names(["a/x.png", "b/x.png", "a/x.jpg", "b/y.png"])
        ['a_x.png', 'b_x.png', 'x.jpg', 'y']
    """
    parts = [Path(os.path.abspath(p)).parts for p in paths]
    full = ["/".join(p).casefold() for p in parts]
    levels = [0] * len(paths)

    def name(i: int) -> str:
        if levels[i] == 0:
            return Path(parts[i][-1]).stem or parts[i][-1]
        return "_".join(parts[i][-levels[i]:])

    while True:
        groups: dict[str, list[int]] = {}
        for i in range(len(paths)):
            groups.setdefault(name(i).casefold(), []).append(i)
        clashes = [i for members in groups.values() if len({full[i] for i in members}) > 1  # not one path given twice
                   for i in members if levels[i] < len(parts[i]) - 1]  # fmt: skip
        if not clashes:
            break
        for i in clashes:
            levels[i] += 1
    names, seen = [], {}
    for i in range(len(paths)):
        base = name(i)
        seen[base.casefold()] = seen.get(base.casefold(), 0) + 1
        names.append(base if seen[base.casefold()] == 1 else f"{base}-{seen[base.casefold()]}")
    return names


def _identity(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:  # does not exist (yet), or cannot be looked at
        return None
    return info.st_dev, info.st_ino


def model_files(model_dir: str | os.PathLike[str]) -> list[Path]:
    """The files of a model folder (or run folder) that commands read: the weights and their config, the
    training config, history and checkpoint, the thresholds, the knn detector, the edits and edit log, and
    `metrics.json`. Not the outputs that commands rewrite there (`evaluation.json`, `report.html`, pictures)."""
    folder = RunFolder(Path(model_dir))
    return [folder.weights, folder.model_config, folder.config, folder.history, folder.checkpoint, folder.metrics,
            folder.thresholds, folder.novelty, folder.novelty_tensors, folder.edits, folder.edit_log]  # fmt: skip


def refuse_overwriting(outputs: Iterable[str | os.PathLike[str]], inputs: Iterable[str | os.PathLike[str]],
                       flag: str = "--out") -> None:  # fmt: skip
    """Raise before anything is written when one of `outputs` is one of `inputs`.

    Two paths are one file when they are the same after following links, or name the same file on disk
    (a hard link, another spelling of the same folder).

    Args:
        outputs: the files a command is about to write.
        inputs: the files it reads (images); a folder stands for a model folder's own files (`model_files`),
            not every file in it, so that a command's outputs of an earlier run there are no inputs.
        flag: the option that chose the outputs, for the message.

    Raises:
        FileExistsError: with a one-line message naming the output, the input and the option.
    """
    files: list[Path] = []
    for p in map(Path, inputs):
        files += model_files(p) if p.is_dir() else [p]
    by_path = {os.path.realpath(f): f for f in files}
    by_identity = {key: f for f in files if (key := _identity(f)) is not None}
    for out in outputs:
        hit = by_path.get(os.path.realpath(out)) or by_identity.get(_identity(out))  # type: ignore[arg-type]
        if hit is not None:
            shown = os.fsencode(str(hit)).decode("utf-8", errors="backslashreplace")
            raise FileExistsError(f"{flag} would write over the input {shown}: choose another {flag}")
