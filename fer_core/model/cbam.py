"""CBAM (Woo et al., ECCV 2018): channel then spatial attention on a feature map.

Used inside every residual block (METHOD.md section 1) so the network can re-weight which channels and
which face regions matter, which is what recovers the accuracy that class weighting costs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ChannelAttention(nn.Module):
    """Mc = sigmoid(MLP(avgpool(F)) + MLP(maxpool(F))), one MLP C -> C/r -> C shared by both pools."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        if channels < 1 or reduction < 1:
            raise ValueError(f"ChannelAttention needs channels >= 1 and reduction >= 1, got {channels}, {reduction}")
        hidden = max(1, channels // reduction)  # a tiny layer (C < r) still gets one hidden unit
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))

    def forward(self, x: Tensor) -> Tensor:
        """[B,C,H,W] -> attention weights [B,C,1,1] in (0, 1)."""
        batch = x.shape[0]
        # both pools through the shared MLP in one pass; max pooling with indices (a cheap scatter in
        # backward, where amax would compare the whole map against its maximum)
        pooled = torch.cat([F.adaptive_avg_pool2d(x, 1).flatten(1), F.adaptive_max_pool2d(x, 1).flatten(1)])
        out = self.mlp(pooled)
        return torch.sigmoid(out[:batch] + out[batch:])[:, :, None, None]


class SpatialAttention(nn.Module):
    """Ms = sigmoid(conv7x7([max_c(F); mean_c(F)])), padding keeps the map size."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"SpatialAttention kernel_size must be odd to keep the map size, got {kernel_size}")
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """[B,C,H,W] -> attention weights [B,1,H,W] in (0, 1)."""
        pooled = torch.cat([torch.max(x, dim=1, keepdim=True).values, x.mean(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled))


class CBAM(nn.Module):
    """F' = Mc(F) * F; F'' = Ms(F') * F'."""

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention(kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        x = x * self.channel(x)
        return x * self.spatial(x)
