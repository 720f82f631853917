"""CBAM against values computed by hand on a tiny tensor with set weights."""

from __future__ import annotations

import math

import pytest
import torch

from fer_core.model.cbam import CBAM, ChannelAttention, SpatialAttention


def _sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def tiny_map() -> torch.Tensor:
    # [1, 2, 2, 2]: channel 0 = [[1, 2], [3, 4]], channel 1 = [[-1, 0], [0, 5]]
    return torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[-1.0, 0.0], [0.0, 5.0]]]])


def test_channel_attention_matches_hand_values():
    attention = ChannelAttention(channels=2, reduction=2)  # hidden = 1
    with torch.no_grad():
        attention.mlp[0].weight.copy_(torch.tensor([[1.0, -1.0]]))
        attention.mlp[0].bias.fill_(0.5)
        attention.mlp[2].weight.copy_(torch.tensor([[2.0], [-1.0]]))
        attention.mlp[2].bias.copy_(torch.tensor([0.1, 0.2]))
    weights = attention(tiny_map())
    # avg pool = (2.5, 1.0) -> hidden relu(2.5 - 1.0 + 0.5) = 2.0 -> (4.1, -1.8)
    # max pool = (4.0, 5.0) -> hidden relu(4 - 5 + 0.5) = 0    -> (0.1,  0.2)
    expected = torch.tensor([_sigmoid(4.1 + 0.1), _sigmoid(-1.8 + 0.2)])
    assert weights.shape == (1, 2, 1, 1)
    torch.testing.assert_close(weights.flatten(), expected)


def test_spatial_attention_matches_hand_values():
    attention = SpatialAttention(kernel_size=7)
    with torch.no_grad():
        attention.conv.weight.zero_()
        # Only the centre tap: a 7x7 conv with padding 3 then acts pointwise: 0.5*max_c + (-1)*mean_c.
        attention.conv.weight[0, 0, 3, 3] = 0.5
        attention.conv.weight[0, 1, 3, 3] = -1.0
    weights = attention(tiny_map())
    max_c = torch.tensor([[1.0, 2.0], [3.0, 5.0]])
    mean_c = torch.tensor([[0.0, 1.0], [1.5, 4.5]])
    expected = torch.sigmoid(0.5 * max_c - mean_c)
    assert weights.shape == (1, 1, 2, 2)
    torch.testing.assert_close(weights[0, 0], expected)


def test_spatial_attention_uses_the_7x7_neighbourhood():
    attention = SpatialAttention()
    with torch.no_grad():
        attention.conv.weight.zero_()
        attention.conv.weight[0, 0, 3, 4] = 1.0  # the right-hand neighbour's channel max
    weights = attention(tiny_map())
    # position (0,0) sees max_c at (0,1) = 2; position (0,1) sees padding (0) on its right.
    torch.testing.assert_close(weights[0, 0, 0], torch.tensor([_sigmoid(2.0), _sigmoid(0.0)]))


def test_cbam_is_channel_then_spatial():
    """The paper's order: the spatial gate sees the channel-gated features. A channel shut by the channel
    gate must not light up the spatial map: with a spike in that channel, the other order gives another
    answer."""
    torch.manual_seed(0)
    cbam = CBAM(channels=8, reduction=4)
    with torch.no_grad():
        for parameter in cbam.spatial.parameters():   # a trained spatial gate (it starts neutral: 0.5)
            parameter.normal_()
        cbam.channel.mlp[-1].bias[3] = -30.0   # channel 3 gated to ~0
    x = torch.randn(1, 8, 5, 5) * 0.1
    x[0, 3, 2, 2] = 50.0                        # a spike only channel 3 has
    after_channel = x * cbam.channel(x)
    channel_first = after_channel * cbam.spatial(after_channel)
    spatial_first = (x * cbam.spatial(x)) * cbam.channel(x * cbam.spatial(x))
    torch.testing.assert_close(cbam(x), channel_first)
    assert not torch.allclose(cbam(x), spatial_first, atol=1e-3)


@pytest.mark.parametrize("channels, reduction, hidden", [(64, 16, 4), (8, 16, 1)])
def test_channel_mlp_width(channels, reduction, hidden):
    assert ChannelAttention(channels, reduction).mlp[0].out_features == hidden


def test_even_kernel_is_refused():
    with pytest.raises(ValueError, match="odd"):
        SpatialAttention(kernel_size=6)


@pytest.mark.parametrize("stem", ["imagenet", "small"])
def test_cbam_gates_start_neutral_in_every_block(stem):
    """Both gates are 0.5 at every channel and position at init (the official CBAM's neutral start), for
    any input: a Kaiming-initialised spatial conv instead shut most positions of several blocks."""
    import dataclasses

    from fer_core.config import ModelConfig
    from fer_core.model import build_model

    torch.manual_seed(0)
    model = build_model(dataclasses.replace(ModelConfig(), stem=stem, head_pool=1), num_classes=7).eval()
    gates = []

    def record(module, inputs, output):
        gates.append(output)

    modules = [m for m in model.modules() if isinstance(m, (ChannelAttention, SpatialAttention))]
    assert len(modules) == 2 * 8  # channel + spatial gate in each of ResNet-18's 8 blocks
    for module in modules:
        module.register_forward_hook(record)
    with torch.no_grad():
        model(torch.randn(3, 3, 48, 48) * 3)
    assert len(gates) == 16
    for gate in gates:
        torch.testing.assert_close(gate, torch.full_like(gate, 0.5))


def test_reset_parameters_makes_a_trained_cbam_neutral_again():
    cbam = CBAM(8, reduction=2)
    with torch.no_grad():
        for p in cbam.parameters():
            p.normal_()
    x = torch.randn(2, 8, 5, 5)
    assert not torch.allclose(cbam(x), x * 0.25)
    cbam.reset_parameters()
    torch.testing.assert_close(cbam(x), x * 0.25)  # 0.5 (channel) * 0.5 (spatial)
