"""PIP-Net: Patch-based Intuitive Prototypes for interpretable image classification.

Nauta, Schlötterer, van Keulen, Seifert, CVPR 2023. See README.md for the tour.
"""

from pipnet import _aliases

_aliases.install()  # the module paths of earlier releases (pipnet.evaluate, pipnet.quality, ...) keep working

from pipnet.model import losses  # noqa: E402
from pipnet.model.backbones import BackboneError, create_backbone, list_models  # noqa: E402
from pipnet.model import ModelLoadError, PIPNet, PIPNetConfig, PIPNetOutput, create_model  # noqa: E402
from pipnet.model.official import load_official_checkpoint  # noqa: E402
from pipnet.use.predict import Prediction, predict  # noqa: E402

_aliases.register_loaded()  # after the imports: pipnet.predict stays the function

__version__ = "0.1.0"

__all__ = [
    "BackboneError",
    "ModelLoadError",
    "PIPNet",
    "PIPNetConfig",
    "PIPNetOutput",
    "Prediction",
    "create_backbone",
    "create_model",
    "list_models",
    "load_official_checkpoint",
    "losses",
    "predict",
]
