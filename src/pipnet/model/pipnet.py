"""The PIP-Net model (Nauta et al., CVPR 2023, Fig. 2).

    image x (B,3,H,W) -> backbone f -> z (B,D,h,w) -> add-on -> maps (B,P,h,w), softmax over P
      -> max over h,w -> presence p (B,P) in [0,1] -> non-negative linear layer -> scores (B,C)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from pipnet.core.normalization import IMAGENET, Normalization
from pipnet.model.backbones import Backbone, BackboneError, backbone_normalization, create_backbone
from pipnet.model.config import PIPNetConfig
from pipnet.model.losses import output_logits
from pipnet.model.saving import Pretrained

__all__ = ["PRESENCE_THRESHOLD", "RELEVANCE_THRESHOLD", "NonNegativeLinear", "PIPNet", "PIPNetOutput",
           "output_probabilities", "prototype_log_odds"]

PRESENCE_THRESHOLD = 0.1  # presence below this is ignored at inference (as in the paper)
RELEVANCE_THRESHOLD = 1e-3  # a classifier weight above this is relevant


class PIPNetOutput(NamedTuple):
    maps: torch.Tensor  # (B, P, h, w) prototype maps, softmax over P (raw: no mask, no clamp)
    presence: torch.Tensor  # (B, P) what the classifier saw: max of each map, in [0, 1] (see classifier_input)
    scores: torch.Tensor  # (B, C) class scores, >= 0


class NonNegativeLinear(nn.Module):
    """out = p @ relu(W).T (+ b): the scoring sheet. W ~ N(1, 0.1); the exponent m is a fixed buffer."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features).normal_(1.0, 0.1))  # (C, P)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        # m of o = log(out^m + 1); stored like the published model, never trained.
        self.register_buffer("multiplier", torch.tensor(2.0))

    def forward(self, presence: torch.Tensor) -> torch.Tensor:
        if _autocasting(presence.device):  # the scoring sheet stays fp32 under bf16/fp16 autocast: scores
            with torch.autocast(presence.device.type, enabled=False):  # are compared with thresholds and ranked
                return F.linear(presence.float(), F.relu(self.weight), self.bias)
        return F.linear(presence, F.relu(self.weight), self.bias)  # (B, C)


def _autocasting(device: torch.device) -> bool:
    """Whether autocast is on for `device` now (torch >= 2.4 takes the device type; older: CPU or CUDA)."""
    try:
        return torch.is_autocast_enabled(device.type)
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled() if device.type == "cpu" else torch.is_autocast_enabled()


