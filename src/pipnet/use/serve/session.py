"""What the web page works on: the model, its data, and one `Visitor` state per person using the page.

An `Explorer` holds what every visitor shares and nobody changes: the loaded model, the run's data when
there is one (the training images are projected once, for the prototypes' typical patches; the test set is
kept as tensors, so that the accuracy after each edit is one quick [`evaluate`][pipnet.evaluation.evaluate.evaluate]), the
thresholds and the edit history. A `Visitor` holds one person's edits (a
`ModelEditor` whose edited model shares every tensor but the scoring sheet's
with the loaded one, so a visitor costs kilobytes, not a model), the image on show, this session's edit log
and the messages waiting for the page that shows them. `Visitors` keeps a bounded number of them,
forgets those idle too long, and when full forgets first those who lose least (a client that never came
back with its cookie, then a visitor without unsaved edits). Nothing here knows about HTTP; the web app gives
each browser its visitor by a cookie and holds `Visitor.lock` while working on one.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
import secrets
import threading
import time
from collections import OrderedDict
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
from pipnet.evaluation.inference import build_model_data, choose_device, eval_mode, fit_data_to_model
from pipnet.evaluation.projection import Projection, project
from pipnet.explanation.render.png import fit, prototype_row
from pipnet.train.refit import RefitResult, append_edits, edit_record, read_edit_log, refit, save_refit
from pipnet.model.run_folder import RunFolder, config_file, remove_partial_folders
from pipnet.use.serve.editing import ModelEditor, safe_folder_name
from pipnet.core.utils import release_free_memory
from pipnet.evaluation.detectors import StoredDetectors, describe_data, fit_detectors, load_detectors
from pipnet.explanation.predictor import Predictor

__all__ = ["Explorer", "Shown", "UploadError", "Visitor", "Visitors"]

log = logging.getLogger(__name__)
T = TypeVar("T")

DISPLAY_PX = 512  # images on show are kept at most this large (the model input is made from the full image)
TEST_CACHE_BYTES = 512 * 2**20  # a test set up to this size is kept in memory as tensors
MAX_NOTICES = 16  # messages kept per visitor for pages not yet loaded
GRACE_SECONDS = 5.0  # a browser comes back with its new cookie within this (the redirect after its first action)
FORGOTTEN_KEPT = 4096  # keys of visitors forgotten with work, remembered to tell them why


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
    """One model to explore and edit, with its data: what every visitor of the page shares, never changed by them.

    Args:
        model_dir: a saved model (`model.safetensors` + `config.json`), e.g. a run folder.
        data: a training config YAML or a run folder whose `config.yaml` gives the data, or a `DataConfig`;
            default: `model_dir/config.yaml` when present (or the data an edited model was explored with).
        out_dir: where edited models are saved (default: beside `model_dir`).
        device: where to run the model ([`pipnet.evaluation.inference.choose_device`][pipnet.evaluation.inference.choose_device]; default: CUDA when present).
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
        detector: str = "auto",
        precision: str = "auto",
    ):
        self.model_dir = Path(model_dir).resolve()
        self.device = choose_device(device)
        self.editor = ModelEditor.from_folder(self.model_dir, self.device)  # the loaded model, with its saved edits
        for model in (self.editor.original, self.editor.model):  # for good: visitors' threads share these modules,
            model.eval()  # and eval_mode's save-and-restore of training flags is not safe across threads
        self.out_dir = Path(out_dir).resolve() if out_dir is not None else self.model_dir.parent
        self.gallery_k = gallery_k
        self.data = self._load_data(data)
        self.editor.data_config = str(self.data.config_path) if self.data and self.data.config_path else None
        self.detectors = load_detectors(self.model_dir, self.model)
        # The verdicts' owner: the same predictor as pipnet predict and explain (the model as loaded).
        self.predictor = Predictor(self.editor.original, self.detectors, detector=detector, precision=precision,
                                   device=self.device)
        self.transform = self.predictor.transform
        self._cache: dict[tuple, object] = {}  # what every visitor shares (the unedited model's numbers, patches)
        self._cache_lock = threading.Lock()
        self._names_lock = threading.Lock()
        self._reserved: set[Path] = set()  # folders being written (a refit runs for seconds)
        self.history = read_edit_log(self.model_dir)  # the loaded model's edit log (edits.jsonl)
        self.quality = _read_quality(self.model_dir)  # metrics.json's report card, for the gallery
        remove_partial_folders(self.out_dir)  # what killed saves left behind

    @property
    def model(self) -> PIPNet:
        """The model as loaded (with the edits it was saved with); visitors edit their own copies."""
        return self.editor.model

    def new_visitor(self) -> Visitor:
        """A new visitor's state: the model as loaded, nothing on show, no messages."""
        return Visitor(secrets.token_urlsafe(32), self.editor.fork())

    def cached(self, key: tuple, make: Callable[[], T]) -> T:
        """`make()`, computed once per `key` for every visitor (keys name the unedited model or a prototype)."""
        with self._cache_lock:
            if key in self._cache:
                return self._cache[key]
        value = make()  # outside the lock: two visitors may compute it at once, and get the same
        with self._cache_lock:
            return self._cache.setdefault(key, value)

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

    def show_upload(self, visitor: Visitor, filename: str, content: bytes) -> Shown:
        """Decode an uploaded file (PNG, JPEG, GIF, BMP, WebP or TIFF) and show it to `visitor`.

        A large image is reduced while decoding to what the page needs (the model input and the display).

        Raises:
            UploadError: not one of those formats, truncated or corrupt, or more pixels than the limit
                (`pipnet.data.images.set_max_pixels`).
        """
        if not content:
            raise UploadError("the file is empty")
        with tempfile.TemporaryDirectory(prefix="pipnet-upload-") as tmp:
            path = Path(tmp) / "upload"
            path.write_bytes(content)
            try:
                image = load_image(path, reduce_to=max(DISPLAY_PX, self.model.config.image_size))
            except ImageLoadError as e:
                reason = e.reason
                if reason.startswith("too many pixels"):
                    reason += " (pipnet serve --max-megapixels sets the limit)"
                raise UploadError(reason if reason.startswith("not an image") else f"cannot read this image: {reason}") from e
            finally:
                release_free_memory()  # a large image's pixels were freed: give the pages back to the system
        return self._show(visitor, f"uploaded image {filename[:80]}", image, self.transform(image))

    def show_item(self, visitor: Visitor, split: str, index: int) -> Shown:
        """Show image `index` of one of the data sets (`test` or `train`) to `visitor`."""
        if self.data is None or split not in self.data.picker:
            raise IndexError(f"there is no {split!r} data set to pick from")
        dataset = self.data.picker[split]
        if not 0 <= index < len(dataset):
            raise IndexError(f"the {split} set has images 0 to {len(dataset) - 1}, not {index}")
        x, label = dataset[index]
        title = f"{split} image {index} (class {self.data.classes[label]})"
        return self._show(visitor, title, dataset.raw_image(index), x, split, index)

    def _show(self, visitor: Visitor, title: str, image: Image.Image, x: torch.Tensor, split=None, index=None) -> Shown:
        original = self.editor.original  # the maps do not depend on the scoring sheet: no edit changes them
        with torch.inference_mode():
            maps = original.prototype_maps(original.forward_features(x[None].to(self.device)))[0].float().cpu()
        display = fit(image, DISPLAY_PX) if max(image.size) > DISPLAY_PX else image.convert("RGB")
        visitor.serial += 1
        visitor.cache = {k: v for k, v in visitor.cache.items() if k[0] == "metrics"}
        visitor.shown = Shown(visitor.serial, title, display, x, maps, split, index)
        return visitor.shown

    def explanations(self, visitor: Visitor, top_classes: int = 3) -> tuple[ImageExplanation, ImageExplanation] | None:
        """(visitor's edited model's, unedited model's) explanation of the image on show, or None."""
        shown = visitor.shown
        if shown is None:
            return None
        x, ids = shown.x[None], [shown.title]
        editor = visitor.editor
        edited = visitor.cached(("explain", shown.serial, editor.version, top_classes),
                                lambda: explain(editor.model, x, top_classes=top_classes, image_ids=ids)[0], one_of_kind=True)  # fmt: skip
        original = visitor.cached(("explain original", shown.serial, top_classes),
                                  lambda: explain(editor.original, x, top_classes=top_classes, image_ids=ids)[0])  # fmt: skip
        return edited, original

    # ---- the data's view of the model ----------------------------------------------------------------

    def accuracy(self, visitor: Visitor) -> tuple[Metrics, Metrics] | None:
        """(unedited, visitor's edited) metrics on the test set, or None without one."""
        test = self.data.test if self.data is not None else None
        if test is None:
            return None
        editor = visitor.editor
        original = self.cached(("original metrics",), lambda: evaluate(editor.original, test, device=self.device))
        if not editor.edited:
            return original, original
        return original, visitor.cached(("metrics", editor.version), lambda: evaluate(editor.model, test, device=self.device),
                                        one_of_kind=True)

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

    # ---- the refit and saving ------------------------------------------------------------------------------

    def reserve(self, name: str, kind: str) -> Path:
        """The folder `out_dir/<name, sanitised>` (or the next free suggested name), held until `release`.

        Raises:
            ValueError: no usable name.
            FileExistsError: the folder exists, or another visitor is writing it.
        """
        with self._names_lock:
            path = self.out_dir / safe_folder_name(name or self._free_name(kind))
            if path.exists() or path in self._reserved:
                raise FileExistsError(f"{path} exists already: choose another name")
            self._reserved.add(path)
            return path

    def release(self, path: Path) -> None:
        with self._names_lock:
            self._reserved.discard(path)

    def refit(self, visitor: Visitor, path: Path, reason: str | None = None) -> tuple[Path, RefitResult]:
        """Re-fit the scoring sheet without the visitor's switched-off prototypes, into the new folder `path`.

        Prototypes switched off for every class are switched off in the new model (weight 0); those
        switched off for one class keep weight 0 for it. The refit starts from the unedited model, so its
        "before" accuracy is the unedited model's. The folder gets the data's config, re-set thresholds and
        the edit log (the loaded model's, the visitor's edits, and the refit with its accuracies), all or
        nothing. The visitor's edits are read once, at the start (call with `Visitor.lock` held for that).

        Raises:
            ValueError: no data (the refit needs the training images and a test set).
            FileExistsError: the folder exists.
        """
        return self.refit_job(visitor, path, reason)()

    def refit_job(self, visitor: Visitor, path: Path, reason: str | None = None) -> Callable[[], tuple[Path, RefitResult]]:
        """`refit` split in two: the visitor's edits are read now; the returned function does the work."""
        if self.data is None or self.data.test is None:
            raise ValueError("the refit needs the run's training and test images: start with --data RUN_OR_CONFIG")
        editor, keep_zero = visitor.editor, None
        disabled, class_edits, session_edits = list(editor.disabled), list(editor.class_edits), list(visitor.session_edits)
        if class_edits:
            keep_zero = torch.zeros(self.model.num_classes, self.model.num_prototypes, dtype=torch.bool)
            for c, p in class_edits:
                keep_zero[c, p] = True
        return lambda: (path, self._refit(path, disabled, keep_zero, session_edits, reason))

    def _refit(self, path: Path, disabled: list[int], keep_zero, session_edits: list[dict], reason: str | None) -> RefitResult:
        original = self.editor.original
        result = refit(original, self.data.projection_set, self.data.test, disabled, keep_zero=keep_zero, device=self.device)
        config = self.data.config
        record = edit_record("refit", prototypes=result.disabled, reason=reason, tool="pipnet serve",
                             source=str(self.model_dir), **result.summary())  # fmt: skip
        save_refit(
            result, path, source=self.model_dir, test_data=self.data.test, train_data=self.data.projection_set,
            records=[*session_edits, record], config_path=self.data.config_path, tpr=self.threshold_tpr(),
            data_description=describe_data(config.source, config.root, "test", len(self.data.test)), device=self.device,
        )  # fmt: skip
        return result

    def suggested_name(self, kind: str = "edited") -> str:
        """`<model>-<kind>-N` with the first N that is not taken (nor being written) in the output folder."""
        with self._names_lock:
            return self._free_name(kind)

    def _free_name(self, kind: str) -> str:
        n = 1
        while (self.out_dir / f"{self.model_dir.name}-{kind}-{n}").exists() or (
            self.out_dir / f"{self.model_dir.name}-{kind}-{n}" in self._reserved
        ):
            n += 1
        return f"{self.model_dir.name}-{kind}-{n}"

    def save(self, visitor: Visitor, name: str) -> Path:
        """Save the visitor's edited model to a new folder `out_dir/<name, sanitised>`, all or nothing.

        Raises:
            ValueError: no usable name.
            FileExistsError: that folder exists (nothing is overwritten).
        """
        path = self.reserve(name, "edited")
        try:  # edits change the scores: the detectors are fitted again for the saved model, where the data is here
            saved = visitor.editor.save(path, edit_log=visitor.session_edits, inherited_from=self.model_dir,
                                        detectors=self._fit_detectors(visitor.editor.model))
            visitor.mark_saved()
            return saved
        finally:
            self.release(path)

    def threshold_tpr(self) -> float:
        """The TPR of the OoD thresholds of models saved from the page (the loaded model's, else 0.95)."""
        paper = self.detectors.detectors.get("paper")
        return paper.tpr if paper is not None else 0.95

    def _fit_detectors(self, model: PIPNet) -> StoredDetectors:
        """The detectors of an edited model (as `pipnet refit` fits them), or a note that it has none."""
        if self.data is None or self.data.test is None:
            return StoredDetectors(note="saved from the web page without its data (start it with --data RUN_OR_CONFIG "
                                        "to store detectors, or run `pipnet evaluate` on this folder)")
        config = self.data.config
        return fit_detectors(model, self.data.projection_set, self.data.test, tpr=self.threshold_tpr(), device=self.device,
                             description=describe_data(config.source, config.root, "test", len(self.data.test)))


