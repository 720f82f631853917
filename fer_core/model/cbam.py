"""CBAM (Woo et al., ECCV 2018): channel then spatial attention on a feature map.

Used inside every residual block (docs/method.md section 1) so the network can re-weight which channels
and which face regions matter, which is what recovers the accuracy that class weighting costs.

Both gates start neutral, at 0.5 everywhere (`reset_parameters`): the official code zeroes the spatial
gate's BN weight for the same reason. A Kaiming-initialised 7x7 spatial conv instead drives most
positions of the gate below 0.1 at step 0, which shuts those blocks' residual branches before training
has begun.
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
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The last layer at zero: MLP(avg) + MLP(max) = 0, so the gate is sigmoid(0) = 0.5 for any input.

        The first layer keeps its default init, so gradients reach it as soon as the last layer moves.
        """
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

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
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """A zero conv: the gate is sigmoid(0) = 0.5 at every position until training moves it."""
        nn.init.zeros_(self.conv.weight)

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

    def reset_parameters(self) -> None:
        """Both gates neutral (0.5 everywhere); the trunk calls this after its own conv init."""
        self.channel.reset_parameters()
        self.spatial.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        x = x * self.channel(x)
        return x * self.spatial(x)