class PIPNet(Pretrained, nn.Module):
    """PIP-Net: a backbone, a softmax add-on giving prototype maps, max-pooling and a sparse scoring sheet."""

    def __init__(self, config: PIPNetConfig, backbone: Backbone | None = None):
        super().__init__()
        self.config = config
        if config.normalization is None:
            config.normalization = _declared_normalization(config.backbone, custom=backbone is not None).to_dict()
        self.normalization = Normalization.from_dict(config.normalization)  # the one owner of the model's inputs
        if backbone is None:
            backbone = create_backbone(config.backbone, grid=config.grid, **config.backbone_kwargs)
        self.backbone = backbone
        dim = self.backbone.num_features
        if config.num_features > 0:
            self.add_on = nn.Conv2d(dim, config.num_features, kernel_size=1, bias=True)
            nn.init.xavier_uniform_(self.add_on.weight, gain=nn.init.calculate_gain("sigmoid"))
            self.num_prototypes = config.num_features
        else:
            self.add_on = nn.Identity()
            self.num_prototypes = dim
        self.classifier = NonNegativeLinear(self.num_prototypes, config.num_classes, bias=config.bias)
        self.register_buffer("prototype_mask", torch.ones(self.num_prototypes), persistent=False)
        self._apply_disabled()

    # ---- forward pieces (timm's names, plus `prototype_maps`) -------------------------------------

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's feature map z (B, D, h, w)."""
        return self.backbone(x)

    def prototype_logits(self, z: torch.Tensor) -> torch.Tensor:
        """The add-on's output before the softmax: (B, D, h, w) -> (B, P, h, w)."""
        return self.add_on(z)

    def prototype_maps(self, z: torch.Tensor) -> torch.Tensor:
        """Softmax over prototypes at every latent cell: (B, D, h, w) -> (B, P, h, w)."""
        return torch.softmax(self.prototype_logits(z), dim=1)

    def raw_presence(self, maps: torch.Tensor) -> torch.Tensor:
        """Max of each prototype map, switched-off prototypes 0: (B, P, h, w) -> (B, P), before any clamp."""
        return maps.amax(dim=(2, 3)) * self.prototype_mask

    def classifier_input(self, maps: torch.Tensor, inference: bool = False) -> torch.Tensor:
        """The presence the classifier sees: (B, P, h, w) -> (B, P).

        Training: [`raw_presence`][pipnet.PIPNet.raw_presence]. Inference: the same with presence < 0.1 set to 0 (as in the paper).
        """
        presence = self.raw_presence(maps)  # (B, P)
        if inference:
            presence = torch.where(presence < PRESENCE_THRESHOLD, torch.zeros_like(presence), presence)
        return presence

    def classifier_weights(self) -> torch.Tensor:
        """The weights the classifier uses, relu(W), with switched-off prototypes' columns 0: (C, P)."""
        return F.relu(self.classifier.weight) * self.prototype_mask

    def forward_head(self, maps: torch.Tensor, inference: bool = False) -> PIPNetOutput:
        presence = self.classifier_input(maps, inference)  # (B, P)
        return PIPNetOutput(maps, presence, self.classifier(presence))  # scores (B, C)

    def forward(self, x: torch.Tensor) -> PIPNetOutput:
        """Training-time forward: every presence goes into the classifier."""
        return self.forward_head(self.prototype_maps(self.forward_features(x)))

    def predict(self, x: torch.Tensor) -> PIPNetOutput:
        """Inference forward: presence < 0.1 is set to 0 before the classifier.

        `presence` is that clamped presence (as the published model returns it); the raw presence is
        `raw_presence(out.maps)`.

        Args:
            x: (B, 3, S, S) normalised images.

        Returns:
            A [`PIPNetOutput`][pipnet.PIPNetOutput]: `maps` (B, P, h, w), `presence` (B, P) and class
            `scores` (B, C), all non-negative.

        Examples:
            >>> import torch
            >>> import pipnet
            >>> model = pipnet.create_model("resnet18", num_classes=3, num_features=4, image_size=64).eval()
            >>> with torch.inference_mode():
            ...     out = model.predict(torch.rand(2, 3, 64, 64))
            >>> out.scores.shape
            torch.Size([2, 3])
            >>> bool((out.presence == 0).logical_or(out.presence >= 0.1).all())  # below 0.1 counts as absent
            True
        """
        return self.forward_head(self.prototype_maps(self.forward_features(x)), inference=True)

    # ---- properties of the scoring sheet -------------------------------------------------------

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def relevant_weights(self) -> torch.Tensor:
        """Boolean (C, P): weights above 1e-3 (of switched-on prototypes)."""
        return self.classifier_weights() > RELEVANCE_THRESHOLD

    def used_prototypes(self) -> torch.Tensor:
        """Indices of prototypes with a relevant weight to any class."""
        return self.relevant_weights().any(dim=0).nonzero().flatten()

    # ---- editing ----------------------------------------------------------------------------------

    def disable_prototypes(self, indices: list[int]) -> None:
        """Switch prototypes off: their presence is 0 for every class. Recorded in the saved config."""
        bad = [i for i in indices if not 0 <= int(i) < self.num_prototypes]
        if bad:
            raise IndexError(f"prototype indices out of range 0..{self.num_prototypes - 1}: {bad}")
        self.config.disabled_prototypes = sorted(set(self.config.disabled_prototypes) | {int(i) for i in indices})
        self._apply_disabled()

    def enable_prototypes(self, indices: list[int]) -> None:
        """Switch prototypes back on."""
        drop = {int(i) for i in indices}
        self.config.disabled_prototypes = [i for i in self.config.disabled_prototypes if i not in drop]
        self._apply_disabled()

    def _apply_disabled(self) -> None:
        self.prototype_mask.fill_(1.0)
        if self.config.disabled_prototypes:
            self.prototype_mask[torch.tensor(self.config.disabled_prototypes, dtype=torch.long)] = 0.0


def _declared_normalization(name: str, custom: bool) -> Normalization:
    """The registered backbone's normalisation; ImageNet's for a backbone module passed in under another name."""
    try:
        return backbone_normalization(name)
    except BackboneError:
        if custom:
            return IMAGENET
        raise


def prototype_log_odds(logits: torch.Tensor) -> torch.Tensor:
    """log(s / (1 - s)) of the softmax s over prototypes (dim 1), computed from the logits without forming s.

    For prototype k at a cell, log-odds = a_k - logsumexp_{j != k} a_j. It orders cells and images exactly
    as the presence s does (a strictly increasing function of it) but does not round to a tie once s
    rounds to 1.0 in float32 (a logit about 17 above the others). For every k but the cell's top
    prototype, the other terms include the top one, so their sum relative to it is >= 1; for the top
    prototype, its others are summed relative to the second largest logit. P = 1 gives +inf.

    Args:
        logits: (B, P, h, w) the add-on's output ([`PIPNet.prototype_logits`][pipnet.PIPNet.prototype_logits]).

    Returns:
        (B, P, h, w) log-odds, in the logits' dtype.
    """
    top, arg = logits.max(dim=1, keepdim=True)  # (B, 1, h, w)
    is_top = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, arg, True)  # (B, P, h, w)
    relative = torch.exp(logits - top)  # (B, P, h, w), the top term is 1
    others = top + torch.log(relative.sum(dim=1, keepdim=True) - relative)  # exact enough when k is not the top
    second = logits.masked_fill(is_top, -math.inf).amax(dim=1, keepdim=True)  # (B, 1, h, w)
    others_of_top = second + torch.log(torch.exp(logits - second).masked_fill(is_top, 0.0).sum(dim=1, keepdim=True))
    return logits - torch.where(is_top, others_of_top, others)


def output_probabilities(scores: torch.Tensor, multiplier: torch.Tensor | float = 2.0) -> torch.Tensor:
    """softmax(log(out^m + 1)): the class probabilities of the paper."""
    return torch.softmax(output_logits(scores, multiplier), dim=1)

