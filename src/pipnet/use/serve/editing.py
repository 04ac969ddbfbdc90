"""Editing a PIP-Net by hand: switch prototypes off for every class, or for one class, and back on.

A prototype switched off for every class uses the model's own mechanism (`PIPNet.disable_prototypes`,
recorded in `config.json`). Switching one off for one class sets that class's weight for it to zero in
the edited copy; the weight it had is kept, so the edit can be undone, and is written to `edits.json`
beside the saved model. Loading a folder with an `edits.json` restores the unedited model and the edits,
so an edited model can be served, edited further, or taken back to where it came from.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from pipnet.explanation.explain import class_name
from pipnet.model import ModelLoadError, PIPNet
from pipnet.model.run_folder import RunFolder, write_model_folder

__all__ = ["ClassEdit", "ModelEditor", "safe_folder_name"]


@dataclass(frozen=True)
class ClassEdit:
    """One classifier weight set to zero: prototype `prototype` no longer counts for class `class_index`."""

    class_index: int
    class_name: str
    prototype: int
    weight: float  # the weight it had before the edit


class ModelEditor:
    """An edited copy of a PIP-Net beside the unedited one; the unedited model is never changed.

    Args:
        model: the unedited model.
        source: the folder it was loaded from (recorded in `edits.json`).
    """

    def __init__(self, model: PIPNet, source: str | Path | None = None):
        self.original = model
        self.model = _head_copy(model)
        self.source = str(source) if source is not None else None
        self.data_config: str | None = None  # the config whose data the model was explored with, if any
        self.class_edits: dict[tuple[int, int], ClassEdit] = {}  # (class, prototype) -> edit
        self.version = 0  # increases with every change, for caches

    @classmethod
    def from_folder(cls, directory: str | Path, device: str | torch.device = "cpu") -> ModelEditor:
        """Load a saved model; when it was saved edited, start from its unedited form with its edits applied."""
        directory = Path(directory)
        saved = PIPNet.from_pretrained(directory).to(device)
        record = read_edits(directory)
        original = copy.deepcopy(saved)
        original.enable_prototypes(list(saved.config.disabled_prototypes))
        with torch.no_grad():
            for e in record["class_edits"]:
                original.classifier.weight[e.class_index, e.prototype] = e.weight
        editor = cls(original, source=record["source"] or directory)
        editor.data_config = record["data_config"]
        editor.switch_off(saved.config.disabled_prototypes)
        for e in record["class_edits"]:
            editor.switch_off([e.prototype], e.class_index)
        return editor

    def fork(self) -> ModelEditor:
        """A new editor of the same unedited model with the same edits, to be edited independently of this one."""
        other = ModelEditor(self.original, self.source)
        other.data_config = self.data_config
        other.switch_off(self.disabled)
        for c, p in self.class_edits:
            other.switch_off([p], c)
        other.version = 0
        return other

    # ---- edits ------------------------------------------------------------------------------------

    @property
    def disabled(self) -> list[int]:
        return list(self.model.config.disabled_prototypes)

    @property
    def edited(self) -> bool:
        return bool(self.disabled or self.class_edits)

    def switch_off(self, prototypes: list[int], class_index: int | None = None) -> None:
        """Switch prototypes off for every class (`class_index` None) or for one class."""
        self._check(prototypes, class_index)
        if class_index is None:
            self.model.disable_prototypes(prototypes)
        else:
            weight = self.original.classifier.weight.detach()
            for p in prototypes:
                key = (class_index, int(p))
                if key not in self.class_edits:
                    self.class_edits[key] = ClassEdit(
                        class_index, class_name(self.model, class_index), int(p), float(weight[key])
                    )
            self._apply_class_edits()
        self.version += 1

    def switch_on(self, prototypes: list[int], class_index: int | None = None) -> None:
        """Undo `switch_off` for these prototypes (for every class, or for one class)."""
        self._check(prototypes, class_index)
        if class_index is None:
            self.model.enable_prototypes(prototypes)
        else:
            for p in prototypes:
                self.class_edits.pop((class_index, int(p)), None)
            self._apply_class_edits()
        self.version += 1

    def reset(self) -> None:
        """Undo every edit."""
        self.model.enable_prototypes(self.disabled)
        self.class_edits.clear()
        self._apply_class_edits()
        self.version += 1

    def status(self, prototype: int, class_index: int | None = None) -> str:
        """`"off"` (for every class), `"off for class"` (`class_index` given and edited) or `"on"`."""
        if prototype in self.model.config.disabled_prototypes:
            return "off"
        if class_index is not None and (class_index, prototype) in self.class_edits:
            return "off for class"
        return "on"

    def _check(self, prototypes: list[int], class_index: int | None) -> None:
        P, C = self.model.num_prototypes, self.model.num_classes
        bad = [p for p in prototypes if not 0 <= int(p) < P]
        if bad:
            raise IndexError(f"prototype {bad[0]} does not exist (0..{P - 1})")
        if class_index is not None and not 0 <= class_index < C:
            raise IndexError(f"class {class_index} does not exist (0..{C - 1})")

    def _apply_class_edits(self) -> None:
        with torch.no_grad():
            weight = self.model.classifier.weight
            weight.copy_(self.original.classifier.weight)
            for c, p in self.class_edits:
                weight[c, p] = 0.0

    # ---- saving -------------------------------------------------------------------------------------

    def record(self) -> dict:
        """What `edits.json` holds: where the model came from and the per-class edits.

        The prototypes switched off for every class are not repeated here: the saved model's `config.json`
        (`disabled_prototypes`) is their one record. Files written before this held a copy; it is ignored.
        """
        edits = sorted(self.class_edits.values(), key=lambda e: (e.class_index, e.prototype))
        return {"source": self.source, "data_config": self.data_config, "class_edits": [asdict(e) for e in edits]}

    def save(self, directory: str | Path, *, edit_log: list[dict] | None = None,
             inherited_from: str | Path | None = None, detectors=None) -> Path:
        """Write the edited model (`model.safetensors`, `config.json`, `edits.json`) to a NEW folder, all or nothing.

        Args:
            directory: the new folder.
            edit_log: records for its `edits.jsonl` (`pipnet.train.refit.append_edits`), if any.
            inherited_from: a model folder whose `edits.jsonl` comes first.
            detectors: the edited model's [StoredDetectors][pipnet.evaluation.detectors.StoredDetectors]
                (fitted again: edits change the scores), or one saying it has none.

        Raises:
            FileExistsError: `directory` exists already (nothing is ever overwritten).
        """
        from pipnet.train.refit import append_edits

        with write_model_folder(directory) as tmp:
            self.model.save_pretrained(tmp)
            RunFolder(tmp).edits.write_text(json.dumps(self.record(), indent=2))
            if edit_log is not None:
                append_edits(tmp, edit_log, inherited_from=inherited_from)
            if detectors is not None:
                detectors.save(tmp)
        return Path(directory)


def _head_copy(model: PIPNet) -> PIPNet:
    """A copy of `model` whose scoring sheet (classifier) and prototype mask are its own; every other tensor
    is shared with `model` (edits change only those two, and nothing ever changes the shared ones), so an
    edited copy costs kilobytes, not a second backbone."""
    own = {id(t) for t in [*model.classifier.parameters(), *model.classifier.buffers(), model.prototype_mask]}
    memo = {id(t): t for t in [*model.parameters(), *model.buffers()] if id(t) not in own}
    return copy.deepcopy(model, memo)


def read_edits(directory: str | Path) -> dict:
    """`edits.json` of a saved model: `source`, `data_config` (str or None) and `class_edits` (ClassEdit).

    A `disabled_prototypes` list in files written by earlier versions is ignored: the model's `config.json`
    holds the same list and is the one that is applied.
    """
    folder = RunFolder(directory)
    raw = folder.read_edits()
    try:
        return {
            "source": raw.get("source"),
            "data_config": raw.get("data_config"),
            "class_edits": [ClassEdit(**e) for e in raw.get("class_edits", [])],
        }
    except (TypeError, AttributeError) as e:
        raise ModelLoadError(f"{folder.edits} is not a valid record of edits: {e}") from e


def safe_folder_name(name: str, max_length: int = 80) -> str:
    """A folder name typed by a user, reduced to letters, digits, `-`, `_` and single inner dots.

    Raises:
        ValueError: nothing usable is left.
    """
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name.strip())
    cleaned = re.sub(r"[-.]*-[-.]*", "-", cleaned)  # a run of dots and dashes with a dash: one dash
    cleaned = re.sub(r"\.{2,}", ".", cleaned).strip(".-")[:max_length].rstrip(".-")
    if not cleaned:
        raise ValueError("give the new model folder a name (letters, digits, '-', '_' or '.')")
    return cleaned
