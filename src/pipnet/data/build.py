"""`build_data`: one `DataConfig` -> every data set a PIP-Net run needs, as a `DataBundle`.

Nothing is decoded here (except with `bad_images="skip"`, which scans the files): images load lazily.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from torch.utils.data import Dataset

from pipnet.data.augment import IMAGENET, Normalization, TwoViewTransform
from pipnet.core.data_config import DataConfig
from pipnet.data.cub import CUB, read_cub
from pipnet.data.errors import DataError
from pipnet.data.folders import FolderSource, image_tree, load_folder_source
from pipnet.data.masks import with_masks
from pipnet.data.planted import PlantedParts
from pipnet.data.wrappers import EvalDataset, ImageSource, TwoViewDataset

__all__ = ["DataBundle", "build_data", "resolve_source"]

log = logging.getLogger(__name__)


@dataclass
class DataBundle:
    """The data sets of one run.

    Args:
        classes: class names; labels index them.
        train: items `(view1, view2, label)` for the classification phase (CUB: cropped images, delta 8).
        pretrain: items `(view1, view2, label)` for pretraining (CUB: full images, delta 32); else `train`.
        projection: items `(x, label)`: the training images through the evaluation transform (CUB: full).
        test: items `(x, label)` (CUB: cropped), or None without a test split.
        test_projection: items `(x, label)`: the test images for part purity (CUB: full), or None.
        ood: name -> items `(x, -1)`: out-of-distribution sets.
        multi: planted only: items `(x, label)` of images with the parts of two classes.
        num_parts: number of annotated part types (0 without keypoints).
        part_names: their names.
    """

    classes: list[str]
    train: Dataset
    pretrain: Dataset
    projection: Dataset
    test: Dataset | None
    test_projection: Dataset | None
    ood: dict[str, Dataset] = field(default_factory=dict)
    multi: Dataset | None = None
    num_parts: int = 0
    part_names: list[str] = field(default_factory=list)

    def purity_sets(self) -> dict[str, Dataset]:
        """The sets prototype purity is measured on (paper supplementary Sec. 1.4, "train and test projection sets"):
        `{"train": projection, "test": test_projection, else test}` when the images have part keypoints,
        else {}. Training and `pipnet evaluate` both take them from here."""
        return self._projection_sets() if self.num_parts > 0 else {}

    def mask_sets(self) -> dict[str, Dataset]:
        """The same two sets as `purity_sets` when their images have object masks (`--data.masks`), else {}."""
        return {name: d for name, d in self._projection_sets().items() if getattr(d, "has_masks", False)}

    def _projection_sets(self) -> dict[str, Dataset]:
        """The training and test images a prototype's patches are found in (CUB: uncropped)."""
        sets = {"train": self.projection, "test": self.test_projection or self.test}
        return {name: d for name, d in sets.items() if d is not None}


def _eval(base: ImageSource, config: DataConfig, norm: Normalization) -> EvalDataset:
    return EvalDataset(base, config.image_size, config.preset, norm)


# The published augmentation (Faithfulness page, 'The published code', item 5): nearest-neighbour location ops; PETS resizes to S + 48
# and crops S + 8 (PETS_PAPER = (delta, crop margin)).
PETS_PAPER = (48, 8)


def _two_views(base: ImageSource, config: DataConfig, norm: Normalization, delta: int = 32,
               protocol: str = "default") -> TwoViewDataset:
    if protocol != "paper":
        return TwoViewDataset(base, TwoViewTransform(config.image_size, config.preset, delta=delta, normalization=norm))
    delta, margin = PETS_PAPER if config.preset == "pets" else (delta, 4)
    transform = TwoViewTransform(
        config.image_size, config.preset, delta=delta, crop_margin=margin, location_interpolation="nearest",
        normalization=norm,
    )
    return TwoViewDataset(base, transform)


def _ood_folders(config: DataConfig, norm: Normalization) -> dict[str, Dataset]:
    """One data set per `config.ood` folder, named after the folder (numbered when names repeat)."""
    sets: dict[str, Dataset] = {}
    for folder in config.ood:
        name = Path(folder).name or str(folder)
        unique, k = name, 2
        while unique in sets:
            unique, k = f"{name}_{k}", k + 1
        sets[unique] = _eval(image_tree(folder, config.bad_images), config, norm)
    return sets


def _planted(config: DataConfig, protocol: str, norm: Normalization) -> DataBundle:
    planted = config.planted
    train = PlantedParts(planted, "train")
    test = _eval(PlantedParts(planted, "test"), config, norm) if planted.test_per_class > 0 else None
    ood = {"planted_ood": _eval(PlantedParts(planted, "ood"), config, norm)} if planted.ood_images > 0 else {}
    two_views = _two_views(train, config, norm, protocol=protocol)
    return DataBundle(
        classes=train.classes,
        train=two_views,
        pretrain=two_views,
        projection=_eval(train, config, norm),
        test=test,
        test_projection=test,
        ood={**ood, **_ood_folders(config, norm)},
        multi=_eval(PlantedParts(planted, "multi"), config, norm) if planted.num_classes >= 2 and planted.multi_images else None,
        num_parts=train.num_parts,
        part_names=train.part_names,
    )


