"""The three losses of PIP-Net (paper Eq. 1-3), and the two terms of a shortcut repair.

Each is a small pure function. The training step combines them with per-phase weights
(`pipnet.train.phases`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["alignment_loss", "classification_loss", "forbid_loss", "output_logits", "remember_loss", "tanh_loss"]


def _align(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """A(a, b) = -mean_n log(sum_k a[n,k] b[n,k] + 1e-12) over (N, P) rows."""
    return -torch.log((a * b).sum(dim=1) + 1e-12).mean()


def alignment_loss(maps1: torch.Tensor, maps2: torch.Tensor) -> torch.Tensor:
    """L_A = (A(z', sg(z'')) + A(z'', sg(z'))) / 2: the same patch in both views gets the same prototype.

    Args:
        maps1: prototype maps of the first view (B, P, h, w), softmax over P.
        maps2: prototype maps of the second view (B, P, h, w).

    Each half lets the gradient flow only into its non-detached side (stop-gradient on the other view).
    """
    z1 = maps1.permute(0, 2, 3, 1).flatten(0, 2)  # (B*h*w, P)
    z2 = maps2.permute(0, 2, 3, 1).flatten(0, 2)  # (B*h*w, P)
    return (_align(z1, z2.detach()) + _align(z2, z1.detach())) / 2


def tanh_loss(global_presence: torch.Tensor) -> torch.Tensor:
    """L_T of one view = -mean_k log(tanh(sum_b p[b,k]) + 1e-8): every prototype present once per batch.

    The sum runs over the *global* batch, so the argument is the presences of every image of it: under
    multi-process training, those gathered from every process (`pipnet.train.distributed.gather_presence`),
    not one process's share (which would ask each prototype to be present on every process).

    Args:
        global_presence: (B, P) presence scores of one view, B the global batch.
    """
    return -torch.log(torch.tanh(global_presence.sum(dim=0)) + 1e-8).mean()


def output_logits(scores: torch.Tensor, multiplier: torch.Tensor | float = 2.0) -> torch.Tensor:
    """log(out^m + 1), the paper's class logits from the non-negative scores `out` (m = 2); the one place
    this formula lives (the loss, the class probabilities and the binary metrics' margin read it).

    Args:
        scores: (N, C) non-negative class scores.
        multiplier: the exponent m.
    """
    return torch.log1p(scores.pow(multiplier))


def classification_loss(
    scores: torch.Tensor, labels: torch.Tensor, multiplier: torch.Tensor | float = 2.0
) -> torch.Tensor:
    """L_C = NLL(log_softmax(log(out^m + 1)), y) with m = 2.

    Args:
        scores: (N, C) non-negative class scores `out` (both views stacked in training).
        labels: (N,) class indices (repeated for the two views).
        multiplier: the exponent m.
    """
    return F.nll_loss(F.log_softmax(output_logits(scores, multiplier), dim=1), labels)


def forbid_loss(maps: torch.Tensor, forbidden: torch.Tensor, live: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """L_F = -mean over forbidden cells of log(1 - sum_{p in live} a_p + eps): no live prototype at a forbidden patch.

    The repair's forbid term (after ProtoPDebug's forbid loss, Bontempelli et al., ICLR 2023, for PIP-Net's
    softmax maps). At every latent cell the presences sum to 1 over the prototypes, so a patch cannot answer
    "nothing": the loss moves its mass from the live prototypes (the forbidden ones and every one the model
    uses) to the others, which the re-fitted scoring sheet then leaves at weight 0. The log keeps the gradient
    alive as the live mass nears 1, where the softmax's own gradient vanishes.

    Args:
        maps: (B, P, h, w) prototype maps, softmax over P.
        forbidden: (B, h, w) bool, the forbidden cells.
        live: (P,) bool, the prototypes that must not respond there.
        eps: keeps the log finite when the live mass is 1.

    Returns:
        A scalar; 0 (with a gradient path) when no cell is forbidden.
    """
    mass = (maps * live.to(maps.dtype)[None, :, None, None]).sum(dim=1)  # (B, h, w) live mass per cell
    cells = forbidden.to(maps.dtype)
    return -(torch.log((1 - mass).clamp(min=0) + eps) * cells).sum() / cells.sum().clamp(min=1)


def remember_loss(maps: torch.Tensor, kept: torch.Tensor, cells: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """L_R = -mean over remembered (prototype, cell) pairs of log(a_k + eps): the kept prototypes keep responding.

    The repair's remember term: at the cells where the unrepaired model's kept prototype k was present (a
    fixed target computed once, so the term pulls towards what the model knew rather than what it drifts to),
    its presence a_k stays near 1.

    Args:
        maps: (B, P, h, w) prototype maps, softmax over P.
        kept: (K,) long, the kept prototypes.
        cells: (B, K, h, w) bool, where each kept prototype must keep responding.
        eps: keeps the log finite.

    Returns:
        A scalar; 0 (with a gradient path) when no pair is given.
    """
    a = maps[:, kept]  # (B, K, h, w)
    weight = cells.to(maps.dtype)
    return -(torch.log(a + eps) * weight).sum() / weight.sum().clamp(min=1)
