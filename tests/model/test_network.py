"""FERNet: shapes, finiteness, gradients on every parameter, the optimiser groups, config errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fer_core.config import ModelConfig
from fer_core.model import FERNet, build_model, count_parameters, uncertainty_from_logvar
from fer_core.model.cbam import CBAM
from fer_core.training.losses import WeightedAddUpLoss
from fer_core.training.step import training_step


def tiny_config(**changes) -> ModelConfig:
    return dataclasses.replace(ModelConfig(), **changes)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
@pytest.mark.parametrize("cbam", [True, False])
def test_output_shapes_and_finite(arch, cbam):
    torch.manual_seed(0)
    model = build_model(tiny_config(arch=arch, cbam=cbam, head_pool=2), num_classes=7)
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        logits = model(x)
        mu, logvar = model.encode(x)
        logits_p, uncertainty = model.predict(x)
    assert logits.shape == (2, 7) and mu.shape == (2, 64) and logvar.shape == (2, 64)
    assert uncertainty.shape == (2,)
    # the uncertainty is the mean over feature dimensions of the variance exp(logvar) (docs/method.md)
    torch.testing.assert_close(uncertainty, torch.stack([row.exp().sum() / row.numel() for row in logvar]))
    for tensor in (logits, mu, logvar, uncertainty):
        assert torch.isfinite(tensor).all()
    # forward is fc(mu(x)), no mixing; predict gives the same logits.
    torch.testing.assert_close(logits, model.classify(mu))
    torch.testing.assert_close(logits_p, logits)
    has_cbam = any(isinstance(m, CBAM) for m in model.modules())
    assert has_cbam is cbam
    assert model.backbone.out_channels == (512 if arch == "resnet18" else 2048)


def test_cbam_sits_in_every_residual_block():
    model = build_model(tiny_config(), num_classes=7)
    blocks = [block for stage in (model.backbone.layer1, model.backbone.layer2,
                                  model.backbone.layer3, model.backbone.layer4) for block in stage]
    assert len(blocks) == 8
    assert all(isinstance(block.cbam, CBAM) for block in blocks)
    assert blocks[0].cbam.channel.mlp[0].out_features == 64 // 16


def test_any_input_size_gives_the_same_head_shape():
    model = build_model(tiny_config(feature_dim=16), num_classes=8).eval()
    with torch.no_grad():
        for size in (32, 48, 100):
            assert model(torch.randn(1, 3, size, size)).shape == (1, 8)


def test_uncertainty_is_mean_exp_logvar():
    logvar = torch.tensor([[0.0, 0.0], [1.0, -1.0]])
    torch.testing.assert_close(uncertainty_from_logvar(logvar),
                               torch.tensor([1.0, (torch.e + 1 / torch.e) / 2]))
    with pytest.raises(ValueError, match=r"\[B, d\]"):
        uncertainty_from_logvar(torch.zeros(3))


def test_training_step_puts_a_gradient_on_every_parameter():
    torch.manual_seed(0)
    model = build_model(tiny_config(head_pool=1), num_classes=3).train()
    loss_fn = WeightedAddUpLoss(torch.tensor([1.0, 2.0, 0.5]))
    out = training_step(model, torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 1]), loss_fn,
                        mixing=True, generator=torch.Generator().manual_seed(1))
    assert set(out) == {"loss", "logits", "uncertainty"}
    assert out["logits"].shape == (4, 3) and out["uncertainty"].shape == (4,)
    out["loss"].backward()
    no_grad = [name for name, p in model.named_parameters() if p.grad is None]
    assert no_grad == []
    zero_grad = [name for name, p in model.named_parameters() if not torch.any(p.grad != 0)]
    # mixing sends gradient into the logvar head through lam; the only parameters without one at step 0
    # are the first layers of CBAM's channel MLPs, behind their zero-initialised (neutral) last layer
    assert zero_grad and all(".cbam.channel.mlp.0." in name for name in zero_grad)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    model.zero_grad()
    training_step(model, torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 1]), loss_fn, mixing=True,
                  generator=torch.Generator().manual_seed(2))["loss"].backward()
    assert [name for name, p in model.named_parameters() if not torch.any(p.grad != 0)] == []


def test_without_mixing_the_logvar_head_gets_no_gradient():
    # Documents why mixing matters: without it the uncertainty head is never trained.
    model = build_model(tiny_config(head_pool=1), num_classes=2).train()
    out = training_step(model, torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 0, 1]),
                        WeightedAddUpLoss(torch.ones(2)), mixing=False)
    out["loss"].backward()
    assert model.logvar_head.linear.weight.grad is None
    assert model.mu_head.linear.weight.grad is not None


def test_param_groups_put_fc_alone():
    model = build_model(tiny_config(head_pool=1), num_classes=7)
    groups = model.param_groups(lr=2e-4, lr_fc=2e-3, weight_decay=1e-4)
    assert [g["lr"] for g in groups] == [2e-4, 2e-3]
    assert all(g["weight_decay"] == 1e-4 for g in groups)
    assert {id(p) for p in groups[1]["params"]} == {id(model.fc.weight), id(model.fc.bias)}
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())  # each parameter exactly once
    optimiser = torch.optim.Adam(groups)
    assert optimiser.param_groups[1]["lr"] == 2e-3


def test_param_groups_give_the_logvar_head_its_own_rate():
    model = build_model(tiny_config(head_pool=1), num_classes=7)
    groups = model.param_groups(lr=2e-4, lr_fc=2e-3, weight_decay=1e-4, lr_logvar=2e-3)
    assert [g["name"] for g in groups] == ["backbone_heads", "fc", "logvar_head"]
    assert [g["lr"] for g in groups] == [2e-4, 2e-3, 2e-3]
    assert {id(p) for p in groups[2]["params"]} == {id(p) for p in model.logvar_head.parameters()}
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())  # each parameter exactly once


def test_logvar_bn_off_drops_the_closing_batch_norm_of_the_logvar_head_only():
    plain = build_model(tiny_config(head_pool=1, logvar_bn=False), num_classes=7).eval()
    assert not any(key.startswith("logvar_head.bn_out") for key in plain.state_dict())
    assert any(key.startswith("mu_head.bn_out") for key in plain.state_dict())
    logits, uncertainty = plain.predict(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 7) and bool((uncertainty > 0).all())


def test_head_pool_sets_the_parameter_cost():
    # Each head's Linear is C*P*P*d: 512*49*64 for P=7 versus 512*64 for P=1 (documented in network.py).
    seven = build_model(tiny_config(head_pool=7), num_classes=7)
    one = build_model(tiny_config(head_pool=1), num_classes=7)
    assert seven.mu_head.linear.weight.numel() == 512 * 49 * 64
    assert count_parameters(seven) - count_parameters(one) == 2 * 512 * 48 * 64


def test_state_dict_keys_follow_torchvision_names():
    keys = set(build_model(tiny_config(), num_classes=7).state_dict())
    for key in ("backbone.conv1.weight", "backbone.bn1.running_mean", "backbone.layer1.0.conv2.weight",
                "backbone.layer2.0.downsample.0.weight", "backbone.layer4.1.bn2.bias", "fc.weight"):
        assert key in keys


@pytest.mark.parametrize("changes, message", [
    ({"arch": "vgg16"}, "unknown model.arch 'vgg16'"),
    ({"feature_dim": 0}, "model.feature_dim"),
    ({"dropout": 1.0}, "model.dropout"),
    ({"cbam_reduction": 0}, "model.cbam_reduction"),
    ({"head_pool": 0}, "model.head_pool"),
])
def test_bad_config_names_the_key(changes, message):
    with pytest.raises(ValueError, match=message):
        build_model(tiny_config(**changes), num_classes=7)


def test_one_class_is_refused():
    with pytest.raises(ValueError, match="num_classes"):
        FERNet(num_classes=1)
