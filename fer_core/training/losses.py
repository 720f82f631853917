"""The weighted add-up loss (docs/method.md section 4): both mixed targets carry their own class weight.

`weighting="half"` is METHOD's fixed 0.5/0.5; `"lam"` weights each term by the mixing coefficient of its
feature (lam_i for y_i, 1 - lam_i for y_p(i)), as mixup weights its targets (`train.mix_loss`, a variant)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class WeightedAddUpLoss(nn.Module):
    """targets_perm None: mean_i w[y_i] * CE(logits_i, y_i)
    else:               mean_i [0.5 * w[y_i] * CE(logits_i, y_i) + 0.5 * w[y_p(i)] * CE(logits_i, y_p(i))]
    weighting "lam":    mean_i [lam_i * w[y_i] * CE(logits_i, y_i) + (1 - lam_i) * w[y_p(i)] * CE(logits_i, y_p(i))]

    The weights are a buffer, so they follow the module to the training device and into its state_dict.
    """

    WEIGHTINGS = ("half", "lam")

    def __init__(self, class_weights: Tensor, weighting: str = "half") -> None:
        super().__init__()
        if weighting not in self.WEIGHTINGS:
            raise ValueError(f"weighting must be one of {', '.join(self.WEIGHTINGS)}, got {weighting!r}")
        self.weighting = weighting
        class_weights = torch.as_tensor(class_weights, dtype=torch.float32)
        if class_weights.dim() != 1 or class_weights.numel() < 2:
            raise ValueError(f"class_weights must be a 1-D tensor of K >= 2 weights, got shape {tuple(class_weights.shape)}")
        if not torch.isfinite(class_weights).all() or (class_weights <= 0).any():
            raise ValueError(f"class_weights must be finite and positive, got {class_weights.tolist()}")
        self.register_buffer("class_weights", class_weights)

    def _weighted_ce(self, logits: Tensor, targets: Tensor) -> Tensor:
        return self.class_weights[targets] * F.cross_entropy(logits, targets, reduction="none")

    def forward(self, logits: Tensor, targets: Tensor, targets_perm: Tensor | None = None,
                lam: Tensor | None = None) -> Tensor:
        if logits.dim() != 2 or logits.shape[1] != self.class_weights.numel():
            raise ValueError(
                f"logits must be [B, {self.class_weights.numel()}] to match the class weights, got {tuple(logits.shape)}"
            )
        if targets_perm is None:
            return self._weighted_ce(logits, targets).mean()
        if self.weighting == "lam":
            if lam is None or lam.shape != targets.shape:
                raise ValueError("the lam-weighted add-up loss needs lam [B] with the mixed targets")
            return (lam * self._weighted_ce(logits, targets)
                    + (1.0 - lam) * self._weighted_ce(logits, targets_perm)).mean()
        return (0.5 * self._weighted_ce(logits, targets) + 0.5 * self._weighted_ce(logits, targets_perm)).mean()
