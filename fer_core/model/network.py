"""FERNet: CBAM-ResNet trunk + two uncertainty heads (mu, logvar) + a linear classifier.

After RUL (Zhang et al., NeurIPS 2021) and docs/method.md sections 1-3. `forward(x)` is plain inference,
`fc(mu(x))`: no mixing, no targets, no device calls, so the same module trains, evaluates and exports.
Mixing uncertain features between samples lives in `fer_core.training.step`.

Head pooling: both heads pool the final map adaptively to `head_pool` x `head_pool` (default 7, what RUL
does at 224x224 input where ResNet's map is already 7x7), so any input size works. The flatten keeps the
spatial layout, at a cost: each head's Linear has C*P*P*d weights, i.e. 512*49*64 = 1.6 M per head for
ResNet-18 (3.2 M on an 11.2 M trunk) and 2048*49*64 = 6.4 M per head for ResNet-50. `head_pool: 1`
(global average pooling) cuts that to C*d at some loss of spatial detail.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from fer_core.model.resnet import ResNetTrunk

BN_EPS = 2e-5  # RUL's value for the head BNs


def uncertainty_from_logvar(logvar: Tensor) -> Tensor:
    """Per-sample uncertainty s_i = mean_d exp(logvar_i), a positive scalar per row ([B,d] -> [B])."""
    if logvar.dim() != 2:
        raise ValueError(f"logvar must be [B, d], got shape {tuple(logvar.shape)}")
    return logvar.exp().mean(dim=1)


class UncertaintyHead(nn.Module):
    """AdaptiveAvgPool2d(P) -> BN2d(affine=False) -> Dropout -> Flatten -> Linear(C*P*P, d) -> BN1d(d).

    `out_bn=False` drops the closing BN1d (a variant for the logvar head: `model.logvar_bn`)."""

    def __init__(self, in_channels: int, feature_dim: int, dropout: float, pool: int, out_bn: bool = True) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(pool)
        self.bn_in = nn.BatchNorm2d(in_channels, eps=BN_EPS, affine=False)
        self.dropout = nn.Dropout(dropout)
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(in_channels * pool * pool, feature_dim)
        self.bn_out = nn.BatchNorm1d(feature_dim, eps=BN_EPS) if out_bn else nn.Identity()

    def forward(self, feature_map: Tensor) -> Tensor:
        x = self.dropout(self.bn_in(self.pool(feature_map)))
        return self.bn_out(self.linear(self.flatten(x)))


class FERNet(nn.Module):
    """x[B,3,H,W] -> logits[B,K]; `encode` gives (mu, logvar), `predict` gives (logits, uncertainty)."""

    def __init__(self, num_classes: int, arch: str = "resnet18", cbam: bool = True, cbam_reduction: int = 16,
                 feature_dim: int = 64, dropout: float = 0.4, head_pool: int = 7, stem: str = "imagenet",
                 logvar_bn: bool = True) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if feature_dim < 1:
            raise ValueError(f"model.feature_dim must be >= 1, got {feature_dim}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {dropout}")
        if cbam and cbam_reduction < 1:
            raise ValueError(f"model.cbam_reduction must be >= 1, got {cbam_reduction}")
        if head_pool < 1:
            raise ValueError(f"model.head_pool must be >= 1, got {head_pool}")
        self.num_classes = num_classes
        self.feature_dim = feature_dim
        self.backbone = ResNetTrunk(arch, cbam_reduction if cbam else None, stem)
        channels = self.backbone.out_channels
        self.mu_head = UncertaintyHead(channels, feature_dim, dropout, head_pool)
        self.logvar_head = UncertaintyHead(channels, feature_dim, dropout, head_pool, out_bn=logvar_bn)
        self.fc = nn.Linear(feature_dim, num_classes)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The uncertain feature: mean mu[B,d] and log-variance logvar[B,d] of each sample."""
        feature_map = self.backbone(x)
        return self.mu_head(feature_map), self.logvar_head(feature_map)

    def classify(self, z: Tensor) -> Tensor:
        """Feature [B,d] (mu or a mixed z) -> logits [B,K]."""
        return self.fc(z)

    def forward(self, x: Tensor) -> Tensor:
        # Only the mu head is needed for logits; skipping logvar keeps inference cheaper.
        return self.fc(self.mu_head(self.backbone(x)))

    def predict(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(logits[B,K], uncertainty[B]): what evaluation and serving report."""
        mu, logvar = self.encode(x)
        return self.fc(mu), uncertainty_from_logvar(logvar)

    def param_groups(self, lr: float, lr_fc: float, weight_decay: float,
                     lr_logvar: float | None = None) -> list[dict[str, Any]]:
        """Two optimiser groups: trunk + heads at `lr`, the classifier at `lr_fc` (docs/method.md section 5);
        with `lr_logvar` a third, the logvar head alone at that rate (a variant: `train.lr_logvar`)."""
        own = {id(p) for p in self.fc.parameters()}
        logvar = list(self.logvar_head.parameters()) if lr_logvar is not None else []
        own |= {id(p) for p in logvar}
        rest = [p for p in self.parameters() if id(p) not in own]
        groups = [
            {"name": "backbone_heads", "params": rest, "lr": lr, "weight_decay": weight_decay},
            {"name": "fc", "params": list(self.fc.parameters()), "lr": lr_fc, "weight_decay": weight_decay},
        ]
        if lr_logvar is not None:
            groups.append({"name": "logvar_head", "params": logvar, "lr": lr_logvar, "weight_decay": weight_decay})
        return groups


def build_model(cfg: Any, num_classes: int) -> FERNet:
    """FERNet from a `fer_core.config.ModelConfig`; random init (pure: loads no weights).

    Pretrained backbone weights are loaded by the caller (the training engine, when
    `config.model.pretrained` is set) with `fer_core.model.weights.load_backbone_weights`, so building a
    model never touches a file or the network.
    """
    return FERNet(
        num_classes=num_classes,
        arch=cfg.arch,
        cbam=cfg.cbam,
        cbam_reduction=cfg.cbam_reduction,
        feature_dim=cfg.feature_dim,
        dropout=cfg.dropout,
        head_pool=cfg.head_pool,
        stem=cfg.stem,
        logvar_bn=cfg.logvar_bn,
    )


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters (for logs and the docs' parameter-cost note)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


__all__ = ["FERNet", "UncertaintyHead", "build_model", "count_parameters", "uncertainty_from_logvar"]
