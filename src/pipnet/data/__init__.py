"""The data layer: image sources (planted parts, image folders, CUB-200-2011), the two-view augmentation
of PIP-Net, and `build_data`, which turns a `DataConfig` into every data set a run needs."""

from pipnet.data.augment import (
    IMAGENET,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Normalization,
    TwoViewTransform,
    denormalize,
    eval_transform,
)
from pipnet.data.build import DataBundle, build_data
from pipnet.core.data_config import DataConfig, PlantedConfig
from pipnet.data.cub import CUB, read_cub
from pipnet.data.errors import DataError, ImageLoadError
from pipnet.data.folders import ImageList, image_tree, load_folder_source
from pipnet.data.images import load_image
from pipnet.data.planted import PlantedParts
from pipnet.data.wrappers import EvalDataset, TwoViewDataset, scale_keypoints

__all__ = [
    "CUB",
    "DataBundle",
    "DataConfig",
    "DataError",
    "EvalDataset",
    "IMAGENET",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageList",
    "ImageLoadError",
    "Normalization",
    "PlantedConfig",
    "PlantedParts",
    "TwoViewDataset",
    "TwoViewTransform",
    "build_data",
    "denormalize",
    "eval_transform",
    "image_tree",
    "load_folder_source",
    "load_image",
    "read_cub",
    "scale_keypoints",
]
