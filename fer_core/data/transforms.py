"""Train and eval transforms (docs/method.md section 5), shared by training, evaluation and serving.

Both take an RGB PIL image or a uint8 tensor [3,H,W] and return a plain float32 tensor [3,S,S]. The
first thing either does is turn its input into a uint8 tensor, so a PIL image (what the TorchServe
handler decodes) and the cached uint8 array of the dataset are resized by the same code and give the
same pixels: serving preprocesses exactly as evaluation does.

The train transform draws from torch's global RNG; `fer_core.data.dataset.FERDataset` runs it under a
per-sample seed so augmentation does not depend on the worker that happens to load a sample.
"""

from __future__ import annotations

from typing import Callable

import torch
from torchvision.transforms import v2

# ImageNet statistics: the backbones we load (ImageNet / MS-Celeb ResNets) were trained with them.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

Transform = Callable[..., torch.Tensor]


def _check_size(image_size: int) -> None:
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 8:
        raise ValueError(f"image_size must be an int >= 8, got {image_size!r}")


def check_augment(image_size: int, erasing_scale: tuple[float, float], noise_std: float) -> tuple[float, float]:
    """The train augmentation's settings checked (the CPU transforms and the device path share them);
    returns the erasing scale as (min, max)."""
    _check_size(image_size)
    low, high = erasing_scale
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"erasing scale must satisfy 0 <= min <= max <= 1, got ({low}, {high})")
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}")
    return low, high


def _to_normalised(image_size: int) -> list[v2.Transform]:
    return [
        v2.ToImage(),  # PIL or tensor -> uint8 image tensor; first, so every input takes one path
        v2.Resize((image_size, image_size), antialias=True),
    ]


def _normalise() -> list[v2.Transform]:
    return [
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ]


def eval_transform(image_size: int) -> Transform:
    """Resize to image_size x image_size and ImageNet-normalise; nothing random."""
    _check_size(image_size)
    return v2.Compose([*_to_normalised(image_size), *_normalise(), v2.ToPureTensor()])


def train_transform(
    image_size: int,
    *,
    hflip: bool = True,
    erasing_scale: tuple[float, float] = (0.02, 0.25),
    noise_std: float = 0.02,
) -> Transform:
    """eval_transform plus horizontal flip, RandomErasing and mild gaussian noise.

    Erasing and noise act on the normalised tensor (as in RUL's recipe): the erased patch is 0, the
    dataset mean, and the noise is in normalised units, so neither is clipped to [0, 1].
    """
    low, high = check_augment(image_size, erasing_scale, noise_std)
    steps: list[v2.Transform] = [*_to_normalised(image_size)]
    if hflip:
        steps.append(v2.RandomHorizontalFlip(p=0.5))
    steps.extend(_normalise())
    if high > 0:
        steps.append(v2.RandomErasing(p=0.5, scale=(low, high), value=0.0))
    if noise_std > 0:
        steps.append(v2.GaussianNoise(mean=0.0, sigma=noise_std, clip=False))
    steps.append(v2.ToPureTensor())
    return v2.Compose(steps)


def train_transform_from_config(train_config) -> Transform:
    """The train transform a `fer_core.config.TrainConfig` describes."""
    return train_transform(
        train_config.image_size,
        hflip=train_config.hflip,
        erasing_scale=(train_config.erasing_scale_min, train_config.erasing_scale_max),
        noise_std=train_config.noise_std,
    )


__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "eval_transform",
    "train_transform",
    "train_transform_from_config",
]
