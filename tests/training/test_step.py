"""The weighted add-up loss, the mixing of uncertain features, and a tiny overfit."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from fer_core.config import ModelConfig
from fer_core.model import build_model
from fer_core.training.losses import WeightedAddUpLoss
from fer_core.training.step import mix_features, training_step


def test_unmixed_loss_is_weighted_cross_entropy():
    torch.manual_seed(0)
    weights = torch.tensor([0.5, 1.0, 3.0])
    logits = torch.randn(6, 3)
    targets = torch.tensor([0, 1, 2, 2, 1, 0])
    expected = (F.cross_entropy(logits, targets, reduction="none") * weights[targets]).mean()
    torch.testing.assert_close(WeightedAddUpLoss(weights)(logits, targets), expected)
    # all-ones weights is plain cross entropy
    torch.testing.assert_close(WeightedAddUpLoss(torch.ones(3))(logits, targets), F.cross_entropy(logits, targets))


def test_mixed_loss_matches_hand_values():
    weights = torch.tensor([1.0, 2.0])
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])  # p = (1/2, 1/2) and (3/4, 1/4)
    targets = torch.tensor([0, 1])
    targets_perm = torch.tensor([1, 1])
    # row 0: 0.5*1*log2 + 0.5*2*log2; row 1: 0.5*2*log4 + 0.5*2*log4
    expected = (0.5 * math.log(2) + math.log(2) + 2 * math.log(4)) / 2
    loss = WeightedAddUpLoss(weights)(logits, targets, targets_perm)
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_lam_weighted_loss_weights_each_target_by_its_mixing_coefficient():
    weights = torch.tensor([1.0, 2.0])
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])  # p = (1/2, 1/2) and (3/4, 1/4)
    targets, targets_perm = torch.tensor([0, 1]), torch.tensor([1, 1])
    lam = torch.tensor([0.25, 0.9])
    # row 0: 0.25*1*log2 + 0.75*2*log2; row 1: (0.9 + 0.1)*2*log4
    expected = (0.25 * math.log(2) + 1.5 * math.log(2) + 2 * math.log(4)) / 2
    loss = WeightedAddUpLoss(weights, "lam")(logits, targets, targets_perm, lam)
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    # at lam = 0.5 it is METHOD's 0.5/0.5 add-up loss; the half weighting ignores lam
    half = WeightedAddUpLoss(weights)(logits, targets, targets_perm)
    torch.testing.assert_close(WeightedAddUpLoss(weights, "lam")(logits, targets, targets_perm,
                                                                 torch.full((2,), 0.5)), half)
    torch.testing.assert_close(WeightedAddUpLoss(weights)(logits, targets, targets_perm, lam), half)
    with pytest.raises(ValueError, match="needs lam"):
        WeightedAddUpLoss(weights, "lam")(logits, targets, targets_perm)
    with pytest.raises(ValueError, match="weighting must be one of half, lam"):
        WeightedAddUpLoss(weights, "mixup")


def test_lam_weighted_step_sends_the_loss_into_the_logvar_head_through_the_weights():
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(ModelConfig(), head_pool=1, dropout=0.0), num_classes=2).train()
    images, targets = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 0, 1, 1, 0])
    grads = {}
    for weighting in ("half", "lam"):
        model.zero_grad()
        out = training_step(model, images, targets, WeightedAddUpLoss(torch.ones(2), weighting), True,
                            torch.Generator().manual_seed(3))
        out["loss"].backward()
        grads[weighting] = model.logvar_head.linear.weight.grad.clone()
    assert grads["lam"].abs().sum() > 0
    assert not torch.allclose(grads["lam"], grads["half"])


def test_loss_refuses_mismatched_classes():
    with pytest.raises(ValueError, match=r"logits must be \[B, 3\]"):
        WeightedAddUpLoss(torch.ones(3))(torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="positive"):
        WeightedAddUpLoss(torch.tensor([1.0, 0.0]))


def test_loss_weights_follow_the_module():
    loss = WeightedAddUpLoss(torch.tensor([1.0, 2.0]))
    assert "class_weights" in loss.state_dict()
    assert loss.to(torch.float64).class_weights.dtype == torch.float64


def test_mix_features_matches_hand_values():
    mu = torch.tensor([[1.0, 0.0], [0.0, 2.0], [4.0, 4.0]])
    # s = mean exp(logvar): 1, 3, 0.5 (logvar = log of the per-dim variances)
    logvar = torch.log(torch.tensor([[1.0, 1.0], [2.0, 4.0], [0.5, 0.5]]))
    perm = torch.tensor([1, 2, 0])
    z, lam = mix_features(mu, logvar, perm)
    expected_lam = torch.tensor([1 / (1 + 3), 3 / (3 + 0.5), 0.5 / (0.5 + 1)])
    torch.testing.assert_close(lam, expected_lam)
    expected_z = torch.stack([
        0.25 * mu[0] + 0.75 * mu[1],
        (6 / 7) * mu[1] + (1 / 7) * mu[2],
        (1 / 3) * mu[2] + (2 / 3) * mu[0],
    ])
    torch.testing.assert_close(z, expected_z)


def test_mix_with_identity_perm_is_mu():
    mu, logvar = torch.randn(4, 8), torch.randn(4, 8)
    z, lam = mix_features(mu, logvar, torch.arange(4))
    torch.testing.assert_close(lam, torch.full((4,), 0.5))
    torch.testing.assert_close(z, mu)


def test_mix_refuses_bad_shapes():
    with pytest.raises(ValueError, match="perm"):
        mix_features(torch.zeros(3, 2), torch.zeros(3, 2), torch.arange(2))
    with pytest.raises(ValueError, match="mu and logvar"):
        mix_features(torch.zeros(3, 2), torch.zeros(3, 4), torch.arange(3))


def test_training_step_permutation_is_reproducible():
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(ModelConfig(), head_pool=1, dropout=0.0), num_classes=2).eval()
    images, targets = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 0, 1])
    loss_fn = WeightedAddUpLoss(torch.tensor([1.0, 3.0]))
    first = training_step(model, images, targets, loss_fn, True, torch.Generator().manual_seed(7))
    second = training_step(model, images, targets, loss_fn, True, torch.Generator().manual_seed(7))
    torch.testing.assert_close(first["loss"], second["loss"])
    # the mixed loss equals the add-up loss on fc(mix) with the same permutation
    perm = torch.randperm(4, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        mu, logvar = model.encode(images)
        z, _ = mix_features(mu, logvar, perm)
        expected = loss_fn(model.classify(z), targets, targets[perm])
    torch.testing.assert_close(first["loss"].detach(), expected)


def eval_loss(model, images, targets, loss_fn) -> float:
    model.eval()
    with torch.no_grad():
        loss = float(loss_fn(model(images), targets))
    model.train()
    return loss


def test_tiny_set_is_overfit():
    """8 images of 2 classes, 30 Adam steps with mixing and weights: train accuracy reaches 100 %.

    The mixed training loss has a floor (a pair of different classes mixed half-half cannot score 0), so
    the end point is the plain, unmixed loss in eval mode, which is what the model serves.
    """
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = build_model(dataclasses.replace(ModelConfig(), head_pool=1), num_classes=2).train()
    images = torch.randn(8, 3, 32, 32)
    targets = torch.tensor([0, 1, 0, 1, 0, 1, 1, 1])
    loss_fn = WeightedAddUpLoss(torch.tensor([1.6, 0.6]))
    optimiser = torch.optim.Adam(model.param_groups(lr=1e-3, lr_fc=1e-2, weight_decay=0.0))
    before = None  # the first step's loss (untrained model)
    for _ in range(30):
        out = training_step(model, images, targets, loss_fn, mixing=True, generator=generator)
        optimiser.zero_grad()
        out["loss"].backward()
        optimiser.step()
        if before is None:
            before = float(out["loss"].detach())
    after = eval_loss(model, images, targets, loss_fn)
    model.eval()
    with torch.no_grad():
        accuracy = float((model(images).argmax(1) == targets).float().mean())
    assert accuracy == 1.0
    assert after < 0.2 * before, (before, after)
    print(f"overfit: first-step loss {before:.3f} -> eval loss {after:.4f}")


def test_mixing_warmup_trains_on_mu_first_then_mixes():
    from fer_core.training.loop import TrainStep

    torch.manual_seed(0)
    model = build_model(dataclasses.replace(ModelConfig(), head_pool=1, dropout=0.0), num_classes=2).eval()
    images, targets = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 0, 1])
    loss_fn = WeightedAddUpLoss(torch.tensor([1.0, 3.0]))
    step = TrainStep(model, loss_fn, mixing=True)
    step.set_epoch(0, warmup_epochs=2)
    warm = step(images, targets, torch.Generator().manual_seed(7))
    torch.testing.assert_close(warm["loss"], training_step(model, images, targets, loss_fn, False)["loss"])
    step.set_epoch(2, warmup_epochs=2)
    mixed = step(images, targets, torch.Generator().manual_seed(7))
    expected = training_step(model, images, targets, loss_fn, True, torch.Generator().manual_seed(7))
    torch.testing.assert_close(mixed["loss"], expected["loss"])
    assert not torch.allclose(warm["loss"], mixed["loss"])
    # a step configured without mixing never mixes, whatever the epoch
    plain = TrainStep(model, loss_fn, mixing=False)
    plain.set_epoch(10, warmup_epochs=0)
    assert plain.mixing is False
