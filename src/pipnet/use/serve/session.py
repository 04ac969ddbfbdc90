"""What the web page works on: the model being edited, its data, and the image being explained.

An :class:`Explorer` holds a :class:`~pipnet.use.serve.editing.ModelEditor`, the run's data when there is one
(the training images are projected once, for the prototypes' typical patches; the test set is kept as
tensors, so that the accuracy after each edit is one quick :func:`~pipnet.evaluation.evaluate.evaluate`), and the image
on show. Explanations, accuracies and pictures are cached until the model or the image changes. Nothing
here knows about HTTP; the web app serialises calls with :attr:`Explorer.lock`.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, TensorDataset

from pipnet.data import load_image
from pipnet.core.data_config import DataConfig
from pipnet.data.errors import ImageLoadError
from pipnet.evaluation.evaluate import Metrics, evaluate
from pipnet.explanation.explain import ImageExplanation, explain
from pipnet.model import PIPNet
from pipnet.evaluation.inference import build_model_data, choose_device, eval_mode, fit_data_to_model, input_transform
from pipnet.evaluation.projection import Projection, project
from pipnet.explanation.render.png import fit, prototype_row
from pipnet.train.refit import RefitResult, append_edits, edit_record, read_edit_log, refit, save_refit
from pipnet.model.run_folder import RunFolder, config_file
from pipnet.use.serve.editing import ModelEditor, safe_folder_name
from pipnet.evaluation.novelty import load_detector
from pipnet.evaluation.thresholds import Thresholds, describe_data, load_thresholds, warn_without_thresholds

__all__ = ["ALLOWED_FORMATS", "Explorer", "Shown", "UploadError"]

log = logging.getLogger(__name__)
T = TypeVar("T")

ALLOWED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")
DISPLAY_PX = 512  # images on show are kept at most this large (the model input is made from the full image)
TEST_CACHE_BYTES = 512 * 2**20  # a test set up to this size is kept in memory as tensors


class UploadError(ValueError):
    """An uploaded file is not a usable image; the message is for the person who sent it."""


@dataclass(frozen=True, eq=False)
class Shown:
    """The image being explained."""

    serial: int  # a new number for every image shown
    title: str
    image: Image.Image  # RGB, at most DISPLAY_PX on its longer side, for drawing
    x: torch.Tensor  # (3, S, S) the model input
    maps: torch.Tensor  # (P, h, w) its prototype maps (edits never change them)
    split: str | None = None  # data set and index when picked from the data
    index: int | None = None


@dataclass(frozen=True, eq=False)
class ExplorerData:
    """The data of a run, as the page uses it."""

    config: DataConfig
    config_path: Path | None
    classes: list[str]
    picker: dict[str, Dataset]  # name -> data set whose images can be picked by index (items (x, label))
    projection_set: Dataset
    projection: Projection
    test: Dataset | None  # for the accuracy


class Explorer:
    """One model to explore and edit, with its data and the image on show.

    Args:
        model_dir: a saved model (``model.safetensors`` + ``config.json``), e.g. a run folder.
        data: a training config YAML or a run folder whose ``config.yaml`` gives the data, or a ``DataConfig``;
            default: ``model_dir/config.yaml`` when present (or the data an edited model was explored with).
        out_dir: where edited models are saved (default: beside ``model_dir``).
        device: where to run the model (:func:`pipnet.evaluation.inference.choose_device`; default: CUDA when present).
        gallery_k: typical patches shown per prototype.
    """

    def __init__(
        self,
        model_dir: str | Path,
        data: str | Path | DataConfig | None = None,
        *,
        out_dir: str | Path | None = None,
        device: str | torch.device | None = None,
        gallery_k: int = 8,
    ):
        self.model_dir = Path(model_dir).resolve()
        self.device = choose_device(device)
        self.editor = ModelEditor.from_folder(self.model_dir, self.device)
        self.out_dir = Path(out_dir).resolve() if out_dir is not None else self.model_dir.parent
        self.gallery_k = gallery_k
        self.lock = threading.RLock()
        self.data = self._load_data(data)
        self.editor.data_config = str(self.data.config_path) if self.data and self.data.config_path else None
        self.transform = input_transform(self.model, fallback_preset=self.data.config.preset if self.data else "default")
        self.shown: Shown | None = None
        self._serial = 0
        self._cache: dict[tuple, object] = {}
        self.thresholds: Thresholds | None = load_thresholds(self.model_dir, self.model.num_classes)
        if self.thresholds is None:
            warn_without_thresholds(str(self.model_dir))
        self.novelty = load_detector(self.model_dir, self.model.num_prototypes)  # knn OoD detector, if stored
        self.history = read_edit_log(self.model_dir)  # the loaded model's edit log (edits.jsonl)
        self.quality = _read_quality(self.model_dir)  # metrics.json's report card, for the gallery
        self.session_edits: list[dict] = []  # this session's edits, written into every folder it saves
        self.last_refit: tuple[Path, RefitResult] | None = None

    @property
    def model(self) -> PIPNet:
        """The edited model (the unedited one is ``editor.original``)."""
        return self.editor.model

    def cached(self, key: tuple, make: Callable[[], T]) -> T:
        """``make()``, computed once per ``key`` (keys that name an image or a model version go stale, not wrong)."""
        if key not in self._cache:
            value = make()  # may forget other entries first
            self._cache[key] = value
        return self._cache[key]

    def _forget(self, kind: str) -> None:
        """Drop the cached entries of one kind (the first element of their keys)."""
        self._cache = {k: v for k, v in self._cache.items() if k[0] != kind}

    # ---- data ----------------------------------------------------------------------------------------

    def _load_data(self, data: str | Path | DataConfig | None) -> ExplorerData | None:
        config_path, config = None, data if isinstance(data, DataConfig) else None
        if config is None:
            config_path = _data_config_path(self.model_dir, data, self.editor.data_config)
            if config_path is None:
                log.info("no data: give --data (a run folder or training config) for the gallery and test accuracy")
                return None
            from pipnet.core.train_config import load_config

            config = load_config(str(config_path)).data
        config = fit_data_to_model(config, self.model)
        bundle = build_model_data(config, self.model)
        log.info("projecting %d training images for the prototype gallery", len(bundle.projection))
        projection = project(self.editor.original, bundle.projection, k=self.gallery_k, device=self.device)
        picker = {"test": bundle.test} if bundle.test is not None else {}
        picker["train"] = bundle.projection
        return ExplorerData(
            config=config,
            config_path=config_path,
            classes=list(bundle.classes),
            picker=picker,
            projection_set=bundle.projection,
            projection=projection,
            test=_in_memory(bundle.test) if bundle.test is not None else None,
        )

    # ---- the image on show -------------------------------------------------------------------------

    def show_upload(self, filename: str, content: bytes) -> Shown:
        """Decode an uploaded file (PNG, JPEG, GIF, BMP, WebP or TIFF) and show it.

        Raises:
            UploadError: not one of those formats, truncated or corrupt, or too many pixels.
        """
        if not content:
            raise UploadError("the file is empty")
        _check_format(content)
        with tempfile.TemporaryDirectory(prefix="pipnet-upload-") as tmp:
            path = Path(tmp) / "upload"
            path.write_bytes(content)
            try:
                image = load_image(path)
            except ImageLoadError as e:
                raise UploadError(f"cannot read this image: {e.reason}") from e
        return self._show(f"uploaded image {filename[:80]}", image, self.transform(image))

    def show_item(self, split: str, index: int) -> Shown:
        """Show image ``index`` of one of the data sets (``test`` or ``train``)."""
        if self.data is None or split not in self.data.picker:
            raise IndexError(f"there is no {split!r} data set to pick from")
        dataset = self.data.picker[split]
        if not 0 <= index < len(dataset):
            raise IndexError(f"the {split} set has images 0 to {len(dataset) - 1}, not {index}")
        x, label = dataset[index]
        title = f"{split} image {index} (class {self.data.classes[label]})"
        return self._show(title, dataset.raw_image(index), x, split, index)

    def _show(self, title: str, image: Image.Image, x: torch.Tensor, split=None, index=None) -> Shown:
        with eval_mode(self.model, self.device) as dev:
            maps = self.model.prototype_maps(self.model.forward_features(x[None].to(dev)))[0].float().cpu()
        self._serial += 1
        self._forget("explain")
        self._forget("pictures")
        display = fit(image, DISPLAY_PX) if max(image.size) > DISPLAY_PX else image.convert("RGB")
        self.shown = Shown(self._serial, title, display, x, maps, split, index)
        return self.shown

    def explanations(self, top_classes: int = 3) -> tuple[ImageExplanation, ImageExplanation] | None:
        """(edited model's, unedited model's) explanation of the image on show, or None when there is none."""
        shown = self.shown
        if shown is None:
            return None

        def both() -> tuple[ImageExplanation, ImageExplanation]:
            self._forget("explain")
            x, ids = shown.x[None], [shown.title]
            edited = explain(self.model, x, top_classes=top_classes, image_ids=ids)[0]
            return edited, explain(self.editor.original, x, top_classes=top_classes, image_ids=ids)[0]

        return self.cached(("explain", shown.serial, self.editor.version, top_classes), both)

    # ---- the data's view of the model ----------------------------------------------------------------

    def accuracy(self) -> tuple[Metrics, Metrics] | None:
        """(unedited, edited) metrics on the test set, or None without one."""
        test = self.data.test if self.data is not None else None
        if test is None:
            return None
        original = self.cached(("original metrics",), lambda: evaluate(self.editor.original, test, device=self.device))
        if not self.editor.edited:
            return original, original

        def edited() -> Metrics:
            self._forget("metrics")
            return evaluate(self.model, test, device=self.device)

        return original, self.cached(("metrics", self.editor.version), edited)

    def prototype_patches_png(self, prototype: int) -> bytes | None:
        """PNG of a prototype's most typical patches in the training images, or None without data."""
        if self.data is None or not 0 <= prototype < self.model.num_prototypes:
            return None
        data = self.data

        def png() -> bytes:
            row = prototype_row(data.projection, data.projection_set, prototype, self.gallery_k, 48, label=False)
            buffer = io.BytesIO()
            row.save(buffer, format="PNG")
            return buffer.getvalue()

        return self.cached(("patches", prototype), png)

    # ---- the edit log and the refit ---------------------------------------------------------------------

    def log_edit(self, action: str, prototypes: list[int], class_index: int | None = None, reason: str | None = None) -> None:
        """Remember an edit of this session for ``edits.jsonl`` (``switch_off``, ``switch_on`` or ``reset``)."""
        self.session_edits.append(
            edit_record(action, prototypes=prototypes, class_index=class_index, reason=reason, tool="pipnet serve")
        )

    def refit(self, name: str = "", reason: str | None = None) -> tuple[Path, RefitResult]:
        """Re-fit the scoring sheet without the prototypes switched off, and save it to a new folder.

        Prototypes switched off for every class are switched off in the new model (weight 0); those
        switched off for one class keep weight 0 for it. The refit starts from the unedited model, so its
        "before" accuracy is the unedited model's. The folder gets the data's config, re-set thresholds and
        the edit log (the loaded model's, this session's edits, and the refit with its accuracies).

        Raises:
            ValueError: no data (the refit needs the training images and a test set), or no usable name.
            FileExistsError: the folder exists.
        """
        if self.data is None or self.data.test is None:
            raise ValueError("the refit needs the run's training and test images: start with --data RUN_OR_CONFIG")
        path = self.out_dir / safe_folder_name(name or self.suggested_name("refit"))
        if path.exists():
            raise FileExistsError(f"{path} exists already: choose another name")
        editor, keep_zero = self.editor, None
        if editor.class_edits:
            keep_zero = torch.zeros(self.model.num_classes, self.model.num_prototypes, dtype=torch.bool)
            for c, p in editor.class_edits:
                keep_zero[c, p] = True
        result = refit(editor.original, self.data.projection_set, self.data.test, editor.disabled, keep_zero=keep_zero,
                       device=self.device)  # fmt: skip
        config = self.data.config
        record = edit_record("refit", prototypes=result.disabled, reason=reason, tool="pipnet serve",
                             source=str(self.model_dir), **result.summary())  # fmt: skip
        save_refit(
            result, path, source=self.model_dir, test_data=self.data.test, records=[*self.session_edits, record],
            config_path=self.data.config_path, tpr=self.thresholds.tpr if self.thresholds is not None else 0.95,
            data_description=describe_data(config.source, config.root, "test", len(self.data.test)), device=self.device,
        )  # fmt: skip
        self.last_refit = (path, result)
        return path, result

    # ---- saving ------------------------------------------------------------------------------------

    def suggested_name(self, kind: str = "edited") -> str:
        """``<model>-<kind>-N`` with the first N that is not taken in the output folder."""
        n = 1
        while (self.out_dir / f"{self.model_dir.name}-{kind}-{n}").exists():
            n += 1
        return f"{self.model_dir.name}-{kind}-{n}"

    def save(self, name: str) -> Path:
        """Save the edited model to a new folder ``out_dir/<name, sanitised>``.

        Raises:
            ValueError: no usable name.
            FileExistsError: that folder exists (nothing is overwritten).
        """
        path = self.out_dir / safe_folder_name(name or self.suggested_name())
        if path.exists():
            raise FileExistsError(f"{path} exists already: choose another name")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        saved = self.editor.save(path)  # no thresholds.json: edits change the scores (`pipnet evaluate` sets new ones)
        append_edits(saved, self.session_edits, inherited_from=self.model_dir)
        return saved