class Visitor:
    """What one person using the page sees and has done: edits, the image on show, this session's edit log, messages.

    Args:
        key: the random session key (the cookie's value).
        editor: this visitor's edits of the loaded model.
    """

    def __init__(self, key: str, editor: ModelEditor):
        self.key = key
        self.editor = editor
        self.lock = threading.RLock()  # one request of this visitor at a time
        self.shown: Shown | None = None
        self.serial = 0
        self.cache: dict[tuple, object] = {}  # this visitor's explanations, accuracy and pictures
        self.session_edits: list[dict] = []  # this session's edits, written into every folder it saves
        self.notices: OrderedDict[str, str] = OrderedDict()  # id -> message, shown once, by the page that asks for it
        self._notices_lock = threading.Lock()  # not `lock`: the app reads notices without waiting for a page being drawn
        self.refit: tuple[Path, float] | None = None  # (folder, start time) while a refit or repair runs
        self.refit_kind = "refit"  # which of the two runs: "refit" or "repair"
        self.marks: dict[int, str] = {}  # prototype -> "forbid" or "keep", for the next repair
        self.repaired = None  # the last repair this visitor ran (a pipnet.use.serve.repairing.Repaired), for before/after
        self.last_seen = time.monotonic()
        self.returned = False  # a request came back with this visitor's cookie (a browser keeps it)
        self.pending = False  # the request that made this visitor is still being answered (e.g. a large upload)
        self._saved_edits = self.edit_state()  # the edits as last saved (at first: as loaded)

    def cached(self, key: tuple, make: Callable[[], T], *, one_of_kind: bool = False) -> T:
        """`make()`, computed once per `key` (emptied when a new image is shown).

        Args:
            one_of_kind: keep no other entry of this kind (the key's first element), e.g. older model versions.
        """
        if key not in self.cache:
            value = make()
            if one_of_kind:
                self.cache = {k: v for k, v in self.cache.items() if k[0] != key[0]}
            self.cache[key] = value
        return self.cache[key]

    def log_edit(self, action: str, prototypes: list[int], class_index: int | None = None, reason: str | None = None) -> None:
        """Remember an edit of this session for `edits.jsonl` (`switch_off`, `switch_on` or `reset`)."""
        self.session_edits.append(
            edit_record(action, prototypes=prototypes, class_index=class_index, reason=reason, tool="pipnet serve")
        )

    def notify(self, message: str, notice: str | None = None) -> str:
        """Keep `message` for the page that asks for `notice` (a new id by default); returns the id.

        A notice answers one action, so it is shown by the page that action leads to (its URL names the id),
        not by whichever tab of the browser happens to load next. At most `MAX_NOTICES` wait; older ones go.
        """
        notice = notice or secrets.token_urlsafe(8)
        with self._notices_lock:
            self.notices[notice] = message
            while len(self.notices) > MAX_NOTICES:
                self.notices.popitem(last=False)
        return notice

    def take_notice(self, notice: str | None) -> str | None:
        """The message kept for `notice`, once (None when there is none, or it was shown already)."""
        with self._notices_lock:
            return self.notices.pop(notice, None) if notice else None

    def edit_state(self) -> tuple:
        """What a save writes: the prototypes switched off, for every class and per class."""
        return tuple(self.editor.disabled), frozenset(self.editor.class_edits)

    def mark_saved(self, state: tuple | None = None) -> None:
        """The edits as they are now (or as in `state`, an earlier `edit_state`) are in a saved folder."""
        self._saved_edits = self.edit_state() if state is None else state

    @property
    def unsaved(self) -> bool:
        """Edits that no saved folder holds (or a refit still writing them)."""
        return self.edit_state() != self._saved_edits or self.refit is not None

    @property
    def has_work(self) -> bool:
        """Something a person would miss: an image on show or unsaved edits."""
        return self.shown is not None or self.unsaved