def _folder(config: DataConfig, protocol: str, norm: Normalization) -> DataBundle:
    source = load_folder_source(config.root, config.val_fraction, config.seed, config.bad_images)
    if config.masks:
        source = _masked(source, config.root, config.masks)
    two_views = _two_views(source.train, config, norm, protocol=protocol)
    test = _eval(source.test, config, norm) if source.test is not None else None
    return DataBundle(
        classes=source.classes,
        train=two_views,
        pretrain=two_views,
        projection=_eval(source.projection, config, norm),
        test=test,
        test_projection=test,
        ood=_ood_folders(config, norm),
    )


def _masked(source: FolderSource, root: str, masks: str) -> FolderSource:
    """The same source whose image lists also give object masks (the projection list may be the train list)."""
    train = with_masks(source.train, root, masks)
    projection = train if source.projection is source.train else with_masks(source.projection, root, masks)
    test = with_masks(source.test, root, masks) if source.test is not None else None
    return FolderSource(classes=source.classes, train=train, test=test, projection=projection)


def _cub(config: DataConfig, protocol: str, norm: Normalization) -> DataBundle:
    meta = read_cub(config.root, config.bad_images)
    train_crop, train_full = CUB(meta, "train", crop=True), CUB(meta, "train", crop=False)
    test_crop, test_full = CUB(meta, "test", crop=True), CUB(meta, "test", crop=False)
    return DataBundle(
        classes=meta.classes,
        train=_two_views(train_crop, config, norm, delta=8, protocol=protocol),
        pretrain=_two_views(train_full, config, norm, delta=32, protocol=protocol),
        projection=_eval(train_full, config, norm),
        test=_eval(test_crop, config, norm),
        test_projection=_eval(test_full, config, norm),
        ood=_ood_folders(config, norm),
        num_parts=train_crop.num_parts,
        part_names=meta.part_names,
    )


_SOURCES = {"planted": _planted, "folder": _folder, "cub": _cub}


def resolve_source(config: DataConfig) -> str:
    """The concrete source of `config`: `auto` becomes `cub`, `folder` or `planted`.

    `auto` with a `root` picks `cub` when the folder has CUB-200-2011's `images.txt` and `images/`,
    `folder` when it has a `train/` folder of class folders, and logs the choice; anything else is an
    error, so a folder is never ignored for the built-in data. `auto` without a root is `planted`.

    Raises:
        DataError: a root whose layout is neither, or a root given to the `planted` source.
    """
    if config.source == "planted" and config.root:
        raise DataError(f"data source 'planted' is built in and takes no root folder, got {config.root}; "
                        "use --data.source cub or folder (or leave it out to detect the layout)")
    if config.source != "auto":
        return config.source
    if not config.root:
        return "planted"
    root = Path(config.root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    if (root / "images.txt").is_file() and (root / "images").is_dir():
        source = "cub"
    elif (root / "train").is_dir() and any(p.is_dir() for p in (root / "train").iterdir()):
        source = "folder"
    else:
        raise DataError(f"{root} is neither CUB-200-2011 (images.txt and images/) nor an image-folder tree "
                        "(train/<class>/<images>); set --data.source")
    log.info("data.root %s: detected %s, using data.source %s", root,
             "the CUB-200-2011 layout" if source == "cub" else "an image-folder tree", source)
    return source


def build_data(config: DataConfig, protocol: str = "default", *, normalization: Normalization = IMAGENET) -> DataBundle:
    """Build every data set of a run from its data configuration.

    Args:
        config: the source (`auto`: see `resolve_source`), its folder, the input size S, the
            augmentation preset and the split settings.
        protocol: `paper` gives the published augmentation (Faithfulness page, 'The published code', item 5): nearest-neighbour
            location ops, and for the `pets` preset a resize to S + 48 and a crop to S + 8.
        normalization: the input normalisation of every set: the backbone's (`PIPNet.normalization`;
            `pipnet.evaluation.inference.build_model_data` passes a model's). ImageNet's by default.

    Raises:
        DataError: an unknown source, a missing `root` for `folder` / `cub`, or a problem in the files.
    """
    if config.source not in (*_SOURCES, "auto"):
        raise DataError(f"unknown data source {config.source!r}; expected one of {sorted(_SOURCES) + ['auto']}")
    source = resolve_source(config)
    if config.masks and source != "folder":
        raise DataError(f"--data.masks is read for the folder source only, not {source!r}")
    if source != "planted" and not config.root:
        raise DataError(f"data source {source!r} needs a root folder (DataConfig.root)")
    bundle = _SOURCES[source](config, protocol, normalization)
    log.info("data %s: %d classes, %d training images, %s test images, %d part types, ood sets %s",
             source, len(bundle.classes), len(bundle.train),
             len(bundle.test) if bundle.test is not None else "no", bundle.num_parts, sorted(bundle.ood))
    return bundle