def _data_config_path(model_dir: Path, data: str | Path | None, recorded: str | None) -> Path | None:
    """The config YAML whose data to use: ``data`` (a file, or a run folder), else the model's own."""
    if data is not None:
        path = config_file(data)
        if not path.is_file():
            raise FileNotFoundError(f"no data config at {path} (give a run folder or a training config YAML)")
        return path
    for candidate in (RunFolder(model_dir).config, Path(recorded) if recorded else None):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def _read_quality(model_dir: Path) -> dict | None:
    """The ``quality`` block of ``model_dir/metrics.json`` (the prototype report card), or None."""
    path = model_dir / "metrics.json"
    try:
        quality = json.loads(path.read_text(encoding="utf-8")).get("quality") if path.is_file() else None
    except (OSError, ValueError, AttributeError) as e:
        log.warning("cannot read the report card of %s: %s", path, e)
        return None
    return quality if isinstance(quality, dict) else None


def _in_memory(dataset: Dataset, batch_size: int = 64) -> Dataset:
    """The (x, label) items as one TensorDataset when they fit in ``TEST_CACHE_BYTES``, else ``dataset``."""
    if len(dataset) * dataset[0][0].numel() * 4 > TEST_CACHE_BYTES:
        return dataset
    xs, ys = zip(*[(x, torch.as_tensor(y)) for x, y in DataLoader(dataset, batch_size=batch_size)])
    return TensorDataset(torch.cat(xs), torch.cat(ys))


def _check_format(content: bytes) -> None:
    """Refuse anything but the common image formats before decoding (no PostScript, no PDF, ...)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(content), formats=ALLOWED_FORMATS):
                pass
    except Image.UnidentifiedImageError as e:
        raise UploadError("not an image: upload a PNG, JPEG, GIF, BMP, WebP or TIFF file") from e
    except Image.DecompressionBombError:
        pass  # a known format with too many pixels: load_image says so
    except (OSError, SyntaxError, ValueError) as e:
        raise UploadError(f"cannot read this image: {e}") from e
