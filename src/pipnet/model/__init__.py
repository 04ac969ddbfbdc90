"""The PIP-Net model (Nauta et al., CVPR 2023, Fig. 2).

    image x (B,3,H,W) -> backbone f -> z (B,D,h,w) -> add-on -> maps (B,P,h,w), softmax over P
      -> max over h,w -> presence p (B,P) in [0,1] -> non-negative linear layer -> scores (B,C)

The model is in `pipnet.model.pipnet`, its configuration in `config`, saving and loading in `saving`
and building by backbone name in `factory`; this module re-exports them.
"""

from pipnet.model.config import PIPNetConfig
from pipnet.model.factory import create_model
from pipnet.model.pipnet import (PRESENCE_THRESHOLD, RELEVANCE_THRESHOLD, NonNegativeLinear, PIPNet, PIPNetOutput,
                                 output_probabilities, prototype_log_odds)
from pipnet.model.saving import CONFIG_FILE, WEIGHTS_FILE, ModelLoadError, load_state_dict_checked

__all__ = ["CONFIG_FILE", "PRESENCE_THRESHOLD", "RELEVANCE_THRESHOLD", "WEIGHTS_FILE", "ModelLoadError",
           "NonNegativeLinear", "PIPNet", "PIPNetConfig", "PIPNetOutput", "create_model", "load_state_dict_checked",
           "output_probabilities", "prototype_log_odds"]
