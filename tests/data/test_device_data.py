"""The device-resident data path (fer_core/data/device_data.py), on CPU: without augmentation it gives
the eval transform's pixels exactly; with it, the statistics of the CPU train transform; it is
deterministic per (seed, epoch), shards and resumes like the CPU path, and leaves the global RNG alone."""

from __future__ import annotations

import math

import pytest
import torch

from fer_core.data.dataset import EpochBatchSampler, FERDataset
from fer_core.data.device_data import (DeviceAugment, DeviceBatchLoader, DeviceImageCache, fits_on_device,
                                       split_bytes)
from fer_core.data.transforms import eval_transform, train_transform
from tests.training.conftest import make_prepared_dataset

CPU = torch.device("cpu")
SIZE = 40           # stored side; resized to OUT (a real resize, as 100 -> 224 or 100 -> 48)
OUT = 28


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_prepared_dataset(tmp_path_factory.mktemp("device_data"), {"train": 12, "val": 3, "test": 1},
                                 size=SIZE)


def test_without_augmentation_the_pixels_are_the_eval_transforms(data):
    dataset = FERDataset(data, "val")
    cache = DeviceImageCache(dataset, CPU)
    batch = DeviceAugment(OUT, train=False)(cache.images)
    expected = torch.stack([eval_transform(OUT)(dataset.load_uint8(i)) for i in range(len(dataset))])
    assert batch.shape == (len(dataset), 3, OUT, OUT) and batch.dtype == torch.float32
    assert torch.allclose(batch, expected, atol=1e-6), (batch - expected).abs().max()
    assert torch.equal(cache.labels, torch.tensor(dataset.labels))


def _cpu_draws(image: torch.Tensor, draws: int, **settings) -> torch.Tensor:
    transform = train_transform(OUT, **settings)
    torch.manual_seed(0)
    return torch.stack([transform(image) for _ in range(draws)])


def _device_draws(image: torch.Tensor, draws: int, **settings) -> torch.Tensor:
    augment = DeviceAugment(OUT, train=True, **settings)
    return augment(image.expand(draws, -1, -1, -1).contiguous(), torch.Generator().manual_seed(0))


