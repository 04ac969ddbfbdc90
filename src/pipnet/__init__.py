"""PIP-Net: Patch-based Intuitive Prototypes for interpretable image classification.

Nauta, Schlötterer, van Keulen, Seifert, CVPR 2023. See README.md for the tour.
"""

from pipnet.model import losses
from pipnet.model.backbones import BackboneError, create_backbone, list_models
from pipnet.model import ModelLoadError, PIPNet, PIPNetConfig, PIPNetOutput, create_model
from pipnet.model.official import load_official_checkpoint
from pipnet.explanation.predictor import Decision, Predictor
from pipnet.use.predict import Prediction, predict

__version__ = "0.1.0"

__all__ = [
    "BackboneError",
    "Decision",
    "ModelLoadError",
    "PIPNet",
    "PIPNetConfig",
    "PIPNetOutput",
    "Prediction",
    "Predictor",
    "create_backbone",
    "create_model",
    "list_models",
    "load_official_checkpoint",
    "losses",
    "predict",
]
