"""The device-resident data path: a split decoded once into one uint8 tensor in device memory, then
resized, flipped, normalised, erased and noised per batch on the device.

Why: RAF-DB's train split is 12,271 images of 100x100 (368 MB as uint8). At 224 px the CPU path
(decode, resize and augment each image in DataLoader workers) delivers a few hundred images per second,
while one ResNet-18 step on a current GPU consumes thousands. Held on the device, the split costs one
gather per batch and a handful of batched kernels.

The augmentation draws from the same distributions as the CPU transforms (fer_core/data/transforms.py):
torchvision's resize (antialiased bilinear, the same function applied to the whole batch; on CUDA its
uint8 result may differ from the CPU's by one grey level), a horizontal
flip with p = 0.5, RandomErasing with p = 0.5 and torchvision's area/aspect sampling (up to 10 attempts,
area ~ U(scale), log-aspect ~ U(log 0.3, log 3.3), value 0 on the normalised tensor), then gaussian
noise. tests/data/test_device_data.py compares their statistics.

Determinism: `DeviceBatchLoader` walks the same `EpochBatchSampler` as the CPU path, so the order, the
rank sharding and a mid-epoch resume are the sampler's; each batch's augmentation draws from a device
generator seeded by the batch's first sample seed, never from torch's global RNG (the engine
checkpoints that). The same (seed, epoch) gives the same batches; the draws differ from the CPU path's
(one generator per batch instead of one per sample). A run may resume on the other path: it continues
correctly, but from then on its augmentation draws are not those an uninterrupted run would have made.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from fer_core.data.dataset import EpochBatchSampler, FERDataset
from fer_core.data.prepared import MANIFEST
from fer_core.data.transforms import IMAGENET_MEAN, IMAGENET_STD, check_augment

ERASING_RATIO = (0.3, 3.3)     # torchvision RandomErasing's default aspect range
ERASING_ATTEMPTS = 10          # torchvision RandomErasing.get_params tries this many boxes
FLIP_P = ERASING_P = 0.5


def to_device_async(tensor: Tensor, device: torch.device) -> Tensor:
    """A small CPU tensor onto DEVICE without making the host wait: a copy from ordinary (pageable)
    memory to a GPU returns only once the GPU has run everything queued before it, a hidden
    synchronisation per step; from pinned memory it is queued like a kernel."""
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def split_bytes(dataset: FERDataset) -> tuple[int | None, str]:
    """(bytes of the split as uint8, "") or (None, why it cannot be held as one tensor)."""
    sizes = {(row.width, row.height) for row in dataset.rows}
    where = f"{dataset.data_dir / MANIFEST} ({dataset.split} split)"
    if len(sizes) != 1:
        return None, f"{where} mixes {len(sizes)} image sizes"
    width, height = next(iter(sizes))
    if width <= 0 or height <= 0:
        return None, f"{where} does not record the image size"
    return len(dataset) * 3 * width * height, ""


def fits_on_device(datasets: Sequence[FERDataset], budget_mb: int) -> tuple[bool, str]:
    """Whether these splits, as uint8, fit in `budget_mb` MiB; the reason in words either way."""
    total, parts = 0, []
    for dataset in datasets:
        size, why = split_bytes(dataset)
        if size is None:
            return False, why
        row = dataset.rows[0]
        parts.append(f"{dataset.split} {len(dataset):,} images of {row.width}x{row.height}")
        total += size
    verdict = "within" if total <= budget_mb * 2**20 else "over"
    return total <= budget_mb * 2**20, (f"{', '.join(parts)} = {total / 2**20:,.0f} MiB as uint8, {verdict} "
                                        f"train.device_cache_mb ({budget_mb:,} MiB)")


class DeviceImageCache:
    """One split as uint8 [N,3,H,W] and int64 labels [N] on `device` (decoded once, from the
    dataset's RAM cache when it has one)."""

    def __init__(self, dataset: FERDataset, device: torch.device) -> None:
        size, why = split_bytes(dataset)
        if size is None:
            raise ValueError(f"the device data path needs one image size per split: {why}")
        first = dataset.rows[0]
        images = torch.empty((len(dataset), 3, first.height, first.width), dtype=torch.uint8)
        for index in range(len(dataset)):
            image = dataset.load_uint8(index)
            if tuple(image.shape) != tuple(images.shape[1:]):
                row = dataset.rows[index]
                raise ValueError(f"{dataset.data_dir / MANIFEST} line {row.line} ({row.path}): stored image is "
                                 f"{image.shape[2]}x{image.shape[1]}, manifest says {row.width}x{row.height}")
            images[index] = image
        self.images = images.to(device)
        self.labels = torch.as_tensor(dataset.labels, dtype=torch.int64).to(device)
        self.device = device

    @classmethod
    def from_tensors(cls, images: Tensor, labels: Tensor) -> "DeviceImageCache":
        """A cache of images already decoded (uint8 [N,3,H,W]) and their labels, on their device."""
        if images.dtype != torch.uint8 or images.dim() != 4 or labels.shape != (images.shape[0],):
            raise ValueError(f"expected uint8 [N,3,H,W] images and [N] labels, got {images.dtype} "
                             f"{tuple(images.shape)} and {tuple(labels.shape)}")
        cache = cls.__new__(cls)
        cache.images, cache.labels, cache.device = images, labels.to(images.device, torch.int64), images.device
        return cache

    def __len__(self) -> int:
        return self.images.shape[0]


class DeviceAugment:
    """uint8 [B,3,H,W] on the device -> float32 [B,3,S,S], as `train_transform` (train=True) or
    `eval_transform` (train=False) would make each image, batched."""

    def __init__(self, image_size: int, *, train: bool, hflip: bool = True,
                 erasing_scale: tuple[float, float] = (0.02, 0.25), noise_std: float = 0.02) -> None:
        low, high = check_augment(image_size, erasing_scale, noise_std)
        self.image_size = image_size
        self.train = train
        self.hflip = hflip and train
        self.erasing_scale = (low, high)
        self.erasing = train and high > 0
        self.noise_std = noise_std if train else 0.0
        self._normalisers: dict[torch.device, tuple[Tensor, Tensor]] = {}

    @classmethod
    def from_config(cls, train_config, *, train: bool) -> "DeviceAugment":
        return cls(train_config.image_size, train=train, hflip=train_config.hflip,
                   erasing_scale=(train_config.erasing_scale_min, train_config.erasing_scale_max),
                   noise_std=train_config.noise_std)

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected a uint8 batch [B,3,H,W], got {images.dtype} {tuple(images.shape)}")
        if (self.hflip or self.erasing or self.noise_std > 0) and generator is None:
            raise ValueError("a train augmentation needs a generator (its draws must not touch the global RNG)")
        size = self.image_size
        batch = TF.resize(images, [size, size], antialias=True)
        count, device = batch.shape[0], batch.device
        if self.hflip:
            flip = torch.rand(count, generator=generator, device=device) < FLIP_P
            batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
        mean, std = self._normaliser(device)
        out = (batch.float().div_(255.0) - mean) / std
        if self.erasing:
            out = out.masked_fill(self._erasing_mask(count, size, size, generator, device)[:, None], 0.0)
        if self.noise_std > 0:
            out = out + torch.randn(out.shape, generator=generator, device=device) * self.noise_std
        return out

    def _normaliser(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """ImageNet mean and std on DEVICE, made once per device (building them from Python lists is a
        host-to-device copy the host waits for)."""
        if device not in self._normalisers:
            self._normalisers[device] = (torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1),
                                         torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1))
        return self._normalisers[device]

    def _erasing_mask(self, count: int, height: int, width: int, generator: torch.Generator,
                      device: torch.device) -> Tensor:
        """[B,H,W] boxes drawn as torchvision's RandomErasing.get_params draws them, for all images at once."""
        def uniform(low: float, high: float, *shape: int) -> Tensor:
            return low + (high - low) * torch.rand(shape, generator=generator, device=device)

        apply = torch.rand(count, generator=generator, device=device) < ERASING_P
        area = height * width * uniform(*self.erasing_scale, count, ERASING_ATTEMPTS)
        aspect = torch.exp(uniform(math.log(ERASING_RATIO[0]), math.log(ERASING_RATIO[1]), count, ERASING_ATTEMPTS))
        box_h = torch.round(torch.sqrt(area * aspect)).long()
        box_w = torch.round(torch.sqrt(area / aspect)).long()
        valid = (box_h < height) & (box_w < width)
        first = valid.int().argmax(dim=1, keepdim=True)          # the first attempt that fits, as torchvision
        apply &= valid.any(dim=1)                                 # none fits: the image stays as it is
        box_h, box_w = box_h.gather(1, first).squeeze(1), box_w.gather(1, first).squeeze(1)
        top = (torch.rand(count, generator=generator, device=device) * (height - box_h + 1)).long()
        left = (torch.rand(count, generator=generator, device=device) * (width - box_w + 1)).long()
        rows = torch.arange(height, device=device)[None, :]
        cols = torch.arange(width, device=device)[None, :]
        in_rows = (rows >= top[:, None]) & (rows < (top + box_h)[:, None])
        in_cols = (cols >= left[:, None]) & (cols < (left + box_w)[:, None])
        return in_rows[:, :, None] & in_cols[:, None, :] & apply[:, None, None]


class DeviceBatchLoader:
    """Batches of a `DeviceImageCache` in the order of an `EpochBatchSampler`: (images, targets), both on
    the cache's device. Train batches (keys with sample seeds) are augmented from a generator seeded by
    the batch's first sample seed; evaluation batches (plain indices) are resized and normalised only."""

    def __init__(self, cache: DeviceImageCache, sampler: EpochBatchSampler, augment: DeviceAugment) -> None:
        self.cache = cache
        self.sampler = sampler
        self.augment = augment

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        device = self.cache.device
        for keys in self.sampler:
            seeded = bool(keys) and isinstance(keys[0], tuple)
            indices = to_device_async(torch.as_tensor([key[0] for key in keys] if seeded else keys,
                                                      dtype=torch.int64), device)
            generator = None
            if seeded and self.augment.train:
                generator = torch.Generator(device=device).manual_seed(int(keys[0][1]) % 2**63)
            images = self.cache.images.index_select(0, indices)
            yield self.augment(images, generator), self.cache.labels.index_select(0, indices)


__all__ = ["DeviceAugment", "DeviceBatchLoader", "DeviceImageCache", "fits_on_device", "split_bytes",
           "to_device_async"]
