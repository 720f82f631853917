"""One training step with uncertainty feature mixing (docs/method.md section 3).

Mixing lives here, not in the model, so `FERNet.forward` stays plain inference and exportable.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fer_core.data.device_data import to_device_async
from fer_core.model import FERNet, uncertainty_from_logvar
from fer_core.training.losses import WeightedAddUpLoss


def mix_features(mu: Tensor, logvar: Tensor, perm: Tensor) -> tuple[Tensor, Tensor]:
    """z_i = lam_i * mu_i + (1 - lam_i) * mu_p(i) with lam_i = s_i / (s_i + s_p(i)).

    The more uncertain sample of a pair keeps more of its own feature and is pulled less towards the
    other. Gradients flow through lam into logvar: that is how the heads learn the uncertainty.
    Returns (z [B,d], lam [B]).
    """
    if mu.shape != logvar.shape or mu.dim() != 2:
        raise ValueError(f"mu and logvar must both be [B, d], got {tuple(mu.shape)} and {tuple(logvar.shape)}")
    if perm.shape != (mu.shape[0],):
        raise ValueError(f"perm must be [B={mu.shape[0]}], got {tuple(perm.shape)}")
    uncertainty = uncertainty_from_logvar(logvar)
    lam = uncertainty / (uncertainty + uncertainty[perm])
    z = lam[:, None] * mu + (1.0 - lam[:, None]) * mu[perm]
    return z, lam


def training_step(model: FERNet, images: Tensor, targets: Tensor, loss_fn: WeightedAddUpLoss, mixing: bool,
                  generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """Forward + loss for one batch (the caller does backward/step and sets train mode).

    Returns {"loss": scalar with graph, "logits": [B,K] detached, "uncertainty": [B] detached}.
    `generator` (CPU or on the images' device) makes the permutation reproducible.
    """
    mu, logvar = model.encode(images)
    uncertainty = uncertainty_from_logvar(logvar)
    if mixing:
        perm_device = generator.device if generator is not None else torch.device("cpu")
        perm = to_device_async(torch.randperm(images.shape[0], generator=generator, device=perm_device),
                               images.device)
        z, lam = mix_features(mu, logvar, perm)
        logits = model.classify(z)
        loss = loss_fn(logits, targets, targets[perm], lam)
    else:
        logits = model.classify(mu)
        loss = loss_fn(logits, targets)
    return {"loss": loss, "logits": logits.detach(), "uncertainty": uncertainty.detach()}