class Visitors:
    """At most `limit` visitors, each forgotten after `idle_seconds` without a request.

    A visitor is made only by `create` (the app calls it for an action from the page itself, never for a
    plain visit), so requests that another site's page makes a browser send (they carry no cookie) make none.
    When the table is full, the visitor forgotten to make room is, in this order: one whose cookie never came
    back (a client that keeps no cookies) for `GRACE_SECONDS` after its first answer, then any other whose
    cookie never came back, then one with no unsaved edits, then one with unsaved edits; the least recently
    seen first within each. A visitor whose first request is still being answered (a large upload) goes only
    when every other is in the same case. A visitor forgotten with an image or edits is remembered by key
    (`forgotten`), so that its next page can say what happened.

    Args:
        make: makes a new visitor.
        limit: visitors kept at once (each holds its edits, one image and its pictures: about 1 to 5 MB).
        idle_seconds: a visitor idle this long is forgotten (its next request starts afresh).
    """

    def __init__(self, make: Callable[[], Visitor], limit: int = 32, idle_seconds: float = 3600.0):
        self.make, self.limit, self.idle_seconds = make, limit, idle_seconds
        self._visitors: OrderedDict[str, Visitor] = OrderedDict()  # least recently seen first
        self._gone: OrderedDict[str, str] = OrderedDict()  # key -> why a visitor with work was forgotten
        self._lock = threading.Lock()

    def find(self, key: str | None) -> Visitor | None:
        """The visitor of `key` (now seen, and known to keep its cookie), or None when unknown or forgotten."""
        now = time.monotonic()
        with self._lock:
            self._forget_idle(now)
            visitor = self._visitors.get(key) if key else None
            if visitor is not None:
                self._visitors.move_to_end(key)
                visitor.last_seen, visitor.returned = now, True
            return visitor

    def create(self) -> Visitor:
        """A new visitor, kept, and `Visitor.pending` until `answered`; when the table is full, another
        is forgotten first (see the class)."""
        visitor = self.make()
        visitor.pending = True
        with self._lock:
            self._forget_idle(time.monotonic())
            while len(self._visitors) >= self.limit:
                self._evict()
            self._visitors[visitor.key] = visitor
        return visitor

    def answered(self, visitor: Visitor) -> None:
        """The request that made `visitor` is answered: its browser has the cookie from now on."""
        with self._lock:
            visitor.pending, visitor.last_seen = False, time.monotonic()

    def forgotten(self, key: str | None) -> str | None:
        """Why the visitor of `key` was forgotten with an image or edits, once; None for another key."""
        with self._lock:
            return self._gone.pop(key, None) if key else None

    def _forget_idle(self, now: float) -> None:
        for key in [k for k, v in self._visitors.items() if now - v.last_seen > self.idle_seconds]:
            self._forget(key, f"it was idle for more than {self.idle_seconds / 60:g} minutes")

    def _evict(self) -> None:
        visitors, now = list(self._visitors.values()), time.monotonic()  # least recently seen first
        tiers = (
            lambda v: not v.returned and not v.pending and now - v.last_seen > GRACE_SECONDS,
            lambda v: not v.returned and not v.pending,
            lambda v: not v.unsaved and not v.pending,
            lambda v: not v.pending,
            lambda v: True,
        )
        for tier in tiers:
            victim = next((v for v in visitors if tier(v)), None)
            if victim is not None:
                self._forget(victim.key, f"more than {self.limit} visitors used the page at once "
                                         "(pipnet serve --max-visitors sets how many are kept)")  # fmt: skip
                return

    def _forget(self, key: str, why: str) -> None:
        visitor = self._visitors.pop(key)
        if visitor.returned and visitor.has_work:
            lost = " and ".join(w for w, had in (("the image on show", visitor.shown), ("unsaved edits", visitor.unsaved)) if had)
            self._gone[key] = f"This page forgot your earlier work ({lost}): {why}."
            while len(self._gone) > FORGOTTEN_KEPT:
                self._gone.popitem(last=False)

    def __len__(self) -> int:
        return len(self._visitors)


def _data_config_path(model_dir: Path, data: str | Path | None, recorded: str | None) -> Path | None:
    """The config YAML whose data to use: `data` (a file, or a run folder), else the model's own."""
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
    """The `quality` block of `model_dir/metrics.json` (the prototype report card), or None."""
    path = model_dir / "metrics.json"
    try:
        quality = json.loads(path.read_text(encoding="utf-8")).get("quality") if path.is_file() else None
    except (OSError, ValueError, AttributeError) as e:
        log.warning("cannot read the report card of %s: %s", path, e)
        return None
    return quality if isinstance(quality, dict) else None


def _in_memory(dataset: Dataset, batch_size: int = 64) -> Dataset:
    """The (x, label) items as one TensorDataset when they fit in `TEST_CACHE_BYTES`, else `dataset`."""
    if len(dataset) * dataset[0][0].numel() * 4 > TEST_CACHE_BYTES:
        return dataset
    xs, ys = zip(*[(x, torch.as_tensor(y)) for x, y in DataLoader(dataset, batch_size=batch_size)])
    return TensorDataset(torch.cat(xs), torch.cat(ys))