def _summary(out: torch.Tensor, clean: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per draw (noise off): flipped?, erased?, erased area fraction (pixels exactly 0 in every channel:
    only erasing makes them), and the output's mean and spread."""
    zero = (out == 0).all(dim=1).flatten(1).float().mean(1)
    kept = (out != 0).all(dim=1, keepdim=True).expand_as(out)
    plain = ((out - clean) * kept).abs().sum((1, 2, 3))
    mirrored = ((out - clean.flip(-1)) * kept).abs().sum((1, 2, 3))
    return {"flipped": (mirrored < plain).float(), "erased": (zero > 0).float(), "area": zero[zero > 0],
            "mean": out.mean(), "std": out.std()}


def test_train_augmentation_has_the_cpu_transforms_statistics(data):
    """4,000 draws on one image each way. Rates of a p = 0.5 event over n = 4,000 draws have a standard
    error of 0.008, so 0.04 is five of them; the mean erased area (scale U(0.02, 0.25), so ~0.13 with a
    spread of ~0.07) has a standard error of ~0.0016 over ~2,000 erased draws: 0.01 is six of them."""
    image = FERDataset(data, "train").load_uint8(3)
    clean = eval_transform(OUT)(image)
    cpu = _summary(_cpu_draws(image, 4000, noise_std=0.0), clean)
    device = _summary(_device_draws(image, 4000, noise_std=0.0), clean)
    for name in ("flipped", "erased"):
        assert abs(cpu[name].mean() - 0.5) < 0.04 and abs(device[name].mean() - 0.5) < 0.04, name
        assert abs(cpu[name].mean() - device[name].mean()) < 0.04, name
    assert abs(cpu["area"].mean() - device["area"].mean()) < 0.01, (cpu["area"].mean(), device["area"].mean())
    assert abs(cpu["area"].std() - device["area"].std()) < 0.01
    assert 0.02 - 0.01 <= device["area"].min() and device["area"].max() <= 0.25 + 0.03  # rounding of h, w
    assert abs(cpu["mean"] - device["mean"]) < 0.02 and abs(cpu["std"] - device["std"]) < 0.02
    # the noise alone (no flip, no erasing): its spread around the clean image, 4,000 x 2,352 values
    cpu_noise = _cpu_draws(image, 500, hflip=False, erasing_scale=(0.0, 0.0)) - clean
    device_noise = _device_draws(image, 500, hflip=False, erasing_scale=(0.0, 0.0)) - clean
    for noise in (cpu_noise, device_noise):
        assert abs(noise.std() - 0.02) < 0.0005 and abs(noise.mean()) < 0.0005


def test_the_erasing_statistics_would_catch_a_wrong_setting(data):
    """The same comparison fails for an augmentation that erases bigger boxes."""
    image = FERDataset(data, "train").load_uint8(3)
    clean = eval_transform(OUT)(image)
    reference = _summary(_cpu_draws(image, 2000, noise_std=0.0), clean)
    wrong = _summary(_device_draws(image, 2000, noise_std=0.0, erasing_scale=(0.2, 0.5)), clean)
    assert abs(reference["area"].mean() - wrong["area"].mean()) > 0.1


def _epoch(loader: DeviceBatchLoader, epoch: int, start: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader.sampler.set_epoch(epoch)
    loader.sampler.set_start(start)
    return list(loader)


def _train_loader(data, **sampler_args) -> DeviceBatchLoader:
    dataset = FERDataset(data, "train")
    sampler = EpochBatchSampler(len(dataset), 16, seed=5, shuffle=True, **sampler_args)
    return DeviceBatchLoader(DeviceImageCache(dataset, CPU), sampler, DeviceAugment(OUT, train=True))


def test_batches_are_a_pure_function_of_seed_and_epoch(data):
    state = torch.get_rng_state()
    first, second = _epoch(_train_loader(data), 1), _epoch(_train_loader(data), 1)
    assert len(first) == math.ceil(84 / 16) and all(
        torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, second))
    other = _epoch(_train_loader(data), 2)
    assert not torch.equal(first[0][0], other[0][0])
    assert torch.equal(torch.get_rng_state(), state)              # the global RNG was not drawn from


def test_ranks_shard_the_epoch_and_a_resume_continues_it_exactly(data):
    whole = _epoch(_train_loader(data), 0)
    resumed = _epoch(_train_loader(data), 0, start=2)
    assert len(resumed) == len(whole) - 2
    assert all(torch.equal(a[0], b[0]) for a, b in zip(whole[2:], resumed))
    ranks = [_epoch(_train_loader(data, rank=rank, world_size=2), 0) for rank in (0, 1)]
    seen = torch.cat([targets for rank in ranks for _, targets in rank])
    assert len(ranks[0]) == len(ranks[1]) and len(seen) == 84      # 84 train images, split evenly
    dataset = FERDataset(data, "train")
    assert sorted(seen.tolist()) == sorted(dataset.labels)


def test_the_fit_check_names_the_sizes_and_the_budget(data):
    train, val = FERDataset(data, "train"), FERDataset(data, "val")
    assert split_bytes(train) == (84 * 3 * SIZE * SIZE, "")
    fits, reason = fits_on_device([train, val], 1)
    assert fits and f"train 84 images of {SIZE}x{SIZE}" in reason and "within" in reason
    fits, reason = fits_on_device([train, val], 0)
    assert not fits and "over train.device_cache_mb (0 MiB)" in reason


def test_a_train_augmentation_without_a_generator_is_refused(data):
    with pytest.raises(ValueError, match="generator"):
        DeviceAugment(OUT, train=True)(torch.zeros(2, 3, SIZE, SIZE, dtype=torch.uint8))
    with pytest.raises(ValueError, match="uint8"):
        DeviceAugment(OUT, train=False)(torch.zeros(2, 3, SIZE, SIZE))
